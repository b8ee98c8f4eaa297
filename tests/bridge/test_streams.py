"""Stream coalescing: output of a blocked cell still arrives quickly; a flood of
prints arrives complete, in order and fast; output between cells still arrives."""

from __future__ import annotations

import time

import trio

from trikernel.bridge import SubprocessEvaluator

from .conftest import TIMEOUT, Recorder, run


async def test_print_then_block_arrives_quickly(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    async with trio.open_nursery() as nursery:
        start = trio.current_time()
        nursery.start_soon(run, evaluator, "import time\nprint(1)\ntime.sleep(2)")
        await recorder.wait_for(lambda: recorder.text() == "1\n", timeout=TIMEOUT)
        latency = trio.current_time() - start
        print(f"\nprint latency while the cell blocks: {latency * 1e3:.0f} ms")
        assert latency < 0.2  # 50 ms coalescing timer, plus the pipe
        evaluator.interrupt()


async def test_200k_prints_complete_in_order(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    start = time.perf_counter()
    reply = await run(evaluator, "for i in range(200_000):\n    print(i)")
    elapsed = time.perf_counter() - start
    assert reply["status"] == "ok"
    text = recorder.text()
    assert text == "".join(f"{i}\n" for i in range(200_000))
    chunks = len(recorder.of_type("stream"))
    print(f"\n200k prints: {elapsed:.2f} s in {chunks} stream messages")
    assert chunks < 1000  # coalesced, not one message per print


async def test_flush_and_threads(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = (
        "import threading, sys\n"
        "def work():\n"
        "    for i in range(100):\n"
        "        print('t', i)\n"
        "t = threading.Thread(target=work); t.start(); t.join()\n"
        "sys.stdout.flush()\n"
        "sys.stdout.buffer.write('é\\n'.encode())\n"
    )
    assert (await run(evaluator, code))["status"] == "ok"
    assert recorder.text() == "".join(f"t {i}\n" for i in range(100)) + "é\n"


async def test_background_print_between_cells(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = "async def later():\n    await trio.sleep(0.2)\n    print('later')\nbackground.start_soon(later)"
    assert (await run(evaluator, code))["status"] == "ok"
    assert recorder.text() == ""
    await recorder.wait_for(lambda: recorder.text() == "later\n")


async def test_background_exception_is_reported(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = (
        "async def boom():\n"
        "    await trio.sleep(0.05)\n"
        "    raise ValueError('bang')\n"
        "background.start_soon(boom)"
    )
    assert (await run(evaluator, code))["status"] == "ok"
    await recorder.wait_for(lambda: bool(recorder.of_type("error")))
    (error,) = recorder.of_type("error")
    assert error["ename"] == "ValueError" and "background task 'boom'" in error["traceback"][0]
    assert (await run(evaluator, "1"))["status"] == "ok"  # the evaluator carries on


async def test_background_start(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = (
        "async def server(task_status=trio.TASK_STATUS_IGNORED):\n"
        "    task_status.started('port 1234')\n"
        "    await trio.sleep_forever()\n"
        "await background.start(server)"
    )
    assert (await run(evaluator, code))["status"] == "ok"
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "'port 1234'"
    code = (
        "async def fails_early(task_status=trio.TASK_STATUS_IGNORED):\n"
        "    raise KeyError('early')\n"
        "await background.start(fails_early)"
    )
    reply = await run(evaluator, code)
    assert reply["ename"] == "KeyError"  # before started(): the cell gets it
