"""iopub.py without a network: what ``publish`` hands the socket, parsed back.

Rules: no sockets are bound; the PubSocket's ``publish_nowait`` is replaced by a
recorder, so each test sees the exact frames a subscriber would get.
"""

from __future__ import annotations

from typing import Any

import pytest

from trikernel.errors import LocalProtocolError
from trikernel.evaluator_api import Output, Parent
from trikernel.iopub import IOPub, topic
from trikernel.messages import Message, ReplayGuard, Signer, new_header, parse

SIGNER = Signer(b"key")


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> tuple[IOPub, list[list[Any]]]:
    iopub = IOPub("session-1", SIGNER)
    frames: list[list[Any]] = []
    monkeypatch.setattr(
        iopub.socket, "publish_nowait", lambda f, to=None: frames.append([bytes(x) for x in f])
    )
    return iopub, frames


def received(frames: list[Any]) -> Message:
    return parse(frames, SIGNER, ReplayGuard())


@pytest.mark.parametrize(
    ("msg_type", "content", "expected"),
    [
        ("stream", {"name": "stderr", "text": ""}, b"stream.stderr"),
        ("display_data", {}, b"display_data"),
        ("clear_output", {}, b"display_data"),
        ("comm_msg", {}, b"comm"),
        ("status", {}, b"kernel.s.status"),
    ],
)
def test_topics(msg_type: str, content: dict[str, Any], expected: bytes) -> None:
    assert topic(msg_type, content, "s") == expected


def test_packed_stream_topics_follow_the_outbox_encoding() -> None:
    from trikernel import _json

    for name in ("stdout", "stderr"):
        packed = _json.encode({"name": name, "text": "x"})
        assert topic("stream", memoryview(packed), "s") == f"stream.{name}".encode()


def test_output_keeps_its_parent_and_metadata(sent: tuple[IOPub, list[list[Any]]]) -> None:
    iopub, frames = sent
    parent = Parent({"msg_id": "req-1", "msg_type": "comm_msg"})
    iopub.publish_output(Output("comm_open", {"comm_id": "c"}, parent, (b"buf",), {"v": "2"}))
    (only,) = frames
    assert only[0] == b"comm"
    msg = received(only)
    assert msg.parent_header == {"msg_id": "req-1", "msg_type": "comm_msg"}
    assert msg.metadata == {"v": "2"} and msg.content == {"comm_id": "c"}
    assert [bytes(b) for b in msg.buffers] == [b"buf"]


def test_packed_content_is_forwarded_as_it_is(sent: tuple[IOPub, list[list[Any]]]) -> None:
    iopub, frames = sent
    packed = b'{"name":"stdout","text":"hi\\n"}'
    iopub.publish_output(Output("stream", packed, None))
    (only,) = frames
    assert packed in only
    assert received(only).content == {"name": "stdout", "text": "hi\n"}


def test_status_names_the_request(sent: tuple[IOPub, list[list[Any]]]) -> None:
    iopub, frames = sent
    request = Message(new_header("execute_request", "c"), {}, {}, {})
    iopub.status("busy", request)
    msg = received(frames[0])
    assert msg.content == {"execution_state": "busy"}
    assert msg.parent_header["msg_id"] == request.msg_id


def test_unencodable_content_raises_before_anything_is_sent(
    sent: tuple[IOPub, list[list[Any]]],
) -> None:
    iopub, frames = sent
    with pytest.raises(LocalProtocolError):
        iopub.publish("display_data", {"data": float("nan")}, None)
    assert frames == []


def test_welcome_goes_to_the_new_subscriber_only(sent: tuple[IOPub, list[list[Any]]]) -> None:
    iopub, _ = sent
    calls: list[Any] = []
    iopub.socket.publish_nowait = lambda f, to=None: calls.append((f, to))  # type: ignore[method-assign]
    peer: Any = object()
    iopub._welcome(peer, b"")
    ((frames, to),) = calls
    assert to is peer
    msg = received([bytes(f) for f in frames])
    assert msg.msg_type == "iopub_welcome" and msg.content == {"subscription": ""}
