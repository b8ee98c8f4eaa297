"""The shapes of replies and errors (trikernel.cells.replies)."""

from __future__ import annotations

from trikernel.cells.replies import error_content, error_from, ok_execute
from trikernel.errors import RemoteProtocolError


def test_error_content_without_a_traceback_shows_one_line() -> None:
    assert error_content("NameError", "name 'x' is not defined") == {
        "status": "error",
        "ename": "NameError",
        "evalue": "name 'x' is not defined",
        "traceback": ["NameError: name 'x' is not defined"],
    }


def test_error_content_copies_the_traceback_into_a_list() -> None:
    lines = ("line 1", "line 2")
    content = error_content("E", "v", lines)  # type: ignore[arg-type]
    assert content["traceback"] == ["line 1", "line 2"]


def test_an_empty_traceback_stays_empty() -> None:
    assert error_content("E", "v", [])["traceback"] == []


def test_error_content_carries_extra_fields() -> None:
    content = error_content("E", "v", execution_count=3)
    assert content["execution_count"] == 3 and content["status"] == "error"


def test_error_from_names_the_type_and_message() -> None:
    content = error_from(RemoteProtocolError("bad frame"), execution_count=1)
    assert content == {
        "status": "error",
        "execution_count": 1,
        "ename": "RemoteProtocolError",
        "evalue": "bad frame",
        "traceback": ["RemoteProtocolError: bad frame"],
    }


def test_ok_execute_defaults() -> None:
    assert ok_execute(4) == {
        "status": "ok",
        "execution_count": 4,
        "user_expressions": {},
        "payload": [],
    }


def test_ok_execute_with_expressions_and_payload() -> None:
    payload = [{"source": "page", "data": {"text/plain": "doc"}, "start": 0}]
    content = ok_execute(1, {"x": {"status": "ok"}}, payload)
    assert content["user_expressions"] == {"x": {"status": "ok"}}
    assert content["payload"] == payload
