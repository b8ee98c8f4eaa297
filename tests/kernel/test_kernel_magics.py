"""The magics a kernel adds to IPython's, and IPython's debugger for pdb, through the
real kernel process and jupyter_client (as ipykernel has them).

Rules as in test_kernel_process.py: every blocking call has a timeout, the kernel
is shut down in a finally."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager
from support.client import run, shell_reply, stdin_request
from support.iopub import of_type, outputs_until_idle, stream_text
from support.kernel_process import kernel_manager, ready_client

from .conftest import KERNEL_NAME


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    with kernel_manager(KERNEL_NAME) as km, ready_client(km.client(), 60) as kc:
        yield km, kc


def test_connect_info_prints_this_kernels_connection(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    km, kc = kernel
    reply, outputs = run(kc, "%connect_info")
    assert reply["content"]["status"] == "ok"
    text = stream_text(outputs)
    shown = json.loads(text[: text.index("\n\n")])
    assert shown["shell_port"] == km.shell_port and shown["key"] == km.session.key.decode()
    assert f"--existing {Path(km.connection_file).name}" in text


def test_less_and_more_page_a_file(
    kernel: tuple[KernelManager, BlockingKernelClient], tmp_path: Path
) -> None:
    _, kc = kernel
    path = tmp_path / "notes.txt"
    path.write_text("line one\nline two\n")
    for magic in ("less", "more"):
        reply, _ = run(kc, f"%{magic} {path}")
        [page] = reply["content"]["payload"]
        assert page["source"] == "page" and page["data"]["text/plain"] == "line one\nline two\n"
    reply, _ = run(kc, "%less")
    assert reply["content"]["ename"] == "UsageError"


def test_autosave_qtconsole_and_clear(kernel: tuple[KernelManager, BlockingKernelClient]) -> None:
    _, kc = kernel
    reply, outputs = run(kc, "%autosave 60")
    [shown] = of_type(outputs, "display_data")
    assert "set_autosave_interval(60000)" in shown["data"]["application/javascript"]
    assert stream_text(outputs) == "Autosaving every 60 seconds\n"
    reply, _ = run(kc, "%qtconsole")
    assert reply["content"]["ename"] == "UsageError"
    assert "jupyter qtconsole --existing" in reply["content"]["evalue"]
    reply, _ = run(kc, "%clear")
    assert reply["content"]["status"] == "ok"


def test_breakpoint_is_ipythons_debugger(
    kernel: tuple[KernelManager, BlockingKernelClient],
) -> None:
    _, kc = kernel
    msg_id = kc.execute("x = 41\nbreakpoint()\nx += 1\nx", allow_stdin=True)
    request = stdin_request(kc, msg_id)
    assert request["content"]["prompt"].strip().endswith("ipdb>")
    kc.input("p x")
    request = stdin_request(kc, msg_id)
    kc.input("c")
    outputs = outputs_until_idle(kc, msg_id)
    assert shell_reply(kc, msg_id)["content"]["status"] == "ok"
    assert "41" in stream_text(outputs)
    assert of_type(outputs, "execute_result")[0]["data"]["text/plain"] == "42"
