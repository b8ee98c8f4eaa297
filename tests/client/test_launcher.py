"""launch_kernel: jupyter_client's rules (own session, stdin closed, JPY_PARENT_PID,
``~`` expanded) and a clear error for a command that cannot start."""

import os
import subprocess
import sys

import pytest
import trio

from trikernel.client import KernelLaunchError, launch_kernel

REPORT = (
    "import os, sys; print(os.getsid(0) == os.getpid(), os.environ.get('JPY_PARENT_PID'),"
    " repr(sys.stdin.read()), sys.argv[1])"
)


async def _run(**kwargs: object) -> list[str]:
    with trio.fail_after(10):
        proc = await launch_kernel(
            [sys.executable, "-c", REPORT, "~/x"], stdout=subprocess.PIPE, **kwargs
        )
        assert proc.stdout is not None
        out = b""
        while chunk := await proc.stdout.receive_some():
            out += chunk
        assert await proc.wait() == 0
    return out.decode().split()


async def test_own_session_parent_pid_stdin_closed_tilde_expanded() -> None:
    leader, parent, stdin, arg = await _run()
    assert leader == "True"
    assert parent == str(os.getpid())
    assert stdin == "''"
    assert arg == os.path.expanduser("~/x")


async def test_independent_has_no_parent_pid() -> None:
    env = {k: v for k, v in os.environ.items() if k != "JPY_PARENT_PID"}
    assert (await _run(independent=True, env=env))[1] == "None"


async def test_a_missing_command_names_argv0_and_path() -> None:
    with pytest.raises(KernelLaunchError) as info:
        await launch_kernel(["/nonexistent/kernel"], env={"PATH": "/somewhere"})
    assert "/nonexistent/kernel" in str(info.value)
    assert "/somewhere" in str(info.value)
