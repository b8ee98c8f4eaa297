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
from trikernel.kernelspec import LOGOS, install, kernel_json, main

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
    assert set(kernelspec.__all__) == {"KERNEL_NAME", "LOGOS", "kernel_json", "install", "main"}
