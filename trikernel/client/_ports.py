"""Ports for a kernel we start, without the pick-then-bind race (spec client.md §2).

Preferred: the kernel binds port 0 itself and writes the real ports back into its
connection file (ipykernel >= 7 and trikernel do). ``wait_for_written_ports`` polls
the file until all five ports are non-zero; a missing, empty or half-written file is
normal meanwhile (ipykernel unlinks and rewrites it).

Fallback, for kernels that bind what they are given: ``reserve_ports`` picks each
port by binding port 0 and then parks it in TIME_WAIT (listen, connect, accept, close
the accepted side first). The OS does not hand a TIME_WAIT port to a later bind-0,
while a kernel binding it with SO_REUSEADDR (libzmq, trikernel) still can. A
process-wide set keeps this process from giving one port to two kernels until
``release_ports``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from collections.abc import Iterable

import trio

from ..connection import CHANNELS

__all__ = ["PORT_FIELDS", "release_ports", "reserve_ports", "wait_for_written_ports"]

PORT_FIELDS = tuple(f"{channel}_port" for channel in CHANNELS)
POLL_INTERVAL = 0.02

_reserved: set[int] = set()  # ports this process handed to a kernel and still holds


def written_ports(path: str) -> dict[str, int] | None:
    """The five ports in the file at ``path`` if all are set, else None."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    ports = {name: data.get(name) for name in PORT_FIELDS}
    if all(type(p) is int and 0 < p < 65536 for p in ports.values()):
        return ports  # type: ignore[return-value]
    return None


async def wait_for_written_ports(path: str, timeout: float) -> dict[str, int] | None:
    """Poll ``path`` until the kernel has written its five ports; None after ``timeout``."""
    with trio.move_on_after(timeout):
        while True:
            ports = written_ports(path)
            if ports is not None:
                return ports
            await trio.sleep(POLL_INTERVAL)
    return None


def reserve_ports(ip: str, count: int = len(PORT_FIELDS)) -> list[int]:
    """``count`` distinct free tcp ports on ``ip``, parked in TIME_WAIT (POSIX)."""
    host = "127.0.0.1" if ip in ("", "*", "0.0.0.0") else ip
    listeners: list[socket.socket] = []
    ports: list[int] = []
    try:
        while len(ports) < count:
            listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            listeners.append(listener)
            # Linux lets a later bind reuse a TIME_WAIT port only if both sockets set
            # SO_REUSEADDR: the kernel's does (libzmq, trikernel), so must ours.
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, 0))
            port = listener.getsockname()[1]
            if port not in _reserved:
                listener.listen(1)
                ports.append(port)
        if sys.platform != "win32":
            for listener in listeners:
                if listener.getsockname()[1] in ports:
                    _park(listener)
    finally:
        for listener in listeners:
            listener.close()
    _reserved.update(ports)
    return ports


def _park(listener: socket.socket) -> None:
    # The side that closes first keeps the TIME_WAIT entry: the accepted one, whose
    # local port is the listener's.
    with socket.create_connection(listener.getsockname(), timeout=1) as client:
        accepted, _ = listener.accept()
        accepted.close()
        client.recv(1)  # the FIN: the accepted side closed first


def release_ports(ports: Iterable[int]) -> None:
    """Forget ``ports`` (the kernel that used them is gone); unknown ones are ignored."""
    _reserved.difference_update(ports)


def ipc_ports(ip: str, count: int = len(PORT_FIELDS)) -> list[int]:
    """jupyter_client's ipc "ports": the smallest N from 1 with no file ``{ip}-{N}``."""
    ports: list[int] = []
    n = 1
    while len(ports) < count:
        if not os.path.exists(f"{ip}-{n}") and n not in _reserved:
            ports.append(n)
        n += 1
    _reserved.update(ports)
    return ports
