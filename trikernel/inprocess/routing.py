"""What is global to a process, routed by context while embedded kernels are open.

A cell of an embedded kernel runs as a trio task of the application, beside the
application's own tasks. What IPython and the libraries it serves reach through
process-wide names must reach *that* kernel from the cell (and from the tasks
and threads it starts, which inherit its context), and stay what it was for
everything else. ``CURRENT`` (a ContextVar) names the kernel; while any embedded
kernel is open (``install``/``uninstall``, counted):

=======================  ===============================================
``sys.stdout``/``stderr``  a proxy: the kernel's outbox, else the original
``sys.displayhook``       the kernel shell's displayhook, else the original
``builtins.input``        refused in a cell (it would block the loop:
                          ``BlockingInputError``), else the original
``comm`` package          the kernel's comm manager and comms
IPython's singleton       (``get_ipython()``, ``IPython.display``) the
                          kernel's shell during the steps of its tasks (a
                          trio instrument), else what it was
=======================  ===============================================

``uninstall`` of the last one puts every original back (only where it is still
ours: a stream someone replaced after us stays theirs).
"""

from __future__ import annotations

import builtins
import contextvars
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TextIO

import trio
from IPython.core.interactiveshell import InteractiveShell

from ..cells.comms import route_comms
from ..errors import BlockingInputError

if TYPE_CHECKING:
    from ..cells.shell import KernelShell
    from ..evaluator_api import InputCallback

__all__ = ["CURRENT", "CellContext", "current_shell", "enter", "leave", "install", "uninstall"]


@dataclass(eq=False)
class CellContext:
    """What a cell's task (and every task it starts) belongs to."""

    shell: KernelShell
    request_input: InputCallback | None = None
    closed: Callable[[], bool] = lambda: False
    done: bool = False  # the cell (or comm message) has finished


CURRENT: contextvars.ContextVar[CellContext | None] = contextvars.ContextVar(
    "trikernel_embedded_cell", default=None
)


def current_shell() -> KernelShell | None:
    context = CURRENT.get()
    if context is None or context.closed():
        return None
    return context.shell


class _StreamProxy:
    """Stands in for sys.stdout / sys.stderr."""

    def __init__(self, name: str, original: TextIO | None) -> None:
        self._name = name
        self._original = original

    def write(self, text: str) -> int:
        shell = current_shell()
        if shell is not None:
            if not isinstance(text, str):
                raise TypeError(f"write() argument must be str, not {type(text).__name__}")
            shell.outbox.write_stream(self._name, text)
            return len(text)
        if self._original is None:
            return len(text)
        return self._original.write(text)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        shell = current_shell()
        if shell is not None:
            shell.outbox.flush()
        elif self._original is not None:
            self._original.flush()

    def isatty(self) -> bool:
        if current_shell() is not None:
            return False
        return bool(self._original is not None and self._original.isatty())

    def __getattr__(self, name: str) -> Any:
        # encoding, errors, fileno, buffer, ...: those of the real stream.
        return getattr(self._original, name)


class _SingletonFollowsTask(trio.abc.Instrument):
    """IPython's singleton is the shell of the kernel whose task is stepping."""

    def __init__(self) -> None:
        self.original = InteractiveShell._instance
        self._set = False

    def follow(self, context: CellContext | None) -> None:
        if context is not None and not context.closed():
            InteractiveShell._instance = context.shell  # type: ignore[assignment]
            self._set = True
        elif self._set:
            InteractiveShell._instance = self.original
            self._set = False

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.follow(task.context.get(CURRENT))

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.follow(None)


def enter(context: CellContext) -> contextvars.Token[CellContext | None]:
    """Make ``context`` current in this task (and in what it starts from now on)."""
    token = CURRENT.set(context)
    if _installed.instrument is not None:  # this very step already runs the cell
        _installed.instrument.follow(context)
    return token


def leave(token: contextvars.Token[CellContext | None]) -> None:
    CURRENT.reset(token)
    if _installed.instrument is not None:
        _installed.instrument.follow(CURRENT.get())


@dataclass
class _Installed:
    count: int = 0
    stdout: _StreamProxy | None = None
    stderr: _StreamProxy | None = None
    displayhook: Callable[[Any], None] = sys.displayhook
    input: Callable[..., str] = builtins.input
    undo_comms: Callable[[], None] = lambda: None
    instrument: _SingletonFollowsTask | None = None
    builtins_before: dict[str, Any] = field(default_factory=dict)


_installed = _Installed()
_MISSING = object()
_IPYTHON_BUILTINS = ("__IPYTHON__", "display")  # set by every InteractiveShell()


def _route_displayhook(value: Any) -> None:
    shell = current_shell()
    if shell is not None:
        shell.displayhook(value)
    else:
        _installed.displayhook(value)


def _refusing_input(prompt: object = "") -> str:
    if current_shell() is not None:
        raise BlockingInputError(
            "input() would block the application's event loop (this kernel runs inside "
            "a trio application); use `await ainput(prompt)` instead"
        )
    return _installed.input(prompt)


def install() -> None:
    """Route the globals (once, however many embedded kernels are open). Call it
    before making a shell, so what the shell's creation changes is undone too."""
    _installed.count += 1
    if _installed.count > 1:
        return
    _installed.builtins_before = {n: builtins.__dict__.get(n, _MISSING) for n in _IPYTHON_BUILTINS}
    _installed.stdout = _StreamProxy("stdout", sys.stdout)
    _installed.stderr = _StreamProxy("stderr", sys.stderr)
    _installed.displayhook = sys.displayhook
    _installed.input = builtins.input
    sys.stdout = _installed.stdout  # type: ignore[assignment]
    sys.stderr = _installed.stderr  # type: ignore[assignment]
    sys.displayhook = _route_displayhook
    builtins.input = _refusing_input
    _installed.undo_comms = route_comms(current_shell)
    _installed.instrument = _SingletonFollowsTask()
    trio.lowlevel.add_instrument(_installed.instrument)


def uninstall() -> None:
    _installed.count -= 1
    if _installed.count > 0:
        return
    if sys.stdout is _installed.stdout and _installed.stdout is not None:
        sys.stdout = _installed.stdout._original  # type: ignore[assignment]
    if sys.stderr is _installed.stderr and _installed.stderr is not None:
        sys.stderr = _installed.stderr._original  # type: ignore[assignment]
    if sys.displayhook is _route_displayhook:
        sys.displayhook = _installed.displayhook
    if builtins.input is _refusing_input:
        builtins.input = _installed.input
    _installed.undo_comms()
    if _installed.instrument is not None:
        try:
            trio.lowlevel.remove_instrument(_installed.instrument)
        except KeyError:  # pragma: no cover - removed already
            pass
        InteractiveShell._instance = _installed.instrument.original
    for name, value in _installed.builtins_before.items():
        if value is _MISSING:
            builtins.__dict__.pop(name, None)
        else:
            builtins.__dict__[name] = value
    _installed.stdout = _installed.stderr = _installed.instrument = None
