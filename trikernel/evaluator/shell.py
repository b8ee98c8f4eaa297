"""IPython configured for a kernel whose only way out is the frame pipe.

Everything the user's code produces becomes an ``output`` frame written by one
``Outbox``: ``sys.stdout``/``sys.stderr`` writes (coalesced), display_data,
update_display_data, clear_output, execute_result (via the displayhook), error
(via ``_showtraceback``) and comm messages. The Outbox is thread-safe and keeps
one order for all of them: pending stream text is always flushed before any
other frame, so a print followed by a display arrives in that order.

Stream coalescing: writes are appended to a buffer; it is flushed when it
reaches ``FLUSH_SIZE`` characters (in the writing thread: back-pressure), when
the stream name changes, before any other frame, on ``flush()``, and by a small
flusher thread ``FLUSH_DELAY`` seconds after the first unflushed write, even
while the cell blocks the trio loop.

Threads: the flusher thread and any user thread may write; the Outbox lock
serialises them. Frames are written with blocking ``os.write`` on the outgoing
pipe, so a slow bridge slows the writer (never drops output).
"""

from __future__ import annotations

import base64
import bdb
import builtins
import codecs
import datetime
import functools
import getpass
import hashlib
import importlib.util
import io
import json
import os
import sys
import tempfile
import threading
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

import comm
import comm.base_comm
import trio
from IPython.core import ultratb
from IPython.core.compilerop import CachingCompiler
from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.core.page import as_hook
from IPython.utils.tokenutil import token_at_cursor
from traitlets import Any as AnyTrait
from traitlets import Type

from .aio import AsyncioThread, exec_code, uses_asyncio
from .protocol import OUTPUT, Buffer, Frame, encode_frame

__all__ = [
    "Outbox",
    "StreamWriter",
    "KernelShell",
    "KernelFacade",
    "create_shell",
    "request_message",
    "StdinHandler",
]

StdinHandler = Callable[[str, bool], str]

FLUSH_SIZE = 64 * 1024  # characters
FLUSH_DELAY = 0.05  # seconds


def json_default(obj: Any) -> Any:
    """What JSON cannot encode: bytes as base64 (as ipykernel does for images)."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(obj)).decode("ascii")
    if isinstance(obj, datetime.date | datetime.time):
        return obj.isoformat()
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


_CONTENT_ENCODER = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=json_default
)


def pack_content(content: dict[str, Any]) -> bytes:
    """Message content as wire JSON: UTF-8, no NaN (Jupyter clients reject it)."""
    try:
        return _CONTENT_ENCODER.encode(content).encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates: \udXXX escapes keep them
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=json_default
        ).encode("ascii")


def write_all(fd: int, pieces: list[Buffer]) -> None:
    """Blocking write of all ``pieces``; if the bridge is gone, nobody can hear us: exit."""
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
    except BrokenPipeError:
        os._exit(1)


class Outbox:
    """The one ordered, thread-safe way out: frames and coalesced stream text."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._name = ""
        self._parts: list[str] = []
        self._size = 0
        self._muted = False
        #: called after each write_stream/send_output, outside the lock, in the
        #: writing thread: the evaluator loop raises a deferred KeyboardInterrupt there
        self.safe_point: Callable[[], None] | None = None
        threading.Thread(target=self._flusher, name="trikernel-flusher", daemon=True).start()

    # -- producers -------------------------------------------------------------
    def write_stream(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._parts and self._name != name:
                self._flush_locked()
            was_empty = not self._parts
            self._name = name
            self._parts.append(text)
            self._size += len(text)
            if self._size >= FLUSH_SIZE:
                self._flush_locked()
            elif was_empty:
                self._wake.notify()
        if self.safe_point is not None:
            self.safe_point()

    def send_output(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        metadata: dict[str, Any] | None = None,
        buffers: list[Buffer] | tuple[Buffer, ...] = (),
    ) -> None:
        """Send one iopub-bound message (dropped while muted, see ``set_muted``)."""
        # The content travels as the JSON bytes that go on the wire (first buffer), so
        # the kernel forwards them without decoding and encoding them again.
        packed = pack_content(content)  # may raise (NaN, unknown types): before any I/O
        body = {"msg_type": msg_type, "metadata": metadata or {}, "packed": True}
        # Buffers are written from the caller's memory, before this returns.
        data = encode_frame(Frame(OUTPUT, body, (packed, *buffers)), default=json_default)
        with self._lock:
            self._flush_locked()
            if not self._muted:
                write_all(self._fd, data)
        if self.safe_point is not None:
            self.safe_point()

    def send(self, frame: Frame) -> None:
        """Send a control frame (reply, input request, ...), after pending text."""
        data = encode_frame(frame, default=json_default)
        with self._lock:
            self._flush_locked()
            write_all(self._fd, data)

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def set_muted(self, muted: bool) -> None:
        """While muted (silent cells), output frames and stream text are dropped."""
        with self._lock:
            self._flush_locked()
            self._muted = muted

    # -- internals ---------------------------------------------------------------
    def _flush_locked(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        if self._muted:
            return
        content = {"name": self._name, "text": text}
        body = {"msg_type": "stream", "content": content, "metadata": {}}
        write_all(self._fd, encode_frame(Frame(OUTPUT, body)))

    def _flusher(self) -> None:
        with self._lock:
            while True:
                while not self._parts:
                    self._wake.wait()
                deadline = time.monotonic() + FLUSH_DELAY
                while self._parts and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                self._flush_locked()


class _BinaryWriter(io.RawIOBase):
    """``sys.stdout.buffer``: bytes decoded as UTF-8 into the text stream."""

    def __init__(self, text: StreamWriter) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = memoryview(data).tobytes()
        self._text.write(self._decoder.decode(raw))
        return len(raw)

    def flush(self) -> None:
        self._text.flush()


class StreamWriter(io.TextIOBase):
    """Replacement for ``sys.stdout``/``sys.stderr`` that feeds the Outbox."""

    def __init__(self, outbox: Outbox, name: str, fd: int) -> None:
        self._outbox = outbox
        self._stream_name = name
        self._fd = fd
        self.buffer = _BinaryWriter(self)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"<{self._stream_name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # the real fd 1/2: also forwarded, by the bridge

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._outbox.write_stream(self._stream_name, text)
        return len(text)

    def flush(self) -> None:
        self._outbox.flush()


# ---------------------------------------------------------------------------
# display


class KernelDisplayHook(DisplayHook):
    """``Out[n]``: one execute_result per displayed value, with its count."""

    _content: dict[str, Any] | None = None

    def start_displayhook(self) -> None:
        self._content = {"data": {}, "metadata": {}, "execution_count": self.prompt_count}

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
        assert self._content is not None
        self._content["data"] = format_dict
        self._content["metadata"] = md_dict or {}

    def finish_displayhook(self) -> None:
        content, self._content = self._content, None
        if content and content["data"]:
            _outbox_of(self.shell).send_output("execute_result", content)


class KernelDisplayPublisher(DisplayPublisher):
    """display() / update_display() / clear_output() as iopub messages."""

    def publish(  # type: ignore[override]
        self,
        data: dict,
        metadata: dict | None = None,
        source: Any = None,
        *,
        transient: dict | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self._validate_data(data, metadata)
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        msg_type = "update_display_data" if update else "display_data"
        _outbox_of(self.shell).send_output(msg_type, content)

    def clear_output(self, wait: bool = False) -> None:
        _outbox_of(self.shell).send_output("clear_output", {"wait": bool(wait)})


def _outbox_of(shell: Any) -> Outbox:
    assert shell is not None
    outbox: Outbox = shell.outbox
    return outbox


# ---------------------------------------------------------------------------
# comms


def install_comms(outbox: Outbox) -> comm.base_comm.CommManager:
    """Route the ``comm`` package (what ipywidgets 8 uses) over the pipe."""
    manager = comm.base_comm.CommManager()

    class PipeComm(comm.base_comm.BaseComm):
        def publish_msg(
            self,
            msg_type: str,
            data: dict | None = None,
            metadata: dict | None = None,
            buffers: list | None = None,
            **keys: Any,
        ) -> None:
            content = {"data": data or {}, "comm_id": self.comm_id, **keys}
            outbox.send_output(msg_type, content, metadata=metadata, buffers=buffers or ())

    comm.create_comm = PipeComm
    comm.get_comm_manager = lambda: manager
    return manager


# ---------------------------------------------------------------------------
# the request being carried out


def request_message(
    parent: dict[str, Any] | None, content: dict[str, Any], buffers: list[Buffer] | None = None
) -> dict[str, Any]:
    """A frame's request as the message dict ipykernel hands around (an empty header
    if the frame names no request)."""
    parent = parent or {}
    header = parent.get("header") or {}
    return {
        "header": header,
        "msg_id": header.get("msg_id", ""),
        "msg_type": header.get("msg_type", ""),
        "parent_header": parent.get("parent_header") or {},
        "metadata": parent.get("metadata") or {},
        "content": content,
        "buffers": buffers or [],
    }


class KernelFacade:
    """``get_ipython().kernel``: the part of ipykernel's Kernel that libraries use.

    ipywidgets' ``Output`` sets its ``msg_id`` from ``get_parent()`` so that the
    frontend captures the outputs of that request. The kernel process attributes
    every output to the latest execute or comm request (a background task's too),
    so ``latest_request`` is that same request: set from each execute and comm
    frame, in arrival order.
    """

    def __init__(self, comm_manager: comm.base_comm.CommManager) -> None:
        self.comm_manager = comm_manager
        self.latest_request: dict[str, Any] = {}

    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        # Control requests (interrupt, shutdown) never reach the evaluator.
        return self.latest_request if channel in (None, "shell") else {}

    @property
    def _parent_header(self) -> dict[str, Any]:
        return self.get_parent()  # ipykernel < 6 (and ipywidgets' fallback)


# ---------------------------------------------------------------------------
# the shell


def _only_cancellations(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split((trio.Cancelled, KeyboardInterrupt))[1] is None
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


def _user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` cut before the first frame of trio's, asyncio's or trikernel's own code."""
    kept = []
    while tb is not None and not tb.tb_frame.f_globals.get("__name__", "").startswith(
        ("trio.", "asyncio.", "trikernel.")
    ):
        kept.append(tb)
        tb = tb.tb_next
    return _chain(kept)


def _without_plumbing(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` without the frames of ``KernelShell.run_code`` and ``evaluator.aio``
    (IPython hides its own run_code from tracebacks the same way)."""
    kept = []
    while tb is not None:
        frame = tb.tb_frame
        if not (
            frame.f_code is KernelShell.run_code.__code__
            or frame.f_globals.get("__name__") == "trikernel.evaluator.aio"
        ):
            kept.append(tb)
        tb = tb.tb_next
    return _chain(kept)


def _chain(entries: list[types.TracebackType]) -> types.TracebackType | None:
    """A new traceback chain made of ``entries``, in order."""
    result = None
    for entry in reversed(entries):
        result = types.TracebackType(result, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return result


_ASYNCIO_ON_TRIO = ("unrecognized yield message", "no running event loop")
_TRIO_ON_ASYNCIO = ("must be called from async context", "Task got bad yield")


def _contains_group(exc: BaseException | None) -> bool:
    while exc is not None:
        if isinstance(exc, BaseExceptionGroup):
            return True
        exc = exc.__context__
    return False


class CellCompiler(CachingCompiler):
    """Names cells as ipykernel does: a ``.py`` path in a per-process temp dir that is
    never written (IPython keeps the source in linecache). Warnings and tools made
    for ipykernel see the names they expect, and IPython renders cell frames in
    tracebacks without stack_data, as under ipykernel: stack_data compiles pygments'
    Python lexer anew for every traceback, about 8 ms of every interrupt."""

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        digest = hashlib.sha1(transformed_code.encode("utf-8", "surrogatepass")).hexdigest()
        return os.path.join(_cell_dir(), f"{number}-{digest[:12]}.py")


@functools.cache
def _cell_dir() -> str:
    try:
        temp = tempfile.gettempdir()
    except OSError:  # no writable temp dir: the name is never written anyway
        temp = "/tmp"
    return os.path.join(temp, f"trikernel_{os.getpid()}")


class KernelShell(InteractiveShell):
    """InteractiveShell whose outputs, errors, input() and payloads go over the pipe."""

    compiler_class = Type(CellCompiler)
    displayhook_class = Type(KernelDisplayHook)
    display_pub_class = Type(KernelDisplayPublisher)
    outbox = AnyTrait()

    #: set by the loop while a cell runs with allow_stdin; None -> input() raises
    stdin_handler: StdinHandler | None = None
    #: set by the loop when the running cell was interrupted by cancellation
    interrupted = False
    _last_error: dict[str, Any] | None = None
    #: which loop runs top-level await: "auto", "trio" or "asyncio" (%autoawait)
    await_mode = "auto"
    _cell_loop: str | None = None  # the running await cell's loop: "trio" or "asyncio"
    _asyncio: AsyncioThread | None = None

    if importlib.util.find_spec("pexpect") is None:  # system_piped needs pexpect
        system = InteractiveShell.system_raw

    # -- setup overrides ---------------------------------------------------------
    def init_virtualenv(self) -> None:
        pass  # the kernel runs in the interpreter it was started with

    def init_environment(self) -> None:
        os.environ.update(PAGER="cat", GIT_PAGER="cat", CLICOLOR="1", TERM="xterm-color")

    def init_magics(self) -> None:
        super().init_magics()
        self.register_magic_function(self._autoawait_magic, "line", "autoawait")  # type: ignore[arg-type]

    def init_hooks(self) -> None:
        super().init_hooks()
        self.set_hook("show_in_pager", as_hook(self._page_payload), 99)

    def enable_gui(self, gui: str | None = None) -> None:
        if gui not in (None, "inline"):
            raise UsageError(f"trikernel has no {gui!r} event loop integration; use inline")

    # -- payloads (exit, set_next_input, pager), as ipykernel sends them ----------
    @property
    def _payloads(self) -> Any:
        manager = self.payload_manager
        assert manager is not None
        return manager

    def _page_payload(self, strg: Any, start: int = 0, screen_lines: int = 0) -> None:
        data = strg if isinstance(strg, dict) else {"text/plain": strg}
        self._payloads.write_payload({"source": "page", "data": data, "start": start})

    def ask_exit(self) -> None:
        self._payloads.write_payload({"source": "ask_exit", "keepkernel": False})

    def set_next_input(self, text: str, replace: bool = False) -> None:
        payload = {"source": "set_next_input", "text": text, "replace": replace}
        self._payloads.write_payload(payload)

    # -- errors ------------------------------------------------------------------
    def showtraceback(
        self,
        exc_tuple: Any = None,
        filename: str | None = None,
        tb_offset: int | None = None,
        exception_only: bool = False,
        running_compiled_code: bool = False,
    ) -> None:
        try:
            etype, value, tb = self._get_exc_info(exc_tuple)
        except ValueError:
            return super().showtraceback(exc_tuple, filename, tb_offset, exception_only)
        if self.interrupted and _only_cancellations(value):
            # An awaiting cell was cancelled by an interrupt: say so in the usual words.
            etype, value = KeyboardInterrupt, KeyboardInterrupt()
        if etype is KeyboardInterrupt:
            tb = _user_frames(tb)  # stop where trio's or our own code begins
        if _contains_group(value) and not exception_only and etype is not UsageError:
            # IPython prints groups with traceback.print_exc (no error message): format
            # them here so the error reaches the frontend and the reply.
            text = "".join(traceback.format_exception(etype, value, tb))
            return self._showtraceback(etype, value, text.rstrip("\n").split("\n"))
        super().showtraceback(
            (etype, value, tb), filename, tb_offset, exception_only, running_compiled_code
        )

    def _format_exception_for_storage(self, exception: Any, *args: Any, **kwargs: Any) -> Any:
        # History keeps a formatted copy of each cell's exception (IPython 9); an
        # interrupted awaiting cell would pay for formatting trio's stack twice.
        if isinstance(exception, KeyboardInterrupt) or (
            self.interrupted and _only_cancellations(exception)
        ):
            return {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
        return super()._format_exception_for_storage(exception, *args, **kwargs)

    def warm_up_tracebacks(self) -> None:
        """Format one traceback in a thread, so the first real one (often an
        interrupt) does not pay for IPython's imports and caches (~60-100 ms).

        Its only frame has no source: formatting a real file would parse it, and on
        CPython 3.11 ``ast.parse`` in two threads at once can fail ("SystemError: AST
        constructor recursion depth mismatch") in either thread, the cell's included."""

        def warm_up() -> None:
            try:
                formatter = ultratb.AutoFormattedTB(mode=self.xmode, theme_name=self.colors)
                try:
                    exec(compile("raise KeyboardInterrupt", "<trikernel-warm-up>", "exec"), {})
                except KeyboardInterrupt as exc:
                    tb = exc.__traceback__.tb_next if exc.__traceback__ else None
                    formatter.structured_traceback(type(exc), exc, tb)
            except Exception:
                pass  # only a warm-up: a real traceback will say what is wrong

        threading.Thread(target=warm_up, name="trikernel-warm-up", daemon=True).start()

    def _showtraceback(self, etype: type, evalue: BaseException, stb: list[str]) -> None:
        self._last_error = {
            "ename": etype.__name__,
            "evalue": str(evalue),
            "traceback": list(stb),
        }
        self.outbox.send_output("error", dict(self._last_error))

    def show_background_error(self, exc: BaseException, task_name: str) -> None:
        """An exception in a background task: an error output, not the cell's error."""
        if isinstance(exc, BaseExceptionGroup):
            stb = "".join(traceback.format_exception(exc)).rstrip("\n").split("\n")
        else:
            stb = self.InteractiveTB.structured_traceback(type(exc), exc, exc.__traceback__)
        content = {
            "ename": type(exc).__name__,
            "evalue": str(exc),
            "traceback": [f"Exception in background task {task_name!r}:", *stb],
        }
        self.outbox.send_output("error", content)

    # -- stdin ---------------------------------------------------------------------
    def kernel_input(self, prompt: object = "") -> str:
        handler = self.stdin_handler
        if handler is None:
            raise StdinNotImplementedError(
                "input() was called, but this frontend does not support input requests"
            )
        return handler(str(prompt), False)

    def kernel_getpass(self, prompt: str = "Password: ", stream: Any = None) -> str:
        handler = self.stdin_handler
        if handler is None:
            raise StdinNotImplementedError(
                "getpass() was called, but this frontend does not support input requests"
            )
        return handler(str(prompt), True)

    # -- execution -------------------------------------------------------------------
    async def run_cell_for_kernel(
        self, code: str, *, silent: bool, store_history: bool
    ) -> ExecutionResult | None:
        """Run one cell on the current trio loop; None if it was cut short by KeyboardInterrupt."""
        self._last_error = None
        self._payloads.clear_payload()
        try:
            transformed, preprocessing = self.transform_cell(code), None
        except Exception:
            transformed, preprocessing = code, sys.exc_info()
        self._cell_loop = None  # a cell without top-level await runs here, as usual
        if preprocessing is None and self.should_run_async(code, transformed_cell=transformed):
            self._cell_loop = self._choose_await_loop(transformed)
        result = None
        try:
            result = await self.run_cell_async(
                code,
                store_history=store_history,
                silent=silent,
                transformed_cell=transformed,
                preprocessing_exc_tuple=preprocessing,
            )
        except KeyboardInterrupt:  # landed in IPython's own code, outside run_code
            self.showtraceback()
        finally:
            # run_cell() fires these around run_cell_async(); we call the latter
            # directly, so fire them here (matplotlib_inline shows figures on
            # post_execute).
            self.events.trigger("post_execute")
            if not silent and result is not None:
                self.events.trigger("post_run_cell", result)
        return result

    async def run_code(
        self,
        code_obj: types.CodeType,
        result: ExecutionResult | None = None,
        *,
        async_: bool = False,
    ) -> bool:
        """IPython's run_code, except that every statement of an asyncio cell runs on
        the asyncio thread (see ``evaluator.aio``); trio cells run in this task."""
        if self._cell_loop != "asyncio":
            failed = bool(await super().run_code(code_obj, result, async_=async_))
            if failed and async_ and result is not None:
                self._hint(result.error_in_exec, _ASYNCIO_ON_TRIO, "asyncio")
            return failed
        if self._asyncio is None:
            self._asyncio = AsyncioThread(self.show_background_error)
        namespaces = (self.user_global_ns, self.user_ns)
        old_excepthook, sys.excepthook = sys.excepthook, self.excepthook
        self.sys_excepthook = old_excepthook
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
            exc.__traceback__ = _without_plumbing(exc.__traceback__)
            if result is not None:
                result.error_in_exec = exc
            if isinstance(exc, SystemExit):
                self.showtraceback(exception_only=True)
            elif isinstance(exc, bdb.BdbQuit):
                pass
            elif isinstance(exc, self.custom_exceptions):
                self.CustomTB(type(exc), exc, exc.__traceback__)
            else:
                self.showtraceback((type(exc), exc, exc.__traceback__), running_compiled_code=True)
                self._hint(exc, _TRIO_ON_ASYNCIO, "trio")
            return True
        return False

    def _choose_await_loop(self, source: str) -> str:
        if self.await_mode != "auto":
            return self.await_mode
        return "asyncio" if uses_asyncio(source, self.user_ns) else "trio"

    def _hint(self, exc: BaseException | None, signs: tuple[str, ...], other: str) -> None:
        if exc is not None and any(sign in str(exc) for sign in signs):
            self.outbox.write_stream(
                "stderr",
                f"trikernel: this cell ran on {self._cell_loop} but seems to need {other}: "
                f"`%autoawait {other}` runs the await cells that follow on {other} "
                "(`%autoawait auto` picks per cell).\n",
            )

    def _autoawait_magic(self, line: str) -> None:
        """Choose the loop that runs top-level ``await``: ``%autoawait [auto|trio|asyncio|on|off]``.

        - ``auto`` (the default): asyncio for a cell that uses asyncio (imports it or
          names something from it), else trio;
        - ``trio``: the evaluator's persistent trio loop, where ``background`` tasks live;
        - ``asyncio``: a persistent asyncio loop in a thread of its own;
        - ``on`` / ``off``: allow or refuse top-level ``await``.

        Without an argument: show the current setting.
        """
        arg = line.strip().lower()
        if not arg:
            state = "on" if self.autoawait else "off"
            print(f"autoawait is {state}; top-level await runs on: {self.await_mode}")
        elif arg in ("auto", "trio", "asyncio"):
            self.await_mode, self.autoawait = arg, True
        elif arg in ("on", "true"):
            self.autoawait = True
        elif arg in ("off", "false"):
            self.autoawait = False
        else:
            raise UsageError(
                f"%autoawait {line.strip()}: trikernel runs top-level await on trio or "
                "asyncio; use %autoawait auto|trio|asyncio|on|off"
            )

    def show_interrupted(self) -> None:
        """The cell's cancellation escaped IPython: report it like a KeyboardInterrupt."""
        if self._last_error is None or self._last_error["ename"] != "KeyboardInterrupt":
            self._showtraceback(KeyboardInterrupt, KeyboardInterrupt(), ["KeyboardInterrupt"])

    def make_reply(
        self, result: ExecutionResult | None, user_expressions: dict[str, str]
    ) -> dict[str, Any]:
        """execute_reply content for the cell just run."""
        count = self.execution_count - 1
        if result is not None and result.success:
            payload = self._payloads.read_payload()
            self._payloads.clear_payload()
            return {
                "status": "ok",
                "execution_count": count,
                "user_expressions": self.user_expressions(user_expressions or {}),
                "payload": payload,
            }
        error = self._last_error
        if error is None:
            exc = result.error_before_exec or result.error_in_exec if result else None
            error = {
                "ename": type(exc).__name__ if exc else "UnknownError",
                "evalue": str(exc) if exc else "",
                "traceback": [],
            }
        return {"status": "error", "execution_count": count, **error}

    # -- requests other than execute -------------------------------------------------
    def handle_request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        handler = self._request_handlers().get(msg_type)
        if handler is None:
            return {"status": "error", "ename": "UnknownRequest", "evalue": msg_type}
        try:
            return handler(content)
        except Exception as exc:
            name, text = type(exc).__name__, str(exc)
            return {"status": "error", "ename": name, "evalue": text, "traceback": []}

    def _request_handlers(self) -> dict[str, Callable[[dict[str, Any]], dict[str, Any]]]:
        return {
            "complete_request": self._reply_complete,
            "inspect_request": self._reply_inspect,
            "history_request": self._reply_history,
            "is_complete_request": self._reply_is_complete,
            "comm_info_request": self._reply_comm_info,
        }

    def _reply_complete(self, content: dict[str, Any]) -> dict[str, Any]:
        code = content.get("code", "")
        pos = content.get("cursor_pos")
        pos = len(code) if pos is None else pos
        with provisionalcompleter():
            completions = list(rectify_completions(code, self.Completer.completions(code, pos)))
        types = [
            {
                "start": c.start,
                "end": c.end,
                "text": c.text,
                "type": c.type,
                "signature": c.signature,
            }
            for c in completions
        ]
        start, end = (completions[0].start, completions[0].end) if completions else (pos, pos)
        return {
            "status": "ok",
            "matches": [c.text for c in completions],
            "cursor_start": start,
            "cursor_end": end,
            "metadata": {"_jupyter_types_experimental": types},
        }

    def _reply_inspect(self, content: dict[str, Any]) -> dict[str, Any]:
        code = content.get("code", "")
        pos = content.get("cursor_pos")
        name = token_at_cursor(code, len(code) if pos is None else pos)
        try:
            bundle = self.object_inspect_mime(name, detail_level=content.get("detail_level", 0))
        except KeyError:
            return {"status": "ok", "found": False, "data": {}, "metadata": {}}
        if not self.enable_html_pager:
            bundle.pop("text/html", None)
        return {"status": "ok", "found": True, "data": bundle, "metadata": {}}

    def _reply_history(self, content: dict[str, Any]) -> dict[str, Any]:
        hm = self.history_manager
        assert hm is not None
        raw, output = content.get("raw", True), content.get("output", False)
        kind = content.get("hist_access_type", "tail")
        if kind == "tail":
            hist = hm.get_tail(content.get("n", 10), raw=raw, output=output, include_latest=True)
        elif kind == "range":
            hist = hm.get_range(
                content.get("session", 0),
                content.get("start", 1),
                content.get("stop"),
                raw=raw,
                output=output,
            )
        elif kind == "search":
            hist = hm.search(
                content.get("pattern", "*"),
                raw=raw,
                output=output,
                n=content.get("n"),
                unique=content.get("unique", False),
            )
        else:
            hist = []
        # IPython reports the current session as 0 in ranges; clients expect its number,
        # as tail and search give it.
        current = hm.session_number
        return {"status": "ok", "history": [[entry[0] or current, *entry[1:]] for entry in hist]}

    def _reply_is_complete(self, content: dict[str, Any]) -> dict[str, Any]:
        status, indent = self.check_complete(content.get("code", ""))
        reply = {"status": status}
        if status == "incomplete":
            reply["indent"] = indent
        return reply

    def _reply_comm_info(self, content: dict[str, Any]) -> dict[str, Any]:
        target = content.get("target_name")
        comms = {
            comm_id: {"target_name": c.target_name}
            for comm_id, c in self.comm_manager.comms.items()
            if target is None or c.target_name == target
        }
        return {"status": "ok", "comms": comms}

    # -- frontend comm messages ----------------------------------------------------------
    comm_manager: comm.base_comm.CommManager
    kernel: KernelFacade

    def handle_comm(self, msg_type: str, msg: dict[str, Any]) -> None:
        """Run the handlers of a frontend comm message (``msg`` from ``request_message``)."""
        handler = {
            "comm_open": self.comm_manager.comm_open,
            "comm_msg": self.comm_manager.comm_msg,
            "comm_close": self.comm_manager.comm_close,
        }.get(msg_type)
        if handler is None:
            return
        try:
            handler(None, None, msg)  # type: ignore[arg-type]
        except Exception as exc:  # a malformed message (no comm_id ...) must not end us
            text = f"trikernel: ignored a malformed {msg_type}: {type(exc).__name__}: {exc}\n"
            self.outbox.write_stream("stderr", text)


def _nested_await_runner(coro: Any) -> Any:
    coro.close()
    raise RuntimeError(
        "a cell with top-level await cannot run from inside another cell "
        "(trikernel runs cells on its own trio loop)"
    )


def create_shell(outbox: Outbox, *, execution_count: int = 1) -> KernelShell:
    """Build the one shell of this process, with stdio, input() and comms rerouted."""
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    sys.stdout = StreamWriter(outbox, "stdout", 1)
    sys.stderr = StreamWriter(outbox, "stderr", 2)
    shell = KernelShell.instance(outbox=outbox)
    shell.execution_count = execution_count
    # Cells run on our trio loop via run_cell_async. IPython uses loop_runner only
    # for a nested get_ipython().run_cell() of an await cell, which cannot work here.
    shell.loop_runner = _nested_await_runner
    shell.comm_manager = install_comms(outbox)
    shell.kernel = KernelFacade(shell.comm_manager)
    builtins.input = shell.kernel_input
    getpass.getpass = shell.kernel_getpass
    return shell
