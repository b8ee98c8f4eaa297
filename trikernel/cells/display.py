"""IPython's display machinery as kernel outputs: ``Out[n]`` results, ``display()``,
``update_display()`` and ``clear_output()`` go to the shell's ``Outbox``."""

from __future__ import annotations

from typing import Any

from IPython.core.displayhook import DisplayHook
from IPython.core.displaypub import DisplayPublisher

__all__ = ["KernelDisplayHook", "KernelDisplayPublisher"]


def _outbox(shell: Any) -> Any:
    assert shell is not None, "a display hook or publisher without its shell"
    return shell.outbox


class KernelDisplayHook(DisplayHook):
    """``Out[n]``: one execute_result per displayed value, with its count."""

    _content: dict[str, Any] | None = None

    def start_displayhook(self) -> None:
        self._content = {"data": {}, "metadata": {}, "execution_count": self.prompt_count}

    def write_output_prompt(self) -> None:
        pass

    def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
        assert self._content is not None
        self._content["data"] = format_dict
        self._content["metadata"] = md_dict or {}

    def finish_displayhook(self) -> None:
        content, self._content = self._content, None
        if content and content["data"]:
            _outbox(self.shell).send_output("execute_result", content)


class KernelDisplayPublisher(DisplayPublisher):
    """display() / update_display() / clear_output() as iopub messages."""

    def publish(  # type: ignore[override]
        self,
        data: dict,
        metadata: dict | None = None,
        source: Any = None,
        *,
        transient: dict | None = None,
        update: bool = False,
        **kwargs: Any,
    ) -> None:
        self._validate_data(data, metadata)
        content = {"data": data, "metadata": metadata or {}, "transient": transient or {}}
        msg_type = "update_display_data" if update else "display_data"
        _outbox(self.shell).send_output(msg_type, content)

    def clear_output(self, wait: bool = False) -> None:
        _outbox(self.shell).send_output("clear_output", {"wait": bool(wait)})
