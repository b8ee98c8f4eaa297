"""Interrupt in every state: synchronous code, awaiting code, pending input(),
between cells; escalation to kill and respawn when the cell ignores SIGINT."""

from __future__ import annotations

import os
import signal
from typing import Any

import pytest
import trio

from trikernel.bridge import SubprocessEvaluator, open_subprocess_evaluator

from .conftest import TIMEOUT, Recorder, run


async def interrupt_when_started(
    evaluator: SubprocessEvaluator,
    recorder: Recorder,
    code: str,
    *,
    request_input: Any = None,
    **overrides: Any,
) -> tuple[dict[str, Any], float]:
    """Run ``code`` (which prints 'started'), interrupt it then; (reply, latency)."""
    result: dict[str, Any] = {}

    async def cell() -> None:
        result.update(await run(evaluator, code, request_input=request_input, **overrides))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cell)
        await recorder.wait_for(lambda: "started" in recorder.text())
        await trio.sleep(0.3)  # steady state: the evaluator's start-up warm-up is done
        start = trio.current_time()
        evaluator.interrupt()
    return result, trio.current_time() - start


@pytest.mark.parametrize(
    "code",
    [
        "import time\nprint('started')\ntime.sleep(60)",
        "print('started')\nwhile True:\n    pass",
        "print('started')\ni = 0\nwhile True:\n    i += 1\n    print(i)",
    ],
    ids=["sleep", "busy-loop", "print-loop"],
)
async def test_sync_code(evaluator: SubprocessEvaluator, recorder: Recorder, code: str) -> None:
    reply, latency = await interrupt_when_started(evaluator, recorder, code)
    print(f"\ninterrupt latency (sync): {latency * 1e3:.0f} ms")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert reply["execution_count"] == 1
    assert recorder.of_type("error")[-1]["ename"] == "KeyboardInterrupt"
    assert (await run(evaluator, "'still here'"))["status"] == "ok"


async def test_awaiting_code_background_survives(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    setup = (
        "ticks = []\n"
        "async def ticker():\n"
        "    while True:\n"
        "        ticks.append(1)\n"
        "        await trio.sleep(0.01)\n"
        "async def later():\n"
        "    await trio.sleep(1)\n"
        "    print('printed later')\n"
        "background.start_soon(ticker)\n"
        "background.start_soon(later)"
    )
    assert (await run(evaluator, setup))["status"] == "ok"
    code = "print('started')\nawait trio.sleep(60)"
    reply, latency = await interrupt_when_started(evaluator, recorder, code)
    print(f"\ninterrupt latency (awaiting): {latency * 1e3:.0f} ms")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert "printed later" not in recorder.text()
    await recorder.wait_for(lambda: "printed later" in recorder.text())
    before = await run(evaluator, "n = len(ticks)")
    await trio.sleep(0.1)
    recorder.clear()
    await run(evaluator, "len(ticks) > n")
    assert before["status"] == "ok"
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "True"


async def test_awaiting_nursery_in_cell(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = (
        "print('started')\n"
        "async with trio.open_nursery() as n:\n"
        "    n.start_soon(trio.sleep, 60)\n"
        "    await trio.sleep(60)"
    )
    reply, _ = await interrupt_when_started(evaluator, recorder, code)
    assert reply["ename"] == "KeyboardInterrupt"


async def test_pending_input(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    asked = trio.Event()

    async def never_answer(prompt: str, password: bool) -> str:
        asked.set()
        await trio.sleep_forever()
        raise AssertionError

    code = "print('started')\nx = input('? ')"
    reply, latency = await interrupt_when_started(
        evaluator, recorder, code, request_input=never_answer, allow_stdin=True
    )
    print(f"\ninterrupt latency (input): {latency * 1e3:.0f} ms")
    assert asked.is_set()
    assert reply["ename"] == "KeyboardInterrupt"
    assert (await run(evaluator, "1"))["status"] == "ok"


async def test_between_cells(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    assert (await run(evaluator, "kept = 42"))["status"] == "ok"
    evaluator.interrupt()  # no cell: no-op
    pid = evaluator.pid
    assert pid is not None
    os.kill(pid, signal.SIGINT)  # even a stray SIGINT between cells is harmless
    await trio.sleep(0.2)
    reply = await run(evaluator, "kept")
    assert reply["status"] == "ok" and evaluator.pid == pid
    assert recorder.of_type("execute_result")[-1]["data"]["text/plain"] == "42"


async def test_namespace_kept_after_interrupt(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    await run(evaluator, "kept = 'yes'")
    await interrupt_when_started(
        evaluator, recorder, "import time\nprint('started')\ntime.sleep(60)"
    )
    recorder.clear()
    await run(evaluator, "kept")
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "'yes'"


async def test_cancelling_the_caller_also_stops_the_cell(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    with trio.move_on_after(0.5) as scope:
        await run(evaluator, "await trio.sleep(60)")
    assert scope.cancelled_caught
    assert recorder.of_type("error")[-1]["ename"] == "KeyboardInterrupt"
    assert (await run(evaluator, "2"))["status"] == "ok"


async def test_escalation_kill_and_respawn(recorder: Recorder, child_env: dict[str, str]) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env, grace_period=0.5) as ev:
            await run(ev, "doomed = 1")
            old_pid = ev.pid
            code = (
                "import signal, time\n"
                "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                "print('started')\n"
                "time.sleep(60)"
            )
            reply, latency = await interrupt_when_started(ev, recorder, code)
            print(f"\nescalation (grace 0.5 s) took {latency:.2f} s")
            assert reply["status"] == "error" and reply["ename"] == "EvaluatorRestarted"
            assert reply["execution_count"] == 2
            assert "namespace was reset" in recorder.text("stderr")
            assert old_pid is not None and not _alive_soon(old_pid)
            after = await run(ev, "'doomed' in dir()")
            assert after["status"] == "ok" and after["execution_count"] == 3
            assert recorder.of_type("execute_result")[-1]["data"]["text/plain"] == "False"
            assert ev.pid != old_pid


async def test_slow_cleanup_after_the_interrupt_keeps_the_namespace(
    recorder: Recorder, child_env: dict[str, str]
) -> None:
    # The interrupt reached the cell (KeyboardInterrupt in time.sleep), and its finally
    # takes twice the grace period: that is the cell handling it, not a stuck evaluator.
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env, grace_period=0.5) as ev:
            await run(ev, "kept = 'yes'")
            pid = ev.pid
            code = (
                "import time\n"
                "try:\n"
                "    print('started')\n"
                "    time.sleep(60)\n"
                "finally:\n"
                "    time.sleep(1.0)\n"
                "    print('cleaned up')"
            )
            reply, latency = await interrupt_when_started(ev, recorder, code)
            assert reply["ename"] == "KeyboardInterrupt", reply
            assert latency >= 1.0 and "cleaned up" in recorder.text()
            assert ev.pid == pid and "namespace was reset" not in recorder.text("stderr")
            recorder.clear()
            await run(ev, "kept")
            assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "'yes'"


def _alive_soon(pid: int) -> bool:
    from .conftest import alive

    return alive(pid)
