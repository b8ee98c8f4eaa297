"""input() and getpass() travel as input requests to the bridge's callback."""

from __future__ import annotations

import trio

from trikernel.bridge import SubprocessEvaluator
from trikernel.evaluator_api import Parent

from .conftest import Recorder, run


async def test_input_round_trip(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    asked: list[tuple[str, bool]] = []

    async def answer(prompt: str, password: bool) -> str:
        asked.append((prompt, password))
        await trio.sleep(0.01)
        return "secret" if password else "Ada"

    code = "import getpass\nname = input('name? ')\npw = getpass.getpass()\nprint(name, pw)"
    reply = await run(evaluator, code, request_input=answer, allow_stdin=True)
    assert reply["status"] == "ok"
    assert asked == [("name? ", False), ("Password: ", True)]
    assert recorder.text() == "Ada secret\n"


async def test_print_before_input_arrives_first(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    async def answer(prompt: str, password: bool) -> str:
        assert recorder.text() == "before\n"  # flushed before the request
        return "x"

    reply = await run(evaluator, "print('before')\ninput()", request_input=answer, allow_stdin=True)
    assert reply["status"] == "ok"


async def test_allow_stdin_false(evaluator: SubprocessEvaluator) -> None:
    async def answer(prompt: str, password: bool) -> str:
        raise AssertionError("must not be asked")

    reply = await run(evaluator, "input('? ')", request_input=answer, allow_stdin=False)
    assert reply["status"] == "error" and reply["ename"] == "StdinNotImplementedError"
    assert "input requests" in reply["evalue"]


async def test_callback_failure_is_eof(evaluator: SubprocessEvaluator) -> None:
    async def broken(prompt: str, password: bool) -> str:
        raise RuntimeError("frontend went away")

    reply = await run(evaluator, "input()", request_input=broken, allow_stdin=True)
    assert reply["ename"] == "EOFError" and "frontend went away" in reply["evalue"]


async def test_requests_after_input(evaluator: SubprocessEvaluator) -> None:
    async def answer(prompt: str, password: bool) -> str:
        # the evaluator reads the pipe itself while input() waits: other frames
        # queue behind the answer and are served afterwards
        return "ok"

    reply = await run(evaluator, "v = input()", request_input=answer, allow_stdin=True)
    assert reply["status"] == "ok"
    with trio.fail_after(10):
        info = await evaluator.request("is_complete_request", {"code": "v"}, Parent())
    assert info["status"] == "complete"
