"""The typed frames of the evaluator pipe: one frozen dataclass per kind.

``protocol`` turns bytes into ``Frame(kind, body, buffers)``; this module turns a
``Frame`` into one of the classes below and back, checking every field once, so
a malformed body is a ``RemoteProtocolError`` naming the frame and the field,
never a ``KeyError`` deep in the bridge or the loop. Sans-IO, no trio.

bridge -> evaluator: Execute, Interrupt, Request, InputReply, Comm, Shutdown.
evaluator -> bridge: Ready, Output, Reply, Response, InputRequest, InterruptAck,
InterruptDelivered.

Request ids (``id``) are chosen by the bridge, one sequence for every frame that
waits for an answer. ``Output.request`` is the id of the request the output
belongs to (the running cell's; between cells, the latest execute or comm
frame's; 0 before any), so the kernel never guesses a parent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeAlias

from .._bytes import Buffer
from ..errors import LocalProtocolError, RemoteProtocolError
from ..evaluator_api import ExecuteRequest, Parent
from .protocol import (
    COMM,
    EXECUTE,
    INPUT_REPLY,
    INPUT_REQUEST,
    INTERRUPT,
    INTERRUPT_ACK,
    INTERRUPT_DELIVERED,
    OUTPUT,
    READY,
    REPLY,
    REQUEST,
    RESPONSE,
    SHUTDOWN,
    Frame,
)

__all__ = [
    "Execute",
    "Interrupt",
    "Request",
    "InputReply",
    "Comm",
    "Shutdown",
    "Ready",
    "Output",
    "Reply",
    "Response",
    "InputRequest",
    "InterruptAck",
    "InterruptDelivered",
    "TypedFrame",
    "decode",
]


def _get(frame: Frame, name: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if name not in frame.body:
        if default is ...:
            raise RemoteProtocolError(f"{frame.kind} frame without {name!r}")
        return default
    value = frame.body[name]
    if isinstance(value, bool) and kind is int:
        raise RemoteProtocolError(f"{frame.kind} frame: {name!r} must be int, not bool")
    if not isinstance(value, kind):
        raise RemoteProtocolError(
            f"{frame.kind} frame: {name!r} has type {type(value).__name__}", hint=None
        )
    return value


def _parent(frame: Frame) -> Parent:
    try:
        return Parent.from_json(frame.body.get("parent"))
    except RemoteProtocolError as exc:
        raise RemoteProtocolError(f"{frame.kind} frame: {exc}") from exc


# -- bridge -> evaluator ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Execute:
    """Run a cell. ``allow_stdin``: the bridge can answer input requests for it."""

    KIND: ClassVar[str] = EXECUTE
    id: int
    request: ExecuteRequest
    allow_stdin: bool = False

    def to_frame(self) -> Frame:
        body = {
            "id": self.id,
            "content": self.request.to_content(),
            "parent": self.request.parent.to_json(),
            "subshell_id": self.request.subshell_id,
            "allow_stdin": self.allow_stdin,
        }
        return Frame(self.KIND, body)

    @classmethod
    def from_frame(cls, frame: Frame) -> Execute:
        request = ExecuteRequest.from_content(
            _get(frame, "content", dict),
            _parent(frame),
            _get(frame, "subshell_id", (str, type(None)), None),
        )
        return cls(_get(frame, "id", int), request, bool(_get(frame, "allow_stdin", bool, False)))


@dataclass(frozen=True, slots=True)
class Interrupt:
    """Cancel cell ``id`` if it still runs."""

    KIND: ClassVar[str] = INTERRUPT
    id: int

    def to_frame(self) -> Frame:
        return Frame(self.KIND, {"id": self.id})

    @classmethod
    def from_frame(cls, frame: Frame) -> Interrupt:
        return cls(_get(frame, "id", int))


@dataclass(frozen=True, slots=True)
class Request:
    """complete/inspect/history/is_complete/comm_info: answered by ``Response``."""

    KIND: ClassVar[str] = REQUEST
    id: int
    msg_type: str
    content: Mapping[str, Any]
    parent: Parent = field(default_factory=Parent)

    def to_frame(self) -> Frame:
        body = {
            "id": self.id,
            "msg_type": self.msg_type,
            "content": dict(self.content),
            "parent": self.parent.to_json(),
        }
        return Frame(self.KIND, body)

    @classmethod
    def from_frame(cls, frame: Frame) -> Request:
        return cls(
            _get(frame, "id", int),
            _get(frame, "msg_type", str),
            _get(frame, "content", dict),
            _parent(frame),
        )


@dataclass(frozen=True, slots=True)
class InputReply:
    """The frontend's answer to an ``InputRequest``: a value, or why there is none."""

    KIND: ClassVar[str] = INPUT_REPLY
    value: str | None = None
    error: str | None = None

    def to_frame(self) -> Frame:
        body = {"error": self.error} if self.error is not None else {"value": self.value or ""}
        return Frame(self.KIND, body)

    @classmethod
    def from_frame(cls, frame: Frame) -> InputReply:
        error = _get(frame, "error", str, None)
        value = None if error is not None else _get(frame, "value", str)
        return cls(value, error)


@dataclass(frozen=True, slots=True)
class Comm:
    """A frontend comm_open/comm_msg/comm_close. With an ``id``, answered by a
    ``Response`` once its handlers ran (their outputs come first)."""

    KIND: ClassVar[str] = COMM
    msg_type: str
    content: Mapping[str, Any]
    parent: Parent = field(default_factory=Parent)
    buffers: tuple[Buffer, ...] = ()
    id: int | None = None

    def to_frame(self) -> Frame:
        body: dict[str, Any] = {
            "msg_type": self.msg_type,
            "content": dict(self.content),
            "parent": self.parent.to_json(),
        }
        if self.id is not None:
            body["id"] = self.id
        return Frame(self.KIND, body, self.buffers)

    @classmethod
    def from_frame(cls, frame: Frame) -> Comm:
        return cls(
            _get(frame, "msg_type", str),
            _get(frame, "content", dict),
            _parent(frame),
            tuple(frame.buffers),
            _get(frame, "id", int, None),
        )


@dataclass(frozen=True, slots=True)
class Shutdown:
    KIND: ClassVar[str] = SHUTDOWN

    def to_frame(self) -> Frame:
        return Frame(self.KIND)

    @classmethod
    def from_frame(cls, frame: Frame) -> Shutdown:
        return cls()


# -- evaluator -> bridge ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    KIND: ClassVar[str] = READY
    pid: int
    execution_count: int  # the count the next stored cell will get
    sync_token: str

    def to_frame(self) -> Frame:
        body = {
            "pid": self.pid,
            "execution_count": self.execution_count,
            "sync_token": self.sync_token,
        }
        return Frame(self.KIND, body)

    @classmethod
    def from_frame(cls, frame: Frame) -> Ready:
        return cls(
            _get(frame, "pid", int),
            _get(frame, "execution_count", int),
            _get(frame, "sync_token", str),
        )


@dataclass(frozen=True, slots=True)
class Output:
    """One iopub message. ``content`` bytes-like: wire JSON already encoded (it
    travels as the first buffer and is forwarded as it is)."""

    KIND: ClassVar[str] = OUTPUT
    request: int
    msg_type: str
    content: dict[str, Any] | Buffer
    metadata: Mapping[str, Any] = field(default_factory=dict)
    buffers: tuple[Buffer, ...] = ()

    def to_frame(self) -> Frame:
        body: dict[str, Any] = {
            "request": self.request,
            "msg_type": self.msg_type,
            "metadata": dict(self.metadata),
        }
        if isinstance(self.content, dict):
            body["content"] = self.content
            return Frame(self.KIND, body, self.buffers)
        body["packed"] = True
        return Frame(self.KIND, body, (self.content, *self.buffers))

    @classmethod
    def from_frame(cls, frame: Frame) -> Output:
        buffers = tuple(frame.buffers)
        content: dict[str, Any] | Buffer
        if frame.body.get("packed"):
            if not buffers:
                raise RemoteProtocolError("output frame: packed, but no content buffer")
            content, buffers = buffers[0], buffers[1:]
        else:
            content = _get(frame, "content", dict)
        return cls(
            _get(frame, "request", int, 0),
            _get(frame, "msg_type", str),
            content,
            _get(frame, "metadata", dict, {}),
            buffers,
        )


@dataclass(frozen=True, slots=True)
class Reply:
    """Cell ``id`` finished. ``fd_sync``: end-of-cell markers written to fd 1 and fd 2
    so far (the bridge holds the reply until it has read as many)."""

    KIND: ClassVar[str] = REPLY
    id: int
    content: Mapping[str, Any]
    fd_sync: tuple[int, int] = (0, 0)

    def to_frame(self) -> Frame:
        body = {"id": self.id, "content": dict(self.content), "fd_sync": list(self.fd_sync)}
        return Frame(self.KIND, body)

    @classmethod
    def from_frame(cls, frame: Frame) -> Reply:
        sync = _get(frame, "fd_sync", list, [0, 0])
        if len(sync) != 2 or not all(isinstance(n, int) and not isinstance(n, bool) for n in sync):
            raise RemoteProtocolError("reply frame: fd_sync must be two ints")
        return cls(_get(frame, "id", int), _get(frame, "content", dict), (sync[0], sync[1]))


@dataclass(frozen=True, slots=True)
class Response:
    """The answer to a ``Request`` or to a ``Comm`` with an id."""

    KIND: ClassVar[str] = RESPONSE
    id: int
    content: Mapping[str, Any] = field(default_factory=dict)

    def to_frame(self) -> Frame:
        return Frame(self.KIND, {"id": self.id, "content": dict(self.content)})

    @classmethod
    def from_frame(cls, frame: Frame) -> Response:
        return cls(_get(frame, "id", int), _get(frame, "content", dict))


@dataclass(frozen=True, slots=True)
class InputRequest:
    KIND: ClassVar[str] = INPUT_REQUEST
    id: int
    prompt: str
    password: bool = False

    def to_frame(self) -> Frame:
        return Frame(self.KIND, {"id": self.id, "prompt": self.prompt, "password": self.password})

    @classmethod
    def from_frame(cls, frame: Frame) -> InputRequest:
        return cls(
            _get(frame, "id", int), _get(frame, "prompt", str), _get(frame, "password", bool)
        )


@dataclass(frozen=True, slots=True)
class InterruptAck:
    """Cell ``id``'s cancel scope is cancelled."""

    KIND: ClassVar[str] = INTERRUPT_ACK
    id: int

    def to_frame(self) -> Frame:
        return Frame(self.KIND, {"id": self.id})

    @classmethod
    def from_frame(cls, frame: Frame) -> InterruptAck:
        return cls(_get(frame, "id", int))


@dataclass(frozen=True, slots=True)
class InterruptDelivered:
    """KeyboardInterrupt was raised in cell ``id``'s own code: whatever it does now
    (its ``finally`` blocks, a slow cleanup) is its handling of the interrupt."""

    KIND: ClassVar[str] = INTERRUPT_DELIVERED
    id: int

    def to_frame(self) -> Frame:
        return Frame(self.KIND, {"id": self.id})

    @classmethod
    def from_frame(cls, frame: Frame) -> InterruptDelivered:
        return cls(_get(frame, "id", int))


TypedFrame: TypeAlias = (
    Execute
    | Interrupt
    | Request
    | InputReply
    | Comm
    | Shutdown
    | Ready
    | Output
    | Reply
    | Response
    | InputRequest
    | InterruptAck
    | InterruptDelivered
)

_CLASSES: dict[str, Any] = {
    cls.KIND: cls
    for cls in (
        Execute,
        Interrupt,
        Request,
        InputReply,
        Comm,
        Shutdown,
        Ready,
        Output,
        Reply,
        Response,
        InputRequest,
        InterruptAck,
        InterruptDelivered,
    )
}


def decode(frame: Frame) -> TypedFrame:
    """The typed frame of ``frame``.

    Raises:
        RemoteProtocolError: a field is missing or has the wrong type.
    """
    cls = _CLASSES.get(frame.kind)
    if cls is None:  # FrameDecoder only yields known kinds; a Frame made by hand may not
        raise LocalProtocolError(f"unknown frame kind {frame.kind!r}")
    typed: TypedFrame = cls.from_frame(frame)
    return typed
