import trio

from trikernel.client import open_kernel_manager


async def test_ipykernel_start_execute() -> None:
    with trio.fail_after(30):
        async with open_kernel_manager("python3", quiet=True) as km:
            r = await km.client.execute("print(6 * 7)")
            assert r.stdout() == "42\n"
