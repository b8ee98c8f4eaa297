"""Reserved ports: parked in TIME_WAIT, so only a SO_REUSEADDR bind (a kernel's) gets them."""

import json
import socket
from pathlib import Path

from trikernel.client import _ports


def test_reserved_ports_bind_with_reuseaddr_only() -> None:
    ports = _ports.reserve_ports("127.0.0.1")
    try:
        assert len(set(ports)) == 5
        for port in ports:
            with socket.socket() as plain:
                try:
                    plain.bind(("127.0.0.1", port))
                except OSError:
                    pass
                else:
                    raise AssertionError(f"port {port} was free for a plain bind")
            with socket.socket() as kernel:
                kernel.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                kernel.bind(("127.0.0.1", port))
    finally:
        _ports.release_ports(ports)


def test_written_ports_tolerates_missing_and_partial_files(tmp_path: Path) -> None:
    path = tmp_path / "kernel.json"
    assert _ports.written_ports(str(path)) is None
    path.write_text('{"shell_port": 1')
    assert _ports.written_ports(str(path)) is None
    ports = {name: 1000 + i for i, name in enumerate(_ports.PORT_FIELDS)}
    path.write_text(json.dumps({**ports, "hb_port": 0}))
    assert _ports.written_ports(str(path)) is None
    path.write_text(json.dumps(ports))
    assert _ports.written_ports(str(path)) == ports
