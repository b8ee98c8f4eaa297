"""Hypothesis fuzzing of every kernel port, through a real kernel process.

Each example is one TCP connection carrying bytes built from a recipe: nothing, a
greeting (possibly mutated) or a full handshake, then frames that are valid, lie
about their size (up to 2**64-1), carry any flag bits, are ZMTP commands (known or
not), or are raw garbage, possibly truncated anywhere. On shell/control/stdin a
second test sends well-framed Jupyter messages that are broken at the Jupyter level:
random frames around the delimiter, bad or missing signatures, undecodable or
non-object JSON, correctly signed messages of unknown or harmless types with random
content. After every example the module's jupyter_client client must still execute
``1+1``; at the end of the module the kernel must have logged no traceback and its
RSS must have grown less than ``RSS_BOUND_MIB``.

The default run is bounded for CI (``CI_EXAMPLES`` per port, a few seconds each);
the ``slow`` variants take their example count from the hypothesis profile
(``nox -s fuzz``: ``--hypothesis-profile=fuzz``, 5000 per port).
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jupyter_client.blocking.client import BlockingKernelClient
from support.kernel_process import KernelProcess
from support.wire import PEER_TYPE, frame, greeting, message, ready

from .helpers import CHANNELS, ROUTER_CHANNELS, assert_serves, jupyter_parts, raw_send, sign

CI_EXAMPLES = 120
RSS_BOUND_MIB = 32
TRIED: Counter[str] = Counter()  # examples run per (test kind, port), for the report

# ------------------------------------------------------------------ byte-level recipes

COMMAND_NAMES = [b"PING", b"PONG", b"SUBSCRIBE", b"CANCEL", b"READY", b"ERROR", b"HELLO", b""]
LYING_SIZES = [0, 1, 254, 255, 256, 65535, 65536, 2**31, 2**32, 2**40, 2**63, 2**64 - 1]


@st.composite
def zmtp_frame(draw: Any) -> bytes:
    kind = draw(st.sampled_from(["valid", "command", "lying", "raw"]))
    body = draw(st.binary(max_size=300))
    if kind == "valid":
        return frame(body, more=draw(st.booleans()))
    if kind == "command":
        name = draw(st.sampled_from(COMMAND_NAMES))
        return frame(bytes([len(name)]) + name + body, more=draw(st.booleans()), command=True)
    if kind == "lying":
        flags = draw(st.integers(0, 255))
        size = draw(st.sampled_from(LYING_SIZES) | st.integers(0, 2**64 - 1))
        if flags & 2:
            return struct.pack(">BQ", flags, size) + body
        return struct.pack(">BB", flags, size % 256) + body
    return bytes(body[:64])


@st.composite
def byte_recipe(draw: Any) -> tuple[str, int, bytes, list[bytes], float | None, bytes]:
    start = draw(st.sampled_from(["nothing", "greeting", "mutated-greeting", "handshake"]))
    minor = draw(st.integers(0, 1))
    identity = draw(st.binary(max_size=8))
    frames = draw(st.lists(zmtp_frame(), max_size=8))
    cut = draw(st.none() | st.floats(0, 1))
    mutation = draw(st.binary(min_size=2, max_size=2))
    return start, minor, identity, frames, cut, mutation


def render(recipe: tuple[str, int, bytes, list[bytes], float | None, bytes], channel: str) -> bytes:
    start, minor, identity, frames, cut, mutation = recipe
    head = b""
    if start == "greeting":
        head = greeting(minor)
    elif start == "mutated-greeting":
        g = bytearray(greeting(minor))
        g[mutation[0] % 64] = mutation[1]
        head = bytes(g)
    elif start == "handshake":
        head = greeting(minor) + ready(PEER_TYPE[channel], identity)
    data = head + b"".join(frames)
    if cut is not None:
        data = data[: int(len(data) * cut)]
    return data


def check_log(kernel: KernelProcess, offset: int, messages: int) -> None:
    """What one hostile connection may add to the kernel's stderr: a clear line per
    bad message, one for the connection, no traceback, no line the peer forged."""
    lines = kernel.log_since(offset)
    assert len(lines) <= messages + 1, lines
    assert all(line.startswith("[trikernel WARNING") for line in lines), lines


def fuzz_bytes(kernel: KernelProcess, kc: BlockingKernelClient, channel: str, recipe: Any) -> None:
    TRIED[f"bytes/{channel}"] += 1
    offset = kernel.log_size()
    raw_send(kernel.port(channel), render(recipe, channel), linger=1.0)
    assert_serves(kc)
    check_log(kernel, offset, messages=len(recipe[3]))


# ------------------------------------------------------------------ Jupyter-level recipes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)
# Signed messages are authenticated: what a client with the key may send. Never
# execute_request or shutdown_request (they would run code or end the kernel).
SIGNED_TYPES = [
    "kernel_info_request",
    "complete_request",
    "inspect_request",
    "is_complete_request",
    "history_request",
    "comm_info_request",
    "comm_msg",
    "comm_close",
    "input_reply",
    "interrupt_request",
    "make_coffee_request",
    "",
]


@st.composite
def jupyter_recipe(draw: Any) -> tuple[str, list[bytes]]:
    kind = draw(
        st.sampled_from(
            ["random-frames", "bad-signature", "unsigned", "bad-json", "signed", "replayed"]
        )
    )
    content = draw(st.dictionaries(st.text(max_size=12), JSON, max_size=5))
    msg_type = draw(st.sampled_from(SIGNED_TYPES) | st.text(max_size=20))
    parts = jupyter_parts(msg_type, content)
    if kind == "random-frames":
        frames = draw(st.lists(st.binary(max_size=100) | st.just(b"<IDS|MSG>"), max_size=10))
        return kind, frames or [b""]
    if kind == "bad-signature":
        return kind, [b"<IDS|MSG>", draw(st.binary(max_size=80)), *parts]
    if kind == "unsigned":
        return kind, [b"<IDS|MSG>", b"", *parts]
    if kind == "bad-json":
        i = draw(st.integers(0, 3))
        parts[i] = draw(st.binary(max_size=50) | JSON.map(lambda v: json.dumps(v).encode()))
        return kind, [b"<IDS|MSG>", b"", *parts]  # signed at send time (needs the key)
    extra = draw(st.lists(st.binary(max_size=50), max_size=3))  # buffers
    return kind, [b"<IDS|MSG>", b"", *parts, *extra]


def fuzz_jupyter(
    kernel: KernelProcess, kc: BlockingKernelClient, channel: str, recipe: tuple[str, list[bytes]]
) -> None:
    TRIED[f"jupyter/{channel}"] += 1
    kind, frames = recipe
    frames = list(frames)
    if kind in ("bad-json", "signed", "replayed"):
        frames[1] = sign(kernel.key, frames[2:6])
    data = message(frames)
    wire = greeting() + ready("DEALER") + (data + data if kind == "replayed" else data)
    offset = kernel.log_size()
    raw_send(kernel.port(channel), wire, linger=1.0)
    assert_serves(kc)
    check_log(kernel, offset, messages=2 if kind == "replayed" else 1)


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("channel", CHANNELS)
@settings(max_examples=CI_EXAMPLES)
@given(recipe=byte_recipe())
def test_fuzz_bytes(
    kernel: KernelProcess, kc: BlockingKernelClient, channel: str, recipe: Any
) -> None:
    fuzz_bytes(kernel, kc, channel, recipe)


@pytest.mark.parametrize("channel", ROUTER_CHANNELS)
@settings(max_examples=CI_EXAMPLES)
@given(recipe=jupyter_recipe())
def test_fuzz_jupyter_messages(
    kernel: KernelProcess, kc: BlockingKernelClient, channel: str, recipe: Any
) -> None:
    fuzz_jupyter(kernel, kc, channel, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("channel", CHANNELS)
@given(recipe=byte_recipe())
def test_fuzz_bytes_long(
    kernel: KernelProcess, kc: BlockingKernelClient, channel: str, recipe: Any
) -> None:
    fuzz_bytes(kernel, kc, channel, recipe)


@pytest.mark.slow
@pytest.mark.parametrize("channel", ROUTER_CHANNELS)
@given(recipe=jupyter_recipe())
def test_fuzz_jupyter_messages_long(
    kernel: KernelProcess, kc: BlockingKernelClient, channel: str, recipe: Any
) -> None:
    fuzz_jupyter(kernel, kc, channel, recipe)


@pytest.fixture(scope="module", autouse=True)
def start(kernel: KernelProcess, kc: BlockingKernelClient) -> tuple[int, int]:
    """Before the first example: the kernel's RSS and the evaluator's pid."""
    assert_serves(kc)
    return kernel.rss_kib(), kernel.wait_evaluator()


def test_fuzzed_kernel_is_healthy(
    kernel: KernelProcess, kc: BlockingKernelClient, start: tuple[int, int]
) -> None:
    # Runs after the fuzz tests of this module (file order).
    check_health(kernel, kc, start)


@pytest.mark.slow
def test_fuzzed_kernel_is_healthy_after_the_long_run(
    kernel: KernelProcess, kc: BlockingKernelClient, start: tuple[int, int]
) -> None:
    check_health(kernel, kc, start)


def check_health(kernel: KernelProcess, kc: BlockingKernelClient, start: tuple[int, int]) -> None:
    start_rss, evaluator = start
    assert_serves(kc)
    assert kernel.evaluator_pids() == [evaluator]  # no authenticated input killed it
    log = kernel.log_since(0)
    assert not [
        line for line in log if "Traceback" in line or line.startswith("[trikernel ERROR")
    ], log[-40:]
    grew = (kernel.rss_kib() - start_rss) / 1024
    print(f"fuzz examples per port: {dict(sorted(TRIED.items()))}")
    print(f"kernel RSS {start_rss / 1024:.1f} MiB at start, grew {grew:.1f} MiB")
    print(f"kernel log lines: {len(log)}")
    assert grew < RSS_BOUND_MIB
