"""Queues: enqueue with priority and delay, reserve/ack, nack, batch receive, DLQ.

Runs with no server: FLOWMESH_URL defaults to mem:// (embedded, in memory).
"""

import asyncio
import os
from datetime import timedelta

from flowmesh import FlowMesh

URL = os.environ.get("FLOWMESH_URL", "mem://")
Q = ("shop", "prod", "emails")


async def main() -> None:
    async with FlowMesh(endpoint=URL) as client:
        for i in range(3):
            job_id, seq = await client.queue.enqueue(
                *Q, f'{{"mail": {i}}}'.encode(), headers={"kind": "welcome"}
            )
            print(f"enqueued job {job_id}")
        await client.queue.enqueue(*Q, b'{"mail": "urgent"}', priority=10)
        await client.queue.enqueue(*Q, b'{"mail": "tomorrow"}', delay=timedelta(hours=24))

        stats = await client.queue.get_stats(*Q)
        print(f"pending={stats.pending_jobs} delayed={stats.delayed_jobs} in_flight={stats.in_flight_jobs}")

        job = await client.queue.reserve(*Q, visibility_timeout=timedelta(seconds=30))
        assert job is not None
        print(f"reserved first (highest priority): {job.payload!r}")
        await client.queue.ack(*Q, job.id)

        jobs = await client.queue.receive(*Q, max_jobs=10, visibility_timeout=timedelta(seconds=30))
        print(f"received a batch of {len(jobs)}")
        for j in jobs:
            await client.queue.ack(*Q, j.id)

        # A job that keeps failing ends in the dead-letter queue.
        await client.queue.set_retry_policy(*Q, max_attempts=1)
        await client.queue.enqueue(*Q, b'{"mail": "broken"}')
        failing = await client.queue.reserve(*Q, long_poll_timeout=timedelta(seconds=1))
        assert failing is not None
        await client.queue.nack(*Q, failing.id)
        dead = await client.queue.list_dlq_jobs(*Q)
        print(f"dead letters: {[d.payload for d in dead]}")
        await client.queue.replay_dlq_job(*Q, dead[0].id)
        again = await client.queue.reserve(*Q, long_poll_timeout=timedelta(seconds=1))
        assert again is not None
        print(f"replayed and reserved again: {again.payload!r}")
        await client.queue.ack(*Q, again.id)


if __name__ == "__main__":
    asyncio.run(main())
