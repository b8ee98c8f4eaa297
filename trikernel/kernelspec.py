"""Kernelspecs: install trikernel's, and find and read any kernel's (jupyter_client's rules).

Finding: ``find_kernel_specs()`` maps names to resource directories and
``get_kernel_spec(name)`` reads one ``kernel.json`` into a :class:`KernelSpec`, searching
``jupyter_core.paths.jupyter_path("kernels")`` (then IPython's ``<ipython dir>/kernels``, as
jupyter_client does) in order: the first directory holding a name wins. Names match
case-insensitively (``[a-z0-9._-]``), ``python`` means ``python3``, and when no file defines
``python3`` but ipykernel is importable, ``python3`` is ipykernel's built-in spec for this
interpreter (jupyter_client's "native kernel"). ``KernelSpec.command`` and
``KernelSpec.environment`` apply jupyter_client's argv and env rules.

Installing: the rest of this docstring.

``python -m trikernel install [--user | --sys-prefix | --prefix P] [--name N]`` writes
``kernel.json`` and the logos into ``<data dir>/kernels/<name>/``, with ``argv[0]``
set to the interpreter doing the install (so the kernel runs where trikernel is
installed, whatever ``python`` is on the front end's PATH).

The spec is built here in code rather than copied from the repo's ``kernelspec/``
directory, so a non-editable install (which ships only ``.py`` files) still has it;
tests check that ``kernelspec/`` in the repo matches byte for byte.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import re
import string
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from trikernel.errors import KernelSpecError, NoSuchKernel

__all__ = [
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
]

KERNEL_NAME = "trikernel"
_NAME_RE = re.compile(r"[A-Za-z0-9._-]+")

# logo-32x32.png and logo-64x64.png from kernelspec/ (Sierpinski triangles), inlined.
LOGOS: dict[str, bytes] = {
    "logo-32x32.png": base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAACAAAAAgCAYAAABzenr0AAAAe0lEQVR42u2VQQrAMAgE8598LY/rDxNy6KVQ"
        "C8viUIzg2UFXprVTf64+rrm7JsA9HINAAZ7D0yFQgGhQCgQKEK075RQoQBS6lECiAG9v99W1jWfbAgqg3tSW"
        "BRRATbbtI1AAVTg2UaEAqnBsokIBVOHYRIUCqMarbUpHLdZF+MTyl5eXAAAAAElFTkSuQmCC"
    ),
    "logo-64x64.png": base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAEAAAABACAYAAACqaXHeAAAA5klEQVR42u2X0QkDMQzFbp+u1uFuw5b+lcKl"
        "YHDOtvTAXyEEi8RBx2GMMeaePJ7n61MCIDePhYAG8Ns8DgIawKpRBAQ0gNV1RzwFNIDV0EMMRDSAq2/vX2lL"
        "ZOEZcwvQAKJveswsQAOITvYxPwIaQFR4xogSGkBUeMaIEhpAVHjGiBIaQNT4NEWy8XU5TwCVxKXcLEAD2D2h"
        "y/0IaAC7xaWcKKEB7BaXcqKEBrBbXMqJEhrAbnPTFCcYX5d9AsgQkC77BJAhIF32CSBDQLqsCSBDQLqsCSBD"
        "QLqsCSDDwLqUVmeM+c4bfsjqaLJ8A/AAAAAASUVORK5CYII="
    ),
}


def kernel_json(executable: str = "python") -> dict[str, Any]:
    """The kernel.json content; ``install`` passes the installing interpreter."""
    return {
        "argv": [executable, "-m", "trikernel", "-f", "{connection_file}"],
        "display_name": "Python 3 (trikernel)",
        "language": "python",
        "interrupt_mode": "message",
        "metadata": {"debugger": False},
        "kernel_protocol_version": "5.5",
    }


def _kernels_dir(user: bool, sys_prefix: bool, prefix: str | None) -> str:
    if sum((user, sys_prefix, prefix is not None)) > 1:
        raise ValueError("choose at most one of user, sys_prefix and prefix")
    if sys_prefix:
        prefix = sys.prefix
    if prefix is not None:
        return os.path.join(prefix, "share", "jupyter", "kernels")
    from jupyter_core import paths  # lazy: only installing needs jupyter_core

    if user:
        return os.path.join(paths.jupyter_data_dir(), "kernels")
    return os.path.join(paths.SYSTEM_JUPYTER_PATH[0], "kernels")


def install(
    user: bool = False,
    sys_prefix: bool = False,
    prefix: str | None = None,
    name: str = KERNEL_NAME,
) -> str:
    """Write the kernelspec and return the directory it went to.

    Destination: ``--user`` -> jupyter_data_dir()/kernels/NAME; ``sys_prefix`` ->
    sys.prefix/share/jupyter/kernels/NAME; ``prefix`` -> prefix/share/jupyter/kernels/NAME;
    none -> the first system Jupyter path. Existing files of the same names are replaced.

    Raises:
        ValueError: an invalid ``name`` (not ``[A-Za-z0-9._-]+``), or more than one
            destination option.
        OSError: the directory is not writable (e.g. a system path without root).
    """
    if not _NAME_RE.fullmatch(name):
        raise ValueError(f"invalid kernel name {name!r}: use only letters, digits, '.', '_', '-'")
    # jupyter_client matches kernel names case-insensitively and installs them lowercased.
    destination = os.path.join(_kernels_dir(user, sys_prefix, prefix), name.lower())
    os.makedirs(destination, exist_ok=True)
    with open(os.path.join(destination, "kernel.json"), "w", encoding="utf-8") as f:
        json.dump(kernel_json(sys.executable), f, indent=1)
        f.write("\n")
    for filename, data in LOGOS.items():
        with open(os.path.join(destination, filename), "wb") as f:
            f.write(data)
    return destination


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trikernel install", description="Install the trikernel kernelspec."
    )
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="install for the current user")
    where.add_argument(
        "--sys-prefix", action="store_true", help=f"install into sys.prefix ({sys.prefix})"
    )
    where.add_argument("--prefix", metavar="P", help="install into P/share/jupyter/kernels")
    parser.add_argument(
        "--name", default=KERNEL_NAME, help="kernelspec name (default: %(default)s)"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry for ``python -m trikernel install ...``; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        path = install(args.user, args.sys_prefix, args.prefix, args.name)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: {exc}\n(try --user, --sys-prefix or --prefix)", file=sys.stderr)
        return 1
    print(f"Installed kernelspec {os.path.basename(path)} in {path}")
    return 0


# ---------------------------------------------------------------------------------------------
# Finding and reading kernelspecs (jupyter_client 8.10's KernelSpecManager and KernelManager).

NATIVE_KERNEL_NAME = "python3"
_INTERRUPT_MODES = ("signal", "message")
_ARG_FIELD = re.compile(r"\{([A-Za-z0-9_]+)\}")


@dataclass(frozen=True)
class KernelSpec:
    """One kernel.json, read. ``argv`` still holds its ``{connection_file}`` templates."""

    name: str
    resource_dir: str
    argv: tuple[str, ...]
    display_name: str = ""
    language: str = ""
    interrupt_mode: str = "signal"
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    kernel_protocol_version: str = ""

    @classmethod
    def from_resource_dir(cls, resource_dir: str, name: str | None = None) -> KernelSpec:
        """Read ``resource_dir/kernel.json``; ``name`` defaults to the directory's, lowercased.

        Raises:
            KernelSpecError: the file is unreadable, not JSON, or a field is missing or of
                the wrong type (the message names the file and the field).
        """
        path = os.path.join(resource_dir, "kernel.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except (OSError, UnicodeDecodeError) as exc:
            raise KernelSpecError(f"cannot read kernelspec {path}: {exc}") from exc
        except ValueError as exc:
            raise KernelSpecError(f"kernelspec {path} is not valid JSON: {exc}") from exc
        if name is None:
            name = os.path.basename(os.path.normpath(resource_dir)).lower()
        try:
            return cls._from_dict(name, resource_dir, data)
        except ValueError as exc:
            raise KernelSpecError(f"kernelspec {path}: {exc}") from None

    @classmethod
    def _from_dict(cls, name: str, resource_dir: str, data: object) -> KernelSpec:
        if not isinstance(data, dict):
            raise ValueError(f"top level must be a JSON object, got {type(data).__name__}")
        if "argv" not in data:
            raise ValueError("missing field 'argv'")
        argv = data["argv"]
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise ValueError(f"argv must be a non-empty list of strings, got {argv!r}")
        fields: dict[str, Any] = {}
        for key in ("display_name", "language", "kernel_protocol_version"):
            if key in data:
                fields[key] = _checked(key, data[key], str)
        mode = _checked("interrupt_mode", data.get("interrupt_mode", "signal"), str).lower()
        if mode not in _INTERRUPT_MODES:
            raise ValueError(f"interrupt_mode must be 'signal' or 'message', got {mode!r}")
        env = _checked("env", data.get("env", {}), dict)
        if not all(isinstance(v, str) for v in env.values()):
            raise ValueError(f"env values must be strings, got {env!r}")
        metadata = _checked("metadata", data.get("metadata", {}), dict)
        fields.update(interrupt_mode=mode, env=env, metadata=metadata)
        return cls(name, resource_dir, tuple(argv), **fields)

    def to_dict(self) -> dict[str, Any]:
        """The kernel.json object, in jupyter_client's ``KernelSpec.to_dict`` shape."""
        return {
            "argv": list(self.argv),
            "env": dict(self.env),
            "display_name": self.display_name,
            "language": self.language,
            "interrupt_mode": self.interrupt_mode,
            "metadata": dict(self.metadata),
            "kernel_protocol_version": self.kernel_protocol_version,
        }

    def command(
        self, connection_file: str, *, extra_args: Iterable[str] = (), **launch_kwargs: Any
    ) -> list[str]:
        """The argv to launch, with jupyter_client's ``format_kernel_cmd`` rules.

        ``argv + extra_args``; an ``argv[0]`` of ``python``, ``python3`` or ``python3.X``
        (this interpreter's version) becomes ``sys.executable``; ``{connection_file}``
        (its realpath), ``{prefix}`` (``sys.prefix``), ``{resource_dir}`` and any
        ``launch_kwargs`` (which win) are substituted; an unknown ``{x}`` stays as it is.
        """
        cmd = [*self.argv, *extra_args]
        if cmd and cmd[0] in _python_names():
            cmd[0] = sys.executable
        ns: dict[str, Any] = {
            "connection_file": os.path.realpath(connection_file),
            "prefix": sys.prefix,
            "resource_dir": self.resource_dir,
            **launch_kwargs,
        }

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            return str(ns[key]) if key in ns else match.group()

        return [_ARG_FIELD.sub(fill, arg) for arg in cmd]

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """``base`` (default ``os.environ``) updated with the spec's env.

        Each spec value has ``$VAR``/``${VAR}`` filled from ``base`` (unknown ones kept,
        as ``string.Template.safe_substitute``); the spec wins over ``base``. For a
        Python kernel ``PYTHONEXECUTABLE`` is dropped, as jupyter_client does.
        """
        env = dict(os.environ if base is None else base)
        filled = {k: string.Template(v).safe_substitute(env) for k, v in self.env.items()}
        env.update(filled)
        if self.language.lower().startswith("python"):
            env.pop("PYTHONEXECUTABLE", None)
        return env


def _checked(name: str, value: Any, kind: type) -> Any:
    if not isinstance(value, kind):
        raise ValueError(f"{name} must be a {kind.__name__}, got {value!r}")
    return value


def _python_names() -> set[str]:
    major, minor = sys.version_info[:2]
    return {"python", f"python{major}", f"python{major}.{minor}"}


def kernel_dirs() -> list[str]:
    """Where kernelspecs are searched, highest priority first.

    ``jupyter_path("kernels")`` ($JUPYTER_PATH, then user, env and system dirs, in
    jupyter_core's order), then ``<ipython dir>/kernels`` as jupyter_client adds it.
    """
    from jupyter_core.paths import jupyter_path  # lazy, like the install path

    dirs = jupyter_path("kernels")
    try:
        from IPython.paths import get_ipython_dir
    except ModuleNotFoundError:
        return dirs
    return [*dirs, os.path.join(get_ipython_dir(), "kernels")]


def _native_resource_dir() -> str | None:
    """ipykernel's ``RESOURCES`` directory, found without importing ipykernel."""
    try:
        spec = importlib.util.find_spec("ipykernel")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return os.path.join(os.path.dirname(spec.origin), "resources")


def _native_kernel_spec(resource_dir: str) -> KernelSpec:
    # ipykernel.kernelspec.get_kernel_dict(), rebuilt here: importing it would import
    # jupyter_client. Its metadata also declares "supported_encryption": ["curve"]
    # (ipykernel 7); left out, as trikernel never provisions CURVE.
    major = sys.version_info[0]
    return KernelSpec(
        NATIVE_KERNEL_NAME,
        resource_dir,
        (sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"),
        display_name=f"Python {major} (ipykernel)",
        language="python",
        metadata={"debugger": True},
        kernel_protocol_version="5.5",
    )


def _kernels_in(directory: str) -> dict[str, str]:
    try:
        entries = sorted(os.listdir(directory))
    except OSError:  # missing, not a directory, unreadable: nothing there
        return {}
    found: dict[str, str] = {}
    for entry in entries:
        path = os.path.join(directory, entry)
        if not os.path.isfile(os.path.join(path, "kernel.json")):
            continue
        key = entry.lower()
        if not _NAME_RE.fullmatch(key):
            warnings.warn(f"invalid kernelspec directory name: {path}", stacklevel=3)
        found.setdefault(key, path)
    return found


def find_kernel_specs(*, dirs: Sequence[str] | None = None) -> dict[str, str]:
    """Every kernelspec name (lowercase) and its resource directory.

    ``dirs`` defaults to :func:`kernel_dirs`; the first directory holding a name wins.
    ``python3`` is ipykernel's resources directory if no file defines it and ipykernel
    is importable.
    """
    found: dict[str, str] = {}
    for directory in kernel_dirs() if dirs is None else dirs:
        for name, path in _kernels_in(directory).items():
            found.setdefault(name, path)
    if NATIVE_KERNEL_NAME not in found:
        native = _native_resource_dir()
        if native is not None:
            found[NATIVE_KERNEL_NAME] = native
    return found


def get_kernel_spec(name: str, *, dirs: Sequence[str] | None = None) -> KernelSpec:
    """The kernelspec called ``name`` (case-insensitive; ``python`` means ``python3``).

    Raises:
        NoSuchKernel: no such name; the message lists the known ones.
        KernelSpecError: its kernel.json is not JSON or has a bad or missing field.
    """
    key = name.lower()
    if key == "python":
        key = NATIVE_KERNEL_NAME
    specs = find_kernel_specs(dirs=dirs)
    if key not in specs:
        raise NoSuchKernel(name, tuple(sorted(specs)))
    resource_dir = specs[key]
    if key == NATIVE_KERNEL_NAME and resource_dir == _native_resource_dir():
        return _native_kernel_spec(resource_dir)
    return KernelSpec.from_resource_dir(resource_dir, key)
