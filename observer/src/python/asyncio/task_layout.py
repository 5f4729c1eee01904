# Measures where an `_asyncio.Task` keeps the fields the observer reads,
# on the interpreter running it (the struct is private to
# Modules/_asynciomodule.c): prints "field offset" lines.
import asyncio
import ctypes


def word(obj, off):
    return ctypes.c_uint64.from_address(id(obj) + off).value


def offset_of(obj, target):
    hits = [
        o
        for o in range(16, type(obj).__basicsize__, 8)
        if word(obj, o) == id(target)
    ]
    return hits[0] if len(hits) == 1 else -1


async def waiter(fut):
    await fut


async def quick():
    return 1


async def main():
    loop = asyncio.get_running_loop()
    fut = loop.create_future()
    t = asyncio.create_task(waiter(fut), name="measured")
    await asyncio.sleep(0)
    print("fut_loop", offset_of(t, loop))
    print("fut_waiter", offset_of(t, fut))
    print("coro", offset_of(t, t.get_coro()))
    print("name", offset_of(t, t.get_name()))
    done = asyncio.create_task(quick())
    await done
    cancelled = asyncio.create_task(asyncio.sleep(3600))
    await asyncio.sleep(0)
    cancelled.cancel()
    try:
        await cancelled
    except asyncio.CancelledError:
        pass
    # The state: the one int that is 0 pending, 1 cancelled, 2 done.
    states = [
        o
        for o in range(16, type(t).__basicsize__, 4)
        if [
            ctypes.c_int32.from_address(id(x) + o).value
            for x in (t, cancelled, done)
        ]
        == [0, 1, 2]
    ]
    print("fut_state", states[0] if len(states) == 1 else -1)
    print("basicsize", type(t).__basicsize__)
    fut.set_result(None)
    await t


asyncio.run(main())
