"""One async function per request msg_type: no sockets, no wire format.

A handler gets the kernel context and the parsed request and returns the reply
content (or ``None`` for no reply). The kernel brackets every call with
``status: busy``/``idle`` and sends the reply to the request's identities.
Handlers are looked up in ``SHELL_HANDLERS`` / ``CONTROL_HANDLERS``, so a
misspelt handler is a KeyError at import time, not a silent missing reply.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from ._version import __version__
from .messages import PROTOCOL_VERSION, Message
from .zmtp.codec import Buffer

if TYPE_CHECKING:
    from .bridge import Evaluator, InputCallback

__all__ = ["KernelContext", "SHELL_HANDLERS", "CONTROL_HANDLERS", "kernel_info_content"]


class KernelContext(Protocol):
    execution_count: int

    async def publish(
        self,
        msg_type: str,
        content: dict[str, Any],
        parent: Message,
        buffers: list[Buffer] | None = None,
    ) -> None: ...

    async def get_evaluator(self) -> Evaluator: ...

    def input_callback(self, request: Message) -> InputCallback | None: ...

    def request_shutdown(self, restart: bool) -> None: ...

    def interrupt(self) -> None: ...


Handler = Callable[[KernelContext, Message], Awaitable[dict[str, Any] | None]]


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
    content = dict(msg.content)
    content.setdefault("code", "")
    silent = bool(content.get("silent", False))
    content["silent"] = silent
    content["store_history"] = bool(content.get("store_history", not silent)) and not silent
    content.setdefault("user_expressions", {})
    content.setdefault("allow_stdin", False)
    if not silent:
        # The count this cell will carry: the evaluator increments it only when the
        # cell is stored in history (as IPython does).
        await ctx.publish(
            "execute_input",
            {"code": content["code"], "execution_count": ctx.execution_count + 1},
            msg,
        )
    evaluator = await ctx.get_evaluator()
    reply = await evaluator.execute(
        content, request_input=ctx.input_callback(msg), parent=_parent_of(msg)
    )
    count = reply.get("execution_count")
    if isinstance(count, int):
        ctx.execution_count = count
    return reply


async def _forward(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    evaluator = await ctx.get_evaluator()
    return await evaluator.request(msg.msg_type, msg.content)


async def comm(ctx: KernelContext, msg: Message) -> None:
    evaluator = await ctx.get_evaluator()
    await evaluator.send_comm(msg.msg_type, msg.content, msg.buffers, parent=_parent_of(msg))
    return None


def _parent_of(msg: Message) -> dict[str, Any]:
    """What the evaluator needs to know of the request it carries out (see the
    ``parent`` of ``trikernel.evaluator.protocol``)."""
    return {"header": msg.header, "parent_header": msg.parent_header, "metadata": msg.metadata}


async def shutdown(ctx: KernelContext, msg: Message) -> dict[str, Any]:
    restart = bool(msg.content.get("restart", False))
    content = {"status": "ok", "restart": restart}
    await ctx.publish("shutdown_reply", content, msg)  # the broadcast copy ipykernel sends
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
    "complete_request": _forward,
    "inspect_request": _forward,
    "history_request": _forward,
    "is_complete_request": _forward,
    "comm_info_request": _forward,
    "comm_open": comm,
    "comm_msg": comm,
    "comm_close": comm,
    "shutdown_request": shutdown,
    "connect_request": connect,
}

CONTROL_HANDLERS: dict[str, Handler] = {
    "kernel_info_request": kernel_info,
    "shutdown_request": shutdown,
    "interrupt_request": interrupt,
}
