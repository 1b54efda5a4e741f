"""asyncio behaviour: the loop is never blocked, calls run on pool threads,
close interrupts long polls."""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import timedelta
from typing import Any, List

import pytest

from flowmesh import Event, FlowMesh, FlowMeshClosedError, _native

T, NS = "acme", "test"


async def _ticker(gaps: List[float], stop: asyncio.Event) -> None:
    last = time.monotonic()
    while not stop.is_set():
        await asyncio.sleep(0.005)
        now = time.monotonic()
        gaps.append(now - last)
        last = now


async def test_loop_stays_responsive_during_long_poll(url: str, name: str) -> None:
    """A 600 ms native long poll must not stall the loop (the off-thread
    proof for every call is the spy test below)."""
    async with FlowMesh(url) as client:
        gaps: List[float] = []
        stop = asyncio.Event()
        ticker = asyncio.ensure_future(_ticker(gaps, stop))
        started = time.monotonic()
        assert await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(milliseconds=600)) is None
        assert time.monotonic() - started >= 0.55
        stop.set()
        await ticker
        assert len(gaps) > 20
        assert max(gaps) < 0.3, f"event loop blocked for {max(gaps):.3f}s"


async def test_subscription_under_concurrent_writes(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        async with client.stream.subscribe(T, NS, name, None, 0, -2, buffer_size=8) as sub:
            await asyncio.gather(
                *(client.stream.write(T, NS, name, [Event(payload=b"x")]) for _ in range(200))
            )
            offsets = [(await asyncio.wait_for(sub.__anext__(), 5)).offset for _ in range(200)]
        assert offsets == list(range(200))
        state = sub._state
        assert state is None  # closed by async with


async def test_native_calls_run_off_the_loop_thread(monkeypatch: Any, name: str) -> None:
    lib = _native.lib()
    original = lib.fm_kv_get
    threads: List[int] = []

    def spy(*args: Any) -> Any:
        threads.append(threading.get_ident())
        return original(*args)

    monkeypatch.setattr(lib, "fm_kv_get", spy)
    async with FlowMesh("mem://") as client:
        await client.kv.set(T, NS, name, "k", b"v")
        assert await client.kv.get(T, NS, name, "k") == b"v"
    assert threads and threading.get_ident() not in threads


async def test_close_interrupts_long_poll(url: str, name: str) -> None:
    client = FlowMesh(url)
    await client.connect()
    waiting = asyncio.ensure_future(
        client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=30))
    )
    await asyncio.sleep(0.3)
    started = time.monotonic()
    await client.close()
    with pytest.raises(FlowMeshClosedError):
        await waiting
    assert time.monotonic() - started < 2


async def test_many_concurrent_calls_share_the_pool(url: str, name: str) -> None:
    async with FlowMesh(url, max_workers=4) as client:
        revisions = await asyncio.gather(
            *(client.kv.set(T, NS, name, f"k{i:03}", str(i).encode()) for i in range(300))
        )
        assert all(r >= 1 for r in revisions)
        assert len(await client.kv.list_keys(T, NS, name)) == 300
        values = await asyncio.gather(*(client.kv.get(T, NS, name, f"k{i:03}") for i in range(300)))
        assert values == [str(i).encode() for i in range(300)]


async def test_dropped_client_is_freed_by_finalizer(name: str) -> None:
    import gc

    client = FlowMesh("mem://")
    await client.connect()
    core = client._core()
    await client.kv.set(T, NS, name, "k", b"v")
    del client
    gc.collect()
    assert core.handle is None and core.closing
