"""Connection files: the JSON a kernel manager writes to tell a kernel where to listen.

Example (as written by jupyter_client's KernelManager, mode 0600)::

    {"shell_port": 35181, "iopub_port": 44131, "stdin_port": 53171,
     "control_port": 48811, "hb_port": 55055, "ip": "127.0.0.1",
     "key": "628a600c-ce9ab15d57c6f584ed65aec4", "transport": "tcp",
     "signature_scheme": "hmac-sha256", "kernel_name": "python3"}

Two APIs share this module:

- the typed one: :class:`ConnectionInfo`, :func:`read_connection_file` (strict: a bad or
  missing field gives a :class:`ConnectionFileError` naming it) and
  :func:`save_connection_file` (atomic, 0600). Unknown keys (jupyter_server's
  ``jupyter_session``, ...) are kept in ``ConnectionInfo.extra`` and written back. CURVE
  keys are refused: trikernel's ZMTP has the NULL mechanism only.
- jupyter_client's, same names, signatures and answers: :func:`write_connection_file`
  (picks ports), :func:`find_connection_file` and :class:`LocalPortCache`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import glob
import json
import os
import socket
import stat
import tempfile
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from trikernel.errors import ConnectionFileError
from trikernel.messages import Signer, new_id

__all__ = [
    "CHANNELS",
    "ConnectionInfo",
    "read_connection_file",
    "save_connection_file",
    "new_connection_info",
    "default_runtime_dir",
    "write_connection_file",
    "find_connection_file",
    "LocalPortCache",
]

CHANNELS = ("shell", "iopub", "stdin", "control", "hb")
_PORT_FIELDS = tuple(f"{channel}_port" for channel in CHANNELS)
_TRANSPORTS = ("tcp", "ipc")
_TYPED_FIELDS = ("transport", "ip", *_PORT_FIELDS, "key", "signature_scheme", "kernel_name")
# jupyter_client 8.9+ writes these when it provisions CurveZMQ; a kernel started with them
# only accepts CURVE handshakes, which trikernel's ZMTP (NULL mechanism) cannot do.
_CURVE_FIELDS = ("curve_publickey", "curve_secretkey", "curve_serverkey")


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
    # Keys this class does not model (e.g. jupyter_server's "jupyter_session"), kept so
    # that a file read and saved again loses nothing.
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

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
        clashing = sorted(set(self.extra) & set(_TYPED_FIELDS))
        if clashing:
            raise ValueError(f"extra must not hold typed fields, got {clashing}")
        curve = [name for name in _CURVE_FIELDS if name in self.extra]
        if curve:
            raise ValueError(
                f"{curve[0]}: CURVE encryption is not supported (trikernel's ZMTP has the"
                " NULL mechanism only); start the kernel without transport encryption"
            )

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
        """The connection-file JSON object: the fields (``kernel_name`` only if set), then
        ``extra``'s keys."""
        d = {name: getattr(self, name) for name in _TYPED_FIELDS}
        if self.kernel_name is None:
            del d["kernel_name"]
        d.update(self.extra)
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
    # A null CURVE key is "not provisioned"; dropped rather than refused.
    kwargs["extra"] = {
        k: v
        for k, v in data.items()
        if k not in _TYPED_FIELDS and not (k in _CURVE_FIELDS and v is None)
    }
    return ConnectionInfo(**kwargs)


def read_connection_file(path: str | os.PathLike[str]) -> ConnectionInfo:
    """Read and validate a connection file.

    ``transport`` defaults to "tcp" and ``signature_scheme`` to "hmac-sha256"; ``ip``,
    ``key`` and the five ports are required; other keys go to ``extra``.

    Raises:
        ConnectionFileError: the file is missing, unreadable, not JSON, has a bad or
            missing field (named in the message), or asks for CURVE encryption.
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


def save_connection_file(path: str | os.PathLike[str], info: ConnectionInfo) -> None:
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


# ---------------------------------------------------------------------------------------------
# jupyter_client's API (jupyter_client/connect.py, 8.10), same semantics.


def _pick_tcp_ports(ip: str, count: int) -> list[int]:
    # All binds first, then all closes, so the `count` ports are distinct. SO_LINGER 0
    # (struct linger {0, 0}) so a close leaves no TIME_WAIT behind.
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\0" * 8)
            sock.bind((ip, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _pick_ipc_ports(ip: str, count: int) -> list[int]:
    ports: list[int] = []
    n = 1
    for _ in range(count):
        while os.path.exists(f"{ip}-{n}"):
            n += 1
        ports.append(n)
        n += 1
    return ports


def _set_sticky_bit(directory: str) -> None:
    # Only the owner may then remove the file from a shared directory (as jupyter_client).
    if not directory or not hasattr(stat, "S_ISVTX"):
        return
    permissions = os.stat(directory).st_mode
    if permissions | stat.S_ISVTX != permissions:
        try:
            os.chmod(directory, permissions | stat.S_ISVTX)
        except OSError as exc:
            if exc.errno != errno.EPERM:  # a directory we do not own: leave it
                raise


def write_connection_file(
    fname: str | None = None,
    shell_port: int = 0,
    iopub_port: int = 0,
    stdin_port: int = 0,
    hb_port: int = 0,
    control_port: int = 0,
    ip: str = "",
    key: bytes | str = b"",
    transport: str = "tcp",
    signature_scheme: str = "hmac-sha256",
    kernel_name: str = "",
    **kwargs: Any,
) -> tuple[str, dict[str, Any]]:
    """jupyter_client's ``write_connection_file``: pick ports, write the file, return both.

    ``ip=""`` means 127.0.0.1; ``fname=None`` a new ``mkstemp(".json")`` file in the temp
    dir. Every port ``<= 0`` is chosen, in the order shell, iopub, stdin, control, hb:
    for tcp by binding ``(ip, 0)`` (all sockets bound before any is closed), for ipc
    the smallest free ``N`` with no file ``{ip}-{N}``. ``kwargs`` are added as extra
    keys. The file is written with jupyter_core's ``secure_write`` (0600, verified) and
    the sticky bit set on its directory. The returned dict has ``key`` as a str.

    Picked ports are free only until someone else binds them: prefer letting the kernel
    bind port 0 and reading back what it wrote.

    Raises:
        OSError: a port could not be bound or the file could not be written.
        RuntimeError: the file did not get mode 0600 (jupyter_core's check).
    """
    from jupyter_core.paths import secure_write  # lazy: the kernel side never needs it

    if not ip:
        ip = "127.0.0.1"
    if not fname:
        fd, fname = tempfile.mkstemp(".json")
        os.close(fd)
    given = {
        "shell_port": shell_port,
        "iopub_port": iopub_port,
        "stdin_port": stdin_port,
        "control_port": control_port,
        "hb_port": hb_port,
    }
    needed = sum(port <= 0 for port in given.values())
    pick = _pick_tcp_ports if transport == "tcp" else _pick_ipc_ports
    picked = iter(pick(ip, needed))
    cfg: dict[str, Any] = {
        name: next(picked) if port <= 0 else port for name, port in given.items()
    }
    cfg.update(
        ip=ip,
        key=key.decode() if isinstance(key, bytes) else key,
        transport=transport,
        signature_scheme=signature_scheme,
        kernel_name=kernel_name,
    )
    cfg.update(kwargs)
    with secure_write(fname) as f:
        f.write(json.dumps(cfg, indent=2))
    _set_sticky_bit(os.path.dirname(fname))
    return fname, cfg


def _expand(path: str) -> str:
    return os.path.expandvars(os.path.expanduser(path))


def _find_exact(filename: str, dirs: Sequence[str]) -> str | None:
    filename = filename.strip('"').strip("'")
    if os.path.isabs(filename) and os.path.isfile(filename):
        return filename
    for directory in dirs:
        if directory == ".":
            directory = os.getcwd()
        candidate = _expand(os.path.join(directory, filename))
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def find_connection_file(
    filename: str = "kernel-*.json",
    path: str | Sequence[str] | None = None,
    profile: str | None = None,
) -> str:
    """jupyter_client's ``find_connection_file``: the absolute path of a connection file.

    ``path`` defaults to ``[".", runtime dir]``. First the exact name (quotes stripped,
    ``~`` and ``$VAR`` expanded; an existing absolute path is returned as given), then the
    glob ``filename`` if it contains ``*``, else ``*filename*``, in every directory; of
    several matches, the one accessed last (``st_atime``). ``profile`` is ignored with a
    warning (Jupyter has no profiles).

    Raises:
        OSError: nothing matches.
    """
    if profile is not None:
        warnings.warn(f"Jupyter has no profiles. profile={profile} has been ignored.", stacklevel=2)
    if path is None:
        path = [".", default_runtime_dir()]
    dirs = [path] if isinstance(path, str) else list(path)
    exact = _find_exact(filename, dirs)
    if exact is not None:
        return exact
    pattern = filename if "*" in filename else f"*{filename}*"
    matches = [os.path.abspath(m) for d in dirs for m in glob.glob(os.path.join(d, pattern))]
    if not matches:
        raise OSError(f"Could not find {filename!r} in {dirs!r}")
    return max(matches, key=lambda m: os.stat(m).st_atime)


class LocalPortCache:
    """jupyter_client's ``LocalPortCache``: one process never hands a port out twice.

    It cannot stop another process from taking a picked port before the kernel binds it
    (jupyter_client#487); it only stops two kernels of this process sharing one.
    """

    _instance: ClassVar[LocalPortCache | None] = None
    _instance_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self) -> None:
        self.currently_used_ports: set[int] = set()
        self._lock = threading.Lock()

    @classmethod
    def instance(cls) -> LocalPortCache:
        """The process-wide cache (created on first use)."""
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def find_available_port(self, ip: str) -> int:
        """A port that binds on ``ip`` now and that this cache has not handed out."""
        while True:
            (port,) = _pick_tcp_ports(ip, 1)
            with self._lock:
                if port not in self.currently_used_ports:
                    self.currently_used_ports.add(port)
                    return port

    def return_port(self, port: int) -> None:
        """Give ``port`` back; a port the cache never handed out is ignored."""
        with self._lock:
            self.currently_used_ports.discard(port)
