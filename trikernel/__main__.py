"""Command line: ``python -m trikernel [-f FILE] | install ... | --selftest | --version``."""

from __future__ import annotations

import argparse
import logging
import sys


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trikernel", description="A Jupyter kernel on trio."
    )
    parser.add_argument("-f", "--connection-file", help="connection file written by Jupyter")
    parser.add_argument("--ip", default="127.0.0.1", help="address to bind without -f")
    parser.add_argument("--selftest", action="store_true", help="start a kernel, drive it, report")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--allow-unsigned",
        action="store_true",
        help="accept a connection file with an empty key (insecure)",
    )
    parser.add_argument(
        "--interrupt-grace",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="how long an interrupted cell may take to stop before the evaluator is "
        "killed and restarted (default 3)",
    )
    parser.add_argument("--debug", action="store_true", help="log debug messages to stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["install"]:
        from .kernelspec import main as install_main

        return install_main(argv[1:])
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="[trikernel %(levelname)s %(name)s] %(message)s",
    )
    if args.version:
        from ._version import __version__

        print(f"trikernel {__version__}")
        return 0
    if args.selftest:
        from .selftest import main as selftest_main

        return selftest_main()
    from .launch import run_kernel

    return run_kernel(
        args.connection_file,
        ip=args.ip,
        allow_unsigned=args.allow_unsigned,
        interrupt_grace=args.interrupt_grace,
    )


if __name__ == "__main__":
    sys.exit(main())
