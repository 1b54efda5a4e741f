"""flowmesh.lax: the LAX client's documented code (quick start, FastAPI,
configuration, publishing options, batch publish, error handling, metrics)
with only the import line and the addresses changed, on the in-process
engine, a broker and a nats-server; then what the options do."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import pytest

from conftest import NatsServer, _free_port, start_broker, stop_broker
from flowmesh import FlowMesh, FlowMeshUnavailableError, Message
from flowmesh.lax import CircuitState, ClientOptions, LaxClient, PublishOptions, Tier
from flowmesh.lax.exceptions import CircuitBreakerOpen, ConnectionError, PublishError

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "lax"
logger = logging.getLogger("test_lax")


# ---- where the client connects ------------------------------------------------------
class Engine:
    """The addresses a test's client gets, and a plain flowmesh client on
    the same engine to look at what arrived."""

    def __init__(self, nats_urls: Optional[List[str]], broker_addr: Optional[str], check_url: str) -> None:
        self.nats_urls = nats_urls
        self.broker_addr = broker_addr
        self.check_url = check_url

    def options(self, **kw: Any) -> ClientOptions:
        kw.setdefault("metrics_prefix", f"t_{uuid.uuid4().hex[:8]}")
        return ClientOptions(nats_urls=self.nats_urls, broker_addr=self.broker_addr, **kw)


@pytest.fixture(params=["mem", "grpc", "nats"])
def engine(request: Any) -> Iterator[Engine]:
    if request.param == "mem":
        # Shared by this process's clients of that name while one is open:
        # the keeper holds the data for the checks after the test's clients closed.
        url = f"mem://lax-{uuid.uuid4().hex[:8]}"
        keeper = FlowMesh(url)
        asyncio.run(keeper.connect())
        try:
            yield Engine([url], None, url)
        finally:
            asyncio.run(keeper.close())
        return
    if request.param == "grpc":
        url = str(request.getfixturevalue("broker_url"))
        yield Engine(None, url[len("grpc://") :], url)
        return
    server: NatsServer = request.getfixturevalue("nats_server")
    yield Engine([server.url], None, server.url)


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


class Live:
    """A subscription on ``pattern`` that is known to be running (it has
    seen a stored probe message), so memory-tier messages published after
    ``open()`` reach it."""

    def __init__(self, url: str, pattern: str) -> None:
        self.url = url
        self.pattern = pattern
        self.stream = pattern.split(".")[0]
        self.fm = FlowMesh(url)
        self.sub: Any = None

    async def open(self) -> "Live":
        await self.fm.connect()
        self.sub = self.fm.stream.subscribe("default", "default", self.pattern, None, None, -2).__aiter__()
        probe = f"{self.stream}.probe"
        deadline = time.monotonic() + 15
        # The subscription starts with the first fetch: publish probes until one arrives.
        while time.monotonic() < deadline:
            await self.fm.stream.publish("default", "default", probe, b"probe")
            try:
                msg = await asyncio.wait_for(self.sub.__anext__(), 0.5)
            except asyncio.TimeoutError:
                continue
            if msg.subject == probe:
                return self
        raise AssertionError(f"subscription on {self.pattern} never started")

    async def take(self, count: int, timeout: float = 10) -> List[Message]:
        got: List[Message] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            try:
                msg = await asyncio.wait_for(self.sub.__anext__(), max(0.01, deadline - time.monotonic()))
            except asyncio.TimeoutError:
                break
            if not msg.subject.endswith(".probe"):
                got.append(msg)
        return got

    async def close(self) -> None:
        await self.sub.aclose()
        await self.fm.close()


async def stored(url: str, stream: str) -> List[Message]:
    async with FlowMesh(url) as fm:
        try:
            return [m for m in await fm.stream.read("default", "default", stream, 0, 0, 1000) if not m.subject.endswith(".probe")]
        except Exception as e:  # a stream nothing was stored in does not exist
            if "not found" in str(e).lower() or type(e).__name__ == "FlowMeshNotFoundError":
                return []
            raise


# ---- the documented code ------------------------------------------------------------------
async def test_quick_start(engine: Engine) -> None:
    events, orders = unique("events"), unique("orders")
    live = await Live(engine.check_url, f"{events}.>").open()
    try:
        # Create client
        async with LaxClient(engine.options()) as client:
            # Publish to memory tier (uses direct NATS, <1ms latency)
            await client.publish(
                f"{events}.user.login",
                {"user_id": "123", "ip": "192.168.1.1"}
            )

            # Publish to persistent tier (uses gRPC, guaranteed delivery)
            await client.publish(
                f"{orders}.created",
                {"order_id": "456", "amount": 99.99},
                options=PublishOptions(
                    tier=Tier.PERSISTENT,
                    require_ack=True
                )
            )
        (login,) = await live.take(1)
    finally:
        await live.close()
    assert login.subject == f"{events}.user.login" and login.live
    assert json.loads(login.payload) == {"user_id": "123", "ip": "192.168.1.1"}
    assert await stored(engine.check_url, events) == []  # the memory tier stored nothing
    (order,) = await stored(engine.check_url, orders)
    assert order.subject == f"{orders}.created" and json.loads(order.payload) == {"order_id": "456", "amount": 99.99}


def test_fastapi_app(engine: Engine, monkeypatch: Any) -> None:
    """The FastAPI example through Starlette's TestClient (a real ASGI
    client that runs the lifespan)."""
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import importlib.util

    from fastapi.testclient import TestClient

    monkeypatch.setenv("LAX_NATS_URLS", ",".join(engine.nats_urls or []))
    monkeypatch.setenv("LAX_BROKER_ADDR", engine.broker_addr or "")
    spec = importlib.util.spec_from_file_location(f"lax_fastapi_{uuid.uuid4().hex[:6]}", EXAMPLES / "fastapi_app.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with TestClient(module.app) as http:
        r = http.post("/events", json={"click": 1})
        assert r.status_code == 200, r.text
        event_id = r.json()["message_id"]
        r = http.post("/orders", json={"id": "o-1", "amount": 5})
        assert r.status_code == 200, r.text
        assert r.json()["order_id"] == "o-1" and r.json()["message_id"] != event_id
        text = http.get("/metrics").text
    assert 'lax_client_publish_total{status="success",tier="memory"}' in text
    assert 'lax_client_publish_total{status="success",tier="persistent"}' in text
    assert "lax_client_direct_nats_total" in text and "lax_client_grpc_total" in text
    orders = asyncio.run(stored(engine.check_url, "orders"))
    assert any(json.loads(m.payload) == {"id": "o-1", "amount": 5} for m in orders)


async def test_configuration(engine: Engine) -> None:
    prefix = unique("myapp_lax_")
    options = ClientOptions(
        # NATS settings
        nats_urls=engine.nats_urls,
        nats_connect_timeout=5.0,

        # gRPC settings
        broker_addr=engine.broker_addr,
        connection_pool_size=20,

        # Performance tuning
        max_concurrent_publishes=1000,
        publish_timeout=5.0,
        retry_attempts=3,

        # Circuit breaker
        circuit_breaker_threshold=10,
        circuit_breaker_timeout=30.0,

        # Metrics
        enable_metrics=True,
        metrics_prefix=prefix,

        # Logging
        log_level="INFO",
    )

    client = LaxClient(options)
    await client.connect()
    try:
        pool = 1 if engine.check_url.startswith("mem://") else 20
        assert len(client._pool) == pool
        topic = unique("cfg")
        ids = await asyncio.gather(
            *(client.publish(f"{topic}.x", {"i": i}, options=PublishOptions(tier=Tier.PERSISTENT)) for i in range(40))
        )
        assert len(set(ids)) == 40
        assert logging.getLogger("flowmesh.lax").level == logging.INFO
    finally:
        await client.close()
    assert sorted(json.loads(m.payload)["i"] for m in await stored(engine.check_url, topic)) == list(range(40))
    from prometheus_client import REGISTRY

    assert REGISTRY.get_sample_value(f"{prefix}_publish_total", {"tier": "persistent", "status": "success"}) == 40


async def test_publishing_options(engine: Engine) -> None:
    topic = unique("topic")
    data = {"k": "v"}
    live = await Live(engine.check_url, f"{topic}.>").open()
    try:
        async with LaxClient(engine.options()) as client:
            # Memory tier (default) - Ultra fast, no persistence
            await client.publish(f"{topic}.a", data)

            # With specific tier
            await client.publish(
                f"{topic}.b",
                data,
                options=PublishOptions(tier=Tier.PERSISTENT)
            )

            # Require acknowledgment (forces gRPC path)
            await client.publish(
                f"{topic}.c",
                data,
                options=PublishOptions(require_ack=True)
            )

            # With headers and timeout
            with pytest.raises(PublishError) as replicated:
                await client.publish(
                    f"{topic}.d",
                    data,
                    options=PublishOptions(
                        tier=Tier.REPLICATED,
                        headers={"trace-id": "abc123"},
                        timeout=2.0
                    )
                )
            # Headers and timeout on a tier this engine has.
            await client.publish(
                f"{topic}.e", data, options=PublishOptions(tier=Tier.PERSISTENT, headers={"trace-id": "abc123"}, timeout=2.0)
            )
        got = await live.take(4)
    finally:
        await live.close()
    # One server (or none) keeps one copy: replicated is refused, never downgraded.
    assert isinstance(replicated.value.cause, FlowMeshUnavailableError), replicated.value
    assert replicated.value.attempts == 1
    # Order holds within a tier; the memory and stored tiers travel separately.
    seen = [(m.subject.split(".")[1], m.live) for m in got]
    assert [s for s in seen if s[1]] == [("a", True), ("c", True)], seen
    assert [s for s in seen if not s[1]] == [("b", False), ("e", False)], seen
    (e,) = [m for m in got if m.subject == f"{topic}.e"]
    assert e.headers["trace-id"] == "abc123"
    assert [m.subject for m in await stored(engine.check_url, topic)] == [f"{topic}.b", f"{topic}.e"]


async def test_batch_publish(engine: Engine) -> None:
    events = unique("events")
    live = await Live(engine.check_url, f"{events}.*").open()
    try:
        async with LaxClient(engine.options()) as client:
            # Batch publish for efficiency
            messages = [
                {"subject": f"{events}.click", "data": {"button": "submit"}},
                {"subject": f"{events}.view", "data": {"page": "/home"}},
            ]
            results = await client.batch_publish(messages)
            print(f"Sent {results['success_count']} messages")
            mixed = await client.batch_publish(
                [
                    {"subject": f"{events}.ok", "data": "x", "options": PublishOptions(tier=Tier.PERSISTENT)},
                    {"subject": f"{events}.bad.*", "data": "x"},  # no wildcards in a publish
                    {"subject": f"{events}.gone", "data": "x", "options": PublishOptions(tier=Tier.REPLICATED)},
                ]
            )
        got = await live.take(3)
    finally:
        await live.close()
    assert (results["success_count"], results["failure_count"]) == (2, 0)
    assert [r["success"] for r in results["results"]] == [True, True]
    assert sorted(m.subject for m in got) == sorted([f"{events}.click", f"{events}.view", f"{events}.ok"])
    assert (mixed["success_count"], mixed["failure_count"]) == (1, 2)
    assert [r["success"] for r in mixed["results"]] == [True, False, False]
    assert "wildcard" in mixed["results"][1]["error"]
    assert mixed["results"][0]["message_id"] and mixed["results"][2]["message_id"]


async def test_error_handling_catches_each_class() -> None:
    """The documented try/except, once per exception class."""
    proc, url = start_broker()
    addr = url[len("grpc://") :]
    caught: List[str] = []

    async def documented(client: LaxClient, topic: str, data: Any) -> None:
        try:
            await client.publish(topic, data, options=PublishOptions(tier=Tier.PERSISTENT))
        except CircuitBreakerOpen:
            # Too many failures, circuit breaker is open
            logger.error("Circuit breaker open, service degraded")
            caught.append("breaker")
        except PublishError as e:
            # Publish failed after retries
            logger.error(f"Publish failed: {e}")
            caught.append("publish")
        except ConnectionError as e:
            # Connection issues
            logger.error(f"Connection error: {e}")
            caught.append("connection")

    opts = ClientOptions(
        nats_urls=None, broker_addr=addr, retry_attempts=1, circuit_breaker_threshold=2,
        publish_timeout=1.0, metrics_prefix=unique("err_"),
    )
    client = LaxClient(opts)
    await documented(client, "orders.x", {})  # not connected
    await client.connect()
    try:
        await documented(client, "orders.x", {"ok": 1})
        stop_broker(proc)
        await documented(client, "orders.x", {})
        await documented(client, "orders.x", {})
        await documented(client, "orders.x", {})
    finally:
        await client.close()
        stop_broker(proc)
    assert caught == ["connection", "publish", "publish", "breaker"]


async def test_metrics_in_generate_latest(engine: Engine) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from prometheus_client import generate_latest

    prefix = unique("metrics_")
    opts = engine.options(metrics_prefix=prefix)
    async with LaxClient(opts) as one, LaxClient(engine.options(metrics_prefix=prefix)) as two:
        await one.publish("mx.a", {"n": 1})
        await two.publish("mx.b", {"n": 2})
        await one.publish("mx.c", {"n": 3}, options=PublishOptions(tier=Tier.PERSISTENT))
        with pytest.raises(PublishError):
            await one.publish("mx.d", {}, options=PublishOptions(tier=Tier.REPLICATED))
    text = generate_latest().decode()
    sample = prometheus_client.REGISTRY.get_sample_value
    assert sample(f"{prefix}_publish_total", {"tier": "memory", "status": "success"}) == 2
    assert sample(f"{prefix}_publish_total", {"tier": "persistent", "status": "success"}) == 1
    assert sample(f"{prefix}_publish_total", {"tier": "replicated", "status": "failure"}) == 1
    assert sample(f"{prefix}_publish_latency_seconds_count", {"tier": "memory", "method": "direct_nats"}) == 2
    assert sample(f"{prefix}_publish_latency_seconds_count", {"tier": "persistent", "method": "grpc"}) == 1
    assert sample(f"{prefix}_direct_nats_total", {}) == 2
    assert sample(f"{prefix}_grpc_total", {}) == 1
    assert sample(f"{prefix}_circuit_breaker_state", {}) == 0
    for series in ("publish_total", "publish_latency_seconds_bucket", "direct_nats_total", "grpc_total", "circuit_breaker_state"):
        assert f"{prefix}_{series}" in text


# ---- what the options do -------------------------------------------------------------------
async def test_breaker_opens_after_threshold_and_closes_after_timeout() -> None:
    port = _free_port()
    proc, url = start_broker(port=port)
    prefix = unique("brk_")
    opts = ClientOptions(
        nats_urls=None, broker_addr=f"127.0.0.1:{port}", retry_attempts=0, publish_timeout=1.0,
        circuit_breaker_threshold=3, circuit_breaker_timeout=0.5, metrics_prefix=prefix,
    )
    from prometheus_client import REGISTRY

    state = lambda: REGISTRY.get_sample_value(f"{prefix}_circuit_breaker_state", {})  # noqa: E731
    persistent = PublishOptions(tier=Tier.PERSISTENT)
    client = LaxClient(opts)
    await client.connect()
    try:
        await client.publish("brk.a", b"1", options=persistent)
        stop_broker(proc)
        for _ in range(3):
            with pytest.raises(PublishError) as failed:
                await client.publish("brk.a", b"x", options=persistent)
            assert not isinstance(failed.value, CircuitBreakerOpen)
        assert client.circuit_breaker_state is CircuitState.OPEN and state() == 1
        with pytest.raises(CircuitBreakerOpen):  # refused without trying
            await client.publish("brk.a", b"x", options=persistent)
        proc, _ = start_broker(port=port)
        # After the timeout one trial goes through; a failed trial (the link
        # still reconnecting) opens it again, so try until one succeeds.
        deadline = time.monotonic() + 20
        while client.circuit_breaker_state is not CircuitState.CLOSED and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            try:
                await client.publish("brk.a", b"back", options=persistent)
            except PublishError:
                pass
        assert client.circuit_breaker_state is CircuitState.CLOSED and state() == 0
        await client.publish("brk.a", b"again", options=persistent)
    finally:
        await client.close()
        stop_broker(proc)
    assert REGISTRY.get_sample_value(f"{prefix}_publish_total", {"tier": "persistent", "status": "circuit_open"}) >= 1


def _native_in_flight(fm: FlowMesh) -> float:
    for line in fm.metrics().splitlines():
        if line.startswith("flowmesh_client_in_flight") and not line.startswith("#"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError("no flowmesh_client_in_flight in the client's metrics")


async def test_max_concurrent_publishes_bounds_work_in_flight() -> None:
    """With the broker frozen (SIGSTOP) nothing completes: the core's own
    in-flight gauge shows exactly the bound, the other publishes wait."""
    proc, url = start_broker()
    opts = ClientOptions(
        nats_urls=None, broker_addr=url, connection_pool_size=1, max_concurrent_publishes=3,
        publish_timeout=30.0, metrics_prefix=unique("conc_"),
    )
    async with LaxClient(opts) as client:
        fm = client._pool[0]
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            tasks = [
                asyncio.ensure_future(client.publish("conc.x", {"i": i}, options=PublishOptions(tier=Tier.PERSISTENT)))
                for i in range(20)
            ]
            deadline = time.monotonic() + 10
            while _native_in_flight(fm) < 3 and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.3)  # give any extra publish the chance to start
            assert _native_in_flight(fm) == 3 and client.in_flight == 3
            assert not any(t.done() for t in tasks)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        ids = await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert len(set(ids)) == 20 and client.in_flight == 0
    try:
        assert len(await stored(url, "conc")) == 20
    finally:
        stop_broker(proc)


async def test_memory_tier_writes_nothing_on_file_engine(tmp_path: Path) -> None:
    data = tmp_path / "data"
    url = f"file://{data}"
    async with LaxClient(ClientOptions(nats_urls=[url], broker_addr=None, metrics_prefix=unique("f_"))) as client:
        before = _files(data)
        for i in range(200):
            await client.publish(f"mem{i % 3}.tick", {"i": i})
        await client.publish("mem0.tick", {"i": -1}, options=PublishOptions(require_ack=True))
        assert _files(data) == before
        await client.publish("disk.tick", {"i": 0}, options=PublishOptions(tier=Tier.PERSISTENT))
        assert _files(data) != before  # the persistent one did write
        with pytest.raises(PublishError) as replicated:
            await client.publish("disk.tick", {}, options=PublishOptions(tier=Tier.REPLICATED))
    assert isinstance(replicated.value.cause, FlowMeshUnavailableError)


def _files(root: Path) -> Dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_size for p in root.rglob("*") if p.is_file()}


async def test_memory_tier_creates_no_jetstream_stream(nats_server: NatsServer) -> None:
    topic = unique("nostream")
    async with LaxClient(ClientOptions(nats_urls=[nats_server.url], broker_addr=None, metrics_prefix=unique("n_"))) as client:
        for i in range(100):
            await client.publish(f"{topic}.tick", {"i": i})
        await client.publish(f"{topic}.tick", {"i": -1}, options=PublishOptions(require_ack=True))
        assert not [s for s in nats_server.stream_names() if topic in s]
        await client.publish(f"{topic}.tick", {"i": 0}, options=PublishOptions(tier=Tier.PERSISTENT))
    assert [s for s in nats_server.stream_names() if topic in s]


async def test_both_addresses_route_direct_to_nats_and_acked_to_broker(nats_server: NatsServer, broker_url: str) -> None:
    topic = unique("route")
    live = await Live(nats_server.url, f"{topic}.>").open()
    try:
        opts = ClientOptions(nats_urls=[nats_server.url], broker_addr=broker_url[len("grpc://") :], metrics_prefix=unique("r_"))
        async with LaxClient(opts) as client:
            await client.publish(f"{topic}.fast", {"n": 1})
            await client.publish(f"{topic}.safe", {"n": 2}, options=PublishOptions(tier=Tier.PERSISTENT))
        (fast,) = await live.take(1, timeout=5)
    finally:
        await live.close()
    assert fast.subject == f"{topic}.fast"
    assert [m.subject for m in await stored(broker_url, topic)] == [f"{topic}.safe"]
    assert await stored(nats_server.url, topic) == []


async def test_connect_fails_with_connection_error() -> None:
    port = _free_port()
    client = LaxClient(ClientOptions(nats_urls=None, broker_addr=f"127.0.0.1:{port}", metrics_prefix=unique("c_")))
    with pytest.raises(ConnectionError) as e:
        await asyncio.wait_for(client.connect(), 30)
    assert f"127.0.0.1:{port}" in str(e.value)
    nats = LaxClient(ClientOptions(nats_urls=[f"nats://127.0.0.1:{port}"], broker_addr=None, nats_connect_timeout=1.0))
    with pytest.raises(ConnectionError):
        await asyncio.wait_for(nats.connect(), 30)


async def test_defaults_and_validation() -> None:
    opts = ClientOptions()
    client = LaxClient(opts)
    assert (client.direct_url, client.acked_url) == ("nats://localhost:4222", "grpc://localhost:50051")
    embedded = LaxClient(ClientOptions(nats_urls=None, broker_addr=None))
    assert (embedded.direct_url, embedded.acked_url) == ("mem://lax", "mem://lax")
    assert LaxClient(ClientOptions(nats_urls=["nats://a:1", "b:2"], broker_addr=None)).direct_url == "nats://a:1,b:2"
    for bad in ({"retry_attempts": -1}, {"max_concurrent_publishes": 0}, {"publish_timeout": 0}, {"log_level": "LOUD"},
                {"metrics_prefix": "a-b"}):
        with pytest.raises(ValueError):
            LaxClient(ClientOptions(nats_urls=None, broker_addr=None, **bad))
    async with LaxClient(ClientOptions(nats_urls=None, broker_addr=None, enable_metrics=False)) as c:
        with pytest.raises(ValueError):
            await c.publish("x.y", {}, options=PublishOptions(tier="fast"))  # type: ignore[arg-type]
        mid = await c.publish("x.y", b"raw")
        assert isinstance(mid, str) and mid
    with pytest.raises(ConnectionError):
        await c.publish("x.y", {})


def test_async_example_runs() -> None:
    import subprocess
    import sys

    package_root = str(EXAMPLES.parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, LAX_NATS_URLS="", LAX_BROKER_ADDR="", PYTHONPATH=path)
    proc = subprocess.run([sys.executable, str(EXAMPLES / "async_example.py")], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    for line in ("sent 3 login events", "order stored, message id", "Sent 2 messages", "done"):
        assert line in proc.stdout, proc.stdout
