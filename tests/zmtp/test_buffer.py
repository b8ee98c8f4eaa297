"""Tests of the codec's ReceiveBuffer (trikernel.zmtp._buffer).

Correctness is checked against a plain ``bytes`` model; the O(N) bound in the
module docstring is checked by counting the bytes the buffer copies or moves,
never with a wall clock.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trikernel.zmtp import _buffer
from trikernel.zmtp._buffer import ReceiveBuffer

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


def test_fully_consumed_buffer_starts_over() -> None:
    buf = filled(b"abc")
    buf.skip(1)
    buf.consume(2)
    assert (len(buf._data), buf._start) == (0, 0)
    buf.append(b"xyz")
    assert buf.consume(3) == b"xyz"


def test_compaction_drops_the_consumed_prefix() -> None:
    size = _buffer._COMPACT_AT
    buf = filled(b"a" * size, b"b" * size)
    buf.skip(size - 1)
    assert buf._start == size - 1  # below the threshold: nothing moved yet
    buf.skip(1)
    assert buf._start == 0 and len(buf._data) == size  # compacted
    assert buf.consume(3) == b"bbb"


def test_no_compaction_while_the_prefix_is_the_smaller_half() -> None:
    size = _buffer._COMPACT_AT
    buf = filled(b"a" * size, b"b" * (3 * size))
    buf.skip(size)
    assert buf._start == size  # moving 3x the bytes to free 1x would not pay
    buf.skip(size)
    assert buf._start == 0 and buf.peek(1) == b"b"


def test_data_survives_compaction() -> None:
    size = _buffer._COMPACT_AT
    payload = bytes(range(256)) * (size // 128)
    buf = filled(payload)
    for pos in range(0, len(payload), 1000):
        assert buf.consume(min(1000, len(payload) - pos)) == payload[pos : pos + 1000]


@settings(max_examples=examples(100), deadline=None)
@given(
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("append"), st.binary(max_size=50)),
            st.tuples(st.sampled_from(["consume", "skip", "peek"]), st.integers(0, 60)),
        ),
        max_size=60,
    ),
    compact_at=st.sampled_from([1, 4, 16, 1 << 16]),
)
def test_matches_a_bytes_model(ops: list[tuple[str, object]], compact_at: int) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_buffer, "_COMPACT_AT", compact_at)
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


# ---- linear time, by operation count ---------------------------------------


class Moves:
    """Counts the bytes a ReceiveBuffer copies out or shifts down: its whole work."""

    def __init__(self) -> None:
        self.bytes = 0
        moves = self

        class Counting(bytearray):
            def __getitem__(self, key):  # type: ignore[no-untyped-def]
                item = super().__getitem__(key)
                if isinstance(key, slice):
                    moves.bytes += len(item)
                return item

            def __delitem__(self, key):  # type: ignore[no-untyped-def]
                if isinstance(key, slice):
                    _, stop, _ = key.indices(len(self))
                    moves.bytes += len(self) - stop  # what slides down to the front
                super().__delitem__(key)

            def __bytes__(self) -> bytes:  # the consume-everything fast path copies it all
                moves.bytes += len(self)
                return bytes(memoryview(self))

        self.array_type = Counting

    def watch(self, buf: ReceiveBuffer) -> None:
        """Count on ``buf``'s array, and on the fresh one the fast path puts in its place."""
        if type(buf._data) is not self.array_type:
            buf._data = self.array_type(buf._data)


def one_byte_at_a_time(
    total: int, append_size: int, backlog: int, buffer_type: type[ReceiveBuffer] = ReceiveBuffer
) -> int:
    """Feed ``total`` bytes in ``append_size`` pieces, keeping up to ``backlog`` buffered,
    and consume them one byte at a time; returns the bytes moved."""
    moves, buf = Moves(), buffer_type()
    moves.watch(buf)
    fed = eaten = 0
    piece = b"z" * append_size
    while eaten < total:
        while fed < total and fed - eaten < backlog:
            buf.append(piece)
            fed += append_size
        assert buf.consume(1) == b"z"
        eaten += 1
        moves.watch(buf)
    assert len(buf) == 0
    return moves.bytes


@pytest.mark.parametrize(
    ("append_size", "backlog"),
    [(1 << 18, 1 << 18), (1024, 10_000), (1, 1), (4096, 1 << 17)],
    ids=["all at once", "small reads", "byte ping-pong", "deep backlog"],
)
def test_one_byte_consumes_are_linear(
    monkeypatch: pytest.MonkeyPatch, append_size: int, backlog: int
) -> None:
    # 50 MB of 1-byte consumes would be 50 million Python calls (~25 s), so the
    # compaction threshold is scaled down with the data instead: 256 KiB against a
    # 256-byte threshold compacts at least as often, relative to the data, as
    # 50 MB against the real 64 KiB. Quadratic behaviour would move ~total**2 / 2.
    monkeypatch.setattr(_buffer, "_COMPACT_AT", 1 << 8)
    total = 1 << 18
    moved = one_byte_at_a_time(total, append_size, backlog)
    assert total <= moved <= 3 * total  # each byte copied out once, moved ~once more


def test_50_mb_through_the_real_threshold_is_linear() -> None:
    total, step = 50 * 10**6, 1 << 12
    moves, buf = Moves(), ReceiveBuffer()
    moves.watch(buf)
    chunk = b"q" * (1 << 16)
    fed = eaten = 0
    while eaten < total:
        while fed < total and fed - eaten < (8 << 20):  # up to 8 MB waiting, like a big frame
            buf.append(chunk[: total - fed])
            fed += min(len(chunk), total - fed)
        eaten += len(buf.consume(min(step, len(buf))))
        moves.watch(buf)
    assert total <= moves.bytes <= 3 * total


class NaiveBuffer(ReceiveBuffer):
    """Deletes the consumed prefix every time: the quadratic buffer the design avoids."""

    def _skip(self, count: int) -> None:
        del self._data[: self._start + count]
        self._start = 0


def test_the_counter_would_catch_quadratic_behaviour() -> None:
    total = 20_000
    assert one_byte_at_a_time(total, total, total, NaiveBuffer) > total**2 // 4
    assert one_byte_at_a_time(total, total, total) <= 3 * total
