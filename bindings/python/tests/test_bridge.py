"""The thread -> event loop channel on its own (no library needed)."""

from __future__ import annotations

import asyncio
import threading
from typing import List

import pytest

from flowmesh._bridge import Channel


async def test_items_cross_threads_in_order() -> None:
    ch: Channel[int] = Channel(asyncio.get_running_loop(), capacity=8)
    total = 5000

    def produce() -> None:
        for i in range(total):
            assert ch.put(i)

    thread = threading.Thread(target=produce)
    thread.start()
    got = [await ch.get() for _ in range(total)]
    thread.join()
    assert got == list(range(total))


async def test_full_buffer_blocks_the_producer() -> None:
    ch: Channel[int] = Channel(asyncio.get_running_loop(), capacity=3)
    produced: List[int] = []

    def produce() -> None:
        for i in range(10):
            ch.put(i)
            produced.append(i)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    await asyncio.sleep(0.2)
    assert len(produced) == 3  # blocked on the 4th: bounded memory
    assert await ch.get() == 0  # taking a batch frees room
    await asyncio.sleep(0.2)
    assert len(produced) == 6
    rest = [await ch.get() for _ in range(9)]
    thread.join(2)
    assert rest == list(range(1, 10))


async def test_close_unblocks_producer_and_ends_consumer() -> None:
    ch: Channel[int] = Channel(asyncio.get_running_loop(), capacity=1)
    results: List[bool] = []

    def produce() -> None:
        results.append(ch.put(1))
        results.append(ch.put(2))  # blocks until close
        results.append(ch.put(3))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    await asyncio.sleep(0.1)
    ch.close()
    thread.join(2)
    assert not thread.is_alive()
    assert results == [True, False, False]
    with pytest.raises(StopAsyncIteration):
        await ch.get()


async def test_waiting_consumer_woken_by_close_from_thread() -> None:
    ch: Channel[int] = Channel(asyncio.get_running_loop(), capacity=4)
    waiter = asyncio.ensure_future(ch.get())
    await asyncio.sleep(0.05)
    threading.Timer(0.05, ch.close).start()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(waiter, 2)


async def test_cancelled_consumer_leaves_no_stale_waiter() -> None:
    ch: Channel[int] = Channel(asyncio.get_running_loop(), capacity=4)
    waiter = asyncio.ensure_future(ch.get())
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert ch._waiters == []
    threading.Thread(target=ch.put, args=(7,)).start()
    assert await asyncio.wait_for(ch.get(), 2) == 7


async def test_wakeups_are_batched() -> None:
    """A burst while the consumer is busy costs no extra loop wake-ups."""
    loop = asyncio.get_running_loop()
    ch: Channel[int] = Channel(loop, capacity=1000)
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args: object, **kwargs: object) -> object:
        nonlocal calls
        calls += 1
        return original(*args, **kwargs)  # type: ignore[arg-type]

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
    try:
        thread = threading.Thread(target=lambda: [ch.put(i) for i in range(500)])
        thread.start()
        thread.join()
        got = [await ch.get() for _ in range(500)]
    finally:
        loop.call_soon_threadsafe = original  # type: ignore[method-assign]
    assert got == list(range(500))
    assert calls == 0  # nobody was waiting while the burst arrived


def test_put_after_loop_closed_does_not_raise() -> None:
    loop = asyncio.new_event_loop()
    ch: Channel[int] = Channel(loop, capacity=2)
    ch._waiters.append(loop.create_future())  # a consumer that never came back
    loop.close()
    assert ch.put(1) is True  # the wake-up fails quietly
    ch.close()
    assert ch.put(2) is False
