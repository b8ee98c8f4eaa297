"""Tests of the codec's ReceiveBuffer (trikernel._bytes).

Correctness is checked against a plain ``bytes`` model; the O(N) bound in the
module docstring (every byte copied at most once on its way out) is checked by
counting the bytes that consume() copies, never with a wall clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trikernel import _bytes as _buffer
from trikernel._bytes import ReceiveBuffer

from .helpers import examples


def filled(*chunks: bytes) -> ReceiveBuffer:
    buf = ReceiveBuffer()
    for chunk in chunks:
        buf.append(chunk)
    return buf


def test_empty() -> None:
    buf = ReceiveBuffer()
    assert len(buf) == 0
    assert buf.peek(5) == b""
    assert buf.consume(0) == b""


def test_append_accepts_bytes_like() -> None:
    buf = filled(b"ab", bytearray(b"cd"), memoryview(b"ef"))
    assert buf.consume(6) == b"abcdef"


def test_consume_in_pieces_across_appends() -> None:
    buf = filled(b"hel", b"lo wo", b"rld")
    assert buf.consume(2) == b"he"
    assert buf.consume(5) == b"llo w"
    assert len(buf) == 4
    assert buf.consume(4) == b"orld"
    assert len(buf) == 0


def test_consume_returns_bytes() -> None:
    buf = filled(b"abc")
    assert type(buf.consume(1)) is bytes
    assert type(buf.consume(2)) is bytes  # the whole-array fast path too


def test_peek_does_not_consume() -> None:
    buf = filled(b"abcdef")
    assert buf.peek(3) == b"abc"
    assert buf.peek(3) == b"abc"
    assert buf.peek(100) == b"abcdef"  # fewer if fewer are buffered
    assert len(buf) == 6


def test_peek_and_byte_at_after_consume() -> None:
    buf = filled(b"abcdef")
    buf.consume(2)
    assert buf.peek(2) == b"cd"
    assert buf.byte_at(0) == ord("c")
    assert buf.byte_at(3) == ord("f")


def test_skip() -> None:
    buf = filled(b"abcdef")
    buf.skip(4)
    assert len(buf) == 2
    assert buf.consume(2) == b"ef"


def test_whole_chunk_is_handed_over_without_a_copy() -> None:
    chunk = b"x" * 100_000
    buf = filled(chunk)
    assert buf.consume(100_000) is chunk


def test_small_appends_are_merged() -> None:
    buf = ReceiveBuffer()
    for _ in range(10_000):
        buf.append(b"y")
    assert len(buf._chunks) <= 10_000 // _buffer._MERGE_BELOW + 2
    assert buf.consume(10_000) == b"y" * 10_000


def test_byte_at_past_the_end_raises() -> None:
    with pytest.raises(IndexError):
        filled(b"ab").byte_at(2)


@settings(max_examples=examples(100), deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.binary(max_size=50)),
            st.tuples(st.just("append"), st.binary(min_size=4096, max_size=5000)),
            st.tuples(st.sampled_from(["consume", "skip", "peek"]), st.integers(0, 6000)),
        ),
        max_size=60,
    ),
)
def test_matches_a_bytes_model(ops: list[tuple[str, object]]) -> None:
    check_against_model(ops)


def check_against_model(ops: list[tuple[str, object]]) -> None:
    buf, model = ReceiveBuffer(), b""
    for op, arg in ops:
        if op == "append":
            buf.append(arg)
            model += arg
        else:
            count = min(arg, len(model))  # callers check len() first
            if op == "peek":
                assert buf.peek(arg) == model[:arg]
            elif op == "consume":
                assert buf.consume(count) == model[:count]
                model = model[count:]
            else:
                buf.skip(count)
                model = model[count:]
        assert len(buf) == len(model)
        assert all(buf.byte_at(i) == model[i] for i in range(min(len(model), 3)))


# ---- linear time, by counting copies ------------------------------------------


class CountingBuffer(ReceiveBuffer):
    """Counts the bytes consume() returns that are not whole received chunks (copies)."""

    __slots__ = ("copied", "received")

    def __init__(self) -> None:
        super().__init__()
        self.copied = 0
        self.received: set[int] = set()

    def append(self, data: bytes | bytearray | memoryview) -> None:
        super().append(data)
        self.received.update(id(c) for c in self._chunks)

    def consume(self, count: int) -> bytes:
        out = super().consume(count)
        if id(out) not in self.received:
            self.copied += len(out)
        return out


@pytest.mark.parametrize(
    ("append_size", "consume_size"),
    [(1 << 16, 1), (1 << 16, 1 << 20), (1000, 7), (1 << 20, 1 << 16), (1, 3)],
    ids=["1-byte consumes", "a big frame over many reads", "odd sizes", "big reads", "trickle"],
)
def test_every_byte_is_copied_at_most_once(append_size: int, consume_size: int) -> None:
    total = 1 << 21 if consume_size > 1 else 1 << 17
    buf = CountingBuffer()
    piece = b"z" * append_size
    fed = eaten = 0
    while eaten < total:
        while fed < total and fed - eaten < max(consume_size, append_size) * 2:
            buf.append(piece)
            fed += append_size
        eaten += len(buf.consume(min(consume_size, len(buf))))
    assert buf.copied <= eaten  # at most once each, whatever the chunking


def test_a_frame_spread_over_reads_is_joined_once() -> None:
    buf = CountingBuffer()
    for _ in range(1024):
        buf.append(b"q" * (1 << 16))
    frame = buf.consume(1 << 26)
    assert len(frame) == 1 << 26 and buf.copied == 1 << 26
