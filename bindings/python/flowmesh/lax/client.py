"""LaxClient: publishes with a delivery tier per message, routed to the
direct (fire-and-forget) or the acknowledged path, with retries, a
circuit breaker, bounded concurrency and Prometheus metrics."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import random
import time
import uuid
from types import TracebackType
from typing import Any, Dict, List, Mapping, Optional, Sequence, Type

from .. import _native as n
from .._core import Call
from .._errors import (
    FlowMeshClosedError,
    FlowMeshDisconnectedError,
    FlowMeshError,
    FlowMeshTimeoutError,
    FlowMeshUnavailableError,
)
from .._publish import async_publisher, inline, is_direct, publish_sync, tier_name
from ..client import FlowMesh
from .breaker import Breaker, State
from .exceptions import CircuitBreakerOpen, ConnectionError, PublishError
from .metrics import ACKED, DIRECT, Metrics, metrics_for
from .options import ClientOptions, PublishOptions, is_embedded, routes

log = logging.getLogger("flowmesh.lax")

_DEFAULT_PUBLISH = PublishOptions()
# Errors of the service or the link: retried, and counted by the breaker.
_TRANSIENT = (FlowMeshUnavailableError, FlowMeshDisconnectedError, FlowMeshTimeoutError)
_BACKOFF_INITIAL_S = 0.05
_BACKOFF_MAX_S = 2.0


def encode(data: Any) -> bytes:
    """bytes as they are, str as UTF-8, anything else as JSON."""
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    if isinstance(data, str):
        return data.encode()
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def _backoff(attempt: int) -> float:
    """Seconds before retry ``attempt + 1``: exponential, with jitter."""
    delay: float = min(_BACKOFF_MAX_S, _BACKOFF_INITIAL_S * 2.0**attempt)
    return delay * (0.5 + random.random() / 2)


def _refused_tier(e: BaseException) -> bool:
    """The engine cannot serve the replicated tier at all (it keeps one
    copy): retrying cannot help, and it is no failure of the service."""
    return isinstance(e, FlowMeshUnavailableError) and "replicated tier needs" in str(e)


class LaxClient:
    """``async with LaxClient(ClientOptions(...)) as client:`` or
    ``connect()`` / ``close()``. Not thread-safe: use it from one event loop."""

    def __init__(self, options: Optional[ClientOptions] = None) -> None:
        self.options = options or ClientOptions()
        self.options.validate()
        level = logging.getLevelName(str(self.options.log_level).upper())
        if not isinstance(level, int):
            raise ValueError(f"ClientOptions.log_level must be a logging level name, got {self.options.log_level!r}")
        log.setLevel(level)
        self.direct_url, self.acked_url = routes(self.options)
        self._pool: List[FlowMesh] = []
        self._direct: Optional[FlowMesh] = None
        self._next = itertools.count()
        self._ids = itertools.count(1)
        self._id_prefix = uuid.uuid4().hex[:16]
        self._sem: Optional[asyncio.Semaphore] = None
        self._in_flight = 0
        self._metrics: Optional[Metrics] = metrics_for(self.options.enable_metrics, self.options.metrics_prefix)
        self._breaker = Breaker(
            self.options.circuit_breaker_threshold,
            self.options.circuit_breaker_timeout,
            self._breaker_changed,
        )
        if self._metrics is not None:
            self._metrics.breaker_state(int(State.CLOSED))
        self._inline = inline(self.direct_url)
        self._closed = False

    # ---- lifetime --------------------------------------------------------------
    def _native_options(self, url: str, member: int) -> Dict[str, str]:
        opts: Dict[str, str] = {}
        if url.startswith("nats://"):
            opts["connect_timeout_ms"] = str(max(1, math.ceil(self.options.nats_connect_timeout * 1000)))
        elif not is_embedded(url):
            # Retries and the breaker are this client's (retry_attempts,
            # circuit_breaker_*): the link's own would multiply them.
            opts["max_retries"] = "0"
            opts["breaker_threshold"] = "0"
        if member > 0:
            opts["worker_threads"] = "1"  # extra pool connections need little runtime
        return opts

    async def connect(self) -> None:
        """Connect every connection of both paths; ConnectionError if one
        cannot be reached. Idempotent."""
        if self._closed:
            raise ConnectionError("the client is closed")
        if self._pool:
            return
        size = 1 if is_embedded(self.acked_url) else self.options.connection_pool_size
        workers = max(2, min(32, math.ceil(self.options.max_concurrent_publishes / size)))
        pool = [
            FlowMesh(self.acked_url, options=self._native_options(self.acked_url, i), max_workers=workers)
            for i in range(size)
        ]
        direct = pool[0] if self.direct_url == self.acked_url else FlowMesh(
            self.direct_url, options=self._native_options(self.direct_url, 0)
        )
        clients = pool if direct is pool[0] else [direct, *pool]
        bound = max(self.options.nats_connect_timeout, 5.0) + 10.0
        try:
            await asyncio.wait_for(asyncio.gather(*(c.connect() for c in clients)), bound)
        except (FlowMeshError, OSError, asyncio.TimeoutError) as e:
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
            where = self.direct_url if self.direct_url == self.acked_url else f"{self.direct_url} and {self.acked_url}"
            raise ConnectionError(f"cannot connect to {where}: {e}") from e
        self._pool, self._direct = pool, direct
        self._sem = asyncio.Semaphore(self.options.max_concurrent_publishes)
        log.info("connected: direct path %s, acknowledged path %s (%d connections)", self.direct_url, self.acked_url, size)

    async def close(self) -> None:
        """Wait for publishes in flight, then close every connection. Idempotent."""
        self._closed = True
        clients = list(self._pool)
        if self._direct is not None and self._direct not in clients:
            clients.append(self._direct)
        self._pool, self._direct = [], None
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    async def __aenter__(self) -> "LaxClient":
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self.close()

    @property
    def is_connected(self) -> bool:
        return bool(self._pool)

    @property
    def circuit_breaker_state(self) -> State:
        return self._breaker.state

    @property
    def in_flight(self) -> int:
        """Publishes running now (at most ``max_concurrent_publishes``)."""
        return self._in_flight

    # ---- publishing ------------------------------------------------------------------
    async def publish(self, subject: str, data: Any, options: Optional[PublishOptions] = None) -> str:
        """Publish ``data`` (dict/list as JSON, str as UTF-8, bytes as they
        are) on ``subject``; returns the message id, which the engine also
        uses to store a retried publish only once."""
        opts = options if options is not None else _DEFAULT_PUBLISH
        tier = tier_name(opts.tier)
        require_ack = bool(opts.require_ack)
        if not isinstance(subject, str) or not subject:
            raise ValueError(f"subject must be a non-empty str, got {subject!r}")
        timeout = self.options.publish_timeout if opts.timeout is None else float(opts.timeout)
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {opts.timeout!r}")
        message_id = f"{self._id_prefix}-{next(self._ids)}"
        msg = n.OutMsg(encode(data), None, opts.headers or None)
        sem = self._sem
        if sem is None or not self._pool:
            raise ConnectionError("the client is not connected: call connect() or use async with")
        metrics = self._metrics
        if not self._breaker.admit():
            if metrics is not None:
                metrics.count(tier, "circuit_open")
            raise CircuitBreakerOpen(
                f"publish to {subject!r} refused: the circuit breaker is open", subject=subject, message_id=message_id
            )
        direct = is_direct(tier, require_ack)
        method = DIRECT if direct else ACKED
        subject_b = subject.encode()
        started = time.perf_counter()
        try:
            attempted = 0
            if direct and self._inline and not sem.locked():
                # Fast path: sent on this thread without yielding to the loop,
                # so while it runs a permit is free and the bound holds.
                attempted = 1
                self._in_flight += 1
                try:
                    self._send_inline(subject_b, msg, tier, self._timeout_ms(timeout))
                except _TRANSIENT:
                    if self.options.retry_attempts == 0 or self._closed:
                        raise
                    attempted = -1  # retried below, holding a permit
                finally:
                    self._in_flight -= 1
            if attempted != 1:
                async with sem:
                    self._in_flight += 1
                    try:
                        await self._send(subject_b, msg, tier, require_ack, direct, timeout, message_id, max(0, -attempted))
                    finally:
                        self._in_flight -= 1
            elapsed = time.perf_counter() - started
        except FlowMeshClosedError as e:
            self._breaker.release()
            raise ConnectionError(f"publish to {subject!r}: the client is closed") from e
        except FlowMeshError as e:
            transient = isinstance(e, _TRANSIENT) and not _refused_tier(e)
            if transient:
                self._breaker.failure()
            else:
                self._breaker.release()
            if metrics is not None:
                metrics.count(tier, "failure")
            attempts = self.options.retry_attempts + 1 if transient else 1
            raise PublishError(
                f"publish to {subject!r} failed after {attempts} attempt(s): {e}",
                subject=subject,
                message_id=message_id,
                attempts=attempts,
                cause=e,
            ) from e
        except BaseException:  # cancelled, or the client closed under it
            self._breaker.release()
            raise
        self._breaker.success()
        if metrics is not None:
            metrics.success(tier, method, elapsed)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("published %s on %s (%s, %s) in %.6fs", message_id, subject, tier, method, elapsed)
        return message_id

    @staticmethod
    def _timeout_ms(timeout: float) -> int:
        return max(1, math.ceil(timeout * 1000))

    async def _send(
        self,
        subject: bytes,
        msg: "n.OutMsg",
        tier: str,
        require_ack: bool,
        direct: bool,
        timeout: float,
        message_id: str,
        done: int = 0,
    ) -> None:
        """One publish with its retries (exponential backoff with jitter);
        ``done`` attempts already failed."""
        timeout_ms = self._timeout_ms(timeout)
        retries = self.options.retry_attempts
        if done:
            await asyncio.sleep(_backoff(done - 1))
        for attempt in itertools.count(done):
            try:
                if direct:
                    await self._send_direct(subject, msg, tier, timeout_ms)
                else:
                    await self._send_acked(subject, msg, tier, require_ack, timeout, timeout_ms, message_id)
                return
            except _TRANSIENT as e:
                if attempt >= retries or self._closed or _refused_tier(e):
                    raise
                delay = _backoff(attempt)
                log.warning("publish to %s failed (%s), retry %d of %d in %.3fs", subject.decode(), e, attempt + 1, retries, delay)
                await asyncio.sleep(delay)

    def _send_inline(self, subject: bytes, msg: "n.OutMsg", tier: str, timeout_ms: int) -> None:
        """Fire-and-forget on this thread (engines that never wait on the network)."""
        fm = self._direct
        if fm is None:
            raise FlowMeshClosedError("the client is closed")
        core = fm._core()
        handle = core.enter()
        try:
            publish_sync(handle, subject, msg, tier, False, timeout_ms)
        finally:
            core.leave()

    async def _send_direct(self, subject: bytes, msg: "n.OutMsg", tier: str, timeout_ms: int) -> None:
        if self._inline:
            self._send_inline(subject, msg, tier, timeout_ms)
            return
        fm = self._direct
        if fm is None:
            raise FlowMeshClosedError("the client is closed")
        core = fm._core()
        pub = async_publisher(core)
        if pub is not None:  # e.g. through a broker: sent without a thread hop
            await pub.publish(subject, msg, tier, False, timeout_ms, None)
            return

        def work(h: int, _: Call) -> None:
            publish_sync(h, subject, msg, tier, False, timeout_ms)

        await core.run(work)

    async def _send_acked(
        self,
        subject: bytes,
        msg: "n.OutMsg",
        tier: str,
        require_ack: bool,
        timeout: float,
        timeout_ms: int,
        message_id: str,
    ) -> None:
        pool = self._pool
        if not pool:
            raise FlowMeshClosedError("the client is closed")
        fm = pool[next(self._next) % len(pool)]
        msg_id = message_id.encode()
        core = fm._core()
        pub = async_publisher(core)
        if pub is not None:  # no thread per publish; the engine enforces timeout_ms
            await pub.publish(subject, msg, tier, require_ack, timeout_ms, msg_id)
            return

        def work(h: int, _: Call) -> None:
            publish_sync(h, subject, msg, tier, require_ack, timeout_ms, msg_id)

        try:
            # The engine enforces timeout_ms; this bounds a call that hangs anyway.
            await asyncio.wait_for(core.run(work), timeout + 1.0)
        except asyncio.TimeoutError:
            raise FlowMeshTimeoutError(f"no acknowledgement within {timeout}s") from None

    async def batch_publish(
        self, messages: Sequence[Mapping[str, Any]], options: Optional[PublishOptions] = None
    ) -> Dict[str, Any]:
        """Publish each ``{"subject": ..., "data": ..., "options": PublishOptions?}``
        concurrently (within ``max_concurrent_publishes``). Returns
        ``success_count``, ``failure_count`` and ``results``: per message, in
        order, ``{"subject", "success", "message_id", "error"}``."""

        async def one(entry: Mapping[str, Any]) -> Dict[str, Any]:
            subject = entry.get("subject") if isinstance(entry, Mapping) else None
            try:
                if not isinstance(entry, Mapping) or "subject" not in entry:
                    raise ValueError("a batch entry is a dict with 'subject' and 'data'")
                sent = await self.publish(entry["subject"], entry.get("data"), entry.get("options") or options)
                return {"subject": subject, "success": True, "message_id": sent, "error": None}
            except (PublishError, ValueError, ConnectionError) as e:
                failed = getattr(e, "message_id", None) or None
                return {"subject": subject, "success": False, "message_id": failed, "error": str(e)}

        results = list(await asyncio.gather(*(one(m) for m in messages)))
        ok = sum(1 for r in results if r["success"])
        return {"success_count": ok, "failure_count": len(results) - ok, "results": results}

    # ---- internals ----------------------------------------------------------------------
    def _breaker_changed(self, state: State) -> None:
        if state is State.OPEN:
            log.error("circuit breaker open: publishes fail at once for %.1fs", self._breaker.timeout)
        else:
            log.info("circuit breaker %s", state.name.lower().replace("_", "-"))
        if self._metrics is not None:
            self._metrics.breaker_state(int(state))

    def __repr__(self) -> str:
        state = "closed" if self._closed else "connected" if self._pool else "not connected"
        return f"LaxClient(direct={self.direct_url!r}, acknowledged={self.acked_url!r}, {state})"
