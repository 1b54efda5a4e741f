"""flowmesh.noex: the noex client API's rules and procedures examples
(events, facts, subscriptions, rule admin, stats; register / call / get /
list / update / unregister) run on the embedded engines and on a broker
over gRPC and WebSocket, with rules firing exactly once per event."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from conftest import start_broker, stop_broker

from flowmesh.noex import NoexClient, NoexClientError


@pytest.fixture(params=["mem", "file", "grpc", "ws"])
def rules_url(request: Any, tmp_path: Path) -> Iterator[str]:
    """A fresh engine per test: rules and facts are per tenant, so a broker
    shared by the session would carry one test's rules into another."""
    if request.param == "mem":
        yield "mem://"
        return
    if request.param == "file":
        yield f"file://{tmp_path / 'data'}"
        return
    proc, url = start_broker(ws=request.param == "ws")
    try:
        yield url
    finally:
        stop_broker(proc)


async def until(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not cond():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def eventually(probe: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        got = await probe()
        if got:
            return got
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def test_rules_api_examples(rules_url: str) -> None:
    async with NoexClient(rules_url) as client:
        seen: List[Tuple[str, Any]] = []
        unsub = await client.rules.subscribe("user.*", lambda event, topic: seen.append((topic, event)))

        # Events
        event = await client.rules.emit("user.created", {"userId": "123"})
        assert event["topic"] == "user.created" and event["data"] == {"userId": "123"}
        assert event["id"] and event["timestamp"] > 0
        event = await client.rules.emit(
            "order.completed",
            {"orderId": "456"},
            correlation_id="corr-1",
            causation_id="cause-1",
        )
        assert (event["correlationId"], event["causationId"]) == ("corr-1", "cause-1")

        # Facts
        await client.rules.set_fact("user:1:status", "active")
        status = await client.rules.get_fact("user:1:status")
        assert status == "active"
        await client.rules.set_fact("user:2:status", "away")
        facts = await client.rules.query_facts("user:*:status")
        assert [f["key"] for f in facts] == ["user:1:status", "user:2:status"]
        deleted = await client.rules.delete_fact("user:1:status")
        assert deleted is True and await client.rules.get_fact("user:1:status") is None
        all_facts = await client.rules.get_all_facts()
        assert [(f["key"], f["value"]) for f in all_facts] == [("user:2:status", "away")]

        # Subscriptions: user.* got user.created, not order.completed.
        await until(lambda: len(seen) >= 1, what="the user.created event")
        assert seen[0][0] == "user.created" and seen[0][1]["data"] == {"userId": "123"}
        unsub()

        # Admin (once the two events above are evaluated, with no rules yet)
        async def evaluated_two() -> bool:
            return (await client.rules.stats())["eventsProcessed"] >= 2

        await eventually(evaluated_two, what="the first events evaluated")
        rule = {
            "id": "my-rule",
            "when": {"topic": "user.created", "data": {"userId": {"$exists": True}}},
            "then": {"type": "setFact", "key": "user:${data.userId}:status", "value": "new"},
        }
        stored = await client.rules.register_rule(rule)
        assert stored["id"] == "my-rule" and stored["enabled"] is True and stored["version"] == 1
        await client.rules.emit("user.created", {"userId": "7"})
        await eventually(lambda: client.rules.get_fact("user:7:status"), what="the rule to fire")
        await client.rules.disable_rule("my-rule")
        assert (await client.rules.get_rule("my-rule"))["enabled"] is False  # type: ignore[index]
        await client.rules.enable_rule("my-rule")
        rules = await client.rules.get_rules()
        assert [r["id"] for r in rules] == ["my-rule"]
        updated = await client.rules.update_rule(
            "my-rule", {"then": {"type": "setFact", "key": "seen:${data.userId}", "value": "${event.id}"}}
        )
        assert updated["version"] == 4  # disable, enable, update
        last = await client.rules.emit("user.created", {"userId": "8"})
        assert await eventually(lambda: client.rules.get_fact("seen:8"), what="the updated rule") == last["id"]
        validation = await client.rules.validate_rule({"id": "x", "when": {"topic": "a..b"}, "then": {"type": "nope"}})
        assert validation["valid"] is False and len(validation["errors"]) == 2
        assert (await client.rules.validate_rule(rule)) == {"valid": True, "errors": []}
        await client.rules.unregister_rule("my-rule")
        assert await client.rules.get_rule("my-rule") is None

        # Stats: 4 events so far, each evaluated exactly once.
        async def evaluated() -> bool:
            return (await client.rules.stats())["eventsProcessed"] >= 4

        await eventually(evaluated, what="every event evaluated")
        stats = await client.rules.stats()
        assert set(stats) >= {"rulesCount", "factsCount", "eventsProcessed"}
        assert (stats["rulesCount"], stats["eventsProcessed"], stats["rulesFired"]) == (0, 4, 2)


async def test_rules_bad_input(rules_url: str) -> None:
    async with NoexClient(rules_url) as client:
        with pytest.raises(NoexClientError) as info:
            await client.rules.register_rule({"id": "bad", "when": {}, "then": []})
        assert info.value.code == "VALIDATION_ERROR" and "when.topic" in str(info.value)
        with pytest.raises(NoexClientError) as info:
            await client.rules.unregister_rule("ghost")
        assert info.value.code == "NOT_FOUND"
        with pytest.raises(NoexClientError) as info:
            await client.rules.emit("a.*", {})
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(NoexClientError) as info:
            await client.rules.subscribe("a.>.b", lambda e, t: None)
        assert info.value.code == "INVALID_ARGUMENT"
        with pytest.raises(NoexClientError) as info:
            await client.procedures.call("ghost", {})
        assert info.value.code == "NOT_FOUND"


async def test_procedures_api_examples(rules_url: str) -> None:
    async with NoexClient(rules_url) as client:
        orders = client.store.bucket("orders")
        await orders.insert({"id": "123", "items": 3, "price": 14})
        steps = [
            {"op": "get", "bucket": "orders", "key": "${params.orderId}", "as": "order"},
            {"op": "update", "bucket": "orders", "key": "${params.orderId}", "data": {"status": "totaled"}},
            {"op": "setFact", "key": "order:${params.orderId}:items", "value": "${order.items}"},
            {"op": "emit", "topic": "order.totaled", "data": {"orderId": "${params.orderId}"}},
        ]
        # Register
        stored = await client.procedures.register({"name": "calculate-total", "steps": steps})
        assert stored["name"] == "calculate-total" and stored["version"] == 1

        # Execute
        result = await client.procedures.call("calculate-total", {"orderId": "123"})
        got = result["results"]
        assert len(got) == 4 and got[0]["price"] == 14 and got[1]["status"] == "totaled"
        assert got[2] == {"key": "order:123:items", "value": 3} and got[3]["topic"] == "order.totaled"
        assert await client.rules.get_fact("order:123:items") == 3

        # A failing step writes nothing.
        with pytest.raises(NoexClientError) as info:
            await client.procedures.call("calculate-total", {"orderId": "999"})
        assert info.value.code == "NOT_FOUND" and "step 1" in str(info.value)
        assert await client.rules.get_fact("order:999:items") is None

        # Admin
        proc = await client.procedures.get("calculate-total")
        assert proc is not None and proc["steps"] == steps
        all_procs = await client.procedures.list()
        assert [p["name"] for p in all_procs] == ["calculate-total"]
        await client.procedures.update("calculate-total", {"steps": [{"op": "count", "bucket": "orders"}]})
        assert (await client.procedures.call("calculate-total", {"orderId": "123"})) == {"results": [1]}
        await client.procedures.unregister("calculate-total")
        assert await client.procedures.get("calculate-total") is None
