"""``background``: start trio tasks that outlive the cell that starts them.

A cell's interrupt cancels only the cell; these tasks go on until the evaluator
closes (or ``cancel_all()``). An exception in one is shown as an error output
naming the task, and never reaches the loop that hosts them (the evaluator's, or
the embedding application's). The nursery itself is not exposed, so a cell
cannot cancel it by accident.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["Background", "has_cancelled"]

OnError = Callable[[BaseException, str], None]


def has_cancelled(exc: BaseException) -> bool:
    if isinstance(exc, BaseExceptionGroup):
        return exc.subgroup(trio.Cancelled) is not None
    return isinstance(exc, trio.Cancelled)


class Background:
    """``start_soon(fn, *args)`` / ``await start(fn, *args)`` as on a trio nursery."""

    def __init__(self, nursery: trio.Nursery, on_error: OnError) -> None:
        self._nursery = nursery
        self._on_error = on_error
        self._scopes: dict[trio.CancelScope, str] = {}

    def start_soon(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> None:
        label = _task_name(async_fn, name)
        self._nursery.start_soon(self._guard, async_fn, args, label, False, name=label)

    async def start(
        self, async_fn: Callable[..., Awaitable[Any]], *args: Any, name: object = None
    ) -> Any:
        """Like ``nursery.start``: errors before ``task_status.started()`` are raised here."""
        label = _task_name(async_fn, name)
        return await self._nursery.start(self._guard, async_fn, args, label, True, name=label)

    @property
    def tasks(self) -> list[str]:
        """Names of the tasks still running."""
        return sorted(self._scopes.values())

    @property
    def child_tasks(self) -> frozenset[trio.lowlevel.Task]:
        return self._nursery.child_tasks

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
        except BaseException as exc:  # sys.exit() in a task must not end the host either
            if has_cancelled(exc) or (use_status and not started):
                raise
            self._on_error(exc, label)

    def __repr__(self) -> str:
        return f"<background nursery, {len(self._scopes)} task(s): {self.tasks}>"


def _task_name(async_fn: Any, name: object) -> str:
    if name is not None:
        return str(name)
    return str(
        getattr(async_fn, "__qualname__", None) or getattr(async_fn, "__name__", None) or async_fn
    )
