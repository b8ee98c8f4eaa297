"""The user's IPython profile, applied to the evaluator as ipykernel applies it.

IPython's own application classes do the work, with IPython's rules: the profile
dir (``$IPYTHONDIR``, ``profile_default``), ``ipython_config.py`` and then
``ipython_kernel_config.py`` from it (and from the system config dirs), the
extensions (``storemagic`` by default, so ``%store`` works), the startup files
(``startup/*.py``, ``*.ipy``, in order), ``exec_lines`` and ``exec_files``. The
class is named ``IPKernelApp`` so ``c.IPKernelApp.exec_lines = [...]`` in a
kernel config file means what it means to ipykernel; the shell's config always
has that section, as under ipykernel (libraries look for it to know they run in
a kernel). A config file, extension or startup file that fails is reported (on
stderr, or as an error output) and the kernel starts all the same.
"""

from __future__ import annotations

import logging
from typing import Any

from IPython.core.application import BaseIPythonApplication
from IPython.core.shellapp import InteractiveShellApp
from traitlets.config import Config

__all__ = ["load_profile", "run_profile_code"]


class IPKernelApp(BaseIPythonApplication, InteractiveShellApp):
    name = "ipython-kernel"  # -> ipython_kernel_config.py, after ipython_config.py


def load_profile() -> tuple[IPKernelApp, Config]:
    """Read the profile's config files (before the shell exists: it takes them)."""
    app = IPKernelApp()
    app.log.setLevel(logging.WARNING)
    try:
        app.init_profile_dir()
        app.init_config_files()
        app.load_config_file(suppress_errors=True)
    except Exception as exc:  # a broken profile dir must not stop the kernel
        app.log.warning("trikernel: the IPython profile could not be read: %s", exc)
    config = Config(app.config)
    if "IPKernelApp" not in config:
        config.IPKernelApp = Config()
    return app, config


def run_profile_code(app: IPKernelApp, shell: Any) -> None:
    """Extensions, startup files, exec_lines and exec_files, in IPython's order."""
    app.shell = shell
    app.init_extensions()
    app.init_code()
