"""Byte-level tests of the sans-IO ZMTP codec (trikernel.zmtp.codec).

Rules: no sockets, no trio; every wire case comes from /work/shared/spec/zmtp.md
(section numbers in the names) and is fed whole, byte by byte, in random chunks
and with trailing bytes (``split_feed``). Hostile input must raise
RemoteProtocolError and leave the codec in ERROR; misuse raises LocalProtocolError.
"""

from __future__ import annotations

import random
from functools import partial

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.wire import command, frame, greeting, properties, ready_with, wire

from trikernel.errors import LocalProtocolError, RemoteProtocolError
from trikernel.zmtp.codec import (
    NEED_DATA,
    PASS_THROUGH_SIZE,
    Connection,
    State,
    encode_frames,
)
from trikernel.zmtp.events import (
    Cancel,
    ConnectionClosed,
    Error,
    Greeting,
    Message,
    Ping,
    Pong,
    Ready,
    Subscribe,
)

from .helpers import (
    CodecPair,
    assert_stuck_in_error,
    chunkings,
    drain,
    examples,
    feed,
    greeted,
    handshaken,
    peer_initiate,
    split_feed,
    split_feed_error,
)

# ---- captures from the spec ------------------------------------------------

SPEC_GREETING_HEX = """
ff 00 00 00 00 00 00 00 01 7f 03 01 4e 55 4c 4c 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00
"""
LIBZMQ_GREETING = wire("ff 00 00 00 00 00 00 00 01 7f 03 01", b"NULL", "00" * 16, "00", "00" * 31)
NULL_31 = Greeting(major=3, minor=1, mechanism=b"NULL")


ROUTER_READY = wire("04 29 05", b"READY", "0b", b"Socket-Type", "00 00 00 06", b"ROUTER", "08")
ROUTER_READY += wire(b"Identity", "00 00 00 00")  # 9.7
PUB_READY = wire("04 19 05", b"READY", "0b", b"Socket-Type", "00 00 00 03", b"PUB")  # 9.7
XPUB_READY = wire("04 1a 05", b"READY", "0b", b"Socket-Type", "00 00 00 04", b"XPUB")  # 9.7
REP_READY = wire("04 19 05", b"READY", "0b", b"Socket-Type", "00 00 00 03", b"REP")  # 9.7
DEALER_READY = wire(  # 9.1, byte for byte
    "04 29 05 52 45 41 44 59 0b 53 6f 63 6b 65 74 2d 54 79 70 65"
    "00 00 00 06 44 45 41 4c 45 52 08 49 64 65 6e 74 69 74 79 00 00 00 00"
)
CLIENT1_GREETING = wire("ff 00 00 00 00 00 00 00 09 7f 03 01", b"NULL", "00" * 16, "00", "00" * 31)
CLIENT1_READY = wire(  # 9.2
    "04 31 05", b"READY", "0b", b"Socket-Type", "00 00 00 06", b"DEALER", "08", b"Identity"
) + wire("00 00 00 08 63 6c 69 65 6e 74 2d 31")
SESSION_ID = b"aaaaaaaa-" + b"b" * 24  # 33 bytes, like a jupyter_client session id
SHELL_READY = wire(  # 9.3
    "04 4a 05", b"READY", "0b", b"Socket-Type", "00 00 00 06", b"DEALER", "08", b"Identity"
) + wire("00 00 00 21", SESSION_ID)
SUB_READY = wire("04 19 05", b"READY", "0b", b"Socket-Type", "00 00 00 03 53 55 42")  # 9.4
REQ_READY = wire("04 26 05", b"READY", "0b", b"Socket-Type", "00 00 00 03 52 45 51 08")  # 9.5
REQ_READY += wire(b"Identity", "00 00 00 00")

PING_5S = wire("04 07 04 50 49 4e 47 00 32")  # 9.6, libzmq with TTL=5 s
PING_NO_TTL = wire("04 07 04 50 49 4e 47 00 00")  # 9.6, ours
PONG_EMPTY = wire("04 05 04 50 4f 4e 47")
ERROR_BAD = wire("04 0a 05 45 52 52 4f 52 03 62 61 64")
SUBSCRIBE_ALL = wire("04 0a 09", b"SUBSCRIBE")
SUBSCRIBE_TOPIC = wire("04 0f 09", b"SUBSCRIBE", "74 6f 70 69 63")
CANCEL_TOPIC = wire("04 0c 06", b"CANCEL", "74 6f 70 69 63")
TIB_FRAME_HEADER = wire("02 00 00 01 00 00 00 00 00")  # a 1 TiB message frame, header only

# ---- greeting and READY, encoded ------------------------------------------


def test_greeting_is_the_spec_hex_and_libzmqs() -> None:
    ours = Connection("ROUTER").initiate()[:64]
    assert ours == bytes.fromhex(SPEC_GREETING_HEX) == LIBZMQ_GREETING


def test_greeting_as_30_peer() -> None:
    assert Connection("SUB", minor=0).initiate()[:64] == greeting(minor=0)


READY_CASES = [  # (our socket type, identity, READY bytes as libzmq sends them)
    ("ROUTER", b"", ROUTER_READY),
    ("PUB", b"", PUB_READY),
    ("XPUB", b"", XPUB_READY),
    ("REP", b"", REP_READY),
    ("DEALER", b"", DEALER_READY),
    ("DEALER", b"client-1", CLIENT1_READY),
    ("DEALER", SESSION_ID, SHELL_READY),
    ("SUB", b"", SUB_READY),
    ("REQ", b"", REQ_READY),
]


@pytest.mark.parametrize(("socket_type", "identity", "expected"), READY_CASES)
def test_ready_encoding_matches_libzmq(socket_type: str, identity: bytes, expected: bytes) -> None:
    assert Connection(socket_type, identity=identity).initiate()[64:] == expected


def test_ready_helper_agrees_with_captures() -> None:
    assert ready_with({b"Socket-Type": b"ROUTER", b"Identity": b""}) == ROUTER_READY
    assert ready_with({b"Socket-Type": b"DEALER", b"Identity": SESSION_ID}) == SHELL_READY


# ---- greeting and READY, decoded ------------------------------------------

PARTNER = {"ROUTER": "DEALER", "PUB": "SUB", "XPUB": "SUB", "REP": "REQ"}
PARTNER |= {"DEALER": "ROUTER", "SUB": "XPUB", "REQ": "REP"}


@pytest.mark.parametrize(("peer_type", "identity", "data"), READY_CASES)
def test_ready_decoding(peer_type: str, identity: bytes, data: bytes) -> None:
    events = split_feed(partial(Connection, PARTNER[peer_type]), LIBZMQ_GREETING + data)
    assert events[0] == NULL_31
    assert events[1].socket_type == peer_type
    assert events[1].properties["Socket-Type"] == peer_type.encode()
    assert events[1].identity == identity


def test_libzmq_dealer_with_identity_client_1() -> None:  # 9.2
    events = split_feed(partial(Connection, "ROUTER"), CLIENT1_GREETING + CLIENT1_READY)
    ready_event = Ready("DEALER", {"Socket-Type": b"DEALER", "Identity": b"client-1"})
    assert events == [NULL_31, ready_event]
    assert events[1].identity == b"client-1"


def test_jupyter_shell_dealer() -> None:  # 9.3
    conn = Connection("ROUTER")
    assert feed(conn, LIBZMQ_GREETING + SHELL_READY)[1].identity == SESSION_ID
    assert conn.peer_socket_type == "DEALER"
    assert conn.state is State.TRAFFIC


def test_staged_libzmq_greeting() -> None:  # 9.1: 10 bytes, then 1, then 53
    conn = Connection("ROUTER")
    assert feed(conn, LIBZMQ_GREETING[:10]) == []
    assert feed(conn, LIBZMQ_GREETING[10:11]) == []
    assert feed(conn, LIBZMQ_GREETING[11:]) == [NULL_31]
    assert feed(conn, DEALER_READY)[0].socket_type == "DEALER"


def test_padding_bytes_are_not_checked() -> None:
    odd = b"\xff" + bytes(range(1, 9)) + greeting()[9:]
    assert split_feed(partial(Connection, "ROUTER"), odd) == [NULL_31]


def test_peer_minor_is_recorded() -> None:
    assert greeted("XPUB", peer_minor=0).peer_minor == 0
    assert greeted("XPUB", peer_minor=7).peer_minor == 7  # higher minors are accepted


def test_property_names_are_case_insensitive() -> None:
    data = greeting() + ready_with({b"socket-TYPE": b"DEALER", b"IDENTITY": b"x", b"X-Hi": b"1"})
    events = split_feed(partial(Connection, "ROUTER"), data, state=State.TRAFFIC)
    assert events[1].socket_type == "DEALER"
    assert events[1].identity == b"x"


def test_error_instead_of_ready() -> None:
    events = split_feed(partial(Connection, "ROUTER"), greeting() + ERROR_BAD, state=State.CLOSED)
    assert events == [NULL_31, Error(b"bad")]


def test_codec_pair_handshake() -> None:
    pair = CodecPair("ROUTER", "DEALER", b_options={"identity": b"client-1"})
    assert pair.handshake["a"][1].identity == b"client-1"
    assert pair.a.peer_socket_type == "DEALER" and pair.b.peer_socket_type == "ROUTER"


# ---- message frames --------------------------------------------------------

MESSAGE_CASES = [  # (wire bytes, frames)
    (  # 9.1
        wire("01 09", b"<IDS|MSG>", "01 03", b"sig", "01 02", b"{}", "00 00"),
        [b"<IDS|MSG>", b"sig", b"{}", b""],
    ),
    (wire("01 01 61 02 00 00 00 00 00 00 01 2c") + b"x" * 300, [b"a", b"x" * 300]),  # 9.1
    (wire("01 03 61 62 63 00 02 68 69"), [b"abc", b"hi"]),  # 9.1
    (wire("01 01 61 00 01 62"), [b"a", b"b"]),  # 5.1
    (wire("01 00 00 04 70 69 6e 67"), [b"", b"ping"]),  # 5.3 / 9.5, a REQ's send(b"ping")
    (wire("01 00 00 04 70 6f 6e 67"), [b"", b"pong"]),  # 5.3, the REP reply
    (wire("00 00"), [b""]),
    (wire("01 00 00 00"), [b"", b""]),
]


@pytest.mark.parametrize(("data", "frames"), MESSAGE_CASES)
def test_message_encoding(data: bytes, frames: list[bytes]) -> None:
    assert b"".join(handshaken("ROUTER", "DEALER").send_frames(frames)) == data
    assert handshaken("REP", "REQ").send(Message(frames)) == data


@pytest.mark.parametrize(("data", "frames"), MESSAGE_CASES)
def test_message_decoding(data: bytes, frames: list[bytes]) -> None:
    events = split_feed(partial(handshaken, "ROUTER", "DEALER"), data, state=State.TRAFFIC)
    assert events == [Message(frames)]


def test_encode_frames_needs_no_connection() -> None:
    for data, frames in MESSAGE_CASES:
        assert encode_frames(frames) == [data]  # small messages: one piece
    with pytest.raises(LocalProtocolError, match="at least one frame"):
        encode_frames([])


def test_encode_frames_passes_big_bodies_through_uncopied() -> None:
    big = b"x" * PASS_THROUGH_SIZE
    frames = [b"topic", bytearray(big), b"sig", memoryview(big)]
    pieces = encode_frames(frames)
    # header+topic+header | big | header+sig+header | big: the bodies are the same objects
    assert [len(p) for p in pieces] == [2 + 5 + 9, len(big), 2 + 3 + 9, len(big)]
    assert isinstance(pieces[1], memoryview) and pieces[1].obj is frames[1]  # a view
    assert isinstance(pieces[3], memoryview) and pieces[3].obj is big
    wire_bytes = b"".join(pieces)
    assert feed(handshaken("DEALER", "ROUTER"), wire_bytes) == [Message([bytes(f) for f in frames])]


def test_long_frame_is_312_bytes() -> None:  # 9.1
    assert len(MESSAGE_CASES[1][0]) == 312


def test_long_form_size_for_a_small_frame_is_accepted() -> None:
    data = wire("02 00 00 00 00 00 00 00 02 68 69")
    assert split_feed(partial(handshaken, "ROUTER", "DEALER"), data) == [Message([b"hi"])]


def test_long_form_command_is_accepted() -> None:
    data = frame(PING_5S[2:], flags=0x04, long=True)
    assert split_feed(partial(handshaken, "ROUTER", "DEALER"), data) == [Ping(ttl=50)]


@pytest.mark.parametrize(("size", "header"), [(0, 2), (255, 2), (256, 9), (1 << 20, 9)])
def test_frame_sizes_round_trip(size: int, header: int) -> None:
    pair = CodecPair("ROUTER", "DEALER")
    body = random.Random(size).randbytes(size)
    for chunking in (None, random.Random(1), 65536):
        data = pair.send_frames("b", [body], chunking)
        assert len(data) == header + size
        assert data[0] == (0x02 if header == 9 else 0x00)


def test_ping_between_frames_keeps_the_message_whole() -> None:  # 1.4
    data = wire("01 01 61") + PING_5S + wire("00 01 62")
    events = split_feed(partial(handshaken, "ROUTER", "DEALER"), data)
    assert events == [Ping(ttl=50), Message([b"a", b"b"])]


def test_unknown_command_is_ignored_even_mid_message() -> None:
    hello = command(b"HELLO", b"data")
    data = hello + wire("01 01 61") + hello + command(b"") + wire("00 01 62") + hello
    events = split_feed(partial(handshaken, "ROUTER", "DEALER"), data)
    assert events == [Message([b"a", b"b"])]


def test_several_messages_in_one_read() -> None:
    data = b"".join(d for d, _ in MESSAGE_CASES)
    events = split_feed(partial(handshaken, "ROUTER", "DEALER"), data)
    assert events == [Message(frames) for _, frames in MESSAGE_CASES]


def test_codec_pair_both_directions() -> None:
    pair = CodecPair("ROUTER", "DEALER")
    pair.send("a", [Message([b"id", b"x"]), Ping(7, b"ctx"), Pong(b"ctx")])
    pair.send("b", [Message([b""]), Ping(), Pong()], chunking=1)


# ---- commands --------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "event"),
    [
        (PING_5S, Ping(ttl=50)),
        (PING_NO_TTL, Ping(ttl=0)),
        (wire("04 0a 04", b"PING", "00 32", b"abc"), Ping(ttl=50, context=b"abc")),
        (PONG_EMPTY, Pong()),
        (wire("04 08 04", b"PONG", b"abc"), Pong(b"abc")),
        (ERROR_BAD, Error(b"bad")),
        (command(b"ERROR"), Error(b"")),
    ],
)
def test_command_decoding(data: bytes, event: object) -> None:
    assert split_feed(partial(handshaken, "ROUTER", "DEALER"), data) == [event]


@pytest.mark.parametrize(
    ("event", "data"),
    [
        (Ping(ttl=0), PING_NO_TTL),
        (Ping(ttl=50), PING_5S),
        (Ping(ttl=50, context=b"abc"), wire("04 0a 04", b"PING", "00 32", b"abc")),
        (Pong(), PONG_EMPTY),
        (Pong(b"abc"), wire("04 08 04", b"PONG", b"abc")),
        (Error(b"bad"), ERROR_BAD),
    ],
)
def test_command_encoding(event: object, data: bytes) -> None:
    assert handshaken("ROUTER", "DEALER").send(event) == data


def test_ping_context_is_at_most_16_bytes() -> None:
    pair = CodecPair("ROUTER", "DEALER")
    pair.send("a", [Ping(1, b"x" * 20)], expect=[Ping(1, b"x" * 16)])


def test_error_is_received_and_closes() -> None:
    conn = handshaken("ROUTER", "DEALER")
    assert feed(conn, ERROR_BAD + wire("00 01 61")) == [Error(b"bad")]
    assert conn.state is State.CLOSED


def test_sending_error_closes_our_side() -> None:
    conn = handshaken("ROUTER", "DEALER")
    conn.send(Error(b"bye"))
    assert conn.state is State.CLOSED


# ---- subscriptions ---------------------------------------------------------

SUBSCRIPTION_CASES = [  # (wire bytes, event)
    (SUBSCRIBE_ALL, Subscribe(b"")),  # 4 / 9.4, command form
    (SUBSCRIBE_TOPIC, Subscribe(b"topic")),
    (CANCEL_TOPIC, Cancel(b"topic")),
    (wire("00 01 01"), Subscribe(b"")),  # 9.4, 3.0 message form
    (wire("00 06 01", b"topic"), Subscribe(b"topic")),
    (wire("00 06 00", b"topic"), Cancel(b"topic")),
]


@pytest.mark.parametrize("peer_minor", [0, 1])
@pytest.mark.parametrize("socket_type", ["PUB", "XPUB"])
@pytest.mark.parametrize(("data", "event"), SUBSCRIPTION_CASES)
def test_subscriptions_in_both_forms(
    socket_type: str, peer_minor: int, data: bytes, event: object
) -> None:
    factory = partial(handshaken, socket_type, "SUB", peer_minor=peer_minor)
    assert split_feed(factory, data) == [event]


def test_message_form_is_an_ordinary_message_elsewhere() -> None:
    data = wire("00 06 01", b"topic")
    assert feed(handshaken("ROUTER", "DEALER"), data) == [Message([b"\x01topic"])]


def test_publisher_ignores_other_data() -> None:
    data = wire("00 01 02") + wire("00 00") + wire("00 02 61 62")
    assert split_feed(partial(handshaken, "XPUB", "SUB"), data) == []


def test_publisher_gets_multipart_messages_as_messages() -> None:
    data = wire("01 01 01 00 01 61")
    assert feed(handshaken("XPUB", "SUB"), data) == [Message([b"\x01", b"a"])]


@pytest.mark.parametrize(
    ("peer_minor", "event", "data"),
    [
        (0, Subscribe(b""), wire("00 01 01")),  # 9.4
        (0, Subscribe(b"topic"), wire("00 06 01", b"topic")),
        (0, Cancel(b"topic"), wire("00 06 00", b"topic")),
        (1, Subscribe(b""), SUBSCRIBE_ALL),
        (1, Subscribe(b"topic"), SUBSCRIBE_TOPIC),
        (1, Cancel(b"topic"), CANCEL_TOPIC),
    ],
)
def test_sub_sends_the_form_the_peer_greeted_with(
    peer_minor: int, event: object, data: bytes
) -> None:
    assert handshaken("SUB", "PUB", peer_minor=peer_minor).send(event) == data


def test_sub_acting_as_30_uses_the_message_form() -> None:  # 2.1: min(own, peer)
    conn = handshaken("SUB", "XPUB", minor=0)
    assert conn.send(Subscribe(b"")) == wire("00 01 01")


@pytest.mark.parametrize("sub_minor", [0, 1])
def test_subscriptions_through_a_pair(sub_minor: int) -> None:
    pair = CodecPair("XPUB", "SUB", b_options={"minor": sub_minor})
    pair.send("b", [Subscribe(b""), Subscribe(b"kernel."), Cancel(b"kernel.")])


# ---- hostile input ---------------------------------------------------------

fresh_router = partial(Connection, "ROUTER")
router_greeted = partial(greeted, "ROUTER")
router_traffic = partial(handshaken, "ROUTER", "DEALER")


def test_bad_signature_is_refused_at_the_first_byte() -> None:
    exc = split_feed_error(fresh_router, b"G", "bad signature")
    assert exc.hint is None  # not a ZMTP peer: just close
    split_feed_error(fresh_router, b"GET / HTTP/1.1\r\n\r\n", "bad signature")


def test_bad_signature_end() -> None:
    split_feed_error(fresh_router, greeting()[:9] + b"\x7e", "signature end")


@pytest.mark.parametrize("major", [0, 1, 2])
def test_old_major_version_is_refused_at_byte_10(major: int) -> None:
    split_feed_error(fresh_router, greeting(major=major)[:11], f"ZMTP {major}.x")


@pytest.mark.parametrize("mechanism", [b"PLAIN", b"CURVE", b"NULLX", b""])
def test_other_mechanisms_are_refused(mechanism: bytes) -> None:
    exc = split_feed_error(fresh_router, greeting(mechanism=mechanism), "mechanism")
    assert exc.hint == "unsupported security mechanism"


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [("ROUTER", "PUB"), ("XPUB", "DEALER"), ("SUB", "SUB"), ("REP", "REP"), ("ROUTER", "BOGUS")],
)
def test_socket_types_that_cannot_pair(ours: str, theirs: str) -> None:
    data = greeting() + ready_with({b"Socket-Type": theirs.encode()})
    exc = split_feed_error(
        partial(Connection, ours), data, f"{theirs} peer cannot talk to our {ours}"
    )
    assert exc.hint == "invalid socket type"


def test_pub_to_router_as_libzmq_sends_it() -> None:
    split_feed_error(router_greeted, PUB_READY, "PUB peer cannot talk to our ROUTER")


def test_ready_without_socket_type() -> None:
    split_feed_error(router_greeted, ready_with({b"Identity": b""}), "without Socket-Type")
    split_feed_error(router_greeted, command(b"READY"), "without Socket-Type")


@pytest.mark.parametrize(
    "data",
    [
        command(b"READY", b"\x0bSocket"),  # name cut short
        command(b"READY", b"\x0bSocket-Type\x00\x00"),  # value size cut short
        command(b"READY", b"\x0bSocket-Type\x00\x00\x00\x09DEALER"),  # value cut short
        command(b"READY", b"\x00\x00\x00\x00\x00"),  # empty property name
    ],
)
def test_truncated_properties(data: bytes) -> None:
    split_feed_error(router_greeted, data, "truncated")


def test_identity_over_255_bytes() -> None:
    props = properties({b"Socket-Type": b"DEALER", b"Identity": b"i" * 256})
    data = frame(b"\x05READY" + props, flags=0x04)
    split_feed_error(router_greeted, data, "Identity longer than 255")


def test_message_frame_before_ready() -> None:
    exc = split_feed_error(router_greeted, wire("00 01 61"), "message frame before READY")
    assert exc.hint == "expected READY"


@pytest.mark.parametrize("data", [PING_5S, SUBSCRIBE_ALL, command(b"HELLO")])
def test_other_command_before_ready(data: bytes) -> None:
    split_feed_error(router_greeted, data, "expected READY")


def test_huge_frame_is_refused_from_its_header() -> None:
    exc = split_feed_error(router_traffic, TIB_FRAME_HEADER, "exceeds the limit")
    assert exc.hint == "frame too large"


def test_huge_command_is_refused_from_its_header() -> None:
    split_feed_error(router_traffic, b"\x06" + TIB_FRAME_HEADER[1:], "too large")
    split_feed_error(router_greeted, b"\x06" + TIB_FRAME_HEADER[1:], "too large")


def test_max_frame_size_is_checked_on_short_frames() -> None:
    # The limit covers command frames too, so it must leave room for the peer's READY.
    factory = partial(handshaken, "ROUTER", "DEALER", max_frame_size=100)
    assert split_feed(factory, frame(b"x" * 100)) == [Message([b"x" * 100])]
    split_feed_error(factory, wire("00 65"), "frame of 101 bytes exceeds the limit of 100")


def test_max_message_size() -> None:
    factory = partial(handshaken, "ROUTER", "DEALER", max_message_size=10)
    assert split_feed(factory, frame(b"x" * 5, True) + frame(b"x" * 5)) == [Message([b"x" * 5] * 2)]
    split_feed_error(factory, frame(b"x" * 5, True) + wire("00 06"), "message exceeds")


def test_too_many_frames() -> None:
    factory = partial(handshaken, "ROUTER", "DEALER", max_message_frames=3)
    assert split_feed(factory, wire("01 00 01 00 00 00")) == [Message([b""] * 3)]
    exc = split_feed_error(factory, wire("01 00 01 00 01 00 00 00"), "more than 3 frames")
    assert exc.hint == "too many frames"


def test_frame_limits_reset_between_messages() -> None:
    factory = partial(handshaken, "ROUTER", "DEALER", max_message_frames=2, max_message_size=10)
    data = (frame(b"a" * 5, True) + frame(b"b" * 5)) * 3
    assert split_feed(factory, data) == [Message([b"a" * 5, b"b" * 5])] * 3


def test_second_ready() -> None:
    split_feed_error(router_traffic, DEALER_READY, "second READY")


def test_command_with_more_flag() -> None:
    split_feed_error(router_traffic, b"\x05" + PING_5S[1:], "MORE")


@pytest.mark.parametrize("flags", [0x08, 0x10, 0x80, 0xF8, 0xFF])
def test_reserved_flag_bits(flags: int) -> None:
    split_feed_error(router_traffic, bytes([flags, 0]), "reserved flag bits")
    split_feed_error(router_greeted, bytes([flags, 0]), "reserved flag bits")


@pytest.mark.parametrize("data", [wire("04 00"), wire("04 03 05 52 45"), wire("04 01 01")])
def test_truncated_command_name(data: bytes) -> None:
    split_feed_error(router_traffic, data, "truncated command name")
    split_feed_error(router_greeted, data, "truncated command name")


def test_truncated_ping() -> None:
    split_feed_error(router_traffic, command(b"PING", b"\x00"), "truncated PING")


def test_error_hint_can_be_sent_back() -> None:
    conn = greeted("ROUTER")
    with pytest.raises(RemoteProtocolError) as info:
        feed(conn, PUB_READY)
    reply = conn.send(Error(info.value.hint.encode()))
    assert reply == command(b"ERROR", b"\x13invalid socket type")
    assert_stuck_in_error(conn, info.value)  # sending the ERROR does not leave ERROR


# ---- local misuse ----------------------------------------------------------


@pytest.mark.parametrize("make", [fresh_router, router_greeted])
def test_sending_a_message_before_the_handshake(make: partial[Connection]) -> None:
    conn = make()
    state = conn.state
    with pytest.raises(LocalProtocolError, match=f"cannot send a message in state {state.name}"):
        conn.send_frames([b"x"])
    with pytest.raises(LocalProtocolError):
        conn.send(Message([b"x"]))
    with pytest.raises(LocalProtocolError, match="subscribe only after the handshake"):
        conn.send(Subscribe(b""))
    assert conn.state is state


def test_empty_message_cannot_be_sent() -> None:
    with pytest.raises(LocalProtocolError, match="at least one frame"):
        handshaken("ROUTER", "DEALER").send_frames([])


@pytest.mark.parametrize("event", [NULL_31, Ready("DEALER"), ConnectionClosed()])
def test_events_that_cannot_be_sent(event: object) -> None:
    with pytest.raises(LocalProtocolError, match="cannot send"):
        handshaken("ROUTER", "DEALER").send(event)


def test_bad_constructor_arguments() -> None:
    with pytest.raises(LocalProtocolError, match="unknown socket type"):
        Connection("PAIR")
    with pytest.raises(LocalProtocolError, match="3.0 or 3.1"):
        Connection("ROUTER", minor=2)


def test_data_after_end_of_stream() -> None:
    conn = Connection("ROUTER")
    assert feed(conn, b"", eof=True) == [ConnectionClosed()]
    with pytest.raises(LocalProtocolError, match="after end of stream"):
        conn.receive_data(b"x")
    conn.receive_data(b"")  # a second EOF is harmless
    assert conn.next_event() is NEED_DATA
    assert conn.state is State.CLOSED


# ---- end of stream ---------------------------------------------------------

EOF_CASES = {
    "at once": (fresh_router, b""),
    "mid greeting": (fresh_router, LIBZMQ_GREETING[:10]),
    "before READY": (router_greeted, b""),
    "mid READY": (router_greeted, DEALER_READY[:20]),
    "idle": (router_traffic, b""),
    "mid frame header": (router_traffic, TIB_FRAME_HEADER[:5]),
    "mid frame body": (router_traffic, wire("00 05 68 65")),
    "mid multipart message": (router_traffic, wire("01 01 61 01 01 62")),
    "mid command": (router_traffic, PING_5S[:4]),
}


@pytest.mark.parametrize("case", EOF_CASES)
def test_end_of_stream(case: str) -> None:
    factory, data = EOF_CASES[case]
    assert split_feed(factory, data, eof=True, state=State.CLOSED) == [ConnectionClosed()]


def test_complete_events_come_before_end_of_stream() -> None:
    data = wire("00 01 61") + PING_5S + wire("01 01 62")
    events = split_feed(router_traffic, data, eof=True)
    assert events == [Message([b"a"]), Ping(50), ConnectionClosed()]


def test_after_connection_closed_only_need_data() -> None:
    pair = CodecPair("ROUTER", "DEALER")
    pair.close("b")
    assert pair.a.next_event() is NEED_DATA
    assert pair.a.state is State.CLOSED


# ---- the state table at the top of codec.py, state x input ----------------

INPUTS = {  # fed to an XPUB whose peer is a SUB
    "greeting": greeting(),
    "ready": SUB_READY,
    "message": wire("01 01 61 00 01 62"),
    "ping": PING_5S,
    "subscribe": SUBSCRIBE_TOPIC,
    "error": ERROR_BAD,
    "garbage": b"\x80garbage",
    "eof": b"",
}
EXPECTED_EVENT = {
    "greeting": NULL_31,
    "ready": Ready("SUB", {"Socket-Type": b"SUB"}),
    "message": Message([b"a", b"b"]),
    "ping": Ping(50),
    "subscribe": Subscribe(b"topic"),
    "error": Error(b"bad"),
    "eof": ConnectionClosed(),
}
G, H, T, C, E = State.GREETING, State.HANDSHAKE, State.TRAFFIC, State.CLOSED, State.ERROR
R = RemoteProtocolError  # the input is refused and the state becomes (or stays) ERROR
TRANSITIONS: dict[State, dict[str, State | type[RemoteProtocolError] | None]] = {
    # next state after the input's event; None: no event, state unchanged
    G: {"greeting": H, "eof": C}
    | dict.fromkeys(["ready", "message", "ping"], R)
    | dict.fromkeys(["subscribe", "error", "garbage"], R),
    H: {"ready": T, "error": C, "eof": C}
    | dict.fromkeys(["greeting", "message", "ping"], R)
    | dict.fromkeys(["subscribe", "garbage"], R),
    T: {"message": T, "ping": T, "subscribe": T, "error": C, "eof": C}
    | dict.fromkeys(["greeting", "ready", "garbage"], R),
    C: dict.fromkeys(INPUTS, None),  # terminal: later bytes are not looked at
    E: dict.fromkeys(INPUTS, R),  # and always the very same error
}


def connection_in(state: State) -> tuple[Connection, RemoteProtocolError | None]:
    conn = Connection("XPUB")
    steps = {G: [], H: [greeting()], T: [greeting(), SUB_READY]}
    steps |= {C: [greeting(), SUB_READY, ERROR_BAD], E: [greeting(), b"\x80\x00"]}
    try:
        for data in steps[state]:
            feed(conn, data)
    except RemoteProtocolError as exc:
        assert conn.state is E
        return conn, exc
    assert conn.state is state
    return conn, None


def test_transition_table_is_complete() -> None:
    assert set(TRANSITIONS) == set(State)
    assert all(set(row) == set(INPUTS) for row in TRANSITIONS.values())


@pytest.mark.parametrize("state", list(State), ids=lambda s: s.name)
@pytest.mark.parametrize("name", list(INPUTS))
@settings(max_examples=examples(6), deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=64), max_size=6))
def test_state_by_input(state: State, name: str, cuts: list[int]) -> None:
    conn, old_error = connection_in(state)
    expected = TRANSITIONS[state][name]
    data, eof = INPUTS[name], name == "eof"
    if expected is R:
        with pytest.raises(RemoteProtocolError) as info:
            feed(conn, data, cuts, eof=eof)
        if old_error is not None:
            assert info.value is old_error
        assert_stuck_in_error(conn, info.value)
    elif expected is None:
        assert feed(conn, data, cuts, eof=eof) == []
        assert conn.state is state
    else:
        assert feed(conn, data, cuts, eof=eof) == [EXPECTED_EVENT[name]]
        assert conn.state is expected


# ---- hypothesis ------------------------------------------------------------

frames_st = st.lists(
    st.one_of(st.binary(max_size=40), st.binary(min_size=250, max_size=700)),
    min_size=1,
    max_size=20,
)


@settings(max_examples=examples(60), deadline=None)
@given(frames=frames_st, rnd=st.randoms(use_true_random=False))
def test_any_multipart_message_round_trips(frames: list[bytes], rnd: random.Random) -> None:
    pair = CodecPair("ROUTER", "DEALER")
    pair.send_frames("a", frames, chunking=rnd)
    pair.send("b", [Message(frames)], chunking=rnd)


KNOWN_COMMANDS = {b"READY", b"ERROR", b"PING", b"PONG", b"SUBSCRIBE", b"CANCEL"}
small = st.binary(max_size=16)
command_st = st.one_of(
    st.builds(Ping, st.integers(0, 0xFFFF), small),
    st.builds(Pong, small),
    st.builds(Subscribe, small),
    st.builds(Cancel, small),
    st.tuples(st.binary(max_size=12).filter(lambda n: n not in KNOWN_COMMANDS), small),
)
item_st = st.one_of(
    command_st,
    st.tuples(frames_st.map(lambda f: f[:5]), st.integers(0, 5), st.none() | command_st),
)


def encode_item(peer: Connection, item: object) -> tuple[bytes, list[object]]:
    """Wire bytes for one generated item and the events it must produce."""
    if isinstance(item, tuple) and len(item) == 2:  # unknown command: ignored
        return command(*item), []
    if not isinstance(item, tuple):
        return peer.send(item), [item]
    frames, at, cmd = item
    last = len(frames) - 1
    parts = [frame(f, i < last) for i, f in enumerate(frames)]
    data, events = encode_item(peer, cmd) if cmd is not None else (b"", [])
    parts.insert(min(at, last), data)  # a command between frames, never after the last
    return b"".join(parts), [*events, Message(frames)]


@settings(max_examples=examples(60), deadline=None)
@given(items=st.lists(item_st, max_size=8), data=st.data())
def test_any_chunking_gives_the_same_events(items: list[object], data: st.DataObject) -> None:
    peer = Connection("DEALER", identity=b"peer")
    feed(peer, Connection("ROUTER").initiate())
    stream = peer.initiate()
    expected = [NULL_31, Ready("DEALER", {"Socket-Type": b"DEALER", "Identity": b"peer"})]
    for item in items:
        wire_bytes, events = encode_item(peer, item)
        stream += wire_bytes
        expected += events
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30))
    assert feed(Connection("ROUTER"), stream, cuts) == expected
    assert feed(Connection("ROUTER"), stream) == expected


def raw_frame(flags: int, body: bytes) -> bytes:
    if flags & 0x02:
        return bytes([flags]) + len(body).to_bytes(8, "big") + body
    return bytes([flags, len(body[:255])]) + body[:255]


body_st = st.one_of(
    st.binary(max_size=40),
    st.builds(
        lambda name, data: bytes([len(name)]) + name + data,
        st.sampled_from(sorted(KNOWN_COMMANDS)) | st.binary(max_size=6),
        st.binary(max_size=30),
    ),
    st.builds(
        lambda props: b"\x05READY" + props,
        st.binary(max_size=30) | st.sampled_from([SUB_READY[7:], DEALER_READY[7:]]),
    ),
)
frame_st = st.builds(raw_frame, st.sampled_from(range(8)) | st.integers(0, 255), body_st)
hostile_st = st.one_of(
    st.binary(max_size=200),
    st.lists(frame_st, max_size=10).map(b"".join),
    st.tuples(st.lists(frame_st, max_size=5).map(b"".join), st.binary(max_size=20)).map(
        lambda t: t[0] + t[1]
    ),
)
PAIRS = [("ROUTER", "DEALER"), ("XPUB", "SUB"), ("SUB", "PUB"), ("REP", "REQ")]
PREFIXES = ["nothing", "greeting", "greeting 3.0", "greeting and READY"]


def prefix_bytes(prefix: str, peer_type: str) -> bytes:
    return {
        "nothing": b"",
        "greeting": greeting(),
        "greeting 3.0": greeting(minor=0),
        "greeting and READY": peer_initiate(peer_type),
    }[prefix]


@settings(max_examples=examples(150), deadline=None)
@given(
    pair=st.sampled_from(PAIRS),
    prefix=st.sampled_from(PREFIXES),
    tail=hostile_st,
    eof=st.booleans(),
    rnd=st.randoms(use_true_random=False),
)
def test_arbitrary_bytes_only_raise_remote_protocol_error(
    pair: tuple[str, str], prefix: str, tail: bytes, eof: bool, rnd: random.Random
) -> None:
    conn = Connection(pair[0])
    try:
        feed(conn, prefix_bytes(prefix, pair[1]) + tail, rnd, eof=eof)  # drain() bounds it
    except RemoteProtocolError as exc:
        assert_stuck_in_error(conn, exc)
    else:
        assert conn.state is not State.ERROR
        if eof:
            assert conn.state is State.CLOSED


@settings(max_examples=examples(100), deadline=None)
@given(data=st.binary(min_size=1, max_size=100))
def test_arbitrary_bytes_from_scratch(data: bytes) -> None:
    outcomes = []
    for _, chunking in chunkings(data, seeds=(0,)):
        conn = Connection("ROUTER")
        try:
            outcomes.append(feed(conn, data, chunking))
        except RemoteProtocolError as exc:
            outcomes.append(str(exc))
            assert_stuck_in_error(conn, exc)
    assert all(o == outcomes[0] for o in outcomes)  # whole or byte by byte: the same result
    if data[0] != 0xFF:
        assert outcomes[0] == "not a ZMTP peer: bad signature byte"


def test_drain_detects_an_endless_codec() -> None:
    class Endless(Connection):
        def next_event(self):  # type: ignore[override]
            return Ping()

    with pytest.raises(AssertionError, match="did not return NEED_DATA"):
        drain(Endless("ROUTER"))


def test_message_frame_before_ready_is_refused_from_its_header() -> None:
    conn = Connection("ROUTER")
    conn.receive_data(Connection("DEALER").initiate()[:64])  # greeting only
    assert isinstance(conn.next_event(), Greeting)
    conn.receive_data(b"\x02" + (1 << 40).to_bytes(8, "big"))  # header of a 1 TiB frame
    with pytest.raises(RemoteProtocolError, match="before READY"):
        conn.next_event()


def test_byte_view_counts_bytes_and_copies_only_when_it_must() -> None:
    import numpy as np

    from trikernel._bytes import byte_view

    data = b"abc"
    assert byte_view(data) is data
    grown = bytearray(b"xyz")
    view = byte_view(grown)
    assert isinstance(view, memoryview) and view == b"xyz"
    with pytest.raises(BufferError):  # exported: another thread cannot resize it now
        grown.extend(b"!")
    floats = np.arange(4, dtype="float64")
    assert len(byte_view(memoryview(floats))) == 32 == len(byte_view(floats))
    assert byte_view(np.zeros((0, 3))) == b""  # cast() refuses zero shapes
    strided = np.arange(10, dtype="uint8")[::2]
    assert byte_view(strided) == bytes([0, 2, 4, 6, 8])


def test_encode_frames_sizes_a_wide_memoryview_in_bytes() -> None:
    floats = memoryview(bytearray(range(16))).cast("d")  # 2 items, 16 bytes
    wire_bytes = b"".join(bytes(p) for p in encode_frames([b"t", floats]))
    assert feed(handshaken("DEALER", "ROUTER"), wire_bytes) == [Message([b"t", bytes(range(16))])]
