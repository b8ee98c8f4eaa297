"""The client side on trio: drive any Jupyter kernel over trikernel's own ZMTP.

``open_client(info)`` connects to a running kernel; ``open_kernel_manager(name)`` starts
one from its kernelspec, keeps it alive and shuts it down; ``launch_kernel(cmd)`` is the
bare process launch with jupyter_client's rules.
"""

from ._client import ExecuteResult as ExecuteResult
from ._client import KernelClient as KernelClient
from ._client import KernelRestarted as KernelRestarted
from ._client import open_client as open_client

__all__ = ["ExecuteResult", "KernelClient", "KernelRestarted", "open_client"]
