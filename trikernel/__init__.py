"""trikernel: a Jupyter kernel for Python on trio.

Public surface: ``open_kernel`` / ``serve_kernel`` to embed a kernel in a trio
application, ``Kernel`` for the standalone kernel, ``__version__``.
"""

from typing import TYPE_CHECKING

from ._version import __version__ as __version__
from .errors import TrikernelError as TrikernelError

if TYPE_CHECKING:
    from .connection import ConnectionInfo as ConnectionInfo
    from .embed import open_kernel as open_kernel
    from .embed import serve_kernel as serve_kernel
    from .kernel import Kernel as Kernel

__all__ = [
    "__version__",
    "ConnectionInfo",
    "TrikernelError",
    "open_kernel",
    "serve_kernel",
    "Kernel",
]


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


def __getattr__(name: str) -> object:
    # Lazy: the evaluator subprocess imports this package and must not pay for the
    # kernel's modules, and ``python -m trikernel`` binds its ports before it
    # imports more than it needs for that.
    if name == "ConnectionInfo":
        from .connection import ConnectionInfo

        return ConnectionInfo
    if name in ("open_kernel", "serve_kernel"):
        from . import embed

        return getattr(embed, name)
    if name == "Kernel":
        from .kernel import Kernel

        return Kernel
    raise AttributeError(f"module 'trikernel' has no attribute {name!r}")
