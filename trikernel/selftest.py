"""``python -m trikernel --selftest``: start a kernel process, drive it with
trikernel.client, print one line per check with its time; exit 0 only if all pass."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import trio

from .client import KernelClient, open_client
from .connection import (
    ConnectionInfo,
    new_connection_info,
    read_connection_file,
    save_connection_file,
)

Check = Callable[[KernelClient], Awaitable[str | None]]


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


async def check_kernel_info(client: KernelClient) -> str:
    reply = await client.kernel_info()
    _expect(reply.content["language_info"]["name"] == "python", "language_info.name is python")
    return f"protocol {reply.content['protocol_version']}"


async def check_stream_and_result(client: KernelClient) -> None:
    result = await client.execute("print('hello'); 6 * 7")
    _expect(result.status == "ok", f"status ok, got {result.reply.content}")
    _expect(result.stdout() == "hello\n", f"stdout 'hello\\n', got {result.stdout()!r}")
    values = [m.content["data"]["text/plain"] for m in result.of_type("execute_result")]
    _expect(values == ["42"], f"execute_result 42, got {values}")


async def check_error(client: KernelClient) -> None:
    result = await client.execute("1 / 0", stop_on_error=False)
    _expect(
        result.reply.content.get("ename") == "ZeroDivisionError",
        f"ZeroDivisionError, got {result.reply.content}",
    )
    _expect(bool(result.of_type("error")), "an error message on iopub")


async def check_display(client: KernelClient) -> None:
    result = await client.execute(
        "from IPython.display import HTML, display; display(HTML('<b>hi</b>'))"
    )
    shown = [m.content["data"] for m in result.of_type("display_data")]
    _expect(
        any(d.get("text/html") == "<b>hi</b>" for d in shown),
        f"text/html display_data, got {shown}",
    )


async def check_complete(client: KernelClient) -> None:
    code = "import os; os.pa"
    reply = await client.request("complete_request", {"code": code, "cursor_pos": len(code)})
    matches = reply.content.get("matches", [])
    _expect(
        any(m.endswith("path") for m in matches), f"os.path among the matches, got {matches[:5]}"
    )


async def check_is_complete(client: KernelClient) -> None:
    reply = await client.request("is_complete_request", {"code": "for i in range(3):"})
    _expect(reply.content.get("status") == "incomplete", f"incomplete, got {reply.content}")


async def check_input(client: KernelClient) -> None:
    async def answer(prompt: str, password: bool) -> str:
        return f"answer to {prompt.strip()}"

    client.input_handler = answer
    try:
        result = await client.execute("print(input('name?'))")
    finally:
        client.input_handler = None
    _expect(result.stdout() == "answer to name?\n", f"input round trip, got {result.stdout()!r}")


async def check_heartbeat_while_busy(client: KernelClient) -> str:
    await client.submit("import time\nt0 = time.time()\nwhile time.time() - t0 < 1.5: pass")
    await trio.sleep(0.2)
    rtts = [await client.heartbeat(timeout=1) for _ in range(20)]
    await client.execute("pass")  # waits for the spinning cell to end
    return f"max round trip {max(rtts) * 1000:.1f} ms over {len(rtts)} beats while a cell spins"


async def check_interrupt(client: KernelClient) -> str:
    request = await client.submit("import time; time.sleep(60)", stop_on_error=False)
    await trio.sleep(0.5)
    start = time.perf_counter()
    await client.interrupt()
    reply = await client.reply_to(request.msg_id, timeout=10)
    elapsed = time.perf_counter() - start
    _expect(
        reply.content.get("ename") == "KeyboardInterrupt", f"KeyboardInterrupt, got {reply.content}"
    )
    _expect(
        (await client.execute("pass")).status == "ok", "the kernel runs cells after the interrupt"
    )
    return f"error reply {elapsed * 1000:.0f} ms after interrupt_request"


CHECKS: list[tuple[str, Check]] = [
    ("kernel_info", check_kernel_info),
    ("execute: stream and execute_result", check_stream_and_result),
    ("execute: error", check_error),
    ("display_data", check_display),
    ("complete", check_complete),
    ("is_complete", check_is_complete),
    ("input() round trip", check_input),
    ("heartbeat while a cell spins", check_heartbeat_while_busy),
]


async def _wait_for_ports(
    path: Path, process: subprocess.Popen[bytes], timeout: float
) -> ConnectionInfo:
    with trio.fail_after(timeout):
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the kernel exited with status {process.returncode}")
            info = read_connection_file(path)
            if info.shell_port:
                return info
            await trio.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        not Path(f"/proc/{pid}/status").exists()
        or "zombie" not in Path(f"/proc/{pid}/status").read_text()
    )


async def _run(results: list[bool]) -> None:
    def line(ok: bool, name: str, elapsed: float, detail: str | None) -> None:
        results.append(ok)
        mark = "\u2713" if ok else "\u2717"
        print(f"{mark} {name} ({elapsed:.2f} s){': ' + detail if detail else ''}", flush=True)

    with tempfile.TemporaryDirectory(prefix="trikernel-selftest-") as tmp:
        path = Path(tmp) / "kernel.json"
        save_connection_file(path, new_connection_info())
        start = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "trikernel", "-f", str(path)], start_new_session=True
        )
        try:
            info = await _wait_for_ports(path, process, 30)
            async with open_client(info) as client:
                await client.wait_for_ready(30)
                line(
                    True,
                    "kernel started and answered kernel_info",
                    time.perf_counter() - start,
                    None,
                )
                evaluator_pid = int(
                    (await client.execute("import os; os.getpid()"))
                    .of_type("execute_result")[0]
                    .content["data"]["text/plain"]
                )
                for name, check in [*CHECKS, ("interrupt of time.sleep(60)", check_interrupt)]:
                    t0 = time.perf_counter()
                    try:
                        with trio.fail_after(30):
                            detail = await check(client)
                        line(True, name, time.perf_counter() - t0, detail)
                    except Exception as exc:  # report every failing check, keep going
                        line(False, name, time.perf_counter() - t0, f"{type(exc).__name__}: {exc}")
                t0 = time.perf_counter()
                await client.shutdown()
            gone = await trio.to_thread.run_sync(_wait_exit, process, 10.0)
            with trio.move_on_after(5):
                while _alive(evaluator_pid):
                    await trio.sleep(0.02)
            ok = gone and not _alive(evaluator_pid)
            line(
                ok,
                "shutdown leaves no process behind",
                time.perf_counter() - t0,
                None if ok else "a process survived",
            )
        except Exception as exc:
            line(False, "kernel start", time.perf_counter() - start, f"{type(exc).__name__}: {exc}")
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 9)
                process.wait()


def _wait_exit(process: subprocess.Popen[bytes], timeout: float) -> bool:
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


def main() -> int:
    results: list[bool] = []
    trio.run(_run, results)
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if results and all(results) else 1
