"""client.stream.publish with a delivery tier, and subscriptions to
subjects with NATS wildcards, on every engine of the suite."""

from __future__ import annotations

import asyncio
import time
from typing import Any, List

import pytest

from flowmesh import FlowMesh, FlowMeshInvalidArgumentError, FlowMeshUnavailableError, Message


async def _started(client: FlowMesh, sub: Any, probe: str) -> None:
    """Publish stored probes until the subscription shows one: from then on
    it is live and memory-tier messages reach it."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        await client.stream.publish("t", "ns", probe, b"probe")
        try:
            msg = await asyncio.wait_for(sub.__anext__(), 0.5)
        except asyncio.TimeoutError:
            continue
        if msg.subject == probe:
            return
    raise AssertionError("the subscription never started")


async def _take(sub: Any, count: int, skip: str) -> List[Message]:
    got: List[Message] = []
    deadline = time.monotonic() + 10
    while len(got) < count and time.monotonic() < deadline:
        try:
            msg = await asyncio.wait_for(sub.__anext__(), max(0.01, deadline - time.monotonic()))
        except asyncio.TimeoutError:
            break
        if msg.subject != skip:
            got.append(msg)
    return got


async def test_tiers_and_wildcards(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        deep = client.stream.subscribe("t", "ns", f"{name}.>", None, None, -2).__aiter__()
        one = client.stream.subscribe("t", "ns", f"{name}.*", None, None, -2).__aiter__()
        await _started(client, deep, f"{name}.probe")
        await _started(client, one, f"{name}.probe")
        assert await client.stream.publish("t", "ns", f"{name}.user.login", b"m1", tier="memory") is None
        stored = await client.stream.publish("t", "ns", f"{name}.order", b"p1", headers={"h": "v"})
        assert isinstance(stored, int) and stored >= 1
        acked = await client.stream.publish("t", "ns", f"{name}.tick", b"m2", tier="memory", require_ack=True)
        assert acked is None
        with pytest.raises(FlowMeshUnavailableError) as refused:
            await client.stream.publish("t", "ns", f"{name}.x", b"r", tier="replicated", timeout=5)
        assert "replicated" in str(refused.value)
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.stream.publish("t", "ns", f"{name}.*", b"no wildcards in a publish", tier="memory")
        with pytest.raises(FlowMeshInvalidArgumentError):
            await client.stream.publish("t", "ns", f"{name}.a", b"x", tier="fast")

        got_deep = await _take(deep, 3, f"{name}.probe")
        got_one = await _take(one, 2, f"{name}.probe")
        await deep.aclose()
        await one.aclose()
        # Order holds within a tier; the memory and stored tiers travel separately.
        live = [(m.subject, m.payload, m.offset) for m in got_deep if m.live]
        kept_deep = [(m.subject, m.payload, m.offset, m.headers["h"]) for m in got_deep if not m.live]
        assert live == [(f"{name}.user.login", b"m1", -1), (f"{name}.tick", b"m2", -1)]
        assert kept_deep == [(f"{name}.order", b"p1", stored, "v")]
        # events.* matches one token only: not name.user.login
        assert sorted(m.subject for m in got_one) == [f"{name}.order", f"{name}.tick"]
        # Only the persistent messages were stored (the probes and the order).
        kept = await client.stream.read("t", "ns", name, 0, 0, 100)
        assert [m.subject for m in kept if m.subject != f"{name}.probe"] == [f"{name}.order"]

        bad = client.stream.subscribe("t", "ns", "*.created", None, None, -2)
        with pytest.raises(FlowMeshInvalidArgumentError):
            await bad.__anext__()


async def test_msg_id_stores_a_retry_once(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        first = await client.stream.publish("t", "ns", f"{name}.paid", b"once", msg_id="pay-7")
        again = await client.stream.publish("t", "ns", f"{name}.paid", b"once", msg_id="pay-7")
        other = await client.stream.publish("t", "ns", f"{name}.paid", b"twice", msg_id="pay-8")
        assert first == again and other is not None and other != first
        assert [m.payload for m in await client.stream.read("t", "ns", name, 0, 0, 10)] == [b"once", b"twice"]
