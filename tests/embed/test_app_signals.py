"""An app that leaves SIGINT to trio's default handling (KeyboardInterrupt).

Ctrl-C while a synchronous cell blocks the loop breaks that cell (trio raises
KeyboardInterrupt in the running code, which is the cell) and the app goes on;
Ctrl-C between cells ends the app, and the embedded kernel cleans up on the way out.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import trio

from trikernel.client import open_client
from trikernel.connection import read_connection_file

ROOT = Path(__file__).resolve().parents[2]

APP = """
import sys, trio, trikernel

async def main():
    async with trikernel.open_kernel(connection_file=sys.argv[1]):
        await trio.sleep_forever()

trio.run(main)
"""


async def test_ctrl_c_breaks_a_sync_cell_then_ends_the_app(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", APP, str(path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        with trio.fail_after(15):
            while not path.exists():
                assert process.poll() is None, "the app exited"
                await trio.sleep(0.05)
            async with open_client(read_connection_file(path)) as client:
                await client.wait_for_ready(10)
                request = await client.submit("import time\ntime.sleep(30)", stop_on_error=False)
                await trio.sleep(0.3)
                process.send_signal(signal.SIGINT)
                reply = await client.reply_to(request.msg_id)
                assert reply.content["ename"] == "KeyboardInterrupt"
                result = await client.execute("6 * 7")
                assert result.of_type("execute_result")[0].content["data"]["text/plain"] == "42"
            assert process.poll() is None
            # Let the kernel finish closing the client's connections first: a
            # KeyboardInterrupt raised inside that (unprotected) teardown code can be
            # replaced by the Cancelled of the closing peer and lost (an async cleanup
            # checkpoint in a cancelled scope; see trikernel/zmtp/sockets.py write_loop).
            await trio.sleep(0.3)
            process.send_signal(signal.SIGINT)
            await process.wait()
        assert process.returncode != 0  # KeyboardInterrupt escaped trio.run, as the app chose
        assert not path.exists()
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
