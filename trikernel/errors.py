"""Every exception type trikernel raises.

TrikernelError
  ProtocolError            -- a protocol was violated
    LocalProtocolError     -- we (the caller) misused an API
    RemoteProtocolError    -- the peer broke the protocol; ``hint`` says what to answer
  ConnectionFileError      -- a connection file is missing, unreadable or invalid
  EvaluatorDied            -- the evaluator subprocess exited or was killed
"""

from __future__ import annotations

__all__ = [
    "TrikernelError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "ConnectionFileError",
    "EvaluatorDied",
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


class EvaluatorDied(TrikernelError):
    """The evaluator subprocess exited (``returncode`` as subprocess reports it)."""

    def __init__(self, msg: str, *, returncode: int | None = None) -> None:
        super().__init__(msg)
        self.returncode = returncode
