"""Install the trikernel kernelspec so Jupyter front ends can find and start it.

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
import json
import os
import re
import sys
from typing import Any

__all__ = ["KERNEL_NAME", "LOGOS", "kernel_json", "install", "main"]

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
