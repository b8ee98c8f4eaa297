"""Typed frames of the evaluator pipe (trikernel.evaluator.frames) over the
byte framing of ``protocol``, and ``ExecuteRequest.from_content``.

Rules: sans-IO, no trio, no subprocess. Every kind goes through real bytes
(``encode_frame`` -> ``FrameDecoder`` -> ``decode``): whole, byte by byte, with
trailing bytes, and in arbitrary chunks (hypothesis). A malformed body is a
RemoteProtocolError naming the frame kind and the field; nothing else escapes.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trikernel.errors import LocalProtocolError, RemoteProtocolError
from trikernel.evaluator.frames import (
    Comm,
    Execute,
    InputReply,
    InputRequest,
    Interrupt,
    InterruptAck,
    InterruptDelivered,
    Output,
    Ready,
    Reply,
    Request,
    Response,
    Shutdown,
    TypedFrame,
    decode,
)
from trikernel.evaluator.protocol import KINDS, NEED_DATA, Frame, FrameDecoder, encode_frame
from trikernel.evaluator_api import ExecuteRequest, Parent


def wire(typed: TypedFrame) -> bytes:
    return b"".join(encode_frame(typed.to_frame()))


def decoded(decoder: FrameDecoder) -> list[TypedFrame]:
    out = []
    while isinstance(frame := decoder.next_frame(), Frame):
        out.append(decode(frame))
    return out


# ---- strategies, one per kind -----------------------------------------------------

texts = st.text(st.characters(exclude_categories=()), max_size=20)  # lone surrogates too
ids = st.integers(min_value=-(2**70), max_value=2**70)
scalars = st.none() | st.booleans() | ids | st.floats(allow_nan=False, allow_infinity=False) | texts
json_values = st.recursive(
    scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(texts, c, max_size=3), max_leaves=8
)
objects = st.dictionaries(texts, json_values, max_size=4)
parents = st.builds(Parent, objects, objects, objects)
blobs = st.binary(max_size=64)
buffer_tuples = st.lists(blobs, max_size=3).map(tuple)


@st.composite
def execute_requests(draw: st.DrawFn) -> ExecuteRequest:
    silent = draw(st.booleans())
    return ExecuteRequest(
        code=draw(texts),
        silent=silent,
        store_history=draw(st.booleans()) and not silent,
        allow_stdin=draw(st.booleans()),
        stop_on_error=draw(st.booleans()),
        user_expressions=draw(st.dictionaries(texts, texts, max_size=3)),
        subshell_id=draw(st.none() | texts),
        parent=draw(parents),
    )


STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "execute": st.builds(Execute, ids, execute_requests(), st.booleans()),
    "interrupt": st.builds(Interrupt, ids),
    "request": st.builds(Request, ids, texts, objects, parents),
    "input_reply": st.builds(InputReply, value=texts) | st.builds(InputReply, error=texts),
    "comm": st.builds(Comm, texts, objects, parents, buffer_tuples, st.none() | ids),
    "shutdown": st.just(Shutdown()),
    "ready": st.builds(Ready, ids, ids, texts),
    "output": st.builds(Output, ids, texts, objects | blobs, objects, buffer_tuples),
    "reply": st.builds(Reply, ids, objects, st.tuples(ids, ids)),
    "response": st.builds(Response, ids, objects),
    "input_request": st.builds(InputRequest, ids, texts, st.booleans()),
    "interrupt_ack": st.builds(InterruptAck, ids),
    "interrupt_delivered": st.builds(InterruptDelivered, ids),
}
typed_frames = st.one_of(*STRATEGIES.values())


def test_there_is_a_strategy_for_every_kind() -> None:
    assert set(STRATEGIES) == KINDS


@pytest.mark.parametrize("kind", sorted(STRATEGIES))
@given(data=st.data())
def test_every_kind_round_trips_whole(kind: str, data: st.DataObject) -> None:
    typed = data.draw(STRATEGIES[kind])
    assert typed.KIND == kind
    decoder = FrameDecoder()
    decoder.receive_data(wire(typed))
    assert decoded(decoder) == [typed]
    assert decoder.next_frame() is NEED_DATA


@given(st.lists(typed_frames, min_size=1, max_size=4), st.data())
def test_frames_round_trip_in_arbitrary_chunks(sent: list[TypedFrame], data: st.DataObject) -> None:
    stream = b"".join(wire(t) for t in sent)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder, got = FrameDecoder(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        if start < end:  # b"" would mean end of stream
            decoder.receive_data(stream[start:end])
        got += decoded(decoder)
    assert got == sent


EXAMPLES = [
    Execute(7, ExecuteRequest("print('é')", parent=Parent({"msg_id": "m"})), allow_stdin=True),
    Interrupt(7),
    Request(8, "complete_request", {"code": "pri", "cursor_pos": 3}),
    InputReply("yes"),
    InputReply(error="EOFError"),
    Comm("comm_msg", {"comm_id": "c", "data": {}}, buffers=(b"\x00\xff", b""), id=9),
    Shutdown(),
    Ready(1234, 1, "tok"),
    Output(7, "stream", {"name": "stdout", "text": "hi\n"}),
    Output(7, "display_data", b'{"data":{}}', {"k": 1}, (b"\x89PNG",)),
    Reply(7, {"status": "ok", "execution_count": 1}, (2, 3)),
    Response(8, {"status": "ok", "matches": []}),
    InputRequest(10, "Password: ", True),
    InterruptAck(7),
    InterruptDelivered(8),
]


@pytest.mark.parametrize("typed", EXAMPLES, ids=lambda t: t.KIND)
def test_byte_by_byte(typed: TypedFrame) -> None:
    data, decoder = wire(typed), FrameDecoder()
    for byte in data[:-1]:
        decoder.receive_data(bytes([byte]))
        assert decoder.next_frame() is NEED_DATA
    decoder.receive_data(data[-1:])
    assert decoded(decoder) == [typed]


@pytest.mark.parametrize("typed", EXAMPLES, ids=lambda t: t.KIND)
def test_trailing_bytes_wait_for_the_next_frame(typed: TypedFrame) -> None:
    following = wire(InterruptAck(99))
    decoder = FrameDecoder()
    decoder.receive_data(wire(typed) + following[:5])
    assert decoded(decoder) == [typed]
    decoder.receive_data(following[5:])
    assert decoded(decoder) == [InterruptAck(99)]


def test_packed_output_content_travels_as_the_first_buffer() -> None:
    packed = b'{"data":{"text/plain":"1"}}'
    frame = Output(3, "execute_result", packed, buffers=(b"raw",)).to_frame()
    assert frame.body["packed"] is True and "content" not in frame.body
    assert frame.buffers == (packed, b"raw")
    decoder = FrameDecoder()
    decoder.receive_data(b"".join(encode_frame(frame)))
    [output] = decoded(decoder)
    assert isinstance(output, Output)
    assert bytes(output.content) == packed and output.buffers == (b"raw",)  # type: ignore[arg-type]


def test_output_defaults_request_and_metadata() -> None:
    output = decode(Frame("output", {"msg_type": "stream", "content": {}}))
    assert output == Output(0, "stream", {}, {}, ())


def test_reply_defaults_fd_sync() -> None:
    assert decode(Frame("reply", {"id": 1, "content": {}})) == Reply(1, {}, (0, 0))


def test_an_unknown_kind_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError, match="'nope'"):
        decode(Frame("nope", {"id": 1}))


# ---- malformed bodies ----------------------------------------------------------------

MALFORMED = [
    # (kind, body, buffers, field named in the message)
    ("execute", {"content": {}}, (), "id"),
    ("execute", {"id": "1", "content": {}}, (), "id"),
    ("execute", {"id": True, "content": {}}, (), "id"),
    ("execute", {"id": 1}, (), "content"),
    ("execute", {"id": 1, "content": ["code"]}, (), "content"),
    ("execute", {"id": 1, "content": {"code": 5}}, (), "code"),
    ("execute", {"id": 1, "content": {"silent": "yes"}}, (), "silent"),
    ("execute", {"id": 1, "content": {"store_history": "no"}}, (), "store_history"),
    ("execute", {"id": 1, "content": {"user_expressions": {"x": 1}}}, (), "user_expressions"),
    ("execute", {"id": 1, "content": {}, "subshell_id": 3}, (), "subshell_id"),
    ("execute", {"id": 1, "content": {}, "allow_stdin": "y"}, (), "allow_stdin"),
    ("execute", {"id": 1, "content": {}, "parent": 5}, (), "parent"),
    ("interrupt", {}, (), "id"),
    ("interrupt", {"id": 1.0}, (), "id"),
    ("request", {"id": 1, "content": {}}, (), "msg_type"),
    ("request", {"id": 1, "msg_type": "complete_request", "content": "x"}, (), "content"),
    ("request", {"id": 1, "msg_type": "m", "content": {}, "parent": {"header": []}}, (), "parent"),
    ("input_reply", {}, (), "value"),
    ("input_reply", {"error": 1}, (), "error"),
    ("input_reply", {"value": None}, (), "value"),
    ("comm", {"content": {}}, (), "msg_type"),
    ("comm", {"msg_type": "comm_msg", "content": {}, "id": "9"}, (), "id"),
    ("ready", {"pid": "1", "execution_count": 1, "sync_token": "t"}, (), "pid"),
    ("ready", {"pid": 1, "execution_count": False, "sync_token": "t"}, (), "execution_count"),
    ("ready", {"pid": 1, "execution_count": 1}, (), "sync_token"),
    ("output", {"msg_type": "stream", "packed": True}, (), "packed"),
    ("output", {"msg_type": "stream"}, (), "content"),
    ("output", {"content": {}}, (), "msg_type"),
    ("output", {"msg_type": "stream", "content": {}, "request": "7"}, (), "request"),
    ("output", {"msg_type": "stream", "content": {}, "metadata": []}, (), "metadata"),
    ("reply", {"id": 1, "content": {}, "fd_sync": [1]}, (), "fd_sync"),
    ("reply", {"id": 1, "content": {}, "fd_sync": [1, 2, 3]}, (), "fd_sync"),
    ("reply", {"id": 1, "content": {}, "fd_sync": [True, 0]}, (), "fd_sync"),
    ("reply", {"id": 1, "content": {}, "fd_sync": {"a": 1}}, (), "fd_sync"),
    ("reply", {"content": {}}, (), "id"),
    ("response", {"id": 1, "content": "ok"}, (), "content"),
    ("input_request", {"id": 1, "prompt": "? "}, (), "password"),
    ("input_request", {"id": 1, "prompt": 3, "password": False}, (), "prompt"),
    ("interrupt_ack", {"id": None}, (), "id"),
]


@pytest.mark.parametrize(("kind", "body", "buffers", "name"), MALFORMED)
def test_a_malformed_body_names_the_frame_and_the_field(
    kind: str, body: dict[str, Any], buffers: tuple[bytes, ...], name: str
) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode(Frame(kind, body, buffers))
    message = str(info.value)
    assert kind.split("_")[0] in message and name in message


FIELDS = ["id", "content", "parent", "subshell_id", "allow_stdin", "msg_type", "value"]
FIELDS += ["error", "pid", "execution_count", "sync_token", "request", "metadata", "packed"]
FIELDS += ["fd_sync", "prompt", "password", "code", "silent", "store_history"]
FIELDS += ["user_expressions", "stop_on_error", "header", "parent_header"]
hostile_values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.sampled_from(FIELDS), c, max_size=5),
    max_leaves=12,
)


MISSING = object()


@pytest.mark.parametrize("typed", EXAMPLES, ids=lambda t: t.KIND)
@given(data=st.data())
def test_any_field_of_any_type_decodes_or_is_a_remote_error(
    typed: TypedFrame, data: st.DataObject
) -> None:
    frame = typed.to_frame()
    body = {k: dict(v) if isinstance(v, dict) else v for k, v in frame.body.items()}
    target = body["content"] if isinstance(body.get("content"), dict) else body
    target = data.draw(st.sampled_from([body, target]))
    key = data.draw(st.sampled_from(sorted(target) or FIELDS) | st.sampled_from(FIELDS))
    value = data.draw(st.just(MISSING) | hostile_values)
    if value is MISSING:
        target.pop(key, None)
    else:
        target[key] = value
    try:
        decode(Frame(frame.kind, body, frame.buffers))
    except RemoteProtocolError:
        pass


# ---- ExecuteRequest.from_content -----------------------------------------------------------


def test_from_content_defaults() -> None:
    request = ExecuteRequest.from_content({})
    assert request == ExecuteRequest(code="")
    assert (request.silent, request.store_history, request.allow_stdin) == (False, True, False)
    assert (request.stop_on_error, request.user_expressions) == (True, {})
    assert (request.subshell_id, request.parent) == (None, Parent())


def test_from_content_takes_none_as_the_default() -> None:
    request = ExecuteRequest.from_content({"code": None, "silent": None, "stop_on_error": None})
    assert (request.code, request.silent, request.stop_on_error) == ("", False, True)


@pytest.mark.parametrize("store_history", [True, False, None])
def test_silent_forces_store_history_false(store_history: bool | None) -> None:
    content = {"code": "1", "silent": True, "store_history": store_history}
    request = ExecuteRequest.from_content(content)
    assert request.silent is True and request.store_history is False


def test_store_history_defaults_to_not_silent() -> None:
    assert ExecuteRequest.from_content({"silent": False}).store_history is True
    assert ExecuteRequest.from_content({"store_history": False}).store_history is False


def test_ints_are_taken_as_flags() -> None:
    request = ExecuteRequest.from_content({"silent": 0, "allow_stdin": 1, "stop_on_error": 0})
    assert (request.silent, request.allow_stdin, request.stop_on_error) == (False, True, False)


def test_from_content_keeps_parent_and_subshell() -> None:
    parent = Parent({"msg_id": "m"})
    request = ExecuteRequest.from_content({"code": "x"}, parent, "sub-1")
    assert (request.parent, request.subshell_id) == (parent, "sub-1")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("code", 5),
        ("code", b"x"),
        ("user_expressions", ["x"]),
        ("user_expressions", {"x": 1}),
        ("silent", "yes"),
        ("store_history", "no"),
        ("allow_stdin", []),
        ("stop_on_error", {}),
    ],
)
def test_from_content_wrong_type_names_the_field(name: str, value: Any) -> None:
    with pytest.raises(RemoteProtocolError, match=name):
        ExecuteRequest.from_content({name: value})


@given(execute_requests())
def test_to_content_round_trips(request: ExecuteRequest) -> None:
    again = ExecuteRequest.from_content(request.to_content(), request.parent, request.subshell_id)
    assert again == request
