"""Every per-msg_type rule, against a small context: no sockets, no wire format.

``dispatch(ctx, msg, table, respond)`` brackets one request with ``status:
busy``/``idle`` on iopub, calls its handler from ``table`` and hands the reply
content (and its metadata) to ``respond`` before ``idle``. A handler gets the
context and the parsed request and returns the reply content, or ``None`` for
no reply (comm messages). The tables are dicts of functions, so a misspelt
handler is a NameError at import time, not a silent missing reply.

The rules that live here and nowhere else:

* execute_request is parsed once (``ExecuteRequest.from_content``: silent implies
  no history; a field of the wrong type is an error reply naming it);
* ``execute_input`` carries the count the cell will get: the evaluator's
  ``execution_count`` (its one owner) plus one, and is not sent for a silent cell;
* a failed, non-silent cell with ``stop_on_error`` aborts the execute_requests
  already received (``ctx.abort_queued()``; the kernel then dispatches those with
  ``ABORTING_SHELL_HANDLERS``, where execute_request is answered ``aborted`` and
  every other request as usual);
* a cell that called exit() (an ``ask_exit`` payload without keepkernel) stops the
  kernel once its reply is sent, as ipykernel does;
* introspection and comm messages go to the evaluator with their parent.
"""

from __future__ import annotations

import logging
import platform
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from ._bytes import Buffer
from ._version import __version__
from .cells.replies import error_from
from .errors import EvaluatorDied, RemoteProtocolError
from .evaluator_api import (
    COMM_MESSAGES,
    INTROSPECTION_REQUESTS,
    Evaluator,
    ExecuteRequest,
    InputCallback,
    Parent,
)
from .messages import PROTOCOL_VERSION, Message

__all__ = [
    "KernelContext",
    "Handler",
    "Respond",
    "dispatch",
    "SHELL_HANDLERS",
    "ABORTING_SHELL_HANDLERS",
    "CONTROL_HANDLERS",
    "kernel_info_content",
]

log = logging.getLogger("trikernel.handlers")


class KernelContext(Protocol):
    """What handlers need of the kernel."""

    @property
    def execution_count(self) -> int:
        """The evaluator's (0 before it started)."""
        ...

    def publish(
        self, msg_type: str, content: dict[str, Any] | Buffer, parent: Message | None
    ) -> None: ...

    async def get_evaluator(self) -> Evaluator:
        """Raises EvaluatorDied if it could not be started."""
        ...

    def input_callback(self, request: Message) -> InputCallback: ...

    def abort_queued(self) -> None:
        """stop_on_error: answer the execute_requests already received ``aborted``."""

    def request_shutdown(self, restart: bool) -> None: ...

    def interrupt(self) -> None: ...


Handler = Callable[[KernelContext, Message], Awaitable[dict[str, Any] | None]]
#: (request, reply content, reply metadata) -> send the reply to the request's identities
Respond = Callable[[Message, dict[str, Any], dict[str, Any]], None]


async def dispatch(
    ctx: KernelContext, msg: Message, table: Mapping[str, Handler], respond: Respond
) -> None:
    """Handle one request: busy, the handler, the reply, idle."""
    handler = table.get(msg.msg_type)
    ctx.publish("status", {"execution_state": "busy"}, msg)
    try:
        if handler is None:
            log.warning("no handler for message type %r; ignored", msg.msg_type)
            return
        try:
            reply = await handler(ctx, msg)
        except Exception as exc:
            # A failed request gets an error reply rather than silence; the kernel's
            # own bugs are still logged with their traceback.
            log.exception("error while handling %s", msg.msg_type)
            reply = error_from(exc)
        if reply is not None:
            respond(msg, reply, _reply_metadata(msg, reply))
    finally:
        ctx.publish("status", {"execution_state": "idle"}, msg)


def _reply_metadata(msg: Message, reply: dict[str, Any]) -> dict[str, Any]:
    if msg.msg_type == "execute_request":  # as ipykernel: the status, for frontends
        return {"status": reply.get("status", "ok")}
    return {}


def kernel_info_content() -> dict[str, Any]:
    major, minor = sys.version_info[:2]
    return {
        "status": "ok",
        "protocol_version": PROTOCOL_VERSION,
        "implementation": "trikernel",
        "implementation_version": __version__,
        "language_info": {
            "name": "python",
            "version": platform.python_version(),
            "mimetype": "text/x-python",
            "file_extension": ".py",
            "pygments_lexer": "ipython3",
            "codemirror_mode": {"name": "ipython", "version": 3},
            "nbconvert_exporter": "python",
        },
        "banner": f"trikernel {__version__} (Python {major}.{minor}, trio) -- a Jupyter kernel on trio",
        "help_links": [
            {"text": "Python Reference", "url": f"https://docs.python.org/{major}.{minor}"},
            {"text": "trio", "url": "https://trio.readthedocs.io/"},
            {"text": "IPython Reference", "url": "https://ipython.readthedocs.io/"},
        ],
        # Only what works: no debugger, no subshells.
        "supported_features": [],
        "debugger": False,
    }


async def kernel_info(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    return kernel_info_content()


async def execute(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    try:
        request = ExecuteRequest.from_content(msg.content, Parent.of(msg))
        evaluator = await ctx.get_evaluator()
    except (RemoteProtocolError, EvaluatorDied) as exc:
        return error_from(exc, execution_count=ctx.execution_count)
    if not request.silent:
        # The count this cell will carry: the evaluator increments it only when the
        # cell is stored in history (as IPython does).
        count = evaluator.execution_count + 1
        ctx.publish("execute_input", {"code": request.code, "execution_count": count}, msg)
    request_input = ctx.input_callback(msg) if request.allow_stdin else None
    reply = await evaluator.execute(request, request_input)
    if reply.get("status") == "error" and request.stop_on_error and not request.silent:
        ctx.abort_queued()
    if _asks_exit(reply):
        # exit()/quit() in a cell: the kernel stops after this reply, as ipykernel does
        # (the frontend then restarts it, or a console quits).
        ctx.request_shutdown(False)
    return reply


def _asks_exit(reply: dict[str, Any]) -> bool:
    payload = reply.get("payload")
    return isinstance(payload, list) and any(
        isinstance(p, dict) and p.get("source") == "ask_exit" and not p.get("keepkernel")
        for p in payload
    )


async def aborted(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    """An execute_request queued behind a failed cell (stop_on_error): not run."""
    return {"status": "aborted", "execution_count": ctx.execution_count}


async def introspect(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    try:
        evaluator = await ctx.get_evaluator()
    except EvaluatorDied as exc:
        return error_from(exc)
    return await evaluator.request(msg.msg_type, dict(msg.content), Parent.of(msg))


async def comm(ctx: KernelContext, msg: Message) -> None:
    try:
        evaluator = await ctx.get_evaluator()
    except EvaluatorDied as exc:  # comm messages have no reply
        log.warning("%s dropped: %s", msg.msg_type, exc)
        return
    await evaluator.send_comm(msg.msg_type, dict(msg.content), msg.buffers, Parent.of(msg))


async def shutdown(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    restart = bool(msg.content.get("restart", False))
    content = {"status": "ok", "restart": restart}
    ctx.publish("shutdown_reply", content, msg)  # the broadcast copy ipykernel sends
    ctx.request_shutdown(restart)
    return content


async def interrupt(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    ctx.interrupt()
    return {"status": "ok"}


async def connect(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    return {"status": "ok"}  # deprecated; the ports are in the connection file


SHELL_HANDLERS: dict[str, Handler] = {
    "execute_request": execute,
    "kernel_info_request": kernel_info,
    **{msg_type: introspect for msg_type in sorted(INTROSPECTION_REQUESTS)},
    **{msg_type: comm for msg_type in sorted(COMM_MESSAGES)},
    "shutdown_request": shutdown,
    "connect_request": connect,
}

ABORTING_SHELL_HANDLERS: dict[str, Handler] = {**SHELL_HANDLERS, "execute_request": aborted}

CONTROL_HANDLERS: dict[str, Handler] = {
    "kernel_info_request": kernel_info,
    "shutdown_request": shutdown,
    "interrupt_request": interrupt,
}
