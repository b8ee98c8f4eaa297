"""The kernel: five ZMTP sockets and the tasks that serve them, in one nursery.

Theory of operation
-------------------
``Kernel.run`` binds heartbeat (REP), shell, control, stdin (ROUTER) and iopub
(XPUB), reports the real ports through ``task_status.started``, and runs:

* heartbeat: echo every ping, independent of everything else;
* shell reader: parse and verify, then queue on the execution channel;
* executor: handle shell requests one at a time, in arrival order;
* control: answer at once (interrupt, shutdown, kernel_info), even mid-cell;
* stdin reader: hand ``input_reply`` messages to the waiting ``input()``;
* iopub writer: the one task that publishes, fed by a bounded memory channel,
  so every output leaves in the order it was produced;
* the evaluator, started in the background (kernel_info is answered while it
  starts).

Every request is bracketed by ``status: busy``/``idle`` on iopub. Outputs of a
cell reach the iopub channel before the evaluator's reply returns, and the
reply is sent before ``idle``: idle never overtakes the last print.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio

from .connection import ConnectionInfo
from .errors import LocalProtocolError, RemoteProtocolError
from .handlers import CONTROL_HANDLERS, SHELL_HANDLERS, Handler
from .messages import Message, ReplayGuard, Signer, new_header, new_id, parse, serialize
from .zmtp.codec import Buffer
from .zmtp.sockets import Peer, PubSocket, RepSocket, RouterSocket, _Socket

if TYPE_CHECKING:
    from .bridge import Evaluator, InputCallback, OutputCallback
    from .evaluator.spawn import Spawned

__all__ = ["Kernel", "EvaluatorFactory"]

log = logging.getLogger("trikernel.kernel")

EvaluatorFactory = Callable[["OutputCallback"], AbstractAsyncContextManager["Evaluator"]]


def _subprocess_evaluator(
    on_output: OutputCallback, grace_period: float | None = None, prespawned: Spawned | None = None
) -> AbstractAsyncContextManager[Evaluator]:
    from .bridge import open_subprocess_evaluator

    if grace_period is None:
        return open_subprocess_evaluator(on_output, prespawned=prespawned)
    return open_subprocess_evaluator(on_output, grace_period=grace_period, prespawned=prespawned)


_CHANNELS = ("shell", "control", "stdin", "iopub", "hb")


class Kernel:
    """One Jupyter kernel. ``await nursery.start(kernel.run)`` returns the
    ConnectionInfo with the real ports; cancelling it (or shutdown_request)
    closes everything."""

    def __init__(
        self,
        info: ConnectionInfo,
        *,
        evaluator_factory: EvaluatorFactory | None = None,
        handle_signals: bool = False,
        parent_pid: int | None = None,
        max_frame_size: int = 1 << 30,
        prebound: dict[str, socket.socket] | None = None,
        interrupt_grace: float | None = None,
        prespawned_evaluator: Spawned | None = None,
    ) -> None:
        """``interrupt_grace``: seconds an interrupted cell may take to stop before the
        subprocess evaluator is killed and replaced (None: the bridge's default); only
        used with the default evaluator factory."""
        self.info = info
        self.session = new_id()
        self.signer = Signer(info.key.encode(), info.signature_scheme)
        self.execution_count = 0
        self.restart_requested = False
        self._evaluator_factory: EvaluatorFactory = evaluator_factory or (
            lambda on_output: _subprocess_evaluator(
                on_output, interrupt_grace, prespawned_evaluator
            )
        )
        self._handle_signals = handle_signals
        # Listening sockets bound before trio was imported (launch.py), by channel.
        self._prebound = dict(prebound or {})
        self._parent_pid = parent_pid
        self._limits = dict(max_frame_size=max_frame_size, max_message_size=max_frame_size)
        self._replay = ReplayGuard()
        self._iopub_send, self._iopub_receive = trio.open_memory_channel[list[Buffer]](1000)
        self._shell_send, self._shell_receive = trio.open_memory_channel[Message](1000)
        self._input_send, self._input_receive = trio.open_memory_channel[Message](16)
        self._evaluator: Evaluator | None = None
        self._evaluator_ready = trio.Event()
        self._evaluator_error: BaseException | None = None
        self._shutdown = trio.Event()
        self._last_parent: Message | None = None  # parent for outputs between cells
        self._aborting = False

    # ---- lifecycle -----------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.shell = RouterSocket(**self._limits)
        self.control = RouterSocket(**self._limits)
        self.stdin = RouterSocket(**self._limits)
        small: dict[str, Any] = dict(
            max_frame_size=1 << 16, max_message_size=1 << 16
        )  # pings, subscriptions
        # 256 MiB of big outputs may wait for one subscriber (a healthy client still
        # reading a 100 MB display must not lose the next one); stalled ones drop.
        self.iopub = PubSocket(on_subscribe=self._welcome, hwm_bytes=1 << 28, **small)
        self.hb = RepSocket(hwm_bytes=1 << 20, **small)  # pings are tiny; unread ones cost this
        sockets: dict[str, _Socket] = {
            "shell": self.shell,
            "control": self.control,
            "stdin": self.stdin,
            "iopub": self.iopub,
            "hb": self.hb,
        }
        async with self.shell, self.control, self.stdin, self.iopub, self.hb:
            ports = {}
            for name in _CHANNELS:
                prebound = self._prebound.pop(name, None)
                endpoint = await sockets[name].bind(self.info.url(name), sock=prebound)
                ports[f"{name}_port"] = (
                    endpoint.port if self.info.transport == "tcp" else self.info.port(name)
                )
            self.info = self.info.with_ports(**ports)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._iopub_writer)
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._read_loop, self.shell, self._queue_shell, "shell")
                nursery.start_soon(self._read_loop, self.control, self._handle_control, "control")
                nursery.start_soon(self._read_loop, self.stdin, self._queue_input, "stdin")
                nursery.start_soon(self._executor)
                nursery.start_soon(self._run_evaluator)
                if self._handle_signals:
                    nursery.start_soon(self._signal_watcher)
                if self._parent_pid:
                    nursery.start_soon(self._parent_watcher, self._parent_pid)
                await self.publish("status", {"execution_state": "starting"}, None)
                task_status.started(self.info)
                await self._shutdown.wait()
                if self._evaluator is not None:
                    # Stop it politely while every task still runs (its last output
                    # still gets published); cancellation below is the fallback.
                    with trio.move_on_after(5):
                        await self._evaluator.aclose()
                await self._drain_iopub()
                await self.control.flush(1.0)
                await self.shell.flush(0.5)
                nursery.cancel_scope.cancel()

    def request_shutdown(self, restart: bool) -> None:
        self.restart_requested = restart
        self._shutdown.set()

    def interrupt(self) -> None:
        """Cancel the running cell (no-op when none runs)."""
        if self._evaluator is not None:
            self._evaluator.interrupt()

    async def _run_evaluator(self) -> None:
        try:
            async with self._evaluator_factory(self._on_evaluator_output) as evaluator:
                self._evaluator = evaluator
                self._evaluator_ready.set()
                await trio.sleep_forever()
        except Exception as exc:  # a broken evaluator must not take the kernel down
            log.exception("the evaluator could not be started")
            self._evaluator_error = exc
            self._evaluator_ready.set()

    async def get_evaluator(self) -> Evaluator:
        await self._evaluator_ready.wait()
        if self._evaluator is None:
            raise RuntimeError(f"the evaluator could not be started: {self._evaluator_error!r}")
        return self._evaluator

    # ---- iopub -------------------------------------------------------------

    async def publish(
        self,
        msg_type: str,
        content: dict[str, Any] | Buffer,
        parent: Message | None,
        buffers: list[Buffer] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        """Queue one iopub message; the iopub writer sends them in order.

        Big content and buffers are sent without a copy, after this returns: they
        must not change until then (as with zmq's zero-copy sends)."""
        await self._iopub_send.send(
            self._iopub_frames(msg_type, content, parent, buffers, metadata)
        )

    def _iopub_frames(
        self,
        msg_type: str,
        content: dict[str, Any] | Buffer,
        parent: Message | None,
        buffers: list[Buffer] | None,
        metadata: dict[str, Any] | None,
    ) -> list[Buffer]:
        # bytes-like content: wire JSON the evaluator encoded; forwarded, not re-encoded.
        packed = None if isinstance(content, dict) else content
        if msg_type == "stream":
            name = content.get("name", "stdout") if isinstance(content, dict) else "stdout"
            topic = f"stream.{name}"
        elif msg_type in ("display_data", "update_display_data", "clear_output"):
            topic = "display_data"
        elif msg_type.startswith("comm_"):
            topic = "comm"
        else:
            topic = f"kernel.{self.session}.{msg_type}"
        msg = Message(
            header=new_header(msg_type, self.session),
            parent_header=parent.header if parent is not None else {},
            metadata=metadata or {},
            content=content if isinstance(content, dict) else {},
            buffers=list(buffers or []),
            identities=[topic.encode()],
        )
        return serialize(msg, self.signer, packed_content=packed)

    async def _iopub_writer(self) -> None:
        async for frames in self._iopub_receive:
            self.iopub.publish_nowait(frames)

    async def _drain_iopub(self) -> None:
        # Let the writer publish what is queued, then let the peers' queues empty.
        with trio.move_on_after(1.0):
            while self._iopub_send.statistics().current_buffer_used:
                await trio.sleep(0.005)
        await self.iopub.flush(1.0)

    def _welcome(self, peer: Peer, topic: bytes) -> None:
        # Protocol 5.5: every new subscriber gets an iopub_welcome (no parent), sent to
        # it alone, with the subscription as topic (no topic frame for "").
        msg = Message(
            header=new_header("iopub_welcome", self.session),
            parent_header={},
            metadata={},
            content={"subscription": topic.decode("utf-8", "replace")},
            identities=[topic] if topic else [],
        )
        self.iopub.publish_nowait(serialize(msg, self.signer), to=peer)

    async def _on_evaluator_output(
        self,
        msg_type: str,
        content: dict[str, Any] | Buffer,
        buffers: list[Buffer],
        metadata: dict[str, Any] | None = None,
    ) -> None:
        # metadata matters for comm_open: ipywidgets puts its protocol version there.
        await self.publish(msg_type, content, self._last_parent, buffers, metadata)

    # ---- incoming ----------------------------------------------------------

    async def _read_loop(
        self, socket: RouterSocket, handle: Callable[[Message], Any], name: str
    ) -> None:
        while True:
            frames = await socket.receive()
            try:
                msg = parse(frames, self.signer, self._replay)
            except RemoteProtocolError as exc:
                log.warning(
                    "%s: dropped a message from %r: %s",
                    name,
                    frames[0] if frames else b"",
                    _one_line(exc),
                )
                continue
            await handle(msg)

    async def _queue_shell(self, msg: Message) -> None:
        await self._shell_send.send(msg)

    async def _queue_input(self, msg: Message) -> None:
        if msg.msg_type != "input_reply":
            log.warning("stdin: ignoring unexpected %r", msg.msg_type)
            return
        try:
            self._input_send.send_nowait(msg)
        except trio.WouldBlock:
            log.warning("stdin: dropped an input_reply nobody waits for")

    async def _executor(self) -> None:
        async for msg in self._shell_receive:
            await self._dispatch(msg, SHELL_HANDLERS, self.shell)
            if self._aborting:
                await self._abort_queued()

    async def _handle_control(self, msg: Message) -> None:
        await self._dispatch(msg, CONTROL_HANDLERS, self.control)

    async def _dispatch(
        self, msg: Message, handlers: dict[str, Handler], socket: RouterSocket
    ) -> None:
        handler = handlers.get(msg.msg_type)
        await self.publish("status", {"execution_state": "busy"}, msg)
        try:
            if handler is None:
                log.warning("no handler for message type %r; ignored", msg.msg_type)
                return
            if msg.msg_type == "execute_request" or msg.msg_type.startswith("comm_"):
                self._last_parent = msg  # outputs between cells go to the last such request
            try:
                reply = await handler(self, msg)
            except Exception as exc:
                # A failed request gets an error reply rather than silence; the kernel's
                # own bugs are still logged with their traceback.
                log.exception("error while handling %s", msg.msg_type)
                reply = {
                    "status": "error",
                    "ename": type(exc).__name__,
                    "evalue": str(exc),
                    "traceback": [],
                }
            if reply is not None:
                await self._drain_pending_outputs()
                self._send_reply(socket, msg, reply)
                if msg.msg_type == "execute_request":
                    self._note_execute_result(msg, reply)
        finally:
            await self.publish("status", {"execution_state": "idle"}, msg)

    async def _drain_pending_outputs(self) -> None:
        # The iopub writer must have taken every queued output before the reply goes,
        # so a client never sees the reply before the outputs it waits for.
        while self._iopub_send.statistics().current_buffer_used:
            await trio.sleep(0)

    def _send_reply(self, socket: RouterSocket, request: Message, content: dict[str, Any]) -> None:
        msg_type = request.msg_type.replace("_request", "_reply")
        metadata = {"status": content.get("status", "ok")} if msg_type == "execute_reply" else {}
        reply = Message(
            header=new_header(msg_type, self.session),
            parent_header=request.header,
            metadata=metadata,
            content=content,
            identities=request.identities,
        )
        try:
            frames = serialize(reply, self.signer)
        except LocalProtocolError:
            log.exception("could not encode the %s", msg_type)
            return
        if not socket.send_nowait(frames):
            log.warning("could not deliver %s (client gone or not reading)", msg_type)

    def _note_execute_result(self, msg: Message, reply: dict[str, Any]) -> None:
        stop = msg.content.get("stop_on_error", True)
        silent = msg.content.get("silent", False)
        if reply.get("status") == "error" and stop and not silent:
            self._aborting = True

    async def _abort_queued(self) -> None:
        # stop_on_error: execute_requests already queued are answered "aborted" and not
        # run; other requests are handled as usual.
        await trio.sleep(0)  # let the shell reader queue what has already arrived
        try:
            while True:
                msg = self._shell_receive.receive_nowait()
                if msg.msg_type == "execute_request":
                    await self._abort(msg)
                else:
                    await self._dispatch(msg, SHELL_HANDLERS, self.shell)
        except trio.WouldBlock:
            pass
        finally:
            self._aborting = False

    async def _abort(self, msg: Message) -> None:
        await self.publish("status", {"execution_state": "busy"}, msg)
        self._send_reply(
            self.shell, msg, {"status": "aborted", "execution_count": self.execution_count}
        )
        await self.publish("status", {"execution_state": "idle"}, msg)

    # ---- stdin ---------------------------------------------------------------

    def input_callback(self, request: Message) -> InputCallback | None:
        if not request.content.get("allow_stdin", False):
            return None

        async def request_input(prompt: str, password: bool) -> str:
            return await self._request_input(request, prompt, password)

        return request_input

    async def _request_input(self, request: Message, prompt: str, password: bool) -> str:
        # Drop replies left over from an earlier, interrupted input().
        while True:
            try:
                self._input_receive.receive_nowait()
            except trio.WouldBlock:
                break
        msg = Message(
            header=new_header("input_request", self.session),
            parent_header=request.header,
            metadata={},
            content={"prompt": prompt, "password": password},
            identities=request.identities,
        )
        if not self.stdin.send_nowait(serialize(msg, self.signer)):
            raise EOFError("no stdin channel is connected for this client")
        while True:
            reply = await self._input_receive.receive()
            if reply.parent_header.get("msg_id") in (msg.msg_id, None):
                return str(reply.content.get("value", ""))
            log.warning("stdin: input_reply for another request ignored")

    # ---- the other tasks ---------------------------------------------------

    async def _heartbeat(self) -> None:
        while True:
            reply_to, body = await self.hb.receive()
            self.hb.send_nowait(reply_to, body)

    async def _signal_watcher(self) -> None:
        # Signal-mode interrupt: Jupyter sends SIGINT to our process group. It cancels
        # the running cell and never ends the kernel. SIGTERM shuts down cleanly.
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if signum == signal.SIGINT:
                    log.info("SIGINT: interrupting the running cell")
                    self.interrupt()
                else:
                    log.info("SIGTERM: shutting down")
                    self.request_shutdown(False)

    async def _parent_watcher(self, pid: int) -> None:
        # JPY_PARENT_PID: exit when the process that launched us is gone.
        while True:
            await trio.sleep(1.0)
            if not _process_alive(pid):
                log.warning("parent process %d is gone; shutting down", pid)
                self.request_shutdown(False)
                return


def _one_line(exc: BaseException) -> str:
    """An error's text for the log, control characters escaped: it may quote what a
    peer sent, and a newline in it would forge log lines."""
    return str(exc).encode("unicode_escape").decode("ascii")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
