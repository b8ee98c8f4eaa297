"""The embedded evaluator driven directly (no sockets): the shared IPython core on
this test's own trio loop, outputs collected from its sink.

Rules: every test opens its own evaluator, under ``trio.fail_after``; outputs
are matched by the parent request they carry."""

from __future__ import annotations

import builtins
import json
import sys
from collections.abc import AsyncIterator
from typing import Any

import IPython
import pytest
import trio

from trikernel.evaluator_api import ExecuteRequest, Output, Parent
from trikernel.inprocess import InProcessEvaluator, open_inprocess_evaluator

TIMEOUT = 30


class Sink:
    def __init__(self) -> None:
        self.outputs: list[Output] = []

    def __call__(self, output: Output) -> None:
        self.outputs.append(output)

    def of(self, msg_id: str, msg_type: str | None = None) -> list[dict[str, Any]]:
        """Contents of the outputs that belong to request ``msg_id``."""
        return [
            json.loads(bytes(o.content)) if not isinstance(o.content, dict) else o.content
            for o in self.outputs
            if o.parent is not None
            and o.parent.msg_id == msg_id
            and (msg_type is None or o.msg_type == msg_type)
        ]

    def text(self, msg_id: str, name: str = "stdout") -> str:
        return "".join(c["text"] for c in self.of(msg_id, "stream") if c["name"] == name)


_ids = iter(range(1, 10**9))


async def run(ev: InProcessEvaluator, code: str, **content: Any) -> tuple[str, dict[str, Any]]:
    msg_id = f"req-{next(_ids)}"
    request = ExecuteRequest.from_content({"code": code, **content}, Parent({"msg_id": msg_id}))
    return msg_id, await ev.execute(request, None)


@pytest.fixture
async def sink() -> Sink:
    return Sink()


@pytest.fixture
async def ev(sink: Sink) -> AsyncIterator[InProcessEvaluator]:
    with trio.fail_after(TIMEOUT):
        async with open_inprocess_evaluator(sink, {"app_value": 42}) as evaluator:
            yield evaluator


async def test_outputs_carry_their_request_and_the_result_its_count(
    ev: InProcessEvaluator, sink: Sink
) -> None:
    msg_id, reply = await run(ev, "print('hi')\napp_value")
    assert reply["status"] == "ok" and reply["execution_count"] == 1
    assert sink.text(msg_id) == "hi\n"
    [result] = sink.of(msg_id, "execute_result")
    assert result == {"data": {"text/plain": "42"}, "metadata": {}, "execution_count": 1}
    assert ev.execution_count == 1


async def test_magics_help_and_asyncio_cells(ev: InProcessEvaluator, sink: Sink) -> None:
    msg_id, reply = await run(ev, "%timeit -n1 -r1 pass")
    assert reply["status"] == "ok" and "per loop" in sink.text(msg_id)
    _, reply = await run(ev, "len?")
    [page] = reply["payload"]
    assert page["source"] == "page" and "Return the number of items" in page["data"]["text/plain"]
    msg_id, reply = await run(
        ev, "import asyncio\nawait asyncio.sleep(0)\nasyncio.current_task().get_name()"
    )
    assert reply["status"] == "ok"
    assert sink.of(msg_id, "execute_result")[0]["data"]["text/plain"] == "'trikernel-cell'"


async def test_a_figure_is_a_png_and_the_backend_stays(ev: InProcessEvaluator, sink: Sink) -> None:
    import matplotlib

    backend = matplotlib.get_backend()
    msg_id, reply = await run(
        ev, "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2])\nfig"
    )
    assert reply["status"] == "ok", reply
    [result] = sink.of(msg_id, "execute_result")
    assert result["data"]["image/png"].startswith("iVBORw0KGgo")
    assert matplotlib.get_backend() == backend


async def test_widget_comm_and_a_frontend_update(ev: InProcessEvaluator, sink: Sink) -> None:
    msg_id, reply = await run(ev, "import ipywidgets\nslider = ipywidgets.IntSlider(3)")
    assert reply["status"] == "ok", reply
    opens = sink.of(msg_id, "comm_open")
    [mine] = [o for o in opens if o["data"]["state"].get("_model_name") == "IntSliderModel"]
    update = {
        "comm_id": mine["comm_id"],
        "data": {"method": "update", "state": {"value": 7}, "buffer_paths": []},
    }
    await ev.send_comm("comm_msg", update, [], Parent({"msg_id": "frontend-1"}))
    assert ev.namespace["slider"].value == 7
    _, reply = await run(ev, "slider.value")
    assert reply["status"] == "ok"


async def test_output_widget_captures_under_its_request(ev: InProcessEvaluator, sink: Sink) -> None:
    await run(ev, "import ipywidgets\nout = ipywidgets.Output()")
    msg_id, reply = await run(ev, "with out:\n    print('captured')")
    assert reply["status"] == "ok", reply
    # The widget is told to capture this request's outputs, and the print is one of them.
    states = [c["data"].get("state", {}) for c in sink.of(msg_id, "comm_msg")]
    assert {"msg_id": msg_id} in states
    assert sink.text(msg_id) == "captured\n"


async def test_input_refuses_and_errors_are_error_replies(
    ev: InProcessEvaluator, sink: Sink
) -> None:
    msg_id, reply = await run(ev, "input('name? ')")
    assert reply["ename"] == "BlockingInputError"
    assert "await ainput(prompt)" in reply["evalue"]
    msg_id, reply = await run(ev, "1/0")
    assert reply["ename"] == "ZeroDivisionError" and sink.of(msg_id, "error")


async def test_interrupt_cancels_an_awaiting_cell(ev: InProcessEvaluator, sink: Sink) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.sleep, 0)

        async def interrupt_soon() -> None:
            await trio.sleep(0.1)
            ev.interrupt()

        nursery.start_soon(interrupt_soon)
        _, reply = await run(ev, "import trio\nawait trio.sleep(30)")
    assert reply["ename"] == "KeyboardInterrupt"


async def test_app_prints_are_not_captured(
    ev: InProcessEvaluator, sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    async def app() -> None:
        await trio.sleep(0.05)
        print("app-during")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(app)
        msg_id, _ = await run(ev, "import trio\nprint('cell')\nawait trio.sleep(0.2)")
    assert sink.text(msg_id) == "cell\n"
    assert "app-" not in repr([o.content for o in sink.outputs])
    assert "app-during" in capsys.readouterr().out


async def test_two_kernels_each_get_their_own_ipython() -> None:
    one, two = Sink(), Sink()
    code = "import trio\nfor i in range(3):\n    await trio.sleep(0.02)\n    display(get_ipython().user_ns['name'])"
    with trio.fail_after(TIMEOUT):
        async with (
            open_inprocess_evaluator(one, {"name": "one"}) as ev1,
            open_inprocess_evaluator(two, {"name": "two"}) as ev2,
        ):
            ids: dict[str, str] = {}

            async def go(key: str, ev: InProcessEvaluator) -> None:
                ids[key], _ = await run(ev, code)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(go, "one", ev1)
                nursery.start_soon(go, "two", ev2)
    shown1 = [c["data"]["text/plain"] for c in one.of(ids["one"], "display_data")]
    shown2 = [c["data"]["text/plain"] for c in two.of(ids["two"], "display_data")]
    assert shown1 == ["'one'"] * 3 and shown2 == ["'two'"] * 3


async def test_nothing_global_is_left_behind() -> None:
    before = (sys.stdout, sys.stderr, sys.displayhook, builtins.input, sys.modules.get("__main__"))
    had_display = "display" in builtins.__dict__
    with trio.fail_after(TIMEOUT):
        async with open_inprocess_evaluator(Sink()) as ev:
            _, reply = await run(ev, "import ipywidgets\nw = ipywidgets.IntSlider()\n1")
            assert reply["status"] == "ok"
            assert sys.stdout is not before[0]
    after = (sys.stdout, sys.stderr, sys.displayhook, builtins.input, sys.modules.get("__main__"))
    assert after == before
    assert ("display" in builtins.__dict__) == had_display
    assert IPython.get_ipython() is None
    import comm

    assert comm.create_comm.__module__ == "comm"
