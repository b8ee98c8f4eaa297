"""trikernel vs ipykernel, measured in one run through the same client code.

    python bench/kernels.py [--quick] [--scaling] [--kernels trikernel,ipykernel] [--json PATH]

Every kernel is started by jupyter_client's ``KernelManager`` from an explicit kernelspec
(argv ``[sys.executable, "-m", <module>, "-f", "{connection_file}"]``; interrupt_mode from the
kernel's own kernel.json: "message" for trikernel, "signal" for ipykernel) and driven by a
``BlockingKernelClient``. Times are wall-clock ``time.perf_counter()`` in this process, from
the moment the request is handed to jupyter_client to the moment the awaited message has been
received *and deserialized* by jupyter_client, so client-side costs are included and identical
for both kernels.

Rules: every wait has a timeout; every kernel started is shut down and its whole process tree
reaped in a ``finally`` (``shutdown_kernel(now=True)`` kills the process group; descendants in
other groups, such as trikernel's evaluator, are killed by pid); a step that fails records its
error and the run goes on with a fresh kernel.
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import math
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from queue import Empty
from typing import Any

import psutil
import zmq
from common import (
    fmt_bytes,
    fmt_seconds,
    kill_processes,
    machine_info,
    median,
    process_tree,
    profiled,
    render_table,
    summarize,
    tree_cpu,
    tree_memory,
    wait_processes_gone,
)
from jupyter_client import BlockingKernelClient, KernelManager
from jupyter_client.kernelspec import KernelSpec
from jupyter_client.session import Session

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
perf = time.perf_counter

START_TIMEOUT = 60.0  # launch -> kernel_info / first cell
CELL_TIMEOUT = 30.0  # a trivial cell
HEAVY_TIMEOUT = 120.0  # 200k prints, 50-100 MB payloads
HB_TIMEOUT = 1.0  # one heartbeat ping (jupyter_client's time_to_dead)
SHUTDOWN_TIMEOUT = 10.0


# -- kernels --------------------------------------------------------------------------------


# --trikernel-src DIR: run trikernel from a source tree (e.g. `git archive HEAD`) instead of the
# installed one: PYTHONPATH=DIR and cwd=DIR for the kernel (and so for its evaluator).
TRIKERNEL_SRC: Path | None = None


def kernel_spec(name: str) -> KernelSpec:
    """The kernel's own kernel.json with argv pinned to this interpreter."""
    if name == "trikernel":
        root = TRIKERNEL_SRC or REPO
        spec = json.loads((root / "kernelspec" / "kernel.json").read_text())
        module = "trikernel"
        if TRIKERNEL_SRC is not None:
            spec["env"] = {"PYTHONPATH": str(TRIKERNEL_SRC)}
    elif name == "ipykernel":
        from ipykernel.kernelspec import get_kernel_dict

        spec = get_kernel_dict()
        module = "ipykernel_launcher"
    else:
        raise SystemExit(f"unknown kernel {name!r}")
    spec["argv"] = [sys.executable, "-m", module, "-f", "{connection_file}"]
    spec.setdefault("interrupt_mode", "signal")
    spec.setdefault("display_name", name)
    spec.setdefault("language", "python")
    known = KernelSpec.class_trait_names()
    return KernelSpec(**{k: v for k, v in spec.items() if k in known})


class StepError(Exception):
    """A measurement could not be made (timeout, wrong reply, kernel died)."""


@dataclass
class Cell:
    """One execute_request and what came back for it."""

    msg_id: str
    sent: float
    reply: dict[str, Any] | None = None
    reply_at: float | None = None
    idle_at: float | None = None
    iopub: list[tuple[float, dict[str, Any]]] = field(default_factory=list)

    @property
    def reply_s(self) -> float:
        assert self.reply_at is not None
        return self.reply_at - self.sent

    @property
    def idle_s(self) -> float:
        assert self.idle_at is not None
        return self.idle_at - self.sent

    def first(self, msg_type: str) -> tuple[float, dict[str, Any]] | None:
        for at, msg in self.iopub:
            if msg["msg_type"] == msg_type:
                return at, msg
        return None

    def stdout(self) -> str:
        return "".join(
            m["content"]["text"]
            for _, m in self.iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == "stdout"
        )


class Kernel:
    """One kernel process started by KernelManager, plus a BlockingKernelClient.

    Use as a context manager: ``close()`` always shuts the kernel down and reaps it."""

    counter = 0
    every_process: dict[int, psutil.Process] = {}  # all kernel processes this run has seen

    def __init__(self, name: str, log_dir: Path) -> None:
        Kernel.counter += 1
        self.name = name
        self.km = KernelManager(kernel_name=name)
        self.km._kernel_spec = kernel_spec(name)  # explicit spec, no kernelspec lookup
        self.log_path = log_dir / f"{name}-{Kernel.counter:03d}.log"
        self.kc: BlockingKernelClient | None = None
        self.launched_at = math.nan
        self.pid = -1
        self._procs: dict[int, psutil.Process] = {}
        self._log: Any = None
        self._pollers: dict[int, zmq.Poller] = {}

    def __enter__(self) -> Kernel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.launched_at = perf()
        cwd = str(TRIKERNEL_SRC) if TRIKERNEL_SRC and self.name == "trikernel" else os.getcwd()
        self.km.start_kernel(stdout=self._log, stderr=self._log, cwd=cwd)
        self.pid = self.km.provisioner.process.pid  # type: ignore[union-attr]
        self.remember_processes()
        kc = self.km.client()
        kc.start_channels(hb=False)  # we ping the heartbeat ourselves
        self.kc = kc

    # -- processes --

    def remember_processes(self) -> list[psutil.Process]:
        """Record the kernel's current process tree so close() can reap all of it."""
        tree = process_tree(self.pid)
        for proc in tree:
            self._procs.setdefault(proc.pid, proc)
            Kernel.every_process.setdefault(proc.pid, proc)
        return tree

    def alive(self) -> bool:
        return self.km.is_alive()

    def close(self) -> None:
        """Shut down: kill the process group, then any descendant outside it; wait for all."""
        if self.pid > 0 and self.alive():
            self.remember_processes()
        if self.kc is not None:
            self.kc.stop_channels()
        try:
            if self.km.has_kernel:
                self.km.shutdown_kernel(now=True)
        except Exception as exc:  # the process group is still killed below
            print(f"  [{self.name}] shutdown_kernel failed: {exc!r}", file=sys.stderr)
            try:
                os.killpg(self.pid, 9)
            except OSError:
                pass
        stray = kill_processes(self._procs.values())
        if stray:
            print(f"  [{self.name}] killed leftover processes {stray}", file=sys.stderr)
        if wait_processes_gone(self._procs.values(), 5.0) is None:
            print(f"  [{self.name}] processes still alive after kill", file=sys.stderr)
        proc = getattr(self.km.provisioner, "process", None)
        if proc is not None:
            proc.wait(timeout=5)
        if self._log is not None:
            self._log.close()

    # -- messaging --

    @property
    def client(self) -> BlockingKernelClient:
        assert self.kc is not None, "kernel not started"
        return self.kc

    def wait_kernel_info(self, timeout: float = START_TIMEOUT) -> float:
        """Send kernel_info_request on shell (again every 0.5 s, as jupyter_server does) until a
        reply arrives; returns the time it arrived."""
        kc, sent, next_send = self.client, set(), 0.0
        deadline = perf() + timeout
        while True:
            now = perf()
            if now > deadline:
                raise StepError(f"no kernel_info_reply within {timeout} s")
            if now >= next_send:
                sent.add(kc.kernel_info())
                next_send = now + 0.5
            try:
                msg = kc.get_shell_msg(timeout=max(0.0, min(deadline, next_send) - perf()))
            except Empty:
                if not self.alive():
                    raise StepError("kernel process exited before kernel_info_reply") from None
                continue
            if msg["parent_header"].get("msg_id") in sent:
                return perf()

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """kernel_info until answered, then until iopub delivers too (as wait_for_ready does):
        a SUB socket only receives once its subscription has reached the kernel."""
        deadline = perf() + timeout
        self.wait_kernel_info(timeout)
        while perf() < deadline:
            self.client.kernel_info()
            try:
                self.client.get_iopub_msg(timeout=0.2)
            except Empty:
                continue
            time.sleep(0.05)
            drain(self.client)
            while True:  # and the kernel_info replies
                try:
                    self.client.get_shell_msg(timeout=0)
                except Empty:
                    return
        raise StepError(f"iopub delivered nothing within {timeout} s")

    def execute(
        self,
        code: str,
        timeout: float = CELL_TIMEOUT,
        *,
        need_idle: bool = True,
        allow_error: bool = False,
    ) -> Cell:
        """Send an execute_request and wait for its reply and (if need_idle) its idle status,
        keeping every iopub message whose parent is this request, with its arrival time."""
        cell = self.send(code)
        return self.finish(cell, timeout, need_idle=need_idle, allow_error=allow_error)

    def send(self, code: str) -> Cell:
        sent = perf()
        return Cell(self.client.execute(code), sent)

    def finish(
        self,
        cell: Cell,
        timeout: float,
        *,
        need_idle: bool = True,
        allow_error: bool = False,
        until: Callable[[dict[str, Any]], bool] | None = None,
        kc: BlockingKernelClient | None = None,
    ) -> Cell:
        """Read shell and iopub (of ``kc``, default our own client) until the reply and idle of
        ``cell`` arrived, or until ``until(msg)`` is true for an iopub message of the cell."""
        kc = kc or self.client
        shell, iopub = kc.shell_channel.socket, kc.iopub_channel.socket
        poller = self._pollers.get(id(kc))
        if poller is None:
            poller = self._pollers[id(kc)] = zmq.Poller()
            poller.register(shell, zmq.POLLIN)
            poller.register(iopub, zmq.POLLIN)
        deadline = cell.sent + timeout
        while cell.reply is None or (need_idle and cell.idle_at is None):
            remaining = deadline - perf()
            if remaining <= 0:
                raise StepError(self._timeout_text(cell, timeout))
            events = dict(poller.poll(min(remaining, 1.0) * 1000))
            if not events and not self.alive():
                raise StepError(
                    f"kernel process exited (code {self.km.provisioner.process.poll()})"
                )  # type: ignore[union-attr]
            if shell in events:
                msg = kc.shell_channel.get_msg(timeout=0)
                if msg["parent_header"].get("msg_id") == cell.msg_id:
                    cell.reply, cell.reply_at = msg, perf()
            if iopub in events:
                msg = kc.iopub_channel.get_msg(timeout=0)
                if msg["parent_header"].get("msg_id") != cell.msg_id:
                    continue
                at = perf()
                if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                    cell.idle_at = at
                else:
                    cell.iopub.append((at, msg))
                if until is not None and until(msg):
                    return cell
        content = cell.reply["content"]
        if content["status"] != "ok" and not allow_error:
            raise StepError(
                f"execute_reply status {content['status']!r}: "
                f"{content.get('ename')}: {str(content.get('evalue'))[:300]}"
            )
        return cell

    def forget_client(self, kc: BlockingKernelClient) -> None:
        self._pollers.pop(id(kc), None)

    def _timeout_text(self, cell: Cell, timeout: float) -> str:
        got = "reply" if cell.reply else "no reply"
        got += ", idle" if cell.idle_at else ", no idle"
        kinds = sorted({m["msg_type"] for _, m in cell.iopub})
        return f"timed out after {timeout} s ({got}; iopub seen: {kinds})"

    def hb_address(self) -> str:
        info = self.km.get_connection_info()
        if info["transport"] == "tcp":
            return f"tcp://{info['ip']}:{info['hb_port']}"
        return f"ipc://{info['ip']}-{info['hb_port']}"


# -- measurements ---------------------------------------------------------------------------
#
# Each step runs in rounds; the kernels take turns round by round (A B, then B A), so that
# both see the same background load on a shared machine. A round returns raw samples (lists
# keyed by name); after the last round ``finalize`` turns the merged samples into metrics.

Samples = dict[str, list[Any]]


@dataclass
class Config:
    quick: bool
    launches: int
    pass_rounds: int
    pass_per_round: int
    reps: int
    hb_rounds: int
    idle_settle: float
    hb_seconds: float
    scaling_clients: tuple[int, ...]
    scaling_sizes: tuple[int, ...]
    scaling_pass_n: int


def make_config(quick: bool) -> Config:
    if quick:
        sizes = (1_000, 100_000, 10_000_000)
        return Config(True, 2, 2, 50, 1, 1, 0.5, 2.0, (1, 10), sizes, 30)
    sizes = (1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000)
    return Config(False, 5, 5, 100, 3, 2, 2.0, 3.0, (1, 10, 50), sizes, 200)


@dataclass(frozen=True)
class Step:
    name: str
    keys: tuple[str, ...]  # the table's metrics this step produces
    run: Callable[[Kernel, Config], Samples]  # one round
    rounds: Callable[[Config], int]
    finalize: Callable[[Samples], dict[str, Any]]
    fresh: bool = False  # each round gets its own new, unstarted Kernel (start-up steps)
    consumes: bool = False  # the kernel is gone after the round


def describe(proc: psutil.Process) -> str:
    try:
        return f"{proc.pid} {proc.status()} {' '.join(proc.cmdline()[1:4])}"
    except psutil.Error as exc:
        return f"{proc.pid} ({type(exc).__name__})"


# 1, 7, 8: start-up, idle RSS, shutdown ------------------------------------------------------

LAUNCH_KEYS = (
    "startup_kernel_info_s",
    "startup_first_cell_s",
    "idle_rss_bytes",
    "idle_uss_bytes",
    "shutdown_s",
)


def round_launch(k: Kernel, cfg: Config) -> Samples:
    """A fresh kernel: launch -> kernel_info_reply; -> first cell's reply (sent once
    kernel_info was answered, as clients do); idle RSS of the process tree; shutdown_request
    -> every process gone. Each measured on its own, so one failure does not hide the others."""
    out: Samples = {"errors": []}
    k.start()
    try:
        out["startup_kernel_info_s"] = [k.wait_kernel_info() - k.launched_at]
        cell = k.execute("a = 1", START_TIMEOUT, need_idle=False)
        out["startup_first_cell_s"] = [cell.reply_at - k.launched_at]  # type: ignore[operator]
        time.sleep(cfg.idle_settle)
        mem = tree_memory(k.pid)
        out["idle_rss_bytes"], out["idle_uss_bytes"] = [mem["rss"]], [mem["uss"]]
        out["idle_processes"] = [mem["processes"]]
    except Exception as exc:
        out["errors"].append(f"start-up/first cell/RSS: {exc}")
    try:
        procs = k.remember_processes()
        k.client.shutdown()
        gone = wait_processes_gone(procs, SHUTDOWN_TIMEOUT)
        if gone is None:
            alive = [describe(p) for p in procs if p.is_running()]
            raise StepError(f"{SHUTDOWN_TIMEOUT} s after shutdown_request still alive: {alive}")
        out["shutdown_s"] = [gone]
    except Exception as exc:
        out["errors"].append(f"shutdown: {exc}")
    return out


def finalize_launches(samples: Samples) -> dict[str, Any]:
    errors = samples.get("errors", [])
    out: dict[str, Any] = {
        "launch_errors": errors,
        "idle_processes": samples.get("idle_processes", [])[-1:],
    }
    for key in LAUNCH_KEYS:
        values = samples.get(key, [])
        out[key] = median(values) if values else {"error": errors[0] if errors else "no sample"}
        out[key + "_samples"] = values
    return out


# smoke --------------------------------------------------------------------------------------


def round_smoke(k: Kernel, cfg: Config) -> Samples:
    """Can the kernel run a cell at all? Also records which code the kernel tree runs."""
    cell = k.execute(
        "import sys\nprint([getattr(sys.modules.get(m), '__file__', None)"
        " for m in ('trikernel', 'ipykernel')])"
    )
    where = {"cell": cell.stdout().strip()}
    for proc in k.remember_processes():
        try:
            where[str(proc.pid)] = f"cwd={proc.cwd()} argv={' '.join(proc.cmdline())}"
        except psutil.Error:
            pass
    return {"code_location": [where]}


# 2: pass round trips ------------------------------------------------------------------------


def round_pass(k: Kernel, cfg: Config) -> Samples:
    """Sequential `pass` round trips, to execute_reply and to idle (after 5 warm-up ones)."""
    for _ in range(5):
        k.execute("pass")
    cells = [k.execute("pass") for _ in range(cfg.pass_per_round)]
    return {"reply": [c.reply_s for c in cells], "idle": [c.idle_s for c in cells]}


def finalize_pass(samples: Samples) -> dict[str, Any]:
    reply, idle = summarize(samples["reply"]), summarize(samples["idle"])
    return {
        "pass_reply_p50_s": reply["p50"],
        "pass_reply_p99_s": reply["p99"],
        "pass_idle_p50_s": idle["p50"],
        "pass_idle_p99_s": idle["p99"],
        "pass_reply": reply,
        "pass_idle": idle,
    }


# 3: 200k prints -----------------------------------------------------------------------------

PRINTS = 200_000


def count_lost(text: str, n: int) -> dict[str, int]:
    """Compare stdout text with the lines 0..n-1: lost numbers, extra/misordered lines."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    expected = [str(i) for i in range(n)]
    seen = set(lines)
    return {
        "lost": sum(1 for e in expected if e not in seen),
        "lines": len(lines),
        "in_order": int(lines == expected),
        "unexpected": sum(1 for line in lines if not line.isdigit() or int(line) >= n),
    }


def round_prints(k: Kernel, cfg: Config) -> Samples:
    """`for i in range(200_000): print(i)`: seconds until idle; every line checked."""
    cell = k.execute(f"for i in range({PRINTS}): print(i)", HEAVY_TIMEOUT)
    messages = sum(1 for _, m in cell.iopub if m["msg_type"] == "stream")
    return {
        "idle": [cell.idle_s],
        "check": [count_lost(cell.stdout(), PRINTS)],
        "messages": [messages],
    }


def finalize_prints(samples: Samples) -> dict[str, Any]:
    return {
        "print200k_s": median(samples["idle"]),
        "print200k_lost": max(c["lost"] for c in samples["check"]),
        "print200k_samples": samples["idle"],
        "print200k_checks": samples["check"],
        "print200k_stream_messages": samples["messages"],
    }


# 4: large display_data and comm buffers ----------------------------------------------------


def display_code(size: int) -> str:
    return f"from IPython.display import display\ndisplay({{'text/plain': 'x' * {size}}}, raw=True)"


def measure_display(k: Kernel, size: int, timeout: float = HEAVY_TIMEOUT) -> tuple[float, float]:
    """Seconds from execute to display_data arrival and to idle; checks the payload size."""
    cell = k.execute(display_code(size), timeout)
    found = cell.first("display_data")
    if found is None:
        raise StepError("no display_data on iopub")
    at, msg = found
    got = len(msg["content"]["data"].get("text/plain", ""))
    if got != size:
        raise StepError(f"display_data carried {got} characters, expected {size}")
    return at - cell.sent, cell.idle_s


def round_display(k: Kernel, cfg: Config) -> Samples:
    arrive, idle = measure_display(k, 50_000_000)
    return {"arrive": [arrive], "idle": [idle]}


def finalize_display(samples: Samples) -> dict[str, Any]:
    return {
        "display50mb_s": median(samples["arrive"]),
        "display50mb_idle_s": median(samples["idle"]),
        "display50mb_samples": samples["arrive"],
    }


COMM_CODE = """\
from comm import create_comm
_bench_comm = create_comm(target_name='bench.kernels')
print(type(_bench_comm).__module__ + '.' + type(_bench_comm).__qualname__)
_bench_comm.send(data={'size': 10_000_000}, buffers=[b'x' * 10_000_000])
_bench_comm.close()
"""


def round_comm(k: Kernel, cfg: Config) -> Samples:
    """A comm opened kernel-side sends one comm_msg with a 10 MB binary buffer."""
    cell = k.execute(COMM_CODE, HEAVY_TIMEOUT)
    found = cell.first("comm_msg")
    if found is None:
        kinds = sorted({m["msg_type"] for _, m in cell.iopub})
        made = cell.stdout().strip()
        return {"na": [f"no comm_msg on iopub (create_comm gave {made!r}; iopub: {kinds})"]}
    at, msg = found
    sizes = [len(memoryview(b)) for b in msg.get("buffers", [])]
    if sizes != [10_000_000]:
        raise StepError(f"comm_msg buffers of sizes {sizes}, expected [10000000]")
    return {"arrive": [at - cell.sent]}


def finalize_comm(samples: Samples) -> dict[str, Any]:
    if samples.get("na"):
        return {"comm10mb_s": {"na": samples["na"][0]}}
    return {"comm10mb_s": median(samples["arrive"]), "comm10mb_samples": samples["arrive"]}


# 5: interrupt -------------------------------------------------------------------------------


def wait_running(k: Kernel, cell: Cell, timeout: float = CELL_TIMEOUT) -> None:
    """Wait for the cell's execute_input (the kernel has started it), then let it get going."""
    k.finish(cell, timeout, until=lambda m: m["msg_type"] == "execute_input")
    if cell.first("execute_input") is None:
        raise StepError("cell finished before it could be interrupted")
    time.sleep(0.5)


def measure_interrupt(k: Kernel, code: str) -> dict[str, Any]:
    """KernelManager.interrupt_kernel() -> the cell's error reply; is the namespace kept?"""
    k.execute("_bench_marker = 42")
    cell = k.send(code)
    wait_running(k, cell)
    start = perf()
    k.km.interrupt_kernel()
    k.finish(cell, CELL_TIMEOUT, need_idle=False, allow_error=True)
    seconds = cell.reply_at - start  # type: ignore[operator]
    content = cell.reply["content"]  # type: ignore[index]
    k.finish(cell, CELL_TIMEOUT, allow_error=True)  # and its idle
    if content["status"] != "error":
        raise StepError(f"interrupted cell replied status {content['status']!r}")
    after = k.execute("print(_bench_marker)", allow_error=True)
    return {
        "seconds": seconds,
        "ename": content.get("ename"),
        "namespace_kept": after.stdout().strip() == "42",
    }


def round_interrupt(k: Kernel, cfg: Config) -> Samples:
    return {
        "sleep": [measure_interrupt(k, "import time\ntime.sleep(100)")],
        "spin": [measure_interrupt(k, "while True:\n    pass")],
    }


def finalize_interrupt(samples: Samples) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("sleep", "spin"):
        out[f"interrupt_{key}_s"] = median([r["seconds"] for r in samples[key]])
        out[f"interrupt_{key}_runs"] = samples[key]
    return out


# A C loop that holds the GIL and never looks at signals: KeyboardInterrupt cannot reach it.
GIL_CALL = "sum(range(10**11))"
GIL_TIMEOUT = 10.0  # trikernel's default grace period is 3 s


def round_interrupt_gil(k: Kernel, cfg: Config) -> Samples:
    """Interrupt a C call that holds the GIL. trikernel replaces its evaluator after the grace
    period (the namespace is lost, and the reply says so); a kernel that can only raise
    KeyboardInterrupt does not answer until the call ends. The kernel is discarded after."""
    k.execute("_bench_marker = 42")
    cell = k.send(GIL_CALL)
    # Not wait_running(): ipykernel's iopub thread needs the GIL, so while the call runs
    # not even its busy status or execute_input goes out.
    time.sleep(1.0)
    start = perf()
    k.km.interrupt_kernel()
    try:
        k.finish(cell, start - cell.sent + GIL_TIMEOUT, need_idle=False, allow_error=True)
    except StepError:
        if not k.alive():
            raise
        seen = sorted({m["msg_type"] for _, m in cell.iopub})
        return {"runs": [{"seconds": None, "iopub_seen": seen}]}
    content = cell.reply["content"]  # type: ignore[index]
    after = k.execute("print(_bench_marker)", allow_error=True)
    run = {
        "seconds": cell.reply_at - start,  # type: ignore[operator]
        "ename": content.get("ename"),
        "evalue": content.get("evalue"),
        "namespace_kept": after.stdout().strip() == "42",
    }
    return {"runs": [run]}


def finalize_interrupt_gil(samples: Samples) -> dict[str, Any]:
    runs = samples["runs"]
    stopped = [r["seconds"] for r in runs if r["seconds"] is not None]
    value: Any = median(stopped) if stopped else {"text": f"no reply in {GIL_TIMEOUT:g} s"}
    return {"interrupt_gil_s": value, "interrupt_gil_runs": runs}


# 6: heartbeat while busy --------------------------------------------------------------------


def hb_pings(address: str, seconds: float, gap: float = 0.005) -> tuple[list[float], int]:
    """Raw REQ pings on the heartbeat port for ``seconds``, one every ``gap`` s; a ping
    unanswered within HB_TIMEOUT counts as HB_TIMEOUT (a lower bound) and the socket is
    recreated, as jupyter_client's HBChannel does. Returns (round trips, timeouts)."""
    ctx = zmq.Context.instance()
    samples: list[float] = []
    timeouts = 0
    sock = None
    end = perf() + seconds
    try:
        while perf() < end:
            if sock is None:
                sock = ctx.socket(zmq.REQ)
                sock.linger = 0
                sock.connect(address)
            start = perf()
            sock.send(b"ping")
            if sock.poll(int(HB_TIMEOUT * 1000)):
                if sock.recv() != b"ping":
                    raise StepError("heartbeat echoed something else")
                samples.append(perf() - start)
            else:
                timeouts += 1
                samples.append(HB_TIMEOUT)
                sock.close()
                sock = None
            time.sleep(gap)
    finally:
        if sock is not None:
            sock.close()
    return samples, timeouts


def round_heartbeat(k: Kernel, cfg: Config) -> Samples:
    """Pings while idle, while a cell spins in pure Python, and while it sleeps in C."""
    address = k.hb_address()
    hb_pings(address, 0.2)  # connect and warm up
    idle, idle_timeouts = hb_pings(address, 1.0)
    out: Samples = {"idle": idle, "idle_timeouts": [idle_timeouts]}
    busy = cfg.hb_seconds
    spin = f"import time\n_t = time.monotonic()\nwhile time.monotonic() - _t < {busy}:\n    pass"
    for key, code in (("spin", spin), ("sleep", f"import time\ntime.sleep({busy})")):
        cell = k.send(code)
        wait_running(k, cell)  # sleeps 0.5 s
        out[key], timeouts = hb_pings(address, busy - 0.8)
        out[key + "_timeouts"] = [timeouts]
        k.finish(cell, CELL_TIMEOUT + busy)
    return out


def finalize_heartbeat(samples: Samples) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in ("idle", "spin", "sleep"):
        stats = {**summarize(samples[key]), "timeouts": sum(samples[key + "_timeouts"])}
        out[f"hb_{key}"] = stats
        for q in ("p50", "p99", "max"):
            out[f"hb_{key}_{q}_s"] = stats[q]
    return out


# KernelManager.shutdown_kernel() -----------------------------------------------------------


def round_polite_shutdown(k: Kernel, cfg: Config) -> Samples:
    """What a user waits for: KernelManager.shutdown_kernel() (interrupt, shutdown_request,
    poll for exit, SIGTERM after shutdown_wait_time/2, SIGKILL after shutdown_wait_time)."""
    procs = k.remember_processes()
    popen = k.km.provisioner.process  # type: ignore[union-attr]
    start = perf()
    k.km.shutdown_kernel()
    returned = perf() - start
    gone = wait_processes_gone(procs, SHUTDOWN_TIMEOUT)
    code = popen.wait(timeout=5)
    how = {0: "exited 0", -15: "SIGTERM from KernelManager", -9: "SIGKILL from KernelManager"}
    return {
        "returned": [returned],
        "all_gone": [None if gone is None else returned + gone],
        "exit": [how.get(code, f"exit code {code}")],
    }


def finalize_polite_shutdown(samples: Samples) -> dict[str, Any]:
    gone = samples["all_gone"][0]
    return {
        "km_shutdown_s": samples["returned"][0],
        "km_shutdown_all_gone_s": {"error": "processes left"} if gone is None else gone,
        "km_shutdown_exit": samples["exit"][0],
    }


# scaling (--scaling) -----------------------------------------------------------------------


def drain(kc: BlockingKernelClient) -> int:
    n = 0
    while True:
        try:
            kc.iopub_channel.get_msg(timeout=0)
        except Empty:
            return n
        n += 1


def wait_all_idle(
    clients: list[BlockingKernelClient], msg_id: str, sent: float, timeout: float, lines: int = 0
) -> dict[str, Any]:
    """Poll every client's iopub until each saw idle for msg_id; per-client arrival times and
    (if lines) lost stdout lines."""
    poller = zmq.Poller()
    sockets = {c.iopub_channel.socket: i for i, c in enumerate(clients)}
    for sock in sockets:
        poller.register(sock, zmq.POLLIN)
    done: dict[int, float] = {}
    text: dict[int, list[str]] = {i: [] for i in range(len(clients))}
    deadline = sent + timeout
    while len(done) < len(clients):
        remaining = deadline - perf()
        if remaining <= 0:
            raise StepError(f"{len(clients) - len(done)} of {len(clients)} clients saw no idle")
        for sock, _ in poller.poll(min(remaining, 1.0) * 1000):
            i = sockets[sock]
            msg = clients[i].iopub_channel.get_msg(timeout=0)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            if msg["msg_type"] == "stream":
                text[i].append(msg["content"]["text"])
            elif msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                done[i] = perf() - sent
    lost = [count_lost("".join(text[i]), lines)["lost"] for i in text] if lines else [0]
    return {"last_s": max(done.values()), "first_s": min(done.values()), "lost_max": max(lost)}


def connect_clients(k: Kernel, n: int) -> list[BlockingKernelClient]:
    """Our client plus n - 1 more, each with its own Session (a shared one would reject every
    iopub message after the first copy as a replayed signature), all subscribed."""
    clients = [k.client]
    for _ in range(n - 1):
        own = Session(key=k.km.session.key, signature_scheme=k.km.session.signature_scheme)
        kc = k.km.client(session=own)
        kc.start_channels(hb=False)
        clients.append(kc)
    for attempt in range(20):  # until a cell's idle reaches every SUB
        sent = perf()
        msg_id = clients[0].execute("pass")
        try:
            wait_all_idle(clients, msg_id, sent, 2.0)
            break
        except StepError:
            if attempt == 19:
                raise
    for kc in clients:
        drain(kc)
    return clients


def scaling_clients(k: Kernel, cfg: Config, n: int) -> dict[str, Any]:
    """n clients connected: `pass` round trips sent by each client in turn, then the fan-out
    of a printing cell and of a 1 MB display to all n."""
    clients: list[BlockingKernelClient] = []
    try:
        clients = connect_clients(k, n)
        reply, idle = [], []
        for i in range(cfg.scaling_pass_n):
            kc = clients[i % n]
            sent = perf()
            cell = k.finish(Cell(kc.execute("pass"), sent), CELL_TIMEOUT, kc=kc)
            reply.append(cell.reply_s)
            idle.append(cell.idle_s)
            for other in clients:
                drain(other)
        fan: dict[str, Any] = {}
        for key, code, lines in (
            ("prints10k", "for i in range(10_000): print(i)", 10_000),
            ("display1mb", display_code(1_000_000), 0),
        ):
            sent = perf()
            msg_id = clients[0].execute(code)
            fan[key] = wait_all_idle(clients, msg_id, sent, HEAVY_TIMEOUT, lines)
            clients[0].get_shell_msg(timeout=CELL_TIMEOUT)
        return {"pass_reply": summarize(reply), "pass_idle": summarize(idle), **fan}
    finally:
        for kc in clients[1:]:
            kc.stop_channels()
            k.forget_client(kc)
        drain(k.client)


def round_clients(n: int, k: Kernel, cfg: Config) -> Samples:
    return {"result": [scaling_clients(k, cfg, n)]}


def finalize_clients(n: int, samples: Samples) -> dict[str, Any]:
    return {"scaling": {"clients": {str(n): samples["result"][0]}}}


def round_size(size: int, k: Kernel, cfg: Config) -> Samples:
    arrive, idle = measure_display(k, size, 2 * HEAVY_TIMEOUT)
    return {"arrive": [arrive], "idle": [idle]}


def finalize_size(size: int, samples: Samples) -> dict[str, Any]:
    result = {"arrive_s": median(samples["arrive"]), "idle_s": median(samples["idle"])}
    return {"scaling": {"sizes": {str(size): result}}}


def scaling_steps(cfg: Config) -> list[Step]:
    """Execute round trip and iopub fan-out with 1..50 clients; display cost vs payload size."""
    steps = [
        Step(
            f"scaling_clients_{n}",
            (),
            partial(round_clients, n),
            lambda c: 1,
            partial(finalize_clients, n),
        )
        for n in cfg.scaling_clients
    ]
    steps += [
        Step(
            f"scaling_size_{size}",
            (),
            partial(round_size, size),
            lambda c: c.reps,
            partial(finalize_size, size),
        )
        for size in cfg.scaling_sizes
    ]
    return steps


# the steps, in order ------------------------------------------------------------------------

HB_KEYS = tuple(f"hb_{w}_{q}_s" for w in ("spin", "sleep") for q in ("p50", "p99", "max"))
PASS_KEYS = ("pass_reply_p50_s", "pass_reply_p99_s", "pass_idle_p50_s", "pass_idle_p99_s")


def main_steps() -> list[Step]:
    one = lambda cfg: 1  # noqa: E731
    reps = lambda cfg: cfg.reps  # noqa: E731
    return [
        Step(
            "launches",
            LAUNCH_KEYS,
            round_launch,
            lambda c: c.launches,
            finalize_launches,
            fresh=True,
        ),
        Step("smoke", (), round_smoke, one, lambda s: {"code_location": s["code_location"][0]}),
        Step("pass", PASS_KEYS, round_pass, lambda c: c.pass_rounds, finalize_pass),
        Step("prints", ("print200k_s", "print200k_lost"), round_prints, reps, finalize_prints),
        Step(
            "display",
            ("display50mb_s", "display50mb_idle_s"),
            round_display,
            reps,
            finalize_display,
        ),
        Step("comm", ("comm10mb_s",), round_comm, reps, finalize_comm),
        Step(
            "interrupt",
            ("interrupt_sleep_s", "interrupt_spin_s"),
            round_interrupt,
            reps,
            finalize_interrupt,
        ),
        Step("heartbeat", HB_KEYS, round_heartbeat, lambda c: c.hb_rounds, finalize_heartbeat),
        Step(
            "interrupt_gil",
            ("interrupt_gil_s",),
            round_interrupt_gil,
            one,
            finalize_interrupt_gil,
            consumes=True,
        ),
    ]


POLITE_SHUTDOWN = Step(
    "polite_shutdown",
    ("km_shutdown_s",),
    round_polite_shutdown,
    lambda cfg: 1,
    finalize_polite_shutdown,
    consumes=True,
)


# -- the driver ------------------------------------------------------------------------------


def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
    """Recursive dict update (scaling results nest)."""
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value


class Runner:
    """One kernel flavour across the run: its current kernel (started lazily, replaced after a
    failure), its results, and whether it can execute at all."""

    def __init__(self, name: str, cfg: Config, log_dir: Path, profile_dir: Path | None) -> None:
        self.name, self.cfg, self.log_dir, self.profile_dir = name, cfg, log_dir, profile_dir
        self.kernel: Kernel | None = None
        self.results: dict[str, Any] = {"step_errors": {}, "step_seconds": {}}
        self.cannot_execute: str | None = None

    def current(self) -> Kernel:
        if self.kernel is None:
            self.kernel = Kernel(self.name, self.log_dir)
            self.kernel.start()
            self.kernel.wait_ready()
        return self.kernel

    def discard(self) -> None:
        if self.kernel is not None:
            self.kernel.close()
            self.kernel = None

    def round(self, step: Step, i: int, acc: Samples) -> str | None:
        """Run one round and merge its samples into acc; returns the error text, if any."""
        print(
            f"  [{self.name}] {step.name} {i + 1}/{step.rounds(self.cfg)}",
            file=sys.stderr,
            flush=True,
        )
        began = perf()
        try:
            if step.fresh:
                with Kernel(self.name, self.log_dir) as k:
                    samples = step.run(k, self.cfg)
            else:
                k = self.current()
                label = f"{self.name}-{step.name}"
                cpu_before = tree_cpu(k.pid)
                with profiled(k.pid, label, self.profile_dir if i == 0 else None):
                    samples = step.run(k, self.cfg)
                if step.consumes:
                    self.discard()
                else:
                    self.add_cpu(step.name, cpu_before, tree_cpu(k.pid))
        except Exception as exc:
            text = str(exc) if isinstance(exc, StepError) else f"{type(exc).__name__}: {exc}"
            print(f"  [{self.name}] {step.name} failed: {text}", file=sys.stderr, flush=True)
            if not isinstance(exc, StepError):
                traceback.print_exc()
            self.discard()
            return text
        finally:
            seconds = self.results["step_seconds"]
            seconds[step.name] = seconds.get(step.name, 0.0) + perf() - began
        for key, values in samples.items():
            acc.setdefault(key, []).extend(values)
        return None

    def add_cpu(self, step: str, before: dict[str, float], after: dict[str, float]) -> None:
        """CPU seconds the kernel process and its descendants spent in this step (a respawned
        evaluator's CPU is lost, which only under-counts)."""
        cpu = self.results.setdefault("cpu_seconds", {}).setdefault(
            step, {"kernel": 0.0, "children": 0.0}
        )
        cpu["kernel"] += after["root"] - before["root"]
        cpu["children"] += max(0.0, after["descendants"] - before["descendants"])

    def fail(self, step: Step, text: str) -> None:
        self.results["step_errors"][step.name] = text
        for key in step.keys:
            self.results[key] = {"error": text}


def derive_cpu(results: dict[str, Any], cfg: Config) -> None:
    """CPU per unit of work, from the per-step CPU totals (load-independent)."""
    cpu = results.get("cpu_seconds", {})
    per = {
        "pass": ("cpu_per_pass_s", cfg.pass_rounds * (cfg.pass_per_round + 5)),
        "prints": ("cpu_per_print200k_s", cfg.reps),
        "display": ("cpu_per_display50mb_s", cfg.reps),
    }
    for step, (key, count) in per.items():
        if step in cpu and step not in results["step_errors"]:
            results[key] = (cpu[step]["kernel"] + cpu[step]["children"]) / count
            results[key + "_split"] = {k: v / count for k, v in cpu[step].items()}


def run_interleaved(
    runners: list[Runner], steps: list[Step], cfg: Config, save: Callable[[], None]
) -> None:
    """Each step, round by round, alternating which kernel goes first."""
    for step in steps:
        acc: dict[str, Samples] = {r.name: {} for r in runners}
        failed: dict[str, str] = {}
        for i in range(step.rounds(cfg)):
            for r in runners if i % 2 == 0 else runners[::-1]:
                if r.cannot_execute and not step.fresh:
                    failed[r.name] = r.cannot_execute
                if r.name in failed:
                    continue
                error = r.round(step, i, acc[r.name])
                if error is not None:
                    failed[r.name] = error
        for r in runners:
            if r.name in failed:
                r.fail(step, failed[r.name])
                if step.name == "smoke" and not r.cannot_execute:
                    r.cannot_execute = (
                        f"skipped: the kernel could not execute a cell ({failed[r.name]})"
                    )
            else:
                merge(r.results, step.finalize(acc[r.name]))
        save()


# -- report ---------------------------------------------------------------------------------

# (label, metric key, kind of value, target: (how, threshold) or None)
#   how = "ratio": trikernel/ipykernel <= threshold; "abs": trikernel value <= threshold
ROWS: list[tuple[str, str, str, tuple[str, float] | None]] = [
    ("launch -> kernel_info_reply (median)", "startup_kernel_info_s", "s", ("ratio", 0.5)),
    ("launch -> first cell reply (median)", "startup_first_cell_s", "s", ("ratio", 1.0)),
    ("`pass` -> execute_reply p50", "pass_reply_p50_s", "s", ("ratio", 1.0)),
    ("`pass` -> execute_reply p99", "pass_reply_p99_s", "s", ("ratio", 1.0)),
    ("`pass` -> idle p50", "pass_idle_p50_s", "s", ("ratio", 1.0)),
    ("`pass` -> idle p99", "pass_idle_p99_s", "s", ("ratio", 1.0)),
    ("200k prints -> idle", "print200k_s", "s", ("ratio", 1.0)),
    ("200k prints: lines lost", "print200k_lost", "n", ("abs", 0)),
    ("50 MB display_data -> arrival", "display50mb_s", "s", ("ratio", 1.0)),
    ("50 MB display_data -> idle", "display50mb_idle_s", "s", None),
    ("10 MB comm buffer -> arrival", "comm10mb_s", "s", None),
    ("interrupt time.sleep(100) -> reply", "interrupt_sleep_s", "s", ("ratio", 1.0)),
    ("interrupt while True: pass -> reply", "interrupt_spin_s", "s", ("ratio", 1.0)),
    ("interrupt of a C call holding the GIL", "interrupt_gil_s", "s", None),
    ("heartbeat, Python spin: p50", "hb_spin_p50_s", "s", None),
    ("heartbeat, Python spin: p99", "hb_spin_p99_s", "s", ("abs", 0.010)),
    ("heartbeat, Python spin: max", "hb_spin_max_s", "s", None),
    ("heartbeat, time.sleep: p50", "hb_sleep_p50_s", "s", None),
    ("heartbeat, time.sleep: p99", "hb_sleep_p99_s", "s", ("abs", 0.010)),
    ("heartbeat, time.sleep: max", "hb_sleep_max_s", "s", None),
    ("idle RSS, process tree (median)", "idle_rss_bytes", "b", ("ratio", 1.3)),
    ("idle USS, process tree (info)", "idle_uss_bytes", "b", None),
    ("CPU per `pass` request, kernel tree", "cpu_per_pass_s", "s", None),
    ("CPU for 200k prints, kernel tree", "cpu_per_print200k_s", "s", None),
    ("CPU per 50 MB display, kernel tree", "cpu_per_display50mb_s", "s", None),
    ("shutdown_request -> all gone (median)", "shutdown_s", "s", None),
    ("KernelManager.shutdown_kernel() returns", "km_shutdown_s", "s", None),
]


def fmt_value(value: Any, kind: str) -> str:
    if isinstance(value, dict):
        if "text" in value:
            return str(value["text"])
        return "n/a" if "na" in value else "error"
    if kind == "s":
        return fmt_seconds(value)
    if kind == "b":
        return fmt_bytes(value)
    return str(value)


def verdict(tri: Any, ipy: Any, target: tuple[str, float] | None) -> tuple[str, str, str]:
    """(ratio, target text, met) for one row."""
    numbers = not isinstance(tri, dict) and not isinstance(ipy, dict)
    ratio = tri / ipy if numbers and tri is not None and ipy not in (None, 0) else None
    ratio_text = f"{ratio:.2f}" if ratio is not None else "-"
    if target is None:
        return ratio_text, "-", "-"
    how, threshold = target
    if how == "ratio":
        text = f"ratio <= {threshold}"
        met = "-" if ratio is None else ("yes" if ratio <= threshold else "NO")
    else:
        text = f"<= {fmt_seconds(threshold)}" if threshold else "== 0"
        met = "-" if isinstance(tri, dict) or tri is None else ("yes" if tri <= threshold else "NO")
    return ratio_text, text, met


def main_table(results: dict[str, dict[str, Any]]) -> tuple[str, list[dict[str, str]]]:
    names = list(results)
    tri = results.get("trikernel", {})
    ipy = results.get("ipykernel", {})
    rows, records = [], []
    for label, key, kind, target in ROWS:
        ratio, target_text, met = verdict(tri.get(key), ipy.get(key), target)
        cells = [fmt_value(results[n].get(key, {"na": "not run"}), kind) for n in names]
        rows.append([label, *cells, ratio, target_text, met])
        records.append(
            dict(zip(["metric", *names, "ratio", "target", "met"], rows[-1], strict=True))
        )
    headers = ["metric", *names, "ratio (tri/ipy)", "target", "met"]
    return render_table(headers, rows), records


def notes(results: dict[str, dict[str, Any]]) -> list[str]:
    """Errors and n/a reasons under the table: one line per kernel and distinct reason."""
    lines = []
    for name, res in results.items():
        reasons: dict[str, list[str]] = {}
        for key, value in res.items():
            if isinstance(value, dict) and ("error" in value or "na" in value):
                text = f"n/a: {value['na']}" if "na" in value else f"error: {value['error']}"
                reasons.setdefault(text, []).append(key)
        for text, keys in reasons.items():
            lines.append(f"{name} [{', '.join(keys)}] {text}")
        shown = {text.split(": ", 1)[-1] for text in reasons}
        lines += [f"{name} {e}" for e in res.get("launch_errors", []) if e not in shown]
    return lines


def scaling_tables(results: dict[str, dict[str, Any]]) -> str:
    names = [
        n for n in results if any(k.startswith("scaling_") for k in results[n]["step_seconds"])
    ]
    if not names:
        return ""
    scaling = {n: results[n].get("scaling", {}) for n in names}
    rows = []
    counts = sorted({int(c) for n in names for c in scaling[n].get("clients", {})})
    for c in counts:
        for n in names:
            r = scaling[n].get("clients", {}).get(str(c))
            if r is None:
                rows.append([str(c), n, *["error"] * 5])
                continue
            rows.append(
                [
                    str(c),
                    n,
                    fmt_seconds(r["pass_reply"]["p50"]),
                    fmt_seconds(r["pass_idle"]["p50"]),
                    fmt_seconds(r["prints10k"]["last_s"]),
                    str(r["prints10k"]["lost_max"]),
                    fmt_seconds(r["display1mb"]["last_s"]),
                ]
            )
    headers = [
        "clients",
        "kernel",
        "`pass` reply p50",
        "`pass` idle p50",
        "10k prints -> idle at all",
        "lines lost (worst client)",
        "1 MB display -> idle at all",
    ]
    out = [render_table(headers, rows)] if rows else []
    rows = []
    sizes = sorted({int(s) for n in names for s in scaling[n].get("sizes", {})})
    for size in sizes:
        for n in names:
            r = scaling[n].get("sizes", {}).get(str(size))
            cells = (
                ["error"] * 3
                if r is None
                else [
                    fmt_seconds(r["arrive_s"]),
                    fmt_seconds(r["idle_s"]),
                    f"{size / r['arrive_s'] / 1e6:.1f} MB/s",
                ]
            )
            rows.append([fmt_bytes(size), n, *cells])
    if rows:
        headers = ["display payload", "kernel", "-> display_data", "-> idle", "throughput"]
        out.append(render_table(headers, rows))
    errors = [
        f"{n} {step}: {text}"
        for n in names
        for step, text in results[n]["step_errors"].items()
        if step.startswith("scaling_")
    ]
    if errors:
        out.append("\n".join(errors))
    return "\n\n".join(out)


# -- main -----------------------------------------------------------------------------------


def trikernel_source() -> dict[str, str]:
    """Which trikernel is measured: the source tree, its git commit and local changes."""
    root = TRIKERNEL_SRC or REPO
    out = {"tree": str(root)}
    commit = root / "COMMIT"  # written next to a `git archive` snapshot, if any
    if commit.exists():
        out["commit"] = commit.read_text().strip()
    elif (root / ".git").exists():
        git = ["git", "-C", str(root)]
        out["commit"] = subprocess.run(
            [*git, "rev-parse", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        out["local_changes"] = subprocess.run(
            [*git, "status", "--short", "--", "trikernel", "kernelspec"],
            capture_output=True,
            text=True,
        ).stdout
    return out


def byte_compile_trikernel() -> str:
    """Compile the measured trikernel's modules, as ``pip install`` does for ipykernel
    and every other installed package. An editable install on a machine with
    PYTHONDONTWRITEBYTECODE=1 (as here) would otherwise compile each of its modules
    from source at every kernel and evaluator start."""
    if TRIKERNEL_SRC is not None:
        root = TRIKERNEL_SRC / "trikernel"
    else:
        spec = importlib.util.find_spec("trikernel")
        assert spec is not None and spec.origin is not None, "trikernel is not installed"
        root = Path(spec.origin).parent
    if not compileall.compile_dir(str(root), quiet=1):
        raise SystemExit(f"could not byte-compile {root}")
    return str(root)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    p.add_argument("--scaling", action="store_true", help="also run the scaling section")
    p.add_argument("--kernels", default="trikernel,ipykernel", help="comma-separated")
    p.add_argument("--json", default=str(RESULTS / "kernels.json"), help="where to write results")
    p.add_argument(
        "--trikernel-src",
        metavar="DIR",
        help="run trikernel from this source tree (PYTHONPATH and cwd) instead of the installed one",
    )
    p.add_argument(
        "--profile",
        metavar="DIR",
        help="run py-spy on the kernel tree during each step (numbers are then distorted)",
    )
    p.add_argument(
        "--steps",
        default="",
        help="only these steps, comma-separated: "
        + ",".join(s.name for s in [*main_steps(), POLITE_SHUTDOWN])
        + " (smoke always runs)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so every kernel is still shut down and reaped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cfg = make_config(args.quick)
    global TRIKERNEL_SRC
    TRIKERNEL_SRC = Path(args.trikernel_src).resolve() if args.trikernel_src else None
    names = [n.strip() for n in args.kernels.split(",") if n.strip()]
    wanted = {s.strip() for s in args.steps.split(",") if s.strip()}
    json_path = Path(args.json)
    json_path.parent.mkdir(parents=True, exist_ok=True)
    profile_dir = Path(args.profile) if args.profile else None
    if profile_dir is not None:
        profile_dir.mkdir(parents=True, exist_ok=True)
    log_dir = json_path.parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": machine_info(),
        "config": vars(cfg),
        "argv": sys.argv,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "trikernel_source": trikernel_source(),
        "trikernel_byte_compiled": byte_compile_trikernel(),
        "results": {},
    }
    results: dict[str, dict[str, Any]] = report["results"]

    def save() -> None:
        json_path.write_text(json.dumps(report, indent=1, default=str))

    for name in names:
        kernel_spec(name)  # fail early on unknown names
    runners = [Runner(name, cfg, log_dir, profile_dir) for name in names]
    for r in runners:
        results[r.name] = r.results
    steps = [s for s in main_steps() if not wanted or s.name in wanted or s.name == "smoke"]
    if args.scaling:
        steps += scaling_steps(cfg)
    if not wanted or POLITE_SHUTDOWN.name in wanted:
        steps.append(POLITE_SHUTDOWN)
    try:
        run_interleaved(runners, steps, cfg, save)
    finally:
        for r in runners:
            r.discard()
        left = [describe(p) for p in Kernel.every_process.values() if p.is_running()]
        left = [d for d in left if "zombie" not in d.lower()]
        report["leftover_processes"] = left
        if left:
            print(f"leftover processes (killing them): {left}", file=sys.stderr)
            kill_processes(Kernel.every_process.values())
    for r in runners:
        derive_cpu(r.results, cfg)
    report["loadavg_at_end"] = os.getloadavg()
    table, records = main_table(results)
    report["table"] = records
    report["notes"] = notes(results)
    report["scaling_table"] = scaling_tables(results)
    report["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    save()
    print(table)
    for line in report["notes"]:
        print(f"  - {line}")
    if report["scaling_table"]:
        print()
        print(report["scaling_table"])
    print(f"\nresults: {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
