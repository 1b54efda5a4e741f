"""Subscriptions when the broker goes away: reported when it is gone for
good, resumed when it comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import List

import pytest
from conftest import start_broker, stop_broker

from flowmesh import Event, FlowMesh, FlowMeshDisconnectedError, FlowMeshError, Message

T, NS = "acme", "test"

# Quick reconnects so a test spends seconds, not the default backoff.
FAST = {
    "reconnect_initial_ms": "100",
    "reconnect_max_ms": "300",
    "reconnect_jitter_ms": "0",
    "connect_timeout_ms": "500",
    "request_timeout_ms": "2000",
}


def kill(proc: "object") -> None:
    proc.kill()  # type: ignore[attr-defined]
    proc.wait(10)  # type: ignore[attr-defined]


async def test_subscription_ends_with_disconnected_when_broker_is_gone(name: str) -> None:
    proc, url = start_broker()
    try:
        async with FlowMesh(url, options={**FAST, "max_reconnect_attempts": "1"}) as client:
            await client.stream.write(T, NS, name, [Event(payload=b"a"), Event(payload=b"b")])
            sub = client.stream.subscribe(T, NS, name, None, 0, 0)
            got = [await asyncio.wait_for(sub.__anext__(), 5) for _ in range(2)]
            assert [m.payload for m in got] == [b"a", b"b"]
            kill(proc)
            started = time.monotonic()
            with pytest.raises(FlowMeshDisconnectedError) as info:
                await asyncio.wait_for(sub.__anext__(), 20)
            assert info.value.code == "FM_ERR_DISCONNECTED" and info.value.details
            assert time.monotonic() - started < 15
            # Reported once; then the iteration is over and unsubscribed.
            with pytest.raises(StopAsyncIteration):
                await asyncio.wait_for(sub.__anext__(), 5)
            assert not client._core().subs
    finally:
        stop_broker(proc)


async def test_async_for_over_a_dead_subscription_raises(name: str) -> None:
    proc, url = start_broker()
    try:
        async with FlowMesh(url, options={**FAST, "max_reconnect_attempts": "1"}) as client:
            await client.stream.write(T, NS, name, [Event(payload=b"x")])
            seen: List[Message] = []

            async def consume() -> None:
                async for msg in client.stream.subscribe(T, NS, name, None, 0, 0):
                    seen.append(msg)
                    kill(proc)

            with pytest.raises(FlowMeshDisconnectedError):
                await asyncio.wait_for(consume(), 20)
            assert [m.payload for m in seen] == [b"x"]
    finally:
        stop_broker(proc)


async def test_kv_watch_ends_with_an_error_when_the_link_is_lost(name: str) -> None:
    proc, url = start_broker()
    try:
        async with FlowMesh(url, options={**FAST, "max_reconnect_attempts": "1"}) as client:
            async with client.kv.watch(T, NS, name) as watch:
                await client.kv.set(T, NS, name, "k", b"v")
                first = await asyncio.wait_for(watch.__anext__(), 5)
                assert (first.op, first.key) == ("put", "k")
                kill(proc)
                with pytest.raises(FlowMeshError) as info:
                    await asyncio.wait_for(watch.__anext__(), 20)
                assert info.value.code.startswith("FM_ERR_")
                with pytest.raises(StopAsyncIteration):
                    await asyncio.wait_for(watch.__anext__(), 5)
    finally:
        stop_broker(proc)


async def test_subscription_survives_broker_restart(tmp_path: Path, name: str) -> None:
    """kill -9 the broker and start it again on the same port and data: the
    subscription resumes after the last message it delivered, no duplicates."""
    data = f"file://{tmp_path / 'broker'}"
    proc, url = start_broker(data)
    port = int(url.rsplit(":", 1)[1])
    try:
        async with FlowMesh(url, options=FAST) as client:
            await client.stream.create(T, NS, name)
            async with client.stream.subscribe(T, NS, name, None, 0, 0) as sub:
                await client.stream.write(T, NS, name, [Event(payload=f"a{i}".encode()) for i in range(5)])
                before = [await asyncio.wait_for(sub.__anext__(), 5) for _ in range(5)]
                assert [m.offset for m in before] == list(range(5))

                kill(proc)
                await asyncio.sleep(0.3)
                proc, _ = start_broker(data, port)

                deadline = time.monotonic() + 15
                while True:  # unary calls reconnect on their own; retry until they do
                    try:
                        await client.stream.write(
                            T, NS, name, [Event(payload=f"b{i}".encode()) for i in range(5)]
                        )
                        break
                    except FlowMeshError:
                        if time.monotonic() > deadline:
                            raise
                        await asyncio.sleep(0.2)
                after = [await asyncio.wait_for(sub.__anext__(), 15) for _ in range(5)]
                assert [m.offset for m in after] == list(range(5, 10))
                assert [m.payload for m in after] == [f"b{i}".encode() for i in range(5)]
                with pytest.raises(asyncio.TimeoutError):  # nothing delivered twice
                    await asyncio.wait_for(sub.__anext__(), 1.0)
    finally:
        stop_broker(proc)
