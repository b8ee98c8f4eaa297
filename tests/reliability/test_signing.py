"""Signing and exposure: an empty key is refused unless --allow-unsigned (then
unsigned clients work); the kernel binds only the address in the connection file;
a client with the wrong key gets nothing. (0600 connection files: test_no_orphans.py.)
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from support import TIMEOUT
from support.kernel_process import KernelProcess, connected
from support.procs import wait_until

from .helpers import CHANNELS, assert_serves, listening_addresses


def test_empty_key_is_refused(tmp_path: Path) -> None:
    kernel = KernelProcess(tmp_path, key=b"")
    result = subprocess.run(
        [sys.executable, "-m", "trikernel", "-f", kernel.connection_file],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "empty key" in result.stderr and "--allow-unsigned" in result.stderr
    for channel in CHANNELS:  # nothing was bound
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", kernel.port(channel)), timeout=5).close()


def test_empty_key_with_allow_unsigned(tmp_path: Path) -> None:
    with KernelProcess(
        tmp_path, key=b"", args=("--allow-unsigned", "--interrupt-grace", "1")
    ) as kernel:
        with connected(kernel) as kc:  # jupyter_client with key b"": unsigned messages
            assert kc.session.key == b""
            assert_serves(kc)
        assert any("WITHOUT message signing" in line for line in kernel.log_since(0))


def test_wrong_key_gets_no_answer(tmp_path: Path) -> None:
    with KernelProcess(tmp_path) as kernel, connected(kernel) as good:
        assert_serves(good)
        offset = kernel.log_size()
        bad = BlockingKernelClient(connection_file=kernel.connection_file)
        bad.load_connection_file()
        bad.session.key = b"guessed"
        bad.start_channels()
        try:
            bad.execute("import os; os.system('touch pwned')")
            with pytest.raises(queue.Empty):
                bad.get_shell_msg(timeout=1.0)
            kernel.wait_log("Invalid Signature", offset)
        finally:
            bad.stop_channels()
        assert not (Path.cwd() / "pwned").exists()
        assert_serves(good)


def refused(ip: str, port: int) -> bool:
    try:
        socket.create_connection((ip, port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.parametrize("ip", ["127.0.0.1", "127.0.0.2"])
def test_binds_only_the_given_address(tmp_path: Path, ip: str) -> None:
    other = "127.0.0.2" if ip == "127.0.0.1" else "127.0.0.1"
    hex_ip = socket.inet_aton(ip)[::-1].hex().upper()  # /proc/net/tcp byte order
    with KernelProcess(tmp_path, ip=ip) as kernel:
        wait_until(lambda: listening_addresses(kernel.port("hb")), TIMEOUT, "the kernel to listen")
        with connected(kernel) as kc:
            assert_serves(kc)
        for channel in CHANNELS:
            port = kernel.port(channel)
            assert listening_addresses(port) == {hex_ip}, channel  # no 0.0.0.0, no ::
            assert refused(other, port), f"{channel} port reachable via {other}"
            assert not refused(ip, port)


def test_all_interfaces_only_when_asked(tmp_path: Path) -> None:
    # "0.0.0.0" in the file means every interface (Jupyter's --ip=0.0.0.0): reachable
    # on any local address, which is why the key matters.
    with KernelProcess(tmp_path, ip="0.0.0.0") as kernel:
        wait_until(lambda: listening_addresses(kernel.port("hb")), TIMEOUT, "the kernel to listen")
        assert listening_addresses(kernel.port("shell")) == {"00000000"}
        assert not refused("127.0.0.2", kernel.port("shell"))
