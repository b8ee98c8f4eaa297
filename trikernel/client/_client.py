"""A trio-native Jupyter client over trikernel's own ZMTP (DEALER/SUB/REQ).

Used by the self-test and the tests, and usable on its own::

    async with open_client(info) as client:
        await client.wait_for_ready()
        result = await client.execute("print('hi'); 1 + 1")
        result.reply.content["status"], [m.msg_type for m in result.outputs]
"""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import trio

from ..connection import ConnectionInfo
from ..errors import KernelDied, RemoteProtocolError
from ..messages import Message, Signer, new_header, new_id, parse, serialize
from ..zmtp.sockets import DealerSocket, ReqSocket, SubSocket

__all__ = ["KernelClient", "KernelRestarted", "ExecuteResult", "open_client"]

InputHandler = Callable[[str, bool], Awaitable[str]]
IOPUB_LOG_SIZE = 10_000  # the newest iopub messages, for inspection (bounded)
CONNECT_RETRY = 0.05


@dataclass
class ExecuteResult:
    reply: Message
    outputs: list[Message] = field(default_factory=list)  # iopub, busy/idle excluded

    @property
    def status(self) -> str:
        return str(self.reply.content.get("status"))

    def stdout(self) -> str:
        return "".join(
            m.content["text"]
            for m in self.outputs
            if m.msg_type == "stream" and m.content["name"] == "stdout"
        )

    def of_type(self, msg_type: str) -> list[Message]:
        return [m for m in self.outputs if m.msg_type == msg_type]


class KernelRestarted(KernelDied):
    """The kernel was restarted (or the client reconnected) while a request waited."""


class KernelClient:
    """Five channels to one kernel, over trikernel's ZMTP.

    The sockets belong to one *connection*, run as a task in the client's nursery;
    ``reconnect(info)`` replaces it (after a restart, possibly on new ports) while the
    session, the subscribers and ``input_handler`` stay. Requests still waiting for a
    reply then fail with :class:`KernelRestarted`.
    """

    def __init__(self, info: ConnectionInfo, *, session: str | None = None) -> None:
        self.info = info
        self.session = session or new_id()
        self.signer = Signer(info.key.encode(), info.signature_scheme)
        self.input_handler: InputHandler | None = None
        self.execution_state = "unknown"  # from iopub status messages, any parent
        self.iopub_log: deque[Message] = deque(maxlen=IOPUB_LOG_SIZE)
        self._channels: _Channels | None = None
        self._nursery: trio.Nursery | None = None
        self._subscribers: list[_Subscriber] = []
        self._replies: dict[str, trio.MemorySendChannel[Message]] = {}
        self._pending: dict[str, trio.MemoryReceiveChannel[Message]] = {}
        self._outputs: dict[str, list[Message]] = defaultdict(list)
        self._idle: dict[str, trio.Event] = defaultdict(trio.Event)
        self._iopub_seen = trio.Event()
        self._hb_lock = trio.Lock()

    # ---- the current connection's sockets -------------------------------

    def _current(self) -> _Channels:
        if self._channels is None:
            raise trio.ClosedResourceError("the client is not connected")
        return self._channels

    @property
    def shell(self) -> DealerSocket:
        return self._current().shell

    @property
    def control(self) -> DealerSocket:
        return self._current().control

    @property
    def stdin(self) -> DealerSocket:
        return self._current().stdin

    @property
    def iopub(self) -> SubSocket:
        return self._current().iopub

    @property
    def hb(self) -> ReqSocket:
        return self._current().hb

    # ---- plumbing -------------------------------------------------------

    async def _run_connection(
        self,
        info: ConnectionInfo,
        connect_timeout: float,
        task_status: trio.TaskStatus[_Channels] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        ident = self.session.encode()
        channels = _Channels(
            DealerSocket(identity=ident),
            DealerSocket(identity=ident),
            DealerSocket(identity=ident),
            SubSocket(),
            ReqSocket(),
            trio.CancelScope(),
        )
        with channels.scope:
            async with (
                channels.shell,
                channels.control,
                channels.stdin,
                channels.iopub,
                channels.hb,
                trio.open_nursery() as nursery,
            ):
                with trio.fail_after(connect_timeout):
                    await _connect_retrying(channels.iopub, info.url("iopub"))
                    await channels.iopub.subscribe(b"")
                    for name in ("shell", "control", "stdin", "hb"):
                        await _connect_retrying(getattr(channels, name), info.url(name))
                nursery.start_soon(self._reply_reader, channels.shell)
                nursery.start_soon(self._reply_reader, channels.control)
                nursery.start_soon(self._iopub_reader, channels.iopub)
                nursery.start_soon(self._stdin_reader, channels.stdin)
                task_status.started(channels)

    async def reconnect(
        self, info: ConnectionInfo | None = None, *, connect_timeout: float = 10
    ) -> None:
        """Drop the current connection and connect again (to ``info`` if given).

        Requests waiting for a reply fail with :class:`KernelRestarted`; subscribers,
        the session and ``input_handler`` are kept.
        """
        if self._nursery is None:
            raise RuntimeError("use the client inside open_client() first")
        self.disconnect()
        if info is not None:
            self.info = info
            self.signer = Signer(info.key.encode(), info.signature_scheme)
        self._iopub_seen = trio.Event()
        self._channels = await self._nursery.start(self._run_connection, self.info, connect_timeout)

    def disconnect(self) -> None:
        """Close the sockets now; waiting requests fail with :class:`KernelRestarted`."""
        if self._channels is not None:
            self._channels.scope.cancel()
            self._channels = None
        for waiter in self._replies.values():
            waiter.close()
        self._replies.clear()
        for idle in self._idle.values():
            idle.set()

    def _parse(self, frames: list[bytes]) -> Message | None:
        try:
            return parse(frames, self.signer)
        except RemoteProtocolError:
            return None

    async def _reply_reader(self, socket: DealerSocket) -> None:
        while True:
            msg = self._parse(await socket.receive())
            if msg is None:
                continue
            waiter = self._replies.pop(msg.parent_header.get("msg_id", ""), None)
            if waiter is not None:
                waiter.send_nowait(msg)

    async def _iopub_reader(self, socket: SubSocket) -> None:
        while True:
            msg = self._parse(await socket.receive())
            if msg is not None:
                self.deliver_iopub(msg)

    def deliver_iopub(self, msg: Message) -> None:
        """Hand ``msg`` to everything that reads iopub, as if the kernel had sent it.

        The manager uses this for the ``restarting`` and ``dead`` status messages
        (parent ``{}``) that no kernel can send itself, as jupyter_server does.
        """
        self.iopub_log.append(msg)
        self._iopub_seen.set()
        if msg.msg_type == "status":
            self.execution_state = str(msg.content.get("execution_state", "unknown"))
        for subscriber in self._subscribers:
            subscriber.offer(msg)
        parent_id = msg.parent_header.get("msg_id")
        if parent_id is None:
            return
        if msg.msg_type == "status":
            if msg.content.get("execution_state") == "idle" and parent_id in self._idle:
                self._idle[parent_id].set()
        elif parent_id in self._idle:
            self._outputs[parent_id].append(msg)

    @asynccontextmanager
    async def subscribe(
        self, buffer: int = 1000
    ) -> AsyncIterator[trio.MemoryReceiveChannel[Message]]:
        """Every iopub message from now on (injected ones included), in order.

        A subscriber that falls ``buffer`` messages behind loses the newest ones
        (counted in ``dropped`` of the subscriber); the reader never waits for it.
        """
        send, receive = trio.open_memory_channel[Message](buffer)
        subscriber = _Subscriber(send)
        self._subscribers.append(subscriber)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.remove(subscriber)
            send.close()

    async def _stdin_reader(self, socket: DealerSocket) -> None:
        while True:
            request = self._parse(await socket.receive())
            if request is None or request.msg_type != "input_request":
                continue
            handler = self.input_handler
            value = (
                ""
                if handler is None
                else await handler(request.content["prompt"], request.content["password"])
            )
            await self._send(socket, "input_reply", {"value": value}, parent=request)

    async def _send(
        self,
        socket: DealerSocket,
        msg_type: str,
        content: dict[str, Any],
        *,
        parent: Message | None = None,
    ) -> Message:
        msg = Message(
            header=new_header(msg_type, self.session),
            parent_header=parent.header if parent else {},
            metadata={},
            content=content,
        )
        await socket.send(serialize(msg, self.signer))
        return msg

    async def _call(self, socket: DealerSocket, msg: Message, idle: bool = False) -> Message:
        """Send ``msg`` and wait for its reply (and for idle, if asked); the waiter is
        registered before sending and freed whatever happens."""
        send, receive = trio.open_memory_channel[Message](1)
        self._replies[msg.msg_id] = send
        if idle:
            self._idle[msg.msg_id] = trio.Event()
        try:
            await socket.send(serialize(msg, self.signer))
            try:
                reply = await receive.receive()
                if idle:
                    await self._idle[msg.msg_id].wait()
            except trio.EndOfChannel:
                raise KernelRestarted(
                    f"{msg.msg_type}: the kernel restarted before it replied"
                ) from None
            return reply
        finally:
            self._replies.pop(msg.msg_id, None)
            self._idle.pop(msg.msg_id, None)

    # ---- requests -------------------------------------------------------

    async def request(
        self,
        msg_type: str,
        content: dict[str, Any] | None = None,
        *,
        channel: str = "shell",
        timeout: float = 30,
    ) -> Message:
        """Send a request and return its reply (TooSlowError after ``timeout``)."""
        socket = self.control if channel == "control" else self.shell
        msg = Message(new_header(msg_type, self.session), {}, {}, content or {})
        with trio.fail_after(timeout):
            return await self._call(socket, msg)

    async def execute(
        self,
        code: str,
        *,
        timeout: float = 60,
        silent: bool = False,
        store_history: bool = True,
        allow_stdin: bool | None = None,
        stop_on_error: bool = True,
        user_expressions: dict[str, str] | None = None,
    ) -> ExecuteResult:
        """Run ``code``; returns the reply and the iopub outputs once the kernel is idle."""
        content = {
            "code": code,
            "silent": silent,
            "store_history": store_history,
            "user_expressions": user_expressions or {},
            "allow_stdin": self.input_handler is not None if allow_stdin is None else allow_stdin,
            "stop_on_error": stop_on_error,
        }
        msg = Message(new_header("execute_request", self.session), {}, {}, content)
        try:
            with trio.fail_after(timeout):
                reply = await self._call(self.shell, msg, idle=True)
            return ExecuteResult(reply, self._outputs.get(msg.msg_id, []))
        finally:
            self._outputs.pop(msg.msg_id, None)

    async def submit(self, code: str, **content: Any) -> Message:
        """Send an execute_request without waiting; ``await reply_to(msg.msg_id)`` later."""
        body = {"code": code, "silent": False, "store_history": True, "user_expressions": {}}
        body.update(
            {"allow_stdin": self.input_handler is not None, "stop_on_error": True}, **content
        )
        send, receive = trio.open_memory_channel[Message](1)
        msg = Message(new_header("execute_request", self.session), {}, {}, body)
        self._replies[msg.msg_id] = send
        self._pending[msg.msg_id] = receive
        await self.shell.send(serialize(msg, self.signer))
        return msg

    async def reply_to(self, msg_id: str, *, timeout: float = 30) -> Message:
        """The reply to a request sent with ``submit``."""
        try:
            with trio.fail_after(timeout):
                return await self._pending[msg_id].receive()
        except trio.EndOfChannel:
            raise KernelRestarted("the kernel restarted before it replied") from None
        finally:
            self._pending.pop(msg_id, None)
            self._replies.pop(msg_id, None)

    async def kernel_info(self, *, timeout: float = 30) -> Message:
        return await self.request("kernel_info_request", timeout=timeout)

    async def wait_for_ready(self, timeout: float = 30) -> Message:
        """kernel_info until it answers and iopub delivers (the slow-joiner dance)."""
        with trio.fail_after(timeout):
            while True:
                with trio.move_on_after(1):
                    reply = await self.kernel_info()
                    with trio.move_on_after(0.5):
                        await self._iopub_seen.wait()
                        return reply

    async def interrupt(self, *, timeout: float = 10) -> Message:
        return await self.request("interrupt_request", channel="control", timeout=timeout)

    async def shutdown(self, *, restart: bool = False, timeout: float = 10) -> Message:
        return await self.request(
            "shutdown_request", {"restart": restart}, channel="control", timeout=timeout
        )

    async def heartbeat(self, *, timeout: float = 5) -> float:
        """One heartbeat round trip, in seconds."""
        async with self._hb_lock:
            with trio.fail_after(timeout):
                start = time.perf_counter()
                await self.hb.send([b"ping"])
                await self.hb.receive()
                return time.perf_counter() - start


@asynccontextmanager
async def open_client(
    info: ConnectionInfo, *, session: str | None = None, connect_timeout: float = 10
) -> AsyncIterator[KernelClient]:
    """Connect to the kernel at ``info`` (retrying while it does not listen yet, at most
    ``connect_timeout`` seconds); the sockets close when the block exits."""
    client = KernelClient(info, session=session)
    async with trio.open_nursery() as nursery:
        client._nursery = nursery
        client._channels = await nursery.start(client._run_connection, info, connect_timeout)
        try:
            yield client
        finally:
            client.disconnect()
            client._nursery = None
            nursery.cancel_scope.cancel()


class _Channels(NamedTuple):
    shell: DealerSocket
    control: DealerSocket
    stdin: DealerSocket
    iopub: SubSocket
    hb: ReqSocket
    scope: trio.CancelScope


class _Subscriber:
    def __init__(self, send: trio.MemorySendChannel[Message]) -> None:
        self.send = send
        self.dropped = 0

    def offer(self, msg: Message) -> None:
        try:
            self.send.send_nowait(msg)
        except trio.WouldBlock:
            self.dropped += 1
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass


async def _connect_retrying(socket: DealerSocket | SubSocket | ReqSocket, url: str) -> None:
    """Connect, retrying every 50 ms while nothing listens (libzmq retries too); the
    caller bounds the whole with a deadline."""
    while True:
        try:
            await socket.connect(url)
            return
        except OSError:
            await trio.sleep(CONNECT_RETRY)
