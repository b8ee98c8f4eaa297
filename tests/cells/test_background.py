"""Tasks that outlive a cell (trikernel.cells.background.Background).

Rules: each test opens its own nursery under ``trio.fail_after``; time is
virtual (``autojump_clock``) wherever a task sleeps; errors are recorded as the
``(exception, name)`` pairs ``on_error`` gets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from trikernel.cells.background import Background, has_cancelled

Errors = list[tuple[BaseException, str]]


@asynccontextmanager
async def open_background() -> AsyncIterator[tuple[Background, Errors, trio.Nursery]]:
    errors: Errors = []
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            yield Background(nursery, lambda exc, name: errors.append((exc, name))), errors, nursery
            nursery.cancel_scope.cancel()


async def boom(message: str = "boom") -> None:
    raise ValueError(message)


async def test_start_soon_runs_the_function_with_its_args() -> None:
    got: list[tuple[int, str]] = []

    async def record(n: int, s: str) -> None:
        got.append((n, s))

    async with open_background() as (bg, errors, _):
        bg.start_soon(record, 1, "a")
        await trio.testing.wait_all_tasks_blocked()
    assert got == [(1, "a")] and errors == []


async def test_tasks_names_the_running_ones() -> None:
    async with open_background() as (bg, _, _):
        bg.start_soon(trio.sleep_forever)
        bg.start_soon(trio.sleep_forever, name="ticker")
        bg.start_soon(trio.sleep, 0)
        await trio.testing.wait_all_tasks_blocked()
        assert bg.tasks == ["sleep_forever", "ticker"]
        assert "2 task(s)" in repr(bg)
        assert len(bg.child_tasks) == 2


async def test_a_name_is_made_a_string() -> None:
    async with open_background() as (bg, _, _):
        bg.start_soon(trio.sleep_forever, name=42)
        await trio.testing.wait_all_tasks_blocked()
        assert bg.tasks == ["42"]


async def test_an_exception_goes_to_on_error_with_the_name(autojump_clock: object) -> None:
    finished: list[str] = []

    async def sibling() -> None:
        await trio.sleep(5)
        finished.append("sibling")

    async with open_background() as (bg, errors, _):
        bg.start_soon(sibling)
        bg.start_soon(boom, "bad", name="failing")
        await trio.sleep(6)
        assert bg.tasks == []
    [(exc, name)] = errors
    assert (type(exc), str(exc), name) == (ValueError, "bad", "failing")
    assert finished == ["sibling"]


async def test_system_exit_in_a_task_does_not_end_the_host() -> None:
    async def leave() -> None:
        raise SystemExit(3)

    async with open_background() as (bg, errors, _):
        bg.start_soon(leave)
        await trio.testing.wait_all_tasks_blocked()
    [(exc, name)] = errors
    assert isinstance(exc, SystemExit) and name.endswith("<locals>.leave")


async def test_start_returns_the_started_value() -> None:
    async def serve(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(8080)
        await trio.sleep_forever()

    async with open_background() as (bg, errors, _):
        assert await bg.start(serve, name="server") == 8080
        assert bg.tasks == ["server"]
    assert errors == []


async def test_start_raises_an_error_raised_before_started() -> None:
    async def fail_early(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        raise ValueError("early")

    async with open_background() as (bg, errors, _):
        with pytest.raises(ValueError, match="early"):
            await bg.start(fail_early)
    assert errors == []


async def test_an_error_after_started_goes_to_on_error() -> None:
    async def fail_late(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await trio.sleep(0)
        raise ValueError("late")

    async with open_background() as (bg, errors, _):
        assert await bg.start(fail_late, name="late") is None
        await trio.testing.wait_all_tasks_blocked()
    assert [(str(e), n) for e, n in errors] == [("late", "late")]


async def test_cancel_all_cancels_every_task_and_not_the_host() -> None:
    async with open_background() as (bg, errors, nursery):
        for _ in range(3):
            bg.start_soon(trio.sleep_forever)
        await trio.testing.wait_all_tasks_blocked()
        bg.cancel_all()
        await trio.testing.wait_all_tasks_blocked()
        assert bg.tasks == [] and not nursery.cancel_scope.cancel_called
        bg.start_soon(trio.sleep_forever, name="again")
        await trio.testing.wait_all_tasks_blocked()
        assert bg.tasks == ["again"]
    assert errors == []


async def test_cancelled_propagates_and_is_not_an_error() -> None:
    cleaned: list[str] = []

    async def forever() -> None:
        try:
            await trio.sleep_forever()
        finally:
            cleaned.append("forever")

    async with open_background() as (bg, errors, nursery):
        bg.start_soon(forever)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert cleaned == ["forever"] and errors == []


async def test_cancelled_in_a_group_propagates_and_is_not_an_error() -> None:
    async def with_children() -> None:
        async with trio.open_nursery() as inner:
            inner.start_soon(trio.sleep_forever)
            inner.start_soon(trio.sleep_forever)

    async with open_background() as (bg, errors, nursery):
        bg.start_soon(with_children)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert errors == []


async def test_has_cancelled() -> None:
    caught: list[BaseException] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        try:
            await trio.sleep(0)
        except trio.Cancelled as exc:
            caught.append(exc)
            raise
    [cancelled] = caught
    assert has_cancelled(cancelled)
    assert has_cancelled(BaseExceptionGroup("", [ValueError(), cancelled]))
    assert not has_cancelled(BaseExceptionGroup("", [ValueError()]))
    assert not has_cancelled(ValueError())
