"""Helpers for byte-level tests of the sans-IO ZMTP codec: no sockets, only bytes.

``feed``/``drain`` play the reader loop (receive_data, then next_event until
NEED_DATA). ``split_feed`` feeds the same bytes whole, byte by byte, in random
chunks and with trailing bytes, and checks that every way gives the same events
(``split_feed_error``: the same RemoteProtocolError). ``CodecPair`` wires two
codecs back to back, like h11's ``ConnectionPair``. Bytes written by hand come from
``support.wire``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pytest
from hypothesis import settings
from support.wire import greeting

from trikernel.errors import RemoteProtocolError
from trikernel.zmtp.codec import NEED_DATA, Connection, State
from trikernel.zmtp.events import ConnectionClosed, Event, Greeting, Message, Ready

# A codec that hands out more events than this without NEED_DATA is looping.
MAX_EVENTS = 100_000

# Bytes that start a frame but do not finish it: fed after a case, they must stay
# buffered without changing its events (h11's "trailing bytes"). A command frame,
# because a message frame is refused from its header while the handshake is on.
TRAILING = b"\x04\x05\x04PI"

Chunking = None | int | random.Random | Sequence[int]


def examples(n: int) -> int:
    """``n`` hypothesis examples under the CI profile; the profile's own count if larger (fuzz)."""
    return max(n, settings.default.max_examples) if settings.default.max_examples > 100 else n


# ---- the reader loop ------------------------------------------------------


def drain(conn: Connection, into: list[Event] | None = None) -> list[Event]:
    """Every event ``conn`` has ready, stopping at NEED_DATA (which must come).

    Events are appended to ``into`` (if given) as they come, so that a caller
    expecting an exception still sees the events that came before it.
    """
    events = [] if into is None else into
    for _ in range(MAX_EVENTS):
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
    raise AssertionError(f"next_event did not return NEED_DATA after {MAX_EVENTS} events")


def chunks(data: bytes, chunking: Chunking = None) -> list[bytes]:
    """Cut ``data``: None = whole; int n = n bytes at a time; Random = random sizes;
    a sequence of ints = cut at those offsets."""
    if chunking is None:
        return [data] if data else []
    if isinstance(chunking, int):
        return [data[i : i + chunking] for i in range(0, len(data), chunking)]
    if isinstance(chunking, random.Random):
        pieces, pos = [], 0
        while pos < len(data):
            size = chunking.randint(1, max(1, len(data) // 4))
            pieces.append(data[pos : pos + size])
            pos += size
        return pieces
    cuts = sorted({0, len(data), *(c for c in chunking if 0 <= c <= len(data))})
    return [data[a:b] for a, b in zip(cuts, cuts[1:], strict=False)]


def feed(
    conn: Connection,
    data: bytes,
    chunking: Chunking = None,
    *,
    eof: bool = False,
    into: list[Event] | None = None,
) -> list[Event]:
    """Feed ``data`` cut by ``chunking``, draining after every piece; ``eof`` ends the stream.

    Events are appended to ``into`` (if given) as they come, as in ``drain``.
    """
    events = [] if into is None else into
    for piece in chunks(data, chunking):
        conn.receive_data(piece)
        drain(conn, events)
    if eof:
        conn.receive_data(b"")
        drain(conn, events)
    return events


def chunkings(data: bytes, seeds: Iterable[int] = (0, 1, 2)) -> list[tuple[str, Chunking]]:
    ways: list[tuple[str, Chunking]] = [("whole", None), ("byte by byte", 1)]
    ways += [(f"random chunks (seed {s})", random.Random(s)) for s in seeds]
    return ways


def split_feed(
    factory: Callable[[], Connection],
    data: bytes,
    *,
    eof: bool = False,
    state: State | None = None,
    trailing: bytes = TRAILING,
) -> list[Event]:
    """Events from ``data`` fed to fresh connections whole, byte by byte, in random
    chunks, and followed by trailing bytes; asserts every way agrees and returns them."""
    expected = feed(factory(), data, eof=eof)
    final: set[State] = set()
    for name, chunking in chunkings(data):
        conn = factory()
        assert feed(conn, data, chunking, eof=eof) == expected, name
        final.add(conn.state)
    assert len(final) == 1, f"chunkings ended in different states: {final}"
    if state is not None:
        assert final == {state}
    if not eof and final & {State.HANDSHAKE, State.TRAFFIC, State.CLOSED}:
        conn = factory()
        assert feed(conn, data + trailing) == expected, "with trailing bytes"
        assert conn.state in final
    return expected


def assert_stuck_in_error(conn: Connection, exc: RemoteProtocolError) -> None:
    """After a remote error, the state stays ERROR and every call raises the same error,
    whatever is fed afterwards."""
    assert conn.state is State.ERROR
    more = [b""] if conn._eof else [greeting(), b"\x00\x00", b""]
    for data in [None, *more]:
        if data is not None:
            conn.receive_data(data)
        with pytest.raises(RemoteProtocolError) as again:
            conn.next_event()
        assert again.value is exc
        assert conn.state is State.ERROR


def split_feed_error(
    factory: Callable[[], Connection], data: bytes, match: str, *, eof: bool = False
) -> RemoteProtocolError:
    """Like ``split_feed``, for input that must raise RemoteProtocolError matching ``match``.

    Every chunking must give the same events before the error, the same message
    and the same hint; returns the error raised for the whole input.
    """
    results = []
    for name, chunking in chunkings(data):
        conn: Connection = factory()
        events: list[Event] = []
        with pytest.raises(RemoteProtocolError, match=match) as info:
            feed(conn, data, chunking, eof=eof, into=events)
        assert_stuck_in_error(conn, info.value)
        results.append((name, (events, str(info.value), info.value.hint), info.value))
    for name, outcome, _ in results[1:]:
        assert outcome == results[0][1], name
    return results[0][2]


# ---- connections in a given state ----------------------------------------


def peer_initiate(peer_type: str, **options: Any) -> bytes:
    """What a peer of ``peer_type`` sends first: its greeting and READY."""
    return Connection(peer_type, **options).initiate()


def greeted(socket_type: str, *, peer_minor: int = 1, **options: Any) -> Connection:
    """A connection that has read a valid greeting (state HANDSHAKE)."""
    conn = Connection(socket_type, **options)
    assert feed(conn, greeting(minor=peer_minor)) == [Greeting(3, peer_minor, b"NULL")]
    return conn


def handshaken(
    socket_type: str, peer_type: str, *, peer_minor: int = 1, **options: Any
) -> Connection:
    """A connection that has read a greeting and the READY of a ``peer_type`` (state TRAFFIC)."""
    conn = Connection(socket_type, **options)
    events = feed(conn, peer_initiate(peer_type, minor=peer_minor))
    assert [type(e) for e in events] == [Greeting, Ready]
    assert conn.state is State.TRAFFIC
    return conn


# ---- two codecs back to back ---------------------------------------------


class CodecPair:
    """Two codecs handshaken with each other; ``send`` carries events from one to the other.

    ``pair.send("a", [Message([b"x"])])`` encodes on ``a``, feeds the bytes to
    ``b`` (cut by ``chunking``) and checks that ``b`` produced the same events
    (``expect="match"``), the given list, or anything (``expect=None``).
    """

    def __init__(
        self,
        a_type: str,
        b_type: str,
        *,
        a_options: dict[str, Any] | None = None,
        b_options: dict[str, Any] | None = None,
    ) -> None:
        self.a = Connection(a_type, **(a_options or {}))
        self.b = Connection(b_type, **(b_options or {}))
        a_first, b_first = self.a.initiate(), self.b.initiate()
        self.handshake = {"a": feed(self.a, b_first), "b": feed(self.b, a_first)}
        for side, conn in (("a", self.a), ("b", self.b)):
            assert [type(e) for e in self.handshake[side]] == [Greeting, Ready], side
            assert conn.state is State.TRAFFIC

    def conns(self, side: str) -> tuple[Connection, Connection]:
        """(sender, receiver) for a message sent by ``side``."""
        return (self.a, self.b) if side == "a" else (self.b, self.a)

    def send(
        self,
        side: str,
        events: Sequence[Event],
        expect: Sequence[Event] | str | None = "match",
        chunking: Chunking = None,
    ) -> list[Event]:
        sender, receiver = self.conns(side)
        data = b"".join(sender.send(event) for event in events)
        received = feed(receiver, data, chunking)
        if expect == "match":
            assert received == list(events)
        elif expect is not None:
            assert received == list(expect)
        return received

    def send_frames(self, side: str, frames: list[bytes], chunking: Chunking = None) -> bytes:
        """Send one multipart message with ``send_frames``; check it arrives whole; return the wire bytes."""
        sender, receiver = self.conns(side)
        data = b"".join(sender.send_frames(frames))
        assert feed(receiver, data, chunking) == [Message(frames)]
        return data

    def close(self, side: str) -> list[Event]:
        """``side`` closes its end: the other one sees end of stream."""
        _, receiver = self.conns(side)
        events = feed(receiver, b"", eof=True)
        assert events == [ConnectionClosed()]
        return events
