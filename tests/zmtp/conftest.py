"""Fixtures for the ZMTP network tests: real pyzmq peers that never block trio.

pyzmq calls block, so ``PyzmqPeers`` only ever calls them with ``NOBLOCK`` and
polls with a short ``trio.sleep``: every wait is a trio checkpoint, so the
test's ``trio.fail_after`` can always cancel it. Every socket is created with
linger 0 and closed, and the context terminated, when the test ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import trio
import zmq

POLL = 0.001  # seconds between polls of a pyzmq socket


class PyzmqPeers:
    """A zmq.Context and the sockets a test made from it."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self.sockets: list[zmq.Socket[bytes]] = []

    def socket(self, kind: int, **options: Any) -> zmq.Socket[bytes]:
        """A pyzmq socket with linger 0 and the given options (``identity=b"x"``,
        ``rcvhwm=10``, ... as pyzmq attribute names), closed at teardown."""
        sock: zmq.Socket[bytes] = self.context.socket(kind)
        sock.linger = 0
        for name, value in options.items():
            setattr(sock, name, value)
        self.sockets.append(sock)
        return sock

    async def send(self, sock: zmq.Socket[bytes], frames: list[bytes]) -> None:
        """send_multipart, waiting (as a trio checkpoint) while the socket would block."""
        while True:
            try:
                sock.send_multipart(frames, zmq.NOBLOCK, copy=len(frames[-1]) < 1 << 16)
            except zmq.Again:
                await trio.sleep(POLL)
            else:
                await trio.lowlevel.checkpoint()
                return

    async def receive(self, sock: zmq.Socket[bytes]) -> list[bytes]:
        """recv_multipart, waiting (as a trio checkpoint) until a message is there."""
        while True:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await trio.sleep(POLL)
            else:
                await trio.lowlevel.checkpoint()
                return frames

    def receive_nowait(self, sock: zmq.Socket[bytes]) -> list[bytes] | None:
        try:
            return sock.recv_multipart(zmq.NOBLOCK)
        except zmq.Again:
            return None

    async def assert_nothing(self, sock: zmq.Socket[bytes], seconds: float = 0.1) -> None:
        """Nothing arrives on ``sock`` within ``seconds``."""
        with trio.move_on_after(seconds):
            frames = await self.receive(sock)
            raise AssertionError(f"unexpected message {frames!r}")

    def close(self) -> None:
        for sock in self.sockets:
            sock.close(linger=0)
        self.context.term()


@pytest.fixture
def pyzmq() -> Iterator[PyzmqPeers]:
    peers = PyzmqPeers()
    try:
        yield peers
    finally:
        peers.close()
