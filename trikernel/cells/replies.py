"""The shapes of replies and errors, for every part that answers a request.

No imports beyond the standard library: the kernel process uses this too.
"""

from __future__ import annotations

from typing import Any

__all__ = ["error_content", "error_from", "ok_execute"]


def error_content(
    ename: str, evalue: str, traceback: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    """A ``status: error`` reply (or error output) content. Without a traceback, the
    one line ``ename: evalue`` stands in for it, so a frontend shows something."""
    return {
        "status": "error",
        **extra,
        "ename": ename,
        "evalue": evalue,
        "traceback": list(traceback) if traceback is not None else [f"{ename}: {evalue}"],
    }


def error_from(exc: BaseException, **extra: Any) -> dict[str, Any]:
    """An error reply for ``exc``, named by its type (trikernel's own types included)."""
    return error_content(type(exc).__name__, str(exc), **extra)


def ok_execute(
    execution_count: int,
    user_expressions: dict[str, Any] | None = None,
    payload: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "status": "ok",
        "execution_count": execution_count,
        "user_expressions": user_expressions or {},
        "payload": payload or [],
    }
