"""The flowmesh Python client's documented snippets, unchanged apart from the endpoint
(and the resource name, unique per test), and this package's example programs.

The snippets open a new client per step, so they run on engines whose data
outlives a client (file://, the broker); mem:// is private to one client."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any, List

import pytest

from flowmesh import Event, FlowMesh, FlowMeshError, FlowMeshNotFoundError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


# ---- documented snippets --------------------------------------------------------------
async def test_documented_client_creation(url: str) -> None:
    async with FlowMesh(endpoint=url) as client:
        await client.health_check()

    client = FlowMesh(endpoint=url)
    await client.connect()
    try:
        await client.health_check()
    finally:
        await client.close()


async def test_documented_streams(shared_url: str, name: str) -> None:
    processed: List[Any] = []

    def process_message(msg: Any) -> None:
        processed.append(msg)

    async with FlowMesh(endpoint=shared_url) as client:
        events = [
            Event(
                payload=b'{"order_id": "123", "amount": 99.99}',
                headers={"event_type": "order.created"},
            ),
        ]

        offsets = await client.stream.write("tenant", "namespace", name, events)
        print(f"Events written at offsets: {offsets}")
        assert offsets == [0]

    async with FlowMesh(endpoint=shared_url) as client:
        messages = await client.stream.read(
            "tenant", "namespace", name,
            partition=0, offset=0, max_messages=10
        )

        for msg in messages:
            print(f"Offset: {msg.offset}, Payload: {msg.payload}")
        assert [m.payload for m in messages] == [b'{"order_id": "123", "amount": 99.99}']

    async with FlowMesh(endpoint=shared_url) as client:
        async def consume() -> None:
            async for msg in client.stream.subscribe(
                "tenant",
                "namespace",
                name,
                "consumer-group",
                partition=0,
                start_offset=-2,  # -2 for latest, -1 for committed
            ):
                process_message(msg)
                # Commit offset
                await client.stream.commit_offset(
                    "tenant", "namespace", name,
                    "consumer-group", 0, msg.offset
                )

        # The documented loop runs forever: let it start, publish, then stop it.
        consumer = asyncio.ensure_future(consume())
        while not client._core().subs:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        await client.stream.write("tenant", "namespace", name, [Event(payload=b"later")])
        committed = -1
        for _ in range(250):  # processed, and its commit_offset done (not cancelled midway)
            if processed:
                try:
                    committed = await client.stream.get_offset("tenant", "namespace", name, "consumer-group", 0)
                except FlowMeshNotFoundError:
                    pass
                if committed >= 0:
                    break
            await asyncio.sleep(0.02)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        assert [m.payload for m in processed] == [b"later"]
        assert committed == 1
        assert await client.stream.get_offset("tenant", "namespace", name, "consumer-group", 0) == 1


async def test_documented_queues(shared_url: str, name: str) -> None:
    processed: List[Any] = []

    async def process_job(job: Any) -> None:
        processed.append(job.payload)

    async with FlowMesh(endpoint=shared_url) as client:
        job_id, seq = await client.queue.enqueue(
            "tenant",
            "namespace",
            name,
            b'{"task": "process_order"}',
            delay=timedelta(seconds=5),  # Optional delay
            headers={"priority": "high"},
        )
        assert isinstance(job_id, str) and isinstance(seq, int)
        for i in range(3):
            await client.queue.enqueue("tenant", "namespace", name, f"now-{i}".encode())

    async with FlowMesh(endpoint=shared_url) as client:
        # Reserve a single job
        job = await client.queue.reserve(
            "tenant",
            "namespace",
            name,
            visibility_timeout=timedelta(seconds=30),
        )

        if job:
            await process_job(job)
            # Acknowledge
            await client.queue.ack("tenant", "namespace", name, job.id)

    async with FlowMesh(endpoint=shared_url) as client:
        jobs = await client.queue.receive(
            "tenant",
            "namespace",
            name,
            max_jobs=10,
            visibility_timeout=timedelta(seconds=30),
        )
        assert [j.payload for j in jobs] == [b"now-1", b"now-2"]
        for j in jobs:
            await client.queue.nack("tenant", "namespace", name, j.id)

    async def worker(client: FlowMesh) -> None:
        while True:
            job = await client.queue.reserve(
                "tenant",
                "namespace",
                name,
                visibility_timeout=timedelta(seconds=30),
                long_poll_timeout=timedelta(seconds=5),
            )

            if not job:
                continue

            try:
                await process_job(job)
                await client.queue.ack("tenant", "namespace", name, job.id)
            except Exception:
                # NACK on failure
                await client.queue.nack("tenant", "namespace", name, job.id)

    async with FlowMesh(endpoint=shared_url) as client:
        try:
            await asyncio.wait_for(worker(client), timeout=1.0)
        except asyncio.TimeoutError:
            pass

    async with FlowMesh(endpoint=shared_url) as client:
        stats = await client.queue.get_stats("tenant", "namespace", name)
        print(f"Pending: {stats.pending_jobs}, InFlight: {stats.in_flight_jobs}")
        assert processed == [b"now-0", b"now-1", b"now-2"]
        assert (stats.pending_jobs, stats.in_flight_jobs, stats.delayed_jobs) == (0, 0, 1)


async def test_documented_kv(shared_url: str, name: str) -> None:
    async with FlowMesh(endpoint=shared_url) as client:
        # Set with TTL
        await client.kv.set(
            "tenant",
            "namespace",
            name,
            "key",
            b'{"value": "data"}',
            ttl=timedelta(hours=1),
        )

        # Get
        value = await client.kv.get("tenant", "namespace", name, "key")
        assert value == b'{"value": "data"}'

    async with FlowMesh(endpoint=shared_url) as client:
        await client.kv.set("tenant", "namespace", name, "user:1", b"u")
        # List all keys
        keys = await client.kv.list_keys("tenant", "namespace", name, prefix="")

        # List keys with prefix
        user_keys = await client.kv.list_keys(
            "tenant", "namespace", name, prefix="user:"
        )
        assert (keys, user_keys) == (["key", "user:1"], ["user:1"])

    async with FlowMesh(endpoint=shared_url) as client:
        # Check if key exists
        exists = await client.kv.exists("tenant", "namespace", name, "key")

        # Delete
        await client.kv.delete("tenant", "namespace", name, "key")
        assert exists and not await client.kv.exists("tenant", "namespace", name, "key")


async def test_documented_error_handling(url: str, name: str) -> None:
    caught = ""
    async with FlowMesh(endpoint=url) as client:
        try:
            await client.stream.read("tenant", "namespace", name)
        except FlowMeshNotFoundError:
            # Handle not found
            caught = "not found"
        except FlowMeshError:
            # Handle other errors
            caught = "other"
    assert caught == "not found"


# ---- this package's examples ---------------------------------------------------------
@pytest.mark.parametrize("script", ["streams_example.py", "queues_example.py", "kv_example.py"])
def test_example_runs(script: str, url: str) -> None:
    package_root = str(EXAMPLES.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, FLOWMESH_URL=url, PYTHONPATH=path)
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
    expected = {
        "streams_example.py": ["written at offsets [0, 1]", "received offset=2", "committed=2 latest=3 lag=0"],
        "queues_example.py": ["reserved first (highest priority): b'{\"mail\": \"urgent\"}'", "received a batch of 3",
                              "dead letters: [b'{\"mail\": \"broken\"}']"],
        "kv_example.py": ["user keys: ['user:1', 'user:2']", "stale compare-and-set rejected",
                          "watch: put user:3", "watch: delete user:2", "user:2 exists: False"],
    }[script]
    for line in expected:
        assert line in proc.stdout, proc.stdout
