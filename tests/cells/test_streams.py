"""The Outbox (trikernel.cells.streams): coalescing, ordering and attribution.

Rules: no sockets, no subprocess, no trio; ``emit`` records every output as
``(request, msg_type, content, metadata, buffers)``. The flusher thread is real:
most tests give it a delay of a minute so that only explicit flushes emit, the
timer tests use a short delay and generous bounds, and every Outbox is closed.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from trikernel.cells import streams
from trikernel.cells.streams import FLUSH_SIZE, Emitted, Outbox

NEVER = 60.0  # a flush delay no test waits for


class Recorder:
    def __init__(self) -> None:
        self.outputs: list[tuple[Any, str, Any, dict[str, Any], Any]] = []
        self.threads: list[str] = []
        self.times: list[float] = []
        self.arrived = threading.Event()

    def __call__(self, out: Emitted) -> None:
        content = json.loads(out.content)
        self.outputs.append((out.request, out.msg_type, content, out.metadata, out.buffers))
        self.threads.append(threading.current_thread().name)
        self.times.append(time.monotonic())
        self.arrived.set()

    def streams(self) -> list[tuple[str, str]]:
        return [(c["name"], c["text"]) for _, t, c, _, _ in self.outputs if t == "stream"]

    def types(self) -> list[str]:
        return [t for _, t, _, _, _ in self.outputs]


@pytest.fixture
def emitted() -> Recorder:
    return Recorder()


@pytest.fixture
def box(emitted: Recorder) -> Iterator[Outbox]:
    outbox = Outbox(emitted, flush_delay=NEVER)
    yield outbox
    outbox.close()


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


def test_stream_text_is_coalesced_into_one_output(box: Outbox, emitted: Recorder) -> None:
    for piece in ("a", "b", "", "c\n"):
        box.write_stream("stdout", piece)
    assert emitted.outputs == []
    box.flush()
    assert emitted.outputs == [(None, "stream", {"name": "stdout", "text": "abc\n"}, {}, ())]


def test_flush_with_nothing_pending_emits_nothing(box: Outbox, emitted: Recorder) -> None:
    box.flush()
    box.write_stream("stdout", "")
    box.flush()
    assert emitted.outputs == []


def test_a_change_of_stream_name_flushes(box: Outbox, emitted: Recorder) -> None:
    box.write_stream("stdout", "a")
    box.write_stream("stderr", "b")
    box.write_stream("stderr", "c")
    box.write_stream("stdout", "d")
    box.flush()
    assert emitted.streams() == [("stdout", "a"), ("stderr", "bc"), ("stdout", "d")]


def test_empty_text_does_not_change_the_stream(box: Outbox, emitted: Recorder) -> None:
    box.write_stream("stdout", "a")
    box.write_stream("stderr", "")
    box.write_stream("stdout", "b")
    box.flush()
    assert emitted.streams() == [("stdout", "ab")]


def test_flush_size_flushes_in_the_writing_thread(box: Outbox, emitted: Recorder) -> None:
    box.write_stream("stdout", "x" * (FLUSH_SIZE - 1))
    assert emitted.outputs == []
    box.write_stream("stdout", "yz")
    assert emitted.streams() == [("stdout", "x" * (FLUSH_SIZE - 1) + "yz")]
    assert emitted.threads == [threading.current_thread().name]


def test_any_other_output_flushes_pending_text_first(box: Outbox, emitted: Recorder) -> None:
    box.write_stream("stdout", "hello\n")
    box.send_output("display_data", {"data": {"text/plain": "1"}, "metadata": {}})
    assert emitted.types() == ["stream", "display_data"]
    assert emitted.outputs[1][2] == {"data": {"text/plain": "1"}, "metadata": {}}


def test_send_output_passes_metadata_and_buffers(box: Outbox, emitted: Recorder) -> None:
    box.send_output("comm_msg", {"data": {}}, metadata={"k": 1}, buffers=[b"\x00\xff"])
    assert emitted.outputs == [(None, "comm_msg", {"data": {}}, {"k": 1}, [b"\x00\xff"])]


def test_set_request_flushes_under_the_old_request(box: Outbox, emitted: Recorder) -> None:
    box.set_request("A")
    box.write_stream("stdout", "for A")
    box.set_request("B")
    box.send_output("display_data", {"data": {}})
    box.write_stream("stdout", "for B")
    box.flush()
    requests = [(r, t) for r, t, _, _, _ in emitted.outputs]
    assert requests == [("A", "stream"), ("B", "display_data"), ("B", "stream")]


def test_muted_drops_text_and_outputs(box: Outbox, emitted: Recorder) -> None:
    box.write_stream("stdout", "before")
    box.set_muted(True)  # flushes "before" while not yet muted
    box.write_stream("stdout", "dropped")
    box.send_output("display_data", {"data": {}})
    box.set_muted(False)
    box.write_stream("stdout", "after")
    box.flush()
    assert emitted.streams() == [("stdout", "before"), ("stdout", "after")]
    assert emitted.types() == ["stream", "stream"]


def test_close_flushes_then_drops_and_stops_the_flusher(emitted: Recorder) -> None:
    before = set(threading.enumerate())
    outbox = Outbox(emitted, flush_delay=NEVER)
    [flusher] = new_threads(before)
    outbox.write_stream("stdout", "last")
    outbox.close()
    outbox.set_muted(False)  # closed stays muted
    outbox.write_stream("stdout", "late")
    outbox.send_output("display_data", {"data": {}})
    outbox.flush()
    assert emitted.streams() == [("stdout", "last")]
    assert emitted.types() == ["stream"]
    flusher.join(timeout=5)
    assert not flusher.is_alive()


def test_the_timer_flushes_within_the_delay() -> None:
    emitted, delay = Recorder(), 0.05
    outbox = Outbox(emitted, flush_delay=delay)
    try:
        written = time.monotonic()
        outbox.write_stream("stdout", "tick")
        outbox.write_stream("stdout", "tock")
        assert emitted.arrived.wait(timeout=5)
        assert delay <= emitted.times[0] - written < delay + 2
        assert emitted.streams() == [("stdout", "ticktock")]
        assert emitted.threads == ["trikernel-flusher"]
    finally:
        outbox.close()


def test_the_timer_restarts_after_each_flush() -> None:
    emitted = Recorder()
    outbox = Outbox(emitted, flush_delay=0.01)
    try:
        for text in ("one", "two"):
            emitted.arrived.clear()
            outbox.write_stream("stdout", text)
            assert emitted.arrived.wait(timeout=5)
        assert emitted.streams() == [("stdout", "one"), ("stdout", "two")]
    finally:
        outbox.close()


@pytest.mark.parametrize(
    "content", [{"x": float("nan")}, {"x": float("inf")}, {"x": object()}, {"x": {1j}}]
)
def test_unencodable_content_raises_before_anything_is_emitted(
    box: Outbox, emitted: Recorder, content: dict[str, Any]
) -> None:
    box.write_stream("stdout", "pending")
    with pytest.raises((ValueError, TypeError)):
        box.send_output("execute_result", content)
    assert emitted.outputs == []
    box.flush()
    assert emitted.streams() == [("stdout", "pending")]


def test_run_in_order_runs_after_pending_text(box: Outbox, emitted: Recorder) -> None:
    box.write_stream("stdout", "first")
    box.run_in_order(lambda: emitted.outputs.append(("-", "action", None, {}, ())))
    assert emitted.types() == ["stream", "action"]


def test_safe_point_runs_after_each_write_and_output(box: Outbox, emitted: Recorder) -> None:
    calls: list[int] = []
    box.safe_point = lambda: calls.append(len(emitted.outputs))
    box.write_stream("stdout", "a")
    box.send_output("display_data", {"data": {}})
    assert calls == [0, 2]  # after the write (nothing out yet), after both outputs


@pytest.mark.parametrize("flush_size", [7, FLUSH_SIZE])
def test_many_threads_every_character_arrives_in_thread_order(
    monkeypatch: pytest.MonkeyPatch, flush_size: int
) -> None:
    monkeypatch.setattr(streams, "FLUSH_SIZE", flush_size)
    emitted, writers, pieces = Recorder(), 8, 300
    outbox = Outbox(emitted, flush_delay=0.001)

    def write(n: int) -> None:
        for i in range(pieces):
            outbox.write_stream("stdout", f"{n}:{i};")

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    outbox.close()
    text = "".join(t for _, t in emitted.streams())
    seen: dict[str, list[int]] = {str(n): [] for n in range(writers)}
    for piece in text.split(";")[:-1]:
        writer, i = piece.split(":")
        seen[writer].append(int(i))
    assert seen == {str(n): list(range(pieces)) for n in range(writers)}
