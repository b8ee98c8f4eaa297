"""The embedded evaluator: cells of a kernel run as trio tasks of the application,
on the same IPython core as the subprocess evaluator (``cells.shell``).

Theory of operation
-------------------
* A cell is ``KernelShell.run_cell_for_kernel`` awaited in the kernel's own task,
  inside a cancel scope: ``await trio.sleep(1)`` runs on the application's loop
  while its other tasks go on; ``interrupt()`` cancels the scope, and the cell
  ends with KeyboardInterrupt. A cell that never reaches a checkpoint blocks the
  whole application and cannot be interrupted: the price of running in-process.
  (With trio's default SIGINT handling, Ctrl-C breaks such a cell: cells run
  without KI protection.)
* ``routing.CURRENT`` is set for the cell, so its prints, displays, comms and
  ``get_ipython()`` reach this kernel; tasks the cell starts (``background``, a
  nursery of its own) inherit that, the application's own tasks do not.
* Outputs leave through the shell's ``Outbox`` (the same coalescing as in the
  subprocess) to a FIFO that is drained on the loop, in order, into the kernel's
  sink; every output of a cell is in the sink before ``execute`` returns. The
  FIFO is drained by a ``run_sync_soon`` callback rather than under the Outbox
  lock, so a sink that logs (to a routed stderr) cannot deadlock it.
* ``input()`` in a cell would block the loop: it raises BlockingInputError, and
  ``await ainput(prompt)`` does the stdin round trip instead.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio
from IPython.display import clear_output, display

from .._bytes import Buffer
from ..cells.background import Background
from ..cells.facade import request_message
from ..cells.streams import Emitted, Outbox
from ..evaluator_api import ExecuteRequest, InputCallback, Output, OutputSink, Parent
from . import routing
from .shell import EmbeddedShell, new_shell

__all__ = ["InProcessEvaluator", "open_inprocess_evaluator", "ainput"]

log = logging.getLogger("trikernel.inprocess")


class _ToSink:
    """The Outbox's emit: a FIFO drained into the kernel's sink on the loop."""

    def __init__(self, sink: OutputSink) -> None:
        self._sink = sink
        self._queue: deque[Output] = deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._token = trio.lowlevel.current_trio_token()

    def __call__(self, out: Emitted) -> None:
        output = Output(out.msg_type, out.content, out.request, tuple(out.buffers), out.metadata)
        with self._lock:
            self._queue.append(output)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._token.run_sync_soon(self.drain)
        except trio.RunFinishedError:  # the application's loop is gone: nobody listens
            pass

    def drain(self) -> None:
        """Hand every queued output to the sink, in order (on the loop's thread)."""
        while True:
            with self._lock:
                if not self._queue:
                    self._scheduled = False
                    return
                output = self._queue.popleft()
            try:
                self._sink(output)
            except Exception:  # lose that output, not the application
                log.exception("could not publish a %s output", output.msg_type)


class InProcessEvaluator:
    """The ``Evaluator`` of an embedded kernel. Open with ``open_inprocess_evaluator``."""

    def __init__(self, shell: EmbeddedShell, to_sink: _ToSink, background: Background) -> None:
        self.shell = shell
        self.background = background
        self._to_sink = to_sink
        self._scope: trio.CancelScope | None = None
        self._closed = False

    @property
    def namespace(self) -> dict[str, Any]:
        return self.shell.user_ns

    @property
    def execution_count(self) -> int:
        return self.shell.execution_count - 1

    async def execute(
        self, request: ExecuteRequest, request_input: InputCallback | None
    ) -> dict[str, Any]:
        outbox: Outbox = self.shell.outbox
        asking = request_input if request.allow_stdin else None
        context = self._enter(request.parent, request.to_content(), asking)
        token = routing.enter(context)
        if request.silent:
            outbox.set_muted(True)
        try:
            reply = await self._run_cell(request)
        finally:
            context.done = True
            routing.leave(token)
            if request.silent:
                outbox.set_muted(False)
        self._flush()
        return reply

    @trio.lowlevel.disable_ki_protection
    async def _run_cell(self, request: ExecuteRequest) -> dict[str, Any]:
        shell = self.shell
        shell.interrupted = False
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                result = await shell.run_cell_for_kernel(
                    request.code, silent=request.silent, store_history=request.store_history
                )
            finally:
                self._scope = None
        if scope.cancelled_caught:
            result = None
            shell.show_interrupted()
        return shell.make_reply(result, dict(request.user_expressions))

    def interrupt(self) -> None:
        if self._scope is not None:
            self.shell.interrupted = True
            self._scope.cancel()

    async def request(
        self, msg_type: str, content: dict[str, Any], parent: Parent
    ) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return self.shell.answer(msg_type, content)

    async def send_comm(
        self, msg_type: str, content: dict[str, Any], buffers: Sequence[Buffer], parent: Parent
    ) -> None:
        await trio.lowlevel.checkpoint()
        context = self._enter(parent, content, None, list(buffers))
        token = routing.enter(context)
        try:
            self.shell.handle_comm(msg_type, self.shell.kernel.latest_request)
        finally:
            context.done = True
            routing.leave(token)
        self._flush()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.background.cancel_all()
        self._flush()
        self.shell.close()

    # -- internals -------------------------------------------------------------
    def _enter(
        self,
        parent: Parent,
        content: dict[str, Any],
        request_input: InputCallback | None,
        buffers: list[Buffer] | None = None,
    ) -> routing.CellContext:
        """Outputs from now on belong to this request (as in the subprocess: the
        latest execute or comm request, which ``get_parent()`` returns too)."""
        self.shell.kernel.latest_request = request_message(parent, content, buffers)
        self.shell.outbox.set_request(parent)
        return routing.CellContext(self.shell, request_input, lambda: self._closed)

    def _flush(self) -> None:
        self.shell.outbox.flush()
        self._to_sink.drain()

    def __repr__(self) -> str:
        return f"<InProcessEvaluator cells={self.execution_count}>"


async def ainput(prompt: object = "", *, password: bool = False) -> str:
    """``input()`` for embedded cells: asks the frontend without blocking the loop."""
    context = routing.CURRENT.get()
    if context is None or context.closed():
        raise RuntimeError("ainput() works only inside a cell of an embedded trikernel")
    if context.done:
        raise RuntimeError("ainput(): the cell that started this task has finished")
    if context.request_input is None:
        raise EOFError("ainput(): this frontend does not accept input (allow_stdin is false)")
    context.shell.outbox.flush()  # what was printed before the prompt shows first
    return await context.request_input(str(prompt), password)


@asynccontextmanager
async def open_inprocess_evaluator(
    sink: OutputSink, namespace: dict[str, Any] | None = None
) -> AsyncIterator[InProcessEvaluator]:
    """Run a kernel's cells in this process and loop, in ``namespace`` (a fresh dict
    when None). ``background``, ``display``, ``clear_output`` and ``ainput`` are
    put in the namespace. Leaving the block cancels the background tasks and takes
    back every global the kernel set."""
    if namespace is None:
        namespace = {"__name__": "__console__", "__doc__": None}
    to_sink = _ToSink(sink)
    routing.install()
    try:
        shell = new_shell(namespace, Outbox(to_sink))
        try:
            async with trio.open_nursery() as nursery:
                background = Background(nursery, shell.show_background_error)
                ours = {
                    "background": background,
                    "display": display,
                    "clear_output": clear_output,
                    "ainput": ainput,
                }
                shell.push(ours, interactive=False)  # hidden from %who, as IPython's own
                evaluator = InProcessEvaluator(shell, to_sink, background)
                try:
                    yield evaluator
                finally:
                    await evaluator.aclose()
                    nursery.cancel_scope.cancel()
        finally:
            shell.close()
    finally:
        routing.uninstall()
