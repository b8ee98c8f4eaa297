"""SSH tunnels to a kernel's five ports, through the ``ssh`` binary.

Theory of operation: one ``ssh -N`` child forwards five loopback ports to the kernel's
ports as seen from the ssh server (``-L 127.0.0.1:LOCAL:REMOTE_IP:REMOTE_PORT``), with
``ExitOnForwardFailure`` (a local port taken meanwhile makes ssh exit instead of running
without it) and ``BatchMode`` (no password prompt on a terminal we do not own: keys, an
agent or the caller's ``SSH_ASKPASS``). Since it runs the user's ``ssh``, their ssh config
(aliases, ProxyJump, ControlMaster) applies; there is no paramiko or pexpect.

The tunnel is ready when every local port accepts a TCP connection. If ssh exits first,
the error carries the tail of its stderr ("Permission denied", "Could not resolve
hostname", "Address already in use"). The child lives exactly as long as the
``open_ssh_tunnel`` block: on exit it gets SIGTERM, then SIGKILL after a grace period,
and is reaped (jupyter_client's ``ssh -f ... sleep 60`` leaves orphans or tunnels that
vanish after 60 s; enterprise_gateway#168, pyzmq#717).

``tunnel_to_kernel`` is jupyter_client's synchronous form for code that expects it; its
ssh children are ended when the interpreter exits.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import IO, Any

import trio

from trikernel.connection import ConnectionInfo, read_connection_file
from trikernel.errors import SSHTunnelError

__all__ = ["open_ssh_tunnel", "ssh_command", "tunnel_to_kernel"]

# The order of jupyter_client's tunnel_to_kernel result (note: hb before control).
TUNNEL_CHANNELS = ("shell", "iopub", "stdin", "hb", "control")
_STDERR_TAIL = 2000  # bytes of ssh's stderr kept for the error message
_STOP_GRACE = 2.0  # seconds between SIGTERM and SIGKILL
_POLL = 0.05  # seconds between readiness checks


def _split_server(server: str) -> tuple[str, str | None]:
    # jupyter_client's openssh_tunnel: "user@host:port" -> ("user@host", "port").
    host, sep, port = server.rpartition(":")
    if sep and host and port.isdigit():
        return host, port
    return server, None


def _remote_ip(ip: str) -> str:
    # A kernel bound to every interface is reachable on the server's loopback.
    return "127.0.0.1" if ip in ("*", "0.0.0.0", "") else ip


def ssh_command(
    forwards: Mapping[int, tuple[str, int]],
    server: str,
    *,
    keyfile: str | None = None,
    ssh: str = "ssh",
) -> list[str]:
    """The ssh argv forwarding each local port of ``forwards`` to ``(remote_ip, port)``."""
    host, port = _split_server(server)
    cmd = [ssh, "-N", "-o", "ExitOnForwardFailure=yes", "-o", "BatchMode=yes"]
    cmd += ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=3"]
    if keyfile is not None:
        cmd += ["-i", os.path.expanduser(keyfile)]
    if port is not None:
        cmd += ["-p", port]
    for local, (rip, rport) in forwards.items():
        cmd += ["-L", f"127.0.0.1:{local}:{rip}:{rport}"]
    return [*cmd, host]


def _pick_local_ports(count: int) -> list[int]:
    # All bound at once, so distinct; a port taken before ssh binds it makes ssh exit
    # (ExitOnForwardFailure), which is reported with ssh's "Address already in use".
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _plan(info: ConnectionInfo) -> tuple[dict[int, tuple[str, int]], ConnectionInfo]:
    if info.transport != "tcp":
        raise ValueError(f"ssh tunnels need a tcp kernel, got transport {info.transport!r}")
    rip = _remote_ip(info.ip)
    local = dict(zip(TUNNEL_CHANNELS, _pick_local_ports(len(TUNNEL_CHANNELS)), strict=True))
    forwards = {local[ch]: (rip, info.port(ch)) for ch in TUNNEL_CHANNELS}
    ports: dict[str, Any] = {f"{ch}_port": port for ch, port in local.items()}
    return forwards, dataclasses.replace(info, ip="127.0.0.1", **ports)


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False


def _failure(what: str, tail: bytes, returncode: int | None) -> SSHTunnelError:
    text = tail.decode("utf-8", "replace").strip() or "(no output)"
    return SSHTunnelError(f"{what}; ssh's stderr: {text}", returncode=returncode)


# --- the trio tunnel ---------------------------------------------------------------------


async def _wait_accepting(ports: Sequence[int], proc: trio.Process) -> bool:
    """True once every port accepts; False if ssh exits first."""
    pending = list(ports)
    while proc.returncode is None:
        # A connect to a loopback port is answered at once (accepted or refused).
        pending = [port for port in pending if not _accepts(port)]
        if not pending:
            return proc.returncode is None
        await trio.sleep(_POLL)
    return False


async def _stop(proc: trio.Process) -> None:
    """SIGTERM, SIGKILL after a grace period, reaped. Idempotent."""
    if proc.returncode is None:
        proc.terminate()
        with trio.move_on_after(_STOP_GRACE):
            await proc.wait()
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


def _read_tail(err: IO[bytes]) -> bytes:
    err.seek(0, os.SEEK_END)
    err.seek(max(0, err.tell() - _STDERR_TAIL))
    return err.read()


async def _start(
    cmd: list[str], ports: Sequence[int], server: str, timeout: float, err: IO[bytes]
) -> trio.Process:
    # stderr goes to a file, not a pipe: nothing to drain while the tunnel runs (so no
    # task, no nursery around the caller's block), and the tail is there after ssh exits.
    proc = await trio.lowlevel.open_process(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
    )
    ready = False
    try:
        with trio.move_on_after(timeout):
            ready = await _wait_accepting(ports, proc)
    finally:
        if not ready:  # timed out, ssh exited, or cancelled from outside: none left behind
            exited = proc.returncode
            with trio.CancelScope(shield=True):
                await _stop(proc)
    if ready:
        return proc
    if exited is not None:
        what = f"ssh to {server} exited with status {exited} before its forwards were up"
    else:
        what = f"ssh forwards to {server} were not accepting after {timeout} s"
    raise _failure(what, _read_tail(err), exited)


@contextlib.asynccontextmanager
async def open_ssh_tunnel(
    info: ConnectionInfo,
    server: str,
    *,
    keyfile: str | None = None,
    ssh: str = "ssh",
    timeout: float = 30.0,
) -> AsyncIterator[ConnectionInfo]:
    """Forward the kernel's five ports through ``server``, for the block.

    Args:
        info: the kernel's connection info, its ip as seen from ``server`` ("*" and
            "0.0.0.0" mean the server's loopback).
        server: an ssh destination: a host, ``user@host``, ``user@host:port`` or an alias.
        keyfile: passed as ``-i``.
        ssh: the ssh program.
        timeout: seconds for every forward to accept.

    Returns:
        (as the block's value) ``info`` on 127.0.0.1 with the local ports, same key.

    Raises:
        SSHTunnelError: ssh exited before the forwards were up, or they were not up
            within ``timeout`` (the message has ssh's stderr tail).
        ValueError: ``info`` is not tcp.
    """
    forwards, local_info = _plan(info)
    cmd = ssh_command(forwards, server, keyfile=keyfile, ssh=ssh)
    with tempfile.TemporaryFile() as err:
        proc = await _start(cmd, list(forwards), server, timeout, err)
        try:
            yield local_info
        finally:
            with trio.CancelScope(shield=True):
                await _stop(proc)


# --- jupyter_client's synchronous form ---------------------------------------------------

_sync_tunnels: list[subprocess.Popen[bytes]] = []


def _stop_sync(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=_STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.wait()


def _close_sync_tunnels() -> None:
    """End every ssh started by ``tunnel_to_kernel`` (run at interpreter exit)."""
    while _sync_tunnels:
        _stop_sync(_sync_tunnels.pop())


atexit.register(_close_sync_tunnels)


def tunnel_to_kernel(
    connection_info: str | os.PathLike[str] | Mapping[str, Any] | ConnectionInfo,
    sshserver: str,
    sshkey: str | None = None,
    *,
    timeout: float = 30.0,
) -> tuple[int, ...]:
    """jupyter_client's ``tunnel_to_kernel``: forward a kernel's ports, return the local ones.

    ``connection_info`` is a connection file's path, its dict, or a ConnectionInfo.
    Returns ``(shell, iopub, stdin, hb, control)`` local ports on 127.0.0.1 (jupyter_client's
    order). Unlike jupyter_client's (``ssh -f ... sleep 60``), the one ssh child lives until
    the interpreter exits. Blocks until the forwards accept.

    Raises:
        SSHTunnelError: as :func:`open_ssh_tunnel`.
    """
    if isinstance(connection_info, ConnectionInfo):
        info = connection_info
    elif isinstance(connection_info, Mapping):
        info = ConnectionInfo.from_dict(connection_info)
    else:
        info = read_connection_file(connection_info)
    forwards, local_info = _plan(info)
    cmd = ssh_command(forwards, sshserver, keyfile=sshkey)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err
        )
        deadline = time.monotonic() + timeout
        pending = list(forwards)
        while pending and proc.poll() is None and time.monotonic() < deadline:
            pending = [port for port in pending if not _accepts(port)]
            if pending:
                time.sleep(_POLL)
        if pending or proc.poll() is not None:
            exited = proc.poll()
            _stop_sync(proc)
            tail = _read_tail(err)
            if exited is not None:
                what = f"ssh to {sshserver} exited with status {exited} before its forwards were up"
            else:
                what = f"ssh forwards to {sshserver} were not accepting after {timeout} s"
            raise _failure(what, tail, exited)
    _sync_tunnels.append(proc)
    return tuple(local_info.port(ch) for ch in TUNNEL_CHANNELS)
