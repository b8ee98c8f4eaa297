"""Starting an evaluator process, with the standard library only (no trio).

``python -m trikernel`` calls ``spawn_evaluator`` before it imports trio, so the
evaluator's own start-up (trio and IPython imports, ~350 ms) overlaps the
kernel's instead of following it; the bridge adopts that process for its first
evaluator and spawns later ones (after a crash or a restart) the same way.

The evaluator gets three private pipes (frames in, frames out, lifeline) by file
descriptor number, and its fd 1/2 are pipes the bridge reads (C-level output).
It runs in its own session, so that only the kernel signals it.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import subprocess
from dataclasses import dataclass

__all__ = ["Spawned", "spawn_evaluator", "CONNECTION_FILE_ENV"]

#: the kernel's connection file, for the evaluator's %connect_info (set by launch.py)
CONNECTION_FILE_ENV = "TRIKERNEL_CONNECTION_FILE"


@dataclass
class Spawned:
    """A started evaluator and our ends of its pipes."""

    popen: subprocess.Popen[bytes]
    to_child: int  # frames to the evaluator (write end)
    from_child: int  # frames from the evaluator (read end)
    lifeline: int  # write end; its closing ends the evaluator's process group
    token: str  # end-of-cell marker token (see evaluator.protocol.sync_marker)


def spawn_evaluator(
    python: str,
    *,
    execution_count: int = 1,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
) -> Spawned:
    """Start ``python -m trikernel.evaluator`` (OSError if it cannot be started)."""
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()
    life_r, life_w = os.pipe()
    _widen_pipe(from_w)
    token = secrets.token_hex(8)
    argv = [
        python,
        "-m",
        "trikernel.evaluator",
        f"--in-fd={to_r}",
        f"--out-fd={from_w}",
        f"--lifeline-fd={life_r}",
        f"--sync-token={token}",
        f"--execution-count={execution_count}",
        f"--parent-pid={os.getpid()}",
    ]
    try:
        popen = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(to_r, from_w, life_r),
            start_new_session=True,
            env=env,
            cwd=cwd,
        )
    except BaseException:
        for fd in (to_w, from_r, life_w):
            os.close(fd)
        raise
    else:
        kill_group_on_eof(life_r, popen.pid)
    finally:
        for fd in (to_r, from_w, life_r):
            os.close(fd)
    return Spawned(popen, to_w, from_r, life_w, token)


def kill_group_on_eof(read_fd: int, pgid: int) -> None:
    """Have the OS end the evaluator's process group when the lifeline's write end
    (held by us) closes, however we end: Linux sends SIGIO to the owner of a pipe's
    O_ASYNC read end when its last writer goes, and SIGIO's default action ends a
    process without its help. Unlike the evaluator's lifeline thread, this works
    while a C call holds the GIL, and it reaches the processes a cell started. The
    owner and O_ASYNC belong to the open file description, shared with the child.
    Best effort: where it fails, the lifeline thread remains."""
    try:
        fcntl.fcntl(read_fd, fcntl.F_SETOWN, -pgid)
        fcntl.fcntl(read_fd, fcntl.F_SETFL, fcntl.fcntl(read_fd, fcntl.F_GETFL) | os.O_ASYNC)
    except (OSError, AttributeError):
        pass


# Outputs cross the frame pipe: 256 KiB takes a big display in 4 times fewer wake-ups
# of both processes than the default 64 KiB, and keeps well inside the per-user quota
# of pipe pages (16384 by default: pipes over it shrink, the user's other programs' too).
FRAME_PIPE_SIZE = 1 << 18


def _widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, FRAME_PIPE_SIZE)
    except (AttributeError, OSError):  # not Linux, or over the user's pipe quota
        pass
