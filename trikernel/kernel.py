"""The kernel: five ZMTP sockets and the tasks that serve them, in one nursery.

Theory of operation
-------------------
``Kernel.run`` binds heartbeat (REP), shell, control, stdin (ROUTER) and iopub
(XPUB), reports the real ports through ``task_status.started``, and runs:

* heartbeat: echo every ping, independent of everything else;
* shell reader: parse and verify, then queue on the shell FIFO (numbered, so a
  failed cell can abort exactly the execute_requests received before it failed);
* executor: ``handlers.dispatch`` of each shell request, one at a time, in order;
* control reader: ``handlers.dispatch`` at once (interrupt, shutdown,
  kernel_info), even mid-cell;
* stdin reader: hands ``input_reply`` messages to ``stdin.Stdin``;
* the evaluator, started in the background (kernel_info is answered while it
  starts) and replaced if its context ever fails.

What a request means is ``handlers``'s business; this module never looks at a
msg_type. Publishing is synchronous (``iopub.IOPub``): the evaluator's outputs
are on their way to the clients before its reply returns, and the reply goes
before ``idle``, so idle never overtakes the last print.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio

from ._bytes import Buffer
from .cells.replies import error_content
from .connection import CHANNELS, ConnectionInfo
from .errors import EvaluatorDied, LocalProtocolError, RemoteProtocolError
from .evaluator_api import Evaluator, EvaluatorFactory, InputCallback, Output, OutputSink
from .handlers import ABORTING_SHELL_HANDLERS, CONTROL_HANDLERS, SHELL_HANDLERS, dispatch
from .iopub import IOPub
from .messages import Message, ReplayGuard, Signer, new_header, new_id, parse, serialize
from .stdin import Stdin
from .zmtp.sockets import RepSocket, RouterSocket, _Socket

if TYPE_CHECKING:
    from .bridge.spawn import Spawned

__all__ = ["Kernel", "EvaluatorFactory"]

log = logging.getLogger("trikernel.kernel")

RESTART_PAUSE = 1.0  # an evaluator that failed this soon after starting: wait before the next


def _subprocess_evaluator(
    sink: OutputSink, grace_period: float | None = None, prespawned: Spawned | None = None
) -> AbstractAsyncContextManager[Evaluator]:
    from .bridge import open_subprocess_evaluator

    options: dict[str, Any] = {} if grace_period is None else {"grace_period": grace_period}
    return open_subprocess_evaluator(sink, prespawned=prespawned, **options)


class _Attached:
    """The current evaluator, as handlers call it: every call runs in a cancel scope
    that ends (an ``EvaluatorDied`` error reply) if the evaluator's context fails
    while the call waits in it, so no request waits for an evaluator that is gone."""

    def __init__(self, inner: Evaluator) -> None:
        self.inner = inner
        self._calls: set[trio.CancelScope] = set()
        self._failed = ""

    def fail(self, why: str) -> None:
        self._failed = why
        for scope in self._calls:
            scope.cancel()

    async def _call(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        with trio.CancelScope() as scope:
            self._calls.add(scope)
            try:
                return await fn(*args)
            finally:
                self._calls.discard(scope)
        raise EvaluatorDied(f"the evaluator failed while answering this request ({self._failed})")

    @property
    def execution_count(self) -> int:
        return self.inner.execution_count

    async def execute(self, request: Any, request_input: InputCallback | None) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = await self._call(self.inner.execute, request, request_input)
        except EvaluatorDied as exc:
            return error_content(
                "EvaluatorDied",
                f"{exc}; the namespace was reset",
                execution_count=self.inner.execution_count,
            )
        return reply

    def interrupt(self) -> None:
        self.inner.interrupt()

    async def request(self, msg_type: str, content: dict[str, Any], parent: Any) -> dict[str, Any]:
        try:
            reply: dict[str, Any] = await self._call(self.inner.request, msg_type, content, parent)
        except EvaluatorDied as exc:
            return error_content("EvaluatorDied", str(exc))
        return reply

    async def send_comm(
        self, msg_type: str, content: dict[str, Any], buffers: Any, parent: Any
    ) -> None:
        try:
            await self._call(self.inner.send_comm, msg_type, content, buffers, parent)
        except EvaluatorDied:
            log.warning("a %s was lost with the evaluator", msg_type)

    async def aclose(self) -> None:
        await self.inner.aclose()


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
        self.restart_requested = False
        self._evaluator_factory: EvaluatorFactory = evaluator_factory or functools.partial(
            _subprocess_evaluator, grace_period=interrupt_grace, prespawned=prespawned_evaluator
        )
        self._handle_signals = handle_signals
        # Listening sockets bound before trio was imported (launch.py), by channel.
        self._prebound = dict(prebound or {})
        self._parent_pid = parent_pid
        self._limits = dict(max_frame_size=max_frame_size, max_message_size=max_frame_size)
        self._replay = ReplayGuard()
        self._shell_send, self._shell_receive = trio.open_memory_channel[tuple[int, Message]](1000)
        self._shell_received = 0  # shell requests queued so far (their numbers)
        self._abort_through = 0  # execute_requests numbered up to this are aborted
        self._evaluator: Evaluator | None = None
        self._evaluator_ready = trio.Event()
        self._evaluator_error: BaseException | None = None
        self._shutdown = trio.Event()

    # ---- lifecycle -----------------------------------------------------

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self.shell = RouterSocket(**self._limits)
        self.control = RouterSocket(**self._limits)
        small: dict[str, Any] = dict(max_frame_size=1 << 16, max_message_size=1 << 16)
        # 256 MiB of big outputs may wait for one subscriber (a healthy client still
        # reading a 100 MB display must not lose the next one); stalled ones drop.
        self.iopub = IOPub(self.session, self.signer, hwm_bytes=1 << 28, **small)
        self.stdin = Stdin(RouterSocket(**self._limits), self.session, self.signer)
        self.hb = RepSocket(hwm_bytes=1 << 20, **small)  # pings are tiny; unread ones cost this
        sockets: dict[str, _Socket] = {
            "shell": self.shell,
            "control": self.control,
            "stdin": self.stdin.socket,
            "iopub": self.iopub.socket,
            "hb": self.hb,
        }
        async with self.shell, self.control, self.stdin.socket, self.iopub.socket, self.hb:
            ports = {}
            for name in CHANNELS:
                prebound = self._prebound.pop(name, None)
                endpoint = await sockets[name].bind(self.info.url(name), sock=prebound)
                ports[f"{name}_port"] = (
                    endpoint.port if self.info.transport == "tcp" else self.info.port(name)
                )
            self.info = self.info.with_ports(**ports)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._heartbeat)
                nursery.start_soon(self._read_loop, self.shell, self._queue_shell, "shell")
                nursery.start_soon(self._read_loop, self.control, self._handle_control, "control")
                nursery.start_soon(self._read_loop, self.stdin.socket, self._to_stdin, "stdin")
                nursery.start_soon(self._executor)
                nursery.start_soon(self._run_evaluator)
                if self._handle_signals:
                    nursery.start_soon(self._signal_watcher)
                if self._parent_pid:
                    nursery.start_soon(self._parent_watcher, self._parent_pid)
                self.iopub.status("starting", None)
                task_status.started(self.info)
                await self._shutdown.wait()
                if self._evaluator is not None:
                    # Stop it politely while every task still runs (its last output
                    # still gets published); cancellation below is the fallback.
                    with trio.move_on_after(5):
                        await self._evaluator.aclose()
                await self.iopub.flush(1.0)
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

    # ---- the evaluator --------------------------------------------------------

    async def _run_evaluator(self) -> None:
        """Open the evaluator; whenever its context fails later (outside a cell or
        in one), publish a notice and open a new one, as the bridge does for a
        process that dies. One that cannot be opened at all is reported to every
        request (``get_evaluator``)."""
        while True:
            started = None
            try:
                async with self._evaluator_factory(self._publish_output) as evaluator:
                    started = trio.current_time()
                    attached = self._evaluator = _Attached(evaluator)
                    self._evaluator_ready.set()
                    await trio.sleep_forever()
            except Exception as exc:  # a broken evaluator must not take the kernel down
                self._evaluator_ready = trio.Event()  # before clearing: see get_evaluator
                if started is not None:
                    attached.fail(_one_line(exc))
                self._evaluator = None
                if started is None:
                    log.exception("the evaluator could not be started")
                    self._evaluator_error = exc
                    self._evaluator_ready.set()
                    return
                log.exception("the evaluator failed; starting a new one")
                text = (
                    f"trikernel: the evaluator failed ({_one_line(exc)}); a new evaluator "
                    "was started, the namespace was reset (all variables are gone).\n"
                )
                self.iopub.publish("stream", {"name": "stderr", "text": text}, None)
                if trio.current_time() - started < RESTART_PAUSE:
                    await trio.sleep(RESTART_PAUSE)  # not a tight loop of failures

    async def get_evaluator(self) -> Evaluator:
        """The current evaluator, once started (waits through a replacement).

        Raises:
            EvaluatorDied: it could not be started.
        """
        while True:
            ready = self._evaluator_ready
            await ready.wait()
            if self._evaluator is not None:
                return self._evaluator
            if self._evaluator_error is not None:
                error = _one_line(self._evaluator_error)
                raise EvaluatorDied(f"the evaluator could not be started: {error}")

    @property
    def execution_count(self) -> int:
        return self._evaluator.execution_count if self._evaluator is not None else 0

    def _publish_output(self, output: Output) -> None:
        try:
            self.iopub.publish_output(output)
        except LocalProtocolError as exc:  # from a custom evaluator; the subprocess checks
            log.warning("dropped a %s output: %s", output.msg_type, exc)

    # ---- the context handlers see -------------------------------------------

    def publish(
        self, msg_type: str, content: dict[str, Any] | Buffer, parent: Message | None
    ) -> None:
        self.iopub.publish(msg_type, content, parent)

    def input_callback(self, request: Message) -> InputCallback:
        return self.stdin.input_callback(request)

    def abort_queued(self) -> None:
        self._abort_through = self._shell_received

    # ---- incoming ----------------------------------------------------------

    async def _read_loop(
        self, socket: RouterSocket, handle: Callable[[Message], Awaitable[None]], name: str
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
        self._shell_received += 1
        await self._shell_send.send((self._shell_received, msg))

    async def _to_stdin(self, msg: Message) -> None:
        self.stdin.deliver(msg)

    async def _executor(self) -> None:
        respond = functools.partial(self._send_reply, self.shell)
        async for number, msg in self._shell_receive:
            aborting = number <= self._abort_through
            table = ABORTING_SHELL_HANDLERS if aborting else SHELL_HANDLERS
            await dispatch(self, msg, table, respond)

    async def _handle_control(self, msg: Message) -> None:
        await dispatch(
            self, msg, CONTROL_HANDLERS, functools.partial(self._send_reply, self.control)
        )

    def _send_reply(
        self,
        socket: RouterSocket,
        request: Message,
        content: dict[str, Any],
        metadata: dict[str, Any],
    ) -> None:
        msg_type = request.msg_type.replace("_request", "_reply")
        reply = Message(
            header=new_header(msg_type, self.session),
            parent_header=request.header,
            metadata=metadata,
            content=content,
            identities=request.identities,
        )
        try:
            frames = serialize(reply, self.signer)
        except LocalProtocolError as exc:
            # The client waits for this reply: an error reply that says why, not silence.
            log.warning("could not encode the %s: %s", msg_type, _one_line(exc))
            frames = serialize(self._unencodable(reply, exc), self.signer)
        if not socket.send_nowait(frames):
            log.warning("could not deliver %s (client gone or not reading)", msg_type)

    def _unencodable(self, reply: Message, exc: LocalProtocolError) -> Message:
        count = reply.content.get("execution_count")
        extra: dict[str, Any] = {"execution_count": count} if isinstance(count, int) else {}
        evalue = f"the {reply.msg_type} could not be encoded: {exc}"
        content = error_content(type(exc).__name__, evalue, **extra)
        metadata = {"status": "error"} if "status" in reply.metadata else {}
        return dataclasses.replace(reply, content=content, metadata=metadata)

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
