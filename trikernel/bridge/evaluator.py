"""The evaluator subprocess behind the ``Evaluator`` protocol: call and cell matching.

Theory of operation
-------------------
``open_subprocess_evaluator(sink)`` starts ``python -m trikernel.evaluator``
(``bridge.spawn``; the first one may have been started by ``python -m trikernel``
before trio was imported), supervises it as a ``bridge.child.Child`` and yields a
``SubprocessEvaluator`` once it is ready.

Every output reaches ``sink`` synchronously, in pipe order, as an ``Output``
carrying its parent request: the frame's ``request`` id names it (0, from an
evaluator that does not say, means the latest execute or comm request), fd 1/2
text and the bridge's own notices belong to the running cell (or the latest
request). Publishing never blocks, so an output has gone out before the reply
that follows it is even read: no lock, no channel.

Calls: every frame that waits for an answer gets an id from one sequence;
``request`` and ``send_comm`` wait for the ``Response`` with their id, ``execute``
for the ``Reply`` of its cell. Interrupt and escalation are ``bridge.cell``'s and
``bridge.escalation``'s: ``interrupt()`` cancels the running cell and the table
decides the rest (interrupt frame and SIGINT at once; SIGINT again at half the
grace period if acknowledged; kill and respawn at the grace period, with a
stderr notice that the namespace was reset and an ``EvaluatorRestarted`` reply;
no deadline once the evaluator said KeyboardInterrupt reached the cell's code).

If the evaluator dies on its own (``os._exit``, a segfault, SIGKILL), a stderr
notice says so, a new one is started, and a running cell's reply is an
``EvaluatorDied`` error naming the exit code or signal. A process that dies
before it is ready is not respawned in a loop: the next call tries once more
and raises/returns ``EvaluatorDied``.

execution_count: the bridge owns it (the kernel reads it here). It is the last
count the evaluator reported; a cell lost to a kill or a death still uses up the
number the kernel announced for it when it stored history, and the next
evaluator starts counting after it, so counts keep increasing across respawns.

``request`` (complete, inspect, history, is_complete, comm_info) is answered by a
task of the evaluator that runs concurrently with an *awaiting* cell; while a
cell runs synchronous code the answer waits until the loop is free.
"""

from __future__ import annotations

import functools
import itertools
import math
import signal
import sys
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from .._bytes import Buffer
from ..cells.replies import error_content, error_from
from ..errors import EvaluatorDied, EvaluatorRestarted
from ..evaluator import frames
from ..evaluator_api import ExecuteRequest, InputCallback, Output, OutputSink, Parent
from .cell import Cell
from .child import Child
from .escalation import Action, Event
from .spawn import Spawned, spawn_evaluator

__all__ = ["SubprocessEvaluator", "open_subprocess_evaluator"]

STARTUP_TIMEOUT = 60.0
RECENT_REQUESTS = 256  # request ids whose parent an output may still name


@asynccontextmanager
async def open_subprocess_evaluator(
    sink: OutputSink,
    *,
    grace_period: float = 3.0,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    prespawned: Spawned | None = None,
) -> AsyncIterator[SubprocessEvaluator]:
    """Start an evaluator subprocess; yield it once it is ready; stop it on exit.

    Args:
        sink: called with every ``Output``, in order; must not block.
        grace_period: how long an interrupted cell may take to stop before the
            evaluator is killed and replaced.
        prespawned: an evaluator already started with ``bridge.spawn`` (by
            ``python -m trikernel`` before it imported trio), adopted as the first.
    Raises:
        EvaluatorDied: the evaluator could not be started.
    """
    failed: EvaluatorDied | None = None
    async with trio.open_nursery() as nursery:
        evaluator = SubprocessEvaluator(
            nursery, sink, grace_period=grace_period, python=python, env=env, cwd=cwd
        )
        evaluator._prespawned = prespawned
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
    """A request or comm waiting for its ``Response``."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.done = trio.Event()
        self.content: dict[str, Any] | None = None


_CELL_EVENTS: dict[type, Event] = {
    frames.InputRequest: Event.INPUT,
    frames.InterruptAck: Event.ACK,
    frames.InterruptDelivered: Event.DELIVERED,
}


class _RunningCell(Cell):
    def __init__(
        self, cell_id: int, request: ExecuteRequest, child: Child, count: int, grace: float
    ):
        super().__init__(cell_id, grace)
        self.request = request
        self.child = child
        self.expected_count = count  # the number the kernel announced for it


class SubprocessEvaluator:
    """An evaluator subprocess behind the ``Evaluator`` protocol. Use
    ``open_subprocess_evaluator`` to make one."""

    def __init__(
        self,
        nursery: trio.Nursery,
        sink: OutputSink,
        *,
        grace_period: float,
        python: str,
        env: dict[str, str] | None,
        cwd: str | None,
    ) -> None:
        self._nursery = nursery
        self._sink = sink
        self.grace_period = grace_period
        self._python = python
        self._env = env
        self._cwd = cwd
        self._prespawned: Spawned | None = None  # adopted as the first evaluator
        self._child: Child | None = None
        self._spawn_lock = trio.Lock()
        self._execute_lock = trio.Lock()
        self._ids = itertools.count(1)
        self._calls: dict[int, _Call] = {}
        self._cell: _RunningCell | None = None
        self._starting: trio.CancelScope | None = None  # a cell waiting for its evaluator
        self._parents: OrderedDict[int, Parent] = OrderedDict()
        self._latest: Parent | None = None  # of the latest execute or comm request
        self._count = 0  # the last execution_count the evaluator reported
        self._closing = False

    # -- the Evaluator protocol ----------------------------------------------------------
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
        self, request: ExecuteRequest, request_input: InputCallback | None
    ) -> dict[str, Any]:
        """Run one cell; return the execute_reply content. Every output of the cell
        has gone to the sink when this returns. ``interrupt()`` (or cancelling the
        caller) stops the cell; see ``bridge.escalation``."""
        async with self._execute_lock:
            scope = self._starting = trio.CancelScope()
            try:
                with scope:
                    child = await self._live_child()
            except EvaluatorDied as exc:
                return error_from(exc, execution_count=self._count)
            finally:
                self._starting = None
            if scope.cancelled_caught:
                evalue = "interrupted while the evaluator was starting; the cell did not run"
                return error_content("KeyboardInterrupt", evalue, execution_count=self._count)
            cell_id = next(self._ids)
            cell = _RunningCell(cell_id, request, child, self._count + 1, self.grace_period)
            self._remember(cell_id, request.parent, latest=True)
            allow_stdin = request.allow_stdin and request_input is not None
            self._cell = cell
            try:
                with trio.CancelScope(shield=True):
                    await child.send(frames.Execute(cell_id, request, allow_stdin))
                control = _Control(self, cell, request_input)
                end, value = await cell.run(control)
            except EvaluatorDied as exc:
                return self._lost(cell, exc)
            finally:
                self._cell = None
            if end is Action.RETURN_REPLY:
                return self._finish(dict(value))
            if end is Action.RETURN_RESTARTED:
                assert control.restarted is not None
                return self._lost(cell, control.restarted)
            return self._lost(cell, value)  # RETURN_DIED: the death's EvaluatorDied

    def interrupt(self) -> None:
        """Cancel the running cell (no-op when none runs). Sync: safe from anywhere
        in the trio thread."""
        if self._starting is not None:
            self._starting.cancel()
        if self._cell is not None:
            self._cell.interrupt()

    async def request(
        self, msg_type: str, content: dict[str, Any], parent: Parent | None = None
    ) -> dict[str, Any]:
        """complete/inspect/history/is_complete/comm_info_request -> reply content;
        ``status: error``, ename ``EvaluatorDied``, if the evaluator dies meanwhile."""
        try:
            return await self._call(
                lambda call_id: frames.Request(call_id, msg_type, content, parent or Parent()),
                parent,
                latest=False,
            )
        except EvaluatorDied as exc:
            return error_from(exc)

    async def send_comm(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: Sequence[Buffer],
        parent: Parent | None = None,
    ) -> None:
        """Deliver a frontend comm_open/comm_msg/comm_close (dropped if the evaluator
        is dead). Returns once the evaluator's comm handlers have run: what they
        output has gone to the sink by then, with this message as its parent."""
        data = tuple(bytes(b) for b in buffers)
        try:
            await self._call(
                lambda call_id: frames.Comm(msg_type, content, parent or Parent(), data, call_id),
                parent,
                latest=True,
            )
        except EvaluatorDied:
            pass

    async def aclose(self, *, polite: bool = True) -> None:
        """Stop the evaluator: shutdown frame (if ``polite``), then lifeline, then
        SIGKILL to its group."""
        self._closing = True
        self.interrupt()
        with trio.CancelScope(shield=True):
            async with self._spawn_lock:
                child, self._child = self._child, None
            if child is not None:
                await child.stop(polite=polite, grace_period=self.grace_period)

    # -- what the child reports (bridge.child.ChildHandler) -----------------------------
    def on_frame(self, child: Child, frame: frames.TypedFrame) -> None:
        cell = self._cell if self._cell is not None and self._cell.child is child else None
        if isinstance(frame, frames.Output):
            parent = self._parents.get(frame.request, self._latest)
            self._sink(Output(frame.msg_type, frame.content, parent, frame.buffers, frame.metadata))
        elif isinstance(frame, frames.Reply):
            if cell is not None and cell.id == frame.id:
                cell.post(Event.REPLY, frame.content)
        elif isinstance(frame, frames.Response):
            call = self._calls.get(frame.id)
            if call is not None:
                call.content = dict(frame.content)
                call.done.set()
        elif isinstance(
            frame, frames.InputRequest | frames.InterruptAck | frames.InterruptDelivered
        ):
            if cell is not None and cell.id == frame.id:
                cell.post(_CELL_EVENTS[type(frame)], frame)
        elif isinstance(frame, frames.Ready):
            self._count = max(self._count, frame.execution_count - 1)

    def on_text(self, child: Child, name: str, text: str) -> None:
        self._sink(Output("stream", {"name": name, "text": text}, self._current_parent()))

    async def on_exit(self, child: Child) -> None:
        for call in self._calls.values():
            if call.child is child:
                call.done.set()
        cell = self._cell if self._cell is not None and self._cell.child is child else None
        if not child.expected_exit and not self._closing and child.ready.is_set():
            if cell is not None:
                self._use_up_count(cell)
                notice = f"the evaluator {child.death} while running this cell"
            else:
                notice = f"the evaluator {child.death} while idle"
            async with self._spawn_lock:
                if self._child is child:
                    self._child = None
                    self._notice(
                        f"trikernel: {notice}; a new evaluator was started, "
                        "the namespace was reset (all variables are gone).\n"
                    )
                    self._child = await self._spawn()
        if cell is not None:
            cell.post(Event.DIED, child.died(" while running this cell; the namespace was reset"))

    # -- calls ---------------------------------------------------------------------------
    async def _call(self, make: Any, parent: Parent | None, *, latest: bool) -> dict[str, Any]:
        child = await self._live_child()
        call_id = next(self._ids)
        call = self._calls[call_id] = _Call(child)
        if parent is not None:
            self._remember(call_id, parent, latest=latest)
        try:
            await child.send(make(call_id))
            await call.done.wait()
        finally:
            self._calls.pop(call_id, None)
        if call.content is None:
            raise child.died()
        return call.content

    def _remember(self, call_id: int, parent: Parent, *, latest: bool) -> None:
        self._parents[call_id] = parent
        if len(self._parents) > RECENT_REQUESTS:
            self._parents.popitem(last=False)
        if latest:
            self._latest = parent

    def _current_parent(self) -> Parent | None:
        return self._cell.request.parent if self._cell is not None else self._latest

    def _notice(self, text: str) -> None:
        self._sink(Output("stream", {"name": "stderr", "text": text}, self._current_parent()))

    # -- spawning ------------------------------------------------------------------------
    async def _live_child(self) -> Child:
        child: Child | None = None
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
                await child.stop(polite=False, grace_period=0)
                child.death = f"did not start within {STARTUP_TIMEOUT:.0f} s"
        assert child is not None
        raise EvaluatorDied(
            f"the evaluator could not be started: it {child.death}",
            returncode=child.process.returncode,
        )

    async def _spawn(self) -> Child:
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
        child = Child(spawned)
        await self._nursery.start(child.supervise, self)
        return child

    async def _kill_and_respawn(self, cell: _RunningCell) -> EvaluatorRestarted:
        child = cell.child
        self._use_up_count(cell)
        async with self._spawn_lock:
            if self._child is child:
                self._child = None
        await child.stop(polite=False, grace_period=0)
        text = (
            f"the cell did not stop within {self.grace_period:g} s of the interrupt: "
            "the evaluator was killed and a new one started, the namespace was reset "
            "(all variables are gone)"
        )
        self._notice(f"trikernel: {text}.\n")
        async with self._spawn_lock:
            if self._child is None and not self._closing:
                self._child = await self._spawn()
        return EvaluatorRestarted(text, returncode=child.process.returncode)

    # -- counts --------------------------------------------------------------------------
    def _use_up_count(self, cell: _RunningCell) -> None:
        if cell.request.store_history:
            self._count = max(self._count, cell.expected_count)

    def _lost(self, cell: _RunningCell, exc: EvaluatorDied) -> dict[str, Any]:
        self._use_up_count(cell)
        return error_from(exc, execution_count=self._count)

    def _finish(self, reply: dict[str, Any]) -> dict[str, Any]:
        count = reply.get("execution_count")
        if isinstance(count, int):
            self._count = max(self._count, count)
        return reply


class _Control:
    """A cell's actions on the real child (``bridge.cell.CellControl``)."""

    def __init__(
        self, bridge: SubprocessEvaluator, cell: _RunningCell, request_input: InputCallback | None
    ) -> None:
        self._bridge = bridge
        self._cell = cell
        self._request_input = request_input
        self.restarted: EvaluatorRestarted | None = None

    async def send_interrupt(self) -> None:
        try:
            await self._cell.child.send(frames.Interrupt(self._cell.id))
        except EvaluatorDied:
            pass

    def sigint(self) -> None:
        self._cell.child.signal_group(signal.SIGINT)

    async def ask_input(self, request: frames.InputRequest) -> None:
        await self._cell.child.send(await self._ask(request))

    async def _ask(self, request: frames.InputRequest) -> frames.InputReply:
        if self._request_input is None:
            return frames.InputReply(error="no input callback")
        try:
            return frames.InputReply(await self._request_input(request.prompt, request.password))
        except Exception as exc:  # the frontend went away: the cell sees EOFError
            return frames.InputReply(error=f"{type(exc).__name__}: {exc}")

    async def refuse_input(self) -> None:
        try:
            await self._cell.child.send(frames.InputReply(error="interrupted"))
        except EvaluatorDied:
            pass

    async def kill_and_respawn(self) -> None:
        self.restarted = await self._bridge._kill_and_respawn(self._cell)
