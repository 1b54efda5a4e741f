"""KV: set/get/delete/exists/list, TTL, compare-and-set, watch."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import List

import pytest

from flowmesh import FlowMesh, FlowMeshConflictError, FlowMeshNotFoundError, FlowMeshTooLargeError, KVEvent

T, NS = "acme", "test"


async def test_set_get_exists_delete_list(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        rev = await client.kv.set(T, NS, name, "user:123", b'{"name": "John"}')
        assert rev >= 1
        assert await client.kv.get(T, NS, name, "user:123") == b'{"name": "John"}'
        assert await client.kv.exists(T, NS, name, "user:123") is True
        assert await client.kv.exists(T, NS, name, "user:999") is False

        for key in ("user:789", "user:456", "order:1"):
            await client.kv.set(T, NS, name, key, key.encode())
        assert await client.kv.list_keys(T, NS, name, prefix="user:") == ["user:123", "user:456", "user:789"]
        assert await client.kv.list_keys(T, NS, name) == ["order:1", "user:123", "user:456", "user:789"]
        assert await client.kv.list_keys(T, NS, name, prefix="none:") == []

        await client.kv.delete(T, NS, name, "user:456")
        assert await client.kv.exists(T, NS, name, "user:456") is False
        await client.kv.delete(T, NS, name, "user:456")  # absent: still fine
        with pytest.raises(FlowMeshNotFoundError) as info:
            await client.kv.get(T, NS, name, "user:456")
        assert info.value.code == "FM_ERR_NOT_FOUND"


async def test_binary_and_empty_values(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        blob = bytes(range(256)) * 4
        await client.kv.set(T, NS, name, "blob", blob)
        assert await client.kv.get(T, NS, name, "blob") == blob
        await client.kv.set(T, NS, name, "empty", b"")
        assert await client.kv.get(T, NS, name, "empty") == b""
        assert await client.kv.exists(T, NS, name, "empty")


async def test_ttl_expires(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.kv.set(T, NS, name, "session", b"s", ttl=timedelta(milliseconds=300))
        await client.kv.set(T, NS, name, "forever", b"f")
        assert await client.kv.get(T, NS, name, "session") == b"s"
        await asyncio.sleep(0.8)
        assert await client.kv.exists(T, NS, name, "session") is False
        with pytest.raises(FlowMeshNotFoundError):
            await client.kv.get(T, NS, name, "session")
        assert await client.kv.get(T, NS, name, "forever") == b"f"


async def test_compare_and_set(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        r1 = await client.kv.cas(T, NS, name, "lock", b"a", 0)  # 0: must not exist
        with pytest.raises(FlowMeshConflictError) as info:
            await client.kv.cas(T, NS, name, "lock", b"b", 0)
        assert info.value.code == "FM_ERR_CONFLICT" and info.value.details
        value, rev = await client.kv.get_entry(T, NS, name, "lock")
        assert (value, rev) == (b"a", r1)
        with pytest.raises(FlowMeshConflictError):
            await client.kv.cas(T, NS, name, "lock", b"c", r1 + 100)
        r2 = await client.kv.cas(T, NS, name, "lock", b"d", r1)
        assert r2 > r1
        assert await client.kv.get(T, NS, name, "lock") == b"d"
        r3 = await client.kv.set(T, NS, name, "lock", b"e")
        assert r3 > r2


async def test_cas_counter_under_concurrency(url: str, name: str) -> None:
    """Many tasks incrementing with CAS retries never lose an update."""
    async with FlowMesh(url) as client:
        await client.kv.set(T, NS, name, "n", b"0")

        async def incr(times: int) -> None:
            for _ in range(times):
                while True:
                    value, rev = await client.kv.get_entry(T, NS, name, "n")
                    try:
                        await client.kv.cas(T, NS, name, "n", str(int(value) + 1).encode(), rev)
                        break
                    except FlowMeshConflictError:
                        continue

        await asyncio.gather(*(incr(10) for _ in range(5)))
        assert await client.kv.get(T, NS, name, "n") == b"50"


async def test_value_too_large(url: str, name: str) -> None:
    async with FlowMesh(url, options={"max_payload_bytes": "64"}) as client:
        with pytest.raises(FlowMeshTooLargeError):
            await client.kv.set(T, NS, name, "k", b"v" * 65)


async def test_watch_prefix(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await client.kv.set(T, NS, name, "cfg:before", b"0")
        async with client.kv.watch(T, NS, name, prefix="cfg:") as watch:
            r1 = await client.kv.set(T, NS, name, "cfg:a", b"1")
            await client.kv.set(T, NS, name, "other", b"x")  # not under the prefix
            r2 = await client.kv.set(T, NS, name, "cfg:a", b"2")
            await client.kv.delete(T, NS, name, "cfg:a")
            got: List[KVEvent] = []
            while len(got) < 3:
                got.append(await asyncio.wait_for(watch.__anext__(), 5))
        assert [(e.op, e.key, e.value) for e in got] == [
            ("put", "cfg:a", b"1"),
            ("put", "cfg:a", b"2"),
            ("delete", "cfg:a", b""),
        ]
        assert got[0].revision == r1 and got[1].revision == r2


async def test_watch_sees_expiry(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        async with client.kv.watch(T, NS, name) as watch:
            await client.kv.set(T, NS, name, "tmp", b"t", ttl=timedelta(milliseconds=200))
            first = await asyncio.wait_for(watch.__anext__(), 5)
            second = await asyncio.wait_for(watch.__anext__(), 5)
        assert (first.op, second.op, second.key) == ("put", "expire", "tmp")
