"""complete, inspect, history, is_complete and comm_info requests, answered from a
kernel shell (the same for both evaluators). ``answer`` never raises: a failure
is an error reply named by its exception type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from IPython.core.completer import provisionalcompleter, rectify_completions
from IPython.utils.tokenutil import token_at_cursor

from ..errors import UnknownRequest
from .replies import error_from

__all__ = ["answer"]

Handler = Callable[[Any, dict[str, Any]], dict[str, Any]]


def answer(shell: Any, msg_type: str, content: dict[str, Any]) -> dict[str, Any]:
    """The reply content of ``msg_type`` (one of ``INTROSPECTION_REQUESTS``)."""
    handler = HANDLERS.get(msg_type)
    try:
        if handler is None:
            raise UnknownRequest(f"no handler for {msg_type!r}")
        return handler(shell, content)
    except Exception as exc:
        return error_from(exc)


def complete(shell: Any, content: dict[str, Any]) -> dict[str, Any]:
    code = content.get("code", "")
    pos = content.get("cursor_pos")
    pos = len(code) if pos is None else pos
    with provisionalcompleter():
        completions = list(rectify_completions(code, shell.Completer.completions(code, pos)))
    types = [
        {
            "start": c.start,
            "end": c.end,
            "text": c.text,
            "type": c.type,
            "signature": c.signature,
        }
        for c in completions
    ]
    start, end = (completions[0].start, completions[0].end) if completions else (pos, pos)
    return {
        "status": "ok",
        "matches": [c.text for c in completions],
        "cursor_start": start,
        "cursor_end": end,
        "metadata": {"_jupyter_types_experimental": types},
    }


def inspect(shell: Any, content: dict[str, Any]) -> dict[str, Any]:
    code = content.get("code", "")
    pos = content.get("cursor_pos")
    name = token_at_cursor(code, len(code) if pos is None else pos)
    try:
        bundle = shell.object_inspect_mime(name, detail_level=content.get("detail_level", 0))
    except KeyError:
        return {"status": "ok", "found": False, "data": {}, "metadata": {}}
    if not shell.enable_html_pager:
        bundle.pop("text/html", None)
    return {"status": "ok", "found": True, "data": bundle, "metadata": {}}


def history(shell: Any, content: dict[str, Any]) -> dict[str, Any]:
    hm = shell.history_manager
    assert hm is not None
    raw, output = content.get("raw", True), content.get("output", False)
    kind = content.get("hist_access_type", "tail")
    if kind == "tail":
        hist = hm.get_tail(content.get("n", 10), raw=raw, output=output, include_latest=True)
    elif kind == "range":
        hist = hm.get_range(
            content.get("session", 0),
            content.get("start", 1),
            content.get("stop"),
            raw=raw,
            output=output,
        )
    elif kind == "search":
        hist = hm.search(
            content.get("pattern", "*"),
            raw=raw,
            output=output,
            n=content.get("n"),
            unique=content.get("unique", False),
        )
    else:
        hist = []
    # IPython reports the current session as 0 in ranges; clients expect its number,
    # as tail and search give it.
    current = hm.session_number
    return {"status": "ok", "history": [[entry[0] or current, *entry[1:]] for entry in hist]}


def is_complete(shell: Any, content: dict[str, Any]) -> dict[str, Any]:
    status, indent = shell.check_complete(content.get("code", ""))
    reply = {"status": status}
    if status == "incomplete":
        reply["indent"] = indent
    return reply


def comm_info(shell: Any, content: dict[str, Any]) -> dict[str, Any]:
    target = content.get("target_name")
    comms = {
        comm_id: {"target_name": c.target_name}
        for comm_id, c in shell.comm_manager.comms.items()
        if target is None or c.target_name == target
    }
    return {"status": "ok", "comms": comms}


HANDLERS: dict[str, Handler] = {
    "complete_request": complete,
    "inspect_request": inspect,
    "history_request": history,
    "is_complete_request": is_complete,
    "comm_info_request": comm_info,
}
