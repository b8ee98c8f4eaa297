"""tcp:// and ipc:// endpoints on trio.

The one place where OS-level socket setup happens: listeners bind with
SO_REUSEADDR (a restarted kernel rebinds its ports at once, even with old
connections in TIME_WAIT), port 0 is resolved to the real port, and streams get
TCP_NODELAY (trio's SocketStream sets it). Above this module, I/O failures are
only trio.BrokenResourceError / trio.ClosedResourceError, which trio's streams
already raise for OS errors.
"""

from __future__ import annotations

import socket as stdlib_socket

import trio

from ._listen import Endpoint, listen_socket, parse_url

__all__ = ["Endpoint", "parse_url", "open_listener", "connect"]


async def open_listener(
    endpoint: Endpoint, backlog: int = 128, *, sock: stdlib_socket.socket | None = None
) -> tuple[trio.SocketListener, Endpoint]:
    """Bind and listen (or adopt ``sock``, already bound by ``listen_socket``);
    returns the listener and the endpoint with its real port."""
    if sock is None:
        sock, endpoint = listen_socket(endpoint, backlog)
    elif endpoint.transport == "tcp":
        endpoint = Endpoint("tcp", endpoint.host, sock.getsockname()[1])
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock)), endpoint


async def connect(endpoint: Endpoint) -> trio.SocketStream:
    """Open a stream to a listening endpoint (OSError if nothing listens there)."""
    if endpoint.transport == "ipc":
        return await trio.open_unix_socket(endpoint.host)
    host = "127.0.0.1" if endpoint.host == "0.0.0.0" else endpoint.host
    return await trio.open_tcp_stream(host, endpoint.port)
