"""examples/embedded_app.py as a real process, attached with jupyter_client.

The app runs a counter task and a TCP echo server; the kernel embedded in it runs
cells on the app's loop. jupyter_client's BlockingKernelClient is driven from worker
threads (trio.to_thread) with a timeout on every call.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from .attach import Attached, in_thread, stream_text, wait_for_file

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "examples" / "embedded_app.py"


async def test_attach_to_running_app(tmp_path: Path) -> None:
    connection_file = tmp_path / "app.json"
    out_path = tmp_path / "app.stdout"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(out_path, "wb") as out, open(tmp_path / "app.stderr", "wb") as err:
        process = await trio.lowlevel.open_process(
            [sys.executable, str(APP), "--connection-file", str(connection_file)],
            stdout=out,
            stderr=err,
            env=env,
            cwd=str(tmp_path),
        )
    client: Attached | None = None
    try:
        await wait_for_file(connection_file, process)
        assert connection_file.stat().st_mode & 0o777 == 0o600
        client = Attached(connection_file)
        await client.start()

        # Read and change the app's live state.
        assert int(await client.value("state['ticks']")) > 0
        await client.run("state['step'] = 1000")
        assert int(await client.value("await trio.sleep(0.2); state['ticks']")) >= 1000
        await client.run("state['step'] = 1")

        # An awaiting cell leaves the app's loop running: its counter keeps ticking.
        ticks = int(
            await client.value("_t0 = state['ticks']; await trio.sleep(0.1); state['ticks'] - _t0")
        )
        print(f"app ticks during a 0.1 s cell: {ticks}")
        assert ticks >= 1

        # Interrupt an awaiting cell (interrupt_request on control); the app serves on.
        echo_port = int(await client.value("state['echo_port']"))
        kc = client.kc
        msg_id = kc.execute("await trio.sleep(60)", allow_stdin=False)
        await trio.sleep(0.3)
        async with await trio.open_tcp_stream("127.0.0.1", echo_port) as stream:
            await stream.send_all(b"still serving")  # the app is responsive mid-cell
            with trio.fail_after(5):
                assert await stream.receive_some() == b"still serving"
        sent = time.perf_counter()
        kc.control_channel.send(kc.session.msg("interrupt_request", {}))

        def reply_to(msg_id: str) -> dict[str, Any]:
            while True:
                msg = kc.get_shell_msg(timeout=10)
                if msg["parent_header"].get("msg_id") == msg_id:
                    return msg  # type: ignore[no-any-return]

        reply = await in_thread(lambda: reply_to(msg_id))
        latency = time.perf_counter() - sent
        print(f"interrupt latency (interrupt_request to execute_reply): {latency * 1000:.1f} ms")
        assert reply["content"]["status"] == "error"
        assert reply["content"]["ename"] == "KeyboardInterrupt"
        assert latency < 2
        assert process.poll() is None
        before = int(await client.value("state['ticks']"))
        await trio.sleep(0.2)
        assert int(await client.value("state['ticks']")) > before

        # A cell that raises does not take the app down.
        reply_content, outputs = await client.run("raise ValueError('boom')")
        assert reply_content["status"] == "error" and reply_content["ename"] == "ValueError"
        assert [m["content"]["ename"] for m in outputs if m["msg_type"] == "error"] == [
            "ValueError"
        ]
        assert process.poll() is None
        assert int(await client.value("1 + 1")) == 2

        # print in a cell reaches the frontend as a stream, not the app's stdout.
        reply_content, outputs = await client.run("print('from-the-cell-5f3a')")
        assert reply_content["status"] == "ok"
        assert stream_text(outputs) == "from-the-cell-5f3a\n"

        client.stop()
        client = None

        # SIGINT: the app exits cleanly, removes the connection file, leaves no process.
        process.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            await process.wait()
        assert process.returncode == 0, (tmp_path / "app.stderr").read_text()
        assert not connection_file.exists()
        with pytest.raises(ProcessLookupError):
            os.kill(process.pid, 0)
        stdout = out_path.read_text()
        assert "app ready" in stdout  # the app's own prints still go to its stdout
        assert "from-the-cell-5f3a" not in stdout
    finally:
        if client is not None:
            client.stop()
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()


async def test_sigterm_stops_app_and_removes_file(tmp_path: Path) -> None:
    connection_file = tmp_path / "app.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, str(APP), "--connection-file", str(connection_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        await wait_for_file(connection_file, process)
        process.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            await process.wait()
        assert process.returncode == 0
        assert not connection_file.exists()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
