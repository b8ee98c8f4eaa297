"""Promise 4: no kernel stalled by a client. A subscriber that never reads, a client
that vanishes in the middle of its reply or never reads its replies, and a stdin peer
that disconnects while ``input()`` waits: none of them slows the kernel or the other
clients, and the live client's output is complete.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.session import Session
from support.client import control_request, interrupt, run, stdin_request
from support.iopub import iopub_until, is_idle, stream_text
from support.kernel_process import KernelProcess

from .helpers import assert_serves, established, stalled_subscriber

LINES = 100_000
PRINT_LOTS = f"for i in range({LINES}): print('line', i, 'x' * 100)"


def expected_lines() -> list[str]:
    return [f"line {i} {'x' * 100}" for i in range(LINES)]


def kernel_tx_queue(kernel: KernelProcess, channel: str) -> list[int]:
    """Bytes waiting in the kernel's send buffers of its connections on ``channel``
    (from /proc/net/tcp: tx_queue of sockets whose local port is the channel's)."""
    return [int(fields[4].split(":")[0], 16) for fields in established(kernel.port(channel))]


@pytest.fixture
def ctx() -> Iterator[zmq.Context[Any]]:
    context: zmq.Context[Any] = zmq.Context()
    try:
        yield context
    finally:
        context.destroy(linger=0)


def signed_client(
    ctx: zmq.Context[Any], kernel: KernelProcess, channel: str
) -> tuple[zmq.Socket[Any], Session]:
    session = Session(key=kernel.key)
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.IDENTITY, session.bsession)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{kernel.port(channel)}")
    return sock, session


def timed_print_lots(kc: BlockingKernelClient) -> float:
    start = time.monotonic()
    reply, outputs = run(kc, PRINT_LOTS, timeout=120)
    took = time.monotonic() - start
    assert reply["content"]["status"] == "ok"
    assert stream_text(outputs).splitlines() == expected_lines()
    return took


def test_subscriber_that_never_reads(
    kernel: KernelProcess, kc: BlockingKernelClient, ctx: zmq.Context[Any]
) -> None:
    baseline = timed_print_lots(kc)
    before = kernel.rss_kib()
    subs = [stalled_subscriber(ctx, kernel) for _ in range(3)]
    time.sleep(0.5)  # subscribed
    took = timed_print_lots(kc)  # complete and in order for the live client
    # The stalled subscribers' connections really are full...
    assert sum(q > 0 for q in kernel_tx_queue(kernel, "iopub")) >= 3
    # ...and cost the live client little time (the kernel never waits for them).
    print(f"100k lines: {baseline:.2f} s alone, {took:.2f} s with 3 stalled subscribers")
    assert took < 2 * baseline + 2, (took, baseline)
    grew = (kernel.rss_kib() - before) / 1024
    print(f"RSS grew {grew:.1f} MiB with 3 stalled subscribers")
    assert grew < 100, f"RSS grew {grew:.0f} MiB (cap: 64 MiB of queued output, shared)"
    assert_serves(kc)
    for sub in subs:
        sub.close(linger=0)


def test_client_that_vanishes_mid_reply(
    kernel: KernelProcess, kc: BlockingKernelClient, ctx: zmq.Context[Any]
) -> None:
    # Its request makes a 20 MB execute_reply (a user expression); it is gone by then.
    for _ in range(3):
        sock, session = signed_client(ctx, kernel, "shell")
        content = {
            "code": "print('vanishing')",
            "silent": False,
            "user_expressions": {"big": "'x' * 20_000_000"},
        }
        session.send(sock, "execute_request", content)
        time.sleep(0.05)
        sock.close(linger=0)
    assert_serves(kc)
    reply, outputs = run(kc, "print('still here')")
    assert stream_text(outputs) == "still here\n"


def test_client_that_never_reads_its_replies(
    kernel: KernelProcess, kc: BlockingKernelClient, ctx: zmq.Context[Any]
) -> None:
    # 50 requests with 2 MB replies, none read: its queue fills and drops; the live
    # client is answered promptly all along.
    sock, session = signed_client(ctx, kernel, "shell")
    try:
        for _ in range(50):
            session.send(
                sock,
                "execute_request",
                {"code": "", "silent": True, "user_expressions": {"b": "'y' * 2_000_000"}},
            )
        time.sleep(0.2)
        start = time.monotonic()
        for _ in range(5):
            assert_serves(kc)
        per_execution = (time.monotonic() - start) / 5
        assert per_execution < 1.0
        control_sock, control_session = signed_client(ctx, kernel, "control")
        for _ in range(200):  # control replies too, never read
            control_session.send(control_sock, "kernel_info_request", {})
        control_sock.close(linger=0)
        assert_serves(kc)
    finally:
        sock.close(linger=0)


def test_stdin_peer_disconnects_while_input_waits(
    kernel: KernelProcess, kc: BlockingKernelClient
) -> None:
    other = kernel.client()
    try:
        msg_id = other.execute("x = input('name? ')", allow_stdin=True)
        request = stdin_request(other, msg_id)
        assert request["content"]["prompt"] == "name? "
    finally:
        other.stop_channels()  # gone without answering
    # Control still answers at once while the cell waits for the dead peer...
    start = time.monotonic()
    control_request(kc, "kernel_info_request")
    assert time.monotonic() - start < 1.0
    # ...an interrupt ends that cell (its idle reaches every subscriber)...
    interrupt(kc)
    iopub_until(kc, msg_id, is_idle)
    # ...and the kernel serves the others, with the namespace kept.
    assert_serves(kc)
    reply, _ = run(kc, "x")
    assert reply["content"]["ename"] == "NameError"  # the interrupted input() set nothing
    reply, _ = run(kc, "y = 5; y")
    assert reply["content"]["status"] == "ok"
