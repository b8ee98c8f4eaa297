"""The kernel as a separate process, driven by jupyter_client (KernelManager from the
installed kernelspec, BlockingKernelClient), nbclient and jupyter_console.

Rules: every blocking call has a timeout; each test shuts its kernel down in a
finally and checks (where it matters) that no process of the tree survives.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import nbformat
import pexpect
import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from support import TIMEOUT
from support.client import run, shell_reply
from support.iopub import iopub_until, of_type, result_text, stream_text
from support.kernel_process import kernel_manager, ready_client
from support.procs import process_tree, wait_gone

from .conftest import KERNEL_NAME


@pytest.fixture
def km() -> Iterator[KernelManager]:
    with kernel_manager(KERNEL_NAME) as manager:
        yield manager


@pytest.fixture
def kc(km: KernelManager) -> Iterator[BlockingKernelClient]:
    with ready_client(km.client()) as client:
        yield client


def test_execute_stream_result_and_error(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "print('hi'); 1 + 1")
    assert reply["content"]["status"] == "ok"
    assert stream_text(outputs) == "hi\n"
    assert result_text(outputs) == ["2"]
    reply, outputs = run(kc, "1/0")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "ZeroDivisionError"
    assert [c["ename"] for c in of_type(outputs, "error")] == ["ZeroDivisionError"]


def test_idle_never_overtakes_output(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "for i in range(2000): print(i)")
    assert reply["content"]["status"] == "ok"
    assert stream_text(outputs).split() == [str(i) for i in range(2000)]


def test_output_before_a_blocking_call_arrives_quickly(kc: BlockingKernelClient) -> None:
    msg_id = kc.execute("print('early', flush=False); import time; time.sleep(3)")
    start = time.monotonic()
    msg = iopub_until(kc, msg_id, lambda m: m["msg_type"] == "stream")
    latency = time.monotonic() - start
    assert msg["content"]["text"] == "early\n"
    assert latency < 1.0  # well before the 3 s sleep ends (target: 200 ms)


def test_stdin_round_trip_and_password(kc: BlockingKernelClient) -> None:
    prompts: list[tuple[str, bool]] = []

    def answer(msg: dict) -> None:
        prompts.append((msg["content"]["prompt"], msg["content"]["password"]))
        kc.input("secret" if msg["content"]["password"] else "alice")

    code = "import getpass\nname = input('name? ')\npw = getpass.getpass('pw? ')\nprint(name, pw)"
    reply, outputs = run(kc, code, allow_stdin=True, stdin_hook=answer)
    assert reply["content"]["status"] == "ok"
    assert stream_text(outputs).strip().endswith("alice secret")
    assert prompts == [("name? ", False), ("pw? ", True)]


def test_input_without_stdin_is_a_clear_error(kc: BlockingKernelClient) -> None:
    reply, _ = run(kc, "input('x')", allow_stdin=False)
    assert reply["content"]["status"] == "error"
    assert (
        "StdinNotImplemented" in reply["content"]["ename"]
        or "stdin" in reply["content"]["evalue"].lower()
    )


def test_interrupt_message_mode_keeps_namespace(
    km: KernelManager, kc: BlockingKernelClient
) -> None:
    run(kc, "x = 41")
    msg_id = kc.execute("import time; time.sleep(60)")
    time.sleep(1)
    start = time.monotonic()
    km.interrupt_kernel()
    reply = shell_reply(kc, msg_id)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - start < 5
    reply, outputs = run(kc, "x + 1")
    assert result_text(outputs) == ["42"]


def test_sigint_to_the_process_group_interrupts(
    km: KernelManager, kc: BlockingKernelClient
) -> None:
    # Signal mode, as jupyter_client does it: killpg(SIGINT) reaches the kernel process.
    msg_id = kc.execute("import time; time.sleep(60)")
    time.sleep(1)
    assert km.provisioner is not None
    os.killpg(os.getpgid(km.provisioner.process.pid), signal.SIGINT)
    reply = shell_reply(kc, msg_id)
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert km.is_alive()
    assert run(kc, "1")[0]["content"]["status"] == "ok"


def test_restart_gives_a_fresh_namespace(km: KernelManager, kc: BlockingKernelClient) -> None:
    run(kc, "marker = 'before restart'")
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=TIMEOUT)
    reply, _ = run(kc, "marker")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "NameError"


def test_shutdown_leaves_no_process_behind(km: KernelManager, kc: BlockingKernelClient) -> None:
    assert km.provisioner is not None
    tree = process_tree(km.provisioner.process.pid)
    assert len(tree) >= 2  # the kernel and its evaluator
    km.shutdown_kernel(now=False)
    wait_gone(tree, 10)


def test_exit_in_a_cell_stops_the_kernel(km: KernelManager, kc: BlockingKernelClient) -> None:
    # As ipykernel: the reply carries the ask_exit payload, then the kernel process ends.
    assert km.provisioner is not None
    tree = process_tree(km.provisioner.process.pid)
    reply, _ = run(kc, "exit()")
    assert reply["content"]["payload"] == [{"source": "ask_exit", "keepkernel": False}]
    wait_gone(tree, TIMEOUT)


def test_who_lists_only_the_users_names(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "mine = 1\n%who")
    assert reply["content"]["status"] == "ok"
    assert stream_text(outputs).split() == ["mine"]  # not background, trio


def test_nbclient_runs_a_notebook() -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("print('from a notebook')"),
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot as plt\nfig, ax = plt.subplots()\nax.plot([1, 2, 3])\nplt.show()"
        ),
        nbformat.v4.new_code_cell("6 * 7"),
        nbformat.v4.new_code_cell("raise ValueError('allowed')"),
    ]
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=60, allow_errors=True).execute()
    first, figure, result, error = (cell.outputs for cell in nb.cells)
    assert first[0]["text"] == "from a notebook\n"
    assert any("image/png" in out.get("data", {}) for out in figure)
    assert result[0]["data"]["text/plain"] == "42"
    assert error[0]["ename"] == "ValueError"


def test_nbclient_captures_into_an_output_widget() -> None:
    # nbclient implements the frontend side of ipywidgets' Output: while the widget's
    # msg_id is set, outputs of that request go into the widget (and are synced back).
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import ipywidgets\nout = ipywidgets.Output()\ndisplay(out)"),
        nbformat.v4.new_code_cell("with out:\n    print('in the widget')\nprint('in the cell')"),
        nbformat.v4.new_code_cell("print([o['text'] for o in out.outputs])"),
    ]
    NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=60).execute()
    _, captured, synced = (cell.outputs for cell in nb.cells)
    assert [o["text"] for o in captured] == ["in the cell\n"]
    assert [o["text"] for o in synced] == ["['in the widget\\n']\n"]


def test_jupyter_console_in_a_terminal() -> None:
    child = pexpect.spawn(
        sys.executable,
        ["-m", "jupyter_console", f"--kernel={KERNEL_NAME}", "--simple-prompt"],
        env={**os.environ, "TERM": "dumb"},
        encoding="utf-8",
        timeout=60,
    )
    try:
        child.expect(r"In \[1\]: ")
        child.sendline("1+1")
        child.expect(r"Out\[1\]: 2")
        child.expect(r"In \[2\]: ")
        child.sendline("print('got', input('who? '))")
        child.expect("who\\? ")
        child.sendline("bob")
        child.expect("got bob")
        child.expect(r"In \[3\]: ")
        child.sendline("exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)


def test_kernel_process_imports_neither_zmq_nor_ipython() -> None:
    requires = importlib.metadata.requires("trikernel") or []
    runtime = [r for r in requires if "extra ==" not in r]
    assert not any("zmq" in r.lower() for r in runtime), runtime
    code = (
        "import sys, trikernel.kernel, trikernel.launch, trikernel.client, trikernel.bridge\n"
        "print(sorted(m for m in sys.modules if 'zmq' in m or m.startswith('IPython')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


def test_unencodable_output_is_an_error_and_odd_text_survives(kc: BlockingKernelClient) -> None:
    reply, _ = run(kc, "display({'application/json': {'x': float('nan')}}, raw=True)")
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "ValueError"  # as ipykernel: NaN is not JSON
    text = "caf\u00e9 \u2603 " + chr(0xD800)
    reply, outputs = run(
        kc,
        "s = 'caf\\u00e9 \\u2603 ' + chr(0xd800); display({'text/plain': s}, raw=True); print(s)",
    )
    assert reply["content"]["status"] == "ok"
    shown = [c["data"]["text/plain"] for c in of_type(outputs, "display_data")]
    assert shown == [text]
    assert stream_text(outputs) == text + "\n"


def test_big_displays_back_to_back_all_arrive_then_idle(kc: BlockingKernelClient) -> None:
    # A healthy client still reading one big output must not lose the next one, nor
    # the idle status after it (the per-subscriber byte cap is for stalled readers).
    code = "for c in 'ab': display({'text/plain': c * 40_000_000}, raw=True)\nprint('done')"
    reply, outputs = run(kc, code)
    assert reply["content"]["status"] == "ok"
    shown = [c["data"]["text/plain"] for c in of_type(outputs, "display_data")]
    assert [(s[0], len(s)) for s in shown] == [("a", 40_000_000), ("b", 40_000_000)]
    assert stream_text(outputs) == "done\n"
