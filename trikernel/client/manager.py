"""A kernel manager on trio: start any kernelspec, keep it alive, shut it down.

Theory of operation
-------------------
``run_kernel_manager`` owns a nursery holding everything a kernel needs:

* the shared :class:`KernelClient` (``km.client``), connected once and reconnected
  (same object, same session) after every restart;
* per kernel process, a *watcher* task in ``process.wait()`` (a pidfd on Linux), so a
  death is seen at once, not by polling, and a task draining its stderr into a
  bounded tail (forwarded to ours unless ``quiet``);
* one *restarter* task, the only one that ever auto-restarts: the watcher reports an
  unexpected exit on a channel; the restarter, holding the lifecycle lock that user
  ``restart``/``shutdown`` also take, decides (jupyter_client's limits: more than
  ``restart_limit`` consecutive restarts -> ``dead``; alive ``stable_start_time``
  seconds resets the count) and restarts with ``now=True``. It is never re-entered.

Ports (spec §2): for ipykernel and trikernel (or ``bind_port0=True``) the connection
file is written with port 0 and the kernel's write-back is read; otherwise, or if the
write-back does not come within ``port_timeout``, ports are picked and reserved.

Shutdown: ``shutdown_request`` on control first (interrupting only if busy), then
SIGTERM and SIGKILL to the whole process group, within ``shutdown_wait_time``; the
group is killed even after a clean exit, so no child of the kernel survives.

States: ``starting`` -> ``ready`` -> (``restarting`` -> ``ready``)* -> ``shutdown``,
or ``dead`` (auto-restart gave up, or disabled). ``restarting`` and ``dead`` are also
delivered to the client's iopub consumers as ``status`` messages with parent ``{}``.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal as signals
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio

from ..connection import (
    ConnectionInfo,
    new_connection_info,
    read_connection_file,
    save_connection_file,
)
from ..errors import KernelDied
from ..kernelspec import KernelSpec, get_kernel_spec
from ..messages import Message, new_header
from . import _ports
from ._client import KernelClient
from .launcher import launch_kernel

__all__ = ["KernelManager", "KernelStartError", "open_kernel_manager", "run_kernel_manager"]

STDERR_TAIL = 4096
_BINDS_PORT0 = ("ipykernel_launcher", "ipykernel", "trikernel")


class KernelStartError(KernelDied):
    """The kernel exited (or never became ready) while starting.

    ``returncode`` as subprocess reports it (negative: a signal; None: still running,
    e.g. not ready in time); ``stderr`` the tail of what it wrote there.
    """

    def __init__(self, msg: str, *, returncode: int | None, stderr: str) -> None:
        super().__init__(msg)
        self.returncode = returncode
        self.stderr = stderr


@dataclass(frozen=True)
class ManagerOptions:
    """Everything ``open_kernel_manager(**options)`` accepts besides the name."""

    kernel_spec: KernelSpec | None = None  # instead of looking up kernel_name
    kernel_id: str | None = None
    connection_file: str | None = None  # default: runtime dir / kernel-<id>.json
    ip: str = "127.0.0.1"
    transport: str = "tcp"
    extra_args: Sequence[str] = ()
    env: Mapping[str, str] | None = None  # base environment (default: ours)
    cwd: str | None = None
    bind_port0: bool | None = None  # None: for ipykernel/trikernel argv or metadata
    autorestart: bool = True
    restart_limit: int = 5
    stable_start_time: float = 10.0
    ready_timeout: float = 60.0
    port_timeout: float = 10.0
    shutdown_wait_time: float = 5.0
    kill_timeout: float = 5.0
    quiet: bool = False  # do not forward the kernel's stderr to ours
    launch_kwargs: Mapping[str, Any] = field(default_factory=dict)


@dataclass
class _Process:
    """One launch of the kernel and what its tasks learned about it."""

    process: trio.Process
    started_at: float
    exited: trio.Event = field(default_factory=trio.Event)
    stderr_done: trio.Event = field(default_factory=trio.Event)
    stderr: bytearray = field(default_factory=bytearray)
    expected: bool = False  # we are stopping it: its exit is no death

    @property
    def returncode(self) -> int | None:
        return self.process.returncode

    def tail(self) -> str:
        return self.stderr.decode("utf-8", "replace")


class KernelManager:
    """One kernel process and its shared client; made by ``run_kernel_manager``."""

    def __init__(self, spec: KernelSpec, options: ManagerOptions, nursery: trio.Nursery) -> None:
        self.spec = spec
        self.options = options
        self.kernel_id = options.kernel_id or str(uuid.uuid4())
        self.connection_file = options.connection_file or os.path.join(
            _runtime_dir(), f"kernel-{self.kernel_id}.json"
        )
        self.info: ConnectionInfo = new_connection_info(options.ip, options.transport)
        self.info = _with_name(self.info, spec.name)
        self.state = "starting"
        self._nursery = nursery
        self._client: KernelClient | None = None
        self._proc: _Process | None = None
        self._lock = trio.Lock()
        self._ready = trio.Event()
        self._start_error: BaseException | None = None
        self._finished = trio.Event()
        self._deaths_send, self._deaths = trio.open_memory_channel[_Process](8)
        self._restarts = 0
        self._stable = False  # a start lived stable_start_time: keep ports from now on
        self._reserved: list[int] = []
        self._start_scope = trio.CancelScope()  # a start in progress, for shutdown

    # ---- public API -----------------------------------------------------

    @property
    def client(self) -> KernelClient:
        """The shared client: connected and ready once the manager is started."""
        if self._client is None:
            raise RuntimeError("the kernel has not started yet")
        return self._client

    @property
    def process(self) -> trio.Process | None:
        return self._proc.process if self._proc else None

    def is_alive(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def wait_ready(self) -> None:
        """Wait until the kernel is ready; raises KernelStartError if it died starting,
        KernelDied if it is dead or shut down."""
        while not self._ready.is_set():  # a restart replaces the event
            await self._ready.wait()
        if self._start_error is not None:
            raise self._start_error
        if self.state in ("dead", "shutdown"):
            raise KernelDied(f"kernel {self.kernel_id} is {self.state}")

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the kernel's process group (it leads its own session)."""
        if self._proc is not None:
            _killpg(self._proc.process, signum)

    async def interrupt(self, *, timeout: float = 10) -> None:
        """Interrupt the running cell: SIGINT to the process group (interrupt_mode
        ``signal``) or an ``interrupt_request`` on control (``message``)."""
        await self.wait_ready()
        if self.spec.interrupt_mode == "message":
            await self.client.interrupt(timeout=timeout)
        else:
            self.signal(signals.SIGINT)

    async def restart(self, now: bool = False, newports: bool = False) -> None:
        """Stop the kernel (politely unless ``now``) and start it again, keeping the
        kernel id, key and connection file; the shared client follows, to new ports
        with ``newports``. Requests waiting on the old kernel fail with KernelRestarted."""
        async with self._lock:
            self._check_running()
            self.state = "restarting"
            self._unready()
            await self._stop(now=now, restart=True)
            if newports:
                self._forget_ports()
            await self._start()

    async def shutdown(self, now: bool = False) -> None:
        """Stop the kernel for good and remove its connection file (bounded; idempotent)."""
        self._start_scope.cancel()
        with trio.CancelScope(shield=True):
            async with self._lock:
                if self.state == "shutdown":
                    return
                self.state = "shutdown"
                await self._stop(now=now, restart=False)
                self._forget_ports()
                with contextlib.suppress(OSError):
                    os.unlink(self.connection_file)
                self._ready.set()
                self._finished.set()

    # ---- starting -------------------------------------------------------

    async def _start(self) -> None:
        """Launch, learn the ports, connect the client, wait until ready (under _lock)."""
        self._unready()
        with trio.CancelScope() as self._start_scope:
            await self._start_in_scope()

    async def _start_in_scope(self) -> None:
        options = self.options
        binds = self._binds_port0()
        if not binds and not _all_ports(self.info):
            self._pick_ports()
        proc = await self._launch()
        if not _all_ports(self.info):
            ports = await self._or_died(
                proc, _ports.wait_for_written_ports, self.connection_file, options.port_timeout
            )
            if ports is None:  # the kernel did not write its ports: bind-0 unsupported
                await self._stop(now=True, restart=True)
                self._pick_ports()
                proc = await self._launch()
            else:
                self.info = _with_name(read_connection_file(self.connection_file), self.spec.name)
        await self._or_died(proc, self._connect)
        self.state = "ready"
        self._ready.set()

    def _binds_port0(self) -> bool:
        if self.options.bind_port0 is not None:
            return self.options.bind_port0
        meta = self.spec.metadata.get("trikernel", {})
        if isinstance(meta, Mapping) and "bind_port0" in meta:
            return bool(meta["bind_port0"])
        return self.options.transport == "tcp" and any(
            os.path.basename(arg) in _BINDS_PORT0 or arg in _BINDS_PORT0 for arg in self.spec.argv
        )

    def _pick_ports(self) -> None:
        ip = self.info.ip
        if self.options.transport == "ipc":
            ports = _ports.ipc_ports(ip)
        else:
            ports = _ports.reserve_ports(ip)
        self._reserved += ports
        self.info = self.info.with_ports(**dict(zip(_ports.PORT_FIELDS, ports, strict=True)))

    def _forget_ports(self) -> None:
        _ports.release_ports(self._reserved)
        self._reserved = []
        self.info = self.info.with_ports(**dict.fromkeys(_ports.PORT_FIELDS, 0))

    async def _launch(self) -> _Process:
        save_connection_file(self.connection_file, self.info)
        options = self.options
        cmd = self.spec.command(self.connection_file, extra_args=options.extra_args)
        process = await launch_kernel(
            cmd,
            stderr=subprocess.PIPE,
            env=self.spec.environment(options.env),
            cwd=options.cwd,
            **options.launch_kwargs,
        )
        proc = _Process(process, trio.current_time())
        self._proc = proc
        self._nursery.start_soon(self._drain_stderr, proc)
        self._nursery.start_soon(self._watch, proc)
        return proc

    async def _connect(self) -> None:
        if self._client is None:
            client = KernelClient(self.info)
            client._nursery = self._nursery
            self._client = client
        await self._client.reconnect(self.info, connect_timeout=self.options.ready_timeout)
        await self._client.wait_for_ready(timeout=self.options.ready_timeout)

    async def _or_died(self, proc: _Process, fn: Any, *args: Any) -> Any:
        """``await fn(*args)``, unless the kernel exits first: then KernelStartError
        with its exit code and stderr tail, at once."""
        result: list[Any] = []
        error: Exception | None = None

        async def cancel_on_exit(cancel: trio.CancelScope) -> None:
            await proc.exited.wait()
            cancel.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_on_exit, nursery.cancel_scope)
            try:
                result.append(await fn(*args))
            except Exception as exc:  # reported below, with the kernel's stderr
                error = exc
            nursery.cancel_scope.cancel()
        if proc.exited.is_set():
            with trio.move_on_after(0.5):  # its last words may still be in the pipe
                await proc.stderr_done.wait()
            raise self._start_failed(proc, f"exited with {_describe(proc.returncode)}")
        if error is not None:
            raise self._start_failed(proc, f"was not ready ({error!r})") from error
        return result[0]

    def _start_failed(self, proc: _Process, what: str) -> KernelStartError:
        argv0 = self.spec.argv[0] if self.spec.argv else "?"
        tail = proc.tail()
        text = f"kernel {self.spec.name!r} ({argv0}) {what} while starting"
        if tail:
            text += f"; its stderr ends with:\n{tail}"
        return KernelStartError(text, returncode=proc.returncode, stderr=tail)

    # ---- per-process tasks ----------------------------------------------

    async def _watch(self, proc: _Process) -> None:
        try:
            await proc.process.wait()
        finally:
            proc.exited.set()
        if not proc.expected:
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                self._deaths_send.send_nowait(proc)

    async def _drain_stderr(self, proc: _Process) -> None:
        stream = proc.process.stderr
        assert stream is not None
        try:
            async with stream:
                while data := await stream.receive_some(1 << 14):
                    proc.stderr += data
                    del proc.stderr[:-STDERR_TAIL]
                    if not self.options.quiet:
                        sys.stderr.write(data.decode("utf-8", "replace"))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            proc.stderr_done.set()

    # ---- the restarter (one task, never re-entered) ---------------------

    async def _restarter(self) -> None:
        async for proc in self._deaths:
            async with self._lock:
                if proc is not self._proc or self.state in ("shutdown", "dead", "failed"):
                    continue
                await self._after_death(proc)

    async def _after_death(self, proc: _Process) -> None:
        if trio.current_time() - proc.started_at >= self.options.stable_start_time:
            self._restarts = 0
            self._stable = True
        while True:
            self._restarts += 1
            if not self.options.autorestart or self._restarts > self.options.restart_limit:
                await self._stop(now=True, restart=False)
                self._announce("dead")
                return
            self._announce("restarting")
            await self._stop(now=True, restart=True)
            if not self._stable:
                self._forget_ports()
            try:
                await self._start()
                return
            except (KernelStartError, OSError):
                continue  # a death (or no launch) while starting counts as a restart

    def _unready(self) -> None:
        # Waiters on a set event have woken already; new ones wait for the next start.
        if self._ready.is_set():
            self._ready = trio.Event()

    def _announce(self, state: str) -> None:
        self.state = state
        if state == "dead":
            self._ready.set()
        else:
            self._unready()
        if self._client is not None:
            header = new_header("status", self._client.session)
            status = Message(header, {}, {}, {"execution_state": state})
            self._client.deliver_iopub(status)

    def _check_running(self) -> None:
        if self.state in ("shutdown", "dead"):
            raise KernelDied(f"kernel {self.kernel_id} is {self.state}")

    # ---- stopping -------------------------------------------------------

    async def _stop(self, *, now: bool, restart: bool) -> None:
        """Stop the current process within the budget; the group is killed at the end."""
        proc = self._proc
        if proc is None:
            return
        proc.expected = True
        budget = self.options.shutdown_wait_time
        with trio.CancelScope(shield=True):
            if not now and proc.returncode is None:
                with trio.move_on_after(budget / 2):
                    await self._polite_shutdown(proc, restart)
            if proc.returncode is None:
                _killpg(proc.process, signals.SIGTERM)
                with trio.move_on_after(0 if now else budget / 2):
                    await proc.exited.wait()
            _killpg(proc.process, signals.SIGKILL)  # the kernel, or children it left
            with trio.move_on_after(self.options.kill_timeout):
                await proc.exited.wait()
            if self._client is not None:
                self._client.disconnect()

    async def _polite_shutdown(self, proc: _Process, restart: bool) -> None:
        client = self._client
        if client is not None and client._channels is not None:
            with contextlib.suppress(
                trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError, KernelDied
            ):
                if client.execution_state == "busy":
                    await self._interrupt_quietly(client)
                await client.shutdown(restart=restart, timeout=math.inf)
        await proc.exited.wait()

    async def _interrupt_quietly(self, client: KernelClient) -> None:
        if self.spec.interrupt_mode == "message":
            with trio.move_on_after(1):
                await client.interrupt(timeout=1)
        else:
            self.signal(signals.SIGINT)


def _killpg(process: trio.Process, signum: int) -> None:
    """Signal the kernel's process group (its pid: it leads its own session); it may
    already be gone, the kernel's children with it."""
    if sys.platform == "win32":  # pragma: no cover
        with contextlib.suppress(OSError):
            process.send_signal(signum)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


def _describe(returncode: int | None) -> str:
    if returncode is None:
        return "no exit code"
    if returncode < 0:
        try:
            return f"signal {signals.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def _all_ports(info: ConnectionInfo) -> bool:
    return all(info.port(channel) for channel in ("shell", "iopub", "stdin", "control", "hb"))


def _with_name(info: ConnectionInfo, name: str) -> ConnectionInfo:
    import dataclasses

    return dataclasses.replace(info, kernel_name=name)


def _runtime_dir() -> str:
    from jupyter_core.paths import jupyter_runtime_dir

    path = jupyter_runtime_dir()
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


async def run_kernel_manager(
    kernel_name: str = "python3",
    *,
    task_status: trio.TaskStatus[KernelManager] = trio.TASK_STATUS_IGNORED,
    **options: Any,
) -> None:
    """Start the kernel; report the ready manager through ``task_status``; run until
    ``km.shutdown()`` or cancellation (then shut down, shielded and bounded).

    Raises:
        NoSuchKernel, KernelSpecError: from the kernelspec lookup.
        KernelStartError: the kernel exited or was not ready while starting.
        KernelLaunchError: its command could not be started.
    """
    opts = ManagerOptions(**options)
    spec = opts.kernel_spec or get_kernel_spec(kernel_name)
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        km = KernelManager(spec, opts, nursery)
        try:
            nursery.start_soon(km._restarter)
            async with km._lock:
                try:
                    await km._start()
                except Exception as exc:  # raised below, outside the nursery's group
                    km.state = "failed"
                    km._start_error = failure = exc
                    km._ready.set()
            if failure is None:
                if km.state != "ready":  # shut down while starting
                    raise KernelDied(f"kernel {km.kernel_id} was shut down while starting")
                task_status.started(km)
                await km._finished.wait()
        finally:
            await km.shutdown()
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


@asynccontextmanager
async def open_kernel_manager(
    kernel_name: str = "python3", **options: Any
) -> AsyncIterator[KernelManager]:
    """``async with open_kernel_manager("python3") as km:`` a started, ready kernel,
    shut down when the block exits. Options: the fields of :class:`ManagerOptions`."""
    # Errors (of the start, or of the caller's block) are raised after the nursery has
    # closed, so they arrive as themselves rather than inside an ExceptionGroup.
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            km: KernelManager = await nursery.start(
                lambda task_status: run_kernel_manager(
                    kernel_name, task_status=task_status, **options
                )
            )
        except Exception as exc:
            failure = exc
        else:
            try:
                yield km
            except Exception as exc:
                failure = exc
            finally:
                await km.shutdown()
    if failure is not None:
        raise failure
