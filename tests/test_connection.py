"""trikernel.connection: reading, validating and writing connection files."""

from __future__ import annotations

import json
import os
import socket
import stat
import tempfile
from typing import Any

import pytest
from jupyter_client.blocking import BlockingKernelClient
from jupyter_client.connect import LocalPortCache as JcLocalPortCache
from jupyter_client.connect import find_connection_file as jc_find
from jupyter_client.connect import write_connection_file as jc_write
from jupyter_client.manager import KernelManager

from trikernel import connection
from trikernel.connection import (
    ConnectionInfo,
    LocalPortCache,
    default_runtime_dir,
    find_connection_file,
    new_connection_info,
    read_connection_file,
    save_connection_file,
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
    save_connection_file(path, info)
    client = BlockingKernelClient()
    client.load_connection_file(str(path))
    assert (client.shell_port, client.hb_port, client.ip) == (1, 5, "127.0.0.1")
    assert client.session.key == b"s3cret"


def test_write_is_0600_and_round_trips(tmp_path):
    path = tmp_path / "c.json"
    info = new_connection_info()
    save_connection_file(path, info)
    assert mode(path) == 0o600
    assert read_connection_file(path) == info
    assert os.listdir(tmp_path) == ["c.json"]  # no temp file left behind


def test_write_replaces_a_world_readable_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text("old")
    path.chmod(0o644)
    save_connection_file(path, new_connection_info())
    assert mode(path) == 0o600


def test_write_creates_private_parent_dir(tmp_path):
    path = tmp_path / "runtime" / "c.json"
    save_connection_file(path, new_connection_info())
    assert mode(path.parent) == 0o700 and path.exists()


def test_write_failure_is_connection_file_error(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(ConnectionFileError, match="cannot write"):
        save_connection_file(tmp_path / "file" / "c.json", new_connection_info())


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
    data.update(jupyter_session="/nb.ipynb", other={"n": [1]})
    info = read_connection_file(dump(tmp_path, data))
    assert (info.transport, info.signature_scheme, info.kernel_name) == ("tcp", "hmac-sha256", None)
    assert info.extra == {"jupyter_session": "/nb.ipynb", "other": {"n": [1]}}


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


# --- extra keys and CURVE ---


def test_extra_keys_survive_read_and_save(tmp_path):
    src = dump(tmp_path, {**GOOD, "jupyter_session": "/a.ipynb", "kernel_id": "k1"})
    info = read_connection_file(src)
    save_connection_file(tmp_path / "again.json", info)
    assert json.loads((tmp_path / "again.json").read_text()) == json.loads(open(src).read())
    assert read_connection_file(tmp_path / "again.json") == info


def test_jupyter_server_style_file_keeps_its_session(tmp_path):
    path, _ = jc_write(str(tmp_path / "k.json"), key=b"k", jupyter_session="/nb.ipynb")
    assert read_connection_file(path).extra == {"jupyter_session": "/nb.ipynb"}


@pytest.mark.parametrize("name", ["curve_publickey", "curve_secretkey", "curve_serverkey"])
def test_curve_keys_are_refused(tmp_path, name):
    with pytest.raises(ConnectionFileError, match=f"{name}: CURVE encryption is not supported"):
        read_connection_file(
            dump(tmp_path, {**GOOD, name: "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"})
        )


def test_null_curve_key_is_not_provisioned(tmp_path):
    info = read_connection_file(dump(tmp_path, {**GOOD, "curve_publickey": None}))
    assert info.extra == {}


def test_extra_cannot_shadow_typed_fields():
    with pytest.raises(ValueError, match="typed fields"):
        ConnectionInfo("tcp", "127.0.0.1", 1, 2, 3, 4, 5, "k", extra={"shell_port": 9})


def test_to_dict_appends_extra():
    info = ConnectionInfo("tcp", "127.0.0.1", 1, 2, 3, 4, 5, "k", extra={"z": 1})
    assert list(info.to_dict())[-1] == "z"


# --- write_connection_file: jupyter_client's semantics ---

PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def test_write_defaults_like_jupyter_client(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    fname, cfg = write_connection_file()
    jc_fname, jc_cfg = jc_write()
    assert os.path.dirname(fname) == os.path.dirname(jc_fname) == str(tmp_path)
    assert fname.endswith(".json") and fname != jc_fname
    assert list(cfg) == list(jc_cfg)
    assert {k: v for k, v in cfg.items() if k not in PORTS} == {
        k: v for k, v in jc_cfg.items() if k not in PORTS
    }
    assert cfg["ip"] == "127.0.0.1" and cfg["key"] == "" and cfg["kernel_name"] == ""
    assert json.loads(open(fname).read()) == cfg
    assert open(fname).read() == json.dumps(cfg, indent=2)


def test_write_picks_five_distinct_bindable_ports(tmp_path):
    _, cfg = write_connection_file(str(tmp_path / "c.json"), ip="127.0.0.1")
    ports = [cfg[p] for p in PORTS]
    assert len(set(ports)) == 5 and all(p > 0 for p in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_write_keeps_given_ports_and_fills_the_rest_in_order(tmp_path, monkeypatch):
    monkeypatch.setattr(connection, "_pick_tcp_ports", lambda ip, n: list(range(9001, 9001 + n)))
    _, cfg = write_connection_file(str(tmp_path / "c.json"), iopub_port=7, hb_port=-1)
    assert [cfg[p] for p in PORTS] == [9001, 7, 9002, 9003, 9004]


def test_write_extra_kwargs_key_and_name(tmp_path):
    fname, cfg = write_connection_file(
        str(tmp_path / "c.json"), key=b"s3", kernel_name="tk", jupyter_session="/x.ipynb"
    )
    assert (cfg["key"], cfg["kernel_name"], cfg["jupyter_session"]) == ("s3", "tk", "/x.ipynb")
    assert read_connection_file(fname).extra == {"jupyter_session": "/x.ipynb"}


def test_write_accepts_str_key(tmp_path):
    assert write_connection_file(str(tmp_path / "c.json"), key="s")[1]["key"] == "s"


def test_write_is_0600_replacing_a_readable_file_and_sets_sticky_dir(tmp_path):
    d = tmp_path / "rt"
    d.mkdir(mode=0o700)
    path = d / "c.json"
    path.write_text("old")
    path.chmod(0o644)
    write_connection_file(str(path))
    assert mode(path) == 0o600
    assert os.stat(d).st_mode & stat.S_ISVTX


def test_write_ipc_picks_smallest_free_numbers_like_jupyter_client(tmp_path):
    base = str(tmp_path / "kern")
    for n in (1, 3):
        open(f"{base}-{n}", "w").close()
    _, cfg = write_connection_file(str(tmp_path / "a.json"), ip=base, transport="ipc", stdin_port=9)
    _, jc_cfg = jc_write(str(tmp_path / "b.json"), ip=base, transport="ipc", stdin_port=9)
    assert [cfg[p] for p in PORTS] == [jc_cfg[p] for p in PORTS] == [2, 4, 9, 5, 6]
    assert read_connection_file(tmp_path / "a.json").url("shell") == f"ipc://{base}-2"


def test_write_ipc_default_ip_is_localhost_like_jupyter_client(tmp_path):
    _, cfg = write_connection_file(str(tmp_path / "a.json"), transport="ipc")
    _, jc_cfg = jc_write(str(tmp_path / "b.json"), transport="ipc")
    assert cfg["ip"] == jc_cfg["ip"] == "127.0.0.1"


def test_jupyter_client_loads_our_written_file(tmp_path):
    fname, cfg = write_connection_file(str(tmp_path / "c.json"), key=b"k3y", kernel_name="tk")
    km = KernelManager()
    km.load_connection_file(fname)
    assert [getattr(km, p) for p in PORTS] == [cfg[p] for p in PORTS]
    assert (km.ip, km.transport, km.session.key) == ("127.0.0.1", "tcp", b"k3y")
    kc = BlockingKernelClient(connection_file=fname)
    kc.load_connection_file()
    assert (kc.shell_port, kc.hb_port, kc.session.key) == (
        cfg["shell_port"],
        cfg["hb_port"],
        b"k3y",
    )


def test_jupyter_client_loads_our_saved_file_with_extras(tmp_path):
    info = read_connection_file(dump(tmp_path, {**GOOD, "jupyter_session": "/n.ipynb"}))
    save_connection_file(tmp_path / "saved.json", info)
    km = KernelManager()
    km.load_connection_file(str(tmp_path / "saved.json"))
    assert (km.shell_port, km.control_port, km.session.key) == (35181, 48811, GOOD["key"].encode())


def test_we_read_jupyter_client_ipc_file_it_wrote_for_a_kernel_manager(tmp_path):
    km = KernelManager(
        transport="ipc", ip=str(tmp_path / "k"), connection_file=str(tmp_path / "c.json")
    )
    km.write_connection_file()
    info = read_connection_file(tmp_path / "c.json")
    assert (info.transport, info.shell_port, info.key) == (
        "ipc",
        km.shell_port,
        km.session.key.decode(),
    )


# --- find_connection_file: jupyter_client's answers on the same directories ---


@pytest.fixture
def conn_dirs(tmp_path, monkeypatch):
    a, b, cwd = tmp_path / "a", tmp_path / "b", tmp_path / "cwd"
    for d in (a, b, cwd):
        d.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(b))
    return a, b, cwd


def touch(path, atime):
    path.write_text("{}")
    os.utime(path, (atime, 1_000_000))
    return str(path)


def both(*args, **kwargs):
    theirs = jc_find(*args, **kwargs)
    assert find_connection_file(*args, **kwargs) == theirs
    return theirs


def test_find_latest_atime_across_dirs(conn_dirs):
    a, b, _ = conn_dirs
    touch(a / "kernel-1.json", 2_000_000)
    newest = touch(b / "kernel-2.json", 3_000_000)
    touch(b / "kernel-3.json", 1_000_000)
    assert both(path=[str(a), str(b)]) == newest
    touch(a / "kernel-1.json", 4_000_000)
    assert both(path=[str(a), str(b)]) == str(a / "kernel-1.json")


def test_find_default_path_is_cwd_then_runtime_dir(conn_dirs):
    _, b, cwd = conn_dirs
    touch(cwd / "kernel-x.json", 1)
    touch(b / "kernel-y.json", 2)
    assert both() == str(b / "kernel-y.json")
    assert both("kernel-x.json") == str(cwd / "kernel-x.json")


def test_find_substring_and_glob(conn_dirs):
    a, _, _ = conn_dirs
    touch(a / "kernel-abc123.json", 5)
    touch(a / "kernel-abd.json", 6)
    assert both("abc", path=str(a)) == str(a / "kernel-abc123.json")
    assert both("ab", path=str(a)) == str(a / "kernel-abd.json")
    assert both("kernel-abc*", path=[str(a)]) == str(a / "kernel-abc123.json")


def test_find_exact_name_wins_over_newer_matches(conn_dirs):
    a, b, _ = conn_dirs
    touch(a / "k.json", 1)
    touch(b / "k.json.bak", 9)
    assert both("k.json", path=[str(a), str(b)]) == str(a / "k.json")


def test_find_exact_first_dir_wins(conn_dirs):
    a, b, _ = conn_dirs
    touch(a / "same.json", 1)
    touch(b / "same.json", 9)
    assert both("same.json", path=[str(a), str(b)]) == str(a / "same.json")


def test_find_absolute_quoted_and_expanded(conn_dirs, monkeypatch):
    a, _, _ = conn_dirs
    target = touch(a / "kernel-q.json", 1)
    assert both(target, path=[]) == target
    assert both(f'"{target}"', path=[]) == target
    monkeypatch.setenv("HOME", str(a.parent))
    monkeypatch.setenv("TK_DIR", "a")
    assert both("kernel-q.json", path=["~/a"]) == target
    assert both("kernel-q.json", path=[f"{a.parent}/$TK_DIR"]) == target


def test_find_nothing_is_oserror_like_jupyter_client(conn_dirs):
    a, _, _ = conn_dirs
    with pytest.raises(OSError):
        jc_find("nothing", path=[str(a)])
    with pytest.raises(OSError, match="nothing"):
        find_connection_file("nothing", path=[str(a)])


def test_find_profile_is_ignored_with_a_warning(conn_dirs):
    a, _, _ = conn_dirs
    touch(a / "kernel-p.json", 1)
    with pytest.warns(UserWarning, match="no profiles"):
        assert find_connection_file(path=str(a), profile="default") == str(a / "kernel-p.json")


# --- LocalPortCache ---


def test_port_cache_instance_is_shared():
    assert LocalPortCache.instance() is LocalPortCache.instance()
    assert isinstance(LocalPortCache(), LocalPortCache)


def test_port_cache_never_hands_a_port_out_twice(monkeypatch):
    picks = iter([[5001], [5001], [5002], [5001], [5003]])
    monkeypatch.setattr(connection, "_pick_tcp_ports", lambda ip, n: next(picks))
    cache = LocalPortCache()
    assert [cache.find_available_port("127.0.0.1") for _ in range(2)] == [5001, 5002]
    cache.return_port(5001)
    assert cache.find_available_port("127.0.0.1") == 5001
    assert cache.find_available_port("127.0.0.1") == 5003


def test_port_cache_real_ports_bind_and_match_jupyter_clients_behaviour():
    ours, theirs = LocalPortCache(), JcLocalPortCache()
    for cache in (ours, theirs):
        ports = [cache.find_available_port("127.0.0.1") for _ in range(20)]
        assert len(set(ports)) == 20 and set(ports) == cache.currently_used_ports
        cache.return_port(ports[0])
        cache.return_port(1)  # never handed out: tolerated
        assert ports[0] not in cache.currently_used_ports
