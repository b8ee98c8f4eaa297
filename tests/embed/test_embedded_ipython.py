"""An embedded kernel (in-process evaluator) is the same IPython kernel as the
subprocess one: a trio app embedding it runs as a real process and
jupyter_client attaches to it (each blocking call in a worker thread, with a
timeout). The app prints on its own all along; none of that reaches the client."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from .attach import Attached, wait_for_file

ROOT = Path(__file__).resolve().parents[2]

APP = """
import sys, trio, trikernel

async def chatter():
    n = 0
    while True:
        n += 1
        print("app-tick", n, flush=True)
        await trio.sleep(0.02)

async def main():
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chatter)
        async with trikernel.open_kernel({"app": "the app"}, sys.argv[1]):
            await trio.sleep_forever()

trio.run(main)
"""


def of(outputs: list[dict[str, Any]], msg_type: str) -> list[dict[str, Any]]:
    return [m["content"] for m in outputs if m["msg_type"] == msg_type]


async def test_the_embedded_kernel_has_the_ipython_core(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", APP, str(path)], stdout=subprocess.PIPE, env=env
    )
    try:
        await wait_for_file(path, process)
        client = Attached(path)
        await client.start()
        # ipywidgets: the slider opens its comm; a frontend update changes its value.
        reply, outputs = await client.run("import ipywidgets\nslider = ipywidgets.IntSlider(3)")
        assert reply["status"] == "ok", reply
        [opened] = [
            c
            for c in of(outputs, "comm_open")
            if c["data"]["state"]["_model_name"] == "IntSliderModel"
        ]
        update = {"method": "update", "state": {"value": 7}, "buffer_paths": []}
        client.send_comm_msg(opened["comm_id"], update)
        assert await client.value("slider.value") == "7"  # shell messages are handled in order

        # matplotlib: a figure arrives as a PNG.
        reply, outputs = await client.run(
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nfig"
        )
        [result] = of(outputs, "execute_result")
        assert result["data"]["image/png"].startswith("iVBORw0KGgo")

        # The Output widget captures what its `with` block prints.
        await client.run("out = ipywidgets.Output()")
        reply, outputs = await client.run("with out:\n    print('captured')")
        assert reply["status"] == "ok", reply
        capturing = [
            c["data"]["state"]
            for c in of(outputs, "comm_msg")
            if "msg_id" in c["data"].get("state", {})
        ]
        assert capturing == [{"msg_id": client.last_msg_id}, {"msg_id": ""}]
        assert [c["text"] for c in of(outputs, "stream")] == ["captured\n"]

        # Magics and help.
        reply, outputs = await client.run("%timeit -n1 -r1 sum(range(10))")
        assert "per loop" in "".join(c["text"] for c in of(outputs, "stream"))
        reply, outputs = await client.run("app?")
        [page] = reply["payload"]
        assert "the app" in page["data"]["text/plain"]

        # asyncio cells run, next to the app's trio loop.
        assert (
            await client.value("import asyncio\nawait asyncio.sleep(0)\n'asyncio ok'")
            == "'asyncio ok'"
        )
        assert await client.value("import trio\nawait trio.sleep(0.05)\napp") == "'the app'"
        await client.drain_iopub()
        client.stop()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            await process.wait()
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.stdout is not None
    with trio.fail_after(5):
        printed = b""
        while chunk := await process.stdout.receive_some():
            printed += chunk
    # The app printed all along, to its own stdout; the client saw none of it.
    assert b"app-tick" in printed
    assert "app-tick" not in repr(client.seen)
