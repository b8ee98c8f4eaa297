"""The user's IPython profile applies to the kernel as under ipykernel: config files,
extensions (%store), startup files, exec_lines; a failing startup file is reported
and the kernel works. Driven through the real kernel process and jupyter_client,
with a temporary IPYTHONDIR."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from support.client import run
from support.iopub import of_type, stream_text
from support.kernel_process import kernel_manager, ready_client

from .conftest import KERNEL_NAME


@pytest.fixture(scope="module")
def kc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BlockingKernelClient]:
    ipython_dir = tmp_path_factory.mktemp("ipython")
    profile = ipython_dir / "profile_default"
    (profile / "startup").mkdir(parents=True)
    (profile / "startup" / "00-first.py").write_text("from_startup = 'started'\n")
    (profile / "startup" / "10-broken.py").write_text("raise ValueError('broken startup')\n")
    (profile / "ipython_config.py").write_text(
        "c.InteractiveShell.ast_node_interactivity = 'all'\n"
    )
    (profile / "ipython_kernel_config.py").write_text(
        "c.IPKernelApp.exec_lines = ['from_exec_lines = from_startup * 2']\n"
    )
    env = {**os.environ, "IPYTHONDIR": str(ipython_dir)}
    with kernel_manager(KERNEL_NAME, env=env) as km, ready_client(km.client(), 60) as client:
        yield client


def test_startup_files_and_exec_lines_ran(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "from_exec_lines")
    assert reply["content"]["status"] == "ok", reply["content"]
    [result] = of_type(outputs, "execute_result")
    assert result["data"]["text/plain"] == "'startedstarted'"


def test_config_files_apply(kc: BlockingKernelClient) -> None:
    _, outputs = run(kc, "1\n2")  # ast_node_interactivity = 'all': both are shown
    assert [r["data"]["text/plain"] for r in of_type(outputs, "execute_result")] == ["1", "2"]
    _, outputs = run(kc, "'IPKernelApp' in get_ipython().config")  # what tqdm.auto checks
    assert of_type(outputs, "execute_result")[0]["data"]["text/plain"] == "True"


def test_store_magic_is_loaded(kc: BlockingKernelClient) -> None:
    reply, outputs = run(kc, "kept = 42\n%store kept")
    assert reply["content"]["status"] == "ok", reply["content"]
    assert "Stored 'kept'" in stream_text(outputs)


def test_a_failing_startup_file_does_not_stop_the_kernel(kc: BlockingKernelClient) -> None:
    reply, _ = run(kc, "'alive'")
    assert reply["content"]["status"] == "ok"
