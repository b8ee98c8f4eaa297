"""The evaluator's one way out: the frame pipe to the bridge.

``Pipe.outbox`` (a ``cells.streams.Outbox``) takes every output and writes it as an
``Output`` frame tagged with the request it belongs to; ``Pipe.send`` writes any
other frame (ready, reply, response, input_request, interrupt_ack) in the same
order, after the outputs made before it. Frames are written with blocking
``os.write``: a slow bridge slows the writer, output is never dropped. If the
bridge is gone nobody can hear us, and the process exits.

``StreamWriter`` is what ``sys.stdout``/``sys.stderr`` become in this process.
"""

from __future__ import annotations

import codecs
import io
import os
from typing import Any

from .. import _json
from .._bytes import Buffer
from ..cells.streams import Emitted, Outbox
from . import frames
from .protocol import encode_frame

__all__ = ["Pipe", "StreamWriter", "write_all"]


def write_all(fd: int, pieces: list[Buffer]) -> None:
    """Blocking write of all ``pieces``; if the bridge is gone, exit."""
    try:
        for piece in pieces:
            view = memoryview(piece)
            while view:
                view = view[os.write(fd, view) :]
    except BrokenPipeError:
        os._exit(1)


class Pipe:
    """Frames to the bridge, outputs and the rest in one order (see the module doc)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.outbox = Outbox(self._emit_output)

    def send(self, frame: frames.TypedFrame) -> None:
        self.outbox.run_in_order(lambda: self._write(frame))

    def _emit_output(self, out: Emitted) -> None:
        request = int(out.request or 0)
        self._write(
            frames.Output(request, out.msg_type, out.content, out.metadata, tuple(out.buffers))
        )

    def _write(self, frame: frames.TypedFrame) -> None:
        # Buffers are written from the caller's memory, before this returns.
        write_all(self._fd, encode_frame(frame.to_frame(), default=_json.default))


class _BinaryWriter(io.RawIOBase):
    """``sys.stdout.buffer``: bytes decoded as UTF-8 into the text stream."""

    def __init__(self, text: StreamWriter) -> None:
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        raw = memoryview(data).tobytes()
        self._text.write(self._decoder.decode(raw))
        return len(raw)

    def flush(self) -> None:
        self._text.flush()


class StreamWriter(io.TextIOBase):
    """Replacement for ``sys.stdout``/``sys.stderr`` that feeds the Outbox."""

    def __init__(self, outbox: Outbox, name: str, fd: int) -> None:
        self._outbox = outbox
        self._stream_name = name
        self._fd = fd
        self.buffer = _BinaryWriter(self)

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"<{self._stream_name}>"

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return self._fd  # the real fd 1/2: also forwarded, by the bridge

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        self._outbox.write_stream(self._stream_name, text)
        return len(text)

    def flush(self) -> None:
        self._outbox.flush()
