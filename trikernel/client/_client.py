"""A trio-native Jupyter client over trikernel's own ZMTP (DEALER/SUB/REQ).

Used by the self-test and the tests, and usable on its own::

    async with open_client(info) as client:
        await client.wait_for_ready()
        result = await client.execute("print('hi'); 1 + 1")
        result.reply.content["status"], [m.msg_type for m in result.outputs]
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ..connection import ConnectionInfo
from ..errors import RemoteProtocolError
from ..messages import Message, Signer, new_header, new_id, parse, serialize
from ..zmtp.sockets import DealerSocket, ReqSocket, SubSocket

__all__ = ["KernelClient", "ExecuteResult", "open_client"]

InputHandler = Callable[[str, bool], Awaitable[str]]


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


class KernelClient:
    def __init__(self, info: ConnectionInfo, *, session: str | None = None) -> None:
        self.info = info
        self.session = session or new_id()
        self.signer = Signer(info.key.encode(), info.signature_scheme)
        ident = self.session.encode()
        self.shell = DealerSocket(identity=ident)
        self.control = DealerSocket(identity=ident)
        self.stdin = DealerSocket(identity=ident)
        self.iopub = SubSocket()
        self.hb = ReqSocket()
        self.input_handler: InputHandler | None = None
        self.iopub_log: list[Message] = []
        self._replies: dict[str, trio.MemorySendChannel[Message]] = {}
        self._pending: dict[str, trio.MemoryReceiveChannel[Message]] = {}
        self._outputs: dict[str, list[Message]] = defaultdict(list)
        self._idle: dict[str, trio.Event] = defaultdict(trio.Event)
        self._iopub_seen = trio.Event()
        self._hb_lock = trio.Lock()

    # ---- plumbing -------------------------------------------------------

    async def _connect(self, nursery: trio.Nursery) -> None:
        await self.iopub.connect(self.info.url("iopub"))
        await self.iopub.subscribe(b"")
        for name in ("shell", "control", "stdin", "hb"):
            await getattr(self, name).connect(self.info.url(name))
        nursery.start_soon(self._reply_reader, self.shell)
        nursery.start_soon(self._reply_reader, self.control)
        nursery.start_soon(self._iopub_reader)
        nursery.start_soon(self._stdin_reader)

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

    async def _iopub_reader(self) -> None:
        while True:
            msg = self._parse(await self.iopub.receive())
            if msg is None:
                continue
            self.iopub_log.append(msg)
            self._iopub_seen.set()
            parent_id = msg.parent_header.get("msg_id")
            if parent_id is None:
                continue
            if msg.msg_type == "status":
                if msg.content.get("execution_state") == "idle":
                    self._idle[parent_id].set()
            else:
                self._outputs[parent_id].append(msg)

    async def _stdin_reader(self) -> None:
        while True:
            request = self._parse(await self.stdin.receive())
            if request is None or request.msg_type != "input_request":
                continue
            handler = self.input_handler
            value = (
                ""
                if handler is None
                else await handler(request.content["prompt"], request.content["password"])
            )
            await self._send(self.stdin, "input_reply", {"value": value}, parent=request)

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
        send, receive = trio.open_memory_channel[Message](1)
        with trio.fail_after(timeout):
            msg = Message(new_header(msg_type, self.session), {}, {}, content or {})
            self._replies[msg.msg_id] = send
            await socket.send(serialize(msg, self.signer))
            return await receive.receive()

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
        send, receive = trio.open_memory_channel[Message](1)
        with trio.fail_after(timeout):
            msg = Message(new_header("execute_request", self.session), {}, {}, content)
            self._replies[msg.msg_id] = send
            idle = self._idle[msg.msg_id]
            await self.shell.send(serialize(msg, self.signer))
            reply = await receive.receive()
            await idle.wait()
        del self._idle[msg.msg_id]
        return ExecuteResult(reply, self._outputs.pop(msg.msg_id, []))

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
        with trio.fail_after(timeout):
            reply = await self._pending[msg_id].receive()
        del self._pending[msg_id]
        return reply

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
    info: ConnectionInfo, *, session: str | None = None
) -> AsyncIterator[KernelClient]:
    client = KernelClient(info, session=session)
    async with client.shell, client.control, client.stdin, client.iopub, client.hb:
        async with trio.open_nursery() as nursery:
            await client._connect(nursery)
            yield client
            nursery.cancel_scope.cancel()
