"""ZMTP 3.x bytes built by hand from the spec (rfc.zeromq.org/spec/23 and /37), never
with trikernel's codec: the tests must not share the code they test.
"""

from __future__ import annotations

SHORT_MAX = 255  # longest body of a short frame

# The socket type a Jupyter client uses on each kernel channel.
PEER_TYPE = {"shell": "DEALER", "control": "DEALER", "stdin": "DEALER", "iopub": "SUB", "hb": "REQ"}


def wire(*parts: str | bytes) -> bytes:
    """Bytes written as in the spec captures: str parts are hex, bytes parts are literal."""
    return b"".join(bytes.fromhex(p) if isinstance(p, str) else p for p in parts)


def greeting(minor: int = 1, mechanism: bytes = b"NULL", major: int = 3) -> bytes:
    """A 64-byte greeting; byte 8 is 01 as libzmq sends it."""
    head = wire("ff 00 00 00 00 00 00 00 01 7f") + bytes([major, minor])
    return (head + mechanism.ljust(20, b"\x00")).ljust(64, b"\x00")


def frame(
    body: bytes,
    more: bool = False,
    *,
    command: bool = False,
    flags: int = 0,
    long: bool | None = None,
) -> bytes:
    """One frame: ``more``/``command`` set their flag bits, ``flags`` adds any others;
    long form if ``long`` (default: only when the body needs it)."""
    flags |= (0x01 if more else 0) | (0x04 if command else 0)
    if long or (long is None and len(body) > SHORT_MAX):
        return bytes([flags | 0x02]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body)]) + body


def command(name: bytes, data: bytes = b"", flags: int = 0x04) -> bytes:
    """A short command frame (``flags`` as given, for inputs an encoder would never make)."""
    body = bytes([len(name)]) + name + data
    assert len(body) <= SHORT_MAX
    return bytes([flags, len(body)]) + body


def message(frames: list[bytes]) -> bytes:
    """A multipart message: every frame but the last has MORE set."""
    return b"".join(frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))


def properties(props: dict[bytes, bytes]) -> bytes:
    """READY metadata: name-size(1) name value-size(4) value, in the given order."""
    return b"".join(bytes([len(n)]) + n + len(v).to_bytes(4, "big") + v for n, v in props.items())


def ready_with(props: dict[bytes, bytes]) -> bytes:
    """A READY command carrying exactly ``props`` (long form if it needs it)."""
    return frame(b"\x05READY" + properties(props), command=True)


def ready(socket_type: str | bytes, identity: bytes | None = None) -> bytes:
    """The READY of a ``socket_type`` peer, with an Identity property if given."""
    if isinstance(socket_type, str):
        socket_type = socket_type.encode()
    props = {b"Socket-Type": socket_type}
    if identity is not None:
        props[b"Identity"] = identity
    return ready_with(props)


def handshake(channel: str, identity: bytes | None = None) -> bytes:
    """What a Jupyter client's socket on ``channel`` sends first: greeting and READY."""
    return greeting() + ready(PEER_TYPE[channel], identity)
