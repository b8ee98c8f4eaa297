"""Promise 1: the evaluator can die in every way and the kernel goes on.

One kernel process and one jupyter_client client serve the whole module. After each
death the running cell ends with an ``EvaluatorDied`` error reply naming the exit code
or signal, a stderr stream says the namespace was reset, a new evaluator (new pid)
runs the next cell, and the kernel process and the client's TCP connections (the
client-side ports seen in /proc/net/tcp) are exactly the ones from the start: nobody
reconnected.

The OOM case is simulated: the cell allocates 200 MiB and the test SIGKILLs it, which
is what the Linux OOM killer does.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from support.client import run, shell_reply
from support.iopub import iopub_until, is_idle, parent_id, result_text, stream_text
from support.kernel_process import KernelProcess
from support.procs import alive, rss_kib

from .helpers import established_peers, evaluator_pid

CONNECTED = ("shell", "control", "stdin", "iopub")


@pytest.fixture(scope="module")
def baseline(kernel: KernelProcess, kc: BlockingKernelClient) -> dict[str, Any]:
    """What must never change: the kernel pid and the client's connections."""
    run(kc, "1")
    peers = {ch: established_peers(kernel.port(ch)) for ch in CONNECTED}
    assert all(len(p) == 1 for p in peers.values()), peers
    return {"pid": kernel.pid, "peers": peers}


def check_survived(
    kernel: KernelProcess,
    kc: BlockingKernelClient,
    baseline: dict[str, Any],
    old_pid: int | None,
) -> None:
    assert kernel.proc is not None and kernel.proc.poll() is None, "the kernel process died"
    assert kernel.pid == baseline["pid"]
    now = {ch: established_peers(kernel.port(ch)) for ch in CONNECTED}
    assert now == baseline["peers"], "a client connection was closed or reopened"
    assert kc.is_alive()
    # A fresh evaluator, with a fresh namespace, runs the next cell.
    new_pid = evaluator_pid(kc)
    if old_pid is not None:
        assert new_pid != old_pid
        assert not alive(old_pid)
    reply, _ = run(kc, "before_death")
    assert reply["content"]["ename"] == "NameError"


def run_until_death(
    kc: BlockingKernelClient, code: str, kill: int | None = None, after: str | None = None
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute ``code``; if ``kill`` is a pid, SIGKILL it once ``after`` was printed."""
    outputs: list[dict[str, Any]] = []
    msg_id = kc.execute(code)
    if kill is not None:
        assert after, "kill needs a text to wait for"

        def printed(msg: dict[str, Any]) -> bool:
            return msg["msg_type"] == "stream" and after in msg["content"]["text"]

        if not is_idle(iopub_until(kc, msg_id, lambda m: printed(m) or is_idle(m), outputs)):
            os.kill(kill, signal.SIGKILL)
            iopub_until(kc, msg_id, is_idle, outputs)
    else:
        iopub_until(kc, msg_id, is_idle, outputs)
    return shell_reply(kc, msg_id), outputs


CASES = {
    "segfault": ("import ctypes; ctypes.string_at(0)", "killed by signal 11 (SIGSEGV)"),
    "os._exit": ("import os; os._exit(3)", "exited with code 3"),
    "abort": ("import os; os.abort()", "killed by signal 6 (SIGABRT)"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_death_inside_the_cell(
    kernel: KernelProcess, kc: BlockingKernelClient, baseline: dict[str, Any], case: str
) -> None:
    code, what = CASES[case]
    old = evaluator_pid(kc)
    run(kc, "before_death = 1")
    reply, outputs = run_until_death(kc, code)
    content = reply["content"]
    assert content["status"] == "error"
    assert content["ename"] == "EvaluatorDied"
    assert what in content["evalue"], content["evalue"]
    notice = stream_text(outputs, "stderr")
    assert what in notice and "namespace was reset" in notice, notice
    check_survived(kernel, kc, baseline, old)


# The evaluator dies 3 MB into a 50 MB output frame: the kernel has started reading
# it straight into its final buffer (FrameDecoder.read_target) when the pipe ends.
DIES_MID_FRAME = """\
import json, os, struct
args = open("/proc/self/cmdline", "rb").read().split(b"\\0")
fd = int(next(a for a in args if a.startswith(b"--out-fd=")).split(b"=")[1])
body = {"msg_type": "display_data", "metadata": {}, "packed": True}
head = json.dumps({"kind": "output", "body": body, "buffers": [50_000_000]}).encode()
os.write(fd, struct.pack(">II", 4 + len(head) + 50_000_000, len(head)) + head)
os.write(fd, b"x" * 3_000_000)
os._exit(7)
"""


def test_death_in_the_middle_of_a_big_output(
    kernel: KernelProcess, kc: BlockingKernelClient, baseline: dict[str, Any]
) -> None:
    old = evaluator_pid(kc)
    run(kc, "before_death = 1")
    reply, outputs = run_until_death(kc, DIES_MID_FRAME)
    content = reply["content"]
    assert content["ename"] == "EvaluatorDied"
    assert "the stream ended in the middle of a frame" in content["evalue"], content["evalue"]
    assert "namespace was reset" in stream_text(outputs, "stderr")
    assert not [m for m in outputs if m["msg_type"] == "display_data"]  # nothing half-sent
    check_survived(kernel, kc, baseline, old)


@pytest.mark.parametrize("oom", [False, True], ids=["kill-9", "oom-like-kill-9"])
def test_sigkill_from_outside_while_running(
    kernel: KernelProcess, kc: BlockingKernelClient, baseline: dict[str, Any], oom: bool
) -> None:
    old = evaluator_pid(kc)
    run(kc, "before_death = 1")
    if oom:  # what the OOM killer does: SIGKILL the process that grew
        code = "blob = bytearray(200 * 2**20); blob[::4096] = b'x' * len(blob[::4096]); print('grown', flush=True); import time; time.sleep(60)"
    else:
        code = "print('sleeping', flush=True); import time; time.sleep(60)"
    start = time.monotonic()
    if oom:
        outputs: list[dict[str, Any]] = []
        msg_id = kc.execute(code)

        def grown(msg: dict[str, Any]) -> bool:
            return msg["msg_type"] == "stream" and "grown" in msg["content"]["text"]

        iopub_until(kc, msg_id, grown, outputs)  # the allocation: check it is real, then kill
        assert rss_kib(old) > 200 * 1024
        os.kill(old, signal.SIGKILL)
        iopub_until(kc, msg_id, is_idle, outputs)
        reply = shell_reply(kc, msg_id)
    else:
        reply, outputs = run_until_death(kc, code, kill=old, after="sleeping")
    assert time.monotonic() - start < 10  # not the 60 s sleep
    content = reply["content"]
    assert content["ename"] == "EvaluatorDied"
    assert "killed by signal 9 (SIGKILL)" in content["evalue"], content["evalue"]
    notice = stream_text(outputs, "stderr")
    assert "SIGKILL" in notice and "namespace was reset" in notice, notice
    check_survived(kernel, kc, baseline, old)


def test_sigkill_while_idle(
    kernel: KernelProcess, kc: BlockingKernelClient, baseline: dict[str, Any]
) -> None:
    old = evaluator_pid(kc)
    last, _ = run(kc, "before_death = 1")
    os.kill(old, signal.SIGKILL)
    # The notice goes out on iopub (stderr, parent: the last request) by itself.
    msg = iopub_until(
        kc,
        parent_id(last),
        lambda m: m["msg_type"] == "stream" and m["content"]["name"] == "stderr",
    )
    assert "while idle" in msg["content"]["text"]
    assert "namespace was reset" in msg["content"]["text"]
    check_survived(kernel, kc, baseline, old)


def test_deaths_in_a_row_then_normal_work(
    kernel: KernelProcess, kc: BlockingKernelClient, baseline: dict[str, Any]
) -> None:
    # Five deaths back to back (no respawn loop, no count going backwards).
    counts = []
    for _ in range(5):
        reply, _ = run_until_death(kc, "import os; os._exit(1)")
        assert reply["content"]["ename"] == "EvaluatorDied"
        counts.append(reply["content"]["execution_count"])
    assert counts == sorted(counts)
    check_survived(kernel, kc, baseline, None)
    reply, outputs = run(kc, "x = 20; x * 2 + 2")
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["execution_count"] > counts[-1]
    assert result_text(outputs) == ["42"]
