"""The command line: --version, install, running without -f, SIGTERM.

Rules: every process started here is killed and reaped in a finally; every wait
has a timeout.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import trio
from support.kernel_process import trikernel_command

from trikernel import __version__
from trikernel.client import open_client
from trikernel.connection import read_connection_file


def test_version() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "trikernel", "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"trikernel {__version__}"


def test_install_writes_argv_of_this_interpreter(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "trikernel",
        "install",
        "--prefix",
        str(tmp_path),
        "--name",
        "tk-test",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    spec = json.loads((tmp_path / "share/jupyter/kernels/tk-test/kernel.json").read_text())
    assert spec["argv"] == [sys.executable, "-m", "trikernel", "-f", "{connection_file}"]
    assert spec["display_name"] == "Python 3 (trikernel)"
    assert spec["interrupt_mode"] == "message"


async def test_without_a_connection_file_it_writes_one_and_says_how_to_attach(
    tmp_path: Path,
) -> None:
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path)}
    with trikernel_command(stderr=subprocess.PIPE, env=env) as process:
        assert process.stderr is not None
        line = ""
        with trio.fail_after(30):
            while "--existing" not in line:
                line = await trio.to_thread.run_sync(process.stderr.readline)
                assert line, "the kernel exited before saying how to attach"
        match = re.search(r"--existing (\S+)", line)
        assert match is not None
        path = Path(match.group(1))
        assert path.parent == tmp_path
        assert path.stat().st_mode & 0o777 == 0o600
        async with open_client(read_connection_file(path)) as client:
            reply = await client.wait_for_ready(30)
        assert reply.content["status"] == "ok"
        process.send_signal(signal.SIGTERM)  # a clean exit removes the file it wrote
        await trio.to_thread.run_sync(process.wait, 10)
        assert process.returncode == 0
        assert not path.exists()


def test_ports_are_bound_before_trio_is_imported() -> None:
    # launch.py binds the five ports with the standard library, then imports trio
    # and the kernel: a client connecting early waits in the backlog, not refused.
    code = "import sys, trikernel.launch; print('trio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    import socket

    from trikernel.connection import new_connection_info, save_connection_file

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        info = new_connection_info().with_ports(shell_port=port)
        save_connection_file(tmp_path / "k.json", info)
        cmd = [sys.executable, "-m", "trikernel", "-f", str(tmp_path / "k.json")]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot listen" in out.stderr and "Address already in use" in out.stderr
