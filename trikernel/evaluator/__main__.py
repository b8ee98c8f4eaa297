"""Evaluator subprocess entry: ``python -m trikernel.evaluator --in-fd N --out-fd N ...``.

Started by ``trikernel.bridge`` in its own session. Frames arrive on ``--in-fd``
and leave on ``--out-fd`` (pipes, not stdin/stdout: fd 1 and 2 are pipes the
bridge forwards as stream output). It never outlives the kernel: the lifeline
pipe's EOF (the kernel died, however, or closed it) ends the process at once,
from a thread, even while a cell blocks.

Why no PR_SET_PDEATHSIG: Linux sends it when the *thread* that forked us
exits, and trio's ``open_process`` forks from a worker thread that exits after
ten idle seconds, which would kill a healthy evaluator. The lifeline covers
every way the kernel can die; what it cannot cover is C code that holds the
GIL forever while the kernel is SIGKILLed.
"""

from __future__ import annotations

import argparse
import faulthandler
import os
import threading

__all__ = ["main"]


def _watch_lifeline(fd: int) -> None:
    def watch() -> None:
        while True:
            try:
                if not os.read(fd, 64):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        os._exit(0)

    threading.Thread(target=watch, name="trikernel-lifeline", daemon=True).start()


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m trikernel.evaluator")
    parser.add_argument("--in-fd", type=int, required=True)
    parser.add_argument("--out-fd", type=int, required=True)
    parser.add_argument("--lifeline-fd", type=int, required=True)
    parser.add_argument("--sync-token", required=True)
    parser.add_argument("--execution-count", type=int, default=1)
    parser.add_argument("--parent-pid", type=int, default=0)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if args.parent_pid and os.getppid() != args.parent_pid:
        os._exit(0)  # the kernel died while starting us
    for fd in (args.in_fd, args.out_fd, args.lifeline_fd):
        os.set_inheritable(fd, False)  # not for !commands and os.system children
    _watch_lifeline(args.lifeline_fd)
    faulthandler.enable(file=2)  # a segfault leaves a traceback on fd 2

    import trio

    from .loop import EvaluatorLoop, Inbox
    from .outbox import Pipe
    from .process import create_shell

    pipe = Pipe(args.out_fd)
    shell = create_shell(pipe.outbox, execution_count=args.execution_count)
    loop = EvaluatorLoop(shell, pipe, Inbox(args.in_fd), args.sync_token)
    loop.install_signal_handler()
    try:
        trio.run(loop.run)
    finally:
        try:
            shell.atexit_operations()  # history to disk
        finally:
            pipe.outbox.flush()
            os._exit(0)  # user threads must not keep us alive


if __name__ == "__main__":
    main()
