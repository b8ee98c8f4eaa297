"""The kernel shell, embedded: the same core as the subprocess evaluator's, minus
what would change the application's process (see ``routing`` for what is routed
instead). Its history is kept in memory, it registers no ``atexit`` hook once
closed, and ``close()`` takes back what it put anywhere global.
"""

from __future__ import annotations

import atexit
import linecache
import warnings
from typing import Any

from IPython.core.autocall import ExitAutocall
from IPython.core.builtin_trap import BuiltinTrap
from IPython.core.display_trap import DisplayTrap
from traitlets.config import Config

from ..cells.shell import KernelShell

__all__ = ["EmbeddedShell", "new_shell"]


class _NoBuiltinTrap(BuiltinTrap):
    """IPython adds ``get_ipython``/``exit``/``quit`` to builtins around each cell; two
    kernels' cells interleave on one loop, so they live in each namespace instead."""

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass


class _NoDisplayTrap(DisplayTrap):
    """IPython swaps ``sys.displayhook`` around each cell; ``routing`` routes it."""

    def set(self) -> None:
        pass

    def unset(self) -> None:
        pass


class _Exit(ExitAutocall):
    """``exit``/``quit``: disconnect the frontend, keep the kernel (the application).
    ``exit(keep_kernel=False)`` lets a console shut the embedded kernel down, which
    still never stops the application."""

    def __call__(self, keep_kernel: bool = True) -> None:  # type: ignore[override]
        payload = {"source": "ask_exit", "keepkernel": bool(keep_kernel)}
        shell: Any = self._ip
        shell.payload_manager.write_payload(payload, single=True)


class EmbeddedShell(KernelShell):
    _cell_files: list[str]

    def init_sys_modules(self) -> None:
        pass  # the application's __main__ stays its own

    def init_prompts(self) -> None:
        pass  # sys.ps1/ps2/ps3 are the application's

    def init_builtins(self) -> None:
        super().init_builtins()
        self.builtin_trap = _NoBuiltinTrap(shell=self)

    def init_displayhook(self) -> None:
        super().init_displayhook()
        self.display_trap = _NoDisplayTrap(hook=self.displayhook)

    def close(self) -> None:
        """Forget this shell everywhere it left a trace in the process."""
        atexit.unregister(self.atexit_operations)
        self.close_asyncio()
        self.outbox.close()
        compiler: Any = self.compile
        for name in compiler.cell_files:
            linecache.cache.pop(name, None)
            getattr(linecache, "_ipython_cache", {}).pop(name, None)


def new_shell(namespace: dict[str, Any], outbox: Any) -> EmbeddedShell:
    """A shell running cells in ``namespace`` (which gets IPython's names, and
    ``exit``/``quit`` that keep the kernel), its outputs going to ``outbox``."""
    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # nothing written to the user's profile
    filters = list(warnings.filters)
    shell = EmbeddedShell(user_ns=namespace, config=config, outbox=outbox)
    warnings.filters[:] = filters  # type: ignore[index]  # IPython's start-up changes them for the whole process
    namespace["exit"], namespace["quit"] = _Exit(shell), _Exit(shell)
    _show_figures_as_png(shell)
    return shell


def _show_figures_as_png(shell: KernelShell) -> None:
    """``display(fig)`` and a figure as a cell's value arrive as PNG (what IPython's
    inline backend registers), without switching the application's backend. By
    name, so matplotlib is not imported unless the application uses it."""
    from IPython.core.pylabtools import print_figure

    assert shell.display_formatter is not None
    png = shell.display_formatter.formatters["image/png"]
    png.for_type_by_name("matplotlib.figure", "Figure", lambda fig: print_figure(fig, "png"))
