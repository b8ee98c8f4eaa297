"""Attach jupyter_client to a kernel from a trio test: every blocking call in a
worker thread, with a timeout."""

from __future__ import annotations

import queue
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jupyter_client
import trio


async def in_thread(fn: Callable[[], Any], timeout: float = 15) -> Any:
    with trio.fail_after(timeout):
        return await trio.to_thread.run_sync(fn, abandon_on_cancel=True)


class Attached:
    """A BlockingKernelClient, each blocking call in a worker thread."""

    def __init__(self, connection_file: Path) -> None:
        self.kc = jupyter_client.BlockingKernelClient(connection_file=str(connection_file))
        self.kc.load_connection_file()
        self.last_msg_id = ""  # of the latest ``run``
        self.seen: list[dict[str, Any]] = []  # every iopub message read since start()

    async def start(self) -> None:
        await in_thread(self.kc.start_channels)
        await in_thread(lambda: self.kc.wait_for_ready(timeout=10))
        receive = self.kc.iopub_channel.get_msg

        def recording(*args: Any, **kwargs: Any) -> Any:
            msg = receive(*args, **kwargs)
            self.seen.append(msg)
            return msg

        self.kc.iopub_channel.get_msg = recording  # type: ignore[method-assign]

    async def drain_iopub(self, quiet: float = 0.5) -> None:
        """Read (and record) iopub until it has been quiet for ``quiet`` seconds."""

        def drain() -> None:
            while True:
                try:
                    self.kc.iopub_channel.get_msg(timeout=quiet)
                except queue.Empty:
                    return

        await in_thread(drain, 30)

    async def run(
        self, code: str, timeout: float = 10
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        outputs: list[dict[str, Any]] = []

        def go() -> dict[str, Any]:
            return self.kc.execute_interactive(  # type: ignore[no-any-return]
                code, timeout=timeout, allow_stdin=False, output_hook=outputs.append
            )

        reply = await in_thread(go, timeout + 5)
        self.last_msg_id = reply["parent_header"]["msg_id"]
        return reply["content"], outputs

    async def value(self, code: str) -> str:
        reply, outputs = await self.run(code)
        assert reply["status"] == "ok", reply
        results = [
            m["content"]["data"]["text/plain"] for m in outputs if m["msg_type"] == "execute_result"
        ]
        assert len(results) == 1, outputs
        return str(results[0])

    def send_comm_msg(self, comm_id: str, data: dict[str, Any]) -> None:
        """A frontend comm_msg (as JupyterLab sends a widget's state change)."""
        msg = self.kc.session.msg("comm_msg", {"comm_id": comm_id, "data": data})
        self.kc.shell_channel.send(msg)

    def stop(self) -> None:
        self.kc.stop_channels()


def stream_text(outputs: list[dict[str, Any]], name: str = "stdout") -> str:
    return "".join(
        m["content"]["text"]
        for m in outputs
        if m["msg_type"] == "stream" and m["content"]["name"] == name
    )


async def wait_for_file(path: Path, process: trio.Process, timeout: float = 15) -> None:
    with trio.fail_after(timeout):
        while not path.exists():
            assert process.returncode is None and process.poll() is None, "the app exited"
            await trio.sleep(0.05)
