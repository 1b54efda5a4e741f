"""Queues: enqueue, reserve, receive, ack/nack, retry policy, DLQ, cancellation."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta
from typing import List, Set

import pytest

from flowmesh import (
    FlowMesh,
    FlowMeshInvalidArgumentError,
    FlowMeshNotFoundError,
    FlowMeshTooLargeError,
    Job,
    RetryPolicy,
)

T, NS = "acme", "test"


async def test_enqueue_reserve_ack(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        job_id, seq = await client.queue.enqueue(T, NS, name, b'{"task": 1}', headers={"priority": "high"})
        assert job_id == str(seq) and seq >= 1
        job_id2, seq2 = await client.queue.enqueue(T, NS, name, b"\x00two")
        assert seq2 > seq

        stats = await client.queue.get_stats(T, NS, name)
        assert (stats.pending_jobs, stats.in_flight_jobs, stats.delayed_jobs, stats.dlq_jobs) == (2, 0, 0, 0)
        assert stats.total_jobs == 2

        job = await client.queue.reserve(T, NS, name, visibility_timeout=timedelta(seconds=30))
        assert isinstance(job, Job)
        assert (job.id, job.seq) == (job_id, seq)
        assert job.payload == b'{"task": 1}'
        assert job.headers == {"priority": "high"}
        assert job.attempts == 1
        assert (await client.queue.get_stats(T, NS, name)).in_flight_jobs == 1

        await client.queue.ack(T, NS, name, job.id)  # the str id, as the documented API passes it
        job2 = await client.queue.reserve(T, NS, name)
        assert job2 is not None and job2.payload == b"\x00two"
        await client.queue.ack(T, NS, name, job2.seq)  # or the int
        stats = await client.queue.get_stats(T, NS, name)
        assert stats.pending_jobs == stats.in_flight_jobs == 0
        assert await client.queue.reserve(T, NS, name) is None


async def test_priority_and_delay(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.queue.enqueue(T, NS, name, b"low", priority=0)
        await client.queue.enqueue(T, NS, name, b"high", priority=10)
        await client.queue.enqueue(T, NS, name, b"later", delay=timedelta(milliseconds=400), priority=99)
        stats = await client.queue.get_stats(T, NS, name)
        assert (stats.pending_jobs, stats.delayed_jobs) == (2, 1)
        first = await client.queue.reserve(T, NS, name)
        second = await client.queue.reserve(T, NS, name)
        assert first is not None and second is not None
        assert (first.payload, first.priority) == (b"high", 10)
        assert second.payload == b"low"
        assert await client.queue.reserve(T, NS, name) is None  # "later" still hidden
        later = await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=5))
        assert later is not None and later.payload == b"later"


async def test_long_poll_gets_job_enqueued_meanwhile(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        started = time.monotonic()
        waiting = asyncio.ensure_future(
            client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=10))
        )
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await client.queue.enqueue(T, NS, name, b"wake")
        job = await waiting
        assert job is not None and job.payload == b"wake"
        assert time.monotonic() - started < 5

        started = time.monotonic()
        assert await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(milliseconds=500)) is None
        assert time.monotonic() - started >= 0.45


async def test_cancel_long_poll_reserve(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        task = asyncio.ensure_future(
            client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=30))
        )
        await asyncio.sleep(0.3)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert time.monotonic() - started < 0.5  # the loop was never blocked
        # The abandoned call must not keep the job: another reserve gets it.
        await client.queue.enqueue(T, NS, name, b"after-cancel")
        job = await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=5))
        assert job is not None and job.payload == b"after-cancel"
        await client.queue.ack(T, NS, name, job.id)
        # And close does not wait for the 30 s long poll.
    assert time.monotonic() - started < 5


async def test_cancel_with_wait_for(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(
                client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=30)), 0.3
            )
        assert await client.health_check()


async def test_nack_and_visibility_timeout(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.queue.enqueue(T, NS, name, b"retry-me")
        job = await client.queue.reserve(T, NS, name)
        assert job is not None and job.attempts == 1
        await client.queue.nack(T, NS, name, job.id)
        again = await client.queue.reserve(T, NS, name, visibility_timeout=timedelta(milliseconds=300))
        assert again is not None and again.seq == job.seq and again.attempts == 2
        # Not acked within the visibility timeout: delivered once more.
        third = await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=5))
        assert third is not None and third.seq == job.seq and third.attempts == 3

        await client.queue.nack(T, NS, name, third.id, delay=timedelta(milliseconds=300))
        assert (await client.queue.get_stats(T, NS, name)).delayed_jobs == 1
        assert await client.queue.reserve(T, NS, name) is None


async def test_receive_batch(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        for i in range(5):
            await client.queue.enqueue(T, NS, name, f"j{i}".encode())
        jobs = await client.queue.receive(T, NS, name, max_jobs=3, visibility_timeout=timedelta(seconds=30))
        assert [j.payload for j in jobs] == [b"j0", b"j1", b"j2"]
        rest = await client.queue.receive(T, NS, name, max_jobs=10)
        assert [j.payload for j in rest] == [b"j3", b"j4"]
        assert await client.queue.receive(T, NS, name, max_jobs=10) == []
        for j in jobs + rest:
            await client.queue.ack(T, NS, name, j.id)
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.queue.receive(T, NS, name, max_jobs=0)


async def test_retry_policy_and_dlq(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.queue.set_retry_policy(
            T,
            NS,
            name,
            RetryPolicy(
                max_attempts=2, initial_backoff_seconds=0.0, max_backoff_seconds=1.0, backoff_multiplier=1.5
            ),
        )
        policy = await client.queue.get_retry_policy(T, NS, name)
        assert policy.max_attempts == 2
        assert policy.max_backoff_seconds == pytest.approx(1.0)
        assert policy.backoff_multiplier == pytest.approx(1.5)

        _, seq = await client.queue.enqueue(T, NS, name, b"doomed", headers={"kind": "a"})
        await client.queue.enqueue(T, NS, name, b"doomed-b", headers={"kind": "b"})
        for _ in range(2):
            for _ in range(2):
                job = await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=5))
                assert job is not None
                await client.queue.nack(T, NS, name, job.id)
        dead = await client.queue.list_dlq_jobs(T, NS, name)
        assert sorted(j.payload for j in dead) == [b"doomed", b"doomed-b"]
        assert (await client.queue.get_stats(T, NS, name)).dlq_jobs == 2

        assert await client.queue.replay_dlq_job(T, NS, name, str(seq)) == (str(seq), seq)
        job = await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(seconds=5))
        assert job is not None and job.payload == b"doomed"
        assert job.seq == seq  # a replayed job keeps its id
        await client.queue.ack(T, NS, name, job.id)

        assert await client.queue.replay_all_dlq_jobs(T, NS, name, "kind", "b") == 1
        assert await client.queue.list_dlq_jobs(T, NS, name) == []


async def test_retry_policy_keywords(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.queue.set_retry_policy(
            T,
            NS,
            name,
            max_attempts=7,
            initial_backoff=timedelta(milliseconds=250),
            max_backoff=timedelta(seconds=9),
        )
        policy = await client.queue.get_retry_policy(T, NS, name)
        assert policy.max_attempts == 7
        assert policy.initial_backoff_seconds == pytest.approx(0.25)
        assert policy.max_backoff_seconds == pytest.approx(9.0)


async def test_ack_unknown_job_is_not_found(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        _, seq = await client.queue.enqueue(T, NS, name, b"once")
        job = await client.queue.reserve(T, NS, name)
        assert job is not None
        await client.queue.ack(T, NS, name, job.id)
        with pytest.raises(FlowMeshNotFoundError) as info:
            await client.queue.ack(T, NS, name, job.id)  # already acked
        assert info.value.code == "FM_ERR_NOT_FOUND" and str(seq) in info.value.details
        with pytest.raises(FlowMeshNotFoundError):
            await client.queue.ack(T, NS, name, seq + 1000)
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.queue.ack(T, NS, name, "not-a-number")


async def test_queue_payload_too_large(url: str, name: str) -> None:
    async with FlowMesh(url, options={"max_payload_bytes": "100"}) as client:
        with pytest.raises(FlowMeshTooLargeError):
            await client.queue.enqueue(T, NS, name, b"x" * 101)


async def test_concurrent_producers_and_workers(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        total, producers, workers = 120, 3, 4
        done: List[int] = []
        seen: Set[bytes] = set()

        async def produce(p: int) -> None:
            for i in range(total // producers):
                await client.queue.enqueue(T, NS, name, f"{p}-{i}".encode())

        async def work() -> None:
            while len(done) < total:
                job = await client.queue.reserve(T, NS, name, long_poll_timeout=timedelta(milliseconds=200))
                if job is None:
                    continue
                assert job.payload not in seen, "delivered twice"
                seen.add(job.payload)
                await client.queue.ack(T, NS, name, job.id)
                done.append(job.seq)

        await asyncio.gather(*(produce(p) for p in range(producers)), *(work() for _ in range(workers)))
        assert len(done) == total and len(set(done)) == total
        assert seen == {f"{p}-{i}".encode() for p in range(producers) for i in range(total // producers)}
        stats = await client.queue.get_stats(T, NS, name)
        assert stats.pending_jobs == stats.in_flight_jobs == 0
