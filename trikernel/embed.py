"""Embed a Jupyter kernel in a running trio application.

::

    async with trikernel.open_kernel(namespace={"app": app}) as kernel:
        ...  # the app runs; `jupyter console --existing <kernel.connection_file>` attaches

    # or, as a task of the app's nursery:
    kernel = await nursery.start(trikernel.serve_kernel)

The kernel binds its five sockets, writes a connection file (mode 0600), logs how to
attach, and serves until the block exits or the task is cancelled; then it closes its
sockets and removes the file. With the default in-process evaluator, cells run as trio
tasks on the application's own loop, in ``namespace``, on the same IPython core as
the subprocess kernel (see :mod:`trikernel.inprocess`).
A client's shutdown_request ends the embedded kernel only, never the application.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .connection import (
    CHANNELS,
    ConnectionInfo,
    default_runtime_dir,
    new_connection_info,
    save_connection_file,
)
from .evaluator_api import EvaluatorFactory
from .kernel import Kernel
from .messages import new_id

__all__ = ["open_kernel", "serve_kernel", "EmbeddedKernel"]

log = logging.getLogger("trikernel.embed")

SUBPROCESS_STOP_TIMEOUT = 5.0  # a subprocess evaluator's polite shutdown, then cancel


@dataclass
class EmbeddedKernel:
    """What ``open_kernel`` yields and ``serve_kernel`` reports as started."""

    info: ConnectionInfo  # with the real ports
    connection_file: Path
    namespace: dict[str, Any] | None  # None with the subprocess evaluator
    kernel: Kernel
    stopped: trio.Event = field(default_factory=trio.Event)

    @property
    def attach_command(self) -> str:
        return f"jupyter console --existing {self.connection_file}"

    def interrupt(self) -> None:
        """Cancel the running cell, as an interrupt_request would."""
        self.kernel.interrupt()

    def stop(self) -> None:
        """End the embedded kernel as a client's shutdown_request would."""
        self.kernel.request_shutdown(False)

    async def wait_stopped(self) -> None:
        """Wait until the kernel has stopped (e.g. after a client's shutdown_request)."""
        await self.stopped.wait()


def _check_arguments(
    evaluator: str | EvaluatorFactory, namespace: dict[str, Any] | None, transport: str
) -> None:
    """Raise ValueError for bad arguments before anything is opened."""
    if transport not in ("tcp", "ipc"):
        raise ValueError(f"transport must be 'tcp' or 'ipc', got {transport!r}")
    if callable(evaluator) or evaluator == "inprocess":
        return
    if evaluator == "subprocess":
        if namespace is not None:
            raise ValueError(
                "namespace= cannot be used with evaluator='subprocess': cells run in "
                "another process, which cannot see this one's objects"
            )
        try:
            from .bridge import open_subprocess_evaluator  # noqa: F401
        except ImportError as exc:
            raise ValueError(
                f"evaluator='subprocess' is not available in this version: {exc}"
            ) from exc
        return
    raise ValueError(f"evaluator must be 'inprocess', 'subprocess' or a factory, got {evaluator!r}")


def _evaluator_factory(
    evaluator: str | EvaluatorFactory, namespace: dict[str, Any] | None
) -> tuple[EvaluatorFactory, dict[str, Any] | None]:
    if callable(evaluator):
        return evaluator, namespace
    if evaluator == "subprocess":
        from .bridge import open_subprocess_evaluator

        return open_subprocess_evaluator, None
    from .inprocess import open_inprocess_evaluator

    ns: dict[str, Any] = (
        {"__name__": "__console__", "__doc__": None} if namespace is None else namespace
    )
    return functools.partial(open_inprocess_evaluator, namespace=ns), ns


def _connection_info(ip: str, transport: str, key: str | None) -> ConnectionInfo:
    info = new_connection_info(ip=ip, transport=transport, key=key)
    if transport == "ipc":
        # ipc endpoints are the paths "<ip>-<port>": pick five that do not exist yet.
        ports = {}
        candidate = 1
        for channel in CHANNELS:
            while os.path.exists(f"{ip}-{candidate}"):
                candidate += 1
            ports[f"{channel}_port"] = candidate
            candidate += 1
        info = info.with_ports(**ports)
    return info


def _remove_ipc_sockets(info: ConnectionInfo) -> None:
    for channel in CHANNELS:
        socket_path = f"{info.ip}-{info.port(channel)}"
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(socket_path).st_mode):
                os.unlink(socket_path)


async def serve_kernel(
    namespace: dict[str, Any] | None = None,
    connection_file: str | os.PathLike[str] | None = None,
    ip: str = "127.0.0.1",
    *,
    evaluator: str | EvaluatorFactory = "inprocess",
    key: str | None = None,
    transport: str = "tcp",
    task_status: trio.TaskStatus[EmbeddedKernel] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve an embedded kernel until cancelled or a client asks it to shut down.

    Use as ``handle = await nursery.start(serve_kernel, ...)``; the handle is an
    :class:`EmbeddedKernel` (``.info``, ``.connection_file``, ``.namespace``).

    Args:
        namespace: the dict cells run in (a fresh one when None). ``background``,
            ``display``, ``clear_output`` and ``ainput`` are added to it.
        connection_file: where to write the connection file; by default a new file
            in the Jupyter runtime directory. Removed when the kernel stops.
        ip: the address to bind (or, with ``transport="ipc"``, the path prefix).
        evaluator: ``"inprocess"`` (cells on this loop), ``"subprocess"`` (an isolated
            IPython process), or an ``EvaluatorFactory`` (taking the output sink).
        key: the HMAC key (a fresh random one by default).
        transport: ``"tcp"`` or ``"ipc"``.
    """
    _check_arguments(evaluator, namespace, transport)
    factory, ns = _evaluator_factory(evaluator, namespace)
    if transport == "ipc" and ip == "127.0.0.1":
        ip = str(
            Path(default_runtime_dir()) / f"kernel-trikernel-embed-{os.getpid()}-{new_id()[:8]}"
        )
    info = _connection_info(ip, transport, key)
    if connection_file is None:
        path = Path(default_runtime_dir()) / (
            f"kernel-trikernel-embed-{os.getpid()}-{new_id()[:8]}.json"
        )
    else:
        path = Path(connection_file)
    kernel = Kernel(info, evaluator_factory=factory, handle_signals=False)
    # The kernel is shielded from our caller's cancellation: we stop it ourselves, so
    # that a subprocess evaluator gets a polite shutdown before the sockets close.
    kernel_scope = trio.CancelScope(shield=True)
    kernel_done = trio.Event()
    grace = SUBPROCESS_STOP_TIMEOUT if evaluator == "subprocess" else 0.0

    async def run_kernel(task_status: trio.TaskStatus[ConnectionInfo]) -> None:
        try:
            with kernel_scope:
                await kernel.run(task_status=task_status)
        finally:
            kernel_done.set()

    written = False
    handle: EmbeddedKernel | None = None
    try:
        async with trio.open_nursery() as nursery:
            real: ConnectionInfo = await nursery.start(run_kernel)
            try:
                save_connection_file(path, real)
                written = True
                handle = EmbeddedKernel(real, path, ns, kernel)
                log.info("embedded trikernel is running. To attach:\n    %s", handle.attach_command)
                task_status.started(handle)
                await kernel_done.wait()  # a client's shutdown_request, or handle.stop()
            finally:
                # Cancelled, or an error: stop the kernel (politely first if it has a
                # subprocess), then close everything.
                if not kernel_done.is_set():
                    kernel.request_shutdown(False)
                    if grace > 0:
                        with trio.CancelScope(shield=True), trio.move_on_after(grace):
                            await kernel_done.wait()
                    kernel_scope.cancel()
    finally:
        if written:
            with contextlib.suppress(OSError):
                path.unlink()
        if transport == "ipc":
            _remove_ipc_sockets(info)
        if handle is not None:
            handle.stopped.set()
        log.info("embedded trikernel stopped (%s)", path)


@asynccontextmanager
async def open_kernel(
    namespace: dict[str, Any] | None = None,
    connection_file: str | os.PathLike[str] | None = None,
    ip: str = "127.0.0.1",
    **kwargs: Any,
) -> AsyncIterator[EmbeddedKernel]:
    """``async with open_kernel(...) as kernel:`` serves a kernel while the block runs.

    Same arguments as :func:`serve_kernel`. Leaving the block (normally, by an
    exception, or by cancellation) closes the kernel and removes the connection file.
    A client's shutdown_request stops the kernel early; the block carries on.
    """
    _check_arguments(
        kwargs.get("evaluator", "inprocess"), namespace, kwargs.get("transport", "tcp")
    )
    async with trio.open_nursery() as nursery:
        handle: EmbeddedKernel = await nursery.start(
            functools.partial(serve_kernel, namespace, connection_file, ip, **kwargs)
        )
        try:
            yield handle
        finally:
            nursery.cancel_scope.cancel()


async def _send_interrupt(connection_file: str) -> str:
    from .client import open_client
    from .connection import read_connection_file

    async with open_client(read_connection_file(connection_file)) as client:
        reply = await client.interrupt(timeout=5)
    return str(reply.content.get("status"))


def main(argv: list[str] | None = None) -> int:
    """``python -m trikernel.embed interrupt FILE``: interrupt the running cell of a
    kernel (``jupyter console --existing`` cannot: it only signals kernels it started)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m trikernel.embed")
    parser.add_argument("command", choices=["interrupt"])
    parser.add_argument("connection_file")
    args = parser.parse_args(argv)
    try:
        status = trio.run(_send_interrupt, args.connection_file)
    except Exception as exc:  # no kernel there, bad file, timeout: say so, briefly
        print(f"could not interrupt: {exc!r}")
        return 1
    print(f"interrupt_request: {status}")
    return 0 if status == "ok" else 1


if __name__ == "__main__":
    raise SystemExit(main())
