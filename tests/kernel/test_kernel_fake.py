"""The kernel's message handling, with a fake evaluator, in this process.

Rules: every socket on 127.0.0.1 with port 0; every wait under trio.fail_after; the
client closes first, then the kernel's nursery is cancelled. Real-process tests
with the real evaluator live in test_kernel_process.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import zmq

from trikernel.client import KernelClient, open_client
from trikernel.connection import ConnectionInfo, new_connection_info
from trikernel.kernel import Kernel
from trikernel.messages import DELIMITER, Message, Signer, new_header, serialize

from .fake_evaluator import FakeEvaluatorFactory, open_fake_evaluator


@pytest.fixture
async def kernel(nursery: trio.Nursery) -> Kernel:
    kernel = Kernel(new_connection_info(), evaluator_factory=open_fake_evaluator)
    await nursery.start(kernel.run)
    return kernel


@pytest.fixture
async def client(kernel: Kernel) -> AsyncIterator[KernelClient]:
    async with open_client(kernel.info) as client:
        await client.wait_for_ready(10)
        yield client


def types(msgs: list[Message]) -> list[str]:
    return [m.msg_type for m in msgs]


async def test_execute_outputs_in_order_then_idle(client: KernelClient) -> None:
    with trio.fail_after(10):
        result = await client.execute("print one\nprint two\n42")
    assert result.status == "ok"
    assert types(result.outputs) == ["execute_input", "stream", "stream", "execute_result"]
    assert result.stdout() == "one\ntwo\n"
    assert result.outputs[0].content == {"code": "print one\nprint two\n42", "execution_count": 1}


async def test_busy_idle_bracket_every_request(client: KernelClient) -> None:
    with trio.fail_after(10):
        reply = await client.kernel_info()
        await trio.sleep(0.1)
    statuses = [
        m.content["execution_state"]
        for m in client.iopub_log
        if m.msg_type == "status" and m.parent_header.get("msg_id") == reply.parent_header["msg_id"]
    ]
    assert statuses == ["busy", "idle"]


async def test_kernel_info_on_control(client: KernelClient) -> None:
    with trio.fail_after(10):
        reply = await client.request("kernel_info_request", channel="control")
    assert reply.msg_type == "kernel_info_reply"
    assert reply.content["protocol_version"] == "5.5"
    assert reply.content["language_info"]["name"] == "python"


async def test_execution_count_advances_only_when_stored(client: KernelClient) -> None:
    with trio.fail_after(10):
        first = await client.execute("1")
        silent = await client.execute("2", silent=True)
        second = await client.execute("3")
    assert first.reply.content["execution_count"] == 1
    assert silent.outputs == [] or "execute_input" not in types(silent.outputs)
    assert second.reply.content["execution_count"] == 2


async def test_stop_on_error_aborts_queued_executes(client: KernelClient) -> None:
    with trio.fail_after(10):
        failing = await client.submit("sleep 0.2\nfail")
        queued = [await client.submit(f"print {i}") for i in range(3)]
        info = await client.request("kernel_info_request")  # not an execute: still answered
        replies = [await client.reply_to(m.msg_id) for m in queued]
        assert (await client.reply_to(failing.msg_id)).content["status"] == "error"
    assert [r.content["status"] for r in replies] == ["aborted"] * 3
    assert info.content["status"] == "ok"
    with trio.fail_after(10):
        assert (await client.execute("print after")).stdout() == "after\n"


async def test_interrupt_cancels_running_cell(client: KernelClient) -> None:
    with trio.fail_after(10):
        request = await client.submit("sleep 30", stop_on_error=False)
        await trio.sleep(0.1)
        assert (await client.interrupt()).content["status"] == "ok"
        reply = await client.reply_to(request.msg_id)
    assert reply.content["ename"] == "KeyboardInterrupt"


async def test_input_request_goes_to_the_requesting_client(
    kernel: Kernel, client: KernelClient
) -> None:
    asked: list[str] = []

    async def answer(prompt: str, password: bool) -> str:
        asked.append(prompt)
        return "yes"

    async with open_client(kernel.info) as bystander:
        bystander.input_handler = answer  # must never be asked
        client.input_handler = answer
        with trio.fail_after(10):
            await bystander.wait_for_ready(10)
            result = await client.execute("input sure?")
    assert result.stdout() == "yes\n"
    assert asked == ["sure?"]


async def test_bad_messages_are_dropped_and_kernel_goes_on(
    kernel: Kernel, client: KernelClient
) -> None:
    ctx = zmq.Context()
    try:
        dealer = ctx.socket(zmq.DEALER)
        dealer.linger = 0
        dealer.connect(kernel.info.url("shell"))
        good = serialize(
            Message(new_header("kernel_info_request", "s"), {}, {}, {}),
            Signer(kernel.info.key.encode()),
        )
        bad_sig = [DELIMITER, b"0" * 64, *good[2:]]
        dealer.send_multipart(bad_sig)
        dealer.send_multipart([b"no delimiter", b"{}"])
        dealer.send_multipart([DELIMITER, good[1], b"not json", b"{}", b"{}", b"{}"])
        dealer.send_multipart(good)
        dealer.send_multipart(good)  # replayed signature: dropped
        dealer.RCVTIMEO = 5000
        first = await trio.to_thread.run_sync(dealer.recv_multipart)
        dealer.RCVTIMEO = 300
        with pytest.raises(zmq.Again):
            await trio.to_thread.run_sync(dealer.recv_multipart)
        dealer.close()
    finally:
        ctx.term()
    assert first[0] == DELIMITER
    with trio.fail_after(10):
        assert (await client.execute("print still here")).stdout() == "still here\n"


async def test_iopub_welcome_to_every_subscriber(kernel: Kernel) -> None:
    async with open_client(kernel.info) as one, open_client(kernel.info) as two:
        with trio.fail_after(10):
            for c in (one, two):
                while not any(m.msg_type == "iopub_welcome" for m in c.iopub_log):
                    await trio.sleep(0.01)
    welcome = next(m for m in two.iopub_log if m.msg_type == "iopub_welcome")
    assert welcome.content == {"subscription": ""}
    assert welcome.parent_header == {}


async def test_shutdown_request_ends_the_kernel(nursery: trio.Nursery) -> None:
    kernel = Kernel(new_connection_info(), evaluator_factory=open_fake_evaluator)
    done = trio.Event()

    async def run(task_status: trio.TaskStatus[ConnectionInfo]) -> None:
        await kernel.run(task_status=task_status)
        done.set()

    info = await nursery.start(run)
    async with open_client(info) as client:
        with trio.fail_after(10):
            await client.wait_for_ready(10)
            reply = await client.shutdown(restart=True)
            await done.wait()
            await trio.sleep(0.05)
    assert reply.content == {"status": "ok", "restart": True}
    assert kernel.restart_requested
    assert any(m.msg_type == "shutdown_reply" for m in client.iopub_log)


async def test_heartbeat_echoes(client: KernelClient) -> None:
    with trio.fail_after(10):
        rtt = await client.heartbeat()
    assert rtt < 1


async def test_unencodable_reply_becomes_an_error_reply(client: KernelClient) -> None:
    # The fake's reply holds NaN, which JSON cannot carry: the client must get an
    # error reply saying why (it used to get nothing, and wait forever).
    with trio.fail_after(10):
        result = await client.execute("nan")
    content = result.reply.content
    assert content["status"] == "error"
    assert content["ename"] == "LocalProtocolError"
    assert "execute_reply could not be encoded" in content["evalue"]
    assert "Out of range float values are not JSON compliant" in content["evalue"]
    assert content["execution_count"] == 1
    assert result.reply.metadata == {"status": "error"}
    with trio.fail_after(10):
        assert (await client.execute("print next")).stdout() == "next\n"


@pytest.fixture
async def factory() -> FakeEvaluatorFactory:
    return FakeEvaluatorFactory()


@pytest.fixture
async def replaced_client(
    nursery: trio.Nursery, factory: FakeEvaluatorFactory
) -> AsyncIterator[KernelClient]:
    """A client of a kernel on ``factory``'s fake evaluators (it counts the ones opened)."""
    kernel = Kernel(new_connection_info(), evaluator_factory=factory)
    await nursery.start(kernel.run)
    async with open_client(kernel.info) as client:
        with trio.fail_after(10):
            await client.wait_for_ready(10)
        yield client


async def test_evaluator_whose_context_fails_between_cells_is_replaced(
    replaced_client: KernelClient, factory: FakeEvaluatorFactory
) -> None:
    client = replaced_client
    with trio.fail_after(10):
        assert (await client.execute("generation")).stdout() == "0\n"
        assert (await client.execute("crash")).status == "ok"  # fails after its reply
        while len(factory.opened) < 2:
            await trio.sleep(0.01)
        assert (await client.kernel_info()).content["status"] == "ok"
        after = await client.execute("generation")
    assert after.stdout() == "1\n"  # the new evaluator ran it
    notices = [
        m.content["text"]
        for m in client.iopub_log
        if m.msg_type == "stream" and m.content["name"] == "stderr"
    ]
    assert any("the evaluator failed" in t and "namespace was reset" in t for t in notices)


async def test_a_cell_running_when_the_evaluator_context_fails_gets_an_error_reply(
    replaced_client: KernelClient,
) -> None:
    with trio.fail_after(10):
        result = await replaced_client.execute("crash_while_running")
        assert result.reply.content["ename"] == "EvaluatorDied"
        assert "namespace was reset" in result.reply.content["evalue"]
        assert (await replaced_client.execute("generation")).stdout() == "1\n"


async def test_outputs_carry_the_parent_the_evaluator_gives(client: KernelClient) -> None:
    with trio.fail_after(10):
        result = await client.execute("print a\n7")
    msg_id = result.reply.parent_header["msg_id"]
    assert [m.parent_header["msg_id"] for m in result.outputs] == [msg_id] * 3
