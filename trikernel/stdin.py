"""The stdin channel: one ``input()`` round trip to the client that ran the cell.

The stdin reader ``deliver``s every ``input_reply`` to a small channel; a cell
that asks (``input_callback(request)``) sends an ``input_request`` to the
requesting client's identity (never to another client) and waits for the reply
whose parent is that request. Replies left over from an interrupted ``input()``
are dropped before the next one is asked.
"""

from __future__ import annotations

import logging

import trio

from .evaluator_api import InputCallback
from .messages import Message, Signer, new_header, serialize
from .zmtp.sockets import RouterSocket

__all__ = ["Stdin"]

log = logging.getLogger("trikernel.stdin")


class Stdin:
    def __init__(self, socket: RouterSocket, session: str, signer: Signer) -> None:
        self.socket = socket
        self._session = session
        self._signer = signer
        self._send, self._receive = trio.open_memory_channel[Message](16)

    def deliver(self, msg: Message) -> None:
        """A message that arrived on the stdin socket (from its reader task)."""
        if msg.msg_type != "input_reply":
            log.warning("stdin: ignoring unexpected %r", msg.msg_type)
            return
        try:
            self._send.send_nowait(msg)
        except trio.WouldBlock:
            log.warning("stdin: dropped an input_reply nobody waits for")

    def input_callback(self, request: Message) -> InputCallback:
        """Ask the client that sent ``request``."""

        async def request_input(prompt: str, password: bool) -> str:
            return await self.request_input(request, prompt, password)

        return request_input

    async def request_input(self, request: Message, prompt: str, password: bool) -> str:
        """The client's answer. Raises EOFError when no stdin channel is connected."""
        while True:  # replies left over from an earlier, interrupted input()
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                break
        msg = Message(
            header=new_header("input_request", self._session),
            parent_header=request.header,
            metadata={},
            content={"prompt": prompt, "password": password},
            identities=request.identities,
        )
        if not self.socket.send_nowait(serialize(msg, self._signer)):
            raise EOFError("no stdin channel is connected for this client")
        while True:
            reply = await self._receive.receive()
            if reply.parent_header.get("msg_id") in (msg.msg_id, None):
                return str(reply.content.get("value", ""))
            log.warning("stdin: input_reply for another request ignored")
