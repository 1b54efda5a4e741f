"""Streams: write, read, offsets, consumer groups and subscriptions."""

from __future__ import annotations

import asyncio
import gc
from typing import Any, List

import pytest

from flowmesh import (
    Event,
    FlowMesh,
    FlowMeshAlreadyExistsError,
    FlowMeshInvalidArgumentError,
    FlowMeshNotFoundError,
    FlowMeshTooLargeError,
    Message,
)

T, NS = "acme", "test"


def events(count: int, tag: str = "e") -> List[Event]:
    return [Event(payload=f"{tag}-{i}".encode(), headers={"i": str(i)}) for i in range(count)]


async def next_message(sub: "object", timeout: float = 5.0) -> Message:
    return await asyncio.wait_for(sub.__anext__(), timeout)  # type: ignore[attr-defined]


async def test_write_and_read(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        batch = [
            Event(payload=b'{"order_id": "123"}', headers={"event_type": "order.created"}),
            Event(payload=b"\x00binary\x00", headers={}, key=b"k1"),
        ]
        offsets = await client.stream.write(T, NS, name, batch)
        assert offsets == [0, 1]
        assert await client.stream.write(T, NS, name, events(3)) == [2, 3, 4]
        assert await client.stream.write(T, NS, name, []) == []

        msgs = await client.stream.read(T, NS, name, partition=0, offset=0, max_messages=10)
        assert [m.offset for m in msgs] == [0, 1, 2, 3, 4]
        assert msgs[0].payload == b'{"order_id": "123"}'
        assert msgs[0].headers == {"event_type": "order.created"}
        assert msgs[1].payload == b"\x00binary\x00"  # NUL bytes survive
        assert msgs[1].key == b"k1"
        assert msgs[2].headers == {"i": "0"}
        assert all(m.partition == 0 for m in msgs)
        assert msgs[0].resource_path.endswith(name)
        assert msgs[0].timestamp_ms > 0 and msgs[0].created_at.year >= 2024

        assert [m.offset for m in await client.stream.read(T, NS, name, offset=3)] == [3, 4]
        assert len(await client.stream.read(T, NS, name, max_messages=2)) == 2
        assert await client.stream.read(T, NS, name, offset=5) == []


async def test_read_missing_stream_is_not_found(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        with pytest.raises(FlowMeshNotFoundError) as info:
            await client.stream.read(T, NS, name)
        assert info.value.code == "FM_ERR_NOT_FOUND"
        with pytest.raises(FlowMeshNotFoundError):
            await client.stream.get_latest_offset(T, NS, name)


async def test_latest_offset_and_consumer_group(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(5))
        assert await client.stream.get_latest_offset(T, NS, name, 0) == 5
        with pytest.raises(FlowMeshNotFoundError):
            await client.stream.get_offset(T, NS, name, "billing", 0)
        state = await client.stream.get_consumer_group_state(T, NS, name, "billing", 0)
        assert (state.committed_offset, state.latest_offset, state.lag) == (-1, 5, 5)

        await client.stream.commit_offset(T, NS, name, "billing", 0, 2)
        assert await client.stream.get_offset(T, NS, name, "billing", 0) == 2
        state = await client.stream.get_consumer_group_state(T, NS, name, "billing", 0)
        assert state.group == "billing" and state.partition == 0
        assert (state.committed_offset, state.latest_offset, state.lag) == (2, 5, 2)


async def test_create_with_partitions(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.create(T, NS, name, partitions=3)
        await client.stream.create(T, NS, name, partitions=3)  # same: fine
        assert await client.stream.partitions(T, NS, name) == 3
        with pytest.raises(FlowMeshAlreadyExistsError) as info:
            await client.stream.create(T, NS, name, partitions=2)
        assert info.value.code == "FM_ERR_ALREADY_EXISTS"
        # Keyed events land on partitions; every one is readable back.
        await client.stream.write(T, NS, name, [Event(payload=b"x", key=f"k{i}".encode()) for i in range(30)])
        total = 0
        for p in range(3):
            total += len(await client.stream.read(T, NS, name, partition=p, max_messages=100))
        assert total == 30


async def test_too_large_payload(url: str, name: str) -> None:
    async with FlowMesh(url, options={"max_payload_bytes": "1024"}) as client:
        await client.stream.write(T, NS, name, [Event(payload=b"a" * 1024)])
        with pytest.raises(FlowMeshTooLargeError) as info:
            await client.stream.write(T, NS, name, [Event(payload=b"a" * 2048)])
        assert info.value.code == "FM_ERR_TOO_LARGE"
        assert info.value.details


async def test_subscribe_receives_messages_published_after(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(3, "old"))
        async with client.stream.subscribe(T, NS, name, "g1", partition=0, start_offset=-2) as sub:
            await client.stream.write(T, NS, name, events(4, "new"))
            got = [await next_message(sub) for _ in range(4)]
        assert [m.payload for m in got] == [f"new-{i}".encode() for i in range(4)]
        assert [m.offset for m in got] == [3, 4, 5, 6]
        assert got[0].headers == {"i": "0"}


async def test_subscribe_without_group_from_explicit_offset(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(5))
        sub = client.stream.subscribe(T, NS, name, None, partition=0, start_offset=3)
        got = [await next_message(sub) for _ in range(2)]
        await sub.aclose()
        assert [m.offset for m in got] == [3, 4]
        with pytest.raises(StopAsyncIteration):
            await sub.__anext__()


async def test_subscribe_resumes_after_committed(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(6))
        await client.stream.commit_offset(T, NS, name, "workers", 0, 3)
        async with client.stream.subscribe(T, NS, name, "workers", 0, -1) as sub:
            got = [await next_message(sub) for _ in range(2)]
        assert [m.offset for m in got] == [4, 5]


async def test_documented_loop_with_commit(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(3))
        seen: List[int] = []
        async for msg in client.stream.subscribe(T, NS, name, "svc", partition=0, start_offset=-1):
            seen.append(msg.offset)
            await client.stream.commit_offset(T, NS, name, "svc", 0, msg.offset)
            if len(seen) == 3:
                break
        assert seen == [0, 1, 2]
        assert await client.stream.get_offset(T, NS, name, "svc", 0) == 2


async def test_invalid_start_offset(name: str) -> None:
    async with FlowMesh("mem://") as client:
        with pytest.raises(FlowMeshInvalidArgumentError):
            client.stream.subscribe(T, NS, name, "g", 0, start_offset=-3)


async def test_slow_consumer_backpressure_no_loss(url: str, name: str) -> None:
    """A tiny buffer: the producer side must wait, nothing is lost or reordered."""
    async with FlowMesh(url) as client:
        await client.stream.create(T, NS, name)
        sub = client.stream.subscribe(T, NS, name, None, 0, -2, buffer_size=4)
        await sub.start()
        total = 200
        writer = asyncio.ensure_future(client.stream.write(T, NS, name, events(total)))
        got: List[int] = []
        peak = 0
        state = sub._state
        assert state is not None
        while len(got) < total:
            msg = await next_message(sub)
            got.append(msg.offset)
            peak = max(peak, len(state.items))  # fetched in batches of <= buffer_size
            if len(got) % 20 == 0:
                await asyncio.sleep(0.01)  # be slow now and then
        await writer
        await sub.aclose()
        assert got == list(range(total))
        assert peak <= 4


async def test_aclose_and_gc_unsubscribe(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.create(T, NS, name)
        core = client._core()
        sub = client.stream.subscribe(T, NS, name, None, 0, -2)
        await sub.start()
        assert len(core.subs) == 1
        await sub.aclose()
        assert len(core.subs) == 0

        sub2 = client.stream.subscribe(T, NS, name, None, 0, -2)
        await sub2.start()
        assert len(core.subs) == 1
        del sub2
        gc.collect()
        for _ in range(50):  # the finalizer runs synchronously; allow a moment anyway
            if not core.subs:
                break
            await asyncio.sleep(0.01)
        assert len(core.subs) == 0
        # Publishing afterwards must not touch the dropped subscription.
        await client.stream.write(T, NS, name, events(3))


async def test_close_client_ends_subscription(url: str, name: str) -> None:
    client = FlowMesh(url)
    await client.connect()
    await client.stream.create(T, NS, name)
    sub = client.stream.subscribe(T, NS, name, None, 0, -2, buffer_size=1)
    await sub.start()
    await client.stream.write(T, NS, name, events(5))  # fills the buffer: callback blocks
    await asyncio.sleep(0.1)
    await asyncio.wait_for(client.close(), 5)  # must not deadlock on the blocked callback
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(sub.__anext__(), 5)


async def test_concurrent_publishers_and_consumer(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.create(T, NS, name)
        producers, per = 4, 50
        async with client.stream.subscribe(T, NS, name, None, 0, -2, buffer_size=16) as sub:

            async def produce(p: int) -> None:
                for i in range(per):
                    await client.stream.write(T, NS, name, [Event(payload=f"{p}:{i}".encode())])

            async def consume() -> List[Message]:
                out: List[Message] = []
                while len(out) < producers * per:
                    out.append(await next_message(sub, 10))
                return out

            consumer = asyncio.ensure_future(consume())
            await asyncio.gather(*(produce(p) for p in range(producers)))
            got = await consumer
        assert [m.offset for m in got] == list(range(producers * per))
        payloads = {m.payload.decode() for m in got}
        assert payloads == {f"{p}:{i}" for p in range(producers) for i in range(per)}
        for p in range(producers):  # each producer's order is kept
            mine = [
                int(m.payload.decode().split(":")[1]) for m in got if m.payload.startswith(f"{p}:".encode())
            ]
            assert mine == list(range(per))


async def test_drop_subscription_with_blocked_callback(url: str, name: str) -> None:
    """Garbage-collecting an iterator whose callback waits on a full buffer
    must unblock it and unsubscribe (no deadlock, no leak)."""
    async with FlowMesh(url) as client:
        await client.stream.create(T, NS, name)
        core = client._core()
        sub = client.stream.subscribe(T, NS, name, None, 0, -2, buffer_size=1)
        await sub.start()
        await client.stream.write(T, NS, name, events(10))
        await asyncio.sleep(0.2)  # the dispatcher is now blocked in put()
        del sub
        gc.collect()
        assert not core.subs
        await client.stream.write(T, NS, name, events(3))  # still healthy


async def test_break_out_of_async_for_then_gc(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(5))
        core = client._core()
        async for msg in client.stream.subscribe(T, NS, name, None, 0, 0, buffer_size=2):
            if msg.offset == 1:
                break
        gc.collect()
        assert not core.subs


async def test_callback_thread_state_is_freed_after_unsubscribe(name: str) -> None:
    # KV watches are delivered by library-thread callbacks.
    async with FlowMesh("mem://") as client:
        sub = client.kv.watch(T, NS, name)
        await sub.start()
        await client.kv.set(T, NS, name, "k", b"v")
        await next_message(sub)
        state = sub._state
        assert state is not None
        await sub.aclose()
        assert state.pin._tstate is None  # deleted once the thread was joined


def test_subscriptions_work_without_thread_pinning(tmp_path: Any) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "no_pin.py"
    script.write_text(
        "import asyncio\n"
        "from flowmesh import FlowMesh\n"
        "async def main():\n"
        "    async with FlowMesh('mem://') as c:\n"
        "        n = 0\n"
        "        async with c.kv.watch('a', 'b', 's') as w:\n"
        "            for i in range(5):\n"
        "                await c.kv.set('a', 'b', 's', f'k{i}', b'x')\n"
        "            async for m in w:\n"
        "                n += 1\n"
        "                if n == 5:\n"
        "                    break\n"
        "        print('got', n)\n"
        "asyncio.run(main())\n"
    )
    root = str(Path(__file__).resolve().parent.parent)
    env = dict(os.environ, FLOWMESH_PIN_THREADS="0", PYTHONPATH=root)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "got 5"


async def test_subscribe_all_partitions(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.create(T, NS, name, partitions=3)
        batch = [
            Event(payload=f"{k}:{i}".encode(), key=f"key-{k}".encode()) for i in range(10) for k in range(4)
        ]
        await client.stream.write(T, NS, name, batch)
        got: List[Message] = []
        async with client.stream.subscribe(T, NS, name, None, partition=None, start_offset=0) as sub:
            while len(got) < len(batch):
                got.append(await next_message(sub))
        assert sorted(m.payload for m in got) == sorted(e.payload for e in batch)
        assert len({m.partition for m in got}) > 1  # 4 keys over 3 partitions
        for k in range(4):  # one key stays on one partition, in order
            mine = [m for m in got if m.key == f"key-{k}".encode()]
            assert len({m.partition for m in mine}) == 1
            assert [int(m.payload.split(b":")[1]) for m in mine] == list(range(10))


async def test_auto_commit_commits_what_the_iterator_returned(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, NS, name, events(5))
        sub = client.stream.subscribe(T, NS, name, "g", 0, -1, auto_commit=True)
        assert [(await next_message(sub)).offset for _ in range(3)] == [0, 1, 2]
        await sub.aclose()
        assert await client.stream.get_offset(T, NS, name, "g", 0) == 2
        # Resumes after it; breaking out of async for (then GC) commits too.
        async for msg in client.stream.subscribe(T, NS, name, "g", 0, -1, auto_commit=True):
            assert msg.offset == 3
            break
        gc.collect()
        for _ in range(100):
            if await client.stream.get_offset(T, NS, name, "g", 0) == 3:
                break
            await asyncio.sleep(0.02)
        assert await client.stream.get_offset(T, NS, name, "g", 0) == 3
        # Without auto_commit nothing is committed.
        sub = client.stream.subscribe(T, NS, name, "g", 0, -1)
        assert (await next_message(sub)).offset == 4
        await sub.aclose()
        assert await client.stream.get_offset(T, NS, name, "g", 0) == 3


async def test_auto_commit_at_client_close(shared_url: str, name: str) -> None:
    client = FlowMesh(shared_url)
    await client.connect()
    await client.stream.write(T, NS, name, events(4))
    sub = client.stream.subscribe(T, NS, name, "g", 0, -1, auto_commit=True)
    assert [(await next_message(sub)).offset for _ in range(2)] == [0, 1]
    await client.close()
    async with FlowMesh(shared_url) as again:
        assert await again.stream.get_offset(T, NS, name, "g", 0) == 1


async def test_cancelled_consumer_loses_no_message(url: str, name: str) -> None:
    """A task cancelled while a fetch is in flight: the batch that fetch
    brings afterwards is kept for the next iteration."""
    async with FlowMesh(url) as client:
        async with client.stream.subscribe(T, NS, name, None, 0, -2) as sub:
            got: List[int] = []
            for i in range(3):
                waiter = asyncio.ensure_future(sub.__anext__())
                await asyncio.sleep(0.02)  # the fetch is now waiting in the library
                waiter.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await waiter
                await client.stream.write(T, NS, name, events(1, f"m{i}"))
                got.append((await next_message(sub)).offset)
        assert got == [0, 1, 2]
