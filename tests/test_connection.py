"""trikernel.connection: reading, validating and writing connection files."""

from __future__ import annotations

import json
import os
import stat
from typing import Any

import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.connect import write_connection_file as jc_write

from trikernel.connection import (
    ConnectionInfo,
    default_runtime_dir,
    new_connection_info,
    read_connection_file,
    write_connection_file,
)
from trikernel.errors import ConnectionFileError

GOOD: dict[str, Any] = {
    "shell_port": 35181,
    "iopub_port": 44131,
    "stdin_port": 53171,
    "control_port": 48811,
    "hb_port": 55055,
    "ip": "127.0.0.1",
    "key": "628a600c-ce9ab15d57c6f584ed65aec4",
    "transport": "tcp",
    "signature_scheme": "hmac-sha256",
    "kernel_name": "python3",
}


def dump(tmp_path, data) -> str:
    path = tmp_path / "kernel.json"
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_reads_captured_file(tmp_path):
    info = read_connection_file(dump(tmp_path, GOOD))
    assert info == ConnectionInfo(
        "tcp", "127.0.0.1", 35181, 44131, 53171, 48811, 55055, GOOD["key"], "hmac-sha256", "python3"
    )


def test_reads_jupyter_client_output(tmp_path):
    path, cfg = jc_write(str(tmp_path / "k.json"), ip="127.0.0.1", key=b"abc", kernel_name="x")
    info = read_connection_file(path)
    assert (info.key, info.kernel_name, info.transport) == ("abc", "x", "tcp")
    assert [info.port(c) for c in ("shell", "iopub", "stdin", "control", "hb")] == [
        cfg["shell_port"],
        cfg["iopub_port"],
        cfg["stdin_port"],
        cfg["control_port"],
        cfg["hb_port"],
    ]


def test_reads_jupyter_client_ipc_output(tmp_path):
    base = str(tmp_path / "kern")
    path, cfg = jc_write(str(tmp_path / "k.json"), ip=base, transport="ipc", key=b"k")
    info = read_connection_file(path)
    assert info.url("shell") == f"ipc://{base}-{cfg['shell_port']}"


def test_jupyter_client_reads_ours(tmp_path):
    path = tmp_path / "ours.json"
    info = new_connection_info(key="s3cret").with_ports(
        shell_port=1, iopub_port=2, stdin_port=3, control_port=4, hb_port=5
    )
    write_connection_file(path, info)
    client = BlockingKernelClient()
    client.load_connection_file(str(path))
    assert (client.shell_port, client.hb_port, client.ip) == (1, 5, "127.0.0.1")
    assert client.session.key == b"s3cret"


def test_write_is_0600_and_round_trips(tmp_path):
    path = tmp_path / "c.json"
    info = new_connection_info()
    write_connection_file(path, info)
    assert mode(path) == 0o600
    assert read_connection_file(path) == info
    assert os.listdir(tmp_path) == ["c.json"]  # no temp file left behind


def test_write_replaces_a_world_readable_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("old")
    path.chmod(0o644)
    write_connection_file(path, new_connection_info())
    assert mode(path) == 0o600


def test_write_creates_private_parent_dir(tmp_path):
    path = tmp_path / "runtime" / "c.json"
    write_connection_file(path, new_connection_info())
    assert mode(path.parent) == 0o700 and path.exists()


def test_write_failure_is_connection_file_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConnectionFileError, match="cannot write"):
        write_connection_file(tmp_path / "file" / "c.json", new_connection_info())


def test_missing_file(tmp_path):
    with pytest.raises(ConnectionFileError, match="nope.json"):
        read_connection_file(tmp_path / "nope.json")


def test_not_json(tmp_path):
    with pytest.raises(ConnectionFileError, match="not valid JSON"):
        read_connection_file(dump(tmp_path, "{shell_port: 1"))


@pytest.mark.parametrize(
    "change, field",
    [
        ({"shell_port": "5555"}, "shell_port"),
        ({"hb_port": 70000}, "hb_port"),
        ({"iopub_port": -1}, "iopub_port"),
        ({"stdin_port": True}, "stdin_port"),
        ({"control_port": None}, "control_port"),
        ({"transport": "udp"}, "transport"),
        ({"signature_scheme": "hmac-nope"}, "signature_scheme"),
        ({"signature_scheme": "md5"}, "signature_scheme"),
        ({"key": 12}, "key"),
        ({"ip": ["127.0.0.1"]}, "ip"),
        ({"kernel_name": 3}, "kernel_name"),
    ],
)
def test_bad_field_is_named(tmp_path, change, field):
    with pytest.raises(ConnectionFileError, match=field):
        read_connection_file(dump(tmp_path, {**GOOD, **change}))


@pytest.mark.parametrize("field", ["ip", "key", "shell_port", "hb_port"])
def test_missing_field_is_named(tmp_path, field):
    data = {k: v for k, v in GOOD.items() if k != field}
    with pytest.raises(ConnectionFileError, match=f"missing field '{field}'"):
        read_connection_file(dump(tmp_path, data))


def test_top_level_must_be_object(tmp_path):
    with pytest.raises(ConnectionFileError, match="JSON object"):
        read_connection_file(dump(tmp_path, [GOOD]))


def test_defaults_and_unknown_keys(tmp_path):
    data = {
        k: v for k, v in GOOD.items() if k not in ("transport", "signature_scheme", "kernel_name")
    }
    data.update(jupyter_session="/nb.ipynb", curve_publickey="x")
    info = read_connection_file(dump(tmp_path, data))
    assert (info.transport, info.signature_scheme, info.kernel_name) == ("tcp", "hmac-sha256", None)


def test_new_connection_info():
    a, b = new_connection_info(), new_connection_info(ip="0.0.0.0", transport="ipc", key="k")
    assert a.to_dict() == {
        "transport": "tcp",
        "ip": "127.0.0.1",
        "shell_port": 0,
        "iopub_port": 0,
        "stdin_port": 0,
        "control_port": 0,
        "hb_port": 0,
        "key": a.key,
        "signature_scheme": "hmac-sha256",
    }
    assert len(a.key) == 33 and a.key != new_connection_info().key
    assert (b.ip, b.transport, b.key) == ("0.0.0.0", "ipc", "k")


def test_with_ports_copies():
    info = new_connection_info()
    bound = info.with_ports(shell_port=5555, hb_port=5556)
    assert (bound.shell_port, bound.hb_port, bound.key) == (5555, 5556, info.key)
    assert info.shell_port == 0


def test_with_ports_rejects_bad_values():
    with pytest.raises(ValueError, match="shell_port"):
        new_connection_info().with_ports(shell_port=65536)
    with pytest.raises(TypeError, match="key"):
        new_connection_info().with_ports(key=1)


def test_urls():
    info = new_connection_info().with_ports(shell_port=5555, hb_port=7)
    assert info.url("shell") == "tcp://127.0.0.1:5555"
    ipc = new_connection_info(ip="/tmp/k", transport="ipc").with_ports(iopub_port=1)
    assert ipc.url("iopub") == "ipc:///tmp/k-1"
    with pytest.raises(ValueError, match="unknown channel"):
        info.url("hb_port")


def test_to_dict_includes_kernel_name_when_set(tmp_path):
    info = read_connection_file(dump(tmp_path, GOOD))
    assert info.to_dict() == GOOD


def test_default_runtime_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path))
    assert default_runtime_dir() == str(tmp_path)
