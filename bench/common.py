"""Helpers shared by the benchmark scripts: statistics, process trees, tables,
and a description of the machine. No kernel or protocol logic lives here."""

from __future__ import annotations

import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

__all__ = [
    "percentile",
    "summarize",
    "median",
    "process_tree",
    "tree_memory",
    "tree_cpu",
    "wait_processes_gone",
    "kill_processes",
    "profiled",
    "summarize_stacks",
    "machine_info",
    "render_table",
    "fmt_seconds",
    "fmt_bytes",
]


# -- statistics -----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method); q in [0, 100]."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50.0)


def summarize(values: Sequence[float]) -> dict[str, float]:
    """n, min, p50, p99, max and mean of a list of samples (seconds or bytes)."""
    return {
        "n": len(values),
        "min": min(values) if values else math.nan,
        "p50": percentile(values, 50.0),
        "p99": percentile(values, 99.0),
        "max": max(values) if values else math.nan,
        "mean": sum(values) / len(values) if values else math.nan,
    }


# -- processes ------------------------------------------------------------------------------


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its descendants that exist now (empty if it is gone)."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_memory(pid: int) -> dict[str, Any]:
    """RSS (and USS/PSS where readable) summed over a process tree, with a per-process list."""
    total_rss = total_uss = total_pss = 0
    procs = []
    for proc in process_tree(pid):
        try:
            with proc.oneshot():
                full = proc.memory_full_info()
                cmd = " ".join(proc.cmdline()[:4])
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        total_rss += full.rss
        total_uss += getattr(full, "uss", 0)
        total_pss += getattr(full, "pss", 0)
        procs.append({"pid": proc.pid, "cmd": cmd, "rss": full.rss, "uss": getattr(full, "uss", 0)})
    return {"rss": total_rss, "uss": total_uss, "pss": total_pss, "processes": procs}


def tree_cpu(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) used so far by a process and, summed, by its descendants.
    Unlike wall-clock times, these do not grow when other work competes for the CPUs."""
    out = {"root": 0.0, "descendants": 0.0}
    for proc in process_tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        out["root" if proc.pid == pid else "descendants"] += times.user + times.system
    return out


def _gone(proc: psutil.Process) -> bool:
    try:
        return not proc.is_running() or proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_processes_gone(procs: Iterable[psutil.Process], timeout: float) -> float | None:
    """Poll (every 2 ms) until every process has exited (a zombie counts as exited).
    Returns the seconds waited, or None on timeout."""
    procs = list(procs)
    start = time.perf_counter()
    while True:
        if all(_gone(p) for p in procs):
            return time.perf_counter() - start
        if time.perf_counter() - start > timeout:
            return None
        time.sleep(0.002)


def kill_processes(procs: Iterable[psutil.Process]) -> list[int]:
    """SIGKILL each process that is still running (psutil refuses reused pids). Returns the pids
    that had to be killed."""
    killed = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                proc.kill()
                killed.append(proc.pid)
        except psutil.NoSuchProcess:
            pass
    return killed


# -- profiling ------------------------------------------------------------------------------


@contextmanager
def profiled(pid: int, label: str, out_dir: Path | None) -> Iterator[None]:
    """Run ``py-spy record`` on a process and all its subprocesses around a block; write the
    raw collapsed stacks and a summary of the hottest functions to out_dir (no-op if None)."""
    if out_dir is None:
        yield
        return
    py_spy = Path(sys.executable).with_name("py-spy")
    raw = out_dir / f"{label}.txt"
    cmd = [str(py_spy), "record", "--pid", str(pid), "--subprocesses", "--nonblocking"]
    cmd += ["--rate", "250", "--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()
        if raw.exists():
            (out_dir / f"{label}.top.txt").write_text(summarize_stacks(raw.read_text()))


_LINE = re.compile(r"(\(.*?):\d+\)$")


def summarize_stacks(raw: str, top: int = 20) -> str:
    """Per process: share of samples, then the top functions by self and by inclusive samples
    (percentages of all samples), from py-spy's collapsed stacks."""
    own: dict[str, Counter[str]] = {}
    inclusive: dict[str, Counter[str]] = {}
    processes: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_LINE.sub(r"\1)", f) for f in stack.split(";")]  # per function, not per line
        # With --subprocesses a child's stack is nested under its parent's process frame.
        owners = [i for i, f in enumerate(frames) if f.startswith("process ")]
        owner = frames[owners[-1]] if owners else "process ?"
        frames = frames[owners[-1] + 1 :] if owners else frames
        total += n
        processes[owner] += n
        own.setdefault(owner, Counter())[frames[-1] if frames else "?"] += n
        for frame in set(frames):
            inclusive.setdefault(owner, Counter())[frame] += n
    out = [f"samples: {total}"]
    for owner, count in processes.most_common():
        out += ["", f"{count / total:6.1%}  {owner[:150]}", "  self:"]
        out += [f"  {n / total:6.1%}  {f}" for f, n in own[owner].most_common(top)]
        out += ["  inclusive:"]
        out += [f"  {n / total:6.1%}  {f}" for f, n in inclusive[owner].most_common(top)]
    return "\n".join(out) + "\n"


# -- machine --------------------------------------------------------------------------------


def _run(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        return f"({' '.join(cmd)} failed: {exc})"


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    return {
        "nproc": _run(["nproc"]),
        "lscpu": "\n".join(_run(["lscpu"]).splitlines()[:10]),
        "free": _run(["free", "-h"]),
        "loadavg_at_start": os.getloadavg(),
        "python": sys.version.replace("\n", " "),
        "platform": platform.platform(),
        "packages": {
            name: _version(name)
            for name in ("trikernel", "ipykernel", "jupyter_client", "pyzmq", "trio", "ipython")
        },
    }


# -- formatting -----------------------------------------------------------------------------


def fmt_seconds(value: float) -> str:
    if value >= 1.0:
        return f"{value:.2f} s"
    if value >= 1e-3:
        return f"{value * 1e3:.2f} ms"
    return f"{value * 1e6:.0f} us"


def fmt_bytes(value: float) -> str:
    """Decimal units: 1 MB = 10**6 bytes."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def render_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table (also readable in a terminal)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])
