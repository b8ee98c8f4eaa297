"""Soak: many executions with output while two other clients connect and disconnect
over and over and one subscriber never reads. Nothing is lost for the reading
client (every execute_reply ok, every line present, in order), the churn and the
stalled subscriber cost the kernel no leak (RSS, connections), and shutdown leaves
no process behind.

1000 executions run by default (about 15 s here); the slow variant runs 10,000.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from support import TIMEOUT
from support.client import run, shell_reply
from support.iopub import stream_text
from support.kernel_process import KernelProcess
from support.procs import wait_gone, wait_until

from .helpers import established_peers, stalled_subscriber


def churn(
    kernel: KernelProcess, stop: threading.Event, counts: list[int], errors: list[str]
) -> None:
    """Connect, ask kernel_info, disconnect; again and again."""
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        while not stop.is_set():
            kc = BlockingKernelClient(connection_file=kernel.connection_file, context=ctx)
            kc.load_connection_file()
            try:
                kc.start_channels(hb=False)
                reply = shell_reply(kc, kc.kernel_info())
                if reply["msg_type"] != "kernel_info_reply":
                    errors.append(f"unexpected {reply['msg_type']}")
                counts.append(1)
            except Exception as exc:  # reported by the test
                errors.append(repr(exc))
            finally:
                kc.stop_channels()
    finally:
        ctx.destroy(linger=0)


def soak(tmp_path: Path, executions: int) -> None:
    with KernelProcess(tmp_path) as kernel:
        kc = kernel.client()
        ctx: zmq.Context[Any] = zmq.Context()
        stop = threading.Event()
        counts: list[int] = []
        errors: list[str] = []
        threads = [
            threading.Thread(target=churn, args=(kernel, stop, counts, errors), daemon=True)
            for _ in range(2)
        ]
        try:
            _stalled = stalled_subscriber(ctx, kernel)  # kept referenced, never read
            run(kc, "1")
            rss_before = kernel.rss_kib()
            for t in threads:
                t.start()
            start = time.monotonic()
            for i in range(executions):
                reply, outputs = run(kc, f"print({i})")
                assert reply["content"]["status"] == "ok", (i, reply["content"])
                assert stream_text(outputs) == f"{i}\n", i
            took = time.monotonic() - start
            stop.set()
            for t in threads:
                t.join(timeout=TIMEOUT)
            assert not errors, errors[:5]
            assert len(counts) > 10, "the churning clients hardly ran"
            grew = (kernel.rss_kib() - rss_before) / 1024
            print(
                f"{executions} executions in {took:.1f} s, {len(counts)} client connections "
                f"churned, RSS grew {grew:.1f} MiB"
            )
            assert grew < 32
            # Every churned connection is gone on the kernel side: only kc (and the SUB).
            wait_until(
                lambda: len(established_peers(kernel.port("shell"))) == 1,
                TIMEOUT,
                "the churned shell connections to close",
            )
            assert len(established_peers(kernel.port("iopub"))) == 2
            tree = kernel.tree()
            assert len(tree) == 2  # the kernel and its evaluator, nothing more
            kc.shutdown()
            assert kernel.proc is not None
            assert kernel.proc.wait(timeout=TIMEOUT) == 0
            wait_gone(tree, 5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=TIMEOUT)
            kc.stop_channels()
            ctx.destroy(linger=0)


def test_soak(tmp_path: Path) -> None:
    soak(tmp_path, 1000)


@pytest.mark.slow
def test_soak_long(tmp_path: Path) -> None:
    soak(tmp_path, 10_000)
