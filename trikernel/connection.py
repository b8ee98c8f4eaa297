"""Connection files: the JSON a kernel manager writes to tell a kernel where to listen.

Example (as written by jupyter_client's KernelManager, mode 0600)::

    {"shell_port": 35181, "iopub_port": 44131, "stdin_port": 53171,
     "control_port": 48811, "hb_port": 55055, "ip": "127.0.0.1",
     "key": "628a600c-ce9ab15d57c6f584ed65aec4", "transport": "tcp",
     "signature_scheme": "hmac-sha256", "kernel_name": "python3"}

Unknown keys (``jupyter_session``, ``curve_*``) are ignored. A bad or missing field gives
a :class:`ConnectionFileError` that names it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
from dataclasses import dataclass
from typing import Any

from trikernel.errors import ConnectionFileError
from trikernel.messages import Signer, new_id

__all__ = [
    "CHANNELS",
    "ConnectionInfo",
    "read_connection_file",
    "write_connection_file",
    "new_connection_info",
    "default_runtime_dir",
]

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
_PORT_FIELDS = tuple(f"{channel}_port" for channel in CHANNELS)
_TRANSPORTS = ("tcp", "ipc")


def _check_port(name: str, value: object) -> None:
    # bool is an int subclass, but `"shell_port": true` is certainly a mistake.
    if type(value) is not int or not 0 <= value <= 65535:
        raise ValueError(f"{name} must be an integer in 0..65535, got {value!r}")


def _check_str(name: str, value: object) -> None:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")


@dataclass(frozen=True)
class ConnectionInfo:
    """Where a kernel listens and how its messages are signed. Port 0 means "any"."""

    transport: str
    ip: str
    shell_port: int
    iopub_port: int
    stdin_port: int
    control_port: int
    hb_port: int
    key: str
    signature_scheme: str = "hmac-sha256"
    kernel_name: str | None = None

    def __post_init__(self) -> None:
        if self.transport not in _TRANSPORTS:
            raise ValueError(f"transport must be 'tcp' or 'ipc', got {self.transport!r}")
        _check_str("ip", self.ip)
        for name in _PORT_FIELDS:
            _check_port(name, getattr(self, name))
        _check_str("key", self.key)
        _check_str("signature_scheme", self.signature_scheme)
        try:
            Signer(b"", self.signature_scheme)
        except ValueError as exc:
            raise ValueError(f"signature_scheme: {exc}") from None
        if self.kernel_name is not None:
            _check_str("kernel_name", self.kernel_name)

    def port(self, channel: str) -> int:
        if channel not in CHANNELS:
            raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
        return getattr(self, f"{channel}_port")  # type: ignore[no-any-return]

    def url(self, channel: str) -> str:
        """``tcp://ip:port``, or ``ipc://ip-port`` (jupyter's ipc path convention)."""
        port = self.port(channel)
        if self.transport == "ipc":
            return f"ipc://{self.ip}-{port}"
        return f"tcp://{self.ip}:{port}"

    def with_ports(self, **ports: int) -> ConnectionInfo:
        """A copy with some ports replaced, e.g. ``with_ports(shell_port=5555)``."""
        unknown = set(ports) - set(_PORT_FIELDS)
        if unknown:
            raise TypeError(f"not port fields: {sorted(unknown)}")
        changes: dict[str, Any] = ports
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The connection-file JSON object (``kernel_name`` only if set)."""
        d = dataclasses.asdict(self)
        if self.kernel_name is None:
            del d["kernel_name"]
        return d


def new_connection_info(
    ip: str = "127.0.0.1", transport: str = "tcp", key: str | None = None
) -> ConnectionInfo:
    """Info with every port 0 (bind, then fill in with ``with_ports``) and a fresh key."""
    ports: dict[str, Any] = dict.fromkeys(_PORT_FIELDS, 0)
    return ConnectionInfo(transport, ip, key=new_id() if key is None else key, **ports)


def _from_dict(data: object) -> ConnectionInfo:
    if not isinstance(data, dict):
        raise ValueError(f"top level must be a JSON object, got {type(data).__name__}")
    for name in ("ip", "key", *_PORT_FIELDS):
        if name not in data:
            raise ValueError(f"missing field {name!r}")
    kwargs = {name: data[name] for name in ("ip", "key", *_PORT_FIELDS)}
    kwargs["transport"] = data.get("transport", "tcp")
    kwargs["signature_scheme"] = data.get("signature_scheme", "hmac-sha256")
    kwargs["kernel_name"] = data.get("kernel_name")
    return ConnectionInfo(**kwargs)


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read and validate a connection file.

    ``transport`` defaults to "tcp" and ``signature_scheme`` to "hmac-sha256"; ``ip``,
    ``key`` and the five ports are required.

    Raises:
        ConnectionFileError: the file is missing, unreadable, not JSON, or has a bad
            or missing field (named in the message).
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConnectionFileError(f"cannot read connection file {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ConnectionFileError(f"connection file {path} is not valid JSON: {exc}") from exc
    try:
        return _from_dict(data)
    except ValueError as exc:
        raise ConnectionFileError(f"connection file {path}: {exc}") from exc


def write_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> None:
    """Write ``info`` to ``path`` atomically, readable only by the owner (0600).

    The file is created 0600 from the start (mkstemp) and renamed into place, so the
    key is never world-readable and readers never see a half-written file. Missing
    parent directories are created 0700.

    Raises:
        ConnectionFileError: the file could not be written.
    """
    path = os.fspath(path)
    try:
        _write_atomically(path, json.dumps(info.to_dict(), indent=1) + "\n")
    except OSError as exc:
        raise ConnectionFileError(f"cannot write connection file {path}: {exc}") from exc


def _write_atomically(path: str, text: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".connection-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_runtime_dir() -> str:
    """Jupyter's runtime directory, where connection files usually live."""
    from jupyter_core.paths import jupyter_runtime_dir  # lazy: only the CLI needs it

    return jupyter_runtime_dir()
