"""trikernel.tunnel: SSH tunnels through the ssh binary, tested with a fake ``ssh``.

Rules: no sshd. Each test writes ``ssh`` into tmp_path: a small Python program that
parses ``-L 127.0.0.1:LOCAL:RIP:RPORT``, listens on each LOCAL (exiting 255 with ssh's
message if one is taken, as ``ExitOnForwardFailure`` does) and forwards every connection
to RIP:RPORT on this machine. It logs its pid and argv to a file, so tests check what
it was asked and that it is gone (killed and reaped) when the block ends. Hosts
``fail.example`` (exits at once, like an unknown host) and ``hang.example`` (never
listens) drive the error paths. Real kernels (trikernel, and ipykernel started by
jupyter_client) are driven through the tunnel by jupyter_client's BlockingKernelClient,
in a worker thread. Every wait has a timeout; localhost only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import textwrap

import pytest
import trio
from jupyter_client.blocking import BlockingKernelClient
from support import TIMEOUT
from support.client import run
from support.kernel_process import KernelProcess, kernel_manager

from trikernel import tunnel
from trikernel.connection import (
    ConnectionInfo,
    new_connection_info,
    read_connection_file,
    save_connection_file,
)
from trikernel.errors import SSHTunnelError
from trikernel.tunnel import open_ssh_tunnel, ssh_command, tunnel_to_kernel

FAKE_SSH = textwrap.dedent(
    """\
    import asyncio, json, os, sys

    args, forwards, i = sys.argv[1:], [], 0
    while i < len(args):
        a = args[i]
        if a in ("-o", "-i", "-p"):
            i += 2
            continue
        if a == "-L":
            bind, lport, rip, rport = args[i + 1].rsplit(":", 3)
            forwards.append((bind, int(lport), rip, int(rport)))
            i += 2
            continue
        i += 1
    host = args[-1]
    with open(os.environ["FAKE_SSH_LOG"], "a") as f:
        f.write(json.dumps({"pid": os.getpid(), "argv": sys.argv[1:]}) + "\\n")
    if host.endswith("fail.example"):
        sys.stderr.write(f"ssh: Could not resolve hostname {host}: Name or service not known\\n")
        sys.exit(255)

    async def pipe(reader, writer):
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def handler(rip, rport):
        async def handle(reader, writer):
            try:
                r2, w2 = await asyncio.open_connection(rip, rport)
            except OSError:
                writer.close()
                return
            await asyncio.gather(pipe(reader, w2), pipe(r2, writer))
        return handle

    async def main():
        if host.endswith("hang.example"):
            await asyncio.sleep(3600)
        servers = []
        for bind, lport, rip, rport in forwards:
            try:
                servers.append(await asyncio.start_server(handler(rip, rport), bind, lport))
            except OSError:
                sys.stderr.write(f"bind [{bind}]:{lport}: Address already in use\\n"
                                 f"Error: Could not request local forwarding.\\n")
                sys.exit(255)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


@pytest.fixture
def fake_ssh(tmp_path, monkeypatch):
    path = tmp_path / "bin" / "ssh"
    path.parent.mkdir()
    path.write_text(f"#!{sys.executable}\n{FAKE_SSH}")
    path.chmod(0o755)
    log = tmp_path / "ssh.log"
    log.write_text("")
    monkeypatch.setenv("FAKE_SSH_LOG", str(log))
    monkeypatch.setenv("PATH", f"{path.parent}{os.pathsep}{os.environ['PATH']}")
    return path


def ssh_runs(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "ssh.log").read_text().splitlines()]


def reaped(pid: int) -> bool:
    # Killed and waited for: not even a zombie is left.
    return not os.path.exists(f"/proc/{pid}")


def execute_through(info: ConnectionInfo, path) -> str:
    """Run a cell with jupyter_client over ``info``; its text/plain result."""
    save_connection_file(path, info)
    kc = BlockingKernelClient(connection_file=str(path))
    kc.load_connection_file()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=TIMEOUT)
        reply, outputs = run(kc, "6 * 7")
        assert reply["content"]["status"] == "ok"
        results = [m for m in outputs if m["msg_type"] == "execute_result"]
        return str(results[0]["content"]["data"]["text/plain"])
    finally:
        kc.stop_channels()


REMOTE = new_connection_info(key="k").with_ports(
    shell_port=1001, iopub_port=1002, stdin_port=1003, control_port=1004, hb_port=1005
)


def test_ssh_command_shape():
    fwd = {5001: ("10.0.0.2", 1001), 5002: ("10.0.0.2", 1002)}
    cmd = ssh_command(fwd, "me@host:2222", keyfile="~/k", ssh="/bin/myssh")
    assert cmd[:2] == ["/bin/myssh", "-N"]
    assert "ExitOnForwardFailure=yes" in cmd and "BatchMode=yes" in cmd
    assert cmd[cmd.index("-i") + 1] == os.path.expanduser("~/k")
    assert cmd[cmd.index("-p") + 1] == "2222"
    assert [cmd[i + 1] for i, a in enumerate(cmd) if a == "-L"] == [
        "127.0.0.1:5001:10.0.0.2:1001",
        "127.0.0.1:5002:10.0.0.2:1002",
    ]
    assert cmd[-1] == "me@host"


@pytest.mark.parametrize(
    ("server", "host", "port"),
    [("h", "h", None), ("u@h:22", "u@h", "22"), ("alias", "alias", None), ("h:x", "h:x", None)],
)
def test_server_split(server, host, port):
    assert tunnel._split_server(server) == (host, port)


@pytest.mark.parametrize(
    ("ip", "remote"), [("*", "127.0.0.1"), ("0.0.0.0", "127.0.0.1"), ("10.1.2.3", "10.1.2.3")]
)
def test_remote_ip(ip, remote):
    forwards, _ = tunnel._plan(dataclasses.replace(REMOTE, ip=ip))
    assert {rip for rip, _ in forwards.values()} == {remote}


def test_plan_maps_every_channel_to_a_distinct_local_port():
    forwards, local = tunnel._plan(REMOTE)
    assert (local.ip, local.key, local.transport) == ("127.0.0.1", "k", "tcp")
    assert sorted(rport for _, rport in forwards.values()) == [1001, 1002, 1003, 1004, 1005]
    for ch in ("shell", "iopub", "stdin", "control", "hb"):
        assert forwards[local.port(ch)] == ("127.0.0.1", REMOTE.port(ch))
    assert len(forwards) == 5


async def test_ipc_is_refused():
    with pytest.raises(ValueError, match="tcp"):
        async with open_ssh_tunnel(new_connection_info(transport="ipc", ip="/tmp/k"), "h"):
            pass


async def test_trikernel_through_the_tunnel(tmp_path, fake_ssh):
    with KernelProcess(tmp_path / "k") as kernel, trio.fail_after(3 * TIMEOUT):
        remote = read_connection_file(kernel.connection_file)
        async with open_ssh_tunnel(remote, "me@fake.example:2222", keyfile="/k") as local:
            assert local.ip == "127.0.0.1" and local.key == remote.key
            assert local.shell_port != remote.shell_port
            text = await trio.to_thread.run_sync(execute_through, local, tmp_path / "l.json")
            assert text == "42"
            (run_,) = ssh_runs(tmp_path)
        argv = run_["argv"]
        assert argv[0] == "-N" and argv[-1] == "me@fake.example"
        assert argv[argv.index("-p") + 1] == "2222" and argv[argv.index("-i") + 1] == "/k"
        forwards = {a.split(":")[1]: a for a in argv if a.startswith("127.0.0.1:")}
        assert (
            forwards[str(local.hb_port)] == f"127.0.0.1:{local.hb_port}:127.0.0.1:{remote.hb_port}"
        )
        assert reaped(run_["pid"])


async def test_ipykernel_through_the_tunnel(tmp_path, fake_ssh):
    with kernel_manager("python3") as km, trio.fail_after(3 * TIMEOUT):
        remote = read_connection_file(km.connection_file)
        async with open_ssh_tunnel(remote, "fake.example", ssh=str(fake_ssh)) as local:
            text = await trio.to_thread.run_sync(execute_through, local, tmp_path / "l.json")
        assert text == "42"
        assert reaped(ssh_runs(tmp_path)[0]["pid"])


async def test_ssh_exiting_first_reports_its_stderr(tmp_path, fake_ssh):
    with trio.fail_after(TIMEOUT), pytest.raises(SSHTunnelError) as exc:
        async with open_ssh_tunnel(REMOTE, "me@fail.example"):
            pytest.fail("the block must not run")
    assert "exited with status 255" in str(exc.value)
    assert "Could not resolve hostname me@fail.example" in str(exc.value)
    assert exc.value.returncode == 255
    assert reaped(ssh_runs(tmp_path)[0]["pid"])


async def test_taken_local_port_is_reported(tmp_path, fake_ssh, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        monkeypatch.setattr(tunnel, "_pick_local_ports", lambda n: [port] + [0] * (n - 1))
        # Not listening: the port accepts nothing, so only ssh's exit can end the wait.
        with (
            trio.fail_after(TIMEOUT),
            pytest.raises(SSHTunnelError, match="Address already in use"),
        ):
            async with open_ssh_tunnel(REMOTE, "fake.example"):
                pytest.fail("the block must not run")


async def test_forwards_never_up_time_out_and_ssh_is_killed(tmp_path, fake_ssh):
    with (
        trio.fail_after(TIMEOUT),
        pytest.raises(SSHTunnelError, match="not accepting after 0.5 s") as exc,
    ):
        async with open_ssh_tunnel(REMOTE, "hang.example", timeout=0.5):
            pytest.fail("the block must not run")
    assert exc.value.returncode is None
    assert reaped(ssh_runs(tmp_path)[0]["pid"])


async def test_cancel_while_waiting_kills_ssh(tmp_path, fake_ssh):
    with trio.fail_after(TIMEOUT):
        with trio.move_on_after(0.5) as scope:
            async with open_ssh_tunnel(REMOTE, "hang.example"):
                pytest.fail("the block must not run")
    assert scope.cancelled_caught
    assert reaped(ssh_runs(tmp_path)[0]["pid"])


async def test_error_in_block_kills_ssh(tmp_path, fake_ssh):
    with trio.fail_after(TIMEOUT), pytest.raises(KeyError):
        async with open_ssh_tunnel(REMOTE, "fake.example") as local:
            with socket.create_connection(("127.0.0.1", local.shell_port), timeout=5):
                pass
            raise KeyError("boom")
    assert reaped(ssh_runs(tmp_path)[0]["pid"])


def test_tunnel_to_kernel_sync_with_jupyter_client(tmp_path, fake_ssh):
    with KernelProcess(tmp_path / "k") as kernel:
        try:
            ports = tunnel_to_kernel(kernel.connection_file, "fake.example")
            local = dataclasses.replace(
                read_connection_file(kernel.connection_file),
                ip="127.0.0.1",
                **dict(
                    zip(
                        ("shell_port", "iopub_port", "stdin_port", "hb_port", "control_port"),
                        ports,
                        strict=True,
                    )
                ),
            )
            assert execute_through(local, tmp_path / "l.json") == "42"
            (run_,) = ssh_runs(tmp_path)
            assert not reaped(run_["pid"])  # lives on after the call, as jupyter_client's
        finally:
            tunnel._close_sync_tunnels()
        assert reaped(run_["pid"])


def test_tunnel_to_kernel_accepts_a_dict_and_reports_failure(tmp_path, fake_ssh):
    with pytest.raises(SSHTunnelError, match="Could not resolve hostname"):
        tunnel_to_kernel(REMOTE.to_dict(), "fail.example", timeout=TIMEOUT)
    assert reaped(ssh_runs(tmp_path)[0]["pid"])
    assert tunnel._sync_tunnels == []
