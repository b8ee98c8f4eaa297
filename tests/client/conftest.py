"""Kernelspecs for the client tests, in a tmp JUPYTER_PATH, that run *this*
interpreter: ``python3`` (ipykernel, interrupt_mode signal), ``trikernel`` (message),
and small misbehaving ones. JUPYTER_RUNTIME_DIR is a tmp dir too, so connection files
land where the tests can check that they are removed.

Rules: real kernels on 127.0.0.1 with ports they bind themselves; every wait under
``trio.fail_after``; each test shuts its kernels down (leaving the manager's block)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

SPECS = {
    "python3": {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "ipykernel (tests)",
        "language": "python",
    },
    "trikernel": {
        "argv": [sys.executable, "-m", "trikernel", "-f", "{connection_file}"],
        "display_name": "trikernel (tests)",
        "language": "python",
        "interrupt_mode": "message",
    },
    "exits-at-start": {
        "argv": [
            sys.executable,
            "-c",
            "import sys; sys.stderr.write('no such module: frobnicate\\n'); sys.exit(3)",
            "{connection_file}",
        ],
        "display_name": "exits at once",
        "language": "python",
    },
    "no-such-binary": {
        "argv": ["/nonexistent/kernel-binary", "{connection_file}"],
        "display_name": "cannot start",
        "language": "python",
    },
}

# Starts trikernel the first time, then exits 4 at once: a kernel that crash-loops
# from its first restart on (the marker file is the first start's record).
CRASH_AFTER_FIRST = """\
import os, sys
marker = sys.argv[2]
if os.path.exists(marker):
    sys.stderr.write("crashing on purpose\\n")
    sys.exit(4)
open(marker, "w").close()
os.execv(sys.executable, [sys.executable, "-m", "trikernel", "-f", sys.argv[1]])
"""


@pytest.fixture(autouse=True)
def jupyter_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    kernels = tmp_path / "data" / "kernels"
    specs = dict(SPECS)
    script = tmp_path / "crash_after_first.py"
    script.write_text(CRASH_AFTER_FIRST)
    specs["crash-after-first"] = {
        "argv": [sys.executable, str(script), "{connection_file}", str(tmp_path / "started")],
        "display_name": "crash loop",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"trikernel": {"bind_port0": True}},
    }
    for name, spec in specs.items():
        (kernels / name).mkdir(parents=True)
        (kernels / name / "kernel.json").write_text(json.dumps(spec))
    runtime = tmp_path / "runtime"
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "data"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(runtime))
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    yield runtime


def alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (PID 1 here may not reap)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"
