"""open_kernel(evaluator="subprocess"): an isolated evaluator process behind an
embedded kernel. Cells do not share the app's objects, but a synchronous loop in a
cell no longer blocks the app and can be interrupted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

import trikernel.embed as embed
from trikernel.client import open_client


async def test_subprocess_evaluator_is_isolated_and_stopped(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    ticks = 0

    async def app_counter() -> None:
        nonlocal ticks
        while True:
            await trio.sleep(0.01)
            ticks += 1

    with trio.fail_after(30):
        async with trio.open_nursery() as app:
            app.start_soon(app_counter)
            async with embed.open_kernel(connection_file=path, evaluator="subprocess") as k:
                assert k.namespace is None
                async with open_client(k.info) as c:
                    await c.wait_for_ready(20)
                    r = await c.execute("import os; os.getpid()")
                    pid = int(r.of_type("execute_result")[0].content["data"]["text/plain"])
                    assert pid != os.getpid()
                    # A synchronous busy loop: the app's loop keeps running, and
                    # interrupt stops the cell.
                    request = await c.submit("while True: pass", stop_on_error=False)
                    before = ticks
                    await trio.sleep(0.3)
                    assert ticks - before >= 10
                    await c.interrupt()
                    reply = await c.reply_to(request.msg_id, timeout=10)
                    assert reply.content["ename"] == "KeyboardInterrupt"
            app.cancel_scope.cancel()
    assert not path.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_namespace_needs_the_inprocess_evaluator() -> None:
    with pytest.raises(ValueError, match="namespace"):
        async with embed.open_kernel(namespace={}, evaluator="subprocess"):
            pass  # pragma: no cover
