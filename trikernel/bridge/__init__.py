"""The kernel's side of the evaluator subprocess.

``evaluator`` (SubprocessEvaluator: the Evaluator protocol, call and cell
matching), ``child`` (one process: pipes, lifeline, fd 1/2, typed frames),
``cell`` (the running cell and the trio loop that drives ``escalation``, the
sans-IO interrupt table) and ``spawn`` (starting a process with the standard
library only).

``spawn`` must stay importable without trio (``python -m trikernel`` spawns the
first evaluator before it imports trio), so the names below are imported on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .evaluator import SubprocessEvaluator as SubprocessEvaluator
    from .evaluator import open_subprocess_evaluator as open_subprocess_evaluator

__all__ = ["SubprocessEvaluator", "open_subprocess_evaluator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import evaluator

        return getattr(evaluator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
