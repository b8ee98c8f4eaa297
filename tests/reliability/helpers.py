"""Helpers for the reliability tests: a kernel process (``support.kernel_process``)
talked to with jupyter_client or with raw sockets, and looked at from outside
(/proc/net: connections and listening sockets).

Rules kept by every test here: every wait has a timeout, every process started is
killed (its process group, and every pid of its tree seen while it ran) in a finally.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
import time
import uuid
from pathlib import Path
from typing import Any

import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from support import TIMEOUT
from support.client import run
from support.iopub import result_text, stream_text
from support.kernel_process import KernelProcess
from support.wire import handshake, message

CHANNELS = ("shell", "control", "stdin", "iopub", "hb")
ROUTER_CHANNELS = ("shell", "control", "stdin")


def evaluator_pid(kc: BlockingKernelClient) -> int:
    reply, outputs = run(kc, "import os; print(os.getpid())")
    assert reply["content"]["status"] == "ok"
    return int(stream_text(outputs))


def assert_serves(kc: BlockingKernelClient, timeout: float = TIMEOUT) -> None:
    """The kernel still executes ``1+1`` for this (long connected) client."""
    reply, outputs = run(kc, "1+1", timeout=timeout)
    assert reply["content"]["status"] == "ok", reply["content"]
    assert result_text(outputs) == ["2"]


def established(port: int) -> list[list[str]]:
    """The /proc/net/tcp rows (split into fields) of ESTABLISHED IPv4 connections whose
    local port is ``port``: the kernel's side of every connection to a kernel port."""
    rows = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "01" and int(fields[1].split(":")[1], 16) == port:
            rows.append(fields)
    return rows


def established_peers(port: int) -> set[tuple[str, int]]:
    """Remote (ip, port) of the ESTABLISHED connections to local ``port``: the client
    side of every connection to a kernel port."""
    peers = set()
    for fields in established(port):
        ip_hex, port_hex = fields[2].split(":")
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


def stalled_subscriber(ctx: zmq.Context[Any], kernel: KernelProcess) -> zmq.Socket[Any]:
    """A SUB socket on the kernel's iopub with tiny buffers, for the caller never to read."""
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.RCVHWM, 1)
    sub.setsockopt(zmq.RCVBUF, 4096)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"tcp://127.0.0.1:{kernel.port('iopub')}")
    return sub  # never read


# ---------------------------------------------------------------- raw peers
# Bytes from support.wire (the spec, not trikernel's codec) and hand-signed Jupyter
# messages: these tests must not share the code they test.


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
