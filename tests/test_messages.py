"""trikernel.messages: signing, serialize/parse, replay guard, headers.

Cross-checked against jupyter_client's Session in both directions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import re
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jupyter_client.session import Session

from trikernel.errors import LocalProtocolError, RemoteProtocolError
from trikernel.messages import (
    DELIMITER,
    PROTOCOL_VERSION,
    Message,
    ReplayGuard,
    Signer,
    new_header,
    new_id,
    parse,
    reply,
    serialize,
)

KEY = b"628a600c-ce9ab15d57c6f584ed65aec4"
DATE = "2026-11-26T08:50:30.274499Z"


def make(msg_type: str = "execute_request", **kw) -> Message:
    header = new_header(msg_type, "sess", msg_id="id-1", date=DATE)
    return Message(header, {}, {}, kw.pop("content", {"code": "1+1"}), **kw)


def wire(parts: list[bytes], key: bytes = KEY) -> list[bytes]:
    """Frames for raw (already encoded) parts, signed over exactly those bytes."""
    return [DELIMITER, Signer(key).sign(parts), *parts]


# --------------------------------------------------------------------------- serialize


def test_serialize_layout():
    msg = make(identities=[b"id0", b"id1"], buffers=[b"\x00buf"])
    frames = serialize(msg, Signer(KEY))
    assert frames[:3] == [b"id0", b"id1", DELIMITER]
    assert frames[4:] == [
        b'{"msg_id":"id-1","msg_type":"execute_request","username":"trikernel",'
        b'"session":"sess","date":"2026-11-26T08:50:30.274499Z","version":"5.5"}',
        b"{}",
        b"{}",
        b'{"code":"1+1"}',
        b"\x00buf",
    ]


def test_signature_is_lowercase_hex_hmac_over_four_parts():
    frames = serialize(make(buffers=[b"unsigned"]), Signer(KEY))
    expected = hmac.new(KEY, b"".join(frames[2:6]), hashlib.sha256).hexdigest()
    assert frames[1] == expected.encode()
    assert re.fullmatch(rb"[0-9a-f]{64}", frames[1])


def test_empty_key_sends_empty_signature_and_accepts_unsigned():
    signer = Signer(b"")
    frames = serialize(make(), signer)
    assert frames[1] == b""
    assert parse(frames, signer, ReplayGuard()).content == {"code": "1+1"}


def test_str_key_is_utf8_bytes():
    assert Signer("clé").sign([b"a"]) == Signer("clé".encode()).sign([b"a"])


def test_unknown_scheme_is_a_clear_value_error():
    with pytest.raises(ValueError, match="hmac-nope"):
        Signer(KEY, "hmac-nope")
    with pytest.raises(ValueError, match="signature_scheme"):
        Signer(KEY, "sha256")


def test_repr_hides_key():
    assert KEY.decode() not in repr(Signer(KEY))


def test_non_ascii_stays_utf8():
    frames = serialize(make(content={"text": "é✓"}), Signer(KEY))
    assert frames[-1] == '{"text":"é✓"}'.encode()


def test_lone_surrogate_round_trips_as_escape():
    signer = Signer(KEY)
    frames = serialize(make(content={"text": "a\ud800b"}), signer)
    assert frames[-1] == b'{"text":"a\\ud800b"}'
    assert parse(frames, signer).content == {"text": "a\ud800b"}


def test_aware_datetime_becomes_iso_z_and_bytes_base64():
    when = dt.datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=dt.UTC)
    frames = serialize(
        make(content={"t": when, "d": dt.date(2026, 1, 2), "b": b"\x89P"}), Signer(b"")
    )
    assert json.loads(frames[-1]) == {
        "t": "2026-01-02T03:04:05.000006Z",
        "d": "2026-01-02",
        "b": "iVA=",
    }


@pytest.mark.parametrize(
    "bad, reason",
    [
        (dt.datetime(2026, 1, 2), "naive datetime"),
        (float("nan"), "Out of range float"),
        (object(), "object object is not JSON serializable"),
        ({1, 2}, "set object"),
    ],
)
def test_unencodable_content_is_a_local_error_naming_the_part(bad, reason):
    with pytest.raises(LocalProtocolError, match=f"content.*{reason}"):
        serialize(make(content={"x": bad}), Signer(KEY))


def test_non_dict_part_is_a_local_error():
    msg = make()
    msg.metadata = None  # type: ignore[assignment]
    with pytest.raises(LocalProtocolError, match="metadata must be a dict"):
        serialize(msg, Signer(KEY))


def test_serialize_is_fast():
    # Hot path: every stream/status message. ~15 us here; fail only if 10x slower.
    signer, parent = Signer(KEY), make().header
    start = time.perf_counter()
    for _ in range(10_000):
        header = new_header("stream", "sess")
        serialize(Message(header, parent, {}, {"name": "stdout", "text": "x\n"}), signer)
    assert time.perf_counter() - start < 1.5


# --------------------------------------------------------------------------- parse


def test_round_trip_with_identities_and_buffers():
    signer = Signer(KEY)
    msg = make(identities=[b"\x00k\x8b"], buffers=[b"a", DELIMITER])
    assert parse(serialize(msg, signer), signer, ReplayGuard()) == msg


def test_identities_end_at_first_delimiter():
    signer = Signer(KEY)
    frames = serialize(make(identities=[b"r"], buffers=[DELIMITER]), signer)
    parsed = parse(frames, signer)
    assert parsed.identities == [b"r"]
    assert parsed.buffers == [DELIMITER]


def test_verifies_exact_received_bytes_not_reencoded():
    header = b'{ "msg_type" : "x",  "msg_id": "1", "z": 1.50 }'
    msg = parse(wire([header, b"{}", b"{ }", b"{}"]), Signer(KEY))
    assert msg.header == {"msg_type": "x", "msg_id": "1", "z": 1.5}


def test_missing_delimiter():
    with pytest.raises(RemoteProtocolError, match="no <IDS|MSG> delimiter"):
        parse([b"ident", b"sig", b"{}", b"{}", b"{}", b"{}"], Signer(KEY))


def test_too_few_frames():
    frames = serialize(make(), Signer(KEY))[:-1]
    with pytest.raises(RemoteProtocolError, match="4 frames after the delimiter, need at least 5"):
        parse(frames, Signer(KEY))


def test_unsigned_message_rejected_when_key_set():
    frames = serialize(make(), Signer(b""))
    with pytest.raises(RemoteProtocolError, match="^Unsigned Message$"):
        parse(frames, Signer(KEY))


def test_wrong_key_is_invalid_signature():
    frames = serialize(make(), Signer(b"other"))
    with pytest.raises(RemoteProtocolError, match="^Invalid Signature$"):
        parse(frames, Signer(KEY))


def test_tampered_content_is_invalid_signature():
    frames = serialize(make(), Signer(KEY))
    frames[-1] = b'{"code":"import os"}'
    with pytest.raises(RemoteProtocolError, match="^Invalid Signature$"):
        parse(frames, Signer(KEY))


def test_buffers_are_not_signed():
    frames = serialize(make(buffers=[b"a"]), Signer(KEY))
    frames[-1] = b"b"
    assert parse(frames, Signer(KEY)).buffers == [b"b"]


def test_replay_is_rejected():
    signer, guard = Signer(KEY), ReplayGuard()
    frames = serialize(make(), signer)
    parse(frames, signer, guard)
    with pytest.raises(RemoteProtocolError, match="^Duplicate Signature$"):
        parse(frames, signer, guard)


def test_duplicate_is_checked_before_signature():
    signer, guard = Signer(KEY), ReplayGuard()
    frames = serialize(make(), signer)
    parse(frames, signer, guard)
    frames[-1] = b"{}"  # now also invalid; spec order reports the duplicate first
    with pytest.raises(RemoteProtocolError, match="^Duplicate Signature$"):
        parse(frames, signer, guard)


def test_forged_signatures_are_not_remembered():
    signer, guard = Signer(KEY), ReplayGuard()
    frames = serialize(make(), signer)
    frames[1] = b"0" * 64
    for _ in range(2):
        with pytest.raises(RemoteProtocolError, match="^Invalid Signature$"):
            parse(frames, signer, guard)
    assert len(guard) == 0


def test_no_replay_guard_means_no_duplicate_check():
    signer = Signer(KEY)
    frames = serialize(make(), signer)
    assert parse(frames, signer, None) == parse(frames, signer, None)


@pytest.mark.parametrize(
    "parts, reason",
    [
        ([b"[]", b"{}", b"{}", b"{}"], "header is a JSON list, not an object"),
        (
            [b'{"msg_id":"1","msg_type":"x"}', b"null", b"{}", b"{}"],
            "parent_header is a JSON NoneType",
        ),
        ([b'{"msg_id":"1"}', b"{}", b"{}", b"{}"], "header has no string 'msg_type'"),
        ([b'{"msg_id":1,"msg_type":"x"}', b"{}", b"{}", b"{}"], "header has no string 'msg_id'"),
        ([b'{"msg_id":"1","msg_type":"x"}', b"{}", b"{\xff}", b"{}"], "metadata is not valid JSON"),
        (
            [b'{"msg_id":"1","msg_type":"x"}', b"{}", b"{}", b'{"a":NaN}'],
            "content is not valid JSON",
        ),
        (
            [b'{"msg_id":"1","msg_type":"x","n":-1e999}', b"{}", b"{}", b"{}"],
            "number -1e999 is out of range",
        ),
        (
            [b'{"msg_id":"1","msg_type":"x"}', b"{}", b"{}", b"[" * 100_000],
            "content is not valid JSON",
        ),
        ([b"\xff\xfe{\x00}\x00", b"{}", b"{}", b"{}"], "header is not valid JSON"),
    ],
)
def test_bad_json_is_rejected_with_reason(parts, reason):
    with pytest.raises(RemoteProtocolError, match=re.escape(reason)):
        parse(wire(parts), Signer(KEY))


# --------------------------------------------------------------------------- ReplayGuard


def test_replay_guard_is_bounded_and_drops_oldest_tenth():
    guard = ReplayGuard(max_size=20)
    for i in range(20):
        guard.check_and_add(b"%d" % i)
    guard.check_and_add(b"new")
    assert len(guard) == 19
    assert b"0" not in guard and b"1" not in guard
    assert b"2" in guard and b"new" in guard
    guard.check_and_add(b"0")  # forgotten, so accepted again


def test_replay_guard_never_exceeds_max_size():
    guard = ReplayGuard(max_size=7)
    for i in range(100):
        guard.check_and_add(b"%d" % i)
        assert len(guard) <= 7
    with pytest.raises(RemoteProtocolError, match="Duplicate Signature"):
        guard.check_and_add(b"99")


# --------------------------------------------------------------------------- headers


def test_new_header_fields():
    h = new_header("status", "s1", msg_id="m", date=DATE)
    assert h == {
        "msg_id": "m",
        "msg_type": "status",
        "username": "trikernel",
        "session": "s1",
        "date": DATE,
        "version": PROTOCOL_VERSION,
    }


def test_new_header_defaults_are_fresh_utc():
    a, b = new_header("x", "s"), new_header("x", "s")
    assert a["msg_id"] != b["msg_id"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", a["date"])
    when = dt.datetime.fromisoformat(a["date"])
    assert abs(when - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=60)


def test_new_id_form():
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{24}", new_id())
    assert new_id() != new_id()


def test_reply_routes_back_to_parent():
    parent = make(identities=[b"client"])
    r = reply(parent, "execute_reply", {"status": "ok"}, "kernel-session", date=DATE)
    assert r.identities == [b"client"] and r.identities is not parent.identities
    assert r.parent_header == parent.header
    assert (r.msg_type, r.header["session"], r.metadata) == ("execute_reply", "kernel-session", {})


# --------------------------------------------------------------------------- jupyter_client


@pytest.mark.parametrize("scheme", ["hmac-sha256", "hmac-sha512"])
def test_jupyter_client_accepts_ours(scheme):
    session = Session(key=KEY, signature_scheme=scheme)
    msg = make(identities=[b"r1"], buffers=[b"raw"], content={"code": "é"})
    msg.parent_header = new_header("x", "p", msg_id="parent", date=DATE)
    idents, rest = session.feed_identities(serialize(msg, Signer(KEY, scheme)))
    got = session.deserialize(rest)
    assert idents == [b"r1"]
    assert got["msg_id"] == "id-1" and got["msg_type"] == "execute_request"
    assert got["content"] == {"code": "é"}
    assert got["parent_header"]["msg_id"] == "parent"
    assert [bytes(b) for b in got["buffers"]] == [b"raw"]


@pytest.mark.parametrize("scheme", ["hmac-sha256", "hmac-sha512"])
def test_ours_accepts_jupyter_client(scheme):
    session = Session(key=KEY, signature_scheme=scheme)
    sent = session.msg("kernel_info_request", content={}, metadata={"m": 1})
    frames = session.serialize(sent, ident=[b"a", b"b"])
    frames += [b"buf"]
    msg = parse(frames, Signer(KEY, scheme), ReplayGuard())
    assert msg.identities == [b"a", b"b"]
    assert msg.header["msg_id"] == sent["header"]["msg_id"]
    assert (msg.msg_type, msg.metadata, msg.buffers) == ("kernel_info_request", {"m": 1}, [b"buf"])
    assert Signer(KEY, scheme).sign(frames[4:8]) == frames[3]


def test_jupyter_client_date_parses_as_utc():
    session = Session(key=KEY)
    msg = parse(session.serialize(session.msg("x")), Signer(KEY))
    assert dt.datetime.fromisoformat(msg.header["date"]).utcoffset() == dt.timedelta(0)


def test_empty_key_interop_both_ways():
    session = Session(key=b"")
    frames = session.serialize(session.msg("x", content={"a": 1}))
    assert parse(frames, Signer(b"")).content == {"a": 1}
    assert session.deserialize(serialize(make(), Signer(b""))[1:])["content"] == {"code": "1+1"}


# --------------------------------------------------------------------------- hypothesis

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)
json_dicts = st.dictionaries(st.text(), json_values, max_size=4)
frame = st.sampled_from(
    [DELIMITER, b"", b"{}", b"[]", b'{"msg_id":"1","msg_type":"x"}']
) | st.binary(max_size=40)


@given(frames=st.lists(frame, max_size=10), key=st.sampled_from([b"", KEY]))
def test_arbitrary_frames_raise_only_remote_protocol_error(frames, key):
    guard = ReplayGuard()
    for _ in range(2):  # the second pass exercises the replay path
        try:
            msg = parse(frames, Signer(key), guard)
        except RemoteProtocolError:
            continue
        assert isinstance(msg.header["msg_id"], str)


@given(
    header=json_dicts,
    parent=json_dicts,
    metadata=json_dicts,
    content=json_dicts,
    identities=st.lists(st.binary(max_size=8).filter(lambda b: b != DELIMITER), max_size=3),
    buffers=st.lists(st.binary(max_size=8), max_size=3),
    key=st.sampled_from([b"", KEY]),
)
def test_round_trip_property(header, parent, metadata, content, identities, buffers, key):
    header = {**header, "msg_id": "m", "msg_type": "t"}
    msg = Message(header, parent, metadata, content, buffers, identities)
    signer = Signer(key)
    assert parse(serialize(msg, signer), signer, ReplayGuard()) == msg


@given(content=json_dicts)
def test_any_tampered_content_is_rejected(content):
    signer = Signer(KEY)
    frames = serialize(Message(make().header, {}, {}, content), signer)
    frames[5] = frames[5] + b" "
    with pytest.raises(RemoteProtocolError, match="Invalid Signature"):
        parse(frames, signer)


def test_module_is_pure():
    # DESIGN.md: messages is a pure module (no trio, no os).
    import trikernel.messages as m

    source = open(m.__file__, encoding="utf-8").read()
    assert not re.search(r"^\s*(import|from)\s+(trio|os)\b", source, re.M)
