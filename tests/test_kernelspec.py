"""trikernel.kernelspec: kernel.json content, logos, install destinations, CLI."""

from __future__ import annotations

import json
import os
import struct
import sys
import zlib
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from trikernel import kernelspec
from trikernel.errors import KernelSpecError, NoSuchKernel
from trikernel.kernelspec import LOGOS, KernelSpec, install, kernel_json, main

REPO_SPEC = Path(__file__).resolve().parent.parent / "kernelspec"


def find(kernels_dir, name="trikernel"):
    return KernelSpecManager(kernel_dirs=[str(kernels_dir)]).get_kernel_spec(name)


def test_install_into_prefix_is_found_by_jupyter_client(tmp_path):
    path = install(prefix=str(tmp_path))
    assert path == str(tmp_path / "share" / "jupyter" / "kernels" / "trikernel")
    spec = find(tmp_path / "share" / "jupyter" / "kernels")
    assert spec.display_name == "Python 3 (trikernel)"
    assert spec.argv == [sys.executable, "-m", "trikernel", "-f", "{connection_file}"]
    assert (spec.language, spec.interrupt_mode) == ("python", "message")
    assert sorted(os.listdir(path)) == ["kernel.json", "logo-32x32.png", "logo-64x64.png"]


def test_repo_kernelspec_matches_the_built_in_one():
    assert json.loads((REPO_SPEC / "kernel.json").read_text()) == kernel_json()
    for name, data in LOGOS.items():
        assert (REPO_SPEC / name).read_bytes() == data


def test_kernel_json_is_as_specified():
    assert kernel_json() == {
        "argv": ["python", "-m", "trikernel", "-f", "{connection_file}"],
        "display_name": "Python 3 (trikernel)",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": False},
        "kernel_protocol_version": "5.5",
    }


def png_chunks(data: bytes):
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos = 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert crc == zlib.crc32(kind + body)
        yield kind, body
        pos += 12 + length


@pytest.mark.parametrize("size", [32, 64])
def test_logos_are_valid_pngs_of_their_size(size):
    chunks = dict(png_chunks(LOGOS[f"logo-{size}x{size}.png"]))
    width, height, depth, color = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (width, height, depth, color) == (size, size, 8, 6)  # RGBA
    assert len(zlib.decompress(chunks[b"IDAT"])) == size * (1 + 4 * size)
    assert b"IEND" in chunks


def test_reinstall_overwrites(tmp_path):
    path = install(prefix=str(tmp_path))
    Path(path, "kernel.json").write_text("{}")
    install(prefix=str(tmp_path))
    assert (
        json.loads(Path(path, "kernel.json").read_text())["display_name"] == "Python 3 (trikernel)"
    )


def test_name_is_lowercased_like_jupyter_client(tmp_path):
    path = install(prefix=str(tmp_path), name="Tri.K-2_x")
    assert os.path.basename(path) == "tri.k-2_x"
    assert find(Path(path).parent, "Tri.K-2_x").display_name == "Python 3 (trikernel)"


@pytest.mark.parametrize("name", ["", "a b", "../evil", "a/b", "é"])
def test_invalid_names_rejected(tmp_path, name):
    with pytest.raises(ValueError, match="invalid kernel name"):
        install(prefix=str(tmp_path), name=name)
    assert list(tmp_path.iterdir()) == []


def test_user_install_goes_to_jupyter_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path))
    assert install(user=True) == str(tmp_path / "kernels" / "trikernel")


def test_sys_prefix_install(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert install(sys_prefix=True) == str(tmp_path / "share/jupyter/kernels/trikernel")


def test_default_install_is_first_system_path(tmp_path, monkeypatch):
    import jupyter_core.paths

    monkeypatch.setattr(jupyter_core.paths, "SYSTEM_JUPYTER_PATH", [str(tmp_path), "/nowhere"])
    assert install() == str(tmp_path / "kernels" / "trikernel")


def test_conflicting_destinations_rejected(tmp_path):
    with pytest.raises(ValueError, match="at most one"):
        install(user=True, prefix=str(tmp_path))


def test_main_prints_where_it_installed(tmp_path, capsys):
    assert main(["--prefix", str(tmp_path), "--name", "tk"]) == 0
    expected = tmp_path / "share" / "jupyter" / "kernels" / "tk"
    assert str(expected) in capsys.readouterr().out
    assert (expected / "kernel.json").exists()


def test_main_rejects_two_destinations(tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["--user", "--prefix", str(tmp_path)])
    assert exc.value.code == 2


def test_main_reports_bad_name(tmp_path, capsys):
    assert main(["--prefix", str(tmp_path), "--name", "a b"]) == 2
    assert "invalid kernel name" in capsys.readouterr().err


def test_main_reports_unwritable_destination(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["--prefix", str(tmp_path / "file")]) == 1
    assert "--user" in capsys.readouterr().err


def test_public_names():
    assert set(kernelspec.__all__) == {
        "KERNEL_NAME",
        "LOGOS",
        "NATIVE_KERNEL_NAME",
        "KernelSpec",
        "find_kernel_specs",
        "get_kernel_spec",
        "kernel_dirs",
        "kernel_json",
        "install",
        "main",
    }


# --- finding and reading, against jupyter_client's KernelSpecManager on the same paths ---


@pytest.fixture
def jpath(tmp_path, monkeypatch):
    """Two JUPYTER_PATH dirs (a, then b) as the only search path besides empty user/system."""
    a, b = tmp_path / "a", tmp_path / "b"
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(a), str(b)]))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("JUPYTER_PREFER_ENV_PATH", "0")
    import jupyter_core.paths

    monkeypatch.setattr(jupyter_core.paths, "SYSTEM_JUPYTER_PATH", [str(tmp_path / "sys")])
    monkeypatch.setattr(jupyter_core.paths, "ENV_JUPYTER_PATH", [str(tmp_path / "env")])
    return a, b


def put(root, name, **fields):
    d = root / "kernels" / name
    d.mkdir(parents=True, exist_ok=True)
    spec = {"argv": ["prog", "{connection_file}"], "display_name": name, "language": "x"}
    spec.update(fields)
    (d / "kernel.json").write_text(json.dumps(spec))
    return d


def jc_specs():
    return KernelSpecManager().find_kernel_specs()


def test_kernel_dirs_are_jupyter_clients(jpath):
    assert kernelspec.kernel_dirs() == KernelSpecManager().kernel_dirs


def test_find_matches_jupyter_client(jpath):
    a, b = jpath
    put(a, "one")
    put(b, "one", display_name="shadowed")
    put(b, "Two")
    (b / "kernels" / "empty").mkdir()
    found = kernelspec.find_kernel_specs()
    assert found == jc_specs()
    assert found["one"] == str(a / "kernels" / "one")
    assert found["two"] == str(b / "kernels" / "Two")
    assert "empty" not in found


def test_first_dir_wins_in_get(jpath):
    a, b = jpath
    put(a, "one", display_name="first")
    put(b, "one", display_name="second")
    assert kernelspec.get_kernel_spec("ONE").display_name == "first"


def test_native_python3_when_no_file_defines_it(jpath):
    import ipykernel.kernelspec

    found = kernelspec.find_kernel_specs()
    assert found == jc_specs() == {"python3": ipykernel.kernelspec.RESOURCES}
    ours, theirs = get_spec("python3"), KernelSpecManager().get_kernel_spec("python3")
    assert ours.argv == tuple(theirs.argv)
    assert ours.argv[0] == sys.executable
    assert (ours.display_name, ours.language) == (theirs.display_name, theirs.language)
    assert (ours.resource_dir, ours.interrupt_mode) == (theirs.resource_dir, "signal")
    assert ours.kernel_protocol_version == theirs.kernel_protocol_version
    # ipykernel 7 also declares CURVE support; we leave that out (NULL mechanism only).
    assert {**ours.metadata, "supported_encryption": ["curve"]} == theirs.metadata


def get_spec(name):
    return kernelspec.get_kernel_spec(name)


def test_python_means_python3(jpath):
    a, _ = jpath
    put(a, "python3", display_name="mine")
    put(a, "python", display_name="never used")
    assert get_spec("python").display_name == "mine"
    assert get_spec("Python3").resource_dir == str(a / "kernels" / "python3")


def test_file_python3_shadows_native(jpath):
    a, _ = jpath
    put(a, "python3", display_name="mine")
    assert kernelspec.find_kernel_specs() == jc_specs()
    assert get_spec("python3").to_dict() == KernelSpecManager().get_kernel_spec("python3").to_dict()


def test_spec_fields_equal_jupyter_clients(jpath):
    a, _ = jpath
    put(
        a,
        "full",
        env={"A": "1"},
        metadata={"m": [1]},
        interrupt_mode="message",
        kernel_protocol_version="5.3",
        extra_unknown_key=True,
    )
    ours = get_spec("full")
    assert ours.to_dict() == KernelSpecManager().get_kernel_spec("full").to_dict()
    assert (ours.name, ours.resource_dir) == ("full", str(a / "kernels" / "full"))


def test_defaults_equal_jupyter_clients(jpath):
    a, _ = jpath
    (a / "kernels" / "bare").mkdir(parents=True)
    (a / "kernels" / "bare" / "kernel.json").write_text('{"argv": ["x"]}')
    assert get_spec("bare").to_dict() == KernelSpecManager().get_kernel_spec("bare").to_dict()
    assert get_spec("bare").interrupt_mode == "signal"


def test_installed_trikernel_is_found(jpath):
    a, _ = jpath
    install(prefix=str(a.parent / "p"))
    spec = kernelspec.get_kernel_spec("trikernel", dirs=[str(a.parent / "p/share/jupyter/kernels")])
    assert (spec.interrupt_mode, spec.argv[0]) == ("message", sys.executable)


def test_unknown_name_lists_known(jpath, monkeypatch):
    a, _ = jpath
    put(a, "zeta")
    put(a, "alpha")
    monkeypatch.setattr(kernelspec, "_native_resource_dir", lambda: None)
    with pytest.raises(NoSuchKernel, match=r"'nope'.*known kernelspecs: alpha, zeta") as exc:
        get_spec("nope")
    assert exc.value.known == ("alpha", "zeta")
    assert not isinstance(exc.value, KeyError)


def test_no_native_without_ipykernel(jpath, monkeypatch):
    monkeypatch.setattr(kernelspec, "_native_resource_dir", lambda: None)
    assert kernelspec.find_kernel_specs() == {}
    with pytest.raises(NoSuchKernel, match="known kernelspecs: none"):
        get_spec("python")


def test_native_resource_dir_is_ipykernels():
    import ipykernel.kernelspec

    assert kernelspec._native_resource_dir() == ipykernel.kernelspec.RESOURCES


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "top level"),
        ('{"display_name": "x"}', "missing field 'argv'"),
        ('{"argv": []}', "argv must be"),
        ('{"argv": "python -m x"}', "argv must be"),
        ('{"argv": ["x", 1]}', "argv must be"),
        ('{"argv": ["x"], "display_name": 3}', "display_name must be"),
        ('{"argv": ["x"], "interrupt_mode": "shout"}', "interrupt_mode must be"),
        ('{"argv": ["x"], "env": []}', "env must be"),
        ('{"argv": ["x"], "env": {"A": 1}}', "env values"),
        ('{"argv": ["x"], "metadata": 1}', "metadata must be"),
    ],
)
def test_bad_kernel_json_names_file_and_field(jpath, text, field):
    a, _ = jpath
    d = a / "kernels" / "bad"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(text)
    with pytest.raises(KernelSpecError, match=field) as exc:
        get_spec("bad")
    assert str(d / "kernel.json") in str(exc.value)


def test_interrupt_mode_is_caseless(jpath):
    a, _ = jpath
    put(a, "k", interrupt_mode="Message")
    assert get_spec("k").interrupt_mode == "message"


def spec_with(argv, **kw):
    return KernelSpec("k", "/res/k", tuple(argv), **kw)


@pytest.mark.parametrize(
    "head", ["python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info[:2])]
)
def test_command_python_head_is_this_interpreter(head):
    assert spec_with([head, "-m", "k"]).command("c.json")[0] == sys.executable


@pytest.mark.parametrize("head", ["python2", "python3.0", "/usr/bin/python", "pythonw"])
def test_command_other_heads_kept(head):
    assert spec_with([head]).command("c.json") == [head]


def test_command_substitutions(tmp_path):
    (tmp_path / "real.json").write_text("{}")
    (tmp_path / "link.json").symlink_to(tmp_path / "real.json")
    argv = ["k", "-f", "{connection_file}", "{prefix}/x", "--r={resource_dir}", "{unknown}", "{}"]
    cmd = spec_with(argv).command(str(tmp_path / "link.json"), extra_args=["--e", "{prefix}"])
    real = os.path.realpath(tmp_path / "real.json")
    assert cmd == [
        "k", "-f", real, f"{sys.prefix}/x", "--r=/res/k", "{unknown}", "{}", "--e", sys.prefix,
    ]  # fmt: skip


def test_command_launch_kwargs_substituted_and_win():
    cmd = spec_with(["k", "{cwd}", "{prefix}"]).command("c", cwd="/w", prefix="/p")
    assert cmd == ["k", "/w", "/p"]


def test_command_matches_jupyter_clients_format_kernel_cmd(jpath, tmp_path):
    from jupyter_client.manager import KernelManager

    a, _ = jpath
    put(a, "fmt", argv=["python3", "{connection_file}", "{resource_dir}", "{prefix}", "{nope}"])
    km = KernelManager(kernel_name="fmt", connection_file=str(tmp_path / "c.json"))
    km._launch_args = {}
    theirs = km.format_kernel_cmd(extra_arguments=["--x"])
    assert get_spec("fmt").command(str(tmp_path / "c.json"), extra_args=["--x"]) == theirs


def test_environment_rules():
    spec = spec_with(["k"], env={"P": "${HOME}/bin:$PATH", "Q": "${MISSING}", "HOME": "/spec"})
    env = spec.environment({"HOME": "/h", "PATH": "/usr/bin", "KEEP": "1"})
    assert env == {
        "HOME": "/spec",
        "PATH": "/usr/bin",
        "KEEP": "1",
        "P": "/h/bin:/usr/bin",
        "Q": "${MISSING}",
    }


def test_environment_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("TK_TEST_VAR", "v")
    assert spec_with(["k"], env={"X": "$TK_TEST_VAR"}).environment()["X"] == "v"


def test_environment_drops_pythonexecutable_for_python_only():
    base = {"PYTHONEXECUTABLE": "/x"}
    assert "PYTHONEXECUTABLE" not in spec_with(["k"], language="Python").environment(base)
    assert spec_with(["k"], language="R").environment(base) == base


def test_environment_does_not_change_base():
    base = {"A": "1"}
    spec_with(["k"], env={"A": "2"}).environment(base)
    assert base == {"A": "1"}


def test_kernel_spec_is_frozen():
    with pytest.raises(AttributeError):
        spec_with(["k"]).name = "other"  # type: ignore[misc]
