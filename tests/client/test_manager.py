"""KernelManager against real kernels: ipykernel (``python3``, interrupt by signal)
and trikernel (interrupt by message), from the specs in conftest.py."""

from __future__ import annotations

import os
import signal

import pytest
import trio

from trikernel.client import (
    KernelLaunchError,
    KernelStartError,
    open_kernel_manager,
    run_kernel_manager,
)
from trikernel.client.manager import KernelManager
from trikernel.messages import Message

from .conftest import alive

KERNELS = ["python3", "trikernel"]


def _ports(km: KernelManager) -> list[int]:
    return [km.info.port(c) for c in ("shell", "iopub", "stdin", "control", "hb")]


@pytest.mark.parametrize("name", KERNELS)
async def test_start_execute_shutdown(name: str) -> None:
    with trio.fail_after(30):
        async with open_kernel_manager(name, quiet=True) as km:
            assert km.state == "ready" and km.is_alive()
            assert all(_ports(km)) and os.path.exists(km.connection_file)
            assert os.path.basename(km.connection_file) == f"kernel-{km.kernel_id}.json"
            assert (await km.client.execute("print(6 * 7)")).stdout() == "42\n"
            process = km.process
        assert process is not None and process.returncode is not None
        assert not os.path.exists(km.connection_file)
        assert km.state == "shutdown"


async def test_run_kernel_manager_in_a_nursery() -> None:
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            km: KernelManager = await nursery.start(run_kernel_manager, "trikernel")
            assert (await km.client.execute("1")).status == "ok"
            await km.shutdown()
        assert not km.is_alive()


@pytest.mark.parametrize("name", KERNELS)
async def test_interrupt(name: str) -> None:
    with trio.fail_after(30):
        async with open_kernel_manager(name, quiet=True) as km:
            msg = await km.client.submit("import time; time.sleep(60)")
            await trio.sleep(0.5)
            await km.interrupt()
            reply = await km.client.reply_to(msg.msg_id, timeout=10)
            assert reply.content["status"] == "error"
            assert reply.content["ename"] == "KeyboardInterrupt"
            assert (await km.client.execute("2")).status == "ok"


@pytest.mark.parametrize("name", KERNELS)
@pytest.mark.parametrize("newports", [False, True])
async def test_restart(name: str, newports: bool) -> None:
    with trio.fail_after(60):
        async with open_kernel_manager(name, quiet=True) as km:
            client, before = km.client, _ports(km)
            old = km.process
            await km.client.execute("x = 1")
            await km.restart(newports=newports)
            assert km.process is not old and old is not None and old.returncode is not None
            assert km.client is client and km.state == "ready"
            assert (_ports(km) != before) if newports else (_ports(km) == before)
            result = await km.client.execute("print('x' in globals())")
            assert result.stdout() == "False\n"


async def test_shutdown_leaves_no_process(jupyter_dirs: object) -> None:
    with trio.fail_after(30):
        async with open_kernel_manager("python3", quiet=True) as km:
            result = await km.client.execute(
                "import subprocess; print(subprocess.Popen(['sleep', '1000']).pid)"
            )
            child = int(result.stdout())
            assert km.process is not None
            kernel = km.process.pid
            assert alive(child)
        assert not alive(kernel)
        with trio.fail_after(2):
            while alive(child):
                await trio.sleep(0.02)


async def _status(receive: trio.MemoryReceiveChannel[Message], state: str) -> Message:
    async for msg in receive:
        if msg.msg_type == "status" and msg.content["execution_state"] == state:
            return msg
    raise AssertionError("iopub ended")


@pytest.mark.parametrize("name", KERNELS)
async def test_sigkill_restarts(name: str) -> None:
    with trio.fail_after(30):
        async with open_kernel_manager(name, quiet=True) as km:
            async with km.client.subscribe() as receive:
                killed = trio.current_time()
                km.signal(signal.SIGKILL)
                with trio.fail_after(1):
                    status = await _status(receive, "restarting")
                assert status.parent_header == {}
                noticed = trio.current_time() - killed
                await km.wait_ready()
                ready = trio.current_time() - killed
            assert km.state == "ready"
            assert (await km.client.execute("print(1)")).stdout() == "1\n"
            print(f"{name}: restarting after {noticed * 1000:.0f} ms, ready after {ready:.2f} s")
            assert noticed < 0.1


async def test_crash_loop_ends_dead() -> None:
    with trio.fail_after(30):
        async with open_kernel_manager("crash-after-first", quiet=True) as km:
            async with km.client.subscribe() as receive:
                km.signal(signal.SIGKILL)
                await _status(receive, "dead")
            assert km.state == "dead" and not km.is_alive()
            assert km._restarts == 6  # five tries, then dead
            with pytest.raises(Exception, match="dead"):
                await km.wait_ready()


async def test_a_kernel_that_exits_at_start_fails_at_once() -> None:
    start = trio.current_time()
    with pytest.raises(KernelStartError) as info:
        with trio.fail_after(5):
            async with open_kernel_manager("exits-at-start", quiet=True):
                pass
    assert trio.current_time() - start < 1
    assert info.value.returncode == 3
    assert "no such module: frobnicate" in info.value.stderr
    assert "exit code 3" in str(info.value)


async def test_a_kernel_that_cannot_launch() -> None:
    with pytest.raises(KernelLaunchError, match="/nonexistent/kernel-binary"):
        with trio.fail_after(5):
            async with open_kernel_manager("no-such-binary"):
                pass


async def _start_many(count: int, name: str) -> None:
    results: list[str] = []

    async def one() -> None:
        async with open_kernel_manager(name, quiet=True) as km:
            results.append((await km.client.execute("print('ok')")).stdout())

    with trio.fail_after(30 + count * 2):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
    assert results == ["ok\n"] * count


async def test_ten_concurrent_starts() -> None:
    await _start_many(10, "python3")


@pytest.mark.slow
async def test_fifty_concurrent_starts() -> None:
    await _start_many(50, "python3")


async def test_jupyter_client_attaches() -> None:
    jupyter_client = pytest.importorskip("jupyter_client")
    with trio.fail_after(60):
        async with open_kernel_manager("python3", quiet=True) as km:

            def attach() -> dict[str, object]:
                kc = jupyter_client.BlockingKernelClient(connection_file=km.connection_file)
                kc.load_connection_file()
                kc.start_channels()
                try:
                    kc.wait_for_ready(timeout=20)
                    return kc.execute_interactive("y = 5", timeout=20)["content"]  # type: ignore[no-any-return]
                finally:
                    kc.stop_channels()

            content = await trio.to_thread.run_sync(attach)
            assert content["status"] == "ok"
            assert (await km.client.execute("print(y)")).stdout() == "5\n"


async def test_reserved_ports_for_a_kernel_that_binds_what_it_is_given() -> None:
    with trio.fail_after(30):
        async with open_kernel_manager("trikernel", quiet=True, bind_port0=False) as km:
            ports = _ports(km)
            assert all(ports) and set(ports) <= _reserved_now()
            assert (await km.client.execute("print(3)")).stdout() == "3\n"
        assert not set(ports) & _reserved_now()


def _reserved_now() -> set[int]:
    from trikernel.client import _ports as ports_module

    return set(ports_module._reserved)


async def test_a_pending_request_fails_with_kernel_restarted() -> None:
    from trikernel.client import KernelRestarted

    with trio.fail_after(30):
        async with open_kernel_manager("trikernel", quiet=True) as km:
            msg = await km.client.submit("import time; time.sleep(60)")
            await km.restart(now=True)
            with pytest.raises(KernelRestarted):
                await km.client.reply_to(msg.msg_id, timeout=5)
