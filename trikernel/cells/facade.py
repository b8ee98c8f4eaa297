"""``get_ipython().kernel``: the part of ipykernel's Kernel object libraries use."""

from __future__ import annotations

from typing import Any

import comm.base_comm

from .._bytes import Buffer
from ..evaluator_api import Parent

__all__ = ["KernelFacade", "request_message"]


def request_message(
    parent: Parent, content: dict[str, Any], buffers: list[Buffer] | None = None
) -> dict[str, Any]:
    """A request as the message dict ipykernel hands around (to comm handlers, and
    from ``get_parent()``)."""
    header = dict(parent.header)
    return {
        "header": header,
        "msg_id": header.get("msg_id", ""),
        "msg_type": header.get("msg_type", ""),
        "parent_header": dict(parent.parent_header),
        "metadata": dict(parent.metadata),
        "content": content,
        "buffers": buffers or [],
    }


class KernelFacade:
    """ipywidgets' ``Output`` sets its ``msg_id`` from ``get_parent()`` so that the
    frontend captures the outputs of that request. Outputs belong to the latest
    execute or comm request (a background task's too), so ``latest_request`` is
    that same request, set by the evaluator from each one, in arrival order."""

    def __init__(self, comm_manager: comm.base_comm.CommManager) -> None:
        self.comm_manager = comm_manager
        self.latest_request: dict[str, Any] = {}

    def get_parent(self, channel: str | None = None) -> dict[str, Any]:
        # Control requests (interrupt, shutdown) never reach the evaluator.
        return self.latest_request if channel in (None, "shell") else {}

    @property
    def _parent_header(self) -> dict[str, Any]:
        return self.get_parent()  # ipykernel < 6 (and ipywidgets' fallback)
