"""Run a standalone kernel: from a connection file (what Jupyter launches), or
with a fresh one written to the Jupyter runtime dir."""

from __future__ import annotations

import logging
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .bridge.spawn import spawn_evaluator
from .connection import (
    ConnectionInfo,
    default_runtime_dir,
    new_connection_info,
    read_connection_file,
    save_connection_file,
)
from .errors import ConnectionFileError
from .zmtp._listen import listen_socket, parse_url

if TYPE_CHECKING:
    from .kernel import Kernel

log = logging.getLogger("trikernel")


def run_kernel(
    connection_file: str | None,
    *,
    ip: str = "127.0.0.1",
    allow_unsigned: bool = False,
    interrupt_grace: float | None = None,
) -> int:
    """Serve until shutdown; returns the exit status."""
    if connection_file is not None:
        try:
            info = read_connection_file(connection_file)
        except ConnectionFileError as exc:
            print(f"trikernel: {exc}", file=sys.stderr)
            return 2
        if not info.key:
            if not allow_unsigned:
                print(
                    "trikernel: the connection file has an empty key, so anyone who can reach the "
                    "ports could run code. Refusing to start; pass --allow-unsigned to accept this.",
                    file=sys.stderr,
                )
                return 2
            log.warning("running WITHOUT message signing (empty key, --allow-unsigned)")
        path = Path(connection_file)
        announce = False
    else:
        info = new_connection_info(ip=ip)
        path = Path(default_runtime_dir()) / f"kernel-trikernel-{os.getpid()}.json"
        announce = True
    try:
        prebound = _bind_early(info)
    except OSError as exc:
        print(f"trikernel: cannot listen on {info.ip}: {exc}", file=sys.stderr)
        return 1
    # The evaluator starts now, so its imports overlap ours (2 cores: ~350 ms saved on
    # the first cell). If it cannot start here, the bridge tries again and reports.
    try:
        prespawned = spawn_evaluator(sys.executable)
    except OSError as exc:
        log.warning("could not start the evaluator early: %s", exc)
        prespawned = None
    # Only now the heavy imports (trio, the kernel): clients that connect meanwhile
    # wait in the listen backlog rather than being refused.
    import trio

    from .kernel import Kernel

    parent = os.environ.get("JPY_PARENT_PID")
    kernel = Kernel(
        info,
        handle_signals=True,
        parent_pid=int(parent) if parent and parent.isdigit() else None,
        interrupt_grace=interrupt_grace,
        prebound=prebound,
        prespawned_evaluator=prespawned,
    )
    try:
        trio.run(_serve, kernel, path, info, announce)
    finally:
        if announce:
            path.unlink(missing_ok=True)
    return 0


def _bind_early(info: ConnectionInfo) -> dict[str, socket.socket]:
    """The five listening sockets, bound with the standard library alone."""
    bound: dict[str, socket.socket] = {}
    try:
        for channel in ("shell", "control", "stdin", "iopub", "hb"):
            bound[channel], _ = listen_socket(parse_url(info.url(channel)))
    except BaseException:
        for sock in bound.values():
            sock.close()
        raise
    return bound


async def _serve(kernel: Kernel, path: Path, requested: ConnectionInfo, announce: bool) -> None:
    import trio

    async with trio.open_nursery() as nursery:
        info: ConnectionInfo = await nursery.start(kernel.run)
        if info != requested or announce:
            # Port 0 was resolved to real ports: write them back for the client.
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # it holds keys
            save_connection_file(path, info)
        if announce:
            print(
                f"trikernel is running. To attach:\n    jupyter console --existing {path}",
                file=sys.stderr,
                flush=True,
            )
        log.info("kernel %s serving %s", kernel.session, path)
