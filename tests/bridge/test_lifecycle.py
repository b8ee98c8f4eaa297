"""Evaluator death (os._exit, SIGKILL, idle), respawn, counts, and no orphans."""

from __future__ import annotations

import os
import signal

import trio

from trikernel.bridge import SubprocessEvaluator, open_subprocess_evaluator
from trikernel.errors import EvaluatorDied
from trikernel.evaluator_api import Parent

from .conftest import TIMEOUT, Recorder, alive, run, wait_gone


async def test_os_exit_during_cell(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    await run(evaluator, "x = 1")
    old = evaluator.pid
    reply = await run(evaluator, "import os\nos._exit(3)")
    assert reply["status"] == "error" and reply["ename"] == "EvaluatorDied"
    assert "exited with code 3" in reply["evalue"]
    assert reply["execution_count"] == 2
    assert "namespace was reset" in recorder.text("stderr")
    after = await run(evaluator, "'x' in dir()")
    assert after["status"] == "ok" and after["execution_count"] == 3
    assert recorder.of_type("execute_result")[-1]["data"]["text/plain"] == "False"
    assert evaluator.pid != old


async def test_sigkill_during_cell(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    reply = await run(evaluator, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)")
    assert reply["ename"] == "EvaluatorDied"
    assert "signal 9 (SIGKILL)" in reply["evalue"]
    assert (await run(evaluator, "1 + 1"))["status"] == "ok"


async def test_segfault_during_cell(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    reply = await run(evaluator, "import ctypes\nctypes.string_at(0)")
    assert reply["ename"] == "EvaluatorDied" and "SIGSEGV" in reply["evalue"]
    assert "Fatal Python error" in recorder.text("stderr")  # faulthandler, via fd 2
    assert (await run(evaluator, "1"))["status"] == "ok"


async def test_death_while_idle(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    pid = evaluator.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    await recorder.wait_for(lambda: "while idle" in recorder.text("stderr"))
    with trio.fail_after(TIMEOUT):
        while evaluator.pid in (None, pid):
            await trio.sleep(0.01)
    assert (await run(evaluator, "'fresh'"))["status"] == "ok"


async def test_requests_survive_death(evaluator: SubprocessEvaluator) -> None:
    await run(evaluator, "import os\nos._exit(1)")
    with trio.fail_after(TIMEOUT):
        reply = await evaluator.request("is_complete_request", {"code": "1"}, Parent())
    assert reply["status"] == "complete"


async def test_no_orphans_after_aclose(recorder: Recorder, child_env: dict[str, str]) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env) as ev:
            await run(ev, "import subprocess\np = subprocess.Popen(['sleep', '60'])\n")
            await run(ev, "p.pid")
            grandchild = int(recorder.of_type("execute_result")[-1]["data"]["text/plain"])
            pid = ev.pid
            assert pid is not None and alive(pid) and alive(grandchild)
    assert await wait_gone(pid)
    assert await wait_gone(grandchild)


async def test_no_orphans_even_with_a_running_cell(
    recorder: Recorder, child_env: dict[str, str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env, grace_period=0.5) as ev:
            pid = ev.pid
            assert pid is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run, ev, "import time\nwhile True: time.sleep(1)")
                await trio.sleep(0.2)
                nursery.cancel_scope.cancel()
    assert await wait_gone(pid)


async def test_lifeline_ends_an_orphaned_evaluator(child_env: dict[str, str]) -> None:
    """The kernel dies without cleaning up (simulated by closing the lifeline)."""
    recorder = Recorder()
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env) as ev:
            child = ev._child
            assert child is not None
            pid = child.pid
            child.close_lifeline()
            assert await wait_gone(pid)


async def test_evaluator_that_cannot_start(child_env: dict[str, str]) -> None:
    recorder = Recorder()
    env = {**child_env, "PYTHONPATH": "/nonexistent", "PYTHONSAFEPATH": "1"}
    with trio.fail_after(TIMEOUT):
        try:
            async with open_subprocess_evaluator(recorder, env=env, cwd="/", python="/bin/false"):
                raise AssertionError("must not start")
        except EvaluatorDied as exc:
            assert "could not be started" in str(exc) and "exited with code 1" in str(exc)
            assert exc.returncode == 1
        else:
            raise AssertionError("EvaluatorDied not raised")


async def test_comm_metadata_reaches_the_sink(
    recorder: Recorder, child_env: dict[str, str]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with open_subprocess_evaluator(recorder, env=child_env) as ev:
            code = (
                "import comm\nc = comm.create_comm(target_name='t', metadata={'version': '2.1.0'})"
            )
            await run(ev, code)
    seen = [(o.msg_type, dict(o.metadata)) for o in recorder.outputs]
    assert ("comm_open", {"version": "2.1.0"}) in seen
