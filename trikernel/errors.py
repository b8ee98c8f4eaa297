"""Every exception type trikernel raises.

TrikernelError
  ProtocolError              -- a protocol was violated
    LocalProtocolError       -- we (the caller) misused an API
    RemoteProtocolError      -- the peer broke the protocol; ``hint`` says what to answer
  ConnectionFileError        -- a connection file is missing, unreadable or invalid
  KernelSpecError            -- a kernel.json is not JSON or has a bad field (named)
  NoSuchKernel               -- no kernelspec of that name (``name``, ``known``)
  EvaluatorDied              -- the evaluator subprocess exited or was killed (``returncode``)
    EvaluatorRestarted       -- ... by us, after an interrupt it did not obey in time
  EvaluatorBusy              -- the evaluator refused a request (too many queued)
  UnknownRequest             -- a request type the evaluator has no handler for
  BlockingInputError         -- input() in an embedded cell, where it would block the app
  UnknownSubshellError       -- a request named a subshell that does not exist
  KernelDied                 -- (client side) the kernel process is gone

Errors that end a request become error replies through ``reply_error`` (an
``ename`` that is the type's name, so clients see the same vocabulary).
"""

from __future__ import annotations

__all__ = [
    "TrikernelError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ConnectionFileError",
    "KernelSpecError",
    "NoSuchKernel",
    "EvaluatorDied",
    "EvaluatorRestarted",
    "EvaluatorBusy",
    "UnknownRequest",
    "BlockingInputError",
    "UnknownSubshellError",
    "KernelDied",
]


class TrikernelError(Exception):
    """Base class of every trikernel exception."""


class ProtocolError(TrikernelError):
    """A protocol (ZMTP, Jupyter wire format, evaluator pipe) was violated."""


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not allow.

    ``hint`` is what to answer before closing: for ZMTP the reason to put in an
    ERROR command, or ``None`` to close without one.
    """

    def __init__(self, msg: str, *, hint: str | None = None) -> None:
        super().__init__(msg)
        self.hint = hint


class ConnectionFileError(TrikernelError):
    """A connection file is missing, unreadable, or has a bad field."""


class KernelSpecError(TrikernelError):
    """A kernelspec's kernel.json is unreadable, not JSON, or has a bad field."""


class NoSuchKernel(TrikernelError):
    """No kernelspec has this name. ``known`` lists the names that exist.

    Unlike jupyter_client's, this is not a KeyError: ``str()`` is the message, not a
    quoted key, and ``except KeyError`` around a dict lookup cannot swallow it.
    """

    def __init__(self, name: str, known: tuple[str, ...] = ()) -> None:
        listed = ", ".join(known) if known else "none"
        super().__init__(f"no kernelspec named {name!r}; known kernelspecs: {listed}")
        self.name = name
        self.known = known


class EvaluatorDied(TrikernelError):
    """The evaluator subprocess exited (``returncode`` as subprocess reports it:
    negative for a signal; None when it is not known, e.g. it never started)."""

    def __init__(self, msg: str, *, returncode: int | None = None) -> None:
        super().__init__(msg)
        self.returncode = returncode


class EvaluatorRestarted(EvaluatorDied):
    """We killed and replaced the evaluator: an interrupted cell did not stop in time."""


class EvaluatorBusy(TrikernelError):
    """The evaluator has too many requests waiting and refused this one."""


class UnknownRequest(TrikernelError):
    """A request type the evaluator has no handler for."""


class BlockingInputError(TrikernelError, RuntimeError):
    """input() was called inside an embedded cell, where it would block the app."""


class UnknownSubshellError(TrikernelError):
    """A request named a subshell id that does not exist."""


class KernelDied(TrikernelError):
    """The kernel process exited while a client was waiting for it."""
