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


def read_until(
    get: Callable[..., Msg],
    keep: Callable[[Msg], bool],
    done: Callable[[Msg], bool],
    kept: list[Msg],
    others: list[Msg] | None,
    timeout: float,
    what: str,
) -> Msg:
    """Read with ``get`` (a channel's get_msg) until ``done(msg)`` for a message that
    ``keep`` accepts; return it. Accepted messages go to ``kept``, the rest to
    ``others`` (if given). AssertionError naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            msg = get(timeout=max(0.01, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}") from None
        if not keep(msg):
            if others is not None:
                others.append(msg)
            continue
        kept.append(msg)
        if done(msg):
            return msg


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
    return read_until(
        kc.get_iopub_msg,
        lambda msg: parent_id(msg) == msg_id,
        done,
        [] if outputs is None else outputs,
        others,
        timeout,
        f"iopub of {msg_id}",
    )


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
