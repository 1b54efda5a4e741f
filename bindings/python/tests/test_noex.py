"""flowmesh.noex: the noex client API's own examples (store CRUD, context
manager, subscriptions, transactions, admin, auth and reconnect, error
handling) run on every engine, plus reconnect and failure behaviour against
a broker that is killed, stopped and restarted."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path
from typing import Any, Callable, List

import pytest
from conftest import start_broker, stop_broker

from flowmesh.noex import (
    AuthOptions,
    ClientOptions,
    CredentialOptions,
    DisconnectedError,
    NoexClient,
    NoexClientError,
    ReconnectOptions,
    RequestTimeoutError,
    WelcomeInfo,
)


async def until(cond: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    """Polls ``cond`` (bounded): deadlines are generous for a loaded machine."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def test_quick_start(url: str) -> None:
    client = NoexClient(url)
    assert client.state == "disconnected" and not client.is_connected
    welcome = await client.connect()
    assert isinstance(welcome, WelcomeInfo) and welcome.version and welcome.server_time > 0
    assert client.is_connected and client.state == "connected"

    users = client.store.bucket(f"users-{uuid.uuid4().hex[:8]}")
    alice = await users.insert({"name": "Alice"})
    assert alice["name"] == "Alice" and alice["id"] and alice["_version"] == 1
    all_users = await users.all()
    assert [u["name"] for u in all_users] == ["Alice"]

    # Reactive subscription
    seen: List[Any] = []
    await client.store.define_query("all-users", {"type": "all", "bucket": users.name})
    unsub = await client.store.subscribe("all-users", lambda data: seen.append(data))
    await until(lambda: len(seen) >= 1, what="the initial result")
    assert [u["name"] for u in seen[0]] == ["Alice"]

    unsub()
    await client.disconnect()
    assert client.state == "disconnected"
    await client.disconnect()  # idempotent


async def test_context_manager(url: str) -> None:
    async with NoexClient(url) as client:
        users = client.store.bucket("users")
        await users.insert({"name": "Alice"})
        assert await users.count() >= 1
    assert client.state == "disconnected"
    with pytest.raises(DisconnectedError) as info:
        await client.store.bucket("users").all()
    assert info.value.code == "DISCONNECTED"


async def test_bucket_api(url: str) -> None:
    async with NoexClient(url) as client:
        b = client.store.bucket(f"people-{uuid.uuid4().hex[:8]}")
        ann = await b.insert({"id": "a", "name": "Ann", "role": "admin", "age": 31})
        await b.insert({"id": "b", "name": "Bob", "role": "user", "age": 25})
        await b.insert({"id": "c", "name": "Cid", "role": "user", "age": 40})
        assert (await b.get("a")) == ann
        assert await b.get("nope") is None
        updated = await b.update("a", {"age": 32})
        assert updated["age"] == 32 and updated["_version"] == 2 and updated["name"] == "Ann"
        with pytest.raises(NoexClientError) as info:
            await b.update("a", {"age": 33}, expected_version=1)
        assert info.value.code == "CONFLICT"
        assert [r["id"] for r in await b.where({"role": "user"})] == ["b", "c"]
        assert [r["id"] for r in await b.where({"age": {"$gte": 30}})] == ["a", "c"]
        assert (await b.find_one({"name": "Bob"}) or {})["id"] == "b"
        assert await b.find_one({"name": "Zed"}) is None
        assert await b.count() == 3 and await b.count({"role": "user"}) == 2
        assert [r["id"] for r in await b.first(2)] == ["a", "b"]
        assert [r["id"] for r in await b.last(1)] == ["c"]
        page = await b.paginate(limit=2)
        assert [r["id"] for r in page["records"]] == ["a", "b"] and page["hasMore"] is True
        page2 = await b.paginate(limit=2, after=page["nextCursor"])
        assert [r["id"] for r in page2["records"]] == ["c"] and page2["hasMore"] is False
        assert await b.sum("age") == 97.0
        assert await b.avg("age", {"role": "user"}) == 32.5
        assert await b.min("age") == 25.0 and await b.max("age") == 40.0
        assert await b.min("age", {"role": "nobody"}) is None
        await b.delete("b")
        assert await b.count() == 2
        await b.clear()
        assert await b.all() == []


async def test_subscriptions_with_parameters(url: str) -> None:
    async with NoexClient(url) as client:
        bucket = f"staff-{uuid.uuid4().hex[:8]}"
        users = client.store.bucket(bucket)
        await client.store.define_query(
            "users-by-role", {"type": "where", "bucket": bucket, "filter": {"role": {"$param": "role"}}}
        )
        admins: List[List[str]] = []
        unsub = await client.store.subscribe(
            "users-by-role",
            lambda rows: admins.append([r["name"] for r in rows]),
            params={"role": "admin"},
        )
        await until(lambda: admins == [[]], what="the initial (empty) result")
        await users.insert({"name": "Ann", "role": "admin"})
        await until(lambda: admins[-1] == ["Ann"], what="the result after an insert")
        await users.insert({"name": "Bob", "role": "user"})  # does not change the result
        await users.insert({"name": "Cid", "role": "admin"})
        await until(lambda: admins[-1] == ["Ann", "Cid"], what="the second admin")
        assert ["Ann", "Bob"] not in admins

        # An async callback works too; unsubscribing by id.
        counts: List[int] = []

        async def on_count(n: int) -> None:
            counts.append(n)

        await client.store.define_query("count-staff", {"type": "count", "bucket": bucket})
        await client.store.subscribe("count-staff", on_count)
        await until(lambda: counts == [3], what="the count")
        sub_id = client.store.subscription_ids()[-1]  # the latest: count-staff
        await client.store.unsubscribe(sub_id)
        with pytest.raises(NoexClientError):
            await client.store.unsubscribe(sub_id)

        unsub()  # synchronous: nothing is delivered afterwards
        before = len(admins)
        await users.insert({"name": "Dan", "role": "admin"})
        await asyncio.sleep(0.5)
        assert len(admins) == before and counts == [3]

        with pytest.raises(NoexClientError) as info:
            await client.store.subscribe("no-such-query", print)
        assert info.value.code == "QUERY_NOT_DEFINED"
        with pytest.raises(NoexClientError) as info:
            await client.store.subscribe("users-by-role", print)  # the role parameter is missing
        assert info.value.code == "VALIDATION_ERROR"


async def test_transactions(url: str) -> None:
    async with NoexClient(url) as client:
        users, logs = f"users-{uuid.uuid4().hex[:8]}", f"logs-{uuid.uuid4().hex[:8]}"
        await client.store.bucket(users).insert({"id": "user-1", "credits": 100})
        result = await client.store.transaction(
            [
                {"op": "get", "bucket": users, "key": "user-1"},
                {"op": "update", "bucket": users, "key": "user-1", "data": {"credits": 400}},
                {"op": "insert", "bucket": logs, "data": {"action": "credit_update"}},
            ]
        )
        got, updated, logged = result["results"]
        assert got["credits"] == 100 and updated["credits"] == 400 and logged["action"] == "credit_update"
        # All or nothing: a failing op leaves no trace of the ones before it.
        with pytest.raises(NoexClientError) as info:
            await client.store.transaction(
                [
                    {"op": "insert", "bucket": logs, "data": {"action": "lost"}},
                    {"op": "update", "bucket": users, "key": "user-1", "data": {}, "expectedVersion": 1},
                ]
            )
        assert info.value.code == "CONFLICT"
        assert await client.store.bucket(logs).count() == 1
        assert (await client.store.bucket(users).get("user-1") or {})["credits"] == 400


async def test_admin_and_metadata(url: str) -> None:
    async with NoexClient(url) as client:
        store = client.store
        name = f"users-{uuid.uuid4().hex[:8]}"
        await store.define_bucket(name, {"schema": {"name": {"type": "string"}}})
        await store.update_bucket(name, {"schema": {"email": {"type": "string"}}})
        schema = await store.get_bucket_schema(name)
        assert set(schema["schema"]) == {"name", "email"}
        assert name in await store.buckets()
        await store.bucket(name).insert({"name": "Ann"})
        stats = await store.stats()
        assert stats["records"][name] == 1
        await store.define_query("all-users", {"type": "all", "bucket": name})
        assert "all-users" in [q["name"] for q in await store.list_queries()]
        await store.undefine_query("all-users")
        assert "all-users" not in [q["name"] for q in await store.list_queries()]
        await store.drop_bucket(name)
        with pytest.raises(NoexClientError) as info:
            await store.get_bucket_schema(name)
        assert info.value.code == "BUCKET_NOT_DEFINED"


async def test_error_handling(url: str) -> None:
    async with NoexClient(url) as client:
        bucket = f"users-{uuid.uuid4().hex[:8]}"
        await client.store.define_bucket(bucket, {"schema": {"name": {"type": "string", "minLength": 1}}})
        outcome = ""
        try:
            await client.store.bucket(bucket).insert({"name": ""})
        except NoexClientError as e:
            match e.code:
                case "VALIDATION_ERROR":
                    outcome = f"Validation failed: {e.details}"
                case "UNAUTHORIZED":
                    outcome = "Need to login first"
                case "NOT_FOUND":
                    outcome = "Resource not found"
        assert outcome.startswith("Validation failed:") and "'field': 'name'" in outcome
        assert await client.store.bucket(bucket).count() == 0
        with pytest.raises(NoexClientError) as info:
            await client.store.bucket(bucket).where({"age": {"$near": 3}})
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(NoexClientError) as info:
            await client.store.bucket(bucket).insert({"x": float("nan")})
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(NoexClientError):
            client.on("no-such-event", print)
        with pytest.raises(NoexClientError):
            await client.connect()  # already connected
    with pytest.raises(NoexClientError) as info:
        await NoexClient(url, ClientOptions(auth=AuthOptions(credentials=CredentialOptions("a", "b")))).connect()
    # Embedded engines have no users; a broker without --identity neither.
    assert info.value.code in ("INVALID_ARGUMENT", "UNAVAILABLE")


async def test_events_and_off(url: str) -> None:
    client = NoexClient(url)
    seen: List[str] = []
    client.on("welcome", lambda info: seen.append(f"welcome {info.version}"))
    off = client.on("connected", lambda: seen.append("connected"))
    client.on("disconnected", lambda reason: seen.append(f"disconnected: {reason}"))
    await client.connect()
    off()
    await client.disconnect()
    assert seen[0].startswith("welcome ") and seen[1:] == ["connected", "disconnected: client disconnect"]


# ---- against a broker that goes away ----------------------------------------------------

FAST = ReconnectOptions(max_retries=float("inf"), initial_delay_ms=100, max_delay_ms=300, jitter_ms=0)


def _kill(proc: Any) -> None:
    proc.kill()
    proc.wait(10)


async def test_auth_and_reconnect_restore_subscriptions(tmp_path: Path) -> None:
    """The README's auth/reconnect example: a broker on file:// data is killed
    and restarted on the same port; the client reconnects by itself and the
    subscription delivers fresh data."""
    data = f"file://{tmp_path / 'data'}"
    proc, url = start_broker(data)
    port = int(url.rsplit(":", 1)[1])
    client = NoexClient(
        url,
        ClientOptions(
            auth=AuthOptions(token="my-jwt-token"),
            reconnect=ReconnectOptions(max_retries=1000, initial_delay_ms=100, max_delay_ms=300, jitter_ms=0),
            request_timeout_ms=5_000,
        ),
    )
    events: List[str] = []
    client.on("reconnecting", lambda attempt: events.append(f"reconnecting {attempt}"))
    client.on("reconnected", lambda: events.append("reconnected"))
    client.on("disconnected", lambda reason: events.append("disconnected"))
    try:
        welcome = await client.connect()
        assert welcome.requires_auth is True
        users = client.store.bucket("users")
        await users.insert({"id": "u1", "name": "Alice"})
        await client.store.define_query("all-users", {"type": "all", "bucket": "users"})
        seen: List[List[str]] = []
        await client.store.subscribe("all-users", lambda rows: seen.append([r["name"] for r in rows]))
        await until(lambda: seen == [["Alice"]], what="the initial result")

        _kill(proc)
        await until(lambda: client.state == "reconnecting", what="the client noticing the broker is gone")
        with pytest.raises(DisconnectedError):
            await users.all()  # not connected: refused at once
        proc, _ = start_broker(data, port=port)
        await until(lambda: client.state == "connected", timeout=30, what="the reconnect")
        assert events[:3] == ["disconnected", "reconnecting 1", "reconnected"]
        await users.insert({"id": "u2", "name": "Bob"})
        await until(lambda: bool(seen) and seen[-1] == ["Alice", "Bob"], timeout=30, what="fresh data")
    finally:
        await client.disconnect()
        stop_broker(proc)


async def test_pending_request_rejected_on_disconnect(tmp_path: Path) -> None:
    data = f"file://{tmp_path / 'data'}"
    proc, url = start_broker(data)
    port = int(url.rsplit(":", 1)[1])
    client = NoexClient(url, ClientOptions(reconnect=FAST, request_timeout_ms=30_000))
    try:
        await client.connect()
        bucket = client.store.bucket("orders")
        await bucket.count()  # the link is up and warm
        os.kill(proc.pid, signal.SIGSTOP)  # the insert below gets no answer ...
        pending = asyncio.ensure_future(bucket.insert({"item": "o1"}))  # a generated id
        await asyncio.sleep(0.3)
        assert not pending.done()
        _kill(proc)  # ... and then the connection is lost under it
        with pytest.raises(DisconnectedError) as info:
            await asyncio.wait_for(pending, 30)
        assert info.value.code == "DISCONNECTED"
        proc, _ = start_broker(data, port=port)
        await until(lambda: client.state == "connected", timeout=30, what="the reconnect")
        # The client rejected it and nothing sent it again: the insert was
        # still reading when the link went, so its write never left. (The
        # first calls on a restarted broker may meet one more drop of the
        # link; such a call is rejected too, so ask again, bounded.)
        loop = asyncio.get_running_loop()
        end = loop.time() + 30
        while True:
            try:
                assert await bucket.count({"item": "o1"}) == 0
                break
            except DisconnectedError:
                assert loop.time() < end, "the broker never answered again"
                await until(lambda: client.state == "connected", timeout=30, what="the reconnect")
    finally:
        await client.disconnect()
        stop_broker(proc)


async def test_request_timeout(tmp_path: Path) -> None:
    proc, url = start_broker()
    client = NoexClient(url, ClientOptions(reconnect=FAST, request_timeout_ms=2_000))
    try:
        await client.connect()
        await client.store.bucket("b").count()
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(RequestTimeoutError) as info:
                await client.store.bucket("b").count()
            assert info.value.code == "TIMEOUT"
        finally:
            os.kill(proc.pid, signal.SIGCONT)
    finally:
        await client.disconnect()
        stop_broker(proc)


async def test_connect_failure_is_an_error() -> None:
    # Nothing listens on this loopback port: connect fails with a clear error.
    proc, url = start_broker()
    stop_broker(proc)
    client = NoexClient(url, ClientOptions(connect_timeout_ms=300, reconnect=False))
    errors: List[Exception] = []
    client.on("error", errors.append)
    with pytest.raises(NoexClientError):
        await client.connect()
    assert client.state == "disconnected" and len(errors) == 1
