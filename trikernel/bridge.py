"""The kernel's side of the evaluator: spawn it, talk to it, interrupt it, replace it.

Theory of operation
-------------------
``open_subprocess_evaluator(on_output)`` starts ``python -m trikernel.evaluator``
in its own session (so only we signal it) with three private pipes passed by
fd: frames to it, frames from it, and a lifeline whose EOF makes it exit. Its
fd 1 and fd 2 are pipes too: whatever C code, ``os.system`` or subprocesses
write there is forwarded as ``stream`` output.

Per evaluator process (``_Child``) one supervisor task runs, in the bridge's
nursery: a writer task (the only one writing the frame pipe, fed by a memory
channel), two fd readers, and the frame reader. The frame reader awaits
``on_output`` for each output frame in pipe order, so outputs reach the kernel
in the order the evaluator produced them and *before* the reply that follows
them. fd output is not ordered with frames (it is another pipe), except at the
end of a cell: the evaluator writes a marker to fd 1 and 2 before its reply,
and the reader holds the reply until both markers were read (at most
``FD_SYNC_TIMEOUT``), so ``os.system("echo hi")`` arrives before the reply.
Every ``on_output`` call is made under one lock: the kernel never sees two at
once.

``execute`` runs in a cancel scope of its own; ``interrupt()`` cancels it (so
does cancelling the caller). Then, shielded, in the manner of trio's
``run_process(deliver_cancel=...)``:

1. send an ``interrupt`` frame: an awaiting cell is cancelled by the
   evaluator's loop, which acknowledges;
2. no acknowledgement within ``ACK_TIMEOUT`` (now 0: at once, which is what
   makes interrupts as fast as ipykernel's): send SIGINT to the evaluator's
   process group. Its handler raises KeyboardInterrupt in synchronous code and
   cancels the cell's scope when the loop is awaiting, so a SIGINT the frame did
   not need is harmless. Acknowledged but still no reply at half the grace
   period: send SIGINT once more (the cell went back to synchronous code);
3. no reply within ``grace_period``: kill the process group, start a new
   evaluator, say on stderr that the namespace was reset, and return an error
   reply (``EvaluatorRestarted``).

If the evaluator dies on its own (``os._exit``, a segfault, SIGKILL), the
supervisor writes a stderr notice, starts a new evaluator, and a running
``execute`` returns an ``EvaluatorDied`` error reply naming the exit code or
signal. A process that dies before it is ready is not respawned in a loop: the
next call tries once more and raises/returns ``EvaluatorDied``.

execution_count: the bridge remembers the last count the evaluator reported.
A cell lost to a kill or a death still uses up its number (the one the kernel
announced in execute_input) when it stored history, and the next evaluator
starts counting after it, so counts keep increasing across respawns.

``request`` (complete, inspect, history, is_complete, comm_info) is answered
by a task of the evaluator that runs concurrently with an *awaiting* cell; while
a cell runs synchronous code the answer waits until the loop is free. It needs
no cell to be running, and does not wait for the running one.
"""

from __future__ import annotations

import codecs
import functools
import inspect
import itertools
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import trio

from .errors import EvaluatorDied, RemoteProtocolError
from .evaluator.protocol import (
    COMM,
    EXECUTE,
    INPUT_REPLY,
    INPUT_REQUEST,
    INTERRUPT,
    INTERRUPT_ACK,
    NEED_DATA,
    OUTPUT,
    READY,
    REPLY,
    REQUEST,
    RESPONSE,
    SHUTDOWN,
    Buffer,
    Frame,
    FrameDecoder,
    encode_frame,
    sync_marker,
)
from .evaluator.spawn import Spawned, spawn_evaluator

__all__ = [
    "OutputCallback",
    "InputCallback",
    "Evaluator",
    "SubprocessEvaluator",
    "open_subprocess_evaluator",
]

# content is a dict, or bytes-like: JSON the evaluator already encoded for the wire.
OutputCallback = Callable[[str, dict[str, Any] | Buffer, list[Buffer]], Awaitable[None]]
InputCallback = Callable[[str, bool], Awaitable[str]]

# Small frames are read 64 KiB at a time (os.read allocates the size asked for; big
# frames are read into their own buffer instead, see FrameDecoder.read_target).
READ_SIZE = 1 << 16
ACK_TIMEOUT = 0.0  # SIGINT at once: the evaluator's handler also cancels an awaiting cell
FD_SYNC_TIMEOUT = 2.0  # how long a reply waits for the fd 1/2 markers
STARTUP_TIMEOUT = 60.0
EXIT_TIMEOUT = 1.0  # after the frame pipe closes, how long the process may take to exit


class Evaluator(Protocol):
    """What the kernel needs from an evaluator (see ``SubprocessEvaluator``)."""

    async def execute(
        self,
        content: dict[str, Any],
        *,
        request_input: InputCallback | None,
        parent: dict[str, Any] | None = None,
    ) -> dict[str, Any]: ...

    def interrupt(self) -> None: ...

    async def request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]: ...

    async def send_comm(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: Sequence[Buffer],
        *,
        parent: dict[str, Any] | None = None,
    ) -> None: ...

    async def aclose(self) -> None: ...


@asynccontextmanager
async def open_subprocess_evaluator(
    on_output: OutputCallback,
    *,
    grace_period: float = 3.0,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    prespawned: Spawned | None = None,
) -> AsyncIterator[SubprocessEvaluator]:
    """Start an evaluator subprocess; yield it once it is ready; stop it on exit.

    Args:
        on_output: awaited with ``(msg_type, content, buffers)`` for every iopub
            message the evaluator produces, in order. If it also accepts a
            ``metadata`` keyword, it gets the message metadata too (comm_open
            carries the widget protocol version there).
        grace_period: how long an interrupted cell may take to stop before the
            evaluator is killed and replaced.
        prespawned: an evaluator already started with ``evaluator.spawn`` (by
            ``python -m trikernel`` before it imported trio), adopted as the first.
    Raises:
        EvaluatorDied: the evaluator could not be started.
    """
    failed: EvaluatorDied | None = None
    async with trio.open_nursery() as nursery:
        evaluator = SubprocessEvaluator(
            nursery,
            on_output,
            grace_period=grace_period,
            python=python,
            env=env,
            cwd=cwd,
            prespawned=prespawned,
        )
        try:
            try:
                await evaluator.wait_ready()
            except EvaluatorDied as exc:
                failed = exc  # raised below, outside the nursery: not in an ExceptionGroup
            else:
                yield evaluator
        finally:
            # When cancelled, the tasks that would deliver a polite shutdown are gone:
            # go straight to the lifeline and SIGKILL.
            polite = trio.current_effective_deadline() != -math.inf
            with trio.CancelScope(shield=True):
                await evaluator.aclose(polite=polite)
            nursery.cancel_scope.cancel()
    if failed is not None:
        raise failed


class _Call:
    """One request waiting for its response."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.content: dict[str, Any] | None = None
        self.error: str | None = None


class _CellWaiter:
    """The running cell's events, from the frame reader to ``execute``."""

    def __init__(self, cell_id: int, expected_count: int, store_history: bool) -> None:
        self.id = cell_id
        self.expected_count = expected_count
        self.store_history = store_history
        self.send, self.receive = trio.open_memory_channel[tuple[str, Any]](100)

    def post(self, kind: str, value: Any) -> None:
        try:
            self.send.send_nowait((kind, value))
        except trio.WouldBlock:  # nobody reads it any more (escalated): drop
            pass


class _AdoptedProcess:
    """A ``subprocess.Popen`` seen as the parts of ``trio.Process`` the bridge uses:
    the evaluator is started with the standard library (``evaluator.spawn``), the
    first one even before trio is imported, and adopted here."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None and popen.stderr is not None
        self._popen = popen
        self.pid = popen.pid
        # FdStreams of our own copies of the descriptors; the file objects are closed.
        self.stdout = trio.lowlevel.FdStream(os.dup(popen.stdout.fileno()))
        self.stderr = trio.lowlevel.FdStream(os.dup(popen.stderr.fileno()))
        popen.stdout.close()
        popen.stderr.close()

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        if self._popen.poll() is None:
            # A pidfd becomes readable when the process exits (Linux >= 5.3).
            pidfd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        return self._popen.wait()


class _Child:
    """One evaluator process, its pipes and what is waiting on it."""

    def __init__(
        self, process: _AdoptedProcess, to_child: int, from_child: int, lifeline: int, token: str
    ) -> None:
        self.process = process
        self.pid = process.pid
        self.to_child = trio.lowlevel.FdStream(to_child)
        self.from_child = trio.lowlevel.FdStream(from_child)
        self.lifeline: int | None = lifeline
        self.marker = sync_marker(token)
        self.outgoing, self.outgoing_receive = trio.open_memory_channel[list[Buffer]](64)
        self.ready = trio.Event()
        self.settled = trio.Event()  # ready or exited
        self.exited = trio.Event()
        self.death = ""  # "exited with code 3" once it is gone
        self.expected_exit = False  # we stopped or killed it
        self.calls: dict[int, _Call] = {}
        self.cell: _CellWaiter | None = None
        self.fd_seen = [0, 0]
        self.fd_progress = trio.Event()
        self.fd_closed = [trio.Event(), trio.Event()]

    async def send(self, frame: Frame) -> None:
        try:
            await self.outgoing.send(encode_frame(frame))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise EvaluatorDied(f"the evaluator {self.death or 'is gone'}") from None

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close_lifeline(self) -> None:
        if self.lifeline is not None:
            os.close(self.lifeline)
            self.lifeline = None


def _describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


def _error(ename: str, evalue: str, **extra: Any) -> dict[str, Any]:
    return {
        "status": "error",
        **extra,
        "ename": ename,
        "evalue": evalue,
        "traceback": [f"{ename}: {evalue}"],
    }


def _partial_marker_len(data: bytes | bytearray, marker: bytes) -> int:
    """Length of the longest tail of ``data`` that could start a marker."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if data.endswith(marker[:n]):
            return n
    return 0


def _accepts_metadata(callback: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(callback).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "metadata" or p.kind is p.VAR_KEYWORD for p in params)


class SubprocessEvaluator:
    """An evaluator subprocess behind the ``Evaluator`` interface. Use
    ``open_subprocess_evaluator`` to make one."""

    def __init__(
        self,
        nursery: trio.Nursery,
        on_output: OutputCallback,
        *,
        grace_period: float,
        python: str,
        env: dict[str, str] | None,
        cwd: str | None,
        prespawned: Spawned | None = None,
    ) -> None:
        self._nursery = nursery
        self._prespawned = prespawned  # adopted as the first evaluator
        self._on_output = on_output
        self._pass_metadata = _accepts_metadata(on_output)
        self.grace_period = grace_period
        self._python = python
        self._env = env
        self._cwd = cwd
        self._child: _Child | None = None
        self._spawn_lock = trio.Lock()
        self._execute_lock = trio.Lock()
        self._emit_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._cell_scope: trio.CancelScope | None = None
        self._count = 0  # the last execution_count the evaluator reported
        self._closing = False

    # -- public API --------------------------------------------------------------
    @property
    def execution_count(self) -> int:
        """The count of the last cell that stored history (0 before any)."""
        return self._count

    @property
    def pid(self) -> int | None:
        """The current evaluator process id (None between a death and its respawn)."""
        return self._child.pid if self._child is not None else None

    async def wait_ready(self) -> None:
        """Start the evaluator if needed and wait until it answers.

        Raises:
            EvaluatorDied: it exited before it was ready.
        """
        await self._live_child()

    async def execute(
        self,
        content: dict[str, Any],
        *,
        request_input: InputCallback | None,
        parent: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Run one cell; return the execute_reply content.

        Every output of the cell has been awaited through ``on_output`` when this
        returns. ``interrupt()`` (or cancelling the caller) stops the cell; see the
        module docstring for the escalation. ``parent`` is the header, parent_header
        and metadata of the execute_request (see ``evaluator.protocol``).
        """
        async with self._execute_lock:
            scope = self._cell_scope = trio.CancelScope()
            try:
                with scope:
                    child = await self._live_child()
            except EvaluatorDied as exc:
                return _error("EvaluatorDied", str(exc), execution_count=self._count)
            finally:
                self._cell_scope = None
            if scope.cancelled_caught:
                evalue = "interrupted while the evaluator was starting; the cell did not run"
                return _error("KeyboardInterrupt", evalue, execution_count=self._count)
            store = bool(content.get("store_history", True)) and not content.get("silent", False)
            waiter = _CellWaiter(next(self._ids), self._count + 1, store)
            allow_stdin = bool(content.get("allow_stdin", False)) and request_input is not None
            body = {"id": waiter.id, "content": content, "allow_stdin": allow_stdin}
            if parent is not None:
                body["parent"] = parent
            child.cell = waiter
            scope = self._cell_scope = trio.CancelScope()
            try:
                with trio.CancelScope(shield=True):
                    await child.send(Frame(EXECUTE, body))
                try:
                    with scope:
                        return self._finish(await self._wait_reply(child, waiter, request_input))
                except trio.Cancelled:  # the caller was cancelled: stop the cell, then go
                    with trio.CancelScope(shield=True):
                        await self._interrupt_cell(child, waiter)
                    raise
                return self._finish(await self._interrupt_cell(child, waiter))
            except EvaluatorDied as exc:
                return self._finish(self._lost_reply(waiter, "EvaluatorDied", str(exc)))
            finally:
                self._cell_scope = None
                child.cell = None

    def interrupt(self) -> None:
        """Cancel the running cell (no-op when none runs). Sync: safe from anywhere
        in the trio thread."""
        if self._cell_scope is not None:
            self._cell_scope.cancel()

    async def request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """complete/inspect/history/is_complete/comm_info_request -> reply content.

        If the evaluator dies meanwhile, the reply is ``status: error`` with ename
        ``EvaluatorDied``.
        """
        try:
            child = await self._live_child()
        except EvaluatorDied as exc:
            return _error("EvaluatorDied", str(exc))
        call_id = next(self._ids)
        call = child.calls[call_id] = _Call()
        try:
            await child.send(
                Frame(REQUEST, {"id": call_id, "msg_type": msg_type, "content": content})
            )
            await call.done.wait()
        except EvaluatorDied as exc:
            return _error("EvaluatorDied", str(exc))
        finally:
            child.calls.pop(call_id, None)
        if call.content is None:
            return _error("EvaluatorDied", f"the evaluator {call.error}")
        return call.content

    async def send_comm(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: Sequence[Buffer],
        *,
        parent: dict[str, Any] | None = None,
    ) -> None:
        """Deliver a frontend comm_open/comm_msg/comm_close (dropped if the evaluator is dead).

        Returns once the evaluator's comm handlers have run: what they output has
        gone through ``on_output`` by then (so the kernel attributes it to the comm
        message, not to whatever request comes next). ``parent``: the message's
        header, parent_header and metadata; the handlers see them as ipykernel's do.
        """
        call_id = next(self._ids)
        body: dict[str, Any] = {"msg_type": msg_type, "content": content, "id": call_id}
        if parent is not None:
            body["parent"] = parent
        try:
            child = await self._live_child()
        except EvaluatorDied:
            return
        call = child.calls[call_id] = _Call()
        try:
            await child.send(Frame(COMM, body, tuple(bytes(b) for b in buffers)))
            await call.done.wait()
        except EvaluatorDied:
            pass
        finally:
            child.calls.pop(call_id, None)

    async def aclose(self, *, polite: bool = True) -> None:
        """Stop the evaluator: shutdown frame (if ``polite``), then lifeline, then SIGKILL
        to its group."""
        self._closing = True
        self.interrupt()
        with trio.CancelScope(shield=True):
            async with self._spawn_lock:
                child, self._child = self._child, None
            if child is not None:
                await self._stop(child, polite=polite)

    # -- spawning ----------------------------------------------------------------
    async def _live_child(self) -> _Child:
        death = ""
        for _attempt in range(2):
            async with self._spawn_lock:
                if self._closing:
                    raise EvaluatorDied("the evaluator is closed")
                child = self._child
                if child is None or child.exited.is_set():
                    with trio.CancelScope(shield=True):  # never a process without supervisor
                        child = self._child = await self._spawn()
                assert child is not None
            with trio.move_on_after(STARTUP_TIMEOUT):
                await child.settled.wait()
            if child.ready.is_set() and not child.exited.is_set():
                return child
            if not child.settled.is_set():
                await self._stop(child, polite=False)
                child.death = f"did not start within {STARTUP_TIMEOUT:.0f} s"
            death = child.death
        raise EvaluatorDied(f"the evaluator could not be started: it {death}")

    async def _spawn(self) -> _Child:
        spawned, self._prespawned = self._prespawned, None
        if spawned is None:
            spawned = await trio.to_thread.run_sync(
                functools.partial(
                    spawn_evaluator,
                    self._python,
                    execution_count=self._count + 1,
                    env=self._env,
                    cwd=self._cwd,
                )
            )
        process = _AdoptedProcess(spawned.popen)
        child = _Child(
            process, spawned.to_child, spawned.from_child, spawned.lifeline, spawned.token
        )
        await self._nursery.start(self._supervise, child)
        return child

    async def _stop(self, child: _Child, *, polite: bool) -> None:
        """Make ``child`` exit (politely: shutdown frame, grace period) and wait for it.

        Waits on the process itself, not on ``child.exited``: when the kernel is
        cancelled, the supervising task that sets ``exited`` is gone already."""
        child.expected_exit = True
        if polite and not child.exited.is_set():
            try:
                child.outgoing.send_nowait(encode_frame(Frame(SHUTDOWN)))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            child.outgoing.close()
            with trio.move_on_after(self.grace_period):
                await child.process.wait()
        child.close_lifeline()
        if child.process.returncode is None:
            with trio.move_on_after(0.5 if polite else 0):
                await child.process.wait()
        child.signal_group(signal.SIGKILL)  # the leader and whatever it left behind
        await child.process.wait()

    # -- per-child tasks -----------------------------------------------------------
    async def _supervise(self, child: _Child, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_frames, child)
            assert child.process.stdout is not None and child.process.stderr is not None
            nursery.start_soon(self._read_fd, child, child.process.stdout, 0)
            nursery.start_soon(self._read_fd, child, child.process.stderr, 1)
            task_status.started()
            broken = None
            try:
                await self._read_frames(child)
            except RemoteProtocolError as exc:
                broken = f"sent a malformed frame ({exc})"
            # The frame pipe closed: the evaluator exited (or is about to).
            with trio.move_on_after(0 if broken else EXIT_TIMEOUT):
                await child.process.wait()
            if child.process.returncode is None:
                child.signal_group(signal.SIGKILL)
                await child.process.wait()
            with trio.move_on_after(0.2):  # what it wrote to fd 1/2 while dying
                for closed in child.fd_closed:
                    await closed.wait()
            nursery.cancel_scope.cancel()
        child.close_lifeline()
        with trio.CancelScope(shield=True):
            for stream in (
                child.to_child,
                child.from_child,
                child.process.stdout,
                child.process.stderr,
            ):
                if stream is not None:
                    await stream.aclose()
            await self._on_exit(child, broken or _describe_exit(child.process.returncode))

    async def _on_exit(self, child: _Child, death: str) -> None:
        child.death = death
        child.exited.set()
        child.settled.set()
        for call in child.calls.values():
            call.error = death
            call.done.set()
        waiter = child.cell
        if not child.expected_exit and not self._closing and child.ready.is_set():
            if waiter is not None:
                self._use_up_count(waiter)
                notice = f"the evaluator {death} while running this cell"
            else:
                notice = f"the evaluator {death} while idle"
            async with self._spawn_lock:
                if self._child is child:
                    self._child = None
                    await self._emit_stderr(
                        f"trikernel: {notice}; a new evaluator was started, "
                        "the namespace was reset (all variables are gone).\n"
                    )
                    self._child = await self._spawn()
        if waiter is not None:
            waiter.post("died", death)

    async def _write_frames(self, child: _Child) -> None:
        async with child.outgoing_receive:
            async for pieces in child.outgoing_receive:
                try:
                    for piece in pieces:
                        await child.to_child.send_all(piece)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
        await child.to_child.aclose()  # EOF: the evaluator shuts down

    async def _read_frames(self, child: _Child) -> None:
        decoder = FrameDecoder()
        while True:
            frame = decoder.next_frame()
            if frame is NEED_DATA:
                target = decoder.read_target()
                if target is not None:  # a big output: read it where it will stay
                    count = await _read_into(child.from_child, target)
                    if count:
                        decoder.target_filled(count)
                        continue
                    data = b""
                else:
                    try:
                        data = await child.from_child.receive_some(READ_SIZE)
                    except trio.BrokenResourceError:
                        data = b""
                decoder.receive_data(data)
                continue
            if not isinstance(frame, Frame):
                return  # CLOSED
            await self._handle_frame(child, frame)

    async def _handle_frame(self, child: _Child, frame: Frame) -> None:
        body = frame.body
        if frame.kind == OUTPUT:
            buffers = list(frame.buffers)
            # "packed": the content is already wire JSON (first buffer); pass the bytes on.
            content = buffers.pop(0) if body.get("packed") else body["content"]
            await self._emit(body["msg_type"], content, buffers, body.get("metadata"))
        elif frame.kind == REPLY:
            await self._wait_fd_sync(child, body.get("fd_sync", [0, 0]))
            if child.cell is not None and child.cell.id == body["id"]:
                child.cell.post("reply", body["content"])
        elif frame.kind == RESPONSE:
            call = child.calls.get(body["id"])
            if call is not None:
                call.content = body["content"]
                call.done.set()
        elif frame.kind in (INPUT_REQUEST, INTERRUPT_ACK):
            if child.cell is not None and child.cell.id == body["id"]:
                child.cell.post(frame.kind, body)
        elif frame.kind == READY:
            self._count = max(self._count, int(body["execution_count"]) - 1)
            child.ready.set()
            child.settled.set()

    async def _read_fd(self, child: _Child, stream: trio.abc.ReceiveStream, index: int) -> None:
        name = ("stdout", "stderr")[index]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = bytearray()
        marker = child.marker
        while True:
            try:
                chunk = await stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                break
            pending += chunk
            while (at := pending.find(marker)) >= 0:
                await self._emit_text(name, decoder.decode(bytes(pending[:at])))
                del pending[: at + len(marker)]
                child.fd_seen[index] += 1
                progress, child.fd_progress = child.fd_progress, trio.Event()
                progress.set()
            keep = _partial_marker_len(pending, marker)
            await self._emit_text(name, decoder.decode(bytes(pending[: len(pending) - keep])))
            del pending[: len(pending) - keep]
        await self._emit_text(name, decoder.decode(bytes(pending), final=True))
        child.fd_closed[index].set()

    async def _wait_fd_sync(self, child: _Child, targets: list[int]) -> None:
        with trio.move_on_after(FD_SYNC_TIMEOUT):
            while child.fd_seen[0] < targets[0] or child.fd_seen[1] < targets[1]:
                await child.fd_progress.wait()

    # -- output -------------------------------------------------------------------
    async def _emit(
        self,
        msg_type: str,
        content: dict[str, Any] | Buffer,
        buffers: list[Buffer],
        metadata: Any = None,
    ) -> None:
        async with self._emit_lock:
            if self._pass_metadata:
                await self._on_output(msg_type, content, buffers, metadata=metadata or {})  # type: ignore[call-arg]
            else:
                await self._on_output(msg_type, content, buffers)

    async def _emit_text(self, name: str, text: str) -> None:
        if text:
            await self._emit("stream", {"name": name, "text": text}, [])

    async def _emit_stderr(self, text: str) -> None:
        await self._emit_text("stderr", text)

    # -- cells --------------------------------------------------------------------
    async def _wait_reply(
        self, child: _Child, waiter: _CellWaiter, request_input: InputCallback | None
    ) -> dict[str, Any]:
        async for kind, value in waiter.receive:
            if kind == "reply":
                return dict(value)
            if kind == "died":
                return self._lost_reply(waiter, "EvaluatorDied", self._death_text(value))
            if kind == INPUT_REQUEST:
                await child.send(Frame(INPUT_REPLY, await self._ask(request_input, value)))
        raise AssertionError("unreachable: the waiter channel is never closed")

    async def _ask(
        self, request_input: InputCallback | None, body: dict[str, Any]
    ) -> dict[str, Any]:
        if request_input is None:
            return {"error": "no input callback"}
        try:
            return {"value": await request_input(body["prompt"], bool(body["password"]))}
        except Exception as exc:  # the frontend went away: the cell sees EOFError
            return {"error": f"{type(exc).__name__}: {exc}"}

    async def _interrupt_cell(self, child: _Child, waiter: _CellWaiter) -> dict[str, Any]:
        """Shielded: stop the cell politely, then by SIGINT, then by replacing the evaluator."""
        with trio.CancelScope(shield=True):
            start = trio.current_time()
            try:
                await child.send(Frame(INTERRUPT, {"id": waiter.id}))
            except EvaluatorDied:
                pass
            acked = sigint_sent = False
            phases = [start + ACK_TIMEOUT, start + self.grace_period / 2, start + self.grace_period]
            for phase, until in enumerate(phases):
                while (event := await self._cell_event(child, waiter, until)) is not None:
                    kind, value = event
                    if kind == "reply":
                        return dict(value)
                    if kind == "died":
                        return self._lost_reply(waiter, "EvaluatorDied", self._death_text(value))
                    acked = True
                # Phase 0 over without an ack: the loop is blocked by synchronous code.
                # Phase 1 over: acknowledged, yet still running (back in synchronous code?).
                if (phase == 0 and not acked) or (phase == 1 and not sigint_sent):
                    child.signal_group(signal.SIGINT)
                    sigint_sent = True
            return await self._escalate(child, waiter)
        raise AssertionError("unreachable: a shielded scope does not swallow exceptions")

    async def _cell_event(
        self, child: _Child, waiter: _CellWaiter, until: float
    ) -> tuple[str, Any] | None:
        """Next reply/died/ack of an interrupted cell, or None at ``until``."""
        with trio.move_on_at(until):
            while True:
                kind, value = await waiter.receive.receive()
                if kind == INPUT_REQUEST:  # it asks again after the interrupt: refuse
                    await child.send(Frame(INPUT_REPLY, {"error": "interrupted"}))
                    continue
                return kind, value
        return None

    async def _escalate(self, child: _Child, waiter: _CellWaiter) -> dict[str, Any]:
        self._use_up_count(waiter)
        async with self._spawn_lock:
            if self._child is child:
                self._child = None
        await self._stop(child, polite=False)
        text = (
            f"the cell did not stop within {self.grace_period:g} s of the interrupt: "
            "the evaluator was killed and a new one started, the namespace was reset "
            "(all variables are gone)"
        )
        await self._emit_stderr(f"trikernel: {text}.\n")
        async with self._spawn_lock:
            if self._child is None and not self._closing:
                self._child = await self._spawn()
        return self._lost_reply(waiter, "EvaluatorRestarted", text)

    def _death_text(self, death: str) -> str:
        return f"the evaluator {death} while running this cell; the namespace was reset"

    def _use_up_count(self, waiter: _CellWaiter) -> None:
        if waiter.store_history:
            self._count = max(self._count, waiter.expected_count)

    def _lost_reply(self, waiter: _CellWaiter, ename: str, evalue: str) -> dict[str, Any]:
        self._use_up_count(waiter)
        return _error(ename, evalue, execution_count=self._count)

    def _finish(self, reply: dict[str, Any]) -> dict[str, Any]:
        count = reply.get("execution_count")
        if isinstance(count, int):
            self._count = max(self._count, count)
        return reply


async def _read_into(stream: trio.lowlevel.FdStream, target: memoryview) -> int:
    """``receive_some`` into ``target`` (FdStream has no receive_into); 0 at EOF."""
    fd = stream.fileno()
    await trio.lowlevel.checkpoint()
    while True:
        try:
            return os.readv(fd, [target])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
        except OSError:  # EBADF/EIO: the pipe is gone, as receive_some's BrokenResourceError
            return 0
