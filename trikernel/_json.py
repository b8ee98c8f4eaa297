"""The one JSON policy of every message trikernel writes (kernel and evaluators).

Strict where Jupyter clients are: no NaN or infinity (they reject it), no naive
datetime (a client would read it as *its* local time: we refuse to guess). Lone
surrogates, which UTF-8 cannot encode, are written as ``\\udXXX`` escapes, valid
JSON that decodes back to the same string. What JSON has no type for but
messages legitimately hold: bytes as base64 (image/png in a mimebundle, as
jupyter_client does), dates and aware datetimes in ISO 8601, numpy scalars as
their Python value.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
from typing import Any

__all__ = ["default", "encode"]


def default(obj: Any) -> Any:
    """``json``'s ``default`` hook for the types above; TypeError for the rest."""
    if isinstance(obj, _dt.datetime):
        if obj.tzinfo is None or obj.utcoffset() is None:
            raise TypeError(f"naive datetime {obj!r} has no timezone")
        return obj.isoformat().replace("+00:00", "Z")
    if isinstance(obj, _dt.date | _dt.time):
        return obj.isoformat()
    if isinstance(obj, bytes | bytearray | memoryview):
        return base64.b64encode(obj).decode("ascii")
    if type(obj).__module__ == "numpy" and getattr(obj, "ndim", None) == 0:  # numpy scalars
        return obj.item()
    raise TypeError(f"{type(obj).__name__} object is not JSON serializable")


_UTF8 = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":"), default=default
)
_ASCII = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=default
)


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON of ``obj``.

    Raises:
        TypeError, ValueError, RecursionError: ``obj`` breaks the policy above.
    """
    text = _UTF8.encode(obj)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return _ASCII.encode(obj).encode("ascii")
