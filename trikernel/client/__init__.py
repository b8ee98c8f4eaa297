"""The client side on trio: drive any Jupyter kernel over trikernel's own ZMTP.

``open_client(info)`` connects to a running kernel; ``open_kernel_manager(name)`` starts
one from its kernelspec, keeps it alive and shuts it down; ``launch_kernel(cmd)`` is the
bare process launch with jupyter_client's rules.
"""

from ._client import ExecuteResult as ExecuteResult
from ._client import KernelClient as KernelClient
from ._client import KernelRestarted as KernelRestarted
from ._client import open_client as open_client
from .launcher import KernelLaunchError as KernelLaunchError
from .launcher import launch_kernel as launch_kernel
from .manager import KernelManager as KernelManager
from .manager import KernelStartError as KernelStartError
from .manager import open_kernel_manager as open_kernel_manager
from .manager import run_kernel_manager as run_kernel_manager

__all__ = [
    "ExecuteResult",
    "KernelClient",
    "KernelLaunchError",
    "KernelManager",
    "KernelRestarted",
    "KernelStartError",
    "launch_kernel",
    "open_client",
    "open_kernel_manager",
    "run_kernel_manager",
]
