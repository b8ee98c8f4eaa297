"""Events the ZMTP codec produces and accepts: nouns, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "Greeting",
    "Ready",
    "Message",
    "Subscribe",
    "Cancel",
    "Ping",
    "Pong",
    "Error",
    "ConnectionClosed",
    "Event",
]


@dataclass(frozen=True, slots=True)
class Greeting:
    """The peer's 64-byte greeting was valid."""

    major: int
    minor: int
    mechanism: bytes


@dataclass(frozen=True, slots=True)
class Ready:
    """The peer's READY: handshake done. ``properties`` keys are as the peer spelled them."""

    socket_type: str
    properties: dict[str, bytes] = field(default_factory=dict)

    @property
    def identity(self) -> bytes:
        for name, value in self.properties.items():
            if name.lower() == "identity":
                return value
        return b""


@dataclass(frozen=True, slots=True)
class Message:
    """A complete multipart message (never partial)."""

    frames: list[bytes]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A subscription, from a SUBSCRIBE command (3.1) or a ``01``+topic message (3.0)."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class Cancel:
    """An unsubscription, from a CANCEL command (3.1) or a ``00``+topic message (3.0)."""

    topic: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    ttl: int = 0  # tenths of a second; 0 means none
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class Pong:
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class Error:
    """The peer sent an ERROR command; the connection is over."""

    reason: bytes


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer closed its side (end of stream)."""


Event = Greeting | Ready | Message | Subscribe | Cancel | Ping | Pong | Error | ConnectionClosed
