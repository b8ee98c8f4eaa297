"""The byte utilities of every codec (ZMTP, the evaluator pipe): Buffer, byte_view, ReceiveBuffer.

The received chunks are kept as they came (a deque of ``bytes``) with a read
offset into the first one. Consuming a span that lies inside one chunk slices
it (or hands the whole chunk over without a copy); a span across chunks is
joined once. So every received byte is copied at most once on its way out,
however the stream was chunked: O(N) for N bytes, and a 64 MiB frame that
arrived in 64 KiB reads costs one join, not a growing array that is reallocated
and then copied out again.

Small chunks are merged into a small tail chunk, so a peer that trickles single
bytes cannot make the deque hold millions of tiny objects.

Also here, because the kernel needs them before it imports anything heavy: the
``Buffer`` type of frames and wire pieces, and ``byte_view``, which makes any of
them safe to measure with ``len()`` and to write without a copy.
"""

from __future__ import annotations

from collections import deque

#: bytes-like that frames and wire pieces may be (bytes, or a view of a big buffer)
Buffer = bytes | bytearray | memoryview

_MERGE_BELOW = 4096  # chunks smaller than this are merged into a small tail


def byte_view(buffer: Buffer) -> bytes | memoryview:
    """``buffer`` as bytes-like whose ``len()`` counts bytes (a memoryview of floats
    counts items), without copying it unless it is not contiguous. A bytearray comes
    back as a view, which keeps other threads from resizing it while it is written."""
    if type(buffer) is bytes:
        return buffer
    view = memoryview(buffer)
    if view.nbytes == 0:
        return b""  # cast() refuses zeros in a shape, e.g. an empty 2-d array
    if not view.c_contiguous:
        return view.tobytes()
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


class ReceiveBuffer:
    __slots__ = ("_chunks", "_offset", "_len")

    def __init__(self) -> None:
        self._chunks: deque[bytes] = deque()
        self._offset = 0  # read position in the first chunk
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        chunk = data if type(data) is bytes else bytes(data)
        chunks = self._chunks
        if len(chunk) < _MERGE_BELOW and chunks and len(chunks[-1]) < _MERGE_BELOW:
            chunks[-1] += chunk  # copies only small pieces
        else:
            chunks.append(chunk)
        self._len += len(chunk)

    def byte_at(self, index: int) -> int:
        index += self._offset
        for chunk in self._chunks:
            if index < len(chunk):
                return chunk[index]
            index -= len(chunk)
        raise IndexError("read past the buffered bytes")

    def peek(self, count: int) -> bytes:
        """The first ``count`` bytes, not consumed (fewer if fewer are buffered)."""
        parts = []
        offset = self._offset
        for chunk in self._chunks:
            if count <= 0:
                break
            piece = chunk[offset : offset + count]
            parts.append(piece)
            count -= len(piece)
            offset = 0
        return b"".join(parts)

    def consume(self, count: int) -> bytes:
        """Remove and return the first ``count`` bytes; caller checked ``len(self)``."""
        if count <= 0:
            return b""
        chunks, offset = self._chunks, self._offset
        first = chunks[0]
        self._len -= count
        if len(first) - offset >= count:
            if offset == 0 and count == len(first):
                chunks.popleft()  # the whole chunk: no copy at all
                return first
            end = offset + count
            if end == len(first):
                chunks.popleft()
                end = 0
            self._offset = end
            return first[offset : offset + count]
        # The span crosses chunks: gather views, copy once.
        parts = [memoryview(first)[offset:]]
        needed = count - (len(first) - offset)
        chunks.popleft()
        self._offset = 0
        while needed:
            chunk = chunks[0]
            if len(chunk) <= needed:
                parts.append(memoryview(chunk))
                needed -= len(chunk)
                chunks.popleft()
            else:
                parts.append(memoryview(chunk)[:needed])
                self._offset = needed
                needed = 0
        return b"".join(parts)

    def skip(self, count: int) -> None:
        self.consume(count)
