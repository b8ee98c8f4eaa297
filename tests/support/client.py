"""Requests to a kernel through a jupyter_client BlockingKernelClient, and their
replies matched by parent msg_id (never "the next message on the channel": a reply
left unread by an earlier request, e.g. a second kernel_info_reply from
``wait_for_ready``, would be taken for this one).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient

from . import TIMEOUT
from .iopub import Msg, parent_id, read_until


def run(
    kc: BlockingKernelClient, code: str, timeout: float = TIMEOUT, **kwargs: Any
) -> tuple[Msg, list[Msg]]:
    """Execute ``code``: (execute_reply, iopub messages of that request up to idle).

    jupyter_client's execute_interactive matches both by the request's msg_id."""
    outputs: list[Msg] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append, **kwargs)
    return reply, outputs


def _replies(
    get: Callable[..., Msg],
    msg_ids: Collection[str],
    timeout: float,
    others: list[Msg] | None,
) -> list[Msg]:
    """Read with ``get`` until each of ``msg_ids`` has its reply; the replies in arrival order."""
    wanted, found = set(msg_ids), []
    read_until(
        get,
        lambda msg: parent_id(msg) in wanted,
        lambda _: len(found) == len(wanted),
        found,
        others,
        timeout,
        f"the replies to {sorted(wanted)}",
    )
    return found


def shell_reply(
    kc: BlockingKernelClient,
    msg_id: str,
    timeout: float = TIMEOUT,
    others: list[Msg] | None = None,
) -> Msg:
    """The shell reply to request ``msg_id``; replies to others are skipped (kept in ``others``)."""
    return _replies(kc.get_shell_msg, [msg_id], timeout, others)[0]


def shell_replies(
    kc: BlockingKernelClient, msg_ids: Collection[str], timeout: float = TIMEOUT
) -> list[Msg]:
    """The shell replies to every request of ``msg_ids``, in the order they arrived."""
    return _replies(kc.get_shell_msg, msg_ids, timeout, None)


def stdin_request(kc: BlockingKernelClient, msg_id: str, timeout: float = TIMEOUT) -> Msg:
    """The kernel's input_request for request ``msg_id`` (on stdin); others are skipped."""
    return _replies(kc.get_stdin_msg, [msg_id], timeout, None)[0]


def control_reply(kc: BlockingKernelClient, msg_id: str, timeout: float = TIMEOUT) -> Msg:
    """The control reply to request ``msg_id``; replies to others are skipped."""
    return _replies(kc.control_channel.get_msg, [msg_id], timeout, None)[0]


def control_request(
    kc: BlockingKernelClient,
    msg_type: str,
    content: dict[str, Any] | None = None,
    timeout: float = TIMEOUT,
) -> Msg:
    """Send ``msg_type`` on the control channel and return its reply."""
    msg = kc.session.msg(msg_type, content or {})
    kc.control_channel.send(msg)
    return control_reply(kc, msg["header"]["msg_id"], timeout)


def interrupt(kc: BlockingKernelClient, timeout: float = TIMEOUT) -> None:
    """An interrupt_request on control (message mode); its reply must be ok."""
    reply = control_request(kc, "interrupt_request", timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
