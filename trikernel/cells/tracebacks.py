"""Tracebacks as a kernel shows them: cut where trio's, asyncio's or trikernel's
own code begins, interrupts reported as KeyboardInterrupt, exception groups
formatted whole, and cells named as ipykernel names them (``CellCompiler``)."""

from __future__ import annotations

import functools
import hashlib
import os
import tempfile
import types

import trio
from IPython.core.compilerop import CachingCompiler

__all__ = [
    "only_cancellations",
    "user_frames",
    "without_frames",
    "contains_group",
    "CellCompiler",
    "ASYNCIO_ON_TRIO",
    "TRIO_ON_ASYNCIO",
]


def only_cancellations(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.split((trio.Cancelled, KeyboardInterrupt))[1] is None
    return isinstance(exc, trio.Cancelled | KeyboardInterrupt)


def user_frames(tb: types.TracebackType | None) -> types.TracebackType | None:
    """``tb`` cut before the first frame of trio's, asyncio's or trikernel's own code."""
    kept = []
    while tb is not None and not tb.tb_frame.f_globals.get("__name__", "").startswith(
        ("trio.", "asyncio.", "trikernel.")
    ):
        kept.append(tb)
        tb = tb.tb_next
    return _chain(kept)


def without_frames(
    tb: types.TracebackType | None, codes: frozenset[types.CodeType], module: str
) -> types.TracebackType | None:
    """``tb`` without the frames running one of ``codes`` or code of ``module``
    (IPython hides its own run_code from tracebacks the same way)."""
    kept = []
    while tb is not None:
        frame = tb.tb_frame
        if not (frame.f_code in codes or frame.f_globals.get("__name__") == module):
            kept.append(tb)
        tb = tb.tb_next
    return _chain(kept)


def _chain(entries: list[types.TracebackType]) -> types.TracebackType | None:
    """A new traceback chain made of ``entries``, in order."""
    result = None
    for entry in reversed(entries):
        result = types.TracebackType(result, entry.tb_frame, entry.tb_lasti, entry.tb_lineno)
    return result


ASYNCIO_ON_TRIO = ("unrecognized yield message", "no running event loop")
TRIO_ON_ASYNCIO = ("must be called from async context", "Task got bad yield")


def contains_group(exc: BaseException | None) -> bool:
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

    def __init__(self) -> None:
        super().__init__()
        self.cell_files: list[str] = []  # what an embedded shell takes out of linecache

    def get_code_name(self, raw_code: str, transformed_code: str, number: int) -> str:
        digest = hashlib.sha1(transformed_code.encode("utf-8", "surrogatepass")).hexdigest()
        name = os.path.join(_cell_dir(), f"{number}-{digest[:12]}.py")
        self.cell_files.append(name)
        return name


@functools.cache
def _cell_dir() -> str:
    try:
        temp = tempfile.gettempdir()
    except OSError:  # no writable temp dir: the name is never written anyway
        temp = "/tmp"
    return os.path.join(temp, f"trikernel_{os.getpid()}")
