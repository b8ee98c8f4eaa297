"""An evaluator that runs cells as trio tasks in *this* process, on the caller's loop.

Used by :mod:`trikernel.embed` to attach a notebook or console to a running trio
application. It has the evaluator interface the kernel calls (``execute``,
``interrupt``, ``request``, ``send_comm``, ``aclose``) and is opened with
:func:`open_inprocess_evaluator`.

Theory of operation
-------------------
* A cell is compiled with ``ast.PyCF_ALLOW_TOP_LEVEL_AWAIT``; when the code object is a
  coroutine it is awaited, so ``await trio.sleep(1)`` runs on the application's loop
  while every other task of the application keeps running. The last expression
  statement is evaluated separately and becomes the ``execute_result``.
* Each cell runs in a cancel scope; ``interrupt()`` cancels it and the cell ends with a
  ``KeyboardInterrupt`` error. A cell that never reaches a checkpoint (a synchronous
  loop) blocks the whole application and cannot be interrupted: that is the price of
  running in-process.
* Output routing is by a :class:`contextvars.ContextVar` set while a cell runs. trio
  copies the context into tasks started from the cell, so prints of tasks started by a
  cell also go to the frontend, while the application's own prints do not. While any
  in-process evaluator is open, ``sys.stdout``/``sys.stderr`` are replaced by one proxy
  that consults the variable (and ``builtins.input`` by one that refuses to block the
  loop inside cells: ``await ainput(prompt)`` does the stdin round trip instead).
* Outputs are queued in order (stream text coalesced) and sent by a flusher task, and
  every output of a cell is sent before ``execute`` returns.
* ``background`` in the namespace starts tasks that outlive the cell; their exceptions
  become ``error`` outputs and never reach the application.
"""

from __future__ import annotations

import ast
import builtins
import contextvars
import fnmatch
import inspect
import itertools
import linecache
import logging
import re
import sys
import threading
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import CodeType, TracebackType
from typing import Any, TextIO

import trio

from .zmtp.codec import Buffer

__all__ = [
    "InProcessEvaluator",
    "Background",
    "BlockingInputError",
    "open_inprocess_evaluator",
    "ainput",
    "display",
]

log = logging.getLogger("trikernel.inprocess")

OutputCallback = Callable[[str, dict[str, Any], list[bytes]], Awaitable[None]]
InputCallback = Callable[[str, bool], Awaitable[str]]

FLUSH_INTERVAL = 0.01  # seconds of stream output coalesced into one message
FLUSH_SIZE = 1 << 16  # ...unless this many characters are waiting

_kernel_ids = itertools.count(1)


class BlockingInputError(RuntimeError):
    """input() was called inside an embedded cell, where it would block the app."""


# --------------------------------------------------------------------------- routing


@dataclass(eq=False)
class _Cell:
    """What a cell's task (and every task started from it) writes to."""

    evaluator: InProcessEvaluator
    request_input: InputCallback | None
    done: bool = False
    payload: list[dict[str, Any]] = field(default_factory=list)


_CURRENT: contextvars.ContextVar[_Cell | None] = contextvars.ContextVar(
    "trikernel_inprocess_cell", default=None
)


def _current_evaluator() -> InProcessEvaluator | None:
    cell = _CURRENT.get()
    if cell is None or cell.evaluator._closed:
        return None
    return cell.evaluator


class _StreamProxy:
    """Stands in for sys.stdout / sys.stderr: cell writes go to the cell's kernel,
    everything else to the stream that was there before."""

    def __init__(self, name: str, original: TextIO | None) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        evaluator = _current_evaluator()
        if evaluator is not None:
            if not isinstance(text, str):
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            evaluator._write(self._name, text)
            return len(text)
        if self._original is None:
            return len(text)
        return self._original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        evaluator = _current_evaluator()
        if evaluator is not None:
            evaluator._wake()
        elif self._original is not None:
            self._original.flush()

    def isatty(self) -> bool:
        if _current_evaluator() is not None:
            return False
        return bool(self._original is not None and self._original.isatty())

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, fileno, buffer, ...: those of the real stream.
        return getattr(self._original, name)


def _refusing_input(prompt: object = "") -> str:
    if _current_evaluator() is not None:
        raise BlockingInputError(
            "input() would block the application's event loop (this kernel runs inside "
            "a trio application); use `await ainput(prompt)` instead"
        )
    return _installed.original_input(prompt)


@dataclass
class _Installed:
    count: int = 0
    stdout: _StreamProxy | None = None
    stderr: _StreamProxy | None = None
    original_input: Callable[..., str] = builtins.input


_installed = _Installed()


def _install() -> None:
    """Install the proxies (once, however many evaluators are open)."""
    _installed.count += 1
    if _installed.count > 1:
        return
    _installed.stdout = _StreamProxy("stdout", sys.stdout)
    _installed.stderr = _StreamProxy("stderr", sys.stderr)
    _installed.original_input = builtins.input
    sys.stdout = _installed.stdout  # type: ignore[assignment]
    sys.stderr = _installed.stderr  # type: ignore[assignment]
    builtins.input = _refusing_input


def _uninstall() -> None:
    _installed.count -= 1
    if _installed.count > 0:
        return
    # Restore only what is still ours: if someone replaced a stream after us, theirs
    # stays (and still writes through our proxy, which now passes everything on).
    if sys.stdout is _installed.stdout and _installed.stdout is not None:
        sys.stdout = _installed.stdout._original  # type: ignore[assignment]
    if sys.stderr is _installed.stderr and _installed.stderr is not None:
        sys.stderr = _installed.stderr._original  # type: ignore[assignment]
    if builtins.input is _refusing_input:
        builtins.input = _installed.original_input
    _installed.stdout = _installed.stderr = None


# --------------------------------------------------------------------------- namespace helpers


async def ainput(prompt: object = "", *, password: bool = False) -> str:
    """``input()`` for embedded cells: asks the frontend without blocking the loop."""
    cell = _CURRENT.get()
    if cell is None or cell.evaluator._closed:
        raise RuntimeError("ainput() works only inside a cell of an embedded trikernel")
    if cell.done:
        raise RuntimeError("ainput(): the cell that started this task has finished")
    if cell.request_input is None:
        raise EOFError("ainput(): this frontend does not accept input (allow_stdin is false)")
    await cell.evaluator._drain()  # what was printed before the prompt shows first
    return await cell.request_input(str(prompt), password)


class DisplayHandle:
    """Returned by ``display(..., display_id=...)``: update the output in place."""

    def __init__(self, display_id: str) -> None:
        self.display_id = display_id

    def display(self, obj: Any, **kwargs: Any) -> None:
        display(obj, display_id=self.display_id, **kwargs)

    def update(self, obj: Any, **kwargs: Any) -> None:
        display(obj, display_id=self.display_id, update=True, **kwargs)

    def __repr__(self) -> str:
        return f"<DisplayHandle display_id={self.display_id}>"


def display(
    *objs: Any,
    raw: bool = False,
    metadata: dict[str, Any] | None = None,
    transient: dict[str, Any] | None = None,
    display_id: str | bool | None = None,
    update: bool = False,
) -> DisplayHandle | None:
    """Publish ``objs`` as display_data (rich reprs through IPython's formatter).

    ``raw=True`` takes each object as a ready mimebundle. Outside a cell it prints
    the objects' reprs, as ``print`` would.
    """
    evaluator = _current_evaluator()
    if display_id is True:
        from .messages import new_id

        display_id = new_id()
    if evaluator is None:
        for obj in objs:
            print(repr(obj))
    else:
        for obj in objs:
            md: dict[str, Any]
            if raw:
                data, md = dict(obj), {}
            else:
                data, md = evaluator._format(obj)
            if metadata:
                md = {**md, **metadata}
            content: dict[str, Any] = {"data": data, "metadata": md, "transient": {}}
            if transient:
                content["transient"].update(transient)
            if display_id:
                content["transient"]["display_id"] = display_id
            evaluator._emit("update_display_data" if update else "display_data", content)
    return DisplayHandle(display_id) if isinstance(display_id, str) and display_id else None


class _Exit:
    """``exit``/``quit`` in an embedded namespace: disconnect the frontend.

    ``exit()`` asks the console to quit and keep the kernel (the application) running;
    ``exit(keep_kernel=False)`` lets the console shut the embedded kernel down, which
    still never stops the application.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __repr__(self) -> str:
        return f"Use {self._name}() to disconnect this frontend; the application keeps running"

    def __call__(self, keep_kernel: bool = True) -> None:
        cell = _CURRENT.get()
        if cell is None or cell.done:
            raise RuntimeError(f"{self._name}() works only in a cell of an embedded trikernel")
        cell.payload[:] = [{"source": "ask_exit", "keepkernel": bool(keep_kernel)}]


def clear_output(wait: bool = False) -> None:
    """Clear the output of the current cell (``wait``: when new output arrives)."""
    evaluator = _current_evaluator()
    if evaluator is not None:
        evaluator._emit("clear_output", {"wait": bool(wait)})


class Background:
    """``background`` in an embedded namespace: start tasks that outlive the cell.

    Like a trio nursery's ``start_soon`` / ``start``, but a task that raises shows the
    error in the frontend instead of taking the application down. Tasks end when the
    embedded kernel closes, or with ``cancel_all()``.
    """

    def __init__(self, nursery: trio.Nursery, evaluator: InProcessEvaluator) -> None:
        self._nursery = nursery
        self._evaluator = evaluator
        self._scopes: dict[trio.CancelScope, str] = {}

    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: Any = None
    ) -> None:
        label = _task_name(async_fn, name)
        self._nursery.start_soon(self._guard, async_fn, args, label, False, name=label)

    async def start(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: Any = None
    ) -> Any:
        """Like ``nursery.start``: errors before ``task_status.started()`` are raised here."""
        label = _task_name(async_fn, name)
        return await self._nursery.start(self._guard, async_fn, args, label, True, name=label)

    @property
    def tasks(self) -> list[str]:
        """Names of the background tasks still running."""
        return sorted(self._scopes.values())

    def cancel_all(self) -> None:
        for scope in list(self._scopes):
            scope.cancel()

    async def _guard(
        self,
        async_fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        label: str,
        use_status: bool,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started(value)

        try:
            with trio.CancelScope() as scope:
                self._scopes[scope] = label
                try:
                    if use_status:
                        await async_fn(*args, task_status=_Status())
                    else:
                        await async_fn(*args)
                finally:
                    del self._scopes[scope]
        except BaseException as exc:
            if _has_cancelled(exc) or (use_status and not started):
                raise
            self._evaluator._emit_error(exc, header=f"Exception in background task {label}:")

    def __repr__(self) -> str:
        return f"<Background tasks={self.tasks}>"


def _task_name(async_fn: Any, name: Any) -> str:
    if name is not None:
        return str(name)
    return str(getattr(async_fn, "__qualname__", None) or repr(async_fn))


def _has_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, trio.Cancelled):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is not None
    return False


# --------------------------------------------------------------------------- the evaluator


@dataclass
class _Stream:
    name: str
    chunks: list[str] = field(default_factory=list)


_Item = _Stream | tuple[str, dict[str, Any], list[bytes]]


class InProcessEvaluator:
    """Runs cells in ``namespace`` on the current trio loop. Open with
    :func:`open_inprocess_evaluator`."""

    def __init__(self, on_output: OutputCallback, namespace: dict[str, Any] | None = None) -> None:
        self.on_output = on_output
        self.namespace: dict[str, Any] = (
            {"__name__": "__console__", "__doc__": None} if namespace is None else namespace
        )
        self.execution_count = 0
        self.history: list[str] = []
        self.background: Background | None = None
        self._id = next(_kernel_ids)
        self._scope: trio.CancelScope | None = None
        self._closed = False
        self._pending: list[_Item] = []
        self._pending_size = 0
        self._lock = threading.Lock()  # _pending: print() may come from worker threads
        self._send_lock = trio.Lock()  # one drain at a time keeps outputs in order
        self._wakeup = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._loop_thread = threading.get_ident()
        self._filenames: list[str] = []
        self._serial = 0
        self._formatter: Any = None
        self._completer: Any = None
        self._transformer: Any = None
        self._inspector: Any = None

    # ---- execute -----------------------------------------------------------

    async def execute(
        self,
        content: dict[str, Any],
        *,
        request_input: InputCallback | None,
        parent: dict[str, Any] | None = None,  # unused: no widgets in-process
    ) -> dict[str, Any]:
        code = str(content.get("code", ""))
        silent = bool(content.get("silent", False))
        stored = bool(content.get("store_history", not silent)) and not silent
        if stored:
            self.execution_count += 1
            self.history.append(code)
        count = self.execution_count
        cell = _Cell(self, request_input)
        token = _CURRENT.set(cell)
        try:
            reply = await self._run_cell(code, count, silent, stored, cell)
            if reply["status"] == "ok":
                reply["user_expressions"] = self._user_expressions(
                    content.get("user_expressions") or {}
                )
        finally:
            cell.done = True
            _CURRENT.reset(token)
        await self._drain()
        return reply

    async def _run_cell(
        self, code: str, count: int, silent: bool, stored: bool, cell: _Cell
    ) -> dict[str, Any]:
        # Unique per cell (linecache holds its source for tracebacks of the functions it
        # defines); the kernel number keeps two embedded kernels apart.
        self._serial += 1
        filename = (
            f"<cell-{self._id}-{count}>" if stored else f"<cell-{self._id}-{count}.{self._serial}>"
        )
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        self._filenames.append(filename)
        try:
            body, last = _compile(code, filename)
        except (SyntaxError, ValueError, OverflowError, MemoryError, RecursionError) as exc:
            return self._error_reply(exc, count)
        value: Any = None
        error: BaseException | None = None
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                try:
                    if body is not None:
                        await self._run(body)
                    if last is not None:
                        value = await self._run(last)
                finally:
                    self._scope = None
        except BaseException as exc:
            # trio.Cancelled still propagating here is not ours (the app or kernel is
            # closing): let it go. Anything else the cell raised, including
            # KeyboardInterrupt and SystemExit, is the cell's error, not the app's.
            if _has_cancelled(exc):
                raise
            error = exc
        if error is not None:
            return self._error_reply(error, count)
        if scope.cancelled_caught:
            return self._error_reply(
                KeyboardInterrupt(), count, traceback_lines=["KeyboardInterrupt"]
            )
        if isinstance(value, _Exit):  # a bare `exit`, as IPython's autocall would
            value(True)
            value = None
        if last is not None and value is not None and not silent:
            self.namespace["_"] = value
            data, md = self._format(value)
            self._emit("execute_result", {"execution_count": count, "data": data, "metadata": md})
        return {
            "status": "ok",
            "execution_count": count,
            "user_expressions": {},
            "payload": list(cell.payload),
        }

    # Cells stay KI-unprotected even if the kernel's own tasks are protected: with trio's
    # default SIGINT handling, Ctrl-C then breaks a synchronous cell that blocks the loop.
    @trio.lowlevel.disable_ki_protection
    async def _run(self, code: CodeType) -> Any:
        result = eval(code, self.namespace)
        if code.co_flags & inspect.CO_COROUTINE:
            result = await result
        return result

    def _error_reply(
        self, exc: BaseException, count: int, traceback_lines: list[str] | None = None
    ) -> dict[str, Any]:
        error = self._emit_error(exc, lines=traceback_lines)
        return {
            "status": "error",
            "execution_count": count,
            **error,
            "user_expressions": {},
            "payload": [],
        }

    def _emit_error(
        self, exc: BaseException, *, header: str | None = None, lines: list[str] | None = None
    ) -> dict[str, Any]:
        if lines is None:
            lines = _format_traceback(exc)
        if header:
            lines = [header, *lines]
        error = {"ename": type(exc).__name__, "evalue": str(exc), "traceback": lines}
        self._emit("error", dict(error))
        return error

    def _user_expressions(self, expressions: dict[str, Any]) -> dict[str, Any]:
        results: dict[str, Any] = {}
        for name, expr in expressions.items():
            try:
                value = eval(str(expr), self.namespace)
                data, md = self._format(value)
                results[name] = {"status": "ok", "data": data, "metadata": md}
            except Exception as exc:
                results[name] = {
                    "status": "error",
                    "ename": type(exc).__name__,
                    "evalue": str(exc),
                    "traceback": _format_traceback(exc),
                }
        return results

    def interrupt(self) -> None:
        """Cancel the running cell (its cancel scope); a no-op between cells."""
        if self._scope is not None:
            self._scope.cancel()

    # ---- outputs -----------------------------------------------------------

    def _format(self, obj: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        try:
            if self._formatter is None:
                self._formatter = _new_formatter()
            data, md = self._formatter.format(obj)
            if "text/plain" in data:
                return dict(data), dict(md)
        except Exception:
            log.debug("rich formatting failed", exc_info=True)
        try:
            text = repr(obj)
        except Exception as exc:
            text = f"<repr of {type(obj).__name__} failed: {exc!r}>"
        return {"text/plain": text}, {}

    def _write(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            last = self._pending[-1] if self._pending else None
            if isinstance(last, _Stream) and last.name == name:
                last.chunks.append(text)
            else:
                self._pending.append(_Stream(name, [text]))
            self._pending_size += len(text)
        self._wake()

    def _emit(
        self, msg_type: str, content: dict[str, Any], buffers: list[bytes] | None = None
    ) -> None:
        with self._lock:
            self._pending.append((msg_type, content, list(buffers or [])))
        self._wake()

    def _wake(self) -> None:
        if threading.get_ident() == self._loop_thread:
            self._wakeup.set()
        else:
            try:
                self._token.run_sync_soon(self._wakeup_set)
            except trio.RunFinishedError:
                pass

    def _wakeup_set(self) -> None:
        self._wakeup.set()

    async def _flusher(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            if self._pending_size < FLUSH_SIZE:
                await trio.sleep(FLUSH_INTERVAL)
            await self._drain()

    async def _drain(self) -> None:
        """Send every queued output, in order."""
        async with self._send_lock:
            while True:
                with self._lock:
                    items, self._pending = self._pending, []
                    self._pending_size = 0
                if not items:
                    return
                for item in items:
                    buffers: list[bytes]
                    if isinstance(item, _Stream):
                        msg_type, content, buffers = (
                            "stream",
                            {"name": item.name, "text": "".join(item.chunks)},
                            [],
                        )
                    else:
                        msg_type, content, buffers = item
                    try:
                        await self.on_output(msg_type, content, buffers)
                    except Exception:
                        # e.g. a mimebundle that is not JSON: lose that output, not the kernel.
                        log.exception("could not publish a %s output", msg_type)

    # ---- other requests ----------------------------------------------------

    async def request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        handler = {
            "complete_request": self._complete,
            "inspect_request": self._inspect,
            "history_request": self._history,
            "is_complete_request": self._is_complete,
            "comm_info_request": self._comm_info,
        }.get(msg_type)
        if handler is None:
            return {
                "status": "error",
                "ename": "ValueError",
                "evalue": f"unknown request {msg_type}",
                "traceback": [],
            }
        try:
            return handler(content)
        except Exception as exc:
            log.exception("%s failed", msg_type)
            return {
                "status": "error",
                "ename": type(exc).__name__,
                "evalue": str(exc),
                "traceback": [],
            }

    def _complete(self, content: dict[str, Any]) -> dict[str, Any]:
        code = str(content.get("code", ""))
        cursor = _cursor(content, code)
        match = re.search(r"[A-Za-z_][\w.]*$", code[:cursor])
        text = match.group(0) if match else ""
        matches: list[str] = []
        if text:
            if self._completer is None:
                from IPython.core.completer import Completer

                self._completer = Completer(namespace=self.namespace)
            try:
                found = (
                    self._completer.attr_matches(text)
                    if "." in text
                    else self._completer.global_matches(text)
                )
            except Exception:
                found = []
            matches = sorted(
                set(found), key=lambda m: (m.startswith("_") and not text.startswith("_"), m)
            )
        return {
            "status": "ok",
            "matches": matches,
            "cursor_start": cursor - len(text),
            "cursor_end": cursor,
            "metadata": {},
        }

    def _inspect(self, content: dict[str, Any]) -> dict[str, Any]:
        code = str(content.get("code", ""))
        cursor = _cursor(content, code)
        left = re.search(r"[\w.]*$", code[:cursor])
        right = re.match(r"\w*", code[cursor:])
        name = ((left.group(0) if left else "") + (right.group(0) if right else "")).strip(".")
        found, obj = self._lookup(name)
        if not found:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}
        level = int(content.get("detail_level", 0) or 0)
        try:
            if self._inspector is None:
                from IPython.core.oinspect import Inspector

                self._inspector = Inspector(theme_name="nocolor")
            text = self._inspector._get_info(obj, name, detail_level=level)["text/plain"]
        except Exception:
            import pydoc

            text = pydoc.render_doc(obj, title="%s", renderer=pydoc.plaintext)  # type: ignore[attr-defined]
        return {"status": "ok", "found": True, "data": {"text/plain": text}, "metadata": {}}

    def _lookup(self, name: str) -> tuple[bool, Any]:
        if not name or not re.fullmatch(r"[A-Za-z_]\w*(\.\w+)*", name):
            return False, None
        first, *rest = name.split(".")
        if first in self.namespace:
            obj = self.namespace[first]
        elif hasattr(builtins, first):
            obj = getattr(builtins, first)
        else:
            return False, None
        for part in rest:
            try:
                obj = getattr(obj, part)
            except Exception:
                return False, None
        return True, obj

    def _history(self, content: dict[str, Any]) -> dict[str, Any]:
        entries = [(0, n, code) for n, code in enumerate(self.history, 1)]
        kind = content.get("hist_access_type", "tail")
        n = content.get("n")
        if kind == "range":
            start = int(content.get("start") or 1)
            stop = content.get("stop")
            entries = [e for e in entries if e[1] >= start and (stop is None or e[1] < int(stop))]
        elif kind == "search":
            pattern = str(content.get("pattern") or "*")
            entries = [e for e in entries if fnmatch.fnmatch(e[2], pattern)]
            if content.get("unique"):
                seen: set[str] = set()
                unique = []
                for e in reversed(entries):
                    if e[2] not in seen:
                        seen.add(e[2])
                        unique.append(e)
                entries = unique[::-1]
        if kind in ("tail", "search") and isinstance(n, int) and n > 0:
            entries = entries[-n:]
        if content.get("output"):
            return {"status": "ok", "history": [[s, i, [c, None]] for s, i, c in entries]}
        return {"status": "ok", "history": [list(e) for e in entries]}

    def _is_complete(self, content: dict[str, Any]) -> dict[str, Any]:
        if self._transformer is None:
            from IPython.core.inputtransformer2 import TransformerManager

            self._transformer = TransformerManager()
        status, indent = self._transformer.check_complete(str(content.get("code", "")))
        reply: dict[str, Any] = {"status": status}
        if status == "incomplete":
            reply["indent"] = " " * (indent or 0)
        return reply

    def _comm_info(self, content: dict[str, Any]) -> dict[str, Any]:
        return {"status": "ok", "comms": {}}

    async def send_comm(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: Sequence[Buffer],
        *,
        parent: dict[str, Any] | None = None,
    ) -> None:
        # No comm targets in-process (no widgets): refuse an open as ipykernel does for
        # an unknown target, so the frontend does not wait for it.
        if msg_type == "comm_open" and content.get("comm_id"):
            await self.on_output("comm_close", {"comm_id": content["comm_id"], "data": {}}, [])

    async def aclose(self) -> None:
        self._closed = True
        if self.background is not None:
            self.background.cancel_all()
        for filename in self._filenames:
            linecache.cache.pop(filename, None)
        self._filenames.clear()

    def __repr__(self) -> str:
        return f"<InProcessEvaluator #{self._id} cells={self.execution_count}>"


def _new_formatter() -> Any:
    from IPython.core.formatters import DisplayFormatter

    formatter = DisplayFormatter()
    try:
        # What IPython's inline backend registers: display(fig) shows a PNG. By name,
        # so matplotlib is not imported unless the app uses it.
        from IPython.core.pylabtools import print_figure

        formatter.formatters["image/png"].for_type_by_name(
            "matplotlib.figure", "Figure", lambda fig: print_figure(fig, "png")
        )
    except Exception:
        log.debug("no figure formatter", exc_info=True)
    return formatter


def _cursor(content: dict[str, Any], code: str) -> int:
    cursor = content.get("cursor_pos")
    if not isinstance(cursor, int) or not 0 <= cursor <= len(code):
        return len(code)
    return cursor


_FLAGS = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT


def _compile(code: str, filename: str) -> tuple[CodeType | None, CodeType | None]:
    """The cell without its last expression statement, and that expression."""
    tree = compile(code, filename, "exec", flags=ast.PyCF_ONLY_AST | _FLAGS, dont_inherit=True)
    assert isinstance(tree, ast.Module)
    last: CodeType | None = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        expr = ast.Expression(tree.body[-1].value)
        del tree.body[-1]
        last = compile(expr, filename, "eval", flags=_FLAGS, dont_inherit=True)
    body = compile(tree, filename, "exec", flags=_FLAGS, dont_inherit=True) if tree.body else None
    return body, last


def _format_traceback(exc: BaseException) -> list[str]:
    """The traceback from the cell's first frame on (this module's frames left out)."""
    tb: TracebackType | None = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    try:
        if isinstance(exc, SyntaxError):
            text = "".join(traceback.format_exception_only(type(exc), exc))
        else:
            text = "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception:
        text = f"{type(exc).__name__}: <could not format the traceback>"
    return text.rstrip("\n").split("\n")


@asynccontextmanager
async def open_inprocess_evaluator(
    on_output: OutputCallback, namespace: dict[str, Any] | None = None
) -> AsyncIterator[InProcessEvaluator]:
    """Run cells of a kernel in this process and loop, in ``namespace`` (a fresh dict
    when None). ``background``, ``display``, ``clear_output`` and ``ainput`` are put
    in the namespace. Leaving the block cancels the background tasks."""
    evaluator = InProcessEvaluator(on_output, namespace)
    _install()
    try:
        async with trio.open_nursery() as nursery:
            evaluator.background = Background(nursery, evaluator)
            evaluator.namespace.update(
                background=evaluator.background,
                display=display,
                clear_output=clear_output,
                ainput=ainput,
                exit=_Exit("exit"),
                quit=_Exit("quit"),
            )
            nursery.start_soon(evaluator._flusher, name="trikernel.inprocess.flusher")
            try:
                yield evaluator
            finally:
                await evaluator.aclose()
                nursery.cancel_scope.cancel()
    finally:
        _uninstall()
