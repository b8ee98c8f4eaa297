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
cancels only the cell's task, not the asyncio tasks it started. Both evaluators
have asyncio cells (``AsyncioCells`` is a part of the shell); the embedded one
stops its asyncio thread when it closes.
"""

from __future__ import annotations

import ast
import asyncio
import bdb
import ctypes
import sys
import threading
import types
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import trio
from IPython.core.error import UsageError
from IPython.core.interactiveshell import ExecutionResult

from .tracebacks import ASYNCIO_ON_TRIO, TRIO_ON_ASYNCIO, without_frames

__all__ = ["AsyncioThread", "AsyncioCells", "exec_code", "uses_asyncio"]

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
                break
            except BaseException:  # an interrupt that landed in asyncio's own code
                continue
        for task in asyncio.all_tasks(loop):  # close(): end the tasks cells left running
            task.cancel()
        try:
            loop.run_until_complete(asyncio.sleep(0))
        finally:
            loop.close()

    def close(self) -> None:
        """Stop the loop and its tasks; wait a little for the thread."""
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout=1.0)

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


class AsyncioCells:
    """The part of the kernel shell that picks the loop of an await cell and runs
    asyncio cells on the ``AsyncioThread`` (a mixin of ``KernelShell``)."""

    #: which loop runs top-level await: "auto", "trio" or "asyncio" (%autoawait)
    await_mode = "auto"
    _cell_loop: str | None = None  # the running await cell's loop: "trio" or "asyncio"
    _asyncio: AsyncioThread | None = None

    def choose_await_loop(self, code: str, transformed: str) -> None:
        """Before running a cell: which loop its top-level await (if any) runs on."""
        self._cell_loop = None  # a cell without top-level await runs here, as usual
        if self.should_run_async(code, transformed_cell=transformed):  # type: ignore[attr-defined]
            if self.await_mode != "auto":
                self._cell_loop = self.await_mode
            else:
                asyncio_cell = uses_asyncio(transformed, self.user_ns)  # type: ignore[attr-defined]
                self._cell_loop = "asyncio" if asyncio_cell else "trio"

    async def run_code(
        self,
        code_obj: types.CodeType,
        result: ExecutionResult | None = None,
        *,
        async_: bool = False,
    ) -> bool:
        """IPython's run_code, except that every statement of an asyncio cell runs on
        the asyncio thread; trio cells run in this task."""
        shell: Any = self
        if self._cell_loop != "asyncio":
            failed = bool(await super().run_code(code_obj, result, async_=async_))  # type: ignore[misc]
            if failed and async_ and result is not None:
                self._hint(result.error_in_exec, ASYNCIO_ON_TRIO, "asyncio")
            return failed
        if self._asyncio is None:
            self._asyncio = AsyncioThread(shell.show_background_error)
        namespaces = (shell.user_global_ns, shell.user_ns)
        old_excepthook, sys.excepthook = sys.excepthook, shell.excepthook
        shell.sys_excepthook = old_excepthook
        try:
            try:
                if async_:
                    await self._asyncio.run(eval(code_obj, *namespaces))
                else:
                    await self._asyncio.run(exec_code(code_obj, *namespaces))
            finally:
                sys.excepthook = old_excepthook
        except BaseException as exc:
            # The same handling as IPython's run_code, without the asyncio plumbing
            # in the traceback. (trio.Cancelled of an interrupt is shown as
            # KeyboardInterrupt by showtraceback.)
            exc.__traceback__ = without_frames(exc.__traceback__, _RUN_CODES, __name__)
            if result is not None:
                result.error_in_exec = exc
            if isinstance(exc, SystemExit):
                shell.showtraceback(exception_only=True)
            elif isinstance(exc, bdb.BdbQuit):
                pass
            elif isinstance(exc, shell.custom_exceptions):
                shell.CustomTB(type(exc), exc, exc.__traceback__)
            else:
                shell.showtraceback((type(exc), exc, exc.__traceback__), running_compiled_code=True)
                self._hint(exc, TRIO_ON_ASYNCIO, "trio")
            return True
        return False

    def close_asyncio(self) -> None:
        if self._asyncio is not None:
            self._asyncio.close()
            self._asyncio = None

    def _hint(self, exc: BaseException | None, signs: tuple[str, ...], other: str) -> None:
        if exc is not None and any(sign in str(exc) for sign in signs):
            self.outbox.write_stream(  # type: ignore[attr-defined]
                "stderr",
                f"trikernel: this cell ran on {self._cell_loop} but seems to need {other}: "
                f"`%autoawait {other}` runs the await cells that follow on {other} "
                "(`%autoawait auto` picks per cell).\n",
            )

    def autoawait_magic(self, line: str) -> None:
        """Choose the loop that runs top-level ``await``: ``%autoawait [auto|trio|asyncio|on|off]``.

        - ``auto`` (the default): asyncio for a cell that uses asyncio (imports it or
          names something from it), else trio;
        - ``trio``: the evaluator's persistent trio loop, where ``background`` tasks live;
        - ``asyncio``: a persistent asyncio loop in a thread of its own;
        - ``on`` / ``off``: allow or refuse top-level ``await``.

        Without an argument: show the current setting.
        """
        shell: Any = self
        arg = line.strip().lower()
        if not arg:
            state = "on" if shell.autoawait else "off"
            print(f"autoawait is {state}; top-level await runs on: {self.await_mode}")
        elif arg in ("auto", "trio", "asyncio"):
            self.await_mode, shell.autoawait = arg, True
        elif arg in ("on", "true"):
            shell.autoawait = True
        elif arg in ("off", "false"):
            shell.autoawait = False
        else:
            raise UsageError(
                f"%autoawait {line.strip()}: trikernel runs top-level await on trio or "
                "asyncio; use %autoawait auto|trio|asyncio|on|off"
            )


_RUN_CODES = frozenset({AsyncioCells.run_code.__code__})
