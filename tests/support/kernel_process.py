"""A kernel as a real process: ``python -m trikernel -f FILE`` started by hand
(``KernelProcess``, or ``trikernel_command`` for any arguments) or by jupyter_client
from a kernelspec (``kernel_manager``), and a client that is ready (``ready_client``). Each is a context manager that ends what it
started: the client's channels, the kernel (its process group and every pid of its
tree seen meanwhile), reaped.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from jupyter_client.manager import KernelManager

from . import TIMEOUT
from .procs import alive, cmdline, kill_pids, process_tree, rss_kib, wait_until


@contextlib.contextmanager
def ready_client(
    kc: BlockingKernelClient, timeout: float = TIMEOUT, **channels: bool
) -> Iterator[BlockingKernelClient]:
    """Start ``kc``'s channels (``channels``: start_channels' flags), wait for its
    kernel_info reply, and stop the channels at the end.

    ``wait_for_ready`` may leave extra kernel_info replies unread: read replies with
    ``support.client.shell_reply``, which matches them by msg_id."""
    kc.start_channels(**channels)
    try:
        kc.wait_for_ready(timeout=timeout)
        yield kc
    finally:
        kc.stop_channels()


@contextlib.contextmanager
def trikernel_command(*args: str, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """``python -m trikernel ARGS`` in its own session, text mode (``popen``: Popen's
    arguments, e.g. ``env``, ``stderr``). At the end its process group is SIGKILLed if
    it still runs, it is reaped and its pipes are closed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "trikernel", *args], start_new_session=True, text=True, **popen
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=TIMEOUT)
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


@contextlib.contextmanager
def kernel_manager(kernel_name: str, **start_kwargs: Any) -> Iterator[KernelManager]:
    """A KernelManager with its kernel started (``start_kwargs``: start_kernel's, e.g.
    ``env``); shut down with ``now=True`` at the end unless the test did it."""
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel(**start_kwargs)
    try:
        yield km
    finally:
        if km.has_kernel:
            km.shutdown_kernel(now=True)


class KernelProcess:
    """``python -m trikernel -f FILE ...`` in its own session, stdout and stderr to a log
    file, with a fresh connection file (``key``, ``ip``) in ``directory``.

    Use as a context manager: on exit the process group and every pid of the tree
    seen meanwhile are SIGKILLed and the kernel is reaped."""

    def __init__(
        self,
        directory: Path,
        *,
        key: bytes | None = None,
        args: tuple[str, ...] = ("--interrupt-grace", "1"),
        env: dict[str, str] | None = None,
        ip: str = "127.0.0.1",
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = str(uuid.uuid4()).encode() if key is None else key
        self.connection_file = str(self.directory / f"kernel-{uuid.uuid4().hex[:8]}.json")
        _, self.info = write_connection_file(self.connection_file, ip=ip, key=self.key)
        self.args = args
        self.env = env
        self.log_path = self.directory / f"{Path(self.connection_file).stem}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        self.seen: set[int] = set()

    # lifecycle
    def start(self) -> KernelProcess:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "trikernel", "-f", self.connection_file, *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
                env=self.env,
            )
        return self

    def __enter__(self) -> KernelProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.kill()

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def tree(self) -> list[int]:
        """The kernel and its descendants now (each is remembered, to be killed at the end)."""
        pids = process_tree(self.pid) if alive(self.pid) else []
        self.seen.update(pids)
        return pids

    def evaluator_pids(self) -> list[int]:
        return [p for p in self.tree() if "trikernel.evaluator" in cmdline(p)]

    def wait_evaluator(self, timeout: float = TIMEOUT) -> int:
        pids = wait_until(self.evaluator_pids, timeout, "an evaluator process")
        return int(pids[0])

    def kill(self) -> None:
        if self.proc is None:
            return
        self.tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        kill_pids(sorted(self.seen))
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    # observation
    def port(self, channel: str) -> int:
        return int(self.info[f"{channel}_port"])

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> list[str]:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace").splitlines()

    def wait_log(self, pattern: str, offset: int, timeout: float = 5.0) -> list[str]:
        """New log lines (since ``offset``) once one matches ``pattern``."""
        regex = re.compile(pattern)

        def found() -> list[str] | None:
            lines = self.log_since(offset)
            return lines if any(regex.search(line) for line in lines) else None

        return list(wait_until(found, timeout, f"a kernel log line matching {pattern!r}"))

    def rss_kib(self) -> int:
        return rss_kib(self.pid)

    # clients
    def client(self, **kwargs: Any) -> BlockingKernelClient:
        """A new client with its channels started and the kernel ready; the caller
        stops its channels (or use ``connected``)."""
        kc = BlockingKernelClient(connection_file=self.connection_file, **kwargs)
        kc.load_connection_file()
        kc.start_channels()
        try:
            kc.wait_for_ready(timeout=TIMEOUT)
        except BaseException:
            kc.stop_channels()
            raise
        return kc


@contextlib.contextmanager
def connected(kernel: KernelProcess) -> Iterator[BlockingKernelClient]:
    """A ready client of ``kernel`` for the block."""
    kc = kernel.client()
    try:
        yield kc
    finally:
        kc.stop_channels()
