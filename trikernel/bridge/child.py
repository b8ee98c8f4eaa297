"""One evaluator process: its pipes, its lifeline, its fd 1/2, its typed frames.

Theory of operation
-------------------
``Child`` adopts a process started by ``bridge.spawn`` (a ``subprocess.Popen``,
the first one even before trio was imported) and ``supervise`` runs, in the
bridge's nursery, everything that talks to it:

* one writer task, the only one writing the frame pipe, fed by a bounded memory
  channel (a caller never blocks on a child that does not read, and a cancelled
  caller never leaves half a frame on the pipe);
* the frame reader: bytes -> ``FrameDecoder`` -> ``frames.decode`` -> the
  handler's ``on_frame``, in pipe order (a malformed frame ends the child as if it
  died: ``RemoteProtocolError`` names the frame and the field);
* two fd readers: what C code, ``os.system`` or subprocesses write to fd 1 and 2
  goes to the handler's ``on_text``, decoded as UTF-8.

fd output is another pipe, so it is not ordered with frames, except at the end
of a cell: the evaluator writes a marker to fd 1 and 2 before its reply, and the
frame reader holds the ``Reply`` until both markers were read (at most
``FD_SYNC_TIMEOUT``), so ``os.system("echo hi")`` arrives before the reply.

When the frame pipe closes the child has exited (or is killed after
``EXIT_TIMEOUT``); the handler's ``on_exit`` runs once, shielded, after every
stream is closed. The process runs in its own session and process group; its
lifeline is a pipe whose EOF ends the group, so it never outlives the kernel.
"""

from __future__ import annotations

import codecs
import os
import signal
import subprocess
from typing import Protocol

import trio

from .._bytes import Buffer
from ..errors import EvaluatorDied, RemoteProtocolError
from ..evaluator import frames
from ..evaluator.protocol import NEED_DATA, Frame, FrameDecoder, encode_frame, sync_marker
from .spawn import Spawned

__all__ = ["Child", "ChildHandler", "describe_exit"]

# Small frames are read 64 KiB at a time (os.read allocates the size asked for; big
# frames are read into their own buffer instead, see FrameDecoder.read_target).
READ_SIZE = 1 << 16
FD_SYNC_TIMEOUT = 2.0  # how long a reply waits for the fd 1/2 markers
EXIT_TIMEOUT = 1.0  # after the frame pipe closes, how long the process may take to exit
STREAM_NAMES = ("stdout", "stderr")


class ChildHandler(Protocol):
    """What a ``Child`` reports to (the ``SubprocessEvaluator``)."""

    def on_frame(self, child: Child, frame: frames.TypedFrame) -> None: ...

    def on_text(self, child: Child, name: str, text: str) -> None: ...

    async def on_exit(self, child: Child) -> None: ...


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "stopped answering"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by signal {-returncode} ({name})"
    return f"exited with code {returncode}"


class _AdoptedProcess:
    """A ``subprocess.Popen`` seen as the parts of ``trio.Process`` a child uses."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        assert popen.stdout is not None and popen.stderr is not None
        self._popen = popen
        self.pid = popen.pid
        # FdStreams of our own copies of the descriptors; the file objects are closed.
        self.stdout = trio.lowlevel.FdStream(os.dup(popen.stdout.fileno()))
        self.stderr = trio.lowlevel.FdStream(os.dup(popen.stderr.fileno()))
        popen.stdout.close()
        popen.stderr.close()

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        if self._popen.poll() is None:
            # A pidfd becomes readable when the process exits (Linux >= 5.3).
            pidfd = os.pidfd_open(self.pid)
            try:
                await trio.lowlevel.wait_readable(pidfd)
            finally:
                os.close(pidfd)
        return self._popen.wait()


class Child:
    """One evaluator process. ``await nursery.start(child.supervise, handler)``."""

    def __init__(self, spawned: Spawned) -> None:
        self.process = _AdoptedProcess(spawned.popen)
        self.pid = self.process.pid
        self._to_child = trio.lowlevel.FdStream(spawned.to_child)
        self._from_child = trio.lowlevel.FdStream(spawned.from_child)
        self._lifeline: int | None = spawned.lifeline
        self._marker = sync_marker(spawned.token)
        self._outgoing, self._outgoing_receive = trio.open_memory_channel[list[Buffer]](64)
        self.ready = trio.Event()
        self.settled = trio.Event()  # ready or exited
        self.exited = trio.Event()
        self.death = ""  # "exited with code 3" once it is gone
        self.expected_exit = False  # we stopped or killed it
        self._fd_seen = [0, 0]
        self._fd_progress = trio.Event()
        self._fd_closed = [trio.Event(), trio.Event()]

    def __repr__(self) -> str:
        return f"<evaluator pid {self.pid}{' ' + self.death if self.death else ''}>"

    # -- talking to it ---------------------------------------------------------------
    def died(self, what: str = "") -> EvaluatorDied:
        """The error for a request this child can no longer answer."""
        death = self.death or "is gone"
        return EvaluatorDied(f"the evaluator {death}{what}", returncode=self.process.returncode)

    async def send(self, frame: frames.TypedFrame) -> None:
        """Queue ``frame`` for the writer. Raises EvaluatorDied when the child is gone."""
        try:
            await self._outgoing.send(encode_frame(frame.to_frame()))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise self.died() from None

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def close_lifeline(self) -> None:
        if self._lifeline is not None:
            os.close(self._lifeline)
            self._lifeline = None

    async def stop(self, *, polite: bool, grace_period: float) -> None:
        """Make it exit (politely: shutdown frame, ``grace_period``) and wait for it.

        Waits on the process itself, not on ``exited``: when the kernel is
        cancelled, the supervising task that sets ``exited`` is gone already."""
        self.expected_exit = True
        if polite and not self.exited.is_set():
            try:
                self._outgoing.send_nowait(encode_frame(frames.Shutdown().to_frame()))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            self._outgoing.close()
            with trio.move_on_after(grace_period):
                await self.process.wait()
        self.close_lifeline()
        if self.process.returncode is None:
            with trio.move_on_after(0.5 if polite else 0):
                await self.process.wait()
        self.signal_group(signal.SIGKILL)  # the leader and whatever it left behind
        await self.process.wait()

    # -- its tasks ---------------------------------------------------------------------
    async def supervise(self, handler: ChildHandler, task_status: trio.TaskStatus[None]) -> None:
        broken = None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_frames)
            nursery.start_soon(self._read_fd, handler, self.process.stdout, 0)
            nursery.start_soon(self._read_fd, handler, self.process.stderr, 1)
            task_status.started()
            try:
                await self._read_frames(handler)
            except RemoteProtocolError as exc:
                broken = f"sent a malformed frame ({exc})"
            # The frame pipe closed: the evaluator exited (or is about to).
            with trio.move_on_after(0 if broken else EXIT_TIMEOUT):
                await self.process.wait()
            if self.process.returncode is None:
                self.signal_group(signal.SIGKILL)
                await self.process.wait()
            with trio.move_on_after(0.2):  # what it wrote to fd 1/2 while dying
                for closed in self._fd_closed:
                    await closed.wait()
            nursery.cancel_scope.cancel()
        self.close_lifeline()
        with trio.CancelScope(shield=True):
            for stream in (self._to_child, self._from_child):
                await stream.aclose()
            await self.process.stdout.aclose()
            await self.process.stderr.aclose()
            self.death = broken or describe_exit(self.process.returncode)
            self.exited.set()
            self.settled.set()
            await handler.on_exit(self)

    async def _write_frames(self) -> None:
        async with self._outgoing_receive:
            async for pieces in self._outgoing_receive:
                try:
                    for piece in pieces:
                        await self._to_child.send_all(piece)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
        await self._to_child.aclose()  # EOF: the evaluator shuts down

    async def _read_frames(self, handler: ChildHandler) -> None:
        decoder = FrameDecoder()
        while True:
            frame = decoder.next_frame()
            if frame is NEED_DATA:
                decoder_target = decoder.read_target()
                if decoder_target is not None:  # a big output: read it where it will stay
                    count = await _read_into(self._from_child, decoder_target)
                    if count:
                        decoder.target_filled(count)
                        continue
                    data = b""
                else:
                    try:
                        data = await self._from_child.receive_some(READ_SIZE)
                    except trio.BrokenResourceError:
                        data = b""
                decoder.receive_data(data)
                continue
            if not isinstance(frame, Frame):
                return  # CLOSED
            typed = frames.decode(frame)
            if isinstance(typed, frames.Reply):
                await self._wait_fd_sync(typed.fd_sync)
            handler.on_frame(self, typed)
            if isinstance(typed, frames.Ready):
                self.ready.set()
                self.settled.set()

    async def _read_fd(
        self, handler: ChildHandler, stream: trio.abc.ReceiveStream, index: int
    ) -> None:
        name = STREAM_NAMES[index]
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pending = bytearray()
        marker = self._marker

        def emit(data: bytes | bytearray, final: bool = False) -> None:
            text = decoder.decode(bytes(data), final=final)
            if text:
                handler.on_text(self, name, text)

        while True:
            try:
                chunk = await stream.receive_some(1 << 16)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                chunk = b""
            if not chunk:
                break
            pending += chunk
            while (at := pending.find(marker)) >= 0:
                emit(pending[:at])
                del pending[: at + len(marker)]
                self._fd_seen[index] += 1
                progress, self._fd_progress = self._fd_progress, trio.Event()
                progress.set()
            keep = _partial_marker_len(pending, marker)
            emit(pending[: len(pending) - keep])
            del pending[: len(pending) - keep]
        emit(pending, final=True)
        self._fd_closed[index].set()

    async def _wait_fd_sync(self, targets: tuple[int, int]) -> None:
        with trio.move_on_after(FD_SYNC_TIMEOUT):
            while self._fd_seen[0] < targets[0] or self._fd_seen[1] < targets[1]:
                await self._fd_progress.wait()


def _partial_marker_len(data: bytes | bytearray, marker: bytes) -> int:
    """Length of the longest tail of ``data`` that could start a marker."""
    for n in range(min(len(marker) - 1, len(data)), 0, -1):
        if data.endswith(marker[:n]):
            return n
    return 0


async def _read_into(stream: trio.lowlevel.FdStream, target: memoryview) -> int:
    """``receive_some`` into ``target`` (FdStream has no receive_into); 0 at EOF."""
    fd = stream.fileno()
    await trio.lowlevel.checkpoint()
    while True:
        try:
            return os.readv(fd, [target])
        except BlockingIOError:
            await trio.lowlevel.wait_readable(fd)
        except OSError:  # EBADF/EIO: the pipe is gone, as receive_some's BrokenResourceError
            return 0
