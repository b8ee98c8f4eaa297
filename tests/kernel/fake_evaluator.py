"""A fake evaluator for testing the kernel's message handling without a subprocess.

Cells are tiny scripts: ``print TEXT`` (stream), ``sleep SECONDS`` (awaits; interruptible),
``fail`` (error), ``input PROMPT`` (asks stdin and prints the answer), ``nan`` (a reply
that cannot be encoded: NaN in user_expressions), ``crash`` (the evaluator's context
fails once the cell returned), ``crash_while_running`` (it fails while the cell
still waits), ``exit [keep]`` (the ask_exit payload of IPython's exit()), anything else is echoed back as an execute_result.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio

from trikernel._bytes import Buffer
from trikernel.evaluator_api import ExecuteRequest, InputCallback, Output, OutputSink, Parent


class FakeEvaluator:
    def __init__(self, sink: OutputSink, generation: int = 0) -> None:
        self.sink = sink
        self.generation = generation  # how many evaluators were opened before this one
        self.count = 0
        self.crashed = trio.Event()  # set: the context fails (outside any cell)
        self._scope: trio.CancelScope | None = None
        self._parent: Parent | None = None

    @property
    def execution_count(self) -> int:
        return self.count

    def emit(self, msg_type: str, content: dict[str, Any]) -> None:
        self.sink(Output(msg_type, content, self._parent))

    async def execute(
        self, request: ExecuteRequest, request_input: InputCallback | None
    ) -> dict[str, Any]:
        self._parent = request.parent
        if request.store_history:
            self.count += 1
        results: dict[str, Any] = {
            "status": "ok",
            "execution_count": self.count,
            "user_expressions": {},
            "payload": [],
        }
        with trio.CancelScope() as self._scope:
            for line in request.code.splitlines():
                word, _, arg = line.partition(" ")
                if word == "print":
                    self.emit("stream", {"name": "stdout", "text": arg + "\n"})
                elif word == "sleep":
                    await trio.sleep(float(arg))
                elif word == "fail":
                    error = {
                        "ename": "ValueError",
                        "evalue": "failed",
                        "traceback": ["ValueError: failed"],
                    }
                    self.emit("error", error)
                    return {**results, "status": "error", **error}
                elif word == "input":
                    if request_input is None:
                        raise RuntimeError("no stdin")
                    value = await request_input(arg, False)
                    self.emit("stream", {"name": "stdout", "text": value + "\n"})
                elif word == "nan":
                    results["user_expressions"] = {"x": float("nan")}
                elif word == "exit":  # what IPython's exit() leaves in the reply
                    keep = arg == "keep"
                    results["payload"] = [{"source": "ask_exit", "keepkernel": keep}]
                elif word == "crash":
                    self.crashed.set()
                elif word == "crash_while_running":
                    self.crashed.set()
                    await trio.sleep_forever()  # only the context's failure ends this
                elif word == "generation":
                    self.emit("stream", {"name": "stdout", "text": f"{self.generation}\n"})
                else:
                    data = {
                        "data": {"text/plain": line},
                        "metadata": {},
                        "execution_count": self.count,
                    }
                    self.emit("execute_result", data)
        if self._scope.cancelled_caught:
            error = {"ename": "KeyboardInterrupt", "evalue": "", "traceback": ["KeyboardInterrupt"]}
            self.emit("error", error)
            return {**results, "status": "error", **error}
        return results

    def interrupt(self) -> None:
        if self._scope is not None:
            self._scope.cancel()

    async def request(
        self, msg_type: str, content: dict[str, Any], parent: Parent
    ) -> dict[str, Any]:
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
        self, msg_type: str, content: dict[str, Any], buffers: Sequence[Buffer], parent: Parent
    ) -> None:
        self._parent = parent

    async def aclose(self) -> None:
        pass


class FakeEvaluatorFactory:
    """``factory(sink)``; counts the evaluators it opened. A ``crash`` cell makes
    the context raise once the cell has returned, as a bridge whose task failed."""

    def __init__(self) -> None:
        self.opened: list[FakeEvaluator] = []

    @asynccontextmanager
    async def __call__(self, sink: OutputSink) -> AsyncIterator[FakeEvaluator]:
        evaluator = FakeEvaluator(sink, len(self.opened))
        self.opened.append(evaluator)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_fail_when, evaluator.crashed)
            yield evaluator


async def _fail_when(event: trio.Event) -> None:
    await event.wait()
    await trio.sleep(0.05)  # after the reply: the context dies outside a cell
    raise RuntimeError("the fake evaluator's task failed")


def open_fake_evaluator(sink: OutputSink) -> Any:
    return FakeEvaluatorFactory()(sink)
