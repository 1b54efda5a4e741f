"""Queues: jobs with delay, priority, visibility timeout and a DLQ (``client.queue``)."""

from __future__ import annotations

import ctypes
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, TypeVar, Union

from . import _lifecycle
from . import _native as n
from ._core import Call
from ._errors import FlowMeshClosedError, FlowMeshInvalidArgumentError, check
from ._native import lib
from ._util import Duration, millis, non_negative, payload_bytes, resource
from .types import Job, QueueStats, RetryPolicy

if TYPE_CHECKING:
    from .client import FlowMesh

T = TypeVar("T")
JobId = Union[str, int]

DEFAULT_VISIBILITY_MS = 30_000
# Long polls are split into slices this long, so a cancelled or closing
# call gives its pool thread back quickly instead of after the whole wait.
POLL_SLICE_MS = 200


def _job_id(job_id: JobId) -> int:
    try:
        value = int(job_id)
    except (TypeError, ValueError):
        raise FlowMeshInvalidArgumentError(
            f"job_id must be an int or a numeric str, got {job_id!r}"
        ) from None
    return non_negative(value, "job_id")


def _job(ptr: Any, queue: str) -> Job:
    """Copy a borrowed fm_job."""
    size = ctypes.c_size_t()
    data = lib().fm_job_payload(ptr, ctypes.byref(size))
    job_id = int(lib().fm_job_id(ptr))
    return Job(
        id=str(job_id),
        seq=job_id,
        resource_path=queue,
        payload=n.string_at(data, size.value),
        headers=n.headers_dict(lib().fm_job_headers(ptr), lib().fm_job_headers_len(ptr)),
        attempts=int(lib().fm_job_attempt(ptr)),
        priority=int(lib().fm_job_priority(ptr)),
    )


def _jobs(ptr: Any, queue: str) -> List[Job]:
    try:
        count = lib().fm_jobs_len(ptr)
        return [_job(lib().fm_jobs_get(ptr, i), queue) for i in range(count)]
    finally:
        lib().fm_jobs_free(ptr)


def _long_poll(call: Call, wait_ms: int, attempt: Callable[[int], Optional[T]]) -> Optional[T]:
    """Call ``attempt(slice_ms)`` until it returns something, the wait is
    over, or nobody waits for the answer any more."""
    deadline = time.monotonic() + wait_ms / 1000.0
    while True:
        remaining_ms = max(0, int((deadline - time.monotonic()) * 1000))
        got = attempt(min(remaining_ms, POLL_SLICE_MS))
        if got is not None:
            return got
        if call.closing:
            raise FlowMeshClosedError("the client was closed during the wait")
        if remaining_ms <= POLL_SLICE_MS or call.abandoned:
            return None


class QueueClient:
    def __init__(self, client: "FlowMesh") -> None:
        self._client = client

    async def enqueue(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        payload: bytes,
        delay: Optional[Duration] = None,
        headers: Optional[Dict[str, str]] = None,
        priority: int = 0,
    ) -> Tuple[str, int]:
        """Add a job; returns (job id as str, job id as int).

        Higher ``priority`` jobs are reserved first; ``delay`` hides the job
        for that long."""
        name = resource(tenant, namespace, queue)
        msg = n.OutMsg(payload_bytes(payload), None, headers)
        delay_ms = millis(delay, label="delay")
        if not isinstance(priority, int) or not -(2**31) <= priority < 2**31:
            raise FlowMeshInvalidArgumentError("priority must be a 32-bit int")

        def work(h: int, _: Call) -> Tuple[str, int]:
            out = ctypes.c_uint64()
            check(
                lib().fm_queue_enqueue(
                    h, name, ctypes.byref(msg.fill(n.fm_msg())), delay_ms, priority, ctypes.byref(out)
                ),
                "queue.enqueue",
            )
            return str(out.value), int(out.value)

        return await self._client._core().run(work)

    async def reserve(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        visibility_timeout: Optional[Duration] = None,
        long_poll_timeout: Optional[Duration] = None,
    ) -> Optional[Job]:
        """Reserve the next job, waiting up to ``long_poll_timeout`` (default:
        no wait); None if there is none. Unacked jobs come back after
        ``visibility_timeout`` (default 30 s). Cancelling the awaiting task
        abandons the wait; a job reserved meanwhile is nacked back."""
        name = resource(tenant, namespace, queue)
        qname = name.decode()
        vis_ms = millis(visibility_timeout, DEFAULT_VISIBILITY_MS, "visibility_timeout")
        wait_ms = millis(long_poll_timeout, 0, "long_poll_timeout")

        def work(h: int, call: Call) -> Optional[Job]:
            def attempt(slice_ms: int) -> Optional[Job]:
                out = ctypes.c_void_p()
                check(
                    lib().fm_queue_reserve(h, name, vis_ms, slice_ms, ctypes.byref(out)),
                    "queue.reserve",
                )
                if not out.value:
                    return None
                try:
                    return _job(out.value, qname)
                finally:
                    lib().fm_job_free(out.value)

            return _long_poll(call, wait_ms, attempt)

        def hand_back(h: int, job: Optional[Job]) -> None:
            if job is not None:
                lib().fm_queue_nack(h, name, job.seq, 0)

        return await self._client._core().run(work, hand_back)

    async def receive(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        max_jobs: int = 1,
        visibility_timeout: Optional[Duration] = None,
        long_poll_timeout: Optional[Duration] = None,
    ) -> List[Job]:
        """Reserve up to ``max_jobs`` at once (waits only for the first)."""
        name = resource(tenant, namespace, queue)
        qname = name.decode()
        if non_negative(max_jobs, "max_jobs") == 0:
            raise FlowMeshInvalidArgumentError("max_jobs must be at least 1")
        vis_ms = millis(visibility_timeout, DEFAULT_VISIBILITY_MS, "visibility_timeout")
        wait_ms = millis(long_poll_timeout, 0, "long_poll_timeout")

        def work(h: int, call: Call) -> List[Job]:
            def attempt(slice_ms: int) -> Optional[List[Job]]:
                out = ctypes.c_void_p()
                check(
                    lib().fm_queue_receive(h, name, max_jobs, vis_ms, slice_ms, ctypes.byref(out)),
                    "queue.receive",
                )
                jobs = _jobs(out.value, qname) if out.value else []
                return jobs or None

            return _long_poll(call, wait_ms, attempt) or []

        def hand_back(h: int, jobs: List[Job]) -> None:
            for job in jobs:
                lib().fm_queue_nack(h, name, job.seq, 0)

        return await self._client._core().run(work, hand_back)

    async def ack(self, tenant: str, namespace: str, queue: str, job_id: JobId) -> None:
        name = resource(tenant, namespace, queue)
        jid = _job_id(job_id)

        def work(h: int, _: Call) -> None:
            check(lib().fm_queue_ack(h, name, jid), "queue.ack")

        await self._client._core().run(work)

    async def nack(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        job_id: JobId,
        delay: Optional[Duration] = None,
    ) -> None:
        """Give a job back for redelivery after ``delay`` (subject to the
        retry policy: past max attempts it goes to the DLQ)."""
        name = resource(tenant, namespace, queue)
        jid = _job_id(job_id)
        delay_ms = millis(delay, label="delay")

        def work(h: int, _: Call) -> None:
            check(lib().fm_queue_nack(h, name, jid, delay_ms), "queue.nack")

        await self._client._core().run(work)

    async def extend(
        self, tenant: str, namespace: str, queue: str, job_id: JobId, visibility: Duration
    ) -> None:
        """Give a reserved job ``visibility`` more time from now before it is
        redelivered (at least 1 ms). FlowMeshConflictError if the job is no
        longer reserved (its visibility ran out, it was nacked);
        FlowMeshNotFoundError if the queue has no such job."""
        name = resource(tenant, namespace, queue)
        jid = _job_id(job_id)
        ms = millis(visibility, label="visibility")
        if ms < 1:
            raise FlowMeshInvalidArgumentError("visibility must be at least 1 ms")

        def work(h: int, _: Call) -> None:
            check(lib().fm_queue_extend(h, name, jid, ms), "queue.extend")

        await self._client._core().run(work)

    async def list(self, tenant: str, namespace: str, prefix: str = "") -> List[str]:
        """Names of the namespace's queues starting with ``prefix``, sorted."""
        work = _lifecycle.list_names("fm_queues_list", "queue.list", tenant, namespace, prefix)
        result: List[str] = await self._client._core().run(work)
        return result

    async def delete(self, tenant: str, namespace: str, queue: str) -> None:
        """Delete a queue with every job (pending, delayed, in flight, dead);
        FlowMeshNotFoundError if there is none."""
        await self._client._core().run(_lifecycle.delete("fm_queue_delete", "queue.delete", tenant, namespace, queue))

    async def purge(self, tenant: str, namespace: str, queue: str) -> int:
        """Remove the pending and delayed jobs; returns how many went. Jobs in
        flight are left to their workers, dead jobs stay in the DLQ."""
        work = _lifecycle.purge("fm_queue_purge", "queue.purge", tenant, namespace, queue)
        removed: int = await self._client._core().run(work)
        return removed

    async def get_stats(self, tenant: str, namespace: str, queue: str) -> QueueStats:
        name = resource(tenant, namespace, queue)

        def work(h: int, _: Call) -> QueueStats:
            out = n.fm_queue_stats()
            check(lib().fm_queue_get_stats(h, name, ctypes.byref(out)), "queue.get_stats")
            return QueueStats(
                pending_jobs=int(out.pending),
                in_flight_jobs=int(out.in_flight),
                delayed_jobs=int(out.delayed),
                dlq_jobs=int(out.dead),
            )

        return await self._client._core().run(work)

    async def set_retry_policy(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        policy: Optional[RetryPolicy] = None,
        *,
        max_attempts: Optional[int] = None,
        initial_backoff: Optional[Duration] = None,
        max_backoff: Optional[Duration] = None,
        backoff_multiplier: Optional[float] = None,
    ) -> None:
        """Set the retry policy from a RetryPolicy and/or keyword overrides."""
        name = resource(tenant, namespace, queue)
        base = policy or RetryPolicy()
        attempts = non_negative(
            max_attempts if max_attempts is not None else base.max_attempts, "max_attempts"
        )
        initial_ms = millis(
            initial_backoff
            if initial_backoff is not None
            else timedelta(seconds=base.initial_backoff_seconds),
            label="initial_backoff",
        )
        max_ms = millis(
            max_backoff if max_backoff is not None else timedelta(seconds=base.max_backoff_seconds),
            label="max_backoff",
        )
        multiplier = float(backoff_multiplier if backoff_multiplier is not None else base.backoff_multiplier)

        def work(h: int, _: Call) -> None:
            check(
                lib().fm_queue_set_retry_policy(h, name, attempts, initial_ms, max_ms, multiplier),
                "queue.set_retry_policy",
            )

        await self._client._core().run(work)

    async def get_retry_policy(self, tenant: str, namespace: str, queue: str) -> RetryPolicy:
        name = resource(tenant, namespace, queue)

        def work(h: int, _: Call) -> RetryPolicy:
            out = n.fm_retry_policy()
            check(lib().fm_queue_get_retry_policy(h, name, ctypes.byref(out)), "queue.get_retry_policy")
            return RetryPolicy(
                max_attempts=int(out.max_attempts),
                initial_backoff_seconds=out.initial_backoff_ms / 1000.0,
                max_backoff_seconds=out.max_backoff_ms / 1000.0,
                backoff_multiplier=float(out.multiplier),
            )

        return await self._client._core().run(work)

    async def list_dlq_jobs(self, tenant: str, namespace: str, queue: str, max_jobs: int = 100) -> List[Job]:
        name = resource(tenant, namespace, queue)
        qname = name.decode()
        non_negative(max_jobs, "max_jobs")

        def work(h: int, _: Call) -> List[Job]:
            out = ctypes.c_void_p()
            check(lib().fm_queue_dlq_list(h, name, max_jobs, ctypes.byref(out)), "queue.list_dlq_jobs")
            return _jobs(out.value, qname) if out.value else []

        return await self._client._core().run(work)

    async def replay_dlq_job(self, tenant: str, namespace: str, queue: str, job_id: JobId) -> Tuple[str, int]:
        """Move a dead job back to the queue; returns its id (unchanged)."""
        name = resource(tenant, namespace, queue)
        jid = _job_id(job_id)

        def work(h: int, _: Call) -> Tuple[str, int]:
            check(lib().fm_queue_dlq_replay(h, name, jid), "queue.replay_dlq_job")
            return str(jid), jid

        return await self._client._core().run(work)

    async def replay_all_dlq_jobs(
        self,
        tenant: str,
        namespace: str,
        queue: str,
        header_key: Optional[str] = None,
        header_value: Optional[str] = None,
    ) -> int:
        """Replay every dead job (only those with header_key == header_value
        when header_key is given); returns how many were replayed."""
        name = resource(tenant, namespace, queue)
        key = header_key.encode() if header_key is not None else None
        value = (header_value or "").encode() if header_key is not None else None

        def work(h: int, _: Call) -> int:
            out = ctypes.c_uint64()
            check(
                lib().fm_queue_dlq_replay_all(h, name, key, value, ctypes.byref(out)),
                "queue.replay_all_dlq_jobs",
            )
            return int(out.value)

        return await self._client._core().run(work)
