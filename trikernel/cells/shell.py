"""IPython configured for a kernel: the shell core both evaluators run cells on.

Everything a cell produces leaves through the shell's ``outbox`` (a
``cells.streams.Outbox``): results (the displayhook), display data, errors
(``_showtraceback``), comm messages, and, through whatever stands in for
``sys.stdout``/``sys.stderr``, stream text. input() and getpass() go to the
``stdin_handler`` the evaluator sets for a cell that may ask. Payloads (exit,
set_next_input, the pager) are sent as ipykernel sends them.

What is process-global (``sys.stdout``, ``builtins.input``, the IPython
singleton, the ``comm`` package) is not set here: the subprocess evaluator sets
it once for its process, the embedded one routes it by context.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

import comm.base_comm
from IPython.core import ultratb
from IPython.core.error import StdinNotImplementedError, UsageError
from IPython.core.interactiveshell import ExecutionResult, InteractiveShell
from IPython.core.page import as_hook
from traitlets import Any as AnyTrait
from traitlets import Type

from . import introspection
from .aio import AsyncioCells
from .comms import deliver
from .display import KernelDisplayHook, KernelDisplayPublisher
from .facade import KernelFacade
from .magics import KernelMagics
from .replies import ok_execute
from .tracebacks import CellCompiler, contains_group, only_cancellations, user_frames

__all__ = ["KernelShell", "StdinHandler"]

StdinHandler = Callable[[str, bool], str]


def _nested_await_runner(coro: Any) -> Any:
    coro.close()
    raise RuntimeError(
        "a cell with top-level await cannot run from inside another cell "
        "(trikernel runs cells on its own trio loop)"
    )


class KernelShell(AsyncioCells, InteractiveShell):
    """InteractiveShell whose outputs, errors, input() and payloads go to ``outbox``."""

    compiler_class = Type(CellCompiler)
    displayhook_class = Type(KernelDisplayHook)
    display_pub_class = Type(KernelDisplayPublisher)
    outbox = AnyTrait()

    #: set by the evaluator while a cell runs with allow_stdin; None -> input() raises
    stdin_handler: StdinHandler | None = None
    #: set by the evaluator when the running cell was interrupted by cancellation
    interrupted = False
    _last_error: dict[str, Any] | None = None
    #: the kernel's connection file, for %connect_info (None when not known)
    connection_file: str | None = None
    comm_manager: comm.base_comm.CommManager
    kernel: KernelFacade

    if importlib.util.find_spec("pexpect") is None:  # system_piped needs pexpect
        system = InteractiveShell.system_raw

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Cells run on a trio loop via run_cell_async. IPython uses loop_runner only
        # for a nested get_ipython().run_cell() of an await cell, which cannot work here.
        self.loop_runner = _nested_await_runner
        self.comm_manager = comm.base_comm.CommManager()
        self.kernel = KernelFacade(self.comm_manager)

    # -- setup overrides ---------------------------------------------------------
    def init_virtualenv(self) -> None:
        pass  # the kernel runs in the interpreter it was started with

    def init_magics(self) -> None:
        super().init_magics()
        self.register_magics(KernelMagics)
        self.register_magic_function(self.autoawait_magic, "line", "autoawait")  # type: ignore[arg-type]

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
        if self.interrupted and only_cancellations(value):
            # An awaiting cell was cancelled by an interrupt: say so in the usual words.
            etype, value = KeyboardInterrupt, KeyboardInterrupt()
        if etype is KeyboardInterrupt:
            tb = user_frames(tb)  # stop where trio's or our own code begins
        if contains_group(value) and not exception_only and etype is not UsageError:
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
            self.interrupted and only_cancellations(exception)
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
        self._cell_loop = None
        if preprocessing is None:
            self.choose_await_loop(code, transformed)
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
            return ok_execute(count, self.user_expressions(user_expressions or {}), payload)
        error = self._last_error
        if error is None:
            exc = result.error_before_exec or result.error_in_exec if result else None
            error = {
                "ename": type(exc).__name__ if exc else "UnknownError",
                "evalue": str(exc) if exc else "",
                "traceback": [],
            }
        return {"status": "error", "execution_count": count, **error}

    # -- the other requests ------------------------------------------------------
    def answer(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        """complete/inspect/history/is_complete/comm_info reply content."""
        return introspection.answer(self, msg_type, content)

    def handle_comm(self, msg_type: str, msg: dict[str, Any]) -> None:
        """Run the handlers of a frontend comm message (``msg`` from ``request_message``)."""
        deliver(self.comm_manager, self.outbox, msg_type, msg)
