"""tcp:// and ipc:// endpoints on trio.

The one place where OS-level socket setup happens: listeners bind with
SO_REUSEADDR (a restarted kernel rebinds its ports at once, even with old
connections in TIME_WAIT), port 0 is resolved to the real port, and streams get
TCP_NODELAY (trio's SocketStream sets it). Above this module, I/O failures are
only trio.BrokenResourceError / trio.ClosedResourceError, which trio's streams
already raise for OS errors.
"""

from __future__ import annotations

import os
import socket as stdlib_socket
import stat
from dataclasses import dataclass

import trio

__all__ = ["Endpoint", "parse_url", "open_listener", "connect"]


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


async def open_listener(
    endpoint: Endpoint, backlog: int = 128
) -> tuple[trio.SocketListener, Endpoint]:
    """Bind and listen; returns the listener and the endpoint with its real port."""
    if endpoint.transport == "ipc":
        return await _open_ipc_listener(endpoint, backlog)
    family = stdlib_socket.AF_INET6 if ":" in endpoint.host else stdlib_socket.AF_INET
    sock = trio.socket.socket(family, stdlib_socket.SOCK_STREAM)
    try:
        sock.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        await sock.bind((endpoint.host, endpoint.port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    port = sock.getsockname()[1]
    return trio.SocketListener(sock), Endpoint("tcp", endpoint.host, port)


async def _open_ipc_listener(
    endpoint: Endpoint, backlog: int
) -> tuple[trio.SocketListener, Endpoint]:
    path = endpoint.host
    # A stale socket file from a dead kernel would make bind fail; remove only sockets.
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(stdlib_socket.AF_UNIX, stdlib_socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock), endpoint


async def connect(endpoint: Endpoint) -> trio.SocketStream:
    """Open a stream to a listening endpoint (OSError if nothing listens there)."""
    if endpoint.transport == "ipc":
        return await trio.open_unix_socket(endpoint.host)
    host = "127.0.0.1" if endpoint.host == "0.0.0.0" else endpoint.host
    return await trio.open_tcp_stream(host, endpoint.port)
