"""Embedded kernels in this test's own trio loop, driven by trikernel.client.

Every wait is under trio.fail_after; clients close before their kernel.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trikernel.embed as embed
from trikernel.client import KernelClient, open_client
from trikernel.messages import Message


def texts(msgs: list[Message], name: str = "stdout") -> str:
    return "".join(
        m.content["text"] for m in msgs if m.msg_type == "stream" and m.content["name"] == name
    )


def plain(traceback: list[str]) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(traceback))


def result_of(r: Any) -> str:
    assert r.status == "ok", r.reply.content
    [out] = r.of_type("execute_result")
    return str(out.content["data"]["text/plain"])


async def test_two_kernels_at_once_with_separate_namespaces(tmp_path: Path) -> None:
    ns1: dict[str, Any] = {"name": "one"}
    ns2: dict[str, Any] = {"name": "two"}
    f1, f2 = tmp_path / "k1.json", tmp_path / "k2.json"
    async with (
        embed.open_kernel(ns1, f1) as k1,
        embed.open_kernel(namespace=ns2, connection_file=f2) as k2,
    ):
        assert k1.connection_file == f1 and f1.exists() and f2.exists()
        assert f1.stat().st_mode & 0o777 == 0o600
        assert k1.info.shell_port != k2.info.shell_port
        async with open_client(k1.info) as c1, open_client(k2.info) as c2:
            with trio.fail_after(15):
                await c1.wait_for_ready(10)
                await c2.wait_for_ready(10)
                assert result_of(await c1.execute("x = 1; name")) == "'one'"
                assert result_of(await c2.execute("name")) == "'two'"
                assert ns1["x"] == 1 and "x" not in ns2
                r = await c2.execute("x")
                assert r.reply.content["ename"] == "NameError"

                # Both run awaiting cells at the same time; each cell's prints go to
                # its own kernel only.
                code = (
                    "import trio\n"
                    "start = trio.current_time()\n"
                    "for i in range(5):\n"
                    "    print(name, i)\n"
                    "    await trio.sleep(0.05)\n"
                    "end = trio.current_time()\n"
                    "name"
                )
                results: dict[str, Any] = {}

                async def run(c: KernelClient, key: str) -> None:
                    results[key] = await c.execute(code)

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(run, c1, "one")
                    nursery.start_soon(run, c2, "two")
            # The two cells overlapped in time: both ran on this loop at once.
            assert ns1["start"] < ns2["end"] and ns2["start"] < ns1["end"]
            assert texts(results["one"].outputs) == "".join(f"one {i}\n" for i in range(5))
            assert texts(results["two"].outputs) == "".join(f"two {i}\n" for i in range(5))
            assert result_of(results["one"]) == "'one'"
            # Execution counts are per kernel.
            assert results["one"].reply.content["execution_count"] == 2
            assert results["two"].reply.content["execution_count"] == 3
    assert not f1.exists() and not f2.exists()


async def test_background_task_outlives_the_cell(tmp_path: Path) -> None:
    async with embed.open_kernel(connection_file=tmp_path / "k.json") as k:
        async with open_client(k.info) as c:
            with trio.fail_after(15):
                await c.wait_for_ready(10)
                r = await c.execute(
                    "import trio\n"
                    "seen = []\n"
                    "async def ticker():\n"
                    "    for i in range(1000):\n"
                    "        seen.append(i)\n"
                    "        print('tick', i)\n"
                    "        await trio.sleep(0.02)\n"
                    "background.start_soon(ticker)\n"
                )
                assert r.status == "ok"
                await trio.sleep(0.3)  # no cell runs: the task goes on, its output arrives
                between = texts(
                    [
                        m
                        for m in c.iopub_log
                        if m.parent_header.get("msg_id") == r.reply.parent_header["msg_id"]
                    ]
                )
                assert "tick 5\n" in between
                n = len(k.namespace["seen"])  # type: ignore[index]
                # Interrupting a cell cancels the cell, not the background task.
                request = await c.submit("await trio.sleep(30)", stop_on_error=False)
                await trio.sleep(0.1)
                await c.interrupt()
                reply = await c.reply_to(request.msg_id)
                assert reply.content["ename"] == "KeyboardInterrupt"
                await trio.sleep(0.1)
                assert len(k.namespace["seen"]) > n + 3  # type: ignore[index]
                assert result_of(await c.execute("background.tasks")) == "['ticker']"

                # A failing background task shows its error; the app is untouched.
                r = await c.execute(
                    "async def bad():\n"
                    "    await trio.sleep(0.05)\n"
                    "    raise ValueError('bg boom')\n"
                    "background.start_soon(bad)\n"
                    "await trio.sleep(0.2)\n"
                )
                assert r.status == "ok"
                [error] = r.of_type("error")
                assert error.content["ename"] == "ValueError"
                assert "Exception in background task 'bad':" in error.content["traceback"][0]
                assert any("bg boom" in line for line in error.content["traceback"])

                # start() works like nursery.start, errors before started() included.
                r = await c.execute(
                    "async def srv(task_status):\n"
                    "    task_status.started(42)\n"
                    "    await trio.sleep_forever()\n"
                    "await background.start(srv)"
                )
                assert result_of(r) == "42"
                r = await c.execute(
                    "async def early(task_status):\n"
                    "    raise OSError('no port')\n"
                    "await background.start(early)"
                )
                assert r.reply.content["ename"] == "OSError"
    # The kernel closed: its background tasks were cancelled, not leaked.
    assert k.namespace is not None
    assert k.namespace["background"].tasks == []


async def test_app_prints_are_not_captured(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    original = sys.stdout
    async with embed.open_kernel(connection_file=tmp_path / "k.json") as k:
        assert sys.stdout is not original  # the routing proxy is installed
        async with open_client(k.info) as c:
            with trio.fail_after(15):
                await c.wait_for_ready(10)
                print("app-before")
                async with trio.open_nursery() as nursery:

                    async def app_prints() -> None:
                        await trio.sleep(0.1)  # while the cell below awaits
                        print("app-during")
                        print("app-err", file=sys.stderr)

                    nursery.start_soon(app_prints)
                    r = await c.execute(
                        "import sys, trio\n"
                        "print('cell-out')\n"
                        "await trio.sleep(0.3)\n"
                        "print('cell-err', file=sys.stderr)\n"
                    )
                await trio.sleep(0.05)
    assert sys.stdout is original  # restored
    assert texts(r.outputs) == "cell-out\n"
    assert texts(r.outputs, "stderr") == "cell-err\n"
    everything = "".join(str(m.content) for m in c.iopub_log)
    assert "app-" not in everything
    captured = capsys.readouterr()
    assert "app-before\n" in captured.out and "app-during\n" in captured.out
    assert "app-err\n" in captured.err
    assert "cell-" not in captured.out + captured.err


async def test_cells_errors_display_and_stdin(tmp_path: Path) -> None:
    async with embed.open_kernel(connection_file=tmp_path / "k.json") as k:
        async with open_client(k.info) as c:
            with trio.fail_after(15):
                await c.wait_for_ready(10)
                # Tracebacks start at the cell, with its source line.
                r = await c.execute("def f():\n    return 1 / 0\nf()")
                content = r.reply.content
                assert content["ename"] == "ZeroDivisionError"
                tb = plain(content["traceback"])  # IPython's tracebacks, colored as in ipykernel
                assert "inprocess.py" not in tb and "return 1 / 0" in tb
                # Every cell keeps its own source, stored in history or not.
                await c.execute("def h():\n    raise ValueError('from h')")
                await c.execute("'another cell, same count'", store_history=False)
                r = await c.execute("h()")
                assert "raise ValueError('from h')" in plain(r.reply.content["traceback"])
                r = await c.execute("def (")
                assert r.reply.content["ename"] == "SyntaxError"
                # SystemExit and KeyboardInterrupt raised by a cell end the cell, not the app.
                assert (await c.execute("raise SystemExit(3)")).reply.content[
                    "ename"
                ] == "SystemExit"
                r = await c.execute("raise KeyboardInterrupt")
                assert r.reply.content["ename"] == "KeyboardInterrupt"

                # Rich reprs through IPython's formatter; display(); `_`.
                r = await c.execute(
                    "class H:\n    def _repr_html_(self): return '<b>h</b>'\ndisplay(H(), 'x')\nH()"
                )
                shown = r.of_type("display_data")
                assert shown[0].content["data"]["text/html"] == "<b>h</b>"
                assert shown[1].content["data"] == {"text/plain": "'x'"}
                [result] = r.of_type("execute_result")
                assert result.content["data"]["text/html"] == "<b>h</b>"
                assert ".H at 0x" in result_of(await c.execute("_"))

                # input() refuses to block the loop; ainput() asks the frontend.
                r = await c.execute("input('name? ')")
                assert r.reply.content["ename"] == "BlockingInputError"
                assert "await ainput(prompt)" in r.reply.content["evalue"]

                async def answer(prompt: str, password: bool) -> str:
                    return f"answer to {prompt}"

                c.input_handler = answer
                r = await c.execute("v = await ainput('q? '); print(v)")
                assert texts(r.outputs) == "answer to q? \n"
                c.input_handler = None

                # exit disconnects a console and keeps the kernel (and the app) running.
                r = await c.execute("exit()")
                assert r.reply.content["payload"] == [{"source": "ask_exit", "keepkernel": True}]
                r = await c.execute("quit")
                assert r.reply.content["payload"] == [{"source": "ask_exit", "keepkernel": True}]
                assert r.of_type("execute_result") == []

                # user_expressions are evaluated after the cell.
                r = await c.execute("y = 6", user_expressions={"twice": "y * 2"})
                assert r.reply.content["user_expressions"]["twice"]["data"] == {"text/plain": "12"}


async def test_interrupt_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    async with embed.open_kernel(connection_file=path) as k:
        async with open_client(k.info) as c:
            with trio.fail_after(15):
                await c.wait_for_ready(10)
                request = await c.submit("import trio; await trio.sleep(30)", stop_on_error=False)
                await trio.sleep(0.1)
                status = await trio.to_thread.run_sync(embed.main, ["interrupt", str(path)])
                assert status == 0
                reply = await c.reply_to(request.msg_id)
                assert reply.content["ename"] == "KeyboardInterrupt"
    with trio.fail_after(10):  # the kernel and its file are gone
        assert await trio.to_thread.run_sync(embed.main, ["interrupt", str(path)]) == 1


async def test_introspection_requests(tmp_path: Path) -> None:
    ns: dict[str, Any] = {"trio": trio, "long_variable_name": 1}
    async with embed.open_kernel(ns, tmp_path / "k.json") as k:
        async with open_client(k.info) as c:
            with trio.fail_after(15):
                await c.wait_for_ready(10)
                reply = await c.request(
                    "complete_request", {"code": "x = long_v", "cursor_pos": 10}
                )
                assert reply.content["matches"] == ["long_variable_name"]
                assert (reply.content["cursor_start"], reply.content["cursor_end"]) == (4, 10)
                reply = await c.request(
                    "complete_request", {"code": "trio.sleep_f", "cursor_pos": 12}
                )
                # IPython's completer, as in the subprocess kernel: the attribute only.
                assert reply.content["matches"] == ["sleep_forever"]
                assert (reply.content["cursor_start"], reply.content["cursor_end"]) == (5, 12)
                reply = await c.request(
                    "inspect_request", {"code": "trio.sleep(1)", "cursor_pos": 7, "detail_level": 0}
                )
                assert reply.content["found"] is True
                assert "Pause execution" in reply.content["data"]["text/plain"]
                reply = await c.request("is_complete_request", {"code": "for i in x:"})
                assert reply.content == {"status": "incomplete", "indent": "    "}
                reply = await c.request("is_complete_request", {"code": "x = 1"})
                assert reply.content["status"] == "complete"
                await c.execute("a = 1")
                await c.execute("b = 2")
                reply = await c.request(
                    "history_request",
                    {"hist_access_type": "tail", "n": 1, "output": False, "raw": True},
                )
                # IPython's history (in memory), numbered by session as ipykernel's is.
                [[session, line, source]] = reply.content["history"]
                assert session >= 1 and (line, source) == (2, "b = 2")
                reply = await c.request("comm_info_request", {})
                assert reply.content == {"status": "ok", "comms": {}}


async def test_shutdown_request_ends_only_the_kernel(tmp_path: Path, nursery: trio.Nursery) -> None:
    path = tmp_path / "k.json"
    handle: embed.EmbeddedKernel = await nursery.start(embed.serve_kernel, None, path)
    assert path.exists() and handle.namespace is not None
    async with open_client(handle.info) as c:
        with trio.fail_after(15):
            await c.wait_for_ready(10)
            assert (await c.shutdown()).content["status"] == "ok"
            await handle.wait_stopped()
    assert not path.exists()
    await trio.sleep(0.05)  # this test (the "app") carries on


async def test_cancelling_serve_kernel_removes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            handle = await nursery.start(embed.serve_kernel, None, path)
            assert path.exists()
            nursery.cancel_scope.cancel()
    assert not path.exists()
    assert handle.stopped.is_set()


async def test_default_connection_file_in_runtime_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    with trio.fail_after(10):
        async with embed.open_kernel() as k:
            assert k.connection_file.parent == tmp_path / "runtime"
            assert k.connection_file.exists()
            assert k.attach_command == f"jupyter console --existing {k.connection_file}"
    assert not k.connection_file.exists()


async def test_bad_evaluator_argument() -> None:
    with pytest.raises(ValueError, match="evaluator must be"):
        async with embed.open_kernel(evaluator="threads"):
            pass  # pragma: no cover


async def test_display_of_a_matplotlib_figure_is_a_png(tmp_path: Path) -> None:
    async with embed.open_kernel(connection_file=tmp_path / "k.json") as k:
        async with open_client(k.info) as c:
            with trio.fail_after(30):
                await c.wait_for_ready(10)
                r = await c.execute(
                    "import matplotlib\n"
                    "matplotlib.use('Agg')\n"
                    "import matplotlib.pyplot as plt\n"
                    "fig, ax = plt.subplots()\n"
                    "ax.plot([1, 2])\n"
                    "display(fig)\n"
                    "plt.close(fig)"
                )
    [shown] = r.of_type("display_data")
    assert shown.content["data"]["image/png"].startswith("iVBORw0KGgo")  # base64 PNG


async def test_ipc_transport_cleans_up_its_sockets(tmp_path: Path) -> None:
    prefix = tmp_path / "sock"
    async with embed.open_kernel(
        connection_file=tmp_path / "k.json", ip=str(prefix), transport="ipc"
    ) as k:
        assert k.info.transport == "ipc"
        async with open_client(k.info) as c:
            with trio.fail_after(15):
                await c.wait_for_ready(10)
                assert result_of(await c.execute("1 + 1")) == "2"
        assert len(list(tmp_path.glob("sock-*"))) == 5
    assert list(tmp_path.glob("sock-*")) == []
