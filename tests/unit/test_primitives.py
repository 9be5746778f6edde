"""The lean Event and Queue keep asyncio's promises for what the server and uvicorn use of them."""

from __future__ import annotations

import asyncio

import pytest

from crdt_server.primitives import Event, Queue

pytestmark = pytest.mark.anyio


async def test_event_wakes_every_waiter_and_a_set_event_does_not_block() -> None:
    ev = Event()
    woken: list[int] = []

    async def waiter(i: int) -> None:
        assert await ev.wait() is True
        woken.append(i)

    tasks = [asyncio.create_task(waiter(i)) for i in range(3)]
    await asyncio.sleep(0)
    assert not woken and not ev.is_set()
    ev.set()
    await asyncio.gather(*tasks)
    assert sorted(woken) == [0, 1, 2]
    assert await asyncio.wait_for(ev.wait(), 0.1) is True  # set: returns at once
    ev.clear()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(ev.wait(), 0.05)


async def test_a_cancelled_event_waiter_leaves_the_others_waiting() -> None:
    ev = Event()
    first = asyncio.create_task(ev.wait())
    second = asyncio.create_task(ev.wait())
    await asyncio.sleep(0)
    first.cancel()
    await asyncio.sleep(0)
    assert first.cancelled() and not second.done()
    ev.set()
    assert await second is True


async def test_queue_is_first_in_first_out_and_a_get_waits_for_a_put() -> None:
    q: Queue[int] = Queue()
    assert q.empty() and q.qsize() == 0
    getter = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    assert not getter.done()
    q.put_nowait(1)
    q.put_nowait(2)
    q.put_nowait(3)
    assert await getter == 1
    assert q.qsize() == 2 and not q.empty()
    assert [await q.get(), q.get_nowait()] == [2, 3]
    with pytest.raises(asyncio.QueueEmpty):
        q.get_nowait()


async def test_an_item_woken_for_a_cancelled_getter_goes_to_the_next_one() -> None:
    q: Queue[str] = Queue()
    first = asyncio.create_task(q.get())
    second = asyncio.create_task(q.get())
    await asyncio.sleep(0)
    q.put_nowait("x")  # wakes the first getter...
    first.cancel()  # ...which is cancelled before it runs
    await asyncio.sleep(0)
    assert first.cancelled()
    assert await asyncio.wait_for(second, 1) == "x"
