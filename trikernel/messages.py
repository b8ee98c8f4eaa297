"""Jupyter wire messages: sign, serialize, parse (sans-IO).

A message on the wire is a list of frames::

    [ident_0 .. ident_k, DELIMITER, signature, header, parent_header, metadata, content,
     buffer_0 .. buffer_n]

``serialize`` builds that list from a :class:`Message`; ``parse`` turns a received list
back into one, checking the signature over the exact bytes received (never re-encoded).
Anything wrong with a received message raises :class:`RemoteProtocolError` and nothing
else: the kernel logs the reason once and drops the message, as ipykernel does.

This module is pure: no trio, no os, no clock except where a caller leaves ``date``
unset in :func:`new_header`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from trikernel import _json
from trikernel._bytes import Buffer
from trikernel.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "DELIMITER",
    "PROTOCOL_VERSION",
    "Message",
    "Signer",
    "ReplayGuard",
    "serialize",
    "parse",
    "new_header",
    "new_id",
    "utc_now_iso",
    "reply",
]

DELIMITER = b"<IDS|MSG>"
PROTOCOL_VERSION = "5.5"

_PARTS = ("header", "parent_header", "metadata", "content")


@dataclass(slots=True)
class Message:
    """One Jupyter message; ``identities`` is the routing prefix before the delimiter."""

    header: dict[str, Any]
    parent_header: dict[str, Any]
    metadata: dict[str, Any]
    content: dict[str, Any]
    buffers: Sequence[Buffer] = field(default_factory=list)
    identities: list[bytes] = field(default_factory=list)

    @property
    def msg_type(self) -> str:
        return self.header["msg_type"]  # type: ignore[no-any-return]

    @property
    def msg_id(self) -> str:
        return self.header["msg_id"]  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- signing


def _hash_name(scheme: str) -> str:
    """``"hmac-sha256"`` -> ``"sha256"``, or ValueError if hashlib cannot do it."""
    prefix, _, name = scheme.partition("-")
    if prefix != "hmac" or not name:
        raise ValueError(f"unsupported signature_scheme {scheme!r}: expected 'hmac-<hash>'")
    try:
        digest = hashlib.new(name)
    except (ValueError, TypeError):
        raise ValueError(
            f"unsupported signature_scheme {scheme!r}: hashlib has no {name!r}"
        ) from None
    # shake_* have no fixed-size hexdigest(), so HMAC cannot use them.
    if digest.digest_size == 0 or name.startswith("shake"):
        raise ValueError(f"unsupported signature_scheme {scheme!r}: variable-length digest")
    return name


class Signer:
    """HMAC signatures for one connection (key and scheme from the connection file).

    ``key`` is the connection file's key string as UTF-8 bytes, used as-is (not
    hex-decoded). An empty key disables authentication: signatures are ``b""`` and
    every message verifies.
    """

    def __init__(self, key: bytes | str, scheme: str = "hmac-sha256") -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        self.key = key
        self.scheme = scheme
        name = _hash_name(scheme)
        # Copying a keyed HMAC is cheaper than re-keying it for every message.
        self._hmac = hmac.new(key, digestmod=name) if key else None

    @property
    def enabled(self) -> bool:
        return self._hmac is not None

    def sign(self, frames: Sequence[Buffer]) -> bytes:
        """Lowercase hex digest over header, parent_header, metadata and content."""
        if self._hmac is None:
            return b""
        h = self._hmac.copy()
        for frame in frames:
            h.update(frame)
        return h.hexdigest().encode("ascii")

    def verify(self, signature: bytes, frames: list[bytes]) -> bool:
        """Constant-time check of ``signature`` against ``frames`` (always True if no key)."""
        if self._hmac is None:
            return True
        return hmac.compare_digest(signature, self.sign(frames))

    def __repr__(self) -> str:
        # Never show the key: reprs end up in logs.
        return f"Signer(scheme={self.scheme!r}, enabled={self.enabled})"


class ReplayGuard:
    """Remembers recent signatures so a captured message cannot be replayed.

    Memory is bounded: when ``max_size`` signatures are stored, the oldest 10% are
    forgotten (an insertion-ordered dict, so this is deterministic, unlike
    jupyter_client's random cull).
    """

    def __init__(self, max_size: int = 2**16) -> None:
        if max_size < 1:
            raise ValueError("max_size must be at least 1")
        self.max_size = max_size
        self._seen: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, signature: bytes) -> bool:
        return signature in self._seen

    def check_and_add(self, signature: bytes) -> None:
        """Record ``signature``; raise RemoteProtocolError if it was seen before."""
        if signature in self._seen:
            raise RemoteProtocolError("Duplicate Signature")
        if len(self._seen) >= self.max_size:
            self._cull()
        self._seen[signature] = None

    def _cull(self) -> None:
        n = max(1, self.max_size // 10)
        for old in list(self._seen)[:n]:
            del self._seen[old]


# --------------------------------------------------------------------------- serialize


def _pack(obj: dict[str, Any], part: str) -> bytes:
    if not isinstance(obj, dict):
        raise LocalProtocolError(f"message {part} must be a dict, not {type(obj).__name__}")
    if not obj:
        return b"{}"  # metadata and parent_header often are: skip the encoder
    try:
        return _json.encode(obj)
    except (TypeError, ValueError, RecursionError) as exc:
        raise LocalProtocolError(f"cannot encode message {part} as JSON: {exc}") from exc


def serialize(
    msg: Message, signer: Signer, *, packed_content: Buffer | None = None
) -> list[Buffer]:
    """Frames for ``msg``: identities, delimiter, signature, the four dicts, buffers.

    ``packed_content``, when given, is used as the content frame instead of
    encoding ``msg.content``: JSON object bytes the evaluator already encoded, so
    a large display payload is not decoded and encoded again in the kernel.

    Raises:
        LocalProtocolError: a dict holds something JSON cannot encode (NaN, a naive
            datetime, an arbitrary object).
    """
    parts = [
        _pack(msg.header, "header"),
        _pack(msg.parent_header, "parent_header"),
        _pack(msg.metadata, "metadata"),
        _pack(msg.content, "content") if packed_content is None else packed_content,
    ]
    return [*msg.identities, DELIMITER, signer.sign(parts), *parts, *msg.buffers]


# --------------------------------------------------------------------------- parse


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_INF = float("inf")


def _finite_float(text: str) -> float:
    # 1e999 parses as inf; we could not echo it back (parent_header) with allow_nan=False.
    value = float(text)
    if value in (_INF, -_INF):
        raise ValueError(f"number {text[:20]} is out of range")
    return value


def _unpack(frame: bytes, part: str) -> dict[str, Any]:
    try:
        # Decode explicitly: json.loads(bytes) would also accept UTF-16/32. str() also
        # takes a memoryview or bytearray frame.
        obj = json.loads(
            str(frame, "utf-8"), parse_constant=_reject_constant, parse_float=_finite_float
        )
    except (ValueError, RecursionError) as exc:
        raise RemoteProtocolError(f"Invalid Message: {part} is not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        raise RemoteProtocolError(f"Invalid Message: {part} is a JSON {kind}, not an object")
    return obj


def _check_header(header: dict[str, Any]) -> None:
    for key in ("msg_id", "msg_type"):
        if not isinstance(header.get(key), str):
            raise RemoteProtocolError(f"Invalid Message: header has no string {key!r}")


def _split(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Identities before the FIRST delimiter, message frames after it."""
    try:
        i = frames.index(DELIMITER)
    except ValueError:
        raise RemoteProtocolError("Invalid Message: no <IDS|MSG> delimiter") from None
    return frames[:i], frames[i + 1 :]


def _authenticate(
    signature: bytes, parts: list[bytes], signer: Signer, replay: ReplayGuard | None
) -> None:
    """The checks of spec section 3, in jupyter_client's order."""
    if not signature:
        raise RemoteProtocolError("Unsigned Message")
    if replay is not None and signature in replay:
        raise RemoteProtocolError("Duplicate Signature")
    if not signer.verify(signature, parts):
        raise RemoteProtocolError("Invalid Signature")
    # Only remember genuine signatures: forged ones must not be able to push real ones
    # out of the bounded history (jupyter_client records before verifying).
    if replay is not None:
        replay.check_and_add(signature)


def parse(frames: list[bytes], signer: Signer, replay: ReplayGuard | None = None) -> Message:
    """Verify and decode one received message.

    Raises:
        RemoteProtocolError: for every defect (no delimiter, fewer than 5 frames after
            it, unsigned, duplicate or invalid signature, bad JSON, missing header
            fields). Its message names the reason.
    """
    identities, rest = _split(frames)
    if len(rest) < 5:
        raise RemoteProtocolError(
            f"Invalid Message: {len(rest)} frames after the delimiter, need at least 5"
        )
    signature, parts = rest[0], rest[1:5]
    if signer.enabled:
        _authenticate(signature, parts, signer, replay)
    header, parent, metadata, content = (_unpack(f, p) for f, p in zip(parts, _PARTS, strict=True))
    _check_header(header)
    return Message(header, parent, metadata, content, rest[5:], identities)


# --------------------------------------------------------------------------- building


def new_id() -> str:
    """A fresh random id in jupyter_client's form: 8 hex, ``-``, 24 hex."""
    h = uuid.uuid4().hex
    return f"{h[:8]}-{h[8:]}"


def utc_now_iso() -> str:
    """Current time as ISO 8601 UTC with microseconds, e.g. ``2026-11-26T08:50:30.274499Z``."""
    now = _dt.datetime.now(_dt.UTC)
    return now.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def new_header(
    msg_type: str,
    session: str,
    *,
    msg_id: str | None = None,
    username: str = "trikernel",
    date: str | None = None,
) -> dict[str, Any]:
    """A message header; pass ``msg_id`` and ``date`` to make it deterministic."""
    return {
        "msg_id": new_id() if msg_id is None else msg_id,
        "msg_type": msg_type,
        "username": username,
        "session": session,
        "date": utc_now_iso() if date is None else date,
        "version": PROTOCOL_VERSION,
    }


def reply(
    parent: Message,
    msg_type: str,
    content: dict[str, Any],
    session: str,
    *,
    metadata: dict[str, Any] | None = None,
    buffers: list[bytes] | None = None,
    msg_id: str | None = None,
    username: str = "trikernel",
    date: str | None = None,
) -> Message:
    """A message answering ``parent``: same routing identities, parent_header = its header."""
    header = new_header(msg_type, session, msg_id=msg_id, username=username, date=date)
    return Message(
        header=header,
        parent_header=parent.header,
        metadata={} if metadata is None else metadata,
        content=content,
        buffers=[] if buffers is None else buffers,
        identities=list(parent.identities),
    )
