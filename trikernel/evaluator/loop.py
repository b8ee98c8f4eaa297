"""The evaluator's persistent trio loop: frames in, cells run, replies out.

Theory of operation
-------------------
One ``trio.run`` lives as long as the evaluator. Its main task reads frames
from the bridge (``Inbox``) and dispatches them:

* ``execute`` starts the cell in its own task, inside a fresh ``CancelScope``;
  at most one cell runs at a time (the bridge serialises them);
* ``interrupt`` cancels that scope (and is acknowledged with ``interrupt_ack``);
* ``comm`` (frontend comm_open/msg/close) is handled at once, so it is in
  order with the execute requests around it, and answered (``response``) when
  it carries an id: what its handlers output (a widget's echo, the comm_close
  for an unknown target) reaches the bridge before that answer, so the kernel
  attributes it to the comm message;
* ``request`` (complete, inspect, history, is_complete, comm_info) goes, in
  order, to one worker task. While a cell *awaits*, requests are answered
  concurrently; while a cell runs synchronous code they wait for the loop;
* ``shutdown`` or end of stream stops everything.

``trio`` is imported into the user namespace. ``background`` wraps a nursery
opened at start-up, so its tasks outlive the cells that start them and an
interrupt (which cancels only the cell's scope) leaves them running. An
exception in a background task is shown as an ``error`` output naming the
task; the evaluator carries on.

Top-level await: trio and asyncio. A cell's ``await`` runs on this trio loop:
``await trio.sleep(1)``, nurseries, ``background.start_soon(...)``; cancelled by
an interrupt (reported as KeyboardInterrupt), background tasks untouched. asyncio
cannot run on a trio loop, so a cell with top-level ``await`` that uses asyncio
(imports it, or names something from it; ``%autoawait asyncio`` for every cell)
runs, all of it, as asyncio tasks on one persistent asyncio loop in a thread of
its own (``cells.aio``): ``await asyncio.sleep(0)``, ``asyncio.gather``,
``asyncio.timeout``, tasks that keep running across cells, an interrupt cancels
the cell's task. Supported: one loop per cell (trio or asyncio, not both);
asyncio tasks and loop-bound objects persist across asyncio cells. Not supported:
``await`` of trio in an asyncio cell or of asyncio in a trio cell (an error plus
a hint naming ``%autoawait``); ``input()`` in an asyncio cell (it runs in the
asyncio thread); ``asyncio.create_task`` in a cell without ``await``;
interrupting a blocking C call (``time.sleep``) in an asyncio cell before it
returns (after the grace period the bridge replaces the evaluator).

Attribution: output is not tagged with a cell. Everything goes through one
ordered pipe, so a background print made while a cell runs arrives among that
cell's outputs (before its reply), and one made between cells arrives on its
own (the kernel attributes it, e.g. to the last request). Output of a
``silent`` cell is dropped, including background output made while it runs.
The execute and comm frames name their request (``parent``); the latest one is
``get_ipython().kernel.get_parent()``, the same request the kernel attributes
output to, so ipywidgets' ``Output`` captures what it should.

What SIGINT does (our handler replaces trio's, which would deliver it to the
main task and end the evaluator):

=============================================  =======================================
state when SIGINT arrives                      effect
=============================================  =======================================
no cell running                                nothing
cell waiting in input()/getpass()              KeyboardInterrupt raised in the cell
cell (or a task it started) runs user code     KeyboardInterrupt raised there (and
                                               ``interrupt_delivered`` sent: the bridge
                                               no longer escalates, see bridge.escalation)
cell task is inside trio or trikernel code     cell scope cancelled, and a deferred
                                               KeyboardInterrupt: raised when our code
                                               returns to the user's (after a print or
                                               display), or by SIGINT re-sent to ourselves
                                               every 10 ms until one lands in user code
loop idle / another task runs (cell awaits)    cell scope cancelled (run_sync_soon)
=============================================  =======================================

(A background task that blocks the loop with synchronous code cannot be
interrupted: it is not the cell. The bridge's escalation is the way out.)

A cancelled awaiting cell reports ``KeyboardInterrupt`` (``KernelShell``
renders the trio.Cancelled that way). A pending ``input()`` also raises
KeyboardInterrupt when an ``interrupt`` frame arrives, since it reads the pipe
itself while it blocks.

C-level output: after each cell the evaluator writes a marker (containing a
per-process token) to fd 1 and fd 2 and reports how many it wrote in the
reply, so the bridge can forward everything written there before the reply.
"""

from __future__ import annotations

import ctypes
import os
import select
import signal
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any

import trio
from IPython.core.error import StdinNotImplementedError

from ..cells.background import Background
from ..cells.facade import request_message
from ..cells.replies import error_content
from ..cells.shell import KernelShell
from ..errors import RemoteProtocolError
from . import frames
from .outbox import Pipe
from .protocol import CLOSED, Frame, FrameDecoder, sync_marker

__all__ = ["Inbox", "EvaluatorLoop"]

_MACHINERY = ("trio", "trikernel", "outcome", "sniffio")
_RETRY_DELAY = 0.01


class Inbox:
    """Frames from the bridge: read by the trio loop, or synchronously by input()."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._decoder = FrameDecoder()
        os.set_blocking(fd, False)

    def next_buffered(self) -> frames.TypedFrame | None:
        """A frame already decoded, if any (EOF is reported by the receive methods)."""
        while isinstance(frame := self._decoder.next_frame(), Frame):
            if (typed := _typed(frame)) is not None:
                return typed
        return None

    async def receive(self) -> frames.TypedFrame | None:
        """Next frame, or None at end of stream."""
        while True:
            if (typed := self.next_buffered()) is not None:
                return typed
            if self._decoder.next_frame() is CLOSED:
                return None
            await trio.lowlevel.wait_readable(self._fd)
            self._read()

    def wait_readable_sync(self) -> None:
        select.select([self._fd], [], [])

    def read_sync(self) -> frames.TypedFrame | None:
        """After ``wait_readable_sync``: read, then a frame if one is complete."""
        self._read()
        typed = self.next_buffered()
        if typed is None and self._decoder.next_frame() is CLOSED:
            os._exit(0)  # the bridge is gone
        return typed

    def _read(self) -> None:
        try:
            data = os.read(self._fd, 1 << 16)
        except BlockingIOError:
            return
        self._decoder.receive_data(data)


@dataclass
class _Cell:
    id: int
    task: trio.lowlevel.Task
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: scope.cancel() was called (readable from any thread, unlike scope.cancel_called)
    cancel_requested: bool = False
    #: KeyboardInterrupt was raised in its code (the bridge was told)
    delivered: bool = False


def _descends_from(task: trio.lowlevel.Task, ancestor: trio.lowlevel.Task) -> bool:
    current: trio.lowlevel.Task | None = task
    while current is not None:
        if current is ancestor:
            return True
        nursery = current.parent_nursery
        current = nursery.parent_task if nursery is not None else None
    return False


def _is_machinery(frame: types.FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return any(name == m or name.startswith(m + ".") for m in _MACHINERY)


class EvaluatorLoop:
    """Serve the bridge until shutdown. ``trio.run(EvaluatorLoop(...).run)``."""

    def __init__(self, shell: KernelShell, pipe: Pipe, inbox: Inbox, sync_token: str) -> None:
        self.shell = shell
        self.pipe = pipe
        self.outbox = pipe.outbox
        self.inbox = inbox
        self._marker = sync_marker(sync_token)
        self._sync_token = sync_token
        self._fd_ids = {fd: _fd_id(fd) for fd in (1, 2)}
        self._fd_sync = [0, 0]
        self._cell: _Cell | None = None
        self._waiting_for_input = False
        self._pending_interrupt: _Cell | None = None  # SIGINT deferred out of our code
        self._main_thread = threading.get_ident()
        self.outbox.safe_point = self._raise_pending_interrupt
        self._cell_entry_codes = {
            KernelShell.run_cell_for_kernel.__code__,
            KernelShell.run_code.__code__,
            KernelShell.make_reply.__code__,
        }
        self._token: trio.lowlevel.TrioToken | None = None
        self._work_send, self._work_receive = trio.open_memory_channel[frames.Request](1000)
        self._retry_r, self._retry_w = os.pipe()
        os.set_blocking(self._retry_w, False)
        threading.Thread(
            target=self._retry_interrupts, name="trikernel-sigint", daemon=True
        ).start()

    def install_signal_handler(self) -> None:
        """Call before ``trio.run`` so trio keeps its hands off SIGINT."""
        signal.signal(signal.SIGINT, self._on_sigint)

    async def run(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            background = await nursery.start(self._hold_background)
            # `await trio.sleep(1)` just works; %who and %whos do not list what we put there.
            ours = {"background": background, "trio": trio}
            self.shell.push(ours, interactive=False)
            nursery.start_soon(self._work)
            count = self.shell.execution_count
            self.pipe.send(frames.Ready(os.getpid(), count, self._sync_token))
            self.shell.warm_up_tracebacks()
            while (frame := await self.inbox.receive()) is not None:
                if isinstance(frame, frames.Shutdown):
                    break
                self._dispatch(frame)
            nursery.cancel_scope.cancel()

    async def _hold_background(self, task_status: trio.TaskStatus[Background]) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started(Background(nursery, self.shell.show_background_error))
            await trio.sleep_forever()

    # -- frames ------------------------------------------------------------------
    def _dispatch(self, frame: frames.TypedFrame) -> None:
        """Handle one frame; sync, so input() can call it while the loop is blocked."""
        kernel = self.shell.kernel
        if isinstance(frame, frames.Execute):
            request = frame.request
            kernel.latest_request = request_message(request.parent, request.to_content())
            self.outbox.set_request(frame.id)  # outputs from now on are this cell's
            self._nursery.start_soon(self._run_cell, frame)
        elif isinstance(frame, frames.Interrupt):
            self._cancel_cell(frame.id, ack=True)
        elif isinstance(frame, frames.Comm):  # in arrival order, before a later execute
            msg = request_message(frame.parent, dict(frame.content), list(frame.buffers))
            kernel.latest_request = msg
            if frame.id is not None:
                self.outbox.set_request(frame.id)
            self.shell.handle_comm(frame.msg_type, msg)
            if frame.id is not None:
                self.pipe.send(frames.Response(frame.id))
        elif isinstance(frame, frames.Request):
            try:
                self._work_send.send_nowait(frame)
            except trio.WouldBlock:  # answer at once rather than leave the bridge waiting
                error = error_content("EvaluatorBusy", "too many requests are waiting")
                self.pipe.send(frames.Response(frame.id, error))
        # InputReply outside input(): a late answer to an interrupted input(); drop it.

    async def _work(self) -> None:
        async for frame in self._work_receive:
            content = self.shell.answer(frame.msg_type, dict(frame.content))
            self.pipe.send(frames.Response(frame.id, content))
            await trio.lowlevel.checkpoint()

    # -- cells -------------------------------------------------------------------
    async def _run_cell(self, frame: frames.Execute) -> None:
        request = frame.request
        if self._cell is not None:
            raise RuntimeError("the bridge sent an execute while a cell was running")
        shell = self.shell
        cell = self._cell = _Cell(frame.id, trio.lowlevel.current_task())
        shell.interrupted = False
        shell.stdin_handler = self._request_input if frame.allow_stdin else None
        if request.silent:
            self.outbox.set_muted(True)
        try:
            with cell.scope:
                result = await shell.run_cell_for_kernel(
                    request.code, silent=request.silent, store_history=request.store_history
                )
            if cell.scope.cancelled_caught:
                result = None
                shell.show_interrupted()
            reply = shell.make_reply(result, dict(request.user_expressions))
        finally:
            self._cell = self._pending_interrupt = None
            shell.stdin_handler = None
            if request.silent:
                self.outbox.set_muted(False)
        fd_sync = self._write_sync_markers()
        self.pipe.send(frames.Reply(cell.id, reply, fd_sync))

    def _write_sync_markers(self) -> tuple[int, int]:
        _flush_c_stdio()
        for i, fd in enumerate((1, 2)):
            if self._fd_ids[fd] is not None and _fd_id(fd) == self._fd_ids[fd]:
                try:
                    os.write(fd, self._marker)
                    self._fd_sync[i] += 1
                except OSError:
                    self._fd_ids[fd] = None  # the user closed it: stop marking it
        return (self._fd_sync[0], self._fd_sync[1])

    def _cancel_cell(self, cell_id: int, *, ack: bool = False) -> None:
        cell = self._cell
        if cell is None or cell.id != cell_id:
            return  # that cell has finished already
        self.shell.interrupted = True
        self._pending_interrupt = None  # the cancellation reaches it at its checkpoint
        cell.cancel_requested = True
        cell.scope.cancel()
        if ack:
            self.pipe.send(frames.InterruptAck(cell_id))

    # -- stdin -----------------------------------------------------------------
    def _request_input(self, prompt: str, password: bool) -> str:
        """input()/getpass() of the running cell: ask the bridge, read the pipe ourselves."""
        cell = self._cell
        if cell is None or threading.get_ident() != self._main_thread:
            raise StdinNotImplementedError("input() is only available in the running cell's thread")
        self.pipe.send(frames.InputRequest(cell.id, prompt, password))
        answer: frames.InputReply | None = None
        while answer is None:
            frame = self.inbox.next_buffered()
            if frame is None:
                self._waiting_for_input = True
                try:
                    self.inbox.wait_readable_sync()
                finally:
                    self._waiting_for_input = False
                frame = self.inbox.read_sync()
                if frame is None:
                    continue
            if isinstance(frame, frames.InputReply):
                answer = frame
            elif isinstance(frame, frames.Interrupt) and frame.id == cell.id:
                self._delivered(cell)
                raise KeyboardInterrupt
            else:
                self._dispatch(frame)
        while (frame := self.inbox.next_buffered()) is not None:
            self._dispatch(frame)  # what came in behind the answer
        if answer.error is not None:
            raise EOFError(f"input request failed: {answer.error}")
        return answer.value or ""

    # -- SIGINT ----------------------------------------------------------------
    def _on_sigint(self, signum: int, frame: types.FrameType | None) -> None:
        cell = self._cell
        if cell is None:
            return
        if self._waiting_for_input:
            self._delivered(cell)
            raise KeyboardInterrupt
        try:
            task = trio.lowlevel.current_task()
        except RuntimeError:
            task = None  # trio's own scheduling code runs: the cell awaits
        if task is not None and _descends_from(task, cell.task):
            if frame is not None and not self._in_machinery(frame, task):
                self._pending_interrupt = None
                self._delivered(cell)
                raise KeyboardInterrupt
            # In our own code: raise it when that code returns to the user's
            # (Outbox.safe_point), or when a re-sent SIGINT lands in user code.
            self._pending_interrupt = cell
            try:
                os.write(self._retry_w, b"!")
            except BlockingIOError:
                pass  # a retry is already queued
        if self._token is not None:
            self._token.run_sync_soon(self._cancel_cell, cell.id)

    def _raise_pending_interrupt(self) -> None:
        cell = self._pending_interrupt
        if cell is None or cell is not self._cell or threading.get_ident() != self._main_thread:
            return
        try:
            task = trio.lowlevel.current_task()
        except RuntimeError:
            return
        if _descends_from(task, cell.task):
            self._pending_interrupt = None
            self._delivered(cell)
            raise KeyboardInterrupt

    def _delivered(self, cell: _Cell) -> None:
        """Tell the bridge KeyboardInterrupt is raised in the cell's own code now: from
        here on the cell is handling it, and it is not escalated (bridge.escalation).
        Sent by a thread: this runs in a signal handler, which must not wait for the
        outbox's lock (another thread may hold it through a big write)."""
        if not cell.delivered:
            cell.delivered = True
            delivered = frames.InterruptDelivered(cell.id)
            threading.Thread(target=self.pipe.send, args=(delivered,), daemon=True).start()

    def _in_machinery(self, frame: types.FrameType, task: trio.lowlevel.Task) -> bool:
        """Is the innermost running code ours or trio's (not safe to interrupt)?"""
        root = getattr(task.coro, "cr_frame", None)
        f: types.FrameType | None = frame
        while f is not None:
            if f.f_code in self._cell_entry_codes:
                return f is frame  # user/IPython code runs inside it, unless it is innermost
            if _is_machinery(f):
                return True
            if f is root:
                return False
            f = f.f_back
        return True

    def _retry_interrupts(self) -> None:
        main = threading.main_thread().ident
        assert main is not None
        while os.read(self._retry_r, 64):
            time.sleep(_RETRY_DELAY)
            cell = self._pending_interrupt
            # Once the scope is cancelled the cell has reached a checkpoint (the loop
            # ran): the cancellation does the job, no KeyboardInterrupt on top of it.
            if cell is not None and cell is self._cell and not cell.cancel_requested:
                signal.pthread_kill(main, signal.SIGINT)


def _typed(frame: Frame) -> frames.TypedFrame | None:
    try:
        return frames.decode(frame)
    except RemoteProtocolError as exc:  # a bridge bug: say so, and go on
        os.write(2, f"trikernel evaluator: dropped a malformed frame: {exc}\n".encode())
        return None


def _fd_id(fd: int) -> tuple[int, int] | None:
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


try:
    _libc: Any = ctypes.CDLL(None)
except OSError:  # pragma: no cover - no C library to flush
    _libc = None


def _flush_c_stdio() -> None:
    """fflush(NULL): C code's buffered printf output goes out before the marker."""
    if _libc is not None:
        try:
            _libc.fflush(None)
        except Exception:  # pragma: no cover - best effort
            pass
