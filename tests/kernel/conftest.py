"""Kernel process tests: the kernelspec is installed into a temporary prefix that
JUPYTER_PATH points at, so jupyter_client finds "trikernel" exactly as Jupyter would.

Rules: kernels bind 127.0.0.1; every blocking jupyter_client call has a timeout;
every kernel started is shut down (or its process group killed) in a finally.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from trikernel.kernelspec import install

_prefix = tempfile.mkdtemp(prefix="trikernel-test-prefix-")
install(prefix=_prefix)
os.environ["JUPYTER_PATH"] = os.pathsep.join(
    [str(Path(_prefix) / "share" / "jupyter"), *filter(None, [os.environ.get("JUPYTER_PATH")])]
)
KERNEL_NAME = "trikernel"
