"""The one ordered, thread-safe way out of a shell: ``Outbox``.

Both evaluators use it; only what it hands its ``emit`` differs (frames on a pipe
in the subprocess, ``Output``s to the kernel's sink in-process). Everything user
code produces passes here: ``sys.stdout``/``sys.stderr`` text (coalesced),
display data, results, errors, comm messages.

Ordering: one lock; pending stream text is flushed before any other output, so a
print followed by a display arrives in that order, and ``emit`` is called under
the lock, so outputs leave in exactly the order they were made.

Coalescing: text is appended to a buffer, flushed when it reaches ``FLUSH_SIZE``
characters (in the writing thread: back-pressure), when the stream name changes,
before any other output, on ``flush()``, and by a flusher thread ``FLUSH_DELAY``
seconds after the first unflushed write, even while the cell blocks its loop.

Attribution: ``request`` names what outputs belong to (an id or a ``Parent``, as
the emitter wants it); ``set_request`` flushes first, so text written for one
request never leaves under the next.

Content is encoded here, once (``_json.encode``), before any I/O: an output that
cannot be encoded fails in the code that made it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .. import _json
from .._bytes import Buffer

__all__ = ["Outbox", "Emit", "Emitted", "FLUSH_SIZE", "FLUSH_DELAY"]

FLUSH_SIZE = 64 * 1024  # characters
FLUSH_DELAY = 0.05  # seconds


@dataclass(frozen=True, slots=True)
class Emitted:
    """One output as the Outbox hands it on: encoded, with the request it belongs to."""

    request: Any
    msg_type: str
    content: bytes  # wire JSON
    metadata: dict[str, Any]
    buffers: Sequence[Buffer]


Emit = Callable[[Emitted], None]


class Outbox:
    """See the module docstring. ``close()`` stops the flusher thread."""

    def __init__(self, emit: Emit, *, flush_delay: float = FLUSH_DELAY) -> None:
        self._emit = emit
        self._flush_delay = flush_delay
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._name = ""
        self._parts: list[str] = []
        self._size = 0
        self._muted = False
        self._closed = False
        self.request: Any = None
        #: called after each write, outside the lock, in the writing thread: the
        #: subprocess loop raises a deferred KeyboardInterrupt there
        self.safe_point: Callable[[], None] | None = None
        threading.Thread(target=self._flusher, name="trikernel-flusher", daemon=True).start()

    # -- producers -------------------------------------------------------------
    def write_stream(self, name: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if self._parts and self._name != name:
                self._flush_locked()
            was_empty = not self._parts
            self._name = name
            self._parts.append(text)
            self._size += len(text)
            if self._size >= FLUSH_SIZE:
                self._flush_locked()
            elif was_empty:
                self._wake.notify()
        if self.safe_point is not None:
            self.safe_point()

    def send_output(
        self,
        msg_type: str,
        content: dict[str, Any],
        *,
        metadata: dict[str, Any] | None = None,
        buffers: Sequence[Buffer] = (),
    ) -> None:
        """Send one iopub message (dropped while muted). Buffers are sent from the
        caller's memory: they must not change until this returns.

        Raises:
            TypeError, ValueError: the content breaks the JSON policy (NaN, ...).
        """
        packed = _json.encode(content)  # before any I/O
        with self._lock:
            self._flush_locked()
            if not self._muted:
                self._emit(Emitted(self.request, msg_type, packed, dict(metadata or {}), buffers))
        if self.safe_point is not None:
            self.safe_point()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def run_in_order(self, action: Callable[[], None]) -> None:
        """Call ``action`` after every output made so far and before any later one
        (the subprocess evaluator writes a cell's reply frame this way)."""
        with self._lock:
            self._flush_locked()
            action()

    def set_muted(self, muted: bool) -> None:
        """While muted (silent cells), outputs and stream text are dropped."""
        with self._lock:
            self._flush_locked()
            self._muted = muted or self._closed

    def set_request(self, request: Any) -> None:
        """Outputs from now on belong to ``request`` (pending text to the previous one)."""
        with self._lock:
            self._flush_locked()
            self.request = request

    def close(self) -> None:
        """Flush, stop the flusher thread, and drop whatever comes later."""
        with self._lock:
            self._flush_locked()
            self._closed = self._muted = True
            self._wake.notify()

    # -- internals ---------------------------------------------------------------
    def _flush_locked(self) -> None:
        if not self._parts:
            return
        text = "".join(self._parts)
        self._parts.clear()
        self._size = 0
        if not self._muted:
            packed = _json.encode({"name": self._name, "text": text})
            self._emit(Emitted(self.request, "stream", packed, {}, ()))

    def _flusher(self) -> None:
        with self._lock:
            while not self._closed:
                while not self._parts and not self._closed:
                    self._wake.wait()
                deadline = time.monotonic() + self._flush_delay
                while self._parts and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                self._flush_locked()
