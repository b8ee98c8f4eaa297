"""Byte-level tests of the evaluator pipe framing: whole, byte by byte, with
trailing data, arbitrary chunking (hypothesis), and hostile input."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trikernel.errors import LocalProtocolError, RemoteProtocolError
from trikernel.evaluator.protocol import (
    CLOSED,
    KINDS,
    NEED_DATA,
    OUTPUT,
    REPLY,
    Frame,
    FrameDecoder,
    encode_frame,
)

CASES = [
    Frame("shutdown"),
    Frame(REPLY, {"id": 3, "content": {"status": "ok", "execution_count": 1}}),
    Frame(OUTPUT, {"msg_type": "stream", "content": {"name": "stdout", "text": "é\n" * 100}}),
    Frame("comm", {"msg_type": "comm_msg"}, (b"", b"\x00\xff" * 1000, b"x")),
]


def wire(frame: Frame, **kwargs: Any) -> bytes:
    return b"".join(encode_frame(frame, **kwargs))


def test_buffers_are_written_as_they_are() -> None:
    big = bytearray(b"x" * 100_000)
    floats = memoryview(bytearray(16)).cast("d")  # 2 items, 16 bytes
    pieces = encode_frame(Frame(OUTPUT, {"msg_type": "display_data"}, (big, floats)))
    assert isinstance(pieces[1], memoryview) and pieces[1].obj is big  # not copied
    assert [len(p) for p in pieces[1:]] == [100_000, 16]  # bytes, not items
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(pieces))
    (frame,) = decode_all(decoder)
    assert frame.buffers == (bytes(big), bytes(16))


def decode_all(decoder: FrameDecoder) -> list[Frame]:
    frames = []
    while isinstance(frame := decoder.next_frame(), Frame):
        frames.append(frame)
    return frames


@pytest.mark.parametrize("frame", CASES)
def test_whole(frame: Frame) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(wire(frame))
    assert decoder.next_frame() == frame
    assert decoder.next_frame() is NEED_DATA


@pytest.mark.parametrize("frame", CASES)
def test_byte_by_byte(frame: Frame) -> None:
    decoder = FrameDecoder()
    data = wire(frame)
    for i in range(len(data) - 1):
        decoder.receive_data(data[i : i + 1])
        assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[-1:])
    assert decoder.next_frame() == frame


@pytest.mark.parametrize("frame", CASES)
def test_trailing_data(frame: Frame) -> None:
    decoder = FrameDecoder()
    data = wire(frame)
    decoder.receive_data(data + data[:5])
    assert decoder.next_frame() == frame
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[5:])
    assert decoder.next_frame() == frame


def test_clean_close() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(wire(CASES[0]))
    decoder.receive_data(b"")
    assert decoder.next_frame() == CASES[0]
    assert decoder.next_frame() is CLOSED


def test_close_mid_frame() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(wire(CASES[1])[:-1])
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()
    with pytest.raises(RemoteProtocolError):  # stays broken
        decoder.next_frame()


def test_oversized_refused_before_buffering() -> None:
    decoder = FrameDecoder(max_frame_size=100)
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(struct.pack(">I", 101))
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()


def test_encoder_limits() -> None:
    with pytest.raises(LocalProtocolError):
        wire(Frame("nonsense"))
    with pytest.raises(LocalProtocolError):
        wire(Frame("comm", {}, (b"x" * 200,)), max_frame_size=100)


def _raw(head: object, tail: bytes = b"") -> bytes:
    head_bytes = json.dumps(head).encode() if not isinstance(head, bytes) else head
    body = struct.pack(">I", len(head_bytes)) + head_bytes + tail
    return struct.pack(">I", len(body)) + body


@pytest.mark.parametrize(
    "data",
    [
        _raw(b"{not json"),
        _raw({"kind": "bogus", "body": {}, "buffers": []}),
        _raw({"kind": "reply", "body": [], "buffers": []}),
        _raw({"kind": "reply", "body": {}, "buffers": [5]}, b"abc"),
        _raw({"kind": "reply", "body": {}, "buffers": []}, b"extra"),
        _raw({"kind": "reply", "body": {}, "buffers": [-1]}),
        struct.pack(">II", 4, 999),
        struct.pack(">I", 2) + b"ab",
    ],
)
def test_malformed(data: bytes) -> None:
    decoder = FrameDecoder()
    with pytest.raises(RemoteProtocolError):
        decoder.receive_data(data)
        decoder.next_frame()


def test_default_hook() -> None:
    frame = Frame(OUTPUT, {"x": {1, 2}})
    with pytest.raises(TypeError):
        wire(frame)
    decoder = FrameDecoder()
    decoder.receive_data(wire(frame, default=sorted))
    assert decoder.next_frame() == Frame(OUTPUT, {"x": [1, 2]})


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=10,
)
frames = st.builds(
    Frame,
    st.sampled_from(sorted(KINDS)),
    st.dictionaries(st.text(max_size=8), json_values, max_size=4),
    st.lists(st.binary(max_size=50), max_size=3).map(tuple),
)


@given(st.lists(frames, max_size=5), st.data())
def test_arbitrary_chunking(sent: list[Frame], data: st.DataObject) -> None:
    stream = b"".join(wire(f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if end > start:  # b"" would mean end of stream
            decoder.receive_data(stream[start:end])
        received += decode_all(decoder)
    decoder.receive_data(b"")
    assert decoder.next_frame() is CLOSED
    assert received == sent


@given(st.lists(frames, max_size=5), st.integers(4, 120), st.data())
def test_direct_reads_with_arbitrary_chunking(
    sent: list[Frame], direct_read_size: int, data: st.DataObject
) -> None:
    # Big frames are read into their final buffer; each chunk goes there (as readv
    # would put it) when the decoder offers a target, else through receive_data.
    stream = b"".join(wire(f) for f in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder(direct_read_size=direct_read_size)
    received = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        chunk = stream[start:end]
        while chunk:
            target = decoder.read_target()
            if target is not None and data.draw(st.booleans()):
                count = min(len(chunk), len(target))
                target[:count] = chunk[:count]
                decoder.target_filled(count)
                chunk = chunk[count:]
            else:
                decoder.receive_data(chunk)
                chunk = b""
            received += decode_all(decoder)
    decoder.receive_data(b"")
    assert decoder.next_frame() is CLOSED
    assert received == sent


def test_direct_read_of_a_big_frame() -> None:
    frame = Frame(OUTPUT, {"msg_type": "display_data"}, (b"a" * 3_000_000, b"", b"b" * 10))
    stream = wire(frame)
    decoder = FrameDecoder()
    decoder.receive_data(stream[:100_000])  # the head and the start of the buffers
    assert decoder.next_frame() is NEED_DATA
    target = decoder.read_target()
    assert target is not None and len(target) == len(stream) - 100_000
    target[:] = stream[100_000:]
    decoder.target_filled(len(target))
    assert decoder.read_target() is None
    assert decoder.next_frame() == frame
    with pytest.raises(LocalProtocolError):
        decoder.target_filled(1)  # no frame in progress


def test_stream_ending_inside_a_direct_read() -> None:
    decoder = FrameDecoder(direct_read_size=10)
    decoder.receive_data(wire(Frame(OUTPUT, {}, (b"x" * 100,)))[:-1])
    assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(b"")
    with pytest.raises(RemoteProtocolError, match="middle of a frame"):
        decoder.next_frame()


@given(st.binary(max_size=200), st.integers(4, 64))
def test_hostile_bytes_never_crash_direct(data: bytes, direct_read_size: int) -> None:
    decoder = FrameDecoder(max_frame_size=1000, direct_read_size=direct_read_size)
    try:
        decoder.receive_data(data)
        decode_all(decoder)
        decoder.receive_data(b"")
        decode_all(decoder)
    except RemoteProtocolError:
        pass


@given(st.binary(max_size=200))
def test_hostile_bytes_never_crash(data: bytes) -> None:
    decoder = FrameDecoder(max_frame_size=1000)
    try:
        decoder.receive_data(data)
        decode_all(decoder)
    except RemoteProtocolError:
        pass


def test_lone_surrogates_survive_the_pipe() -> None:
    frame = Frame("execute", {"id": 1, "content": {"code": "'\ud800'"}})
    decoder = FrameDecoder()
    decoder.receive_data(wire(frame))
    assert decoder.next_frame() == frame


def test_buffers_come_out_as_memoryviews_whatever_the_size() -> None:
    small = Frame("comm", {}, (b"ab",))
    big = Frame("comm", {}, (b"x" * 2000,))
    decoder = FrameDecoder(direct_read_size=1000)
    decoder.receive_data(wire(small) + wire(big))
    frames = decode_all(decoder)
    assert frames == [small, big]
    assert all(isinstance(b, memoryview) for f in frames for b in f.buffers)


def test_no_read_target_after_an_error() -> None:
    decoder = FrameDecoder(direct_read_size=10)
    head = b'{"kind":"nonsense","body":{},"buffers":[100]}'
    decoder.receive_data(struct.pack(">II", 4 + len(head) + 100, len(head)) + head)
    with pytest.raises(RemoteProtocolError, match="malformed"):
        decoder.next_frame()
    assert decoder.read_target() is None
    with pytest.raises(RemoteProtocolError):
        decoder.next_frame()
