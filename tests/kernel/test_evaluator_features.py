"""The evaluator in depth, through the real kernel process and jupyter_client.

Rich output (display, IPython.display classes, display ids, clear_output,
execute_result counts, matplotlib inline), comms and ipywidgets in both directions
(the Output widget's capture included), completion/inspection/history/is_complete,
top-level await on the persistent trio loop (background tasks across cells and
interrupts), asyncio cells, and robustness (a failing formatter, a 5 MB payload, an
evaluator crash).

Two kernels per module: ``shared`` for tests that leave nothing running, ``lively``
for background tasks, interrupts and the crash (run in file order; each test sets
up what it needs). Rules as in test_kernel_process.py: every blocking call has a
timeout, every kernel is shut down in a finally; IPython's profile dir is temporary.
"""

from __future__ import annotations

import base64
import os
import random
import re
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from support import TIMEOUT
from support.client import shell_reply
from support.iopub import iopub_until, of_type, outputs_until_idle, stream_text
from support.kernel_process import kernel_manager, ready_client

from .conftest import KERNEL_NAME

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


class Kernel:
    """A kernel process and a blocking client, with helpers that match by parent."""

    def __init__(self, km: KernelManager, kc: BlockingKernelClient) -> None:
        self.km = km
        self.kc = kc
        self.stray: list[dict] = []  # iopub messages of other parents (between cells)

    def run(self, code: str, **kwargs: Any) -> tuple[dict, list[dict]]:
        """Execute and wait: (reply content, iopub messages of the cell without status)."""
        return self.finish(self.kc.execute(code, **kwargs))

    def ok(self, code: str) -> list[dict]:
        reply, outputs = self.run(code)
        assert reply["status"] == "ok", (code, reply)
        return outputs

    def value(self, code: str) -> str:
        """text/plain of the cell's execute_result."""
        results = [m for m in self.ok(code) if m["msg_type"] == "execute_result"]
        assert len(results) == 1, code
        return str(results[0]["content"]["data"]["text/plain"])

    def finish(self, msg_id: str) -> tuple[dict, list[dict]]:
        outputs = self.outputs_until_idle(msg_id)
        return shell_reply(self.kc, msg_id)["content"], outputs

    def outputs_until_idle(self, msg_id: str) -> list[dict]:
        """iopub messages with parent ``msg_id`` until its idle status (no statuses)."""
        return outputs_until_idle(self.kc, msg_id, others=self.stray)

    def wait_for_output(self, msg_id: str, predicate: Callable[[dict], bool]) -> list[dict]:
        """iopub messages of ``msg_id`` up to the first that satisfies ``predicate``."""
        seen: list[dict] = []
        iopub_until(self.kc, msg_id, predicate, seen, others=self.stray)
        return seen

    def request(self, method: str, *args: Any, **kwargs: Any) -> dict:
        """complete/inspect/history/is_complete/comm_info: the reply's content."""
        msg_id = getattr(self.kc, method)(*args, **kwargs)
        return shell_reply(self.kc, msg_id)["content"]

    def send_shell(
        self,
        msg_type: str,
        content: dict,
        buffers: list[bytes] | None = None,
        metadata: dict | None = None,
    ) -> str:
        """A message as a frontend sends it (comm_open/msg/close, with metadata);
        returns its msg_id."""
        msg = self.kc.session.msg(msg_type, content, metadata=metadata)
        if buffers:
            msg["buffers"] = buffers
        self.kc.shell_channel.send(msg)
        return str(msg["header"]["msg_id"])

    def interrupted(self, code: str) -> tuple[dict, list[dict], float]:
        """Run ``code`` (which prints 'started'), interrupt it then (message mode):
        (reply content, outputs, seconds from the interrupt to idle)."""
        msg_id = self.kc.execute(code)
        seen = self.wait_for_output(msg_id, lambda m: "started" in stream_text([m]))
        time.sleep(0.2)
        start = time.monotonic()
        self.km.interrupt_kernel()
        outputs = [m for m in seen if m["msg_type"] != "status"]
        outputs += self.outputs_until_idle(msg_id)
        elapsed = time.monotonic() - start
        return shell_reply(self.kc, msg_id)["content"], outputs, elapsed


def plain(text: str) -> str:
    return ANSI.sub("", text)


def start_kernel(ipython_dir: Path) -> Iterator[Kernel]:
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir)}
    with kernel_manager(KERNEL_NAME, env=env) as km, ready_client(km.client(), 60) as kc:
        yield Kernel(km, kc)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    yield from start_kernel(tmp_path_factory.mktemp("ipython-shared"))


@pytest.fixture(scope="module")
def lively(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    yield from start_kernel(tmp_path_factory.mktemp("ipython-lively"))


# ---------------------------------------------------------------------------
# 1. rich output


def test_display_of_repr_html_and_mimebundle(shared: Kernel) -> None:
    outputs = shared.ok(
        "class Both:\n"
        "    def _repr_html_(self):\n"
        "        return '<b>both</b>'\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'Both!', 'application/x-both': {'n': 1}}\n"
        "class Html:\n"
        "    def _repr_html_(self):\n"
        "        return '<i>html</i>'\n"
        "display(Both(), Html())"
    )
    both, html = of_type(outputs, "display_data")
    assert both["data"] == {
        "text/plain": "Both!",
        "application/x-both": {"n": 1},
        "text/html": "<b>both</b>",
    }
    assert html["data"]["text/html"] == "<i>html</i>"
    assert html["data"]["text/plain"].startswith("<__main__.Html")


def test_ipython_display_classes(shared: Kernel) -> None:
    png = PNG_SIGNATURE + bytes(range(256)) * 4  # Image does not decode it
    outputs = shared.ok(
        "from IPython.display import HTML, JSON, Image, Latex, Markdown\n"
        f"png = {png!r}\n"
        "display(HTML('<p>h</p>'), Markdown('# m'), Image(data=png, format='png'),"
        " JSON({'a': [1, 2], 'b': None}), Latex(r'$x^2$'))"
    )
    html, markdown, image, json_, latex = (c["data"] for c in of_type(outputs, "display_data"))
    assert html["text/html"] == "<p>h</p>"
    assert markdown["text/markdown"] == "# m"
    assert base64.b64decode(image["image/png"]) == png
    assert json_["application/json"] == {"a": [1, 2], "b": None}  # an object, not a string
    assert latex["text/latex"] == "$x^2$"


def test_display_id_update_and_clear_output(shared: Kernel) -> None:
    outputs = shared.ok(
        "from IPython.display import clear_output\n"
        "handle = display('first', display_id=True)\n"
        "handle.update('second')\n"
        "clear_output(wait=True)\n"
        "print('after clear')"
    )
    assert [m["msg_type"] for m in outputs] == [
        "execute_input",
        "display_data",
        "update_display_data",
        "clear_output",
        "stream",
    ]
    shown, updated, cleared = outputs[1]["content"], outputs[2]["content"], outputs[3]["content"]
    display_id = shown["transient"]["display_id"]
    assert display_id and updated["transient"]["display_id"] == display_id
    assert (shown["data"]["text/plain"], updated["data"]["text/plain"]) == ("'first'", "'second'")
    assert cleared == {"wait": True}
    assert shared.ok("clear_output()")[-1]["content"] == {"wait": False}


def test_execute_result_carries_the_cells_count(shared: Kernel) -> None:
    counts = []
    for _ in range(2):
        reply, outputs = shared.run("6 * 7")
        (started,) = of_type(outputs, "execute_input")
        (result,) = of_type(outputs, "execute_result")
        assert result["data"]["text/plain"] == "42"
        assert reply["execution_count"] == started["execution_count"] == result["execution_count"]
        counts.append(reply["execution_count"])
    assert counts[1] == counts[0] + 1


def _pngs(outputs: list[dict]) -> list[bytes]:
    return [base64.b64decode(c["data"]["image/png"]) for c in of_type(outputs, "display_data")]


def test_matplotlib_inline_by_default(shared: Kernel) -> None:
    assert "inline" in shared.value("import matplotlib\nmatplotlib.get_backend()")
    shown = _pngs(shared.ok("import matplotlib.pyplot as plt\nplt.plot([1, 2])\nplt.show()"))
    assert len(shown) == 1 and shown[0].startswith(PNG_SIGNATURE)
    left = _pngs(shared.ok("fig, ax = plt.subplots()\nax.plot([2, 1]);"))
    assert len(left) == 1 and left[0].startswith(PNG_SIGNATURE)
    magic = _pngs(shared.ok("%matplotlib inline\nplt.plot([3, 4]);"))
    assert len(magic) == 1 and magic[0].startswith(PNG_SIGNATURE)
    assert _pngs(shared.ok("x_after_plots = 1")) == []  # nothing left over


def test_failing_display_formatter_kills_nothing(shared: Kernel) -> None:
    shared.ok(
        "class Broken:\n"
        "    def _repr_html_(self):\n"
        "        raise ValueError('formatter boom')\n"
        "    def __repr__(self):\n"
        "        return 'Broken()'"
    )
    for code in ("Broken()", "display(Broken())"):
        reply, outputs = shared.run(code)
        assert reply["status"] == "ok"
        errors = of_type(outputs, "error")
        assert [e["evalue"] for e in errors] == ["formatter boom"]  # shown, not fatal
        (shown,) = of_type(outputs, "execute_result") or of_type(outputs, "display_data")
        assert shown["data"] == {"text/plain": "Broken()"}
    assert shared.value("'still' + ' alive'") == "'still alive'"


def test_five_megabyte_display_arrives_intact(shared: Kernel) -> None:
    size = 5 * 1024 * 1024
    expected = base64.b64encode(random.Random(7).randbytes(size * 3 // 4)).decode()
    outputs = shared.ok(
        "import base64, random\n"
        f"big = base64.b64encode(random.Random(7).randbytes({size * 3 // 4})).decode()\n"
        "display({'text/plain': big}, raw=True)"
    )
    (shown,) = of_type(outputs, "display_data")
    assert len(shown["data"]["text/plain"]) == size
    assert shown["data"]["text/plain"] == expected


# ---------------------------------------------------------------------------
# 2. comms and widgets


def test_widget_comms_both_ways(shared: Kernel) -> None:
    outputs = shared.ok("import ipywidgets as w\ns = w.IntSlider(value=3)\ndisplay(s)")
    opens = [m for m in outputs if m["msg_type"] == "comm_open"]
    assert opens and all(m["content"]["target_name"] == "jupyter.widget" for m in opens)
    assert all(m["metadata"].get("version", "").startswith("2.") for m in opens)
    (slider,) = [
        m for m in opens if m["content"]["data"]["state"]["_model_name"] == "IntSliderModel"
    ]
    comm_id = slider["content"]["comm_id"]
    assert slider["content"]["data"]["state"]["value"] == 3
    (view,) = of_type(outputs, "display_data")
    assert view["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == comm_id

    # kernel -> frontend: a state change is a comm_msg
    changes = of_type(shared.ok("s.value = 5"), "comm_msg")
    assert {"method": "update", "state": {"value": 5}, "buffer_paths": []} in [
        c["data"] for c in changes if c["comm_id"] == comm_id
    ]

    # frontend -> kernel: the update reaches the widget; its echo is attributed to it
    update = {"method": "update", "state": {"value": 7}, "buffer_paths": []}
    msg_id = shared.send_shell("comm_msg", {"comm_id": comm_id, "data": update})
    echoed = of_type(shared.outputs_until_idle(msg_id), "comm_msg")
    assert [c["data"]["method"] for c in echoed if c["comm_id"] == comm_id] == ["echo_update"]
    assert shared.value("s.value") == "7"

    comms = shared.request("comm_info")["comms"]
    assert comms[comm_id] == {"target_name": "jupyter.widget"}
    widget_ids = {m["content"]["comm_id"] for m in opens}
    filtered = shared.request("comm_info", target_name="jupyter.widget")["comms"]
    assert widget_ids <= set(filtered)
    assert all(c["target_name"] == "jupyter.widget" for c in filtered.values())
    assert shared.request("comm_info", target_name="no-such-target")["comms"] == {}


def test_kernel_side_comm_with_buffers(shared: Kernel) -> None:
    outputs = shared.ok(
        "import comm\n"
        "c = comm.create_comm(target_name='t', data={'a': 1}, buffers=[b'xyz'])\n"
        "c.send({'b': 2}, buffers=[b'\\x00\\x01\\x02'])"
    )
    opened, sent = (m for m in outputs if m["msg_type"] in ("comm_open", "comm_msg"))
    assert opened["msg_type"] == "comm_open"
    assert opened["content"]["target_name"] == "t" and opened["content"]["data"] == {"a": 1}
    assert [bytes(b) for b in opened["buffers"]] == [b"xyz"]
    assert sent["content"]["comm_id"] == opened["content"]["comm_id"]
    assert sent["content"]["data"] == {"b": 2}
    assert [bytes(b) for b in sent["buffers"]] == [b"\x00\x01\x02"]
    assert shared.request("comm_info", target_name="t")["comms"] == {
        opened["content"]["comm_id"]: {"target_name": "t"}
    }


def test_frontend_comm_to_a_registered_target(shared: Kernel) -> None:
    shared.ok(
        "import comm\n"
        "got = []\n"
        "def on_open(c, msg):\n"
        "    got.append(('open', msg['content']['data']))\n"
        "    c.on_msg(lambda m: got.append(('msg', m['content']['data'],"
        " [bytes(b) for b in m['buffers']])))\n"
        "    c.on_close(lambda m: got.append(('close', m['content']['data'])))\n"
        "    c.send({'echo': msg['content']['data']})\n"
        "comm.get_comm_manager().register_target('mine', on_open)"
    )
    comm_id = uuid.uuid4().hex
    opened = shared.send_shell(
        "comm_open", {"comm_id": comm_id, "target_name": "mine", "data": {"hello": 1}}
    )
    echo = of_type(shared.outputs_until_idle(opened), "comm_msg")  # attributed to the open
    assert echo == [{"comm_id": comm_id, "data": {"echo": {"hello": 1}}}]
    sent = shared.send_shell("comm_msg", {"comm_id": comm_id, "data": {"n": 2}}, [b"\x07\x08"])
    shared.outputs_until_idle(sent)
    closed = shared.send_shell("comm_close", {"comm_id": comm_id, "data": {"bye": 3}})
    shared.outputs_until_idle(closed)
    expected = [("open", {"hello": 1}), ("msg", {"n": 2}, [b"\x07\x08"]), ("close", {"bye": 3})]
    assert stream_text(shared.ok("print(got)")) == f"{expected!r}\n"
    assert comm_id not in shared.request("comm_info")["comms"]


def test_frontend_comm_to_an_unknown_target_is_closed(shared: Kernel) -> None:
    comm_id = uuid.uuid4().hex
    msg_id = shared.send_shell(
        "comm_open", {"comm_id": comm_id, "target_name": "no-such-target", "data": {}}
    )
    closes = of_type(shared.outputs_until_idle(msg_id), "comm_close")
    assert [c["comm_id"] for c in closes] == [comm_id]


def test_malformed_comm_message_keeps_the_namespace(shared: Kernel) -> None:
    shared.ok("kept_across_bad_comm = 'yes'")
    msg_id = shared.send_shell("comm_msg", {"data": {"no": "comm_id"}})
    shared.outputs_until_idle(msg_id)
    assert shared.value("kept_across_bad_comm") == "'yes'"


def test_comm_metadata_and_header_reach_the_handlers(shared: Kernel) -> None:
    shared.ok(
        "import comm\n"
        "met = []\n"
        "def note(msg):\n"
        "    met.append((msg['header']['msg_id'], msg['header']['msg_type'], msg['metadata']))\n"
        "def on_open(c, msg):\n"
        "    note(msg)\n"
        "    c.on_msg(note)\n"
        "comm.get_comm_manager().register_target('with-metadata', on_open)"
    )
    comm_id = uuid.uuid4().hex
    opened = shared.send_shell(
        "comm_open",
        {"comm_id": comm_id, "target_name": "with-metadata", "data": {}},
        metadata={"version": "2.1.0"},
    )
    shared.outputs_until_idle(opened)
    sent = shared.send_shell(
        "comm_msg", {"comm_id": comm_id, "data": {}}, metadata={"tag": ["a", 1]}
    )
    shared.outputs_until_idle(sent)
    expected = [
        (opened, "comm_open", {"version": "2.1.0"}),
        (sent, "comm_msg", {"tag": ["a", 1]}),
    ]
    assert stream_text(shared.ok("print(met)")) == f"{expected!r}\n"


def test_a_cell_sees_its_request_as_the_kernels_parent(shared: Kernel) -> None:
    code = (
        "p = get_ipython().kernel.get_parent()\n"
        "print(p['header']['msg_id'], p['header']['session'], p['metadata']['cellId'])"
    )
    content = {"code": code, "silent": False, "store_history": True}
    msg_id = shared.send_shell("execute_request", content, metadata={"cellId": "cell-7"})
    outputs = shared.outputs_until_idle(msg_id)
    assert stream_text(outputs) == f"{msg_id} {shared.kc.session.session} cell-7\n"


def _output_widget(kernel: Kernel, name: str) -> str:
    """Create and display ipywidgets.Output as ``name``; its comm_id."""
    outputs = kernel.ok(f"import ipywidgets\n{name} = ipywidgets.Output()\ndisplay({name})")
    (model,) = (
        m["content"]
        for m in outputs
        if m["msg_type"] == "comm_open"
        and m["content"]["data"]["state"]["_model_name"] == "OutputModel"
    )
    return str(model["comm_id"])


def _capture_trace(outputs: list[dict], comm_id: str) -> list[tuple[str, Any]]:
    """What a frontend's Output widget acts on: its msg_id changes, and outputs."""
    trace: list[tuple[str, Any]] = []
    for m in outputs:
        content = m["content"]
        if m["msg_type"] == "comm_msg" and content["comm_id"] == comm_id:
            state = content["data"].get("state", {})
            if "msg_id" in state:
                trace.append(("msg_id", state["msg_id"]))
        elif m["msg_type"] == "stream":
            trace.append(("stream", content["text"]))
        elif m["msg_type"] in ("display_data", "clear_output", "error"):
            trace.append((m["msg_type"], m["parent_header"]["msg_id"]))
    return trace


def test_output_widget_captures_a_later_cell(shared: Kernel) -> None:
    comm_id = _output_widget(shared, "out")
    msg_id = shared.kc.execute(
        "from IPython.display import HTML\n"
        "with out:\n"
        "    print('captured')\n"
        "    display(HTML('<b>captured</b>'))\n"
        "print('not captured')"
    )
    outputs = shared.outputs_until_idle(msg_id)  # all of them with this parent
    assert _capture_trace(outputs, comm_id) == [
        ("msg_id", msg_id),
        ("stream", "captured\n"),
        ("display_data", msg_id),
        ("msg_id", ""),
        ("stream", "not captured\n"),
    ]
    # an exception inside: shown (in the widget), the cell goes on, as with ipykernel
    msg_id = shared.kc.execute("with out:\n    1 / 0\nprint('went on')")
    reply, outputs = shared.finish(msg_id)
    assert reply["status"] == "ok"
    assert _capture_trace(outputs, comm_id) == [
        ("msg_id", msg_id),
        ("error", msg_id),
        ("msg_id", ""),
        ("stream", "went on\n"),
    ]


def test_output_widget_capture_in_a_button_callback(shared: Kernel) -> None:
    comm_id = _output_widget(shared, "log")
    outputs = shared.ok(
        "button = ipywidgets.Button(description='go')\n"
        "@log.capture(clear_output=True)\n"
        "def clicked(b):\n"
        "    print('clicked')\n"
        "button.on_click(clicked)\n"
        "display(button)"
    )
    (view,) = of_type(outputs, "display_data")
    button_id = view["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
    click = {"method": "custom", "content": {"event": "click"}}
    msg_id = shared.send_shell("comm_msg", {"comm_id": button_id, "data": click})
    trace = _capture_trace(shared.outputs_until_idle(msg_id), comm_id)
    # clear_output(), then the callback, each inside `with log:` (the comm message's id)
    assert trace == [
        ("msg_id", msg_id),
        ("clear_output", msg_id),
        ("msg_id", ""),
        ("msg_id", msg_id),
        ("stream", "clicked\n"),
        ("msg_id", ""),
    ]


# ---------------------------------------------------------------------------
# 3. completion, inspection, history, is_complete


def test_complete(shared: Kernel) -> None:
    shared.ok("def my_function(alpha, beta=2):\n    '''Docstring here.'''\n    return alpha + beta")
    reply = shared.request("complete", "my_fu", 5)
    assert reply["status"] == "ok"
    assert "my_function" in reply["matches"]
    assert (reply["cursor_start"], reply["cursor_end"]) == (0, 5)
    types = reply["metadata"]["_jupyter_types_experimental"]
    assert {"start": 0, "end": 5, "text": "my_function", "type": "function"}.items() <= next(
        t for t in types if t["text"] == "my_function"
    ).items()
    middle = shared.request("complete", "x = my_fu + 1", 9)
    assert "my_function" in middle["matches"]
    assert (middle["cursor_start"], middle["cursor_end"]) == (4, 9)


def test_inspect_detail_levels(shared: Kernel) -> None:
    shared.ok("def my_inspected(alpha):\n    '''Docstring here.'''\n    return alpha + 1")
    brief = shared.request("inspect", "my_inspected", 12, 0)
    assert brief["status"] == "ok" and brief["found"]
    text = plain(brief["data"]["text/plain"])
    assert "Docstring here." in text and "return alpha + 1" not in text
    full = shared.request("inspect", "my_inspected(", 12, 1)
    assert "return alpha + 1" in plain(full["data"]["text/plain"])  # the source
    assert shared.request("inspect", "no_such_name_xyz", 5, 0)["found"] is False


def test_history_tail_range_search(shared: Kernel) -> None:
    reply, _ = shared.run("history_marker_4711 = 1")
    count = reply["execution_count"]
    deadline = time.monotonic() + TIMEOUT
    while True:  # IPython writes history to its database from a thread
        tail = shared.request("history", hist_access_type="tail", n=1, raw=True, output=False)
        found = shared.request(
            "history", hist_access_type="search", pattern="history_marker_4711*", raw=True
        )
        if found["history"] or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    (session, line, source) = tail["history"][-1]
    assert (line, source) == (count, "history_marker_4711 = 1") and session > 0
    assert [entry[1:] for entry in found["history"]] == [[count, "history_marker_4711 = 1"]]
    ranged = shared.request(
        "history", hist_access_type="range", session=0, start=count, stop=count + 1, raw=True
    )
    assert ranged["history"] == [[session, count, "history_marker_4711 = 1"]]


@pytest.mark.parametrize(
    ("code", "status", "indent"),
    [
        ("x = 1", "complete", None),
        ("def f():", "incomplete", "    "),
        ("for i in range(3):\n    if i:", "incomplete", "        "),
        ("1 +* 2", "invalid", None),
    ],
)
def test_is_complete(shared: Kernel, code: str, status: str, indent: str | None) -> None:
    reply = shared.request("is_complete", code)
    assert reply["status"] == status
    assert reply.get("indent") == indent


# ---------------------------------------------------------------------------
# 4. top-level await on the persistent trio loop


def test_trio_sleep_and_nursery_in_cells(shared: Kernel) -> None:
    assert (
        shared.value(
            "t0 = trio.current_time()\nawait trio.sleep(0.1)\ntrio.current_time() - t0 >= 0.1"
        )
        == "True"
    )
    outputs = shared.ok(
        "order = []\n"
        "async def later(delay, name):\n"
        "    await trio.sleep(delay)\n"
        "    order.append(name)\n"
        "async with trio.open_nursery() as n:\n"
        "    n.start_soon(later, 0.1, 'slow')\n"
        "    n.start_soon(later, 0.0, 'fast')\n"
        "print(order)"
    )
    assert stream_text(outputs) == "['fast', 'slow']\n"


def _ticks(outputs: list[dict]) -> list[int]:
    return [int(n) for n in re.findall(r"tick (\d+)", stream_text(outputs))]


def test_background_task_outlives_an_interrupt(lively: Kernel) -> None:
    lively.ok(
        "ticks = 0\n"
        "async def ticker():\n"
        "    global ticks\n"
        "    while True:\n"
        "        ticks += 1\n"
        "        print('tick', ticks)\n"
        "        await trio.sleep(0.2)\n"
        "background.start_soon(ticker)"
    )
    reply, outputs, elapsed = lively.interrupted("print('started')\nawait trio.sleep(60)")
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert [e["ename"] for e in of_type(outputs, "error")] == ["KeyboardInterrupt"]
    assert elapsed < 5  # idle again
    before = max(_ticks(outputs + lively.stray), default=0)
    during = _ticks(lively.ok("await trio.sleep(1)"))  # cell 3: the ticker prints in it
    assert len(during) >= 3 and during == sorted(during) and during[0] > before


def test_sync_sleep_is_interrupted(lively: Kernel) -> None:
    lively.ok("kept = 'namespace'")
    reply, _, elapsed = lively.interrupted("import time\nprint('started')\ntime.sleep(60)")
    assert reply["ename"] == "KeyboardInterrupt" and elapsed < 5
    assert lively.value("kept") == "'namespace'"


def test_sync_loop_in_trios_code_is_interrupted_fast(lively: Kernel) -> None:
    # The SIGINT mostly lands inside trio.current_time (not user code): the evaluator
    # re-sends it until it lands in the cell; the bridge's escalation (kill, after
    # 3 s) must not be needed.
    lively.ok("kept = 'namespace'")
    reply, _, elapsed = lively.interrupted("print('started')\nwhile True:\n    trio.current_time()")
    assert reply["ename"] == "KeyboardInterrupt", reply
    assert elapsed < 1.5
    assert lively.value("kept") == "'namespace'"


def test_output_widget_in_a_background_task_follows_the_latest_request(lively: Kernel) -> None:
    comm_id = _output_widget(lively, "bg_out")
    lively.ok(
        "go = trio.Event()\n"
        "async def later():\n"
        "    await go.wait()\n"
        "    await trio.sleep(0.2)\n"
        "    with bg_out:\n"
        "        print('late')\n"
        "background.start_soon(later)"
    )
    msg_id = lively.kc.execute("go.set()")  # done before the task prints
    seen = lively.wait_for_output(
        msg_id, lambda m: _capture_trace([m], comm_id) == [("msg_id", "")]
    )
    # the kernel attributes the task's output to the latest request, and the widget
    # captures that request's outputs: the two agree (the ticker of an earlier test
    # may still print)
    trace = [e for e in _capture_trace(seen, comm_id) if not str(e[1]).startswith("tick ")]
    assert trace == [
        ("msg_id", msg_id),
        ("stream", "late\n"),
        ("msg_id", ""),
    ]


def test_failing_background_task_is_shown_and_the_kernel_goes_on(lively: Kernel) -> None:
    reply, outputs = lively.run(
        "async def boom():\n"
        "    await trio.sleep(0.05)\n"
        "    raise ValueError('background boom')\n"
        "background.start_soon(boom)\n"
        "await trio.sleep(0.5)"
    )
    assert reply["status"] == "ok"  # the cell itself did not fail
    (error,) = of_type(outputs, "error")
    assert (error["ename"], error["evalue"]) == ("ValueError", "background boom")
    assert "background task 'boom'" in error["traceback"][0]
    assert lively.value("21 * 2") == "42"


# ---------------------------------------------------------------------------
# 5. asyncio cells


def test_asyncio_sleep_and_gather(shared: Kernel) -> None:
    shared.ok("await trio.sleep(0)\nroot = trio.lowlevel.current_root_task()")
    assert shared.value("import asyncio\nawait asyncio.sleep(0)\n'slept'") == "'slept'"
    gathered = shared.value(
        "async def twice(x):\n"
        "    await asyncio.sleep(0.01)\n"
        "    return 2 * x\n"
        "await asyncio.gather(twice(1), twice(2))"
    )
    assert gathered == "[2, 4]"
    assert shared.value("await twice(5)") == "10"  # twice names asyncio: an asyncio cell
    timed = "async with asyncio.timeout(5):\n    await asyncio.sleep(0)\nasyncio.current_task() is not None"
    assert shared.value(timed) == "True"
    # trio cells still run on the same, persistent trio loop
    assert shared.value("await trio.sleep(0)\ntrio.lowlevel.current_root_task() is root") == "True"
    # a cell without await stays in the main thread: asyncio.run works there
    assert shared.value("asyncio.run(asyncio.sleep(0, 'ran'))") == "'ran'"


def test_asyncio_tasks_and_objects_persist_across_cells(shared: Kernel) -> None:
    shared.ok(
        "import asyncio\n"
        "bumps = 0\n"
        "async def bump():\n"
        "    global bumps\n"
        "    while True:\n"
        "        bumps += 1\n"
        "        await asyncio.sleep(0.02)\n"
        "bump_task = asyncio.create_task(bump())\n"
        "queue = asyncio.Queue()\n"
        "await queue.put('across cells')"
    )
    try:
        first = int(shared.value("await asyncio.sleep(0.2)\nbumps"))
        second = int(shared.value("await asyncio.sleep(0.2)\nbumps"))
        assert 0 < first < second
        assert shared.value("await queue.get()") == "'across cells'"
    finally:
        shared.ok("bump_task.cancel()\nawait asyncio.sleep(0)")
    assert shared.value("bump_task.cancelled()") == "True"


def test_autoawait_chooses_the_loop(shared: Kernel) -> None:
    shared.ok(
        "class Hidden:  # its asyncio use is out of sight of the cell that awaits it\n"
        "    async def get(self):\n"
        "        import asyncio as aio\n"
        "        await aio.sleep(0)\n"
        "        return 'via asyncio'\n"
        "hidden = Hidden()"
    )
    try:
        assert "auto" in stream_text(shared.ok("%autoawait"))
        reply, outputs = shared.run("await hidden.get()")  # auto: trio
        assert reply["status"] == "error"
        assert "%autoawait asyncio" in stream_text(outputs, "stderr")
        shared.ok("%autoawait asyncio")
        assert shared.value("await hidden.get()") == "'via asyncio'"
        reply, outputs = shared.run("await trio.sleep(0)")
        assert reply["status"] == "error"
        assert "%autoawait trio" in stream_text(outputs, "stderr")
        shared.ok("%autoawait trio")
        shared.ok("await trio.sleep(0)")
        reply, _ = shared.run("%autoawait curio")
        assert reply["ename"] == "UsageError"
    finally:
        shared.ok("%autoawait auto")
    assert "auto" in stream_text(shared.ok("%autoawait"))


def test_asyncio_cell_interrupts(lively: Kernel) -> None:
    lively.ok("kept = 'namespace'")
    reply, outputs, elapsed = lively.interrupted(
        "import asyncio\nprint('started')\nawait asyncio.sleep(60)"
    )
    assert reply["ename"] == "KeyboardInterrupt" and elapsed < 5
    (error,) = of_type(outputs, "error")
    text = plain("\n".join(error["traceback"]))
    assert re.search(r"----> 3 await asyncio.sleep\(60\)", text), text  # where it waited
    assert "aio.py" not in text and "asyncio/" not in text  # no plumbing
    # synchronous code on the asyncio thread: KeyboardInterrupt raised there
    reply, outputs, elapsed = lively.interrupted(
        "async def spin():\n"
        "    await asyncio.sleep(0)\n"
        "    print('started')\n"
        "    while True:\n"
        "        pass\n"
        "await spin()"
    )
    assert reply["ename"] == "KeyboardInterrupt", reply
    assert elapsed < 1.5  # not the bridge's escalation
    (error,) = of_type(outputs, "error")
    text = plain("\n".join(error["traceback"]))
    assert re.search(r"----> \d+ +(while True:|pass)", text), text  # in spin()
    assert "aio.py" not in text and "shell.py" not in text
    assert lively.value("kept") == "'namespace'"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import asyncio\nawait asyncio.sleep(0)", True),
        ("from asyncio import sleep as nap\nawait nap(0)", True),
        ("await nap(0)", True),  # bound to asyncio.sleep in the namespace
        ("await q.get()", True),  # an asyncio.Queue
        ("await uses_aio()", True),  # a function whose code names asyncio
        ("await calls_uses_aio()", True),  # two calls deep
        ("await trio.sleep(0)", False),
        ("await plain()", False),
        ("import asyncio.subprocess", True),
        ("await (", False),  # a syntax error: IPython reports it
    ],
)
def test_which_cells_run_on_asyncio(source: str, expected: bool) -> None:
    import asyncio
    import types

    import trio

    from trikernel.cells.aio import uses_asyncio

    namespace: dict[str, object] = {"asyncio": asyncio, "trio": trio, "nap": asyncio.sleep}
    namespace["q"] = asyncio.Queue()
    code = (
        "async def uses_aio():\n    await asyncio.sleep(0)\n"
        "async def calls_uses_aio():\n    await uses_aio()\n"
        "async def plain():\n    await trio.sleep(0)\n"
    )
    exec(code, namespace)  # one namespace, as IPython's user_ns
    assert all(isinstance(namespace[f], types.FunctionType) for f in ("uses_aio", "plain"))
    assert uses_asyncio(source, namespace) is expected


# ---------------------------------------------------------------------------
# last: the evaluator dies


def test_execution_count_continues_after_an_evaluator_crash(lively: Kernel) -> None:
    reply, outputs = lively.run("import os\nos._exit(3)")
    (started,) = of_type(outputs, "execute_input")
    assert reply["status"] == "error" and reply["ename"] == "EvaluatorDied"
    assert "exited with code 3" in reply["evalue"]
    assert "namespace was reset" in stream_text(outputs, "stderr")
    assert reply["execution_count"] == started["execution_count"]
    reply, outputs = lively.run("print('alive')")
    assert reply["status"] == "ok" and stream_text(outputs) == "alive\n"
    assert reply["execution_count"] == started["execution_count"] + 1
    assert lively.value("'kept' in dir()") == "False"  # a fresh namespace
    with pytest.raises(Empty):  # the ticker died with the old evaluator
        while True:
            msg = lively.kc.get_iopub_msg(timeout=0.5)
            assert "tick" not in str(msg["content"].get("text", "")), msg
