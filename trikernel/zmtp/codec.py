"""Sans-IO ZMTP 3.x connection (NULL mechanism).

Theory of operation
-------------------
A ``Connection`` is fed the bytes received from the peer with ``receive_data``
(``b""`` means end of stream) and hands back events with ``next_event`` until it
returns ``NEED_DATA``. What we want to send is turned into bytes by
``initiate()`` (our greeting and READY, sent at once on connect: waiting for the
peer's greeting first deadlocks against libzmq, which sends its own in stages)
and ``send(event)``. No I/O, no clock, no logging.

State table (receive side)::

    state       input                                   -> event / next state
    GREETING    64 valid greeting bytes                 -> Greeting, HANDSHAKE
    GREETING    bad signature/version/mechanism         -> RemoteProtocolError, ERROR
    HANDSHAKE   READY command (valid Socket-Type)       -> Ready, TRAFFIC
    HANDSHAKE   ERROR command                           -> Error, CLOSED
    HANDSHAKE   anything else                           -> RemoteProtocolError, ERROR
    TRAFFIC     message frame                           -> buffered; last one -> Message
    TRAFFIC     PING / PONG / SUBSCRIBE / CANCEL        -> Ping / Pong / Subscribe / Cancel
    TRAFFIC     unknown command                         -> ignored (also between frames)
    TRAFFIC     ERROR command                           -> Error, CLOSED
    TRAFFIC     READY again, command with MORE          -> RemoteProtocolError, ERROR
    any         end of stream                           -> ConnectionClosed, CLOSED
    ERROR       anything                                -> RemoteProtocolError again

Commands between the frames of a multipart message are accepted and do not
break the message (libzmq 4.3 does the same). On PUB/XPUB sockets a one-frame
message starting with ``01``/``00`` is a 3.0 subscription and is reported as
Subscribe/Cancel; on other sockets it is an ordinary message.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from enum import Enum, auto

from .._bytes import Buffer, ReceiveBuffer, byte_view
from ..errors import LocalProtocolError, RemoteProtocolError
from .events import (
    Cancel,
    ConnectionClosed,
    Error,
    Event,
    Greeting,
    Message,
    Ping,
    Pong,
    Ready,
    Subscribe,
)

__all__ = [
    "Connection",
    "NEED_DATA",
    "PASS_THROUGH_SIZE",
    "Buffer",
    "coalesce",
    "encode_frames",
    "State",
    "VALID_PEERS",
    "GREETING_SIZE",
]


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()
_CONSUMED = object()  # a frame was used up without producing an event


class State(Enum):
    GREETING = auto()
    HANDSHAKE = auto()
    TRAFFIC = auto()
    CLOSED = auto()
    ERROR = auto()


GREETING_SIZE = 64
MECHANISM = b"NULL"

# RFC 37 valid pairs: our socket type -> peer types we accept.
VALID_PEERS: dict[str, frozenset[str]] = {
    "REQ": frozenset({"REP", "ROUTER"}),
    "REP": frozenset({"REQ", "DEALER"}),
    "DEALER": frozenset({"REP", "DEALER", "ROUTER"}),
    "ROUTER": frozenset({"REQ", "DEALER", "ROUTER"}),
    "PUB": frozenset({"SUB", "XSUB"}),
    "XPUB": frozenset({"SUB", "XSUB"}),
    "SUB": frozenset({"PUB", "XPUB"}),
    "XSUB": frozenset({"PUB", "XPUB"}),
}
_PUBLISHERS = frozenset({"PUB", "XPUB"})

_MORE = 0x01
_LONG = 0x02
_COMMAND = 0x04
_RESERVED = 0xF8

_MAX_COMMAND_SIZE = 1 << 20  # commands are small; READY metadata has no business being huge

_LONG_SIZE = struct.Struct(">BQ")
_SHORT_SIZE = struct.Struct(">BB")


def _greeting(minor: int) -> bytes:
    # Padding byte 8 is 01 as libzmq sends it; it carries no meaning.
    return (
        b"\xff" + b"\x00" * 7 + b"\x01\x7f" + bytes([3, minor]) + MECHANISM.ljust(20, b"\x00")
    ).ljust(GREETING_SIZE, b"\x00")


def _header(flags: int, size: int) -> bytes:
    if size > 255:
        return _LONG_SIZE.pack(flags | _LONG, size)
    return _SHORT_SIZE.pack(flags, size)


def _frame(flags: int, body: bytes) -> bytes:
    return _header(flags, len(body)) + body


# Bodies this big are written as they are, not joined to their headers: a 50 MB
# display is then not copied on its way to the socket.
PASS_THROUGH_SIZE = 1 << 16


def encode_frames(frames: Sequence[Buffer]) -> list[Buffer]:
    """Wire bytes of a multipart message, as pieces to write in order.

    Headers and small bodies are joined into one piece (one copy of each); bodies
    of ``PASS_THROUGH_SIZE`` bytes or more are pieces of their own, not copied.
    Independent of any connection's state, so a publisher encodes once for all
    its subscribers."""
    if not frames:
        raise LocalProtocolError("a message has at least one frame")
    pieces: list[Buffer] = []
    last = len(frames) - 1
    for i, body in enumerate(frames):
        if type(body) is not bytes:
            body = byte_view(body)  # len() must count bytes, and the writer sends it as is
        pieces.append(_header(_MORE if i < last else 0, len(body)))
        pieces.append(body)
    return coalesce(pieces)


def coalesce(pieces: list[Buffer]) -> list[Buffer]:
    """Runs of small pieces joined (one copy, one write each); pieces of
    ``PASS_THROUGH_SIZE`` bytes or more kept as they are."""
    out: list[Buffer] = []
    run: list[Buffer] = []
    for piece in pieces:
        if len(piece) < PASS_THROUGH_SIZE:
            run.append(piece)
            continue
        if run:
            out.append(run[0] if len(run) == 1 else b"".join(run))
            run = []
        out.append(piece)
    if run:
        out.append(run[0] if len(run) == 1 else b"".join(run))
    return out


def _command(name: bytes, data: bytes = b"") -> bytes:
    return _frame(_COMMAND, bytes([len(name)]) + name + data)


def encode_properties(properties: dict[str, bytes]) -> bytes:
    parts = []
    for name, value in properties.items():
        raw = name.encode("ascii")
        if not 0 < len(raw) < 256:
            raise LocalProtocolError(f"property name {name!r} must be 1..255 bytes")
        parts.append(bytes([len(raw)]) + raw + struct.pack(">I", len(value)) + value)
    return b"".join(parts)


def decode_properties(data: bytes) -> dict[str, bytes]:
    properties: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        name_size = data[pos]
        pos += 1
        if name_size == 0 or pos + name_size + 4 > len(data):
            raise RemoteProtocolError("truncated or empty property name in READY")
        try:
            name = data[pos : pos + name_size].decode("ascii")
        except UnicodeDecodeError:
            raise RemoteProtocolError("property name in READY is not ASCII") from None
        pos += name_size
        (value_size,) = struct.unpack_from(">I", data, pos)
        pos += 4
        if value_size > len(data) - pos:
            raise RemoteProtocolError(f"property {name!r} in READY is truncated")
        properties[name] = data[pos : pos + value_size]
        pos += value_size
    return properties


class Connection:
    """One ZMTP connection, either side, as a pure state machine.

    Args:
        socket_type: our socket type (``"ROUTER"``, ``"XPUB"``, ...).
        identity: sent as the READY ``Identity`` property by DEALER/REQ/ROUTER.
        minor: the ZMTP minor version we greet with (1, or 0 to act as a 3.0 peer).
        max_frame_size: frames larger than this are a remote protocol error,
            checked from the header before the body is buffered.
        max_message_frames: frames per multipart message.
        max_message_size: total body bytes per multipart message.
    """

    def __init__(
        self,
        socket_type: str,
        *,
        identity: bytes = b"",
        minor: int = 1,
        max_frame_size: int = 1 << 30,
        max_message_frames: int = 1 << 16,
        max_message_size: int = 1 << 30,
    ) -> None:
        if socket_type not in VALID_PEERS:
            raise LocalProtocolError(f"unknown socket type {socket_type!r}")
        if minor not in (0, 1):
            raise LocalProtocolError("we speak ZMTP 3.0 or 3.1 only")
        self.socket_type = socket_type
        self.identity = identity
        self.minor = minor
        self.max_frame_size = max_frame_size
        self.max_message_frames = max_message_frames
        self.max_message_size = max_message_size
        self.state = State.GREETING
        self.peer_minor: int | None = None
        self.peer_socket_type: str | None = None
        self._buffer = ReceiveBuffer()
        self._eof = False
        self._parts: list[bytes] = []
        self._parts_size = 0
        self._error: RemoteProtocolError | None = None

    # ---- sending -------------------------------------------------------

    def initiate(self) -> bytes:
        """Our greeting and READY, to send in one write as soon as the stream opens."""
        properties = {"Socket-Type": self.socket_type.encode()}
        if self.socket_type in ("DEALER", "REQ", "ROUTER"):
            properties["Identity"] = self.identity
        return _greeting(self.minor) + _command(b"READY", encode_properties(properties))

    def send(self, event: Event) -> bytes:
        """Bytes for one outgoing event. Messages may be sent only after the peer's READY."""
        if isinstance(event, Message):
            return b"".join(self.send_frames(event.frames))
        if isinstance(event, Subscribe | Cancel):
            return self._send_subscription(event)
        if isinstance(event, Ping):
            return _command(b"PING", struct.pack(">H", event.ttl) + event.context[:16])
        if isinstance(event, Pong):
            return _command(b"PONG", event.context)
        if isinstance(event, Error):
            if self.state is not State.ERROR:  # after a remote error we stay in ERROR
                self.state = State.CLOSED
            return _command(b"ERROR", bytes([len(event.reason[:255])]) + event.reason[:255])
        raise LocalProtocolError(f"cannot send {type(event).__name__}")

    def send_frames(self, frames: Sequence[Buffer]) -> list[Buffer]:
        """Wire pieces of a multipart message (the hot path: no event object needed)."""
        if self.state is not State.TRAFFIC:
            raise LocalProtocolError(f"cannot send a message in state {self.state.name}")
        return encode_frames(frames)

    def _send_subscription(self, event: Subscribe | Cancel) -> bytes:
        if self.state is not State.TRAFFIC:
            raise LocalProtocolError("subscribe only after the handshake")
        subscribe = isinstance(event, Subscribe)
        if min(self.minor, self.peer_minor or 0) == 0:  # 3.0 on either side: the message form
            return _frame(0, (b"\x01" if subscribe else b"\x00") + event.topic)
        return _command(b"SUBSCRIBE" if subscribe else b"CANCEL", event.topic)

    # ---- receiving -----------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> None:
        """Feed received bytes; ``b""`` means the peer closed its side."""
        if data:
            if self._eof:
                raise LocalProtocolError("data received after end of stream")
            self._buffer.append(data)
        else:
            self._eof = True

    def next_event(self) -> Event | _NeedData:
        """The next event from the received bytes, or ``NEED_DATA``.

        Raises:
            RemoteProtocolError: the peer violated ZMTP; the connection is then in
                state ERROR and every later call raises the same error. ``hint``
                is the reason to send in an ERROR command before closing.
        """
        if self._error is not None:
            raise self._error
        try:
            event = self._next_event()
        except RemoteProtocolError as exc:
            self.state = State.ERROR
            self._error = exc
            raise
        return event

    def _next_event(self) -> Event | _NeedData:
        while self.state is not State.CLOSED:
            result: Event | object | None
            if self.state is State.GREETING:
                result = self._read_greeting()
            else:
                result = self._read_frame()
            if result is None:  # not enough bytes buffered
                if self._eof:
                    self.state = State.CLOSED
                    return ConnectionClosed()
                return NEED_DATA
            if result is not _CONSUMED:
                return result  # type: ignore[return-value]
        return NEED_DATA

    def _read_greeting(self) -> Greeting | None:
        buf = self._buffer
        # Check what we can as soon as it arrives, so garbage is refused at once.
        if len(buf) >= 1 and buf.byte_at(0) != 0xFF:
            raise RemoteProtocolError("not a ZMTP peer: bad signature byte", hint=None)
        if len(buf) >= 10 and not buf.byte_at(9) & 1:
            raise RemoteProtocolError("not a ZMTP 2+ peer: bad signature end", hint=None)
        if len(buf) >= 11 and buf.byte_at(10) < 3:
            raise RemoteProtocolError(f"ZMTP {buf.byte_at(10)}.x is not supported", hint=None)
        if len(buf) < GREETING_SIZE:
            return None
        greeting = buf.consume(GREETING_SIZE)
        mechanism = greeting[12:32].rstrip(b"\x00")
        if mechanism != MECHANISM:
            raise RemoteProtocolError(
                f"security mechanism {mechanism!r} is not supported (only NULL)",
                hint="unsupported security mechanism",
            )
        self.peer_minor = greeting[11]
        self.state = State.HANDSHAKE
        return Greeting(major=greeting[10], minor=greeting[11], mechanism=mechanism)

    def _complete_frame_size(self) -> tuple[int, int, int] | None:
        """(flags, header size, body size) if a whole frame is buffered, else None."""
        buf = self._buffer
        available = len(buf)
        if available < 2:
            return None
        flags = buf.byte_at(0)
        if flags & _RESERVED:
            raise RemoteProtocolError(f"reserved flag bits set in frame flags {flags:#04x}")
        if self.state is State.HANDSHAKE and not flags & _COMMAND:
            # Refuse at the header: never buffer a body a peer sends before READY.
            raise RemoteProtocolError("message frame before READY", hint="expected READY")
        if flags & _LONG:
            if available < 9:
                return None
            header = buf.peek(9)
            size = int.from_bytes(header[1:9], "big")
            header_size = 9
        else:
            size = buf.byte_at(1)
            header_size = 2
        self._check_size(flags, size)
        if available < header_size + size:
            return None
        return flags, header_size, size

    def _check_size(self, flags: int, size: int) -> None:
        if flags & _COMMAND and size > _MAX_COMMAND_SIZE:
            raise RemoteProtocolError(
                f"command of {size} bytes is too large", hint="command too large"
            )
        if size > self.max_frame_size:
            raise RemoteProtocolError(
                f"frame of {size} bytes exceeds the limit of {self.max_frame_size}",
                hint="frame too large",
            )
        if not flags & _COMMAND and self._parts_size + size > self.max_message_size:
            raise RemoteProtocolError(
                f"message exceeds the limit of {self.max_message_size} bytes",
                hint="message too large",
            )

    def _read_frame(self) -> Event | object | None:
        found = self._complete_frame_size()
        if found is None:
            return None
        flags, header_size, size = found
        self._buffer.skip(header_size)
        body = self._buffer.consume(size)
        if flags & _COMMAND:
            if flags & _MORE:
                raise RemoteProtocolError("command frame with the MORE flag set")
            return self._handle_command(body)
        if self.state is State.HANDSHAKE:
            raise RemoteProtocolError("message frame before READY", hint="expected READY")
        return self._handle_message_frame(flags, body)

    def _handle_message_frame(self, flags: int, body: bytes) -> Event | object:
        self._parts.append(body)
        self._parts_size += len(body)
        if len(self._parts) > self.max_message_frames:
            raise RemoteProtocolError(
                f"message has more than {self.max_message_frames} frames",
                hint="too many frames",
            )
        if flags & _MORE:
            return _CONSUMED
        frames, self._parts, self._parts_size = self._parts, [], 0
        if len(frames) == 1 and self.socket_type in _PUBLISHERS:
            return self._message_form_subscription(frames[0])
        return Message(frames)

    def _message_form_subscription(self, body: bytes) -> Event | object:
        if body[:1] == b"\x01":
            return Subscribe(body[1:])
        if body[:1] == b"\x00":
            return Cancel(body[1:])
        return _CONSUMED  # other data to a publisher is meaningless: ignore it

    def _handle_command(self, body: bytes) -> Event | object:
        if not body or len(body) < 1 + body[0]:
            raise RemoteProtocolError("truncated command name")
        name = body[1 : 1 + body[0]]
        data = body[1 + body[0] :]
        if self.state is State.HANDSHAKE:
            if name == b"READY":
                return self._handle_ready(data)
            if name == b"ERROR":
                return self._handle_error(data)
            raise RemoteProtocolError(
                f"expected READY, got command {name!r}", hint="expected READY"
            )
        if name == b"PING":
            if len(data) < 2:
                raise RemoteProtocolError("truncated PING command")
            return Ping(ttl=int.from_bytes(data[:2], "big"), context=data[2:18])
        if name == b"PONG":
            return Pong(context=data)
        if name == b"SUBSCRIBE":
            return Subscribe(data)
        if name == b"CANCEL":
            return Cancel(data)
        if name == b"ERROR":
            return self._handle_error(data)
        if name == b"READY":
            raise RemoteProtocolError("second READY command", hint="unexpected READY")
        return _CONSUMED  # unknown commands are ignored, as RFC 37 allows

    def _handle_ready(self, data: bytes) -> Ready:
        properties = decode_properties(data)
        lowered = {name.lower(): value for name, value in properties.items()}
        raw_type = lowered.get("socket-type")
        if raw_type is None:
            raise RemoteProtocolError("READY without Socket-Type", hint="missing Socket-Type")
        peer_type = raw_type.decode("ascii", "replace")
        if peer_type not in VALID_PEERS[self.socket_type]:
            raise RemoteProtocolError(
                f"a {peer_type} peer cannot talk to our {self.socket_type}",
                hint="invalid socket type",
            )
        if len(lowered.get("identity", b"")) > 255:
            raise RemoteProtocolError("Identity longer than 255 bytes", hint="invalid identity")
        self.peer_socket_type = peer_type
        self.state = State.TRAFFIC
        return Ready(socket_type=peer_type, properties=properties)

    def _handle_error(self, data: bytes) -> Error:
        reason = data[1 : 1 + data[0]] if data else b""
        self.state = State.CLOSED
        return Error(reason)
