"""Binding listening sockets with the standard library only (no trio import).

``python -m trikernel`` binds its five ports with this *before* it imports trio,
so a Jupyter client that connects at once finds the ports listening (its TCP
handshake completes in the backlog) instead of being refused and retrying after
libzmq's 100 ms reconnect interval. ``transport.open_listener`` binds through the
same function, so there is one way to bind.
"""

from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass

__all__ = ["Endpoint", "parse_url", "listen_socket"]


@dataclass(frozen=True)
class Endpoint:
    transport: str  # "tcp" or "ipc"
    host: str  # IP address, or the socket path for ipc
    port: int = 0  # tcp only

    @property
    def url(self) -> str:
        if self.transport == "ipc":
            return f"ipc://{self.host}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """``tcp://HOST:PORT`` or ``ipc://PATH`` -> Endpoint (ValueError if malformed)."""
    transport, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"endpoint {url!r} has no transport (expected tcp:// or ipc://)")
    if transport == "ipc":
        if not rest:
            raise ValueError(f"endpoint {url!r} has no path")
        return Endpoint("ipc", rest)
    if transport != "tcp":
        raise ValueError(f"transport {transport!r} is not supported (tcp or ipc)")
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"endpoint {url!r} needs a port 0..65535")
    host = host.strip("[]")
    if host in ("*", ""):
        host = "0.0.0.0"
    return Endpoint("tcp", host, int(port))


def listen_socket(endpoint: Endpoint, backlog: int = 128) -> tuple[socket.socket, Endpoint]:
    """A bound, listening, non-blocking socket and the endpoint with its real port.

    TCP listeners get SO_REUSEADDR, so a restarted kernel rebinds its ports at once
    even with old connections in TIME_WAIT. For ipc, a stale socket file (from a
    dead kernel) is replaced; other files are left alone and bind fails.
    """
    if endpoint.transport == "ipc":
        try:
            if stat.S_ISSOCK(os.stat(endpoint.host).st_mode):
                os.unlink(endpoint.host)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        address: str | tuple[str, int] = endpoint.host
    else:
        family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        address = (endpoint.host, endpoint.port)
    try:
        if endpoint.transport == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    if endpoint.transport == "tcp":
        endpoint = Endpoint("tcp", endpoint.host, sock.getsockname()[1])
    return sock, endpoint
