"""Promise: no orphans, ever. Whatever ends the kernel (shutdown_request, SIGTERM,
KernelManager.shutdown_kernel, SIGKILL of the kernel process alone, the death of the
process named by JPY_PARENT_PID), no process of its tree is left behind, including
processes a cell started. Connection files are handled as jupyter_client expects.

The evaluator runs in a session of its own (only the kernel signals it), so a killpg
of the kernel's group does not reach it: the lifeline pipe does.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.manager import KernelManager
from support import TIMEOUT
from support.client import run
from support.iopub import stream_text
from support.kernel_process import (
    KernelProcess,
    connected,
    kernel_manager,
    ready_client,
    trikernel_command,
)
from support.procs import alive, kill_pids, process_tree, wait_gone, wait_until

from .helpers import assert_serves

GONE_WITHIN = 3.0  # "a couple of seconds"


def gone(pids: list[int]) -> None:
    wait_gone(pids, GONE_WITHIN)


def start_grandchild(kc) -> int:  # type: ignore[no-untyped-def]
    """A process started by a cell (``sleep 600``), as user code does."""
    reply, outputs = run(
        kc, "import subprocess; p = subprocess.Popen(['sleep', '600']); print(p.pid)"
    )
    assert reply["content"]["status"] == "ok"
    return int(stream_text(outputs))


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[KernelProcess]:
    with KernelProcess(tmp_path) as k:
        yield k


def test_shutdown_request(kernel: KernelProcess) -> None:
    with connected(kernel) as kc:
        child = start_grandchild(kc)
        tree = kernel.tree()
        assert len(tree) == 3  # kernel, evaluator, sleep
        kc.shutdown()
        assert kernel.proc is not None
        assert kernel.proc.wait(timeout=TIMEOUT) == 0
    gone(tree)
    assert not alive(child)
    # jupyter_client wrote the connection file; the kernel must not delete it.
    assert Path(kernel.connection_file).exists()


def test_sigterm_to_the_kernel(kernel: KernelProcess) -> None:
    with connected(kernel) as kc:
        child = start_grandchild(kc)
        tree = kernel.tree()
        os.kill(kernel.pid, signal.SIGTERM)
        assert kernel.proc is not None
        assert kernel.proc.wait(timeout=TIMEOUT) == 0
    gone(tree)
    assert not alive(child)
    assert Path(kernel.connection_file).exists()


def test_sigterm_while_a_cell_blocks(kernel: KernelProcess) -> None:
    with connected(kernel) as kc:
        kc.execute("import time; time.sleep(600)")
        time.sleep(0.5)
        tree = kernel.tree()
        os.kill(kernel.pid, signal.SIGTERM)
        assert kernel.proc is not None
        assert kernel.proc.wait(timeout=TIMEOUT) == 0
    gone(tree)


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "busy"])
def test_sigkill_of_the_kernel_alone(kernel: KernelProcess, busy: bool) -> None:
    # Only the kernel process, not its group: the evaluator must notice by itself.
    with connected(kernel) as kc:
        evaluator = kernel.wait_evaluator()
        if busy:
            kc.execute("import time; time.sleep(600)")
            time.sleep(0.5)
        tree = kernel.tree()
        start = time.monotonic()
        os.kill(kernel.pid, signal.SIGKILL)
        gone([evaluator])
        took = time.monotonic() - start
    gone(tree)
    assert took < GONE_WITHIN


def test_sigkill_of_the_kernel_takes_the_cells_processes_too(kernel: KernelProcess) -> None:
    with connected(kernel) as kc:
        child = start_grandchild(kc)
        tree = kernel.tree()
        try:
            os.kill(kernel.pid, signal.SIGKILL)
            gone([p for p in tree if p != child])
            gone([child])
        finally:
            kill_pids([child])


def test_sigkill_of_the_kernel_during_a_gil_holding_c_call(kernel: KernelProcess) -> None:
    with connected(kernel) as kc:
        evaluator = kernel.wait_evaluator()
        kc.execute("sum(range(10**13))")
        time.sleep(0.5)
        try:
            os.kill(kernel.pid, signal.SIGKILL)
            gone([evaluator])
        finally:
            kill_pids([evaluator])


def test_parent_death_ends_the_kernel(tmp_path: Path) -> None:
    parent = subprocess.Popen(["sleep", "600"])
    try:
        env = {**os.environ, "JPY_PARENT_PID": str(parent.pid)}
        with KernelProcess(tmp_path, env=env) as kernel, connected(kernel) as kc:
            assert_serves(kc)
            tree = kernel.tree()
            assert len(tree) == 2
            parent.kill()
            parent.wait(timeout=TIMEOUT)
            assert kernel.proc is not None
            assert kernel.proc.wait(timeout=TIMEOUT) == 0
            gone(tree)
    finally:
        parent.kill()
        parent.wait(timeout=TIMEOUT)


@pytest.fixture
def km() -> Iterator[KernelManager]:
    with kernel_manager("trikernel-reliability") as manager:
        yield manager


@pytest.mark.parametrize("now", [True, False], ids=["now", "polite"])
def test_kernel_manager_shutdown(km: KernelManager, now: bool) -> None:
    with ready_client(km.client()) as kc:
        child = start_grandchild(kc)
        assert km.provisioner is not None
        pid = km.provisioner.process.pid  # type: ignore[attr-defined]
        tree = process_tree(pid)
        assert len(tree) == 3
        connection_file = km.connection_file
        km.shutdown_kernel(now=now)
    try:
        gone(tree)
    finally:
        kill_pids(tree)
    assert not alive(child)
    # jupyter_client removes its own connection file; the kernel never did it earlier
    # (the file existed all along: checked by the shutdown tests above).
    assert not Path(connection_file).exists()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_connection_file_written_by_trikernel_is_0600(tmp_path: Path) -> None:
    # Without -f, trikernel writes its own file into the runtime dir, and removes it
    # when it exits.
    runtime = tmp_path / "runtime"
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(runtime)}
    with trikernel_command(
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env
    ) as proc:
        path = runtime / f"kernel-trikernel-{proc.pid}.json"
        wait_until(path.exists, TIMEOUT, "the connection file")
        assert mode(path) == 0o600
        assert mode(runtime) & 0o077 == 0
        info = json.loads(path.read_text())
        assert info["key"] and info["shell_port"]
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=TIMEOUT) == 0
        assert not path.exists()


def test_connection_file_rewritten_with_real_ports_stays_0600(tmp_path: Path) -> None:
    # A file with port 0 (no ports chosen): the kernel writes the real ports back; the
    # rewritten file is 0600 even though the original was more open, and it is kept.
    path = tmp_path / "ports0.json"
    info = {
        "shell_port": 0,
        "iopub_port": 0,
        "stdin_port": 0,
        "control_port": 0,
        "hb_port": 0,
        "ip": "127.0.0.1",
        "key": "a-key",
        "transport": "tcp",
        "signature_scheme": "hmac-sha256",
    }
    path.write_text(json.dumps(info))
    path.chmod(0o644)
    kernel = KernelProcess(tmp_path)
    kernel.connection_file = str(path)
    with kernel:
        wait_until(lambda: json.loads(path.read_text())["shell_port"] != 0, TIMEOUT, "ports")
        assert mode(path) == 0o600
        kernel.info = json.loads(path.read_text())
        with connected(kernel) as kc:
            assert_serves(kc)
            kc.shutdown()
        assert kernel.proc is not None
        assert kernel.proc.wait(timeout=TIMEOUT) == 0
    assert path.exists()
