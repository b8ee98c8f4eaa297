"""Cells through the bridge: outputs in order, results, errors, display messages,
silent/store_history, user_expressions, fd-level output, round-trip time."""

from __future__ import annotations

import re
import time

from trikernel.bridge import SubprocessEvaluator

from .conftest import Recorder, request_parent, run


async def test_stream_then_result(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    reply = await run(evaluator, "print('hi'); 1+1")
    assert reply == {"status": "ok", "execution_count": 1, "user_expressions": {}, "payload": []}
    assert [t for t, _, _ in recorder.messages] == ["stream", "execute_result"]
    assert recorder.text() == "hi\n"
    result = recorder.of_type("execute_result")[0]
    assert result == {"data": {"text/plain": "2"}, "metadata": {}, "execution_count": 1}


async def test_stream_order_across_stdout_stderr(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = "import sys\nfor i in range(5):\n    print(i)\n    print(-i, file=sys.stderr)"
    await run(evaluator, code)
    seen = [(c["name"], c["text"]) for c in recorder.of_type("stream")]
    expected = [x for i in range(5) for x in (("stdout", f"{i}\n"), ("stderr", f"{-i}\n"))]
    assert seen == expected


async def test_execution_count(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    assert (await run(evaluator, "1"))["execution_count"] == 1
    assert (await run(evaluator, "2", store_history=False))["execution_count"] == 1
    assert (await run(evaluator, "3"))["execution_count"] == 2
    assert evaluator.execution_count == 2
    counts = [c["execution_count"] for c in recorder.of_type("execute_result")]
    assert counts == [1, 1, 2]


async def test_silent(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    reply = await run(evaluator, "x = 5\nprint('no')\nx", silent=True)
    assert reply["status"] == "ok" and reply["execution_count"] == 0
    assert recorder.messages == []
    reply = await run(evaluator, "x")
    assert reply["execution_count"] == 1
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "5"


async def test_error(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    reply = await run(evaluator, "def f():\n    1/0\nf()")
    assert reply["status"] == "error"
    assert reply["execution_count"] == 1
    assert (reply["ename"], reply["evalue"]) == ("ZeroDivisionError", "division by zero")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply["traceback"]))
    assert "f()" in plain and "ZeroDivisionError" in plain
    (error,) = recorder.of_type("error")
    assert error == {k: reply[k] for k in ("ename", "evalue", "traceback")}


async def test_cells_are_named_like_ipykernels(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    # A .py path that is never written; the source lives in linecache, so
    # inspect.getsource works and tracebacks say "Cell In[n]", as under ipykernel.
    code = "def f():\n    return 1/0\nimport inspect, os\n"
    code += "name = f.__code__.co_filename\n"
    code += "print(name.endswith('.py'), os.path.exists(name), inspect.getsource(f).split()[1])"
    assert (await run(evaluator, code))["status"] == "ok"
    assert recorder.text() == "True False f():\n"
    reply = await run(evaluator, "f()")
    plain = re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(reply["traceback"]))
    assert "Cell In[2], line 1" in plain and "Cell In[1], line 2, in f()" in plain
    assert "----> 2     return 1/0" in plain


async def test_syntax_error(evaluator: SubprocessEvaluator) -> None:
    reply = await run(evaluator, "1 +")
    assert reply["status"] == "error" and reply["ename"] == "SyntaxError"


async def test_exception_group_is_an_error(evaluator: SubprocessEvaluator) -> None:
    code = "raise ExceptionGroup('two', [ValueError(1), KeyError(2)])"
    reply = await run(evaluator, code)
    assert reply["ename"] == "ExceptionGroup"
    assert any("ValueError" in line for line in reply["traceback"])


async def test_display_update_clear(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = (
        "from IPython.display import display, update_display, clear_output\n"
        "display('a', display_id='x')\n"
        "update_display('b', display_id='x')\n"
        "clear_output(wait=True)\n"
    )
    assert (await run(evaluator, code))["status"] == "ok"
    kinds = [t for t, _, _ in recorder.messages]
    assert kinds == ["display_data", "update_display_data", "clear_output"]
    display, update, clear = (c for _, c, _ in recorder.messages)
    assert display["data"] == {"text/plain": "'a'"} and display["transient"] == {"display_id": "x"}
    assert update["data"] == {"text/plain": "'b'"} and update["transient"] == {"display_id": "x"}
    assert clear == {"wait": True}


async def test_html_display(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    await run(evaluator, "from IPython.display import HTML, display\ndisplay(HTML('<b>x</b>'))")
    (display,) = recorder.of_type("display_data")
    assert display["data"]["text/html"] == "<b>x</b>"


async def test_user_expressions(evaluator: SubprocessEvaluator) -> None:
    reply = await run(evaluator, "a = 21", user_expressions={"double": "a*2", "bad": "nope"})
    exprs = reply["user_expressions"]
    assert exprs["double"]["status"] == "ok"
    assert exprs["double"]["data"]["text/plain"] == "42"
    assert exprs["bad"]["status"] == "error" and exprs["bad"]["ename"] == "NameError"


async def test_fd_level_output_before_reply(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    await run(evaluator, "import os\nos.system('echo hi; echo err >&2')")
    assert recorder.text("stdout") == "hi\n"
    assert recorder.text("stderr") == "err\n"


async def test_shell_escape_and_magic(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    await run(evaluator, "!echo from-shell")
    assert "from-shell" in recorder.text()
    recorder.clear()
    reply = await run(evaluator, "%time x = 1")
    assert reply["status"] == "ok"
    assert "Wall time" in recorder.text()


async def test_top_level_await(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    reply = await run(evaluator, "await trio.sleep(0.01)\n'done'")
    assert reply["status"] == "ok"
    assert recorder.of_type("execute_result")[0]["data"]["text/plain"] == "'done'"


async def test_exit_payload(evaluator: SubprocessEvaluator) -> None:
    reply = await run(evaluator, "exit")
    assert reply["payload"] == [{"source": "ask_exit", "keepkernel": False}]


async def test_matplotlib_inline_png(evaluator: SubprocessEvaluator, recorder: Recorder) -> None:
    code = "import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nNone"
    assert (await run(evaluator, code))["status"] == "ok"
    (display,) = recorder.of_type("display_data")
    assert display["data"]["image/png"].startswith("iVBOR")  # base64 of the PNG signature
    recorder.clear()
    assert (await run(evaluator, "%matplotlib inline"))["status"] == "ok"


async def test_pass_round_trip(evaluator: SubprocessEvaluator) -> None:
    await run(evaluator, "pass")
    n = 200
    start = time.perf_counter()
    for _ in range(n):
        await run(evaluator, "pass", store_history=False)
    per_cell = (time.perf_counter() - start) / n
    print(f"\nexecute round trip of `pass`: {per_cell * 1e3:.2f} ms")


async def test_every_output_names_its_request(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = "import os, sys\nprint('a')\nos.system('echo b; echo c >&2')\n1"
    parent = request_parent("cell-7", "execute_request")
    assert (await run(evaluator, code, parent=parent))["status"] == "ok"
    kinds = sorted({o.msg_type for o in recorder.outputs})
    assert kinds == ["execute_result", "stream"]
    # fd 1 is another pipe: ordered with the reply, not with print()
    assert sorted(recorder.text().splitlines()) == ["a", "b"]
    assert recorder.text("stderr") == "c\n"
    assert {o.parent.msg_id for o in recorder.outputs if o.parent is not None} == {"cell-7"}
    assert all(o.parent is not None for o in recorder.outputs)


async def test_output_between_cells_belongs_to_the_latest_request(
    evaluator: SubprocessEvaluator, recorder: Recorder
) -> None:
    code = "async def later():\n    await trio.sleep(0.2)\n    print('later')\nbackground.start_soon(later)"
    await run(evaluator, code, parent=request_parent("first", "execute_request"))
    await run(evaluator, "pass", parent=request_parent("second", "execute_request"))
    await recorder.wait_for(lambda: recorder.text() == "later\n")
    (later,) = recorder.outputs
    assert later.parent is not None and later.parent.msg_id == "second"
