"""Sans-IO framing of the private pipe between the bridge and the evaluator.

Theory of operation
-------------------
Both directions carry the same frames: a JSON object plus raw byte buffers
(comm and display buffers travel as bytes, never base64, never pickle)::

    frame  := size:u32be  head_size:u32be  head  buffer*
    head   := UTF-8 JSON {"kind": str, "body": {...}, "buffers": [len, ...]}

``size`` counts everything after itself, so a reader knows the whole frame's
length from its first four bytes and checks it against ``max_frame_size``
*before* buffering the rest. ``FrameDecoder.receive_data(bytes)`` buffers
(``b""`` means end of stream) and ``next_frame()`` returns a ``Frame``,
``NEED_DATA`` or, after a clean end of stream, ``CLOSED``. ``encode_frame``
turns a ``Frame`` into bytes (pieces to write in order). No I/O, no clock, no trio: the evaluator uses
this from plain threads and the bridge from trio tasks.

Frame kinds and bodies
----------------------
bridge -> evaluator::

    execute      {"id": int, "content": execute_request content, "allow_stdin": bool,
                  "parent"?: parent}
    interrupt    {"id": int}                       cancel cell ``id`` if it still runs
    request      {"id": int, "msg_type": str, "content": {...}}   complete, inspect, ...
    input_reply  {"value": str}  or  {"error": str}
    comm         {"msg_type": str, "content": {...}, "parent"?: parent, "id"?: int}  + buffers
                 with an id, answered by ``response {"id": id, "content": {}}`` once
                 the comm handlers ran (their outputs come first, in pipe order)
    shutdown     {}

    parent       {"header": {...}, "parent_header": {...}, "metadata": {...}}
                 of the Jupyter request the frame carries out: the kernel attributes
                 output to the latest execute or comm request, and the evaluator
                 shows that same request to user code (``get_ipython().kernel
                 .get_parent()``, which ipywidgets' ``Output`` needs) and passes the
                 metadata to comm handlers

evaluator -> bridge::

    ready        {"pid": int, "execution_count": int, "sync_token": str}
    output       {"msg_type": str, "content": {...}, "metadata": {...}}  + buffers
    reply        {"id": int, "content": execute_reply content, "fd_sync": [int, int]}
    response     {"id": int, "content": reply content}
    input_request {"id": int, "prompt": str, "password": bool}
    interrupt_ack {"id": int}                      the cell's cancel scope is cancelled
    interrupt_delivered {"id": int}                KeyboardInterrupt was raised in the
                                                   cell's own code: it is handling it

``fd_sync`` is how many end-of-cell markers the evaluator has written to its
fd 1 and to its fd 2 so far: the bridge waits until it has read that many from
each pipe before handing back the reply, so C-level output of a cell arrives
before the cell's reply (see ``trikernel.bridge``).
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from .._bytes import Buffer, ReceiveBuffer, byte_view
from ..errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "sync_marker",
    "Frame",
    "FrameDecoder",
    "encode_frame",
    "NEED_DATA",
    "CLOSED",
    "KINDS",
    "DEFAULT_MAX_FRAME_SIZE",
    "EXECUTE",
    "INTERRUPT",
    "REQUEST",
    "INPUT_REPLY",
    "COMM",
    "SHUTDOWN",
    "READY",
    "OUTPUT",
    "REPLY",
    "RESPONSE",
    "INPUT_REQUEST",
    "INTERRUPT_ACK",
    "INTERRUPT_DELIVERED",
]

# bridge -> evaluator
EXECUTE = "execute"
INTERRUPT = "interrupt"
REQUEST = "request"
INPUT_REPLY = "input_reply"
COMM = "comm"
SHUTDOWN = "shutdown"
# evaluator -> bridge
READY = "ready"
OUTPUT = "output"
REPLY = "reply"
RESPONSE = "response"
INPUT_REQUEST = "input_request"
INTERRUPT_ACK = "interrupt_ack"
INTERRUPT_DELIVERED = "interrupt_delivered"

KINDS = frozenset(
    {
        EXECUTE,
        INTERRUPT,
        REQUEST,
        INPUT_REPLY,
        COMM,
        SHUTDOWN,
        READY,
        OUTPUT,
        REPLY,
        RESPONSE,
        INPUT_REQUEST,
        INTERRUPT_ACK,
        INTERRUPT_DELIVERED,
    }
)

DEFAULT_MAX_FRAME_SIZE = 256 * 1024 * 1024
_U32 = struct.Struct(">I")


class _Sentinel:
    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")
CLOSED = _Sentinel("CLOSED")


@dataclass(frozen=True)
class Frame:
    """One message on the pipe: a kind, a JSON-able body, and raw buffers."""

    kind: str
    body: dict[str, Any] = field(default_factory=dict)
    buffers: tuple[Buffer, ...] = ()


def encode_frame(
    frame: Frame,
    *,
    default: Callable[[Any], Any] | None = None,
    max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
) -> list[Buffer]:
    """Return the bytes of ``frame`` as pieces to write in order: the sizes and the
    head, then each buffer as it is (a 50 MB buffer is not copied to be framed).

    Args:
        default: passed to ``json.dumps`` for objects JSON cannot encode.
    Raises:
        LocalProtocolError: unknown kind, or the frame exceeds ``max_frame_size``.
        TypeError / ValueError: the body is not JSON-serializable.
    """
    if frame.kind not in KINDS:
        raise LocalProtocolError(f"unknown frame kind {frame.kind!r}")
    buffers = [byte_view(b) for b in frame.buffers]
    head = {"kind": frame.kind, "body": frame.body, "buffers": [len(b) for b in buffers]}
    try:
        head_bytes = json.dumps(
            head, separators=(",", ":"), ensure_ascii=False, default=default
        ).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates (a cell may hold them): escape them
        head_bytes = json.dumps(head, separators=(",", ":"), default=default).encode("ascii")
    size = 4 + len(head_bytes) + sum(len(b) for b in buffers)
    if size > max_frame_size:
        raise LocalProtocolError(f"frame of {size} bytes exceeds the limit of {max_frame_size}")
    return [_U32.pack(size) + _U32.pack(len(head_bytes)) + head_bytes, *buffers]


# A frame at least this big is read straight into its final buffer (``read_target``).
DIRECT_READ_SIZE = 1 << 20


@dataclass
class _Direct:
    """A big frame whose head is parsed and whose buffers are being filled."""

    kind: str
    body: dict[str, Any]
    lengths: list[int]
    data: bytearray
    filled: int = 0


class FrameDecoder:
    """Incremental decoder: ``receive_data`` bytes, then ``next_frame`` until NEED_DATA.

    The bytes are kept in the ZMTP codec's ``ReceiveBuffer`` (received chunks, not
    one growing array), and a frame is taken apart in place: its head and each of
    its buffers are consumed separately, so every byte is copied at most once. A
    frame's announced size is checked against ``max_frame_size`` as soon as its
    first four bytes are in, so an oversized frame is refused without being
    buffered. After a ``RemoteProtocolError`` the decoder stays broken and raises
    it again.

    A frame of ``direct_read_size`` bytes or more gets one buffer for all its
    buffers as soon as its head is in (what was already received is copied over);
    ``read_target()`` is then where the I/O layer may read the rest directly (and
    report it with ``target_filled``), so a 50 MB display payload is copied once
    from the pipe and never joined. ``receive_data`` works all the same. Buffers
    come out as memoryviews, whatever the frame's size (as ipykernel hands them).
    """

    def __init__(
        self,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        direct_read_size: int = DIRECT_READ_SIZE,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.direct_read_size = direct_read_size
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._error: RemoteProtocolError | None = None
        self._direct: _Direct | None = None

    def receive_data(self, data: bytes) -> None:
        """Buffer ``data``; ``b""`` marks the end of the stream."""
        if self._error is not None:
            return
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data after end of stream")
            return
        if not data:
            self._eof = True
            return
        direct = self._direct
        if direct is not None:  # the frame in progress takes what it still lacks
            taken = min(len(data), len(direct.data) - direct.filled)
            direct.data[direct.filled : direct.filled + taken] = memoryview(data)[:taken]
            direct.filled += taken
            data = data[taken:]
            if not data:
                return
        self._buffer.append(data)
        if direct is None:
            self._check_size()

    def read_target(self) -> memoryview | None:
        """The unfilled rest of a big frame's buffers, to read into directly; else None."""
        direct = self._direct
        if direct is None or self._error is not None or direct.filled == len(direct.data):
            return None
        return memoryview(direct.data)[direct.filled :]

    def target_filled(self, count: int) -> None:
        """``count`` bytes were read into the start of ``read_target()``."""
        direct = self._direct
        if direct is None or not 0 <= count <= len(direct.data) - direct.filled:
            raise LocalProtocolError(f"target_filled({count}) without that much room")
        direct.filled += count

    def next_frame(self) -> Frame | _Sentinel:
        """Return the next complete ``Frame``, ``NEED_DATA`` or ``CLOSED``.

        Raises:
            RemoteProtocolError: oversized or malformed frame, or the stream
                ended in the middle of a frame.
        """
        if self._error is not None:
            raise self._error
        if self._direct is None:
            available = len(self._buffer)
            size = self._check_size()
            if size is not None and available >= 4 + size:
                self._buffer.skip(4)
                kind, body, lengths = self._parse_head(size)
                buffers = tuple(memoryview(self._buffer.consume(n)) for n in lengths)
                return Frame(kind, body, buffers)
            if size is not None and size >= self.direct_read_size:
                self._start_direct(size)
        direct = self._direct
        if direct is not None and direct.filled == len(direct.data):
            self._direct = None
            view = memoryview(direct.data)
            offsets = itertools.accumulate(direct.lengths, initial=0)
            buffers = tuple(
                view[start : start + n] for start, n in zip(offsets, direct.lengths, strict=False)
            )
            return Frame(direct.kind, direct.body, buffers)
        if not self._eof:
            return NEED_DATA
        if direct is None and not self._buffer:
            return CLOSED
        self._fail("the stream ended in the middle of a frame")

    def _check_size(self) -> int | None:
        if len(self._buffer) < 4:
            return None
        size = int.from_bytes(self._buffer.peek(4), "big")
        if size > self.max_frame_size or size < 4:
            self._fail(f"frame size {size} outside 4..{self.max_frame_size}")
        return size

    def _start_direct(self, size: int) -> None:
        # Once the head is in: parse it, and move the buffered start of the buffers over.
        buf = self._buffer
        if len(buf) < 8:
            return
        head_size = int.from_bytes(buf.peek(8)[4:], "big")
        if 4 + head_size <= size and len(buf) < 8 + head_size:
            return  # (a head that cannot fit fails in _parse_head at once)
        buf.skip(4)
        kind, body, lengths = self._parse_head(size)
        direct = _Direct(kind, body, lengths, bytearray(sum(lengths)))
        filled = min(len(buf), len(direct.data))
        direct.data[:filled] = buf.consume(filled)
        direct.filled = filled
        self._direct = direct

    def _parse_head(self, size: int) -> tuple[str, dict[str, Any], list[int]]:
        """Consume and check the head of a frame of ``size`` bytes (its size prefix
        is consumed, the head is buffered)."""
        buf = self._buffer
        try:
            head_size = int.from_bytes(buf.consume(4), "big")
            if 4 + head_size > size:
                raise ValueError("head runs past the end of the frame")
            head = json.loads(buf.consume(head_size).decode("utf-8"))
            kind, body, lengths = head["kind"], head["body"], head["buffers"]
            if kind not in KINDS or not isinstance(body, dict) or not isinstance(lengths, list):
                raise ValueError("bad kind, body or buffers")
            if not all(isinstance(n, int) and n >= 0 for n in lengths):
                raise ValueError("bad buffer length")
            if 4 + head_size + sum(lengths) != size:
                raise ValueError("buffer lengths do not add up to the frame size")
        except (ValueError, KeyError, TypeError) as exc:
            self._fail(f"malformed frame: {exc}")
        return kind, body, lengths

    def _fail(self, msg: str) -> NoReturn:
        self._error = RemoteProtocolError(msg, hint=None)
        self._buffer = ReceiveBuffer()
        self._direct = None
        raise self._error


def sync_marker(token: str) -> bytes:
    """The end-of-cell marker the evaluator writes to fd 1 and fd 2: once the bridge
    has read it from both, everything the cell wrote there has arrived."""
    return b"\x00\x1b[trikernel-sync:" + token.encode("ascii") + b"]\x00"
