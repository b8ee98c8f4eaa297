"""handlers.py against a fake context and a fake evaluator: no sockets, no wire.

Rules: every test runs ``dispatch`` (or one handler) on a ``FakeContext`` that
records what was published and replied, in one list, so order is checked; every
wait is under ``trio.fail_after``.
"""

from __future__ import annotations

from typing import Any

import trio

from tests.kernel.fake_evaluator import FakeEvaluator
from trikernel.errors import EvaluatorDied
from trikernel.evaluator_api import Output
from trikernel.handlers import (
    ABORTING_SHELL_HANDLERS,
    CONTROL_HANDLERS,
    SHELL_HANDLERS,
    dispatch,
)
from trikernel.messages import Message, new_header


class FakeContext:
    def __init__(self, *, broken: bool = False) -> None:
        self.events: list[tuple[str, Any, Any]] = []  # (what, msg_type, content)
        self.evaluator = FakeEvaluator(self._sink)
        self.broken = broken
        self.aborts = 0
        self.shutdowns: list[bool] = []
        self.interrupts = 0

    def _sink(self, output: Output) -> None:
        self.events.append(("output", output.msg_type, output.content))

    @property
    def execution_count(self) -> int:
        return self.evaluator.execution_count

    def publish(self, msg_type: str, content: Any, parent: Message | None) -> None:
        self.events.append(("publish", msg_type, content))

    async def get_evaluator(self) -> FakeEvaluator:
        if self.broken:
            raise EvaluatorDied("the evaluator could not be started: test")
        return self.evaluator

    def input_callback(self, request: Message) -> Any:
        async def answer(prompt: str, password: bool) -> str:
            return f"answer to {prompt}"

        return answer

    def abort_queued(self) -> None:
        self.aborts += 1

    def request_shutdown(self, restart: bool) -> None:
        self.shutdowns.append(restart)

    def interrupt(self) -> None:
        self.interrupts += 1

    def respond(self, msg: Message, content: dict[str, Any], metadata: dict[str, Any]) -> None:
        self.events.append(("reply", msg.msg_type, (content, metadata)))

    def replies(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        return [c for what, _, c in self.events if what == "reply"]

    def published(self, msg_type: str) -> list[Any]:
        return [c for what, t, c in self.events if what == "publish" and t == msg_type]


def request(msg_type: str, **content: Any) -> Message:
    return Message(new_header(msg_type, "s"), {}, {}, content, identities=[b"client"])


async def run(ctx: FakeContext, msg: Message, table: Any = SHELL_HANDLERS) -> None:
    with trio.fail_after(5):
        await dispatch(ctx, msg, table, ctx.respond)


async def test_execute_busy_input_outputs_reply_idle_in_order() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code="print hi"))
    kinds = [(what, t) for what, t, _ in ctx.events]
    assert kinds == [
        ("publish", "status"),
        ("publish", "execute_input"),
        ("output", "stream"),
        ("reply", "execute_request"),
        ("publish", "status"),
    ]
    assert ctx.published("execute_input") == [{"code": "print hi", "execution_count": 1}]
    ((content, metadata),) = ctx.replies()
    assert content["status"] == "ok" and metadata == {"status": "ok"}


async def test_execute_input_count_comes_from_the_evaluator() -> None:
    ctx = FakeContext()
    ctx.evaluator.count = 41
    await run(ctx, request("execute_request", code="1"))
    assert ctx.published("execute_input")[0]["execution_count"] == 42


async def test_silent_execute_has_no_execute_input_and_stores_nothing() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code="1", silent=True, store_history=True))
    assert ctx.published("execute_input") == []
    assert ctx.evaluator.count == 0


async def test_a_malformed_execute_request_is_an_error_naming_the_field() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code=5))
    ((content, metadata),) = ctx.replies()
    assert content["ename"] == "RemoteProtocolError" and "'code'" in content["evalue"]
    assert metadata == {"status": "error"} and content["execution_count"] == 0
    assert ctx.published("execute_input") == []


async def test_failed_cell_with_stop_on_error_aborts_the_queue() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code="fail"))
    assert ctx.aborts == 1
    await run(ctx, request("execute_request", code="fail", stop_on_error=False))
    await run(ctx, request("execute_request", code="fail", silent=True))
    assert ctx.aborts == 1


async def test_aborting_table_answers_executes_aborted_and_the_rest_as_usual() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code="print no"), ABORTING_SHELL_HANDLERS)
    await run(ctx, request("is_complete_request", code="x"), ABORTING_SHELL_HANDLERS)
    (aborted, _), (complete, _) = ctx.replies()
    assert aborted == {"status": "aborted", "execution_count": 0}
    assert complete == {"status": "complete"}
    assert not [e for e in ctx.events if e[0] == "output"]  # the cell did not run


async def test_input_goes_through_the_context_only_with_allow_stdin() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code="input name?", allow_stdin=True))
    assert [c for w, t, c in ctx.events if w == "output"] == [
        {"name": "stdout", "text": "answer to name?\n"}
    ]
    await run(ctx, request("execute_request", code="input name?", allow_stdin=False))
    assert ctx.replies()[-1][0]["ename"] == "RuntimeError"  # the fake: no stdin given


async def test_an_evaluator_that_cannot_start_is_an_error_reply() -> None:
    ctx = FakeContext(broken=True)
    await run(ctx, request("execute_request", code="1"))
    await run(ctx, request("complete_request", code="x", cursor_pos=1))
    await run(ctx, request("comm_msg", comm_id="c", data={}))  # no reply: dropped
    (execute, _), (complete, _) = ctx.replies()
    assert execute["ename"] == complete["ename"] == "EvaluatorDied"


async def test_comm_messages_have_no_reply_but_busy_idle() -> None:
    ctx = FakeContext()
    await run(ctx, request("comm_open", comm_id="c", target_name="t", data={}))
    assert ctx.replies() == []
    assert [c["execution_state"] for c in ctx.published("status")] == ["busy", "idle"]


async def test_unknown_msg_type_is_ignored_with_busy_idle() -> None:
    ctx = FakeContext()
    await run(ctx, request("bogus_request"))
    assert ctx.replies() == []
    assert len(ctx.published("status")) == 2


async def test_shutdown_broadcasts_and_asks_the_kernel() -> None:
    ctx = FakeContext()
    await run(ctx, request("shutdown_request", restart=True), CONTROL_HANDLERS)
    assert ctx.shutdowns == [True]
    assert ctx.published("shutdown_reply") == [{"status": "ok", "restart": True}]
    assert ctx.replies()[0][0] == {"status": "ok", "restart": True}


async def test_interrupt_on_control() -> None:
    ctx = FakeContext()
    await run(ctx, request("interrupt_request"), CONTROL_HANDLERS)
    assert ctx.interrupts == 1 and ctx.replies()[0][0] == {"status": "ok"}
    assert "interrupt_request" not in SHELL_HANDLERS


async def test_a_handler_bug_is_an_error_reply() -> None:
    ctx = FakeContext()
    await run(ctx, request("complete_request", code="x"))  # the fake needs cursor_pos
    ((content, _),) = ctx.replies()
    assert content["status"] == "error" and content["ename"] == "KeyError"


async def test_exit_in_a_cell_stops_the_kernel_after_its_reply() -> None:
    ctx = FakeContext()
    await run(ctx, request("execute_request", code="exit keep"))
    assert ctx.shutdowns == []  # exit(keep_kernel=True): only the frontend goes
    await run(ctx, request("execute_request", code="exit"))
    assert ctx.shutdowns == [False]
    [_, (content, _)] = ctx.replies()
    assert content["payload"] == [{"source": "ask_exit", "keepkernel": False}]
