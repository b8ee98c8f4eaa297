"""Helpers for the reliability tests: start ``python -m trikernel`` as a real process,
talk to it with jupyter_client or with raw sockets, and look at it from outside
(/proc: process tree, RSS, listening sockets, its stderr log).

Rules kept by every test here: every wait has a timeout, every process started is
killed (its process group, and every pid of its tree seen while it ran) in a finally.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.connect import write_connection_file
from procs import alive as alive
from procs import process_tree as process_tree

TIMEOUT = 20.0
CHANNELS = ("shell", "control", "stdin", "iopub", "hb")
ROUTER_CHANNELS = ("shell", "control", "stdin")


# ---------------------------------------------------------------- processes (/proc)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def rss_kib(pid: int) -> int:
    """VmRSS of pid in KiB (from /proc/PID/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.02) -> Any:
    """Poll until predicate() is truthy; AssertionError naming ``what`` at the timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- the kernel process


class KernelProcess:
    """``python -m trikernel -f FILE ...`` in its own session, stderr to a file.

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
def running_kernel(directory: Path, **kwargs: Any) -> Iterator[KernelProcess]:
    with KernelProcess(directory, **kwargs) as kernel:
        yield kernel


@contextlib.contextmanager
def connected(kernel: KernelProcess) -> Iterator[BlockingKernelClient]:
    kc = kernel.client()
    try:
        yield kc
    finally:
        kc.stop_channels()


def run(
    kc: BlockingKernelClient, code: str, timeout: float = TIMEOUT, **kwargs: Any
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Execute ``code``; (execute_reply, iopub messages of that request up to idle)."""
    outputs: list[dict[str, Any]] = []
    reply = kc.execute_interactive(code, timeout=timeout, output_hook=outputs.append, **kwargs)
    return reply, outputs


def iopub_until(
    kc: BlockingKernelClient,
    done: Callable[[dict[str, Any]], bool],
    msg_id: str | None = None,
    outputs: list[dict[str, Any]] | None = None,
    timeout: float = TIMEOUT,
) -> dict[str, Any]:
    """Read iopub until ``done(msg)``, which is returned. With ``msg_id``, only that
    request's messages count, each appended to ``outputs`` if given."""
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        if msg_id is not None and msg["parent_header"].get("msg_id") != msg_id:
            continue
        if outputs is not None:
            outputs.append(msg)
        if done(msg):
            return msg


def is_idle(msg: dict[str, Any]) -> bool:
    return msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle"


def shell_reply(kc: BlockingKernelClient, msg_id: str) -> dict[str, Any]:
    reply = kc.get_shell_msg(timeout=TIMEOUT)
    assert reply["parent_header"]["msg_id"] == msg_id
    return reply


def evaluator_pid(kc: BlockingKernelClient) -> int:
    reply, outputs = run(kc, "import os; print(os.getpid())")
    assert reply["content"]["status"] == "ok"
    return int(stream_text(outputs))


def stream_text(outputs: list[dict[str, Any]], name: str = "stdout") -> str:
    return "".join(
        m["content"]["text"]
        for m in outputs
        if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


def result_text(outputs: list[dict[str, Any]]) -> list[str]:
    return [
        m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"
    ]


def assert_serves(kc: BlockingKernelClient, timeout: float = TIMEOUT) -> None:
    """The kernel still executes ``1+1`` for this (long connected) client."""
    reply, outputs = run(kc, "1+1", timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert result_text(outputs) == ["2"]


def established_peers(port: int) -> set[tuple[str, int]]:
    """Remote (ip, port) of ESTABLISHED IPv4 TCP connections whose local port is ``port``
    (from /proc/net/tcp): the client side of every connection to a kernel port."""
    peers = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state != "01" or int(local.split(":")[1], 16) != port:
            continue
        ip_hex, port_hex = remote.split(":")
        ip = socket.inet_ntoa(struct.pack("<I", int(ip_hex, 16)))
        peers.add((ip, int(port_hex, 16)))
    return peers


def listening_addresses(port: int) -> set[str]:
    """Local IPv4/IPv6 addresses with a LISTEN socket on ``port`` (from /proc/net/tcp*)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state = fields[1], fields[3]
            ip_hex, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:
                found.add(ip_hex)
    return found


# ---------------------------------------------------------------- raw ZMTP peers
# Encoded here from the spec, not with trikernel's codec: these tests must not share
# the code they test.


def greeting(minor: int = 1) -> bytes:
    return (b"\xff" + b"\0" * 7 + b"\x01\x7f" + bytes([3, minor]) + b"NULL".ljust(20, b"\0")).ljust(
        64, b"\0"
    )


def frame(body: bytes, more: bool = False, command: bool = False) -> bytes:
    flags = (1 if more else 0) | (4 if command else 0)
    if len(body) > 255:
        return struct.pack(">BQ", flags | 2, len(body)) + body
    return struct.pack(">BB", flags, len(body)) + body


def ready(socket_type: str, identity: bytes | None = None) -> bytes:
    props = [(b"Socket-Type", socket_type.encode())]
    if identity is not None:
        props.append((b"Identity", identity))
    body = b"\x05READY" + b"".join(
        bytes([len(k)]) + k + struct.pack(">I", len(v)) + v for k, v in props
    )
    return frame(body, command=True)


def message(frames: list[bytes]) -> bytes:
    return b"".join(frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))


PEER_TYPE = {"shell": "DEALER", "control": "DEALER", "stdin": "DEALER", "iopub": "SUB", "hb": "REQ"}


def handshake(channel: str, identity: bytes | None = None) -> bytes:
    return greeting() + ready(PEER_TYPE[channel], identity)


def raw_send(port: int, data: bytes, *, linger: float = 0.3, half_close: bool = True) -> bytes:
    """Connect, send ``data``, half-close, read what comes back until EOF or ``linger``
    seconds, close. Returns the bytes received (refused connections give b"")."""
    received = bytearray()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
            sock.settimeout(linger)
            deadline = time.monotonic() + linger
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                received += chunk
        except (TimeoutError, ConnectionError):
            pass
    return bytes(received)


def sign(key: bytes, parts: list[bytes]) -> bytes:
    if not key:
        return b""
    return hmac.new(key, b"".join(parts), hashlib.sha256).hexdigest().encode()


def jupyter_parts(msg_type: str, content: dict[str, Any] | None = None) -> list[bytes]:
    header = {
        "msg_id": uuid.uuid4().hex,
        "session": "hostile",
        "username": "test",
        "date": "2026-01-01T00:00:00.000000Z",
        "msg_type": msg_type,
        "version": "5.4",
    }
    return [json.dumps(p).encode() for p in (header, {}, {}, content or {})]


def jupyter_frames(key: bytes, parts: list[bytes], signature: bytes | None = None) -> list[bytes]:
    return [b"<IDS|MSG>", sign(key, parts) if signature is None else signature, *parts]


class RawPeer:
    """A hand-made ZMTP peer on a blocking socket (for signed-but-wrong messages)."""

    def __init__(self, port: int, channel: str, identity: bytes | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(handshake(channel, identity))
        self.buffer = bytearray()
        self._read_exactly(64)  # the kernel's greeting
        self._read_frame()  # its READY

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawPeer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, frames: list[bytes]) -> None:
        self.sock.sendall(message(frames))

    def _read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("kernel closed the connection")
            self.buffer += chunk
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def _read_frame(self) -> tuple[int, bytes]:
        flags = self._read_exactly(1)[0]
        if flags & 2:
            (size,) = struct.unpack(">Q", self._read_exactly(8))
        else:
            size = self._read_exactly(1)[0]
        return flags, self._read_exactly(size)

    def receive(self, timeout: float = TIMEOUT) -> list[bytes]:
        """The next message (commands skipped); TimeoutError if none comes."""
        self.sock.settimeout(timeout)
        frames = []
        while True:
            flags, body = self._read_frame()
            if flags & 4:
                continue
            frames.append(body)
            if not flags & 1:
                return frames
