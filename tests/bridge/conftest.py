"""Fixtures for the bridge tests: a real evaluator subprocess behind the bridge.

Rules: every test drives ``trikernel.bridge`` against a real subprocess; every
wait is bounded by ``trio.fail_after``; IPython's profile directory is a temporary
one, so history and config never touch the user's.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from trikernel._bytes import Buffer
from trikernel.bridge import SubprocessEvaluator, open_subprocess_evaluator
from trikernel.evaluator_api import ExecuteRequest, Output, Parent

TIMEOUT = 30


class Recorder:
    """The bridge's sink: keeps every message, in order, and wakes waiters.

    ``messages`` holds (msg_type, content decoded, buffers as bytes); ``outputs``
    the ``Output`` objects themselves (their parent, metadata)."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], list[Buffer]]] = []
        self.outputs: list[Output] = []
        self.times: list[float] = []
        self._changed = trio.Event()

    def __call__(self, output: Output) -> None:
        content = output.content
        if not isinstance(content, dict):  # wire JSON, packed by the evaluator
            content = json.loads(bytes(content))
        assert isinstance(content, dict)
        self.messages.append((output.msg_type, content, [bytes(b) for b in output.buffers]))
        self.outputs.append(output)
        self.times.append(trio.current_time())
        self._changed.set()
        self._changed = trio.Event()

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [content for t, content, _ in self.messages if t == msg_type]

    def text(self, name: str = "stdout") -> str:
        return "".join(c["text"] for c in self.of_type("stream") if c["name"] == name)

    def clear(self) -> None:
        self.messages.clear()
        self.outputs.clear()
        self.times.clear()

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = TIMEOUT) -> None:
        with trio.fail_after(timeout):
            while not predicate():
                await self._changed.wait()


def execute_content(code: str, **overrides: Any) -> dict[str, Any]:
    content = {
        "code": code,
        "silent": False,
        "store_history": True,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    content.update(overrides)
    return content


def request_parent(msg_id: str, msg_type: str, **metadata: Any) -> Parent:
    """The ``Parent`` the kernel passes along with a request."""
    header = {
        "msg_id": msg_id,
        "msg_type": msg_type,
        "session": "session-1",
        "username": "tester",
        "date": "2025-01-02T03:04:05.000000Z",
        "version": "5.4",
    }
    return Parent(header, {}, metadata)


async def run(
    evaluator: SubprocessEvaluator,
    code: str,
    *,
    request_input: Any = None,
    parent: Parent | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    request = ExecuteRequest.from_content(execute_content(code, **overrides), parent)
    with trio.fail_after(TIMEOUT):
        return await evaluator.execute(request, request_input)


@pytest.fixture
def child_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")}


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def evaluator(
    recorder: Recorder, child_env: dict[str, str]
) -> AsyncIterator[SubprocessEvaluator]:
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env, grace_period=3.0) as ev:
            yield ev


def alive(pid: int) -> bool:
    """Is ``pid`` a live (not zombie) process? Reads /proc."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def wait_gone(pid: int, timeout: float = 5.0) -> bool:
    with trio.move_on_after(timeout):
        while alive(pid):
            await trio.sleep(0.02)
        return True
    return False
