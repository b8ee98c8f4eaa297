"""asyncio cells: top-level ``await`` of asyncio code, next to the trio loop.

Theory of operation
-------------------
Cells run on the evaluator's persistent trio loop, where asyncio code cannot run
(``await asyncio.sleep(0)`` there fails: asyncio needs its own running loop and
current task). So a cell with top-level ``await`` that uses asyncio runs on a
persistent asyncio event loop in a daemon thread, ``trikernel-asyncio``, started
the first time one is needed.

* Which loop: ``%autoawait auto`` (the default) picks asyncio for a cell with
  top-level ``await`` (``async for``, ``async with``) that imports asyncio or
  names the asyncio module, something taken from it (``sleep`` after ``from
  asyncio import sleep``, an ``asyncio.Queue``), or a function whose code names
  one of those (two calls deep); else trio (see ``uses_asyncio``). ``%autoawait
  asyncio`` / ``%autoawait trio`` force one loop for every following await cell;
  ``%autoawait`` alone shows the setting. A cell without top-level ``await`` runs
  in the main thread as usual (so ``asyncio.run(...)`` works there, as in a
  script).
* What runs there: every statement of an asyncio cell, in order, each as one
  asyncio task (IPython runs a cell statement by statement), so
  ``asyncio.create_task``, ``asyncio.current_task()`` and ``asyncio.timeout``
  work anywhere in it.
* The cell's trio task waits for that asyncio task. An interrupt cancels it
  (CancelledError at its ``await``; the cell reports KeyboardInterrupt). If the
  task is running synchronous Python code at that moment, KeyboardInterrupt is
  raised in the asyncio thread at its next bytecode, as soon as the thread is in
  the cell's own code (never inside asyncio's).
* asyncio tasks a cell creates keep running on that loop, between cells and
  while other cells run; objects bound to the loop (client sessions, queues,
  locks) keep working in later asyncio cells. An exception in such a task is
  shown as an error output when asyncio reports it (when the task is
  garbage-collected without anyone having retrieved its exception).

Not supported: a cell is either trio or asyncio (``await trio.sleep(1)`` in an
asyncio cell fails with RuntimeError, asyncio code in a trio cell with asyncio's
or trio's error; either is followed by a hint naming ``%autoawait``);
``asyncio.create_task`` in a cell without ``await`` (no running loop in the main
thread: add ``await asyncio.sleep(0)``); ``input()``/``getpass()`` in an asyncio
cell (it runs in another thread: StdinNotImplementedError); starting
``background`` (trio) tasks from an asyncio cell; interrupting a blocking C call
(``time.sleep``, a blocking socket read) in an asyncio cell: the
KeyboardInterrupt waits until the call returns, and if that takes longer than the
kernel's grace period the evaluator is replaced (namespace reset). An interrupt
cancels only the cell's task, not the asyncio tasks it started. The in-process
(embedded) evaluator has no asyncio cells.
"""

from __future__ import annotations

import ast
import asyncio
import ctypes
import sys
import threading
import types
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import trio

__all__ = ["AsyncioThread", "exec_code", "uses_asyncio"]

_RETRY_DELAY = 0.01
_MACHINERY = ("asyncio", "trio", "trikernel", "concurrent", "selectors", "threading", "outcome")
_UNSET: Any = object()


def _is_asyncio_name(name: str) -> bool:
    return name == "asyncio" or name.startswith("asyncio.")


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _is_asyncio_object(obj: Any, depth: int) -> bool:
    if obj is None:
        return False
    if isinstance(obj, types.ModuleType):
        return _is_asyncio_name(obj.__name__)
    try:
        module = getattr(obj, "__module__", None)
    except Exception:  # a proxy object with a hostile __getattr__
        return False
    if isinstance(module, str) and _is_asyncio_name(module):
        return True
    if depth > 0 and isinstance(obj, types.FunctionType):
        names = _code_names(obj.__code__)
        scope = obj.__globals__
        return "asyncio" in names or any(
            _is_asyncio_object(scope.get(name), depth - 1) for name in names
        )
    return False


def uses_asyncio(source: str, namespace: Mapping[str, Any]) -> bool:
    """Does this cell use asyncio (see the module docstring for the rule)?"""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            if any(_is_asyncio_name(alias.name) for alias in node.names):
                return True
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and node.module and _is_asyncio_name(node.module):
                return True
        elif isinstance(node, ast.Name):
            if node.id == "asyncio" or _is_asyncio_object(namespace.get(node.id), depth=2):
                return True
    return False


async def exec_code(code: types.CodeType, globals_: dict[str, Any], locals_: Any) -> None:
    """A statement without ``await``, as a coroutine (to run it on the asyncio thread)."""
    exec(code, globals_, locals_)


class _Box:
    """One asyncio statement: its task and what it ended with."""

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.task: asyncio.Task[None] | None = None
        self.frame: types.FrameType | None = None
        self.value: Any = _UNSET
        self.error: BaseException | None = None


class AsyncioThread:
    """A persistent asyncio event loop in a daemon thread, started on first use.

    ``await run(coro)`` (from a trio task) runs ``coro`` as a task on that loop
    and returns its result or raises its exception. ``on_error(exc, name)`` shows
    an exception asyncio reports (a task's exception nobody retrieved).
    """

    def __init__(self, on_error: Callable[[BaseException, str], None]) -> None:
        self._on_error = on_error
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def started(self) -> bool:
        return self._loop is not None

    def loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._serve, args=(ready,), name="trikernel-asyncio", daemon=True
                )
                self._thread.start()
                ready.wait()
            assert self._loop is not None
            return self._loop

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(self._handle_exception)
        asyncio.set_event_loop(loop)
        self._loop = loop
        ready.set()
        while True:
            try:
                loop.run_forever()
                return
            except BaseException:  # an interrupt that landed in asyncio's own code
                continue

    def _handle_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if exc is None:
            loop.default_exception_handler(context)  # logged to stderr
            return
        task = context.get("task") or context.get("future")
        name = task.get_name() if isinstance(task, asyncio.Task) else "asyncio callback"
        self._on_error(exc, f"asyncio task {name}")

    async def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run ``coro`` on the asyncio loop; cancelling the caller cancels it."""
        loop = self.loop()
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box = _Box(coro)

        def wake(task: asyncio.Task[None]) -> None:
            if box.error is None and box.value is _UNSET:  # cancelled before it started
                box.error = asyncio.CancelledError()
                coro.close()
            try:
                token.run_sync_soon(done.set)
            except trio.RunFinishedError:
                pass

        async def guard() -> None:
            box.frame = sys._getframe()
            try:
                box.value = await coro
            except BaseException as exc:  # KeyboardInterrupt must not reach asyncio's Task
                box.error = exc

        def start() -> None:
            box.task = loop.create_task(guard(), name="trikernel-cell")
            box.task.add_done_callback(wake)

        loop.call_soon_threadsafe(start)
        interrupted: trio.Cancelled | None = None
        try:
            await done.wait()
        except trio.Cancelled as exc:
            interrupted = exc
            loop.call_soon_threadsafe(_cancel, box)
            with trio.CancelScope(shield=True):  # the bridge escalates if it never ends
                injected = False
                while not done.is_set():
                    if not injected:
                        injected = self._interrupt_sync_code(box)
                    with trio.move_on_after(_RETRY_DELAY):
                        await done.wait()
        if interrupted is not None:
            error = box.error
            if isinstance(error, KeyboardInterrupt):
                raise error from None
            if isinstance(error, asyncio.CancelledError):  # where the cell was waiting
                raise KeyboardInterrupt().with_traceback(error.__traceback__) from None
            raise interrupted
        if box.error is not None:
            raise box.error
        return box.value

    def _interrupt_sync_code(self, box: _Box) -> bool:
        """KeyboardInterrupt in the asyncio thread, if it runs the cell's own code now."""
        thread = self._thread
        if thread is None or thread.ident is None or box.frame is None:
            return False
        innermost = sys._current_frames().get(thread.ident)
        if innermost is None or _is_machinery(innermost):
            return False
        frame: types.FrameType | None = innermost
        while frame is not None and frame is not box.frame:
            frame = frame.f_back
        if frame is None:
            return False  # the thread runs something else (another asyncio task)
        ctypes.pythonapi.PyThreadState_SetAsyncExc(
            ctypes.c_ulong(thread.ident), ctypes.py_object(KeyboardInterrupt)
        )
        return True


def _cancel(box: _Box) -> None:
    if box.task is not None:
        box.task.cancel()


def _is_machinery(frame: types.FrameType) -> bool:
    name = frame.f_globals.get("__name__", "")
    return any(name == m or name.startswith(m + ".") for m in _MACHINERY)
