"""What the evaluator sets once for its whole process (it has one shell, for good).

``sys.stdout``/``sys.stderr`` feed the pipe's outbox, ``input()``/``getpass()``
ask the bridge, the ``comm`` package sends through the shell, matplotlib draws
inline, pagers do not wait for a terminal, ``pdb`` is IPython's debugger, and the
user's IPython profile applies (``profile``). The embedded evaluator does none of
this: it routes each of these by context instead (``trikernel.inprocess``).
"""

from __future__ import annotations

import builtins
import getpass
import os
import sys

from ..cells.comms import route_comms
from ..cells.shell import KernelShell
from ..cells.streams import Outbox
from .outbox import StreamWriter
from .profile import load_profile, run_profile_code

__all__ = ["create_shell"]


def _use_ipython_debugger() -> None:
    """``pdb.set_trace()`` and ``breakpoint()`` give IPython's debugger (``ipdb>``, context,
    colours), interruptible, as under ipykernel."""
    import pdb

    from IPython.core import debugger

    debugger.Pdb = debugger.InterruptiblePdb  # type: ignore[misc]
    pdb.Pdb = debugger.Pdb  # type: ignore[assignment, misc]
    pdb.set_trace = debugger.set_trace


def create_shell(outbox: Outbox, *, execution_count: int = 1) -> KernelShell:
    """Build the one shell of this process, with stdio, input() and comms rerouted."""
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    os.environ.update(PAGER="cat", GIT_PAGER="cat", CLICOLOR="1", TERM="xterm-color")
    sys.stdout = StreamWriter(outbox, "stdout", 1)
    sys.stderr = StreamWriter(outbox, "stderr", 2)
    app, config = load_profile()
    shell = KernelShell.instance(outbox=outbox, config=config)
    shell.execution_count = execution_count
    shell.connection_file = os.environ.get("TRIKERNEL_CONNECTION_FILE")  # bridge.spawn's
    _use_ipython_debugger()
    route_comms(lambda: shell)
    builtins.input = shell.kernel_input
    getpass.getpass = shell.kernel_getpass
    run_profile_code(app, shell)
    return shell
