"""Receive buffer for the ZMTP codec.

A bytearray plus a read offset. Consuming advances the offset; the consumed
prefix is deleted only once it is both large and more than half the array, so
each received byte is moved at most a constant number of times: feeding N bytes
and consuming them costs O(N) whatever the chunking.
"""

from __future__ import annotations

_COMPACT_AT = 1 << 16


class ReceiveBuffer:
    __slots__ = ("_data", "_start")

    def __init__(self) -> None:
        self._data = bytearray()
        self._start = 0

    def __len__(self) -> int:
        return len(self._data) - self._start

    def append(self, data: bytes | bytearray | memoryview) -> None:
        self._data += data

    def byte_at(self, index: int) -> int:
        return self._data[self._start + index]

    def peek(self, count: int) -> bytes:
        """The first ``count`` bytes, not consumed (fewer if fewer are buffered)."""
        return bytes(self._data[self._start : self._start + count])

    def consume(self, count: int) -> bytes:
        """Remove and return the first ``count`` bytes; caller checked ``len(self)``."""
        start = self._start
        if start == 0 and count == len(self._data):
            # Common case for big frames: hand over the whole array without a copy.
            chunk = bytes(self._data)
            self._data = bytearray()
            return chunk
        chunk = bytes(self._data[start : start + count])
        self._skip(count)
        return chunk

    def skip(self, count: int) -> None:
        self._skip(count)

    def _skip(self, count: int) -> None:
        self._start += count
        if self._start == len(self._data):
            self._data.clear()
            self._start = 0
        elif self._start >= _COMPACT_AT and self._start * 2 >= len(self._data):
            del self._data[: self._start]
            self._start = 0
