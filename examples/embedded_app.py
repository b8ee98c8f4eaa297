"""A small trio service with an embedded Jupyter kernel.

    python examples/embedded_app.py --connection-file app.json [--port 0]
    jupyter console --existing app.json

The app counts (``state["ticks"]`` goes up every 0.05 s) and runs a TCP echo server
(its port is ``state["echo_port"]``). From the console, look at and change the live
state, or run ``await`` cells on the app's own loop::

    In [1]: state["ticks"]
    In [2]: state["step"] = 10
    In [3]: await trio.sleep(1)          # the counter keeps ticking meanwhile
    In [4]: background.start_soon(watch) # a task that outlives the cell

SIGINT (Ctrl-C) or SIGTERM stops the app cleanly; the connection file is removed.
"""

from __future__ import annotations

import argparse
import logging
import signal
from typing import Any

import trio

import trikernel

log = logging.getLogger("embedded_app")


async def counter(state: dict[str, Any]) -> None:
    while True:
        await trio.sleep(0.05)
        state["ticks"] += state["step"]


async def echo(stream: trio.SocketStream) -> None:
    try:
        async for data in stream:
            await stream.send_all(data)
    except trio.BrokenResourceError:
        pass


async def stop_on_signals(cancel_scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: stopping", signal.Signals(signum).name)
            cancel_scope.cancel()
            return


async def main(connection_file: str | None, port: int) -> None:
    state: dict[str, Any] = {"ticks": 0, "step": 1, "echo_port": None}
    namespace = {"state": state, "trio": trio, "__name__": "__console__"}
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_signals, nursery.cancel_scope)
        nursery.start_soon(counter, state)
        listeners = await nursery.start(trio.serve_tcp, echo, port)
        state["echo_port"] = listeners[0].socket.getsockname()[1]
        log.info("echo server on port %d", state["echo_port"])
        async with trikernel.open_kernel(namespace=namespace, connection_file=connection_file):
            print("app ready", flush=True)
            await trio.sleep_forever()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connection-file", help="where to write the connection file")
    parser.add_argument("--port", type=int, default=0, help="echo server port (0: any)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    trio.run(main, args.connection_file, args.port)
    log.info("stopped")


if __name__ == "__main__":
    cli()
