"""trikernel.zmtp.sockets against real libzmq peers (pyzmq) and raw TCP clients.

Rules for this file:

* Only loopback (127.0.0.1) and port 0: every listener gets a free port from the
  OS, read back from the Endpoint that ``bind`` returns.
* Every test that does I/O runs under ``trio.fail_after(TIMEOUT)``; pyzmq is only
  called with NOBLOCK and polled (``pyzmq`` fixture, conftest.py), so nothing can
  hang outside trio's reach.
* Who closes first: our socket, when its ``async with`` ends inside the test; the
  pyzmq sockets (linger 0) and their context are closed by the fixture afterwards.
  Raw peers are closed by the test itself where the order matters.
* Waiting for something to happen in the other peer is a bounded poll
  (``wait_until``), never a bare sleep that a slow machine could outrun.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable

import pytest
import trio
import zmq
from support.wire import command, frame, greeting, ready

from trikernel.zmtp.sockets import (
    DealerSocket,
    Peer,
    PubSocket,
    RepSocket,
    ReqSocket,
    RouterSocket,
    SubSocket,
)

from .conftest import PyzmqPeers

LOCALHOST = "tcp://127.0.0.1:0"
TIMEOUT = 10
MiB = 1 << 20


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` until it holds (the caller's fail_after bounds the wait)."""
    while not predicate():
        await trio.sleep(0.002)


def payload(size: int) -> bytes:
    """``size`` bytes that are not all alike, so a shifted or cut frame shows."""
    return (bytes(range(256)) * (size // 256 + 1))[:size]


# ---- a raw TCP peer speaking ZMTP bytes by hand (spec §9, support.wire) -----------


class RawPeer:
    """A TCP client that writes and reads ZMTP bytes itself."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._buffer = bytearray()

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    @classmethod
    def connect_now(cls, port: int) -> RawPeer:
        """Connect without a checkpoint (loopback connects complete in the backlog)."""
        sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        sock.setblocking(False)
        return cls(trio.SocketStream(trio.socket.from_stdlib_socket(sock)))

    async def receive_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            data = await self.stream.receive_some()
            if not data:
                raise EOFError(f"closed after {bytes(self._buffer)!r}")
            self._buffer += data
        chunk = bytes(self._buffer[:count])
        del self._buffer[:count]
        return chunk

    async def receive_until_closed(self) -> bytes:
        """Everything the other side sends until it closes (FIN or RST)."""
        try:
            while data := await self.stream.receive_some():
                self._buffer += data
        except trio.BrokenResourceError:
            pass
        return bytes(self._buffer)

    async def receive_greeting_and_ready(self) -> bytes:
        """Read the socket's greeting and READY; returns the READY body."""
        their_greeting = await self.receive_exactly(64)
        assert their_greeting[0] == 0xFF and their_greeting[10] == 3
        assert their_greeting[12:32].rstrip(b"\x00") == b"NULL"
        flags, size = await self.receive_exactly(2)
        assert flags == 0x04
        body = await self.receive_exactly(size)
        assert body.startswith(b"\x05READY")
        return body

    async def handshake(self, socket_type: bytes = b"DEALER", identity: bytes = b"raw") -> None:
        await self.stream.send_all(greeting() + ready(socket_type, identity))
        await self.receive_greeting_and_ready()


# ---- ROUTER with pyzmq DEALERs --------------------------------------------------


async def open_router_and_dealer(
    router: RouterSocket, pyzmq: PyzmqPeers, **options: object
) -> zmq.Socket[bytes]:
    endpoint = await router.bind(LOCALHOST)
    dealer = pyzmq.socket(zmq.DEALER, **options)
    dealer.connect(endpoint.url)
    return dealer


async def test_dealer_identity_is_the_routing_id(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            dealer = await open_router_and_dealer(router, pyzmq, identity=b"client-1")
            await pyzmq.send(dealer, [b"a", b"", b"b"])
            assert await router.receive() == [b"client-1", b"a", b"", b"b"]
            assert router.send_nowait([b"client-1", b"x", b""])
            assert await pyzmq.receive(dealer) == [b"x", b""]


async def test_dealer_without_identity_gets_a_generated_id(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            first = await open_router_and_dealer(router, pyzmq)
            second = pyzmq.socket(zmq.DEALER)
            second.connect(router.endpoints[0].url)
            ids = {}
            for name, dealer in [("first", first), ("second", second)]:
                await pyzmq.send(dealer, [name.encode()])
                routing_id, body = await router.receive()
                ids[body] = routing_id
                assert len(routing_id) == 5 and routing_id[0] == 0
            assert ids[b"first"] != ids[b"second"]
            router.send_nowait([ids[b"second"], b"to second"])
            assert await pyzmq.receive(second) == [b"to second"]
            await pyzmq.assert_nothing(first)


async def test_replies_reach_only_their_own_dealer(pyzmq: PyzmqPeers) -> None:
    identities = [f"dealer-{i}".encode() if i % 2 else None for i in range(10)]
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            endpoint = await router.bind(LOCALHOST)
            dealers = []
            for i, identity in enumerate(identities):
                dealer = pyzmq.socket(zmq.DEALER, **({"identity": identity} if identity else {}))
                dealer.connect(endpoint.url)
                dealers.append(dealer)
                for n in range(3):
                    await pyzmq.send(dealer, [b"%d" % i, b"%d" % n])
            for _ in range(30):
                routing_id, i, n = await router.receive()
                if identities[int(i)] is not None:
                    assert routing_id == identities[int(i)]
                assert router.send_nowait([routing_id, b"reply", i, n])
            for i, dealer in enumerate(dealers):
                replies = [await pyzmq.receive(dealer) for _ in range(3)]
                assert replies == [[b"reply", b"%d" % i, b"%d" % n] for n in range(3)]
                await pyzmq.assert_nothing(dealer, 0.01)


async def test_reply_to_unknown_id_is_dropped_and_counted(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            dealer = await open_router_and_dealer(router, pyzmq, identity=b"known")
            await pyzmq.send(dealer, [b"hello"])
            await router.receive()
            assert router.send_nowait([b"unknown", b"lost"]) is False
            assert router.send_nowait([b"\x00\x00\x00\x00\x01", b"lost"]) is False
            assert router.statistics().messages_dropped == 2
            assert router.send_nowait([b"known", b"kept"])
            assert await pyzmq.receive(dealer) == [b"kept"]


async def test_same_identity_is_handed_over_to_the_newest_dealer(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            # No reconnect: the old DEALER must not come back and take the id again.
            old = await open_router_and_dealer(router, pyzmq, identity=b"same", reconnect_ivl=-1)
            await pyzmq.send(old, [b"old"])
            assert await router.receive() == [b"same", b"old"]
            new = pyzmq.socket(zmq.DEALER, identity=b"same")
            new.connect(router.endpoints[0].url)
            await pyzmq.send(new, [b"new"])
            assert await router.receive() == [b"same", b"new"]
            assert router.send_nowait([b"same", b"reply"])
            assert await pyzmq.receive(new) == [b"reply"]
            await pyzmq.assert_nothing(old)
            await wait_until(lambda: router.statistics().peers == 1)


# ---- PUB / XPUB with pyzmq SUBs -------------------------------------------------


def peer_subscriptions(pub: PubSocket) -> set[bytes]:
    (peer,) = pub.peers
    return set(peer.subscriptions)


@pytest.mark.parametrize("minor", [0, 1], ids=["greet-3.0", "greet-3.1"])
@pytest.mark.parametrize("xpub", [True, False], ids=["XPUB", "PUB"])
async def test_pyzmq_sub_prefixes_filter_and_unsubscribe(
    pyzmq: PyzmqPeers, xpub: bool, minor: int
) -> None:
    # Greeting as 3.0 makes libzmq send message-form subscriptions (01+topic), as 3.1
    # SUBSCRIBE/CANCEL commands (spec §9.4): both must work.
    seen: list[bytes] = []
    with trio.fail_after(TIMEOUT):
        async with PubSocket(
            xpub=xpub, minor=minor, on_subscribe=lambda p, t: seen.append(t)
        ) as pub:
            endpoint = await pub.bind(LOCALHOST)
            sub = pyzmq.socket(zmq.SUB)
            for prefix in [b"ab", b"x", b"xyz"]:
                sub.subscribe(prefix)
            sub.connect(endpoint.url)
            await wait_until(lambda: len(seen) == 3)
            assert sorted(seen) == [b"ab", b"x", b"xyz"]
            assert pub.peers[0].conn.peer_minor == 1 and pub.peers[0].conn.minor == minor
            topics = [b"abc", b"a", b"xq", b"b", b"xyz1", b"", b"ab"]
            assert [pub.publish_nowait([t, b"body"]) for t in topics] == [1, 0, 1, 0, 1, 0, 1]
            received = [await pyzmq.receive(sub) for _ in range(4)]
            assert [frames[0] for frames in received] == [b"abc", b"xq", b"xyz1", b"ab"]

            sub.unsubscribe(b"ab")
            await wait_until(lambda: peer_subscriptions(pub) == {b"x", b"xyz"})
            assert pub.publish_nowait([b"abc", b"after"]) == 0
            assert pub.publish_nowait([b"xa", b"after"]) == 1
            assert await pyzmq.receive(sub) == [b"xa", b"after"]
            await pyzmq.assert_nothing(sub, 0.02)


async def test_publisher_filters_on_the_wire_for_xsub(pyzmq: PyzmqPeers) -> None:
    # A pyzmq SUB filters again locally; an XSUB does not, so only what we sent arrives.
    with trio.fail_after(TIMEOUT):
        async with PubSocket() as pub:
            endpoint = await pub.bind(LOCALHOST)
            xsub = pyzmq.socket(zmq.XSUB)
            xsub.connect(endpoint.url)
            await pyzmq.send(xsub, [b"\x01top"])
            await wait_until(lambda: len(pub.peers) == 1 and peer_subscriptions(pub) == {b"top"})
            for topic in [b"top1", b"other", b"to", b"top2"]:
                pub.publish_nowait([topic, b"."])
            assert await pyzmq.receive(xsub) == [b"top1", b"."]
            assert await pyzmq.receive(xsub) == [b"top2", b"."]
            await pyzmq.assert_nothing(xsub, 0.02)


async def test_on_subscribe_is_called_per_subscriber_and_can_welcome(pyzmq: PyzmqPeers) -> None:
    calls: list[tuple[Peer, bytes]] = []

    def welcome(peer: Peer, topic: bytes) -> None:
        calls.append((peer, topic))
        assert pub.publish_nowait([b"welcome", b"%d" % len(calls)], to=peer) == 1

    with trio.fail_after(TIMEOUT):
        async with PubSocket(on_subscribe=welcome) as pub:
            endpoint = await pub.bind(LOCALHOST)
            subs = []
            for n in (1, 2):
                sub = pyzmq.socket(zmq.SUB)
                sub.subscribe(b"")
                sub.connect(endpoint.url)
                subs.append(sub)
                await wait_until(lambda: len(calls) == n)  # noqa: B023
            assert [topic for _, topic in calls] == [b"", b""]
            assert calls[0][0] is not calls[1][0]
            assert await pyzmq.receive(subs[0]) == [b"welcome", b"1"]
            assert await pyzmq.receive(subs[1]) == [b"welcome", b"2"]
            await pyzmq.assert_nothing(subs[0], 0.02)


async def test_our_sub_counts_subscriptions_on_our_pub() -> None:
    # Subscriptions are counted (RFC 37): two SUBSCRIBE "a" need two CANCEL "a".
    with trio.fail_after(TIMEOUT):
        async with PubSocket() as pub, SubSocket() as sub:
            endpoint = await pub.bind(LOCALHOST)
            await sub.connect(endpoint.url)
            await sub.subscribe(b"a")
            await sub.subscribe(b"a")
            await wait_until(lambda: bool(pub.peers) and pub.peers[0].subscriptions[b"a"] == 2)
            await sub.unsubscribe(b"a")
            await wait_until(lambda: pub.peers[0].subscriptions[b"a"] == 1)
            assert pub.publish_nowait([b"ab", b"still"]) == 1
            assert await sub.receive() == [b"ab", b"still"]
            await sub.unsubscribe(b"a")
            await wait_until(lambda: b"a" not in pub.peers[0].subscriptions)
            assert pub.publish_nowait([b"ab", b"gone"]) == 0


# ---- our SUB with pyzmq PUB / XPUB ----------------------------------------------


async def receive_after_slow_join(
    pyzmq: PyzmqPeers, pub: zmq.Socket[bytes], sub: SubSocket
) -> None:
    """Publish a marker until ``sub`` receives it: the subscription has arrived."""
    async with trio.open_nursery() as nursery:

        async def keep_publishing() -> None:
            while True:
                await pyzmq.send(pub, [b"t-ready"])
                await trio.sleep(0.01)

        nursery.start_soon(keep_publishing)
        assert await sub.receive() == [b"t-ready"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("minor", [0, 1], ids=["greet-3.0", "greet-3.1"])
@pytest.mark.parametrize("kind", [zmq.PUB, zmq.XPUB], ids=["PUB", "XPUB"])
async def test_our_sub_with_pyzmq_publisher(pyzmq: PyzmqPeers, kind: int, minor: int) -> None:
    pub = pyzmq.socket(kind)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    with trio.fail_after(TIMEOUT):
        async with SubSocket(minor=minor) as sub:
            await sub.connect(f"tcp://127.0.0.1:{port}")
            await sub.subscribe(b"t")
            if kind == zmq.XPUB:
                assert await pyzmq.receive(pub) == [b"\x01t"]
            await receive_after_slow_join(pyzmq, pub, sub)
            for frames in [[b"u", b"1"], [b"t1", b"2"], [b"x"], [b"tt", b"", b"3"], [b"t-end"]]:
                await pyzmq.send(pub, frames)
            received = []
            while (frames := await sub.receive()) != [b"t-end"]:
                if frames != [b"t-ready"]:
                    received.append(frames)
            assert received == [[b"t1", b"2"], [b"tt", b"", b"3"]]
            await sub.unsubscribe(b"t")
            if kind == zmq.XPUB:
                assert await pyzmq.receive(pub) == [b"\x00t"]


async def test_our_sub_sends_earlier_subscriptions_after_the_handshake(
    pyzmq: PyzmqPeers,
) -> None:
    xpub = pyzmq.socket(zmq.XPUB)
    port = xpub.bind_to_random_port("tcp://127.0.0.1")
    with trio.fail_after(TIMEOUT):
        async with SubSocket() as sub:
            await sub.subscribe(b"early")
            await sub.subscribe(b"")
            await sub.connect(f"tcp://127.0.0.1:{port}")
            received = {(await pyzmq.receive(xpub))[0] for _ in range(2)}
            assert received == {b"\x01early", b"\x01"}


# ---- REQ / REP and DEALER -> ROUTER ---------------------------------------------


async def test_pyzmq_req_to_our_rep(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RepSocket() as rep:
            endpoint = await rep.bind(LOCALHOST)
            req = pyzmq.socket(zmq.REQ)
            req.connect(endpoint.url)
            for n in range(5):
                await pyzmq.send(req, [b"ping", b"%d" % n])
                reply_to, body = await rep.receive()
                assert body == [b"ping", b"%d" % n]
                assert reply_to[1] == [b""]
                assert rep.send_nowait(reply_to, [b"pong", b"%d" % n])
                assert await pyzmq.receive(req) == [b"pong", b"%d" % n]


async def test_rep_echoes_a_longer_envelope(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RepSocket() as rep:
            endpoint = await rep.bind(LOCALHOST)
            dealer = pyzmq.socket(zmq.DEALER)
            dealer.connect(endpoint.url)
            await pyzmq.send(dealer, [b"hop1", b"hop2", b"", b"body"])
            reply_to, body = await rep.receive()
            assert body == [b"body"]
            rep.send_nowait(reply_to, [b"reply"])
            assert await pyzmq.receive(dealer) == [b"hop1", b"hop2", b"", b"reply"]


async def test_our_req_to_pyzmq_rep(pyzmq: PyzmqPeers) -> None:
    rep = pyzmq.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    with trio.fail_after(TIMEOUT):
        async with ReqSocket() as req:
            await req.connect(f"tcp://127.0.0.1:{port}")
            for n in range(5):
                await req.send([b"hello", b"%d" % n])
                assert await pyzmq.receive(rep) == [b"hello", b"%d" % n]
                await pyzmq.send(rep, [b"world", b"%d" % n])
                assert await req.receive() == [b"world", b"%d" % n]


@pytest.mark.parametrize("identity", [b"ours", b""], ids=["identity", "anonymous"])
async def test_our_dealer_to_pyzmq_router(pyzmq: PyzmqPeers, identity: bytes) -> None:
    router = pyzmq.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    with trio.fail_after(TIMEOUT):
        async with DealerSocket(identity=identity) as dealer:
            await dealer.connect(f"tcp://127.0.0.1:{port}")
            await dealer.send([b"a", b"", b"b"])
            routing_id, *frames = await pyzmq.receive(router)
            assert frames == [b"a", b"", b"b"]
            if identity:
                assert routing_id == identity
            else:
                assert len(routing_id) == 5 and routing_id[0] == 0
            await pyzmq.send(router, [routing_id, b"reply"])
            assert await dealer.receive() == [b"reply"]


# ---- wire details: PING inside a message, big frames ----------------------------


async def test_ping_between_frames_gets_pong_and_message_stays_whole() -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            endpoint = await router.bind(LOCALHOST)
            raw = await RawPeer.connect(endpoint.port)
            await raw.handshake(identity=b"raw")
            ping = command(b"PING", b"\x00\x00" + b"ctx")
            await raw.stream.send_all(frame(b"a", more=True) + ping + frame(b"b"))
            assert await router.receive() == [b"raw", b"a", b"b"]
            assert await raw.receive_exactly(len(command(b"PONG", b"ctx"))) == command(
                b"PONG", b"ctx"
            )
            router.send_nowait([b"raw", b"c"])
            assert await raw.receive_exactly(3) == frame(b"c")
            await raw.stream.aclose()


async def echo_through_router(
    pyzmq: PyzmqPeers, frames: list[bytes], *, ours: bool = False
) -> list[bytes]:
    """Send ``frames`` from a DEALER to our ROUTER, which echoes them back."""
    async with RouterSocket() as router:
        endpoint = await router.bind(LOCALHOST)
        if ours:
            async with DealerSocket() as dealer:
                await dealer.connect(endpoint.url)
                await dealer.send(frames)
                router.send_nowait(await router.receive())
                return await dealer.receive()
        zdealer = pyzmq.socket(zmq.DEALER)
        zdealer.connect(endpoint.url)
        await pyzmq.send(zdealer, frames)
        router.send_nowait(await router.receive())
        return await pyzmq.receive(zdealer)


@pytest.mark.parametrize("ours", [False, True], ids=["pyzmq-dealer", "our-dealer"])
@pytest.mark.parametrize("size", [0, 255, 256, MiB])
async def test_frame_sizes_round_trip(pyzmq: PyzmqPeers, size: int, ours: bool) -> None:
    frames = [payload(size), b"", payload(size)[::-1], b"end"]
    with trio.fail_after(TIMEOUT):
        assert await echo_through_router(pyzmq, frames, ours=ours) == frames


async def test_100_mib_frame_round_trip(pyzmq: PyzmqPeers) -> None:
    frames = [b"head", payload(100 * MiB)]
    with trio.fail_after(30):
        echoed = await echo_through_router(pyzmq, frames)
    assert len(echoed) == 2 and echoed[0] == b"head"
    assert len(echoed[1]) == 100 * MiB and echoed[1] == frames[1]


# ---- hostile and broken peers ---------------------------------------------------


async def assert_round_trip(router: RouterSocket, pyzmq: PyzmqPeers, dealer: zmq.Socket[bytes]):
    await pyzmq.send(dealer, [b"still there?"])
    routing_id, body = await router.receive()
    assert body == b"still there?"
    router.send_nowait([routing_id, b"yes"])
    assert await pyzmq.receive(dealer) == [b"yes"]


async def test_peer_gone_mid_frame_does_not_disturb_others(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            dealer = await open_router_and_dealer(router, pyzmq)
            await assert_round_trip(router, pyzmq, dealer)
            raw = await RawPeer.connect(router.endpoints[0].port)
            await raw.handshake()
            await wait_until(lambda: router.statistics().peers == 2)
            header = b"\x03" + MiB.to_bytes(8, "big")  # MORE + LONG, 1 MiB announced
            await raw.stream.send_all(frame(b"first", more=True) + header + b"x" * 1000)
            await raw.stream.aclose()
            await wait_until(lambda: router.statistics().peers == 1)
            await assert_round_trip(router, pyzmq, dealer)


async def test_peer_resetting_the_connection_does_not_disturb_others(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            dealer = await open_router_and_dealer(router, pyzmq)
            raw = await RawPeer.connect(router.endpoints[0].port)
            await raw.handshake()
            await wait_until(lambda: router.statistics().peers == 2)
            linger_0 = struct.pack("ii", 1, 0)  # close with RST instead of FIN
            raw.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_0)
            await raw.stream.aclose()
            await wait_until(lambda: router.statistics().peers == 1)
            await assert_round_trip(router, pyzmq, dealer)


@pytest.mark.parametrize(
    ("garbage", "reason"),
    [
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", None),
        (greeting()[:10] + b"\x01", None),
        (greeting(mechanism=b"PLAIN"), None),  # not our mechanism: an ERROR would not be understood
        (greeting() + b"\x00\x00", b"expected READY"),
        (greeting() + ready(b"PUB"), b"invalid socket type"),
        (greeting() + ready(b"DEALER", b"") + b"\xf0\x00", None),
        (
            greeting() + ready(b"DEALER") + b"\x02" + (1 << 40).to_bytes(8, "big"),
            b"frame too large",
        ),
    ],
    ids=[
        "http",
        "zmtp-1",
        "PLAIN",
        "data-before-READY",
        "PUB-peer",
        "reserved-flags",
        "1-TiB-frame",
    ],
)
async def test_garbage_peer_is_closed_others_unaffected(
    pyzmq: PyzmqPeers, garbage: bytes, reason: bytes | None
) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            dealer = await open_router_and_dealer(router, pyzmq)
            await assert_round_trip(router, pyzmq, dealer)
            raw = await RawPeer.connect(router.endpoints[0].port)
            await raw.stream.send_all(garbage + b"\x00" * 10)
            received = await raw.receive_until_closed()
            if reason is None:
                assert b"\x05ERROR" not in received
            else:  # the greeting was valid, so the socket says why before closing
                assert received.endswith(command(b"ERROR", bytes([len(reason)]) + reason))
            await assert_round_trip(router, pyzmq, dealer)
            assert router.statistics().peers == 1


async def test_silent_peer_is_closed_after_handshake_timeout() -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket(handshake_timeout=0.3) as router:
            endpoint = await router.bind(LOCALHOST)
            raw = await RawPeer.connect(endpoint.port)
            start = trio.current_time()
            # Our greeting and READY come at once, without waiting for the peer's (§8.1).
            await raw.receive_greeting_and_ready()
            assert router.statistics().pending_handshakes == 1
            assert await raw.receive_until_closed() == b""
            assert 0.25 < trio.current_time() - start < 3
            assert router.statistics().pending_handshakes == 0


async def test_too_many_silent_peers_are_refused(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket(max_pending=3, handshake_timeout=TIMEOUT) as router:
            dealer = await open_router_and_dealer(router, pyzmq)
            await assert_round_trip(router, pyzmq, dealer)
            port = router.endpoints[0].port
            # A burst, connected before the accept loop runs: the limit must still hold.
            raws = [RawPeer.connect_now(port) for _ in range(6)]
            outcomes = []
            for raw in raws:
                try:
                    await raw.receive_exactly(64)
                    outcomes.append("greeted")
                except (EOFError, trio.BrokenResourceError):
                    outcomes.append("refused")  # closed at once, without a greeting
            assert outcomes.count("greeted") == 3
            assert router.statistics().pending_handshakes == 3
            await assert_round_trip(router, pyzmq, dealer)
            for raw in raws:
                await raw.stream.aclose()


# ---- slow subscribers -----------------------------------------------------------


async def test_stalled_subscriber_does_not_slow_a_reading_one(pyzmq: PyzmqPeers) -> None:
    count, size, window = 800, 64 * 1024, 32  # ~52 MB published
    with trio.fail_after(30):
        async with PubSocket(hwm=64) as pub:
            endpoint = await pub.bind(LOCALHOST)
            stalled = pyzmq.socket(zmq.SUB, rcvhwm=2, rcvbuf=4096)
            reader = pyzmq.socket(zmq.SUB)
            for n, sub in enumerate((stalled, reader), 1):
                sub.subscribe(b"")
                sub.connect(endpoint.url)
                await wait_until(lambda: sum(bool(p.subscriptions) for p in pub.peers) == n)  # noqa: B023
            stalled_peer, reader_peer = pub.peers
            received: list[int] = []

            async def read() -> None:
                while len(received) < count:
                    topic, body = await pyzmq.receive(reader)
                    assert len(body) == size
                    received.append(int(topic))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                body = payload(size)
                for n in range(count):
                    # Stay `window` messages ahead of the reader: its queue never fills.
                    await wait_until(lambda: n - len(received) < window)  # noqa: B023
                    pub.publish_nowait([b"%d" % n, body])
            assert received == list(range(count))
            stats = pub.statistics()
            assert stats.messages_dropped > 0
            assert list(stats.dropped_by_peer) == [repr(stalled_peer)]
            assert reader_peer.dropped == 0


# ---- closing --------------------------------------------------------------------


async def test_aclose_ends_every_peer_task_and_closes_connections(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            dealers = [await open_router_and_dealer(router, pyzmq)]
            for _ in range(2):
                dealers.append(pyzmq.socket(zmq.DEALER))
                dealers[-1].connect(router.endpoints[0].url)
            for dealer in dealers:
                await assert_round_trip(router, pyzmq, dealer)
            silent = await RawPeer.connect(router.endpoints[0].port)  # still in its handshake
            await wait_until(lambda: router.statistics().pending_handshakes == 1)
            sockets = [peer.stream.socket for peer in router.peers]  # type: ignore[attr-defined]
            assert len(sockets) == 3 and all(s.fileno() >= 0 for s in sockets)
            await router.aclose()
            with trio.fail_after(1):  # promptly, before the block ends
                await wait_until(
                    lambda: not router.peers and all(s.fileno() == -1 for s in sockets)
                )
                assert (await silent.receive_until_closed()).startswith(b"\xff")  # greeting, EOF
                with pytest.raises(trio.EndOfChannel):
                    await router.receive()
            assert router.statistics().pending_handshakes == 0
        with pytest.raises(OSError):
            await trio.open_tcp_stream("127.0.0.1", router.endpoints[0].port)


async def test_messages_queued_by_a_dealer_arrive_right_after_the_handshake(
    pyzmq: PyzmqPeers,
) -> None:
    # libzmq queues while nothing listens and flushes after READY (spec §5.1, §8.11).
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            endpoint = await router.bind(LOCALHOST)
            listener_port = endpoint.port
        dealer = pyzmq.socket(zmq.DEALER, identity=b"early")
        dealer.connect(f"tcp://127.0.0.1:{listener_port}")
        for n in range(3):
            await pyzmq.send(dealer, [b"%d" % n])
        async with RouterSocket() as router:
            await router.bind(f"tcp://127.0.0.1:{listener_port}")
            assert [await router.receive() for _ in range(3)] == [
                [b"early", b"%d" % n] for n in range(3)
            ]


def test_small_messages_pass_while_a_big_one_is_in_flight() -> None:
    # The byte cap must not drop an idle status behind a 100 MB display that a
    # healthy client is still reading; a second big message over the cap is dropped.
    from trikernel.zmtp.codec import Connection
    from trikernel.zmtp.sockets import Peer

    a, _ = trio.testing.memory_stream_pair()
    peer = Peer(1, a, Connection("XPUB"), hwm=1000, hwm_bytes=1 << 20)
    assert peer.send_nowait([b"x" * (1 << 20)])  # the first message always fits
    assert peer.send_nowait([b"s" * 1024])  # small: only the message count limits it
    assert not peer.send_nowait([b"y" * 2048])  # big, and over the byte cap
    assert peer.dropped == 1
    for _ in range(998):  # up to hwm = 1000 queued messages
        assert peer.send_nowait([b"s"])
    assert not peer.send_nowait([b"s"])  # the message count still holds


def test_writer_joins_small_pieces_and_passes_big_ones_through() -> None:
    from trikernel.zmtp.codec import PASS_THROUGH_SIZE
    from trikernel.zmtp.codec import coalesce as _coalesce

    big = bytearray(PASS_THROUGH_SIZE)
    out = _coalesce([b"a", b"b", big, b"c", big, b"d", b"e"])
    assert out == [b"ab", big, b"c", big, b"de"]
    assert out[1] is big and out[3] is big  # not copied
    assert _coalesce([b"only"]) == [b"only"]


async def test_writer_keeps_order_of_big_and_small_messages() -> None:
    from trikernel.zmtp.codec import PASS_THROUGH_SIZE, Connection, encode_frames
    from trikernel.zmtp.sockets import Peer

    ours, theirs = trio.testing.memory_stream_pair()
    peer = Peer(1, ours, Connection("XPUB"), hwm=100)
    big = bytearray(b"B" * (3 * PASS_THROUGH_SIZE))
    messages = [[b"a"], [bytes(big)], [b"b", b"c"], [big, b"tail"], [b"z"]]
    expected = b"".join(bytes(p) for m in messages for p in encode_frames(m))
    for m in messages:
        assert peer.send_nowait(encode_frames(m))
    received = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.write_loop)
        with trio.fail_after(5):
            while len(received) < len(expected):
                received += await theirs.receive_some()
        peer.close_queue()
    assert received == expected
    assert peer.queued_bytes == 0 and peer.flushed
