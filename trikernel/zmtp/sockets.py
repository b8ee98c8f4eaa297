"""ZMTP sockets on trio: ROUTER, PUB/XPUB, REP (bound by the kernel) and
DEALER, SUB, REQ (connected by clients).

Theory of operation
-------------------
A socket is an async context manager that owns a nursery. ``bind`` starts an
accept loop in it; ``connect`` opens one connection and returns once the
handshake is done. Every connection runs the same shape (``_run_peer``):
send our greeting and READY at once, read until the peer's READY (bounded by
``handshake_timeout``; at most ``max_pending`` handshakes at a time), register
the peer, then loop: drain codec events -> ``receive_some`` -> ``receive_data``.
One writer task per peer owns the stream's sending side and is fed by a bounded
memory channel of already-encoded messages, so

* messages are queued as wire pieces (``encode_frames``); the writer joins the
  small ones of several queued messages into one ``send_all`` and writes big
  bodies as they are, without copying them;
* server sockets never block their caller: ``send_nowait``/``publish_nowait``
  drop the whole message for a peer whose queue is full (libzmq's high-water
  mark: ``hwm`` messages, or, for messages bigger than ``hwm_bytes / 1024``,
  ``hwm_bytes`` bytes beyond the first message) and count it in ``statistics()``;
* a peer that breaks the protocol or disconnects is closed and logged; the
  socket and its other peers go on.

Incoming messages of all peers go into one bounded channel read by
``receive()``; when the application does not read, peers are backpressured.
"""

from __future__ import annotations

import logging
import random
import socket as stdlib_socket
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import trio

from ..errors import RemoteProtocolError
from .codec import NEED_DATA, Buffer, Connection, coalesce, encode_frames
from .events import Cancel, ConnectionClosed, Error, Message, Ping, Pong, Ready, Subscribe
from .transport import Endpoint, connect, open_listener, parse_url

__all__ = [
    "Peer",
    "SocketStatistics",
    "RouterSocket",
    "PubSocket",
    "RepSocket",
    "DealerSocket",
    "SubSocket",
    "ReqSocket",
]

log = logging.getLogger("trikernel.zmtp")

RECEIVE_SIZE = 1 << 16
BATCH_BYTES = 1 << 20
# Greeting, then READY (a command: at most 1 MiB, codec._MAX_COMMAND_SIZE), read in
# RECEIVE_SIZE chunks: a peer that sent more without completing its READY is not
# handshaking, and must not make us buffer up to the frame size limit.
HANDSHAKE_BYTES = 64 + 9 + (1 << 20) + RECEIVE_SIZE


@dataclass(frozen=True)
class SocketStatistics:
    peers: int
    pending_handshakes: int
    messages_dropped: int  # at a peer's high-water mark, or unroutable
    dropped_by_peer: dict[str, int]


class Peer:
    """One established connection: its codec, stream and send queue."""

    def __init__(
        self,
        number: int,
        stream: trio.abc.Stream,
        conn: Connection,
        hwm: int,
        hwm_bytes: int = 1 << 62,
    ) -> None:
        self.number = number
        self.stream = stream
        self.conn = conn
        self.routing_id = b""
        self.ready: Ready | None = None
        self.subscriptions: Counter[bytes] = Counter()
        self.dropped = 0
        self.cancel_scope = trio.CancelScope()
        self.writing = False
        self.hwm_bytes = hwm_bytes
        self.queued_bytes = 0  # queued or being written
        self._queue_send, self._queue_receive = trio.open_memory_channel[list[Buffer]](hwm)

    def __repr__(self) -> str:
        return f"<Peer #{self.number} {self.ready.socket_type if self.ready else '?'} id={self.routing_id!r}>"

    def send_nowait(self, data: list[Buffer]) -> bool:
        """Queue a message's wire pieces; False (and counted) if the queue is full (``hwm``
        messages, or ``hwm_bytes`` with at least one message queued) or closed.

        Small messages (at most ``hwm_bytes / 1024``) are held back by the message
        count only: a status or a print must not be lost because a big display is
        still being written to a client that reads at full speed. Memory per peer
        stays below about twice ``hwm_bytes``."""
        size = _wire_size(data)
        big = size > self.hwm_bytes >> 10
        if big and self.queued_bytes and self.queued_bytes + size > self.hwm_bytes:
            self.dropped += 1
            return False
        try:
            self._queue_send.send_nowait(data)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1
            return False
        self.queued_bytes += size
        return True

    async def send(self, data: list[Buffer]) -> None:
        """Queue a message's wire pieces, waiting for room (client sockets)."""
        size = _wire_size(data)
        self.queued_bytes += size
        try:
            await self._queue_send.send(data)
        except BaseException:
            self.queued_bytes -= size
            raise

    def subscribed(self, topic: bytes) -> bool:
        subs = self.subscriptions
        if b"" in subs:
            return True
        return any(topic.startswith(prefix) for prefix in subs)

    async def write_loop(self) -> None:
        # The single writer of this stream; batches what is already queued.
        with self._queue_receive:
            async for data in self._queue_receive:
                batch = list(data)
                size = _wire_size(data)
                while size < BATCH_BYTES:
                    try:
                        more = self._queue_receive.receive_nowait()
                    except (trio.WouldBlock, trio.EndOfChannel):  # closed: the peer is gone
                        break
                    batch += more
                    size += _wire_size(more)
                self.writing = True
                for piece in coalesce(batch):
                    await self.stream.send_all(piece)
                self.writing = False
                self.queued_bytes -= size

    @property
    def flushed(self) -> bool:
        return not self.writing and self._queue_send.statistics().current_buffer_used == 0

    def close_queue(self) -> None:
        self._queue_send.close()


def _wire_size(pieces: list[Buffer]) -> int:
    return sum(len(piece) for piece in pieces)


def _unread(conn: Connection) -> int:
    """Bytes of an incomplete frame or message the codec holds (0 at a boundary)."""
    return len(conn._buffer) + conn._parts_size


# What ends one peer and not the socket (handled in _Socket._run_peer).
_PEER_ERRORS = (RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError)


def _peer_error(group: BaseExceptionGroup) -> BaseException:
    """What a peer's reader/writer nursery raised, for _run_peer: the peer's own
    failure unwrapped (a protocol error first, for its ERROR hint) or, if there is
    anything else (cancellation, a bug), the rest of the group as it is."""
    ended, other = group.split(_PEER_ERRORS)
    if other is not None or ended is None:
        return other or group
    exc: BaseException = (ended.subgroup(RemoteProtocolError) or ended).exceptions[0]
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


class _Socket:
    socket_type = ""

    def __init__(
        self,
        *,
        identity: bytes = b"",
        minor: int = 1,
        hwm: int = 1000,
        hwm_bytes: int = 1 << 26,
        incoming_buffer: int = 1000,
        handshake_timeout: float = 10.0,
        max_pending: int = 64,
        max_frame_size: int = 1 << 30,
        max_message_size: int = 1 << 30,
        max_message_frames: int = 1 << 16,
    ) -> None:
        self.identity = identity
        self.minor = minor
        self.hwm = hwm
        self.hwm_bytes = hwm_bytes
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self._limits = dict(
            max_frame_size=max_frame_size,
            max_message_size=max_message_size,
            max_message_frames=max_message_frames,
        )
        self._incoming_send, self._incoming = trio.open_memory_channel[Any](incoming_buffer)
        self.peers: list[Peer] = []
        self.endpoints: list[Endpoint] = []
        self._pending = 0
        self._refused = 0  # connections refused since the pending limit was reached
        self._peer_count = 0
        self._dropped = 0
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: Any = None

    # ---- lifecycle -----------------------------------------------------

    async def __aenter__(self) -> Self:
        self._nursery_manager = trio.open_nursery()
        self._nursery = await self._nursery_manager.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        self._incoming_send.close()
        return await self._nursery_manager.__aexit__(exc_type, exc, tb)

    async def aclose(self) -> None:
        """End every peer task and listener (the ``async with`` block then exits)."""
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
        self._incoming_send.close()

    @property
    def _tasks(self) -> trio.Nursery:
        if self._nursery is None:
            raise RuntimeError("use the socket in an 'async with' block first")
        return self._nursery

    async def bind(self, url: str, *, sock: stdlib_socket.socket | None = None) -> Endpoint:
        """Listen on ``tcp://IP:PORT`` or ``ipc://PATH`` (or adopt ``sock``, a listening
        socket already bound there); returns the real endpoint."""
        listener, endpoint = await open_listener(parse_url(url), sock=sock)
        self.endpoints.append(endpoint)
        self._tasks.start_soon(self._accept_loop, listener)
        return endpoint

    async def connect(self, url: str) -> Peer:
        """Connect and complete the handshake (OSError / RemoteProtocolError on failure)."""
        stream = await connect(parse_url(url))
        self._pending += 1  # see _accept_loop
        peer: Peer = await self._tasks.start(self._run_peer, stream, True)
        return peer

    async def flush(self, timeout: float = 1.0) -> bool:
        """Wait (at most ``timeout``) until every peer's queue is written out, like
        ZMQ_LINGER before a close. True if everything was flushed."""
        with trio.move_on_after(timeout):
            while not all(peer.flushed for peer in self.peers):
                await trio.sleep(0.005)
            return True
        return False

    def statistics(self) -> SocketStatistics:
        return SocketStatistics(
            peers=len(self.peers),
            pending_handshakes=self._pending,
            messages_dropped=self._dropped + sum(p.dropped for p in self.peers),
            dropped_by_peer={repr(p): p.dropped for p in self.peers if p.dropped},
        )

    # ---- per-connection task -------------------------------------------

    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        async with listener:
            while True:
                stream = await listener.accept()
                if self._pending >= self.max_pending:
                    if not self._refused:
                        log.warning(
                            "%s: %d connections have not completed their handshake; refusing "
                            "new connections until they do or time out (%g s)",
                            self.socket_type,
                            self._pending,
                            self.handshake_timeout,
                        )
                    self._refused += 1
                    await stream.aclose()
                    continue
                # Counted here, not when the task starts: a burst of connections is
                # accepted before any new task runs, and must not overshoot the limit.
                # _serve_peer uncounts it when the handshake ends.
                self._pending += 1
                self._tasks.start_soon(self._run_peer, stream, False)

    async def _run_peer(
        self,
        stream: trio.abc.Stream,
        raise_errors: bool,
        task_status: Any = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._peer_count += 1
        conn = Connection(
            self.socket_type, identity=self.identity, minor=self.minor, **self._limits
        )
        peer = Peer(self._peer_count, stream, conn, self.hwm, self.hwm_bytes)
        try:
            async with stream:
                try:
                    with peer.cancel_scope:
                        await self._serve_peer(peer, task_status)
                except RemoteProtocolError as exc:
                    # The text may quote the peer (its Socket-Type): escaped, so that
                    # a newline in it cannot forge log lines.
                    text = str(exc).encode("unicode_escape").decode("ascii")
                    log.warning("%s: closing %r: %s", self.socket_type, peer, text)
                    await self._send_error(peer, exc.hint)
                    if raise_errors and peer.ready is None:
                        raise
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.debug("%s: %r gone: %r", self.socket_type, peer, exc)
            if raise_errors and peer.ready is None:
                raise
        finally:
            if peer in self.peers:
                self.peers.remove(peer)
                self._detach(peer)
        if raise_errors and peer.ready is None:
            raise trio.BrokenResourceError(f"{self.socket_type}: peer closed during the handshake")

    async def _serve_peer(self, peer: Peer, task_status: Any) -> None:
        try:
            await peer.stream.send_all(peer.conn.initiate())
            with trio.move_on_after(self.handshake_timeout):
                peer.ready = await self._handshake(peer)
        finally:
            self._pending -= 1
            if self._refused and self._pending < self.max_pending:
                log.warning(
                    "%s: accepting connections again (%d refused)", self.socket_type, self._refused
                )
                self._refused = 0
        if peer.ready is None:
            log.info("%s: %r: no handshake (closed or timed out)", self.socket_type, peer)
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.write_loop)
                self.peers.append(peer)
                self._attach(peer)
                task_status.started(peer)
                try:
                    await self._read_loop(peer)
                finally:
                    peer.close_queue()
                    nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The nursery wraps even a single error in a group, which _run_peer's
            # except clauses would miss: a reset or a protocol error would end the
            # whole socket instead of this peer.
            raise _peer_error(group) from None

    async def _handshake(self, peer: Peer) -> Ready | None:
        received = 0
        while True:
            event = peer.conn.next_event()
            if event is NEED_DATA:
                data = await peer.stream.receive_some(RECEIVE_SIZE)
                received += len(data)
                if received > HANDSHAKE_BYTES:
                    raise RemoteProtocolError(
                        f"sent {received} bytes without completing its READY",
                        hint="expected READY",
                    )
                peer.conn.receive_data(data)
            elif isinstance(event, Ready):
                return event
            elif isinstance(event, Error):
                log.warning("%s: peer refused the handshake: %r", self.socket_type, event.reason)
                return None
            elif isinstance(event, ConnectionClosed):
                if received:  # a port probe sends nothing; a broken peer sends part of it
                    log.warning(
                        "%s: %r closed the connection after %d bytes, before its handshake "
                        "completed",
                        self.socket_type,
                        peer,
                        received,
                    )
                return None

    async def _read_loop(self, peer: Peer) -> None:
        conn = peer.conn
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                conn.receive_data(await peer.stream.receive_some(RECEIVE_SIZE))
            elif isinstance(event, Message):
                await self._on_message(peer, event.frames)
            elif isinstance(event, Ping):
                peer.send_nowait([conn.send(Pong(event.context))])
            elif isinstance(event, Subscribe):
                self._on_subscribe(peer, event.topic)
            elif isinstance(event, Cancel):
                self._on_cancel(peer, event.topic)
            elif isinstance(event, Error):
                log.warning("%s: %r sent ERROR %r", self.socket_type, peer, event.reason)
                return
            elif isinstance(event, ConnectionClosed):
                unread = _unread(conn)
                if unread:
                    log.warning(
                        "%s: %r closed the connection in the middle of a message "
                        "(%d bytes discarded)",
                        self.socket_type,
                        peer,
                        unread,
                    )
                return

    async def _send_error(self, peer: Peer, hint: str | None) -> None:
        if hint is None or peer.ready is None and peer.conn.peer_minor is None:
            return
        with trio.move_on_after(1):
            try:
                await peer.stream.send_all(peer.conn.send(Error(hint.encode()[:255])))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    # ---- behaviour per socket type (overridden) -------------------------

    def _attach(self, peer: Peer) -> None:
        pass

    def _detach(self, peer: Peer) -> None:
        pass

    async def _on_message(self, peer: Peer, frames: list[bytes]) -> None:
        await self._incoming_send.send(frames)

    def _on_subscribe(self, peer: Peer, topic: bytes) -> None:
        pass  # only publishers care

    def _on_cancel(self, peer: Peer, topic: bytes) -> None:
        pass

    async def receive(self) -> Any:
        """The next incoming message (trio.EndOfChannel once the socket is closed)."""
        return await self._incoming.receive()


class RouterSocket(_Socket):
    """ROUTER: ``receive()`` gives ``[routing_id, *frames]``; ``send_nowait([routing_id,
    *frames])`` routes by the first frame (never sent on the wire). The routing id is the
    peer's Identity, else a generated ``00`` + 4-byte counter; a second connection with the
    same Identity takes it over (ROUTER_HANDOVER). Unknown ids are dropped and counted."""

    socket_type = "ROUTER"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._routes: dict[bytes, Peer] = {}
        self._next_id = random.getrandbits(32)

    def _attach(self, peer: Peer) -> None:
        assert peer.ready is not None
        routing_id = peer.ready.identity
        if not routing_id:
            self._next_id = (self._next_id + 1) & 0xFFFFFFFF
            routing_id = b"\x00" + struct.pack(">I", self._next_id)
        old = self._routes.get(routing_id)
        if old is not None:
            log.info("ROUTER: %r takes over identity %r from %r", peer, routing_id, old)
            old.cancel_scope.cancel()
        peer.routing_id = routing_id
        self._routes[routing_id] = peer

    def _detach(self, peer: Peer) -> None:
        if self._routes.get(peer.routing_id) is peer:
            del self._routes[peer.routing_id]

    async def _on_message(self, peer: Peer, frames: list[bytes]) -> None:
        frames.insert(0, peer.routing_id)
        await self._incoming_send.send(frames)

    def send_nowait(self, frames: Sequence[Buffer]) -> bool:
        """Route ``frames[1:]`` to the peer named by ``frames[0]``; False if dropped."""
        peer = self._routes.get(bytes(frames[0]))
        if peer is None:
            self._dropped += 1
            return False
        return peer.send_nowait(encode_frames(frames[1:]))


SubscribeHook = Callable[[Peer, bytes], None]


class PubSocket(_Socket):
    """PUB/XPUB: ``publish_nowait(frames)`` goes to every peer with a subscription that is
    a prefix of ``frames[0]``; a peer whose queue is full loses that message only. As XPUB
    (the default) ``on_subscribe(peer, topic)`` is called for every new subscription, after
    it is registered, so the hook can ``publish_nowait(..., to=peer)`` a welcome."""

    socket_type = "XPUB"

    def __init__(
        self,
        *,
        xpub: bool = True,
        on_subscribe: SubscribeHook | None = None,
        max_subscriptions: int = 256,
        max_subscription_bytes: int = 1 << 16,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.socket_type = "XPUB" if xpub else "PUB"
        self.on_subscribe = on_subscribe
        # Per peer: every distinct topic is kept, and matched against every message.
        self.max_subscriptions = max_subscriptions
        self.max_subscription_bytes = max_subscription_bytes

    def _on_subscribe(self, peer: Peer, topic: bytes) -> None:
        subs = peer.subscriptions
        if topic not in subs and (
            len(subs) >= self.max_subscriptions
            or sum(map(len, subs)) + len(topic) > self.max_subscription_bytes
        ):
            raise RemoteProtocolError(
                f"more than {self.max_subscriptions} subscriptions or "
                f"{self.max_subscription_bytes} bytes of topics",
                hint="too many subscriptions",
            )
        subs[topic] += 1
        if self.on_subscribe is not None:
            self.on_subscribe(peer, topic)

    def _on_cancel(self, peer: Peer, topic: bytes) -> None:
        if peer.subscriptions[topic] > 1:
            peer.subscriptions[topic] -= 1
        else:
            peer.subscriptions.pop(topic, None)

    async def _on_message(self, peer: Peer, frames: list[bytes]) -> None:
        pass  # data to a publisher means nothing (subscriptions are decoded by the codec)

    def publish_nowait(self, frames: Sequence[Buffer], *, to: Peer | None = None) -> int:
        """Queue ``frames`` for matching subscribers (or only ``to``); returns how many."""
        topic = bytes(frames[0])
        data: list[Buffer] | None = None
        delivered = 0
        for peer in [to] if to is not None else self.peers:
            if peer.subscribed(topic):
                if data is None:
                    data = encode_frames(frames)
                delivered += peer.send_nowait(data)
        return delivered


class RepSocket(_Socket):
    """REP: ``receive()`` gives ``(reply_to, body)``; ``send_nowait(reply_to, body)`` answers
    with the request's envelope (everything up to the first empty frame) put back."""

    socket_type = "REP"

    async def _on_message(self, peer: Peer, frames: list[bytes]) -> None:
        try:
            split = frames.index(b"") + 1
        except ValueError:
            log.warning("REP: %r sent a message without an envelope delimiter; dropped", peer)
            return
        await self._incoming_send.send(((peer, frames[:split]), frames[split:]))

    def send_nowait(self, reply_to: tuple[Peer, list[bytes]], body: Sequence[Buffer]) -> bool:
        peer, envelope = reply_to
        if peer not in self.peers:
            self._dropped += 1
            return False
        return peer.send_nowait(encode_frames([*envelope, *body]))


class _ClientSocket(_Socket):
    """Client sockets send with backpressure, round robin over connected peers."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._turn = 0

    async def _send_frames(self, frames: Sequence[Buffer]) -> None:
        if not self.peers:
            raise trio.BrokenResourceError(f"{self.socket_type}: no connected peer")
        self._turn = (self._turn + 1) % len(self.peers)
        await self.peers[self._turn].send(encode_frames(frames))


class DealerSocket(_ClientSocket):
    socket_type = "DEALER"

    async def send(self, frames: Sequence[Buffer]) -> None:
        await self._send_frames(frames)


class ReqSocket(_ClientSocket):
    """REQ: ``send(frames)`` adds the empty delimiter; ``receive()`` strips the envelope."""

    socket_type = "REQ"

    async def send(self, frames: Sequence[Buffer]) -> None:
        await self._send_frames([b"", *frames])

    async def _on_message(self, peer: Peer, frames: list[bytes]) -> None:
        if not frames or frames[0] != b"":
            log.warning("REQ: reply without an empty delimiter from %r; dropped", peer)
            return
        await self._incoming_send.send(frames[1:])


class SubSocket(_ClientSocket):
    """SUB: subscriptions are sent to every peer (and again to peers that connect later);
    incoming messages are filtered here as well, as libzmq does."""

    socket_type = "SUB"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._topics: Counter[bytes] = Counter()

    async def subscribe(self, topic: bytes = b"") -> None:
        self._topics[topic] += 1
        for peer in list(self.peers):
            await peer.send([peer.conn.send(Subscribe(topic))])

    async def unsubscribe(self, topic: bytes) -> None:
        if not self._topics[topic]:
            return
        self._topics[topic] -= 1
        if not self._topics[topic]:
            del self._topics[topic]
        for peer in list(self.peers):
            await peer.send([peer.conn.send(Cancel(topic))])

    def _attach(self, peer: Peer) -> None:
        for topic, count in self._topics.items():
            for _ in range(count):
                peer.send_nowait([peer.conn.send(Subscribe(topic))])

    async def _on_message(self, peer: Peer, frames: list[bytes]) -> None:
        topic = frames[0]
        if b"" in self._topics or any(topic.startswith(t) for t in self._topics):
            await self._incoming_send.send(frames)
