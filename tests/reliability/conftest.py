"""Fixtures for the reliability tests: a kernel process per module where tests can
share one (each test leaves it serving), a fresh one where a test ends it."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from support.kernel_process import KernelProcess, connected


@pytest.fixture(scope="module")
def module_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="trikernel-reliability-") as d:
        yield Path(d)


@pytest.fixture(scope="module")
def kernel(module_dir: Path) -> Iterator[KernelProcess]:
    """One kernel process for the whole module (grace period 1 s); killed at the end."""
    with KernelProcess(module_dir) as k:
        yield k


@pytest.fixture(scope="module")
def kc(kernel: KernelProcess) -> Iterator[BlockingKernelClient]:
    """One jupyter_client client for the whole module: it must survive every test."""
    with connected(kernel) as client:
        yield client


# A kernelspec for KernelManager tests, in a temporary JUPYTER_PATH entry (as
# tests/kernel/conftest.py does), with a short interrupt grace period: the way a user
# configures it in kernel.json.
_prefix = Path(tempfile.mkdtemp(prefix="trikernel-reliability-spec-"))
atexit.register(shutil.rmtree, _prefix, ignore_errors=True)
_spec = _prefix / "kernels" / "trikernel-reliability"
_spec.mkdir(parents=True)
(_spec / "kernel.json").write_text(
    json.dumps(
        {
            "argv": [
                sys.executable,
                *("-m", "trikernel", "-f", "{connection_file}", "--interrupt-grace", "1"),
            ],
            "display_name": "trikernel (reliability tests)",
            "language": "python",
            "interrupt_mode": "message",
        }
    )
)
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    [str(_prefix), *filter(None, [os.environ.get("JUPYTER_PATH")])]
)
