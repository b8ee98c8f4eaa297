"""ZMTP throughput on loopback: trikernel.zmtp sockets against pyzmq (libzmq).

Run by hand: ``python bench/zmtp.py`` (about a minute). Prints a table and writes
bench/results/zmtp.json. Each case runs ``--repeat`` times (3) and the best run
counts, since other load on the machine only ever slows a run down.

What is measured, for 100-byte, 1 MiB and 64 MiB messages (one frame each):

* round trip: a DEALER sends, a ROUTER echoes, the DEALER waits for the echo before
  the next send. msg/s = round trips per second; MB/s = payload bytes moved in
  both directions per second (1 MB = 10^6 bytes).
* pub/sub: a PUB publishes N messages as fast as it can, one SUB receives them all;
  the time is from the first publish to the last receive. High-water marks are
  set above N so that nothing is dropped and every implementation moves the same
  bytes.

Pairs: pyzmq <-> pyzmq (the baseline), ours <-> ours (both ends in one trio
thread), and the pairs the kernel really sees: a pyzmq DEALER client against our
ROUTER, and our PUB with a pyzmq SUB. pyzmq receives with copy=True (bytes, as
jupyter_client does) and sends frames of 64 KiB or more without copying.
Our sockets run in trio; pyzmq client ends run in a worker thread.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
import zmq

from trikernel.zmtp.sockets import DealerSocket, PubSocket, RouterSocket, SubSocket

LOCALHOST = "tcp://127.0.0.1:0"
KiB, MiB = 1 << 10, 1 << 20
SIZES = [100, MiB, 64 * MiB]
# How long to run each round-trip case, and how many messages to publish per size.
ROUND_TRIP_SECONDS = 1.0
PUBLISH_COUNT = {100: 100_000, MiB: 300, 64 * MiB: 6}
RESULTS = Path(__file__).parent / "results" / "zmtp.json"


def payload(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def copy_for(size: int) -> bool:
    return size < 64 * KiB


class Result:
    def __init__(self, size: int, count: int, seconds: float, directions: int) -> None:
        self.size, self.count, self.seconds = size, count, seconds
        self.msgs_per_s = count / seconds
        self.mb_per_s = count * size * directions / seconds / 1e6

    def value(self) -> float:
        """msg/s for small messages, MB/s for large ones."""
        return self.msgs_per_s if self.size < 64 * KiB else self.mb_per_s

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "seconds": round(self.seconds, 4),
            "msgs_per_s": round(self.msgs_per_s, 1),
            "mb_per_s": round(self.mb_per_s, 1),
        }


def timed_round_trips(size: int, one: Callable[[], Any]) -> Result:
    """Call ``one()`` (a blocking round trip) for ROUND_TRIP_SECONDS, after a warm-up."""
    one()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < ROUND_TRIP_SECONDS or count < 3:
        one()
        count += 1
    return Result(size, count, elapsed, directions=2)


async def async_timed_round_trips(size: int, one: Callable[[], Any]) -> Result:
    await one()
    count, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < ROUND_TRIP_SECONDS or count < 3:
        await one()
        count += 1
    return Result(size, count, elapsed, directions=2)


def zmq_socket(context: zmq.Context[Any], kind: int, **options: Any) -> zmq.Socket[bytes]:
    sock: zmq.Socket[bytes] = context.socket(kind)
    sock.linger = 0
    sock.rcvtimeo = sock.sndtimeo = 60_000  # a stuck benchmark fails instead of hanging
    for name, value in options.items():
        setattr(sock, name, value)
    return sock


# ---- round trips ------------------------------------------------------------------


def pyzmq_round_trip(size: int) -> Result:
    context = zmq.Context()
    router = zmq_socket(context, zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = zmq_socket(context, zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    body, copy = payload(size), copy_for(size)

    def one() -> None:
        dealer.send(body, copy=copy)
        router.send_multipart(router.recv_multipart(), copy=copy)
        dealer.recv()

    try:
        return timed_round_trips(size, one)
    finally:
        router.close()
        dealer.close()
        context.term()


async def echo(router: RouterSocket) -> None:
    while True:
        router.send_nowait(await router.receive())


async def ours_round_trip(size: int) -> Result:
    async with RouterSocket() as router, DealerSocket() as dealer:
        endpoint = await router.bind(LOCALHOST)
        await dealer.connect(endpoint.url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(echo, router)
            body = [payload(size)]

            async def one() -> None:
                await dealer.send(body)
                await dealer.receive()

            result = await async_timed_round_trips(size, one)
            nursery.cancel_scope.cancel()
    return result


async def pyzmq_dealer_our_router(size: int) -> Result:
    context = zmq.Context()
    async with RouterSocket() as router:
        endpoint = await router.bind(LOCALHOST)
        dealer = zmq_socket(context, zmq.DEALER)
        dealer.connect(endpoint.url)
        body, copy = payload(size), copy_for(size)

        def one() -> None:
            dealer.send(body, copy=copy)
            dealer.recv()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(echo, router)
                result = await trio.to_thread.run_sync(timed_round_trips, size, one)
                nursery.cancel_scope.cancel()
        finally:
            dealer.close()
            context.term()
    return result


# ---- pub/sub ----------------------------------------------------------------------


def pyzmq_pub_sub(size: int) -> Result:
    count = PUBLISH_COUNT[size]
    context = zmq.Context()
    pub = zmq_socket(context, zmq.PUB, sndhwm=count + 10)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub = zmq_socket(context, zmq.SUB, rcvhwm=count + 10)
    sub.subscribe(b"")
    sub.connect(f"tcp://127.0.0.1:{port}")
    try:
        _wait_for_pyzmq_subscriber(pub, sub)
        body, copy = payload(size), copy_for(size)
        done: list[float] = []

        def receive_all() -> None:
            for _ in range(count):
                sub.recv()
            done.append(time.perf_counter())

        reader = threading.Thread(target=receive_all)
        reader.start()
        start = time.perf_counter()
        for _ in range(count):
            pub.send(body, copy=copy)
        reader.join()
        return Result(size, count, done[0] - start, directions=1)
    finally:
        pub.close()
        sub.close()
        context.term()


def _wait_for_pyzmq_subscriber(pub: zmq.Socket[bytes], sub: zmq.Socket[bytes]) -> None:
    # Slow joiner: publish a marker until the subscriber sees one, then drain markers.
    sub.rcvtimeo = 10
    while True:
        pub.send(b"marker")
        try:
            sub.recv()
            break
        except zmq.Again:
            continue
    time.sleep(0.05)
    while True:
        try:
            sub.recv()
        except zmq.Again:
            break
    sub.rcvtimeo = 60_000


async def _publish(pub: PubSocket, size: int, count: int) -> float:
    body = [payload(size)]
    start = time.perf_counter()
    for _ in range(count):
        pub.publish_nowait(body)
        await trio.lowlevel.checkpoint()
    return start


async def ours_pub_sub(size: int) -> Result:
    count = PUBLISH_COUNT[size]
    async with PubSocket(hwm=count + 10) as pub, SubSocket() as sub:
        endpoint = await pub.bind(LOCALHOST)
        await sub.connect(endpoint.url)
        await sub.subscribe(b"")
        while not (pub.peers and pub.peers[0].subscriptions):
            await trio.sleep(0.001)
        async with trio.open_nursery() as nursery:
            starts: list[float] = []

            async def publish() -> None:
                starts.append(await _publish(pub, size, count))

            nursery.start_soon(publish)
            for _ in range(count):
                await sub.receive()
        return Result(size, count, time.perf_counter() - starts[0], directions=1)


async def our_pub_pyzmq_sub(size: int) -> Result:
    count = PUBLISH_COUNT[size]
    context = zmq.Context()
    async with PubSocket(hwm=count + 10) as pub:
        endpoint = await pub.bind(LOCALHOST)
        sub = zmq_socket(context, zmq.SUB, rcvhwm=count + 10)
        sub.subscribe(b"")
        sub.connect(endpoint.url)
        try:
            while not (pub.peers and pub.peers[0].subscriptions):
                await trio.sleep(0.001)

            def receive_all() -> float:
                for _ in range(count):
                    sub.recv()
                return time.perf_counter()

            async with trio.open_nursery() as nursery:
                starts: list[float] = []

                async def publish() -> None:
                    starts.append(await _publish(pub, size, count))

                nursery.start_soon(publish)
                end = await trio.to_thread.run_sync(receive_all)
            return Result(size, count, end - starts[0], directions=1)
        finally:
            sub.close()
            context.term()


# ---- the table --------------------------------------------------------------------


def best_of(repeat: int, measure: Callable[..., Result], *args: Any) -> Result:
    """The best of ``repeat`` runs: other load on the machine only ever slows a run down."""
    return max((measure(*args) for _ in range(repeat)), key=Result.value)


def run_all(repeat: int) -> list[dict[str, Any]]:
    rows = []
    for size in SIZES:
        for pattern, baseline, ours, kernel_pair, kernel_name in [
            ("round trip", pyzmq_round_trip, ours_round_trip, pyzmq_dealer_our_router,
             "pyzmq DEALER -> our ROUTER"),
            ("pub/sub", pyzmq_pub_sub, ours_pub_sub, our_pub_pyzmq_sub,
             "our PUB -> pyzmq SUB"),
        ]:  # fmt: skip
            base = best_of(repeat, baseline, size)
            mine = best_of(repeat, trio.run, ours, size)
            mixed = best_of(repeat, trio.run, kernel_pair, size)
            rows.append(
                {
                    "pattern": pattern,
                    "size": size,
                    "unit": "msg/s" if size < 64 * KiB else "MB/s",
                    "pyzmq": base.as_dict(),
                    "ours": mine.as_dict(),
                    "kernel_pair": kernel_name,
                    "mixed": mixed.as_dict(),
                    "ratio_ours": round(mine.value() / base.value(), 3),
                    "ratio_mixed": round(mixed.value() / base.value(), 3),
                }
            )
            print(format_row(rows[-1]), flush=True)
    return rows


def human_size(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size} B"


def format_value(result: dict[str, float], unit: str) -> str:
    return f"{result['msgs_per_s']:,.0f}" if unit == "msg/s" else f"{result['mb_per_s']:,.0f}"


HEADER = (
    f"{'pattern':<11} {'size':>7} {'unit':>6} {'pyzmq':>10} {'ours':>10} {'ratio':>6}"
    f" {'mixed':>10} {'ratio':>6}  mixed pair"
)


def format_row(row: dict[str, Any]) -> str:
    unit = row["unit"]
    return (
        f"{row['pattern']:<11} {human_size(row['size']):>7} {unit:>6}"
        f" {format_value(row['pyzmq'], unit):>10} {format_value(row['ours'], unit):>10}"
        f" {row['ratio_ours']:>6.2f} {format_value(row['mixed'], unit):>10}"
        f" {row['ratio_mixed']:>6.2f}  {row['kernel_pair']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; the best is kept")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, trio {trio.__version__}, pyzmq {zmq.__version__},"
          f" libzmq {zmq.zmq_version()}")  # fmt: skip
    print(HEADER)
    start = time.perf_counter()
    rows = run_all(args.repeat)
    total = time.perf_counter() - start
    print(f"total {total:.1f} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "python": platform.python_version(),
                "trio": trio.__version__,
                "pyzmq": zmq.__version__,
                "libzmq": zmq.zmq_version(),
                "platform": platform.platform(),
                "seconds": round(total, 1),
                "repeat": args.repeat,
                "rows": rows,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
