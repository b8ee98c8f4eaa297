"""trikernel's client side vs jupyter_client, against the same ipykernel in one run.

    python bench/client.py [--starts 8] [--round-trips 300]

1. start-to-ready of ipykernel: ``open_kernel_manager("python3")`` (entered = connected
   and ready) vs jupyter_client's ``AsyncKernelManager.start_kernel`` + an
   ``AsyncKernelClient``'s ``start_channels`` and ``wait_for_ready``; alternated, each
   kernel shut down before the next start.
2. the ``pass`` round trip (execute_request -> execute_reply *and* the idle status on
   iopub) through our ``KernelClient`` vs jupyter_client's ``AsyncKernelClient``, both
   connected to one ipykernel started once, in alternating blocks.

Both use the same kernelspec (a tmp JUPYTER_PATH whose ``python3`` runs this
interpreter's ipykernel). Ours runs under ``trio.run``, theirs under ``asyncio.run``.
Every wait has a timeout; every kernel is shut down in a ``finally``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import median, percentile, render_table  # noqa: E402
from trikernel.client import open_client, open_kernel_manager  # noqa: E402
from trikernel.connection import read_connection_file  # noqa: E402

BLOCK = 50


def _setup_dirs(root: Path) -> None:
    spec = root / "data" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(root / "data")
    os.environ["JUPYTER_RUNTIME_DIR"] = str(root / "runtime")


async def _ours_start() -> float:
    with trio.fail_after(60):
        start = time.perf_counter()
        async with open_kernel_manager("python3", quiet=True):
            return time.perf_counter() - start
    raise AssertionError("unreachable")


async def _theirs_start() -> float:
    from jupyter_client.manager import AsyncKernelManager

    km = AsyncKernelManager(kernel_name="python3")
    start = time.perf_counter()
    await km.start_kernel()
    kc = km.client()
    try:
        kc.start_channels()
        await kc.wait_for_ready(timeout=60)
        return time.perf_counter() - start
    finally:
        kc.stop_channels()
        await km.shutdown_kernel(now=False)


async def _ours_round_trips(connection_file: str, n: int) -> list[float]:
    info = read_connection_file(connection_file)
    samples = []
    with trio.fail_after(120):
        async with open_client(info) as client:
            await client.wait_for_ready()
            for _ in range(n):
                start = time.perf_counter()
                await client.execute("pass")
                samples.append(time.perf_counter() - start)
    return samples


async def _theirs_round_trips(connection_file: str, n: int) -> list[float]:
    from jupyter_client.asynchronous import AsyncKernelClient

    kc = AsyncKernelClient(connection_file=connection_file)
    kc.load_connection_file()
    kc.start_channels()
    samples = []
    try:
        await kc.wait_for_ready(timeout=60)
        for _ in range(n):
            start = time.perf_counter()
            msg_id = kc.execute("pass")
            while (await kc.get_shell_msg(timeout=10))["parent_header"].get("msg_id") != msg_id:
                pass
            while True:
                msg = await kc.get_iopub_msg(timeout=10)
                if (
                    msg["parent_header"].get("msg_id") == msg_id
                    and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"
                ):
                    break
            samples.append(time.perf_counter() - start)
    finally:
        kc.stop_channels()
    return samples


async def _shared_kernel(n: int) -> tuple[list[float], list[float]]:
    """One ipykernel (started by our manager); both clients take turns on it."""
    ours: list[float] = []
    theirs: list[float] = []
    async with open_kernel_manager("python3", quiet=True) as km:
        for _ in range(max(1, n // BLOCK)):
            ours += await _ours_round_trips(km.connection_file, BLOCK)
            theirs += await trio.to_thread.run_sync(
                lambda: asyncio.run(_theirs_round_trips(km.connection_file, BLOCK))
            )
    return ours, theirs


def _row(what: str, ours: list[float], theirs: list[float]) -> list[str]:
    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1000:.2f} ms"

    ratio = median(theirs) / median(ours)
    return [what, str(len(ours)), ms(ours, 50), ms(ours, 99), ms(theirs, 50), ms(theirs, 99),
            f"{ratio:.2f}x"]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--starts", type=int, default=8)
    parser.add_argument("--round-trips", type=int, default=300)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        _setup_dirs(Path(tmp))
        ours_start: list[float] = []
        theirs_start: list[float] = []
        for _ in range(args.starts):
            ours_start.append(trio.run(_ours_start))
            theirs_start.append(asyncio.run(_theirs_start()))
        ours_rt, theirs_rt = trio.run(_shared_kernel, args.round_trips)
    header = ["measure", "n", "ours p50", "ours p99", "jupyter_client p50",
              "jupyter_client p99", "speed-up (p50)"]  # fmt: skip
    rows = [
        _row("ipykernel start-to-ready", ours_start, theirs_start),
        _row("`pass` round trip", ours_rt, theirs_rt),
    ]
    print(render_table(header, rows))


if __name__ == "__main__":
    main()
