"""Resource lifecycle: list, delete and purge streams, queues and buckets;
extend a reserved job; update a stream's retention."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from flowmesh import (
    Event,
    FlowMesh,
    FlowMeshConflictError,
    FlowMeshInvalidArgumentError,
    FlowMeshNotFoundError,
)

T = "acme"


@pytest.fixture
def ns() -> str:
    """A namespace of its own, so listings see only this test's resources
    (the broker is shared by the session)."""
    return f"lc-{uuid.uuid4().hex[:10]}"


async def test_streams_list_purge_delete(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        assert await client.stream.list(T, ns) == []
        for name in ("orders", "orders-eu", "users"):
            await client.stream.write(T, ns, name, [Event(payload=b"x")] * 3)
        assert await client.stream.list(T, ns) == ["orders", "orders-eu", "users"]
        assert await client.stream.list(T, ns, prefix="orders") == ["orders", "orders-eu"]
        assert await client.stream.list(T, ns, prefix="none") == []

        assert await client.stream.purge(T, ns, "orders") == 3
        assert await client.stream.read(T, ns, "orders", 0, 10) == []
        # Offsets continue after a purge.
        assert await client.stream.write(T, ns, "orders", [Event(payload=b"y")]) == [3]
        assert await client.stream.purge(T, ns, "orders") == 1

        await client.stream.delete(T, ns, "orders-eu")
        assert await client.stream.list(T, ns) == ["orders", "users"]
        with pytest.raises(FlowMeshNotFoundError) as info:
            await client.stream.delete(T, ns, "orders-eu")
        assert info.value.code == "FM_ERR_NOT_FOUND"
        with pytest.raises(FlowMeshNotFoundError):
            await client.stream.purge(T, ns, "missing")
        # A later write creates it again, empty.
        assert await client.stream.write(T, ns, "orders-eu", [Event(payload=b"z")]) == [0]


async def test_stream_delete_ends_subscription(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.write(T, ns, "s", [Event(payload=b"a")])
        async with client.stream.subscribe(T, ns, "s", start_offset=0) as sub:
            first = await asyncio.wait_for(sub.__anext__(), 10)
            assert first.payload == b"a"
            await client.stream.delete(T, ns, "s")
            with pytest.raises(FlowMeshNotFoundError):
                # Bounded: the feed ends well within this on a loaded machine.
                await asyncio.wait_for(sub.__anext__(), 30)


async def test_stream_update(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        await client.stream.create(T, ns, "s", partitions=1)
        await client.stream.update(T, ns, "s", partitions=3, max_messages=100)
        assert await client.stream.partitions(T, ns, "s") == 3
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.stream.update(T, ns, "s", partitions=2)  # may only grow
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.stream.update(T, ns, "s")  # nothing to change
        with pytest.raises(FlowMeshNotFoundError):
            await client.stream.update(T, ns, "missing", max_age=60)


async def test_queues_list_purge_delete(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        for i in range(4):
            await client.queue.enqueue(T, ns, "jobs", f"j{i}".encode())
        await client.queue.enqueue(T, ns, "jobs", b"later", delay=3600)
        await client.queue.enqueue(T, ns, "other", b"x")
        assert await client.queue.list(T, ns) == ["jobs", "other"]
        assert await client.queue.list(T, ns, prefix="j") == ["jobs"]

        held = await client.queue.reserve(T, ns, "jobs")
        assert held is not None
        # Pending and delayed go; the job in flight stays with its worker.
        assert await client.queue.purge(T, ns, "jobs") == 4
        await client.queue.ack(T, ns, "jobs", held.id)
        assert await client.queue.reserve(T, ns, "jobs") is None

        await client.queue.delete(T, ns, "other")
        assert await client.queue.list(T, ns) == ["jobs"]
        with pytest.raises(FlowMeshNotFoundError):
            await client.queue.delete(T, ns, "other")
        with pytest.raises(FlowMeshNotFoundError):
            await client.queue.purge(T, ns, "other")


async def test_queue_extend(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        await client.queue.enqueue(T, ns, "q", b"long job")
        job = await client.queue.reserve(T, ns, "q", visibility_timeout=0.3)
        assert job is not None
        await client.queue.extend(T, ns, "q", job.id, 120)
        await asyncio.sleep(0.6)  # past the first visibility: extended, still ours
        assert await client.queue.reserve(T, ns, "q") is None
        await client.queue.extend(T, ns, "q", job.seq, 0.2)
        await asyncio.sleep(0.6)
        # Its visibility ran out: no longer reserved by anyone.
        with pytest.raises(FlowMeshConflictError) as info:
            await client.queue.extend(T, ns, "q", job.id, 10_000)
        assert info.value.code == "FM_ERR_CONFLICT"
        again = await client.queue.reserve(T, ns, "q", long_poll_timeout=10)
        assert again is not None and again.seq == job.seq
        await client.queue.ack(T, ns, "q", again.id)
        with pytest.raises(FlowMeshNotFoundError):
            await client.queue.extend(T, ns, "q", job.id, 10_000)
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.queue.extend(T, ns, "q", job.id, 0)


async def test_queue_extend_conflict_after_nack(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        await client.queue.enqueue(T, ns, "q", b"job")
        job = await client.queue.reserve(T, ns, "q")
        assert job is not None
        await client.queue.nack(T, ns, "q", job.id, delay=3600)
        with pytest.raises(FlowMeshConflictError) as info:
            await client.queue.extend(T, ns, "q", job.id, 1000)
        assert info.value.code == "FM_ERR_CONFLICT"


async def test_kv_buckets_list_delete(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        await client.kv.set(T, ns, "config", "a", b"1")
        await client.kv.set(T, ns, "cache", "b", b"2")
        assert await client.kv.list_buckets(T, ns) == ["cache", "config"]
        assert await client.kv.list_buckets(T, ns, prefix="con") == ["config"]
        await client.kv.delete_bucket(T, ns, "cache")
        assert await client.kv.list_buckets(T, ns) == ["config"]
        with pytest.raises(FlowMeshNotFoundError):
            await client.kv.delete_bucket(T, ns, "cache")
        with pytest.raises(FlowMeshNotFoundError):
            await client.kv.get(T, ns, "cache", "b")  # its keys went with it


async def test_bad_arguments(url: str, ns: str) -> None:
    async with FlowMesh(url) as client:
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.stream.list(T, ns, prefix="a/b")
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.queue.list(T, "", prefix="")
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.kv.list_buckets(T, ns, prefix="bad prefix!")
