"""Comms (what ipywidgets 8 uses, through the ``comm`` package) for kernel shells.

``route_comms(current)`` points ``comm.create_comm`` and ``comm.get_comm_manager``
at the shell ``current()`` returns (the subprocess evaluator has one shell; the
embedded one finds it by context), and returns the undo. A comm sends through
the outbox of the shell that made it. ``deliver`` runs the handlers of a
frontend comm message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import comm
import comm.base_comm

from .streams import Outbox

__all__ = ["ShellComm", "route_comms", "deliver"]


class ShellComm(comm.base_comm.BaseComm):
    """A comm whose messages leave through ``outbox``, registered with ``manager``
    (its shell's: also when it is closed after the shell has gone, e.g. by a
    widget's ``__del__``)."""

    def __init__(
        self, *args: Any, outbox: Outbox, manager: comm.base_comm.CommManager, **kwargs: Any
    ) -> None:
        self._outbox = outbox  # before BaseComm.__init__, which may open the comm
        self._manager = manager
        super().__init__(*args, **kwargs)

    def close(
        self,
        data: dict | None = None,
        metadata: dict | None = None,
        buffers: list | None = None,
        deleting: bool = False,
    ) -> None:
        if self._closed:
            return
        self._closed = True
        data = self._close_data if data is None else data
        self.publish_msg("comm_close", data=data, metadata=metadata, buffers=buffers)
        if not deleting:
            self._manager.comms.pop(self.comm_id, None)

    def publish_msg(
        self,
        msg_type: str,
        data: dict | None = None,
        metadata: dict | None = None,
        buffers: list | None = None,
        **keys: Any,
    ) -> None:
        content = {"data": data or {}, "comm_id": self.comm_id, **keys}
        self._outbox.send_output(msg_type, content, metadata=metadata, buffers=buffers or ())


def route_comms(current: Callable[[], Any]) -> Callable[[], None]:
    """Make the ``comm`` package use the shell ``current()`` returns (a ``KernelShell``,
    or None: then what was there before). Returns the function that undoes it."""
    old_create, old_get = comm.create_comm, comm.get_comm_manager

    def create_comm(*args: Any, **kwargs: Any) -> Any:
        shell = current()
        if shell is None:
            return old_create(*args, **kwargs)
        return ShellComm(*args, outbox=shell.outbox, manager=shell.comm_manager, **kwargs)

    def get_comm_manager() -> Any:
        shell = current()
        return shell.comm_manager if shell is not None else old_get()

    comm.create_comm = create_comm
    comm.get_comm_manager = get_comm_manager

    def undo() -> None:
        if comm.create_comm is create_comm:
            comm.create_comm = old_create
        if comm.get_comm_manager is get_comm_manager:
            comm.get_comm_manager = old_get

    return undo


def deliver(
    manager: comm.base_comm.CommManager, outbox: Outbox, msg_type: str, msg: dict[str, Any]
) -> None:
    """Run the handlers of a frontend comm_open/comm_msg/comm_close (``msg`` as
    ``facade.request_message`` makes it). A malformed message is reported on stderr."""
    handler = {
        "comm_open": manager.comm_open,
        "comm_msg": manager.comm_msg,
        "comm_close": manager.comm_close,
    }.get(msg_type)
    if handler is None:
        return
    try:
        handler(None, None, msg)  # type: ignore[arg-type]
    except Exception as exc:  # a malformed message (no comm_id ...) must not end us
        text = f"trikernel: ignored a malformed {msg_type}: {type(exc).__name__}: {exc}\n"
        outbox.write_stream("stderr", text)
