"""The iopub channel: topic, serialize, sign, publish; and the welcome.

``publish`` is synchronous: it serializes the message and hands it to every
subscribed peer's bounded queue (``PubSocket.publish_nowait``, which drops and
counts for a stalled subscriber), so when it returns the message is on its way
and anything published or replied after it cannot overtake it. That is all the
ordering the kernel needs: no channel, no writer task, no drain loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ._bytes import Buffer
from .evaluator_api import Output, Parent
from .messages import Message, Signer, new_header, serialize
from .zmtp.sockets import Peer, PubSocket

__all__ = ["IOPub", "topic"]

_DISPLAY = frozenset({"display_data", "update_display_data", "clear_output"})
# Packed stream content is written by cells.streams.Outbox, the name first.
_PACKED_STDERR = b'{"name":"stderr"'


def topic(msg_type: str, content: Mapping[str, Any] | Buffer, session: str) -> bytes:
    """The topic frame, as ipykernel names them."""
    if msg_type == "stream":
        if isinstance(content, Mapping):
            name = content.get("name", "stdout")
        else:
            name = "stderr" if bytes(content[: len(_PACKED_STDERR)]) == _PACKED_STDERR else "stdout"
        return f"stream.{name}".encode()
    if msg_type in _DISPLAY:
        return b"display_data"
    if msg_type.startswith("comm_"):
        return b"comm"
    return f"kernel.{session}.{msg_type}".encode()


class IOPub:
    """Publishes on one XPUB socket (``self.socket``, bound by the kernel)."""

    def __init__(self, session: str, signer: Signer, **socket_options: Any) -> None:
        self.session = session
        self.signer = signer
        self.socket = PubSocket(on_subscribe=self._welcome, **socket_options)

    def publish(
        self,
        msg_type: str,
        content: dict[str, Any] | Buffer,
        parent: Parent | Message | None,
        buffers: Sequence[Buffer] = (),
        metadata: Mapping[str, Any] | None = None,
    ) -> None:
        """Queue one message for every subscriber. bytes-like ``content`` is wire
        JSON (the evaluator encoded it) and is forwarded as it is. Big content and
        buffers are sent without a copy after this returns: they must not change.

        Raises:
            LocalProtocolError: ``content`` or ``metadata`` cannot be encoded.
        """
        msg = Message(
            header=new_header(msg_type, self.session),
            parent_header=dict(parent.header) if parent is not None else {},
            metadata=dict(metadata or {}),
            content=content if isinstance(content, dict) else {},
            buffers=list(buffers),
            identities=[topic(msg_type, content, self.session)],
        )
        packed = None if isinstance(content, dict) else content
        self.socket.publish_nowait(serialize(msg, self.signer, packed_content=packed))

    def publish_output(self, output: Output) -> None:
        """The evaluator's ``OutputSink``."""
        self.publish(
            output.msg_type, output.content, output.parent, output.buffers, output.metadata
        )

    def status(self, state: str, parent: Message | None) -> None:
        self.publish("status", {"execution_state": state}, parent)

    async def flush(self, timeout: float) -> bool:
        return await self.socket.flush(timeout)

    def _welcome(self, peer: Peer, subscription: bytes) -> None:
        # Protocol 5.5: every new subscriber gets an iopub_welcome (no parent), sent to
        # it alone, with the subscription as topic (no topic frame for "").
        msg = Message(
            header=new_header("iopub_welcome", self.session),
            parent_header={},
            metadata={},
            content={"subscription": subscription.decode("utf-8", "replace")},
            identities=[subscription] if subscription else [],
        )
        self.socket.publish_nowait(serialize(msg, self.signer), to=peer)
