"""What is routed by context while an embedded kernel is open
(trikernel.inprocess.routing), driven without a kernel.

Rules: every test runs inside trio (the singleton follows tasks through a trio
instrument), under ``trio.fail_after``; ``routed()`` pairs every ``install`` with
its ``uninstall`` even when a test fails; the shell is a stand-in recording what
it is handed, and the originals are stand-ins too, put in place by monkeypatch.
"""

from __future__ import annotations

import builtins
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import comm
import pytest
import trio
import trio.testing
from IPython.core.interactiveshell import InteractiveShell

from trikernel.errors import BlockingInputError
from trikernel.inprocess.routing import CellContext, current_shell, enter, install, leave, uninstall


class FakeOutbox:
    def __init__(self) -> None:
        self.writes: list[tuple[str, str]] = []
        self.flushes = 0

    def write_stream(self, name: str, text: str) -> None:
        self.writes.append((name, text))

    def flush(self) -> None:
        self.flushes += 1


class FakeShell:
    def __init__(self) -> None:
        self.outbox = FakeOutbox()
        self.shown: list[Any] = []
        self.comm_manager = object()

    def displayhook(self, value: Any) -> None:
        self.shown.append(value)


def context_of(shell: FakeShell, closed: bool = False) -> CellContext:
    return CellContext(shell, closed=lambda: closed)  # type: ignore[arg-type]


@contextmanager
def routed(count: int = 1) -> Iterator[None]:
    for _ in range(count):
        install()
    try:
        yield
    finally:
        for _ in range(count):
            uninstall()


@contextmanager
def entered(shell: FakeShell) -> Iterator[None]:
    token = enter(context_of(shell))
    try:
        yield
    finally:
        leave(token)


def stand_ins(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stand-ins for the process-wide names, in place before ``install`` (made in
    the test itself: pytest's capture puts its own streams back after fixtures)."""
    fakes: dict[str, Any] = {
        "stdout": io.StringIO(),
        "stderr": io.StringIO(),
        "displayhook": lambda value: fakes["shown"].append(value),
        "input": lambda prompt="": "typed",
        "shown": [],
    }
    for name in ("stdout", "stderr", "displayhook"):
        monkeypatch.setattr(sys, name, fakes[name])
    monkeypatch.setattr(builtins, "input", fakes["input"])
    return fakes


def globals_now() -> list[Any]:
    names = [sys.stdout, sys.stderr, sys.displayhook, builtins.input]
    return [*names, comm.create_comm, comm.get_comm_manager]


async def test_uninstall_puts_back_exactly_what_install_replaced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins(monkeypatch)
    before = globals_now()
    with routed():
        during = globals_now()
    assert all(now is not then for now, then in zip(during, before, strict=True))
    assert all(now is then for now, then in zip(globals_now(), before, strict=True))


async def test_installs_are_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(monkeypatch)
    before = globals_now()
    with routed():
        proxy = sys.stdout
        with routed(count=2):
            assert sys.stdout is proxy
        assert globals_now()[1:] != before[1:] and sys.stdout is proxy
    assert globals_now() == before


async def test_a_stream_replaced_after_install_stays(monkeypatch: pytest.MonkeyPatch) -> None:
    originals = stand_ins(monkeypatch)
    theirs = io.StringIO()
    with routed():
        sys.stderr = theirs
    assert sys.stderr is theirs and sys.stdout is originals["stdout"]


async def test_builtins_a_shell_adds_are_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(monkeypatch)
    assert not hasattr(builtins, "__IPYTHON__")
    with routed():
        builtins.__IPYTHON__ = True  # type: ignore[attr-defined]
    assert not hasattr(builtins, "__IPYTHON__")


@pytest.mark.parametrize("name", ["stdout", "stderr"])
async def test_a_stream_writes_to_the_current_shell_else_the_original(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    originals = stand_ins(monkeypatch)
    shell = FakeShell()
    with routed():
        stream = getattr(sys, name)
        stream.write("outside ")
        with entered(shell):
            print("inside", file=stream, flush=True)
        stream.write("again")
    assert shell.outbox.writes == [(name, "inside"), (name, "\n")]
    assert shell.outbox.flushes == 1
    assert originals[name].getvalue() == "outside again"


async def test_the_proxy_in_a_cell_refuses_bytes_and_is_no_tty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins(monkeypatch)
    with routed(), entered(FakeShell()):
        assert sys.stdout.isatty() is False
        with pytest.raises(TypeError, match="bytes"):
            sys.stdout.write(b"raw")  # type: ignore[arg-type]


async def test_displayhook_goes_to_the_current_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    originals = stand_ins(monkeypatch)
    shell = FakeShell()
    with routed():
        sys.displayhook(1)
        with entered(shell):
            sys.displayhook(2)
    assert (shell.shown, originals["shown"]) == ([2], [1])


async def test_input_is_refused_in_a_cell_only(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(monkeypatch)
    with routed():
        assert input("? ") == "typed"
        with entered(FakeShell()), pytest.raises(BlockingInputError, match="ainput"):
            input("? ")


async def test_the_comm_manager_is_the_current_shells(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(monkeypatch)
    shell = FakeShell()
    with routed():
        outside = comm.get_comm_manager()
        with entered(shell):
            assert comm.get_comm_manager() is shell.comm_manager
        assert comm.get_comm_manager() is outside is not shell.comm_manager


async def test_current_shell_follows_enter_and_leave() -> None:
    shell = FakeShell()
    assert current_shell() is None
    token = enter(context_of(shell))
    assert current_shell() is shell
    leave(token)
    assert current_shell() is None


async def test_a_closed_context_has_no_shell() -> None:
    token = enter(context_of(FakeShell(), closed=True))
    try:
        assert current_shell() is None
    finally:
        leave(token)


async def test_the_singleton_is_the_shell_in_this_step_and_later_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins(monkeypatch)
    original, shell = InteractiveShell._instance, FakeShell()
    with trio.fail_after(5), routed():
        with entered(shell):
            assert InteractiveShell._instance is shell  # this very step
            await trio.sleep(0)
            assert InteractiveShell._instance is shell  # a later step
        assert InteractiveShell._instance is original  # left, in the same step
    assert InteractiveShell._instance is original


async def test_the_singleton_is_not_the_shell_in_another_task(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins(monkeypatch)
    original, shell, seen = InteractiveShell._instance, FakeShell(), []
    cell_runs = trio.Event()

    async def other_task() -> None:
        await cell_runs.wait()
        seen.append((InteractiveShell._instance, current_shell()))

    with trio.fail_after(5), routed():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other_task)
            await trio.testing.wait_all_tasks_blocked()
            with entered(shell):
                cell_runs.set()
                await trio.testing.wait_all_tasks_blocked()
                assert InteractiveShell._instance is shell
    assert seen == [(original, None)]


async def test_a_task_the_cell_starts_belongs_to_the_cell(monkeypatch: pytest.MonkeyPatch) -> None:
    stand_ins(monkeypatch)
    shell, seen = FakeShell(), []

    async def started_by_the_cell() -> None:
        await trio.sleep(0)
        seen.append((InteractiveShell._instance, current_shell()))

    with trio.fail_after(5), routed():
        async with trio.open_nursery() as nursery:
            with entered(shell):
                nursery.start_soon(started_by_the_cell)
    assert seen == [(shell, shell)]
