"""A fake evaluator for testing the kernel's message handling without a subprocess.

Cells are tiny scripts: ``print TEXT`` (stream), ``sleep SECONDS`` (awaits; interruptible),
``fail`` (error), ``input PROMPT`` (asks stdin and prints the answer), anything else is
echoed back as an execute_result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio


class FakeEvaluator:
    def __init__(self, on_output: Any) -> None:
        self.on_output = on_output
        self.count = 0
        self._scope: trio.CancelScope | None = None

    async def execute(
        self, content: dict[str, Any], *, request_input: Any, parent: Any = None
    ) -> dict[str, Any]:
        if content.get("store_history", True) and not content.get("silent"):
            self.count += 1
        results: dict[str, Any] = {
            "status": "ok",
            "execution_count": self.count,
            "user_expressions": {},
            "payload": [],
        }
        with trio.CancelScope() as self._scope:
            for line in content["code"].splitlines():
                word, _, arg = line.partition(" ")
                if word == "print":
                    await self.on_output("stream", {"name": "stdout", "text": arg + "\n"}, [])
                elif word == "sleep":
                    await trio.sleep(float(arg))
                elif word == "fail":
                    error = {
                        "ename": "ValueError",
                        "evalue": "failed",
                        "traceback": ["ValueError: failed"],
                    }
                    await self.on_output("error", error, [])
                    return {**results, "status": "error", **error}
                elif word == "input":
                    if request_input is None:
                        raise RuntimeError("no stdin")
                    value = await request_input(arg, False)
                    await self.on_output("stream", {"name": "stdout", "text": value + "\n"}, [])
                else:
                    data = {
                        "data": {"text/plain": line},
                        "metadata": {},
                        "execution_count": self.count,
                    }
                    await self.on_output("execute_result", data, [])
        if self._scope.cancelled_caught:
            error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
            await self.on_output("error", error, [])
            return {**results, "status": "error", **error}
        return results

    def interrupt(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def request(self, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
        if msg_type == "is_complete_request":
            return {"status": "complete"}
        if msg_type == "complete_request":
            return {
                "status": "ok",
                "matches": ["print"],
                "cursor_start": 0,
                "cursor_end": content["cursor_pos"],
                "metadata": {},
            }
        return {"status": "ok"}

    async def send_comm(
        self,
        msg_type: str,
        content: dict[str, Any],
        buffers: list[bytes],
        *,
        parent: dict[str, Any] | None = None,
    ) -> None:
        pass

    async def aclose(self) -> None:
        pass


@asynccontextmanager
async def open_fake_evaluator(on_output: Any) -> AsyncIterator[FakeEvaluator]:
    yield FakeEvaluator(on_output)
