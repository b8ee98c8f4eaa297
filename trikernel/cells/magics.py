"""The magics a kernel adds to IPython's (as ipykernel's ``KernelMagics`` does):
pagers and terminals work through the frontend, and a kernel can say how to
connect to it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from IPython.core import page
from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.display import Javascript, display
from IPython.utils import openpy

__all__ = ["KernelMagics"]


def _page_file(shell: Any, arg_s: str) -> None:
    if not arg_s:
        raise UsageError("Missing filename.")
    if arg_s.endswith(".py"):
        text = shell.pycolorize(openpy.read_py_file(arg_s, skip_encoding_cookie=False))
    else:
        text = Path(arg_s).read_text()
    page.page(text)


@magics_class
class KernelMagics(Magics):
    @line_magic
    def clear(self, arg_s: str) -> None:
        """Clear the terminal (of the kernel's process: a notebook's output stays)."""
        assert self.shell is not None
        self.shell.system("clear")

    @line_magic
    def less(self, arg_s: str) -> None:
        """Show a file through the pager (the frontend's). Files ending in .py are highlighted."""
        _page_file(self.shell, arg_s)

    @line_magic
    def more(self, arg_s: str) -> None:
        """Show a file through the pager (as %less)."""
        _page_file(self.shell, arg_s)

    @line_magic
    def man(self, arg_s: str) -> None:
        """Find the man page for the given command and show it in the pager."""
        assert self.shell is not None
        page.page(self.shell.getoutput(f"man {arg_s} | col -b", split=False))

    @line_magic
    def connect_info(self, arg_s: str) -> None:
        """Print this kernel's connection information, and how to attach another client."""
        assert self.shell is not None
        path = getattr(self.shell, "connection_file", None)
        if not path:
            print(
                "The connection file of this kernel is not known here (an embedded kernel's is "
                "the application's `kernel.connection_file`)."
            )
            return
        try:
            info = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            print(f"Could not read the connection file {path}: {exc}")
            return
        print(json.dumps(info, indent=1) + "\n")
        print(
            "Paste the above JSON into a file, and connect with:\n"
            "    $> jupyter <app> --existing <file>\n"
            "or, if you are local, you can connect with just:\n"
            f"    $> jupyter <app> --existing {os.path.basename(path)}\n"
            "or even just:\n"
            "    $> jupyter <app> --existing\n"
            "if this is the most recent Jupyter kernel you have started."
        )

    @line_magic
    def qtconsole(self, arg_s: str) -> None:
        """Not available: trikernel does not start Qt consoles (attach one yourself with
        ``jupyter qtconsole --existing``; see ``%connect_info``)."""
        raise UsageError(
            "%qtconsole is not available in trikernel: run `jupyter qtconsole --existing "
            "<connection file>` yourself (%connect_info shows the file)"
        )

    @line_magic
    def autosave(self, arg_s: str) -> None:
        """Set the autosave interval of the classic notebook, in seconds (0: off)."""
        try:
            interval = int(arg_s)
        except ValueError as exc:
            raise UsageError(f"%autosave requires an integer, got {arg_s!r}") from exc
        script = f"IPython.notebook.set_autosave_interval({1000 * interval})"
        display(Javascript(script), include=["application/javascript"])
        print(f"Autosaving every {interval} seconds" if interval else "Autosave disabled")
