"""Start a kernel process with jupyter_client's rules, on trio.

``launch_kernel`` is ``jupyter_client.launcher.launch_kernel`` returning a
``trio.Process``: ``~`` expanded in every argument, stdin a pipe closed at once (a
kernel must never read our terminal), the environment a copy of ours unless given,
and on POSIX always a new session, so the kernel leads its own process group and
``killpg`` reaches every child it starts. ``JPY_PARENT_PID`` (our pid) is set unless
``independent``: kernels watch it and exit when their parent goes.

The process is not reaped here: the caller awaits ``process.wait()`` (the manager's
watcher task does), which on Linux is a pidfd and sees the exit at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import trio

__all__ = ["KernelLaunchError", "launch_kernel"]


class KernelLaunchError(OSError):
    """The kernel command could not be started (not found, not executable, bad cwd)."""


async def launch_kernel(
    cmd: Sequence[str],
    stdin: Any = None,
    stdout: Any = None,
    stderr: Any = None,
    env: Mapping[str, str] | None = None,
    independent: bool = False,
    cwd: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> trio.Process:
    """Start ``cmd`` as a kernel process.

    Args:
        cmd: the argv (``~`` is expanded in each element).
        stdin: ignored unless given; by default a pipe that is closed at once.
        stdout, stderr: as for ``trio.lowlevel.open_process`` (None: inherit ours).
        env: the whole environment (default: a copy of ``os.environ``).
        independent: do not set ``JPY_PARENT_PID`` (the kernel outlives us).
        cwd: the working directory.
        **kw: passed on to ``trio.lowlevel.open_process``.

    Returns:
        The running ``trio.Process`` (the caller reaps it).

    Raises:
        KernelLaunchError: the command could not start; the message names ``argv[0]``
            and the ``PATH`` searched.
    """
    argv = [os.path.expanduser(str(arg)) for arg in cmd]
    if not argv:
        raise ValueError("launch_kernel: empty command")
    environ = dict(os.environ if env is None else env)
    if not independent:
        environ["JPY_PARENT_PID"] = str(os.getpid())
    close_stdin = stdin is None
    options: dict[str, Any] = dict(kw)
    if sys.platform != "win32":
        options.setdefault("start_new_session", True)
    try:
        process = await trio.lowlevel.open_process(
            argv,
            stdin=-1 if close_stdin else stdin,  # subprocess.PIPE
            stdout=stdout,
            stderr=stderr,
            env=environ,
            cwd=cwd,
            **options,
        )
    except OSError as exc:
        path = environ.get("PATH", os.defpath)
        raise KernelLaunchError(
            exc.errno,
            f"cannot start kernel {argv[0]!r} ({exc.strerror or exc}); "
            f"argv={argv!r}, cwd={cwd!r}, PATH={path!r}",
        ) from exc
    if close_stdin and process.stdin is not None:
        await process.stdin.aclose()
    return process
