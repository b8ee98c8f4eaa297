"""Hostile or broken peers on every port, one kernel process for the module.

Each input goes over a fresh TCP connection; afterwards the kernel must have logged
one clear line about it on stderr (and no traceback), and the jupyter_client client
connected since the start must still execute ``1+1``, get a control reply and a
heartbeat. The kernel's RSS (VmRSS) must stay within ``RSS_BOUND_MIB`` of what it
was before the first input, including the floods that exercise the caps.

Randomised variants of the byte-level inputs are in test_fuzz_ports.py.
"""

from __future__ import annotations

import random
import socket
import struct
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from jupyter_client.blocking.client import BlockingKernelClient
from support.client import control_request, run
from support.iopub import stream_text
from support.kernel_process import KernelProcess
from support.wire import frame, greeting, handshake, message, ready

from .helpers import (
    CHANNELS,
    ROUTER_CHANNELS,
    RawPeer,
    assert_serves,
    jupyter_frames,
    jupyter_parts,
    raw_send,
    sign,
)

RSS_BOUND_MIB = 32  # growth allowed over the whole module (measured: ~4 MiB)
MAX_PENDING = 64  # the kernel's pending-handshake limit (zmtp.sockets default)


@pytest.fixture(scope="module")
def base_rss(kernel: KernelProcess, kc: BlockingKernelClient) -> int:
    assert_serves(kc)
    return kernel.rss_kib()


def serves(kc: BlockingKernelClient) -> None:
    """shell (execute 1+1), control (kernel_info) and heartbeat all answer."""
    assert_serves(kc)
    assert control_request(kc, "kernel_info_request")["msg_type"] == "kernel_info_reply"
    assert kc.hb_channel.is_beating()


def kernel_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("[trikernel")]


def expect_one_line(
    kernel: KernelProcess, kc: BlockingKernelClient, pattern: str, act: Callable[[], Any]
) -> str:
    """Run ``act``; the kernel logs exactly one line, matching ``pattern``, and serves."""
    offset = kernel.log_size()
    act()
    kernel.wait_log(pattern, offset)
    serves(kc)
    lines = kernel.log_since(offset)
    assert not [
        line for line in lines if "Traceback" in line or line.startswith("[trikernel ERROR")
    ], lines
    assert len(kernel_lines(lines)) == 1, lines
    return lines[0]


# ------------------------------------------------------------------ byte level, all ports

rng = random.Random(1234)
RANDOM = bytes([0]) + rng.randbytes(300)  # not 0xff: a random first byte, fixed for the test

BYTE_INPUTS: dict[str, tuple[Callable[[str], bytes], str]] = {
    "random-bytes": (lambda ch: RANDOM, "not a ZMTP peer"),
    "greeting-then-garbage": (lambda ch: greeting() + b"\xfc" + RANDOM, "reserved flag bits"),
    "length-2**40-after-handshake": (
        lambda ch: handshake(ch) + struct.pack(">BQ", 2, 2**40),
        "exceeds the limit",
    ),
    "length-2**40-in-handshake": (
        lambda ch: greeting() + struct.pack(">BQ", 6, 2**40),
        "too large",
    ),
    "truncated-message": (
        lambda ch: handshake(ch) + frame(b"a", more=True) + struct.pack(">BQ", 2, 1000) + b"x" * 10,
        "in the middle of a message",
    ),
    "truncated-handshake": (lambda ch: greeting()[:30], "before its handshake completed"),
    "wrong-socket-type": (
        lambda ch: greeting() + ready("PUB" if ch != "iopub" else "DEALER"),
        "cannot talk to",
    ),
    "bad-mechanism": (
        lambda ch: greeting(mechanism=b"CURVE"),
        "mechanism",
    ),
    "message-frame-before-ready": (
        lambda ch: greeting() + frame(b"hello"),
        "before READY",
    ),
}


@pytest.mark.parametrize("name", list(BYTE_INPUTS))
@pytest.mark.parametrize("channel", CHANNELS)
def test_byte_level_input(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int, channel: str, name: str
) -> None:
    make, pattern = BYTE_INPUTS[name]
    line = expect_one_line(
        kernel, kc, pattern, lambda: raw_send(kernel.port(channel), make(channel))
    )
    assert channel_socket_type(channel) in line


def channel_socket_type(channel: str) -> str:
    return {"iopub": "XPUB", "hb": "REP"}.get(channel, "ROUTER")


@pytest.mark.parametrize("channel", CHANNELS)
def test_handshake_that_never_ends(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int, channel: str
) -> None:
    # A greeting, then a non-command frame announcing 1 GiB - 1, then 4 MiB: refused
    # from the frame's header, before its body is buffered at all.
    def act() -> None:
        with socket.create_connection(("127.0.0.1", kernel.port(channel)), timeout=5) as sock:
            sock.sendall(greeting() + struct.pack(">BQ", 2, 2**30 - 1))
            try:
                for _ in range(64):
                    sock.sendall(b"x" * (1 << 16))
            except OSError:
                pass  # reset by the kernel: expected

    expect_one_line(kernel, kc, "message frame before READY", act)


@pytest.mark.parametrize("channel", CHANNELS)
def test_flood_of_silent_connections(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int, channel: str
) -> None:
    # More connections than the pending-handshake limit, none sending a byte. The
    # established client is unaffected; new connections are refused (one log line)
    # until the silent ones go; then a new client connects at once.
    offset = kernel.log_size()
    socks: list[socket.socket] = []
    try:
        for _ in range(MAX_PENDING + 36):
            socks.append(socket.create_connection(("127.0.0.1", kernel.port(channel)), timeout=5))
        kernel.wait_log("refusing new connections", offset)
        serves(kc)
        if channel == "stdin":
            answered = run(
                kc, "print(input('? '))", allow_stdin=True, stdin_hook=lambda m: kc.input("ok")
            )
            assert stream_text(answered[1]).strip().endswith("ok")
    finally:
        for sock in socks:
            sock.close()
    kernel.wait_log("accepting connections again", offset)
    lines = kernel_lines(kernel.log_since(offset))
    assert len(lines) == 2, lines
    fresh = kernel.client()
    try:
        assert_serves(fresh)
    finally:
        fresh.stop_channels()


def test_heartbeat_peer_that_never_reads(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int
) -> None:
    # 4 connections each send 2000 pings of 60 KB and read nothing: the replies queued
    # for each are capped (1 MiB), the rest dropped.
    before = kernel.rss_kib()
    socks = []
    try:
        for _ in range(4):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.settimeout(5)
            sock.connect(("127.0.0.1", kernel.port("hb")))
            sock.sendall(handshake("hb"))
            ping = message([b"", b"p" * 60000])
            for _ in range(2000):
                sock.sendall(ping)
            socks.append(sock)
        serves(kc)
        grew = (kernel.rss_kib() - before) / 1024
        assert grew < 16, f"RSS grew {grew:.1f} MiB"
    finally:
        for sock in socks:
            sock.close()
    # Closing them with replies still queued once ended the kernel (EndOfChannel in
    # the peer's writer).
    time.sleep(0.5)
    serves(kc)


def test_subscription_flood(kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int) -> None:
    def act() -> None:
        with socket.create_connection(("127.0.0.1", kernel.port("iopub")), timeout=5) as sock:
            sock.sendall(handshake("iopub"))
            try:
                for i in range(5000):
                    topic = i.to_bytes(4, "big") + b"t" * 60000
                    sock.sendall(frame(b"\x09SUBSCRIBE" + topic, command=True))
            except OSError:
                pass  # closed by the kernel: expected

    before = kernel.rss_kib()
    expect_one_line(kernel, kc, "more than 256 subscriptions", act)
    assert (kernel.rss_kib() - before) / 1024 < 16


# ------------------------------------------------------------------ Jupyter level


def _bad_json(key: bytes) -> list[bytes]:
    parts = jupyter_parts("kernel_info_request", {"nonce": random.random()})
    parts[0] = b'{"msg_id": "x", "msg_type": '  # cut short
    return jupyter_frames(key, parts)


def _no_delimiter(key: bytes) -> list[bytes]:
    return jupyter_frames(key, jupyter_parts("kernel_info_request"))[1:]


def _bad_signature(key: bytes) -> list[bytes]:
    return jupyter_frames(key, jupyter_parts("kernel_info_request"), signature=b"0" * 64)


def _wrong_key(key: bytes) -> list[bytes]:
    return jupyter_frames(b"not-the-key", jupyter_parts("kernel_info_request"))


def _unsigned(key: bytes) -> list[bytes]:
    return jupyter_frames(key, jupyter_parts("kernel_info_request"), signature=b"")


def _too_few_frames(key: bytes) -> list[bytes]:
    return jupyter_frames(key, jupyter_parts("kernel_info_request"))[:4]


def _header_not_an_object(key: bytes) -> list[bytes]:
    parts = jupyter_parts("kernel_info_request", {"nonce": random.random()})
    parts[0] = b"[1, 2, 3]"
    return jupyter_frames(key, parts)


def _unknown_type(key: bytes) -> list[bytes]:
    return jupyter_frames(key, jupyter_parts("make_coffee_request"))


MESSAGES: dict[str, tuple[Callable[[bytes], list[bytes]], str]] = {
    "malformed-json": (_bad_json, "not valid JSON"),
    "header-not-an-object": (_header_not_an_object, "not an object"),
    "missing-delimiter": (_no_delimiter, "delimiter"),
    "bad-signature": (_bad_signature, "Invalid Signature"),
    "wrong-key": (_wrong_key, "Invalid Signature"),
    "unsigned": (_unsigned, "Unsigned Message"),
    "too-few-frames": (_too_few_frames, "need at least 5"),
    "unknown-msg-type": (_unknown_type, "make_coffee_request"),
}


@pytest.mark.parametrize("name", list(MESSAGES))
@pytest.mark.parametrize("channel", ROUTER_CHANNELS)
def test_bad_jupyter_message(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int, channel: str, name: str
) -> None:
    make, pattern = MESSAGES[name]
    with RawPeer(kernel.port(channel), channel) as peer:
        expect_one_line(kernel, kc, pattern, lambda: peer.send(make(kernel.key)))
        if name != "unknown-msg-type":
            # Dropped without an answer (as ipykernel): nothing comes back.
            with pytest.raises(TimeoutError):
                peer.receive(timeout=0.2)


@pytest.mark.parametrize("channel", ROUTER_CHANNELS)
def test_replayed_message(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int, channel: str
) -> None:
    msg_type = "input_reply" if channel == "stdin" else "kernel_info_request"
    frames = jupyter_frames(kernel.key, jupyter_parts(msg_type, {"value": "x"}))
    with RawPeer(kernel.port(channel), channel) as peer:
        peer.send(frames)
        if channel != "stdin":
            reply = peer.receive()
            assert b"kernel_info_reply" in reply[reply.index(b"<IDS|MSG>") + 2]
        time.sleep(0.2)
        expect_one_line(kernel, kc, "Duplicate Signature", lambda: peer.send(frames))
        with pytest.raises(TimeoutError):
            peer.receive(timeout=0.2)


def test_signed_request_gets_a_reply_on_a_raw_connection(
    kernel: KernelProcess, base_rss: int
) -> None:
    # The control for the tests above: the same peer with a good message is answered,
    # so "no answer" there means "dropped", not "the raw peer is broken".
    with RawPeer(kernel.port("shell"), "shell") as peer:
        parts = jupyter_parts("kernel_info_request")
        peer.send(jupyter_frames(kernel.key, parts))
        reply = peer.receive()
        i = reply.index(b"<IDS|MSG>")
        assert reply[i + 1] == sign(kernel.key, reply[i + 2 : i + 6])


def test_identity_takeover_by_an_unauthenticated_peer(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int
) -> None:
    # The session id (the client's ROUTER identity) is readable by anyone on iopub. A
    # peer without the key that connects with it takes the route over (ROUTER
    # handover, for reconnecting clients); the real client reconnects and takes it
    # back. The cost is a disruption, not code execution: it cannot sign requests.
    identity = kc.session.bsession
    with RawPeer(kernel.port("shell"), "shell", identity=identity):
        time.sleep(0.5)  # libzmq reconnects (reconnect_ivl 100 ms)
        serves(kc)
    serves(kc)


# ------------------------------------------------------------------ memory


def test_memory_stayed_bounded(
    kernel: KernelProcess, kc: BlockingKernelClient, base_rss: int
) -> None:
    serves(kc)
    grew = (kernel.rss_kib() - base_rss) / 1024
    print(f"kernel RSS: {base_rss / 1024:.1f} MiB at start, grew {grew:.1f} MiB")
    assert grew < RSS_BOUND_MIB


@pytest.fixture(autouse=True)
def _no_kernel_errors(kernel: KernelProcess) -> Iterator[None]:
    offset = kernel.log_size()
    yield
    bad = [
        line
        for line in kernel.log_since(offset)
        if "Traceback" in line or line.startswith("[trikernel ERROR")
    ]
    assert not bad, bad
