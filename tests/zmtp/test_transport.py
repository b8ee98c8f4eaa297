"""trikernel.zmtp.transport: endpoint URLs, listeners, connects (tcp and ipc).

Rules for this file:

* Only loopback (127.0.0.1, ::1) and port 0, except where a test rebinds the
  port it was just given; ipc sockets live in pytest's ``tmp_path``.
* Every test that does I/O runs under ``trio.fail_after(TIMEOUT)``; pyzmq is only
  called with NOBLOCK and polled (``pyzmq`` fixture, conftest.py).
* Who closes first is stated in each test where it matters (the side that closes
  first keeps the TIME_WAIT); otherwise our side closes first and the fixture
  closes the pyzmq sockets afterwards.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import pytest
import trio
import zmq

from trikernel.zmtp.sockets import DealerSocket, RouterSocket
from trikernel.zmtp.transport import Endpoint, connect, open_listener, parse_url

from .conftest import PyzmqPeers

LOCALHOST = "tcp://127.0.0.1:0"
TIMEOUT = 10


# ---- parse_url --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("tcp://127.0.0.1:5555", Endpoint("tcp", "127.0.0.1", 5555)),
        ("tcp://127.0.0.1:0", Endpoint("tcp", "127.0.0.1", 0)),
        ("tcp://*:65535", Endpoint("tcp", "0.0.0.0", 65535)),
        ("tcp://:80", Endpoint("tcp", "0.0.0.0", 80)),
        ("tcp://[::1]:9", Endpoint("tcp", "::1", 9)),
        ("tcp://localhost:1", Endpoint("tcp", "localhost", 1)),
        ("ipc:///tmp/kernel-1.sock", Endpoint("ipc", "/tmp/kernel-1.sock")),
        ("ipc://relative/k.sock", Endpoint("ipc", "relative/k.sock")),
    ],
)
def test_parse_url(url: str, expected: Endpoint) -> None:
    assert parse_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "127.0.0.1:5555",
        "udp://127.0.0.1:5555",
        "inproc://name",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:",
        "tcp://127.0.0.1:65536",
        "tcp://127.0.0.1:-1",
        "tcp://127.0.0.1:port",
        "tcp://127.0.0.1:5555/path",
        "ipc://",
    ],
)
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


@pytest.mark.parametrize(
    "endpoint",
    [Endpoint("tcp", "127.0.0.1", 5), Endpoint("tcp", "::1", 5), Endpoint("ipc", "/tmp/k")],
)
def test_url_round_trips(endpoint: Endpoint) -> None:
    assert parse_url(endpoint.url) == endpoint


def test_ipv6_url_has_brackets() -> None:
    assert Endpoint("tcp", "::1", 5).url == "tcp://[::1]:5"


# ---- tcp listeners ----------------------------------------------------------------


async def test_port_0_becomes_the_real_port() -> None:
    with trio.fail_after(TIMEOUT):
        listener, endpoint = await open_listener(parse_url(LOCALHOST))
        async with listener:
            assert endpoint.port != 0
            assert listener.socket.getsockname() == ("127.0.0.1", endpoint.port)
            async with await connect(endpoint) as client, await listener.accept() as server:
                await client.send_all(b"hi")
                assert await server.receive_some() == b"hi"


async def test_connect_to_wildcard_goes_to_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    # A kernel bound to * (0.0.0.0) is reached on 127.0.0.1 (we only listen on loopback).
    hosts = []
    open_tcp_stream = trio.open_tcp_stream

    async def recording(host: str, port: int) -> trio.SocketStream:
        hosts.append(host)
        return await open_tcp_stream(host, port)

    monkeypatch.setattr(trio, "open_tcp_stream", recording)
    with trio.fail_after(TIMEOUT):
        listener, endpoint = await open_listener(parse_url(LOCALHOST))
        async with listener:
            async with await connect(Endpoint("tcp", "0.0.0.0", endpoint.port)) as client:
                assert client.socket.getpeername() == ("127.0.0.1", endpoint.port)
    assert hosts == ["127.0.0.1"]


async def test_connect_to_nothing_raises_oserror(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        listener, endpoint = await open_listener(parse_url(LOCALHOST))
        await listener.aclose()
        with pytest.raises(OSError):
            await connect(endpoint)
        with pytest.raises(OSError):
            await connect(Endpoint("ipc", str(tmp_path / "missing.sock")))


async def test_reuseaddr_rebinds_while_an_old_connection_is_in_time_wait() -> None:
    with trio.fail_after(TIMEOUT):
        listener, endpoint = await open_listener(parse_url(LOCALHOST))
        client = await connect(endpoint)
        server = await listener.accept()
        await server.aclose()  # the listening side closes first: its end goes to TIME_WAIT
        assert await client.receive_some() == b""
        await client.aclose()
        await listener.aclose()
        with socket.socket() as plain, pytest.raises(OSError) as exc:
            plain.bind(("127.0.0.1", endpoint.port))  # without SO_REUSEADDR: refused
        assert exc.value.errno == errno.EADDRINUSE
        again, same = await open_listener(endpoint)
        async with again:
            assert same == endpoint


async def test_restarted_router_on_the_same_port_gets_the_dealer_back(pyzmq: PyzmqPeers) -> None:
    # A restarted kernel rebinds its ports; libzmq reconnects by itself (spec §8.12).
    dealer = pyzmq.socket(zmq.DEALER, identity=b"client")
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            endpoint = await router.bind(LOCALHOST)
            dealer.connect(endpoint.url)
            await pyzmq.send(dealer, [b"before"])
            assert await router.receive() == [b"client", b"before"]
        # Our side closed first, so the old connection is in TIME_WAIT on our port.
        async with RouterSocket() as router:
            assert await router.bind(endpoint.url) == endpoint
            await pyzmq.send(dealer, [b"after"])
            assert await router.receive() == [b"client", b"after"]
            router.send_nowait([b"client", b"welcome back"])
            assert await pyzmq.receive(dealer) == [b"welcome back"]


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback")
async def test_ipv6_loopback_with_pyzmq(pyzmq: PyzmqPeers) -> None:
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            endpoint = await router.bind("tcp://[::1]:0")
            assert endpoint.url == f"tcp://[::1]:{endpoint.port}"
            dealer = pyzmq.socket(zmq.DEALER, ipv6=True, identity=b"v6")
            dealer.connect(endpoint.url)
            await pyzmq.send(dealer, [b"hello"])
            assert await router.receive() == [b"v6", b"hello"]


# ---- ipc --------------------------------------------------------------------------


async def test_ipc_our_router_with_pyzmq_dealer(pyzmq: PyzmqPeers, tmp_path: Path) -> None:
    url = f"ipc://{tmp_path}/shell.sock"
    with trio.fail_after(TIMEOUT):
        async with RouterSocket() as router:
            assert (await router.bind(url)).url == url
            dealer = pyzmq.socket(zmq.DEALER, identity=b"ipc-client")
            dealer.connect(url)
            await pyzmq.send(dealer, [b"over ipc", b""])
            assert await router.receive() == [b"ipc-client", b"over ipc", b""]
            router.send_nowait([b"ipc-client", b"reply"])
            assert await pyzmq.receive(dealer) == [b"reply"]


async def test_ipc_our_dealer_with_pyzmq_router(pyzmq: PyzmqPeers, tmp_path: Path) -> None:
    url = f"ipc://{tmp_path}/router.sock"
    router = pyzmq.socket(zmq.ROUTER)
    router.bind(url)
    with trio.fail_after(TIMEOUT):
        async with DealerSocket(identity=b"ours") as dealer:
            await dealer.connect(url)
            await dealer.send([b"hello"])
            assert await pyzmq.receive(router) == [b"ours", b"hello"]
            await pyzmq.send(router, [b"ours", b"hi"])
            assert await dealer.receive() == [b"hi"]


async def test_stale_ipc_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    with socket.socket(socket.AF_UNIX) as dead:  # a kernel that died without cleaning up
        dead.bind(str(path))
    assert path.is_socket()
    with trio.fail_after(TIMEOUT):
        listener, endpoint = await open_listener(Endpoint("ipc", str(path)))
        async with listener:
            async with await connect(endpoint) as client, await listener.accept() as server:
                await client.send_all(b"fresh")
                assert await server.receive_some() == b"fresh"


async def test_ipc_path_that_is_not_a_socket_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "precious.txt"
    path.write_text("not a socket")
    with trio.fail_after(TIMEOUT), pytest.raises(OSError):
        await open_listener(Endpoint("ipc", str(path)))
    assert path.read_text() == "not a socket"
