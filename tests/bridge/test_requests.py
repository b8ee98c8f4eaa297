"""complete / inspect / is_complete / history / comm_info, and comms both ways."""

from __future__ import annotations

import trio

from trikernel.bridge import SubprocessEvaluator
from trikernel.evaluator_api import Parent

from .conftest import TIMEOUT, Recorder, request_parent, run


async def request(evaluator: SubprocessEvaluator, msg_type: str, **content: object) -> dict:
    with trio.fail_after(TIMEOUT):
        return await evaluator.request(msg_type, content, Parent())


async def test_complete(evaluator: SubprocessEvaluator) -> None:
    await run(evaluator, "alpha_beta = 1")
    reply = await request(evaluator, "complete_request", code="x = alpha_b", cursor_pos=11)
    assert reply["status"] == "ok"
    assert "alpha_beta" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (4, 11)
    types = reply["metadata"]["_jupyter_types_experimental"]
    assert any(t["text"] == "alpha_beta" for t in types)


async def test_inspect(evaluator: SubprocessEvaluator) -> None:
    await run(evaluator, "def documented():\n    'The doc.'\n")
    reply = await request(
        evaluator, "inspect_request", code="documented", cursor_pos=3, detail_level=0
    )
    assert reply["status"] == "ok" and reply["found"] is True
    assert "The doc." in reply["data"]["text/plain"]
    missing = await request(evaluator, "inspect_request", code="nope_nope", cursor_pos=2)
    assert missing["found"] is False


async def test_is_complete(evaluator: SubprocessEvaluator) -> None:
    assert (await request(evaluator, "is_complete_request", code="x = 1")) == {"status": "complete"}
    reply = await request(evaluator, "is_complete_request", code="for i in x:")
    assert reply == {"status": "incomplete", "indent": "    "}
    assert (await request(evaluator, "is_complete_request", code="1 +) "))["status"] == "invalid"


async def test_history(evaluator: SubprocessEvaluator) -> None:
    await run(evaluator, "a = 1")
    await run(evaluator, "b = 2")
    reply = await request(
        evaluator, "history_request", hist_access_type="tail", n=2, raw=True, output=False
    )
    assert reply["status"] == "ok"
    assert [entry[2] for entry in reply["history"]] == ["a = 1", "b = 2"]
    search = await request(
        evaluator, "history_request", hist_access_type="search", pattern="b*", raw=True
    )
    assert any(entry[2] == "b = 2" for entry in search["history"])


async def test_unknown_request(evaluator: SubprocessEvaluator) -> None:
    reply = await request(evaluator, "bogus_request")
    assert reply["status"] == "error"


async def test_request_while_cell_awaits(evaluator: SubprocessEvaluator) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, evaluator, "await trio.sleep(1)")
        await trio.sleep(0.2)
        with trio.fail_after(0.5):  # answered concurrently, not after the cell
            reply = await evaluator.request("is_complete_request", {"code": "x"}, Parent())
        assert reply["status"] == "complete"
        evaluator.interrupt()


async def test_comm_from_kernel_side(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = (
        "import comm\n"
        "c = comm.create_comm(target_name='t1', data={'a': 1}, metadata={'version': '2'},"
        " buffers=[b'raw'])\n"
        "c.send({'b': 2})\n"
    )
    assert (await run(evaluator, code))["status"] == "ok"
    kinds = [t for t, _, _ in recorder.messages]
    assert kinds == ["comm_open", "comm_msg"]
    (_, opened, buffers), (_, sent, _) = recorder.messages
    assert opened["target_name"] == "t1" and opened["data"] == {"a": 1}
    assert buffers == [b"raw"]
    assert sent == {"data": {"b": 2}, "comm_id": opened["comm_id"]}
    info = await request(evaluator, "comm_info_request", target_name="t1")
    assert info == {"status": "ok", "comms": {opened["comm_id"]: {"target_name": "t1"}}}
    await run(evaluator, "c.close()")
    assert recorder.messages[-1][0] == "comm_close"


async def test_comm_from_frontend(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = (
        "import comm\n"
        "got = []\n"
        "def target(c, msg):\n"
        "    got.append(msg['content']['data'])\n"
        # buffers arrive as memoryviews, as ipykernel hands them
        "    bufs = lambda m: [type(b).__name__ + ':' + bytes(b).decode() for b in m['buffers']]\n"
        "    c.on_msg(lambda m: (got.append((m['content']['data'], bufs(m))), c.send('echo')))\n"
        "comm.get_comm_manager().register_target('t2', target)\n"
    )
    await run(evaluator, code)
    open_content = {"comm_id": "abc", "target_name": "t2", "data": {"hello": 1}}
    await evaluator.send_comm("comm_open", open_content, [])
    await evaluator.send_comm("comm_msg", {"comm_id": "abc", "data": {"x": 2}}, [b"buf"])
    await recorder.wait_for(lambda: bool(recorder.of_type("comm_msg")))
    assert recorder.of_type("comm_msg")[0] == {"data": "echo", "comm_id": "abc"}
    recorder.clear()
    await run(evaluator, "got")
    text = recorder.of_type("execute_result")[0]["data"]["text/plain"]
    assert text == "[{'hello': 1}, ({'x': 2}, ['memoryview:buf'])]"
    # unknown target: the comm is closed back
    await evaluator.send_comm("comm_open", {"comm_id": "z", "target_name": "nope", "data": {}}, [])
    await recorder.wait_for(lambda: bool(recorder.of_type("comm_close")))


async def test_ipywidgets(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = "import ipywidgets\nw = ipywidgets.IntSlider(value=3)\nw"
    assert (await run(evaluator, code))["status"] == "ok"
    opens = recorder.of_type("comm_open")
    assert any(c["target_name"] == "jupyter.widget" for c in opens)
    (result,) = recorder.of_type("execute_result")
    view = result["data"]["application/vnd.jupyter.widget-view+json"]
    slider = next(c for c in opens if c["comm_id"] == view["model_id"])
    assert slider["data"]["state"]["value"] == 3
    # the frontend moves the slider
    update = {"method": "update", "state": {"value": 7}, "buffer_paths": []}
    await evaluator.send_comm("comm_msg", {"comm_id": view["model_id"], "data": update}, [])
    recorder.clear()
    await run(evaluator, "w.value")
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "7"


async def test_the_running_cell_sees_its_request(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = (
        "k = get_ipython().kernel\n"
        "p = k.get_parent()\n"
        "(p['header']['msg_id'], p['msg_type'], p['header']['session'], p['metadata'],"
        " p['content']['code'][:2], k._parent_header is p, k.get_parent('control'))"
    )
    parent = request_parent("cell-1", "execute_request", cellId="c-1")
    assert (await run(evaluator, code, parent=parent))["status"] == "ok"
    (result,) = recorder.of_type("execute_result")
    expected = "('cell-1', 'execute_request', 'session-1', {'cellId': 'c-1'}, 'k ', True, {})"
    assert result["data"]["text/plain"] == expected
    recorder.clear()
    # a request the bridge was not told about: no parent for user code to rely on
    await run(evaluator, "get_ipython().kernel.get_parent()['header']")
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "{}"


async def test_comm_handlers_see_the_frontends_message(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = (
        "import comm\n"
        "seen = []\n"
        "def note(msg):\n"
        "    latest = get_ipython().kernel.get_parent()['header']['msg_id']\n"
        "    seen.append((msg['header']['msg_id'], msg['metadata'], latest))\n"
        "def target(c, msg):\n"
        "    note(msg)\n"
        "    c.on_msg(note)\n"
        "comm.get_comm_manager().register_target('meta', target)\n"
    )
    await run(evaluator, code)
    opened = {"comm_id": "m1", "target_name": "meta", "data": {}}
    with trio.fail_after(TIMEOUT):
        await evaluator.send_comm(
            "comm_open", opened, [], parent=request_parent("open-1", "comm_open", version="2.1.0")
        )
        await evaluator.send_comm(
            "comm_msg",
            {"comm_id": "m1", "data": {}},
            [],
            parent=request_parent("msg-2", "comm_msg", tag=[1]),
        )
    recorder.clear()
    await run(evaluator, "seen")
    expected = [("open-1", {"version": "2.1.0"}, "open-1"), ("msg-2", {"tag": [1]}, "msg-2")]
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == repr(expected)


async def test_comm_handler_output_names_the_comm_message(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = (
        "import comm\n"
        "def target(c, msg):\n"
        "    c.on_msg(lambda m: print('got', m['content']['data']))\n"
        "comm.get_comm_manager().register_target('p', target)\n"
    )
    await run(evaluator, code, parent=request_parent("cell", "execute_request"))
    opened = {"comm_id": "p1", "target_name": "p", "data": {}}
    with trio.fail_after(TIMEOUT):
        await evaluator.send_comm("comm_open", opened, [], request_parent("open", "comm_open"))
        await evaluator.send_comm(
            "comm_msg", {"comm_id": "p1", "data": 5}, [], request_parent("msg", "comm_msg")
        )
    # send_comm returns once the handlers ran: their output is already in
    assert recorder.text() == "got 5\n"
    (printed,) = recorder.outputs
    assert printed.parent is not None and printed.parent.msg_id == "msg"
