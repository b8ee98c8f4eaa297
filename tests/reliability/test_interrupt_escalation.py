"""Promise 2: an interrupt always ends the cell. Cells that ignore it (SIGINT set to
SIG_IGN, a C call that holds the GIL or blocks SIGINT, an awaiting cell that swallows
cancellation) are ended by killing and respawning the evaluator once the grace period
(``--interrupt-grace 1`` here) is over; the reply says so (``EvaluatorRestarted``), a
stderr stream says the namespace was reset, and the kernel is idle again.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from support.client import interrupt, run, shell_replies, shell_reply
from support.iopub import iopub_until, is_idle, stream_text
from support.kernel_process import KernelProcess, kernel_manager, ready_client
from support.procs import alive

from .helpers import assert_serves, evaluator_pid

GRACE = 1.0  # the fixture's --interrupt-grace
RESPAWN = 8.0  # generous bound for killing + starting an evaluator on a loaded machine


def start_cell(kc: BlockingKernelClient, code: str, started: str) -> tuple[str, list[dict]]:
    """Execute ``code`` and return once it printed ``started`` (it is running)."""
    msg_id = kc.execute(code)
    outputs: list[dict[str, Any]] = []

    def printed(msg: dict[str, Any]) -> bool:
        return msg["msg_type"] == "stream" and started in msg["content"]["text"]

    iopub_until(kc, msg_id, printed, outputs)
    return msg_id, outputs


def finish_cell(
    kc: BlockingKernelClient, msg_id: str, outputs: list[dict[str, Any]]
) -> dict[str, Any]:
    """The cell's reply, after its ``idle`` (the kernel is idle again)."""
    iopub_until(kc, msg_id, is_idle, outputs)
    return dict(shell_reply(kc, msg_id)["content"])


STUBBORN = {
    "sigint-ignored": "import signal, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    "print('started', flush=True)\n"
    "time.sleep(60)",
    "c-call-holding-the-gil": "print('started', flush=True)\nsum(range(10**13))",
    "c-call-with-sigint-blocked": "import ctypes, signal\n"
    "signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})\n"
    "print('started', flush=True)\n"
    "ctypes.CDLL(None).sleep(60)",
    "await-swallowing-cancellation": "import trio\n"
    "print('started', flush=True)\n"
    "while True:\n"
    "    try:\n"
    "        await trio.sleep(60)\n"
    "    except BaseException:\n"
    "        pass",
}


@pytest.mark.parametrize("case", list(STUBBORN))
def test_stubborn_cell_is_killed_after_the_grace_period(
    kernel: KernelProcess, kc: BlockingKernelClient, case: str
) -> None:
    run(kc, "kept = 1")
    old = evaluator_pid(kc)
    msg_id, outputs = start_cell(kc, STUBBORN[case], "started")
    start = time.monotonic()
    interrupt(kc)
    content = finish_cell(kc, msg_id, outputs)
    elapsed = time.monotonic() - start
    assert content["status"] == "error"
    assert content["ename"] == "EvaluatorRestarted", content
    assert "did not stop within 1 s" in content["evalue"]
    assert GRACE * 0.9 <= elapsed < GRACE + RESPAWN, elapsed
    notice = stream_text(outputs, "stderr")
    assert "namespace was reset" in notice, notice
    assert not alive(old)
    assert kernel.proc is not None and kernel.proc.poll() is None
    # Idle again, with a fresh evaluator and namespace.
    assert evaluator_pid(kc) != old
    assert run(kc, "kept")[0]["content"]["ename"] == "NameError"
    assert_serves(kc)


def test_sigint_to_the_kernel_escalates_too(
    kernel: KernelProcess, kc: BlockingKernelClient
) -> None:
    # Signal mode (what jupyter_client does with interrupt_mode "signal"): SIGINT to the
    # kernel's process group. The evaluator is in its own session: only the kernel
    # decides what it gets.
    old = evaluator_pid(kc)
    msg_id, outputs = start_cell(kc, STUBBORN["sigint-ignored"], "started")
    os.killpg(kernel.pid, signal.SIGINT)
    content = finish_cell(kc, msg_id, outputs)
    assert content["ename"] == "EvaluatorRestarted"
    assert not alive(old)
    assert kernel.proc is not None and kernel.proc.poll() is None
    assert_serves(kc)


def test_repeated_interrupts_during_the_grace_period(
    kernel: KernelProcess, kc: BlockingKernelClient
) -> None:
    msg_id, outputs = start_cell(kc, STUBBORN["sigint-ignored"], "started")
    start = time.monotonic()
    for _ in range(5):
        interrupt(kc)
        time.sleep(0.1)
    content = finish_cell(kc, msg_id, outputs)
    assert content["ename"] == "EvaluatorRestarted"
    assert time.monotonic() - start < GRACE + RESPAWN
    assert_serves(kc)


def test_interrupt_of_a_queue_of_stubborn_cells(
    kernel: KernelProcess, kc: BlockingKernelClient
) -> None:
    # The running cell escalates; the queued ones are aborted (stop_on_error): the kernel
    # is not busy for 3 x 60 s.
    first, outputs = start_cell(kc, STUBBORN["sigint-ignored"], "started")
    queued = [kc.execute("import time; time.sleep(60)") for _ in range(2)]
    interrupt(kc)
    content = finish_cell(kc, first, outputs)
    assert content["ename"] == "EvaluatorRestarted"
    replies = shell_replies(kc, queued)
    assert [r["parent_header"]["msg_id"] for r in replies] == queued  # in order
    assert [r["content"]["status"] for r in replies] == ["aborted", "aborted"]
    assert_serves(kc)


def test_interrupt_while_the_evaluator_restarts(
    kernel: KernelProcess, kc: BlockingKernelClient
) -> None:
    # A cell sent right after a death waits for the new evaluator; an interrupt then
    # ends it at once instead of leaving the kernel busy.
    old = evaluator_pid(kc)
    os.kill(old, signal.SIGKILL)
    msg_id = kc.execute("print('ran')")
    interrupt(kc)
    outputs: list[dict[str, Any]] = []
    content = finish_cell(kc, msg_id, outputs)
    assert content["status"] in ("ok", "error")  # it may have started already
    assert_serves(kc)


def test_interrupt_while_idle_is_harmless(kernel: KernelProcess, kc: BlockingKernelClient) -> None:
    run(kc, "kept = 2")
    old = evaluator_pid(kc)
    interrupt(kc)
    time.sleep(GRACE * 1.5)
    assert evaluator_pid(kc) == old
    assert run(kc, "kept")[0]["content"]["status"] == "ok"


def test_grace_period_from_the_kernelspec() -> None:
    # kernel.json argv "... --interrupt-grace 1" (see conftest.py), started by
    # KernelManager and interrupted the way Jupyter does it (interrupt_mode message).
    with kernel_manager("trikernel-reliability") as km, ready_client(km.client()) as kc:
        msg_id, outputs = start_cell(kc, STUBBORN["sigint-ignored"], "started")
        start = time.monotonic()
        km.interrupt_kernel()
        content = finish_cell(kc, msg_id, outputs)
        assert content["ename"] == "EvaluatorRestarted"
        assert "within 1 s" in content["evalue"]  # not the default 3 s
        assert time.monotonic() - start < GRACE + RESPAWN
        assert_serves(kc)
