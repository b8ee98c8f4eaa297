"""iopub messages (jupyter_client dicts) of one request.

The readers take the request's msg_id and skip every message whose parent is another
request: a message left over from an earlier request (or from ``wait_for_ready``) is
never taken for this one. Skipped messages go to ``others`` when the caller keeps them.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient

from . import TIMEOUT

Msg = dict[str, Any]


def parent_id(msg: Msg) -> str | None:
    """The msg_id of the request ``msg`` answers (None for a message without a parent)."""
    return msg["parent_header"].get("msg_id")


def is_idle(msg: Msg) -> bool:
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"


def of_type(outputs: list[Msg], msg_type: str) -> list[dict[str, Any]]:
    """The contents of the messages of type ``msg_type``, in order."""
    return [m["content"] for m in outputs if m["msg_type"] == msg_type]


def stream_text(outputs: list[Msg], name: str = "stdout") -> str:
    """All text of the ``name`` stream (stdout or stderr), joined."""
    return "".join(c["text"] for c in of_type(outputs, "stream") if c["name"] == name)


def result_text(outputs: list[Msg]) -> list[str]:
    """text/plain of every execute_result."""
    return [c["data"]["text/plain"] for c in of_type(outputs, "execute_result")]


def receive_by(get: Callable[..., Msg], deadline: float, what: str) -> Msg:
    """The next message from ``get`` (a channel's get_msg); AssertionError naming
    ``what`` if none comes before ``deadline`` (time.monotonic)."""
    try:
        return get(timeout=max(0.01, deadline - time.monotonic()))
    except queue.Empty:
        raise AssertionError(f"timed out waiting for {what}") from None


def iopub_until(
    kc: BlockingKernelClient,
    msg_id: str,
    done: Callable[[Msg], bool],
    outputs: list[Msg] | None = None,
    *,
    timeout: float = TIMEOUT,
    others: list[Msg] | None = None,
) -> Msg:
    """Read iopub until ``done(msg)`` holds for a message of request ``msg_id``; return it.

    That request's messages (the last one too) are appended to ``outputs``, the
    others to ``others`` (if given). AssertionError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        msg = receive_by(kc.get_iopub_msg, deadline, f"iopub of {msg_id} ({timeout:g} s)")
        if parent_id(msg) != msg_id:
            if others is not None:
                others.append(msg)
            continue
        if outputs is not None:
            outputs.append(msg)
        if done(msg):
            return msg


def outputs_until_idle(
    kc: BlockingKernelClient,
    msg_id: str,
    *,
    timeout: float = TIMEOUT,
    others: list[Msg] | None = None,
) -> list[Msg]:
    """The iopub messages of request ``msg_id`` up to its idle status, statuses left out."""
    seen: list[Msg] = []
    iopub_until(kc, msg_id, is_idle, seen, timeout=timeout, others=others)
    return [m for m in seen if m["msg_type"] != "status"]
