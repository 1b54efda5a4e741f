"""The JSON WebSocket protocol of `flowmesh serve --ws` (docs/WEBSOCKET.md),
driven by a standard client library (`websockets`) against a real broker."""

import asyncio
import base64
import hashlib
import json
import os
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any, AsyncIterator, Dict, Iterator, List, Optional, Tuple

import pytest
import websockets

# Every wait is bounded; generous because the suite runs beside CPU hogs.
WAIT = 30.0


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, proc: "subprocess.Popen[bytes]") -> None:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"flowmesh serve exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"the broker did not listen on {port} within {WAIT}s")


class Broker:
    def __init__(self, *extra: str) -> None:
        binary = os.environ.get("FLOWMESH_BIN")
        if not binary or not Path(binary).is_file():
            raise RuntimeError("FLOWMESH_BIN must name the flowmesh binary")
        self.grpc_port, self.ws_port = _free_port(), _free_port()
        log = open(os.environ.get("FLOWMESH_BROKER_LOG", os.devnull), "ab")
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{self.grpc_port}", "--ws", f"127.0.0.1:{self.ws_port}",
             "--data", "mem://", *extra],
            stdout=log, stderr=log)
        log.close()
        try:
            _wait_port(self.grpc_port, self.proc)
            _wait_port(self.ws_port, self.proc)
        except RuntimeError:
            self.stop()
            raise

    def url(self, query: str = "") -> str:
        return f"ws://127.0.0.1:{self.ws_port}/ws{query}"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    b = Broker()
    yield b
    b.stop()


class Conn:
    """A protocol connection: requests by id, pushes queued per subscription."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.next_id = 1
        self.replies: Dict[int, "asyncio.Future[Dict[str, Any]]"] = {}
        self.pushes: Dict[int, "asyncio.Queue[Dict[str, Any]]"] = {}
        self.other: "asyncio.Queue[Dict[str, Any]]" = asyncio.Queue()
        self.reader = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            msg = json.loads(raw)
            if "push" in msg:
                self.pushes.setdefault(msg["sub"], asyncio.Queue()).put_nowait(msg)
            elif isinstance(msg.get("id"), int) and msg["id"] in self.replies:
                self.replies.pop(msg["id"]).set_result(msg)
            else:
                self.other.put_nowait(msg)

    async def call(self, op: str, **fields: Any) -> Dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        fut: "asyncio.Future[Dict[str, Any]]" = asyncio.get_running_loop().create_future()
        self.replies[rid] = fut
        await self.ws.send(json.dumps({"id": rid, "op": op, **fields}))
        return await asyncio.wait_for(fut, WAIT)

    async def ok(self, op: str, **fields: Any) -> Dict[str, Any]:
        r = await self.call(op, **fields)
        assert r["ok"], r
        return r

    async def err(self, op: str, code: str, **fields: Any) -> Dict[str, Any]:
        r = await self.call(op, **fields)
        assert not r["ok"], r
        assert r["error"]["code"] == code, r
        assert isinstance(r["error"]["status"], int) and r["error"]["message"], r
        return r

    async def push(self, sub: int, timeout: float = WAIT) -> Dict[str, Any]:
        q = self.pushes.setdefault(sub, asyncio.Queue())
        return await asyncio.wait_for(q.get(), timeout)

    async def messages(self, sub: int, n: int) -> List[Dict[str, Any]]:
        got: List[Dict[str, Any]] = []
        while len(got) < n:
            p = await self.push(sub)
            assert p["push"] == "messages", p
            got.extend(p["messages"])
        return got

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()


async def connect(url: str, **kw: Any) -> Conn:
    ws = await websockets.connect(url, max_size=None, open_timeout=WAIT, **kw)
    return Conn(ws)


def name(kind: str) -> str:
    return f"acme/ws/{kind}-{uuid.uuid4().hex[:8]}"


def rec(payload: bytes, **kw: Any) -> Dict[str, Any]:
    return {"payload": b64(payload), **kw}


async def test_streams_publish_read_info_subscribe_commit(broker: Broker) -> None:
    c = await connect(broker.url())
    s = name("orders")
    await c.ok("create_stream", stream=s, partitions=2)
    r = await c.ok("publish", stream=s, records=[
        rec(b"a", key=b64(b"k1"), headers=[["h", "1"]], msg_id="m1"), rec(b"b", key=b64(b"k1"))])
    assert [p["partition"] for p in r["positions"]] == [r["positions"][0]["partition"]] * 2
    part = r["positions"][0]["partition"]
    assert [p["offset"] for p in r["positions"]] == [0, 1]
    got = (await c.ok("read", stream=s, partition=part, offset=0, max=10))["messages"]
    assert [unb64(m["payload"]) for m in got] == [b"a", b"b"]
    assert got[0]["headers"] == [["h", "1"]] and unb64(got[0]["key"]) == b"k1" and got[0]["timestamp_ms"] > 0
    info = await c.ok("stream_info", stream=s)
    assert info["config"]["partitions"] == 2
    assert {p["partition"]: p["latest"] for p in info["partitions"]}[part] == 2
    sub = await c.ok("subscribe", stream=s, partition=part, group="g", start="earliest")
    msgs = await c.messages(sub["sub"], 2)
    assert [m["offset"] for m in msgs] == [0, 1]
    await c.ok("commit", stream=s, group="g", partition=part, offset=1)
    assert (await c.ok("get_offset", stream=s, group="g", partition=part))["offset"] == 1
    state = await c.ok("group_state", stream=s, group="g")
    assert {p["partition"]: p["lag"] for p in state["partitions"]}[part] == 0
    # A live push: published after the subscription started.
    await c.ok("publish", stream=s, records=[rec(b"c", key=b64(b"k1"))])
    assert unb64((await c.messages(sub["sub"], 1))[0]["payload"]) == b"c"
    await c.ok("unsubscribe", sub=sub["sub"])
    await c.err("unsubscribe", "FM_ERR_NOT_FOUND", sub=sub["sub"])
    await c.close()


async def test_queues_every_operation(broker: Broker) -> None:
    c = await connect(broker.url())
    q = name("jobs")
    await c.ok("set_retry_policy", queue=q, max_attempts=1, initial_backoff_ms=0, max_backoff_ms=0, multiplier=1.0)
    assert (await c.ok("get_retry_policy", queue=q))["max_attempts"] == 1
    j1 = (await c.ok("enqueue", queue=q, payload=b64(b"one"), headers=[["kind", "x"]], priority=5))["job_id"]
    await c.ok("enqueue", queue=q, payload=b64(b"later"), delay_ms=600_000)
    stats = await c.ok("queue_stats", queue=q)
    assert (stats["pending"], stats["delayed"]) == (1, 1), stats
    jobs = (await c.ok("reserve", queue=q, max=5, visibility_ms=60_000))["jobs"]
    assert [(j["id"], unb64(j["payload"]), j["attempt"]) for j in jobs] == [(j1, b"one", 1)]
    assert jobs[0]["headers"] == [["kind", "x"]] and jobs[0]["priority"] == 5
    await c.ok("extend", queue=q, job_id=j1, visibility_ms=60_000)
    assert (await c.ok("queue_stats", queue=q))["in_flight"] == 1
    # One attempt only: a nack sends it to the dead-letter queue.
    await c.ok("nack", queue=q, job_id=j1)
    dead = (await c.ok("dlq_list", queue=q))["jobs"]
    assert [j["id"] for j in dead] == [j1]
    await c.ok("dlq_replay", queue=q, job_id=j1)
    assert (await c.ok("queue_stats", queue=q))["dead"] == 0
    again = (await c.ok("reserve", queue=q, max=1, visibility_ms=60_000, wait_ms=5_000))["jobs"]
    assert unb64(again[0]["payload"]) == b"one"
    await c.ok("ack", queue=q, job_id=again[0]["id"])
    await c.err("ack", "FM_ERR_NOT_FOUND", queue=q, job_id=again[0]["id"])
    j3 = (await c.ok("enqueue", queue=q, payload=b64(b"three"), headers=[["kind", "y"]]))["job_id"]
    j3r = (await c.ok("reserve", queue=q, max=1, visibility_ms=60_000))["jobs"][0]
    assert j3r["id"] == j3
    await c.ok("nack", queue=q, job_id=j3)
    assert (await c.ok("dlq_replay_all", queue=q, header="kind", value="y"))["replayed"] == 1
    assert (await c.ok("purge", kind="queue", name=q))["removed"] >= 1
    await c.close()


async def test_kv_every_operation_and_watch(broker: Broker) -> None:
    c = await connect(broker.url())
    b = name("cfg")
    w = await c.ok("watch", bucket=b, prefix="app.")
    assert set(w["cursor"]) == {"epoch", "seq"}
    r1 = (await c.ok("kv_set", bucket=b, key="app.x", value=b64(b"1")))["revision"]
    await c.ok("kv_set", bucket=b, key="other", value=b64(b"-"))
    got = await c.ok("kv_get", bucket=b, key="app.x")
    assert (unb64(got["value"]), got["revision"]) == (b"1", r1)
    await c.err("kv_set", "FM_ERR_CONFLICT", bucket=b, key="app.x", value=b64(b"2"), expected_revision=r1 + 100)
    r2 = (await c.ok("kv_set", bucket=b, key="app.x", value=b64(b"2"), expected_revision=r1))["revision"]
    assert r2 > r1
    assert (await c.ok("kv_exists", bucket=b, key="app.x"))["exists"] is True
    assert (await c.ok("kv_keys", bucket=b, prefix=""))["keys"] == ["app.x", "other"]
    assert (await c.ok("kv_delete", bucket=b, key="app.x"))["deleted"] is True
    await c.err("kv_get", "FM_ERR_NOT_FOUND", bucket=b, key="app.x")
    events = []
    while len(events) < 3:
        p = await c.push(w["sub"])
        assert p["push"] == "events", p
        events.extend(p["events"])
    assert [(e["op"], e["key"]) for e in events] == [("put", "app.x"), ("put", "app.x"), ("delete", "app.x")]
    assert unb64(events[1]["value"]) == b"2" and events[1]["revision"] == r2
    # Resuming after the first event's cursor replays exactly what followed.
    w2 = await c.ok("watch", bucket=b, prefix="app.", resume_after=events[0]["cursor"])
    resumed = []
    while len(resumed) < 2:
        resumed.extend((await c.push(w2["sub"]))["events"])
    assert [(e["op"], e["revision"]) for e in resumed] == [(e["op"], e["revision"]) for e in events[1:]]
    # The cursor of the watch's reply covers changes made before any event came.
    w3 = await c.ok("watch", bucket=b, prefix="app.", resume_after=w["cursor"])
    replayed = []
    while len(replayed) < 3:
        replayed.extend((await c.push(w3["sub"]))["events"])
    assert [e["revision"] for e in replayed] == [e["revision"] for e in events]
    assert b in (await c.ok("list", kind="bucket", prefix="acme/ws/"))["names"]
    await c.ok("delete", kind="bucket", name=b)
    await c.close()


async def test_resources_ping_health_and_pong(broker: Broker) -> None:
    c = await connect(broker.url())
    s = name("res")
    await c.ok("create_stream", stream=s)
    await c.ok("publish", stream=s, records=[rec(b"x")])
    assert s in (await c.ok("list", kind="stream", prefix="acme/ws/"))["names"]
    assert (await c.ok("purge", kind="stream", name=s))["removed"] == 1
    await c.ok("delete", kind="stream", name=s)
    await c.err("stream_info", "FM_ERR_NOT_FOUND", stream=s)
    await c.ok("ping")
    await c.ok("health")
    # WebSocket-level ping: the broker answers with a pong.
    await asyncio.wait_for(await c.ws.ping(), WAIT)
    await c.close()


async def test_errors_are_documented_codes(broker: Broker) -> None:
    c = await connect(broker.url())
    await c.ws.send("{not json")
    bad = await asyncio.wait_for(c.other.get(), WAIT)
    assert bad["id"] is None and bad["error"]["code"] == "FM_ERR_INVALID_ARGUMENT"
    await c.ws.send(json.dumps({"op": "ping"}))
    bad = await asyncio.wait_for(c.other.get(), WAIT)
    assert bad["error"]["code"] == "FM_ERR_INVALID_ARGUMENT" and "id" in bad["error"]["message"]
    await c.ws.send(b"\x00binary")
    bad = await asyncio.wait_for(c.other.get(), WAIT)
    assert bad["error"]["code"] == "FM_ERR_INVALID_ARGUMENT"
    await c.err("no_such_op", "FM_ERR_INVALID_ARGUMENT")
    await c.err("publish", "FM_ERR_INVALID_ARGUMENT", stream=name("s"), records=[])
    await c.err("publish", "FM_ERR_INVALID_ARGUMENT", stream=name("s"), records=[{"payload": "***"}])
    await c.err("publish", "FM_ERR_INVALID_ARGUMENT", stream="unqualified", records=[rec(b"x")])
    await c.err("read", "FM_ERR_INVALID_ARGUMENT", stream=name("s"), partition=-1)
    await c.err("read", "FM_ERR_NOT_FOUND", stream=name("missing"), partition=0)
    await c.err("subscribe", "FM_ERR_INVALID_ARGUMENT", stream=name("s"), window=0)
    await c.err("subscribe", "FM_ERR_INVALID_ARGUMENT", stream=name("s"), start="sideways")
    await c.err("credit", "FM_ERR_NOT_FOUND", sub=424242, n=1)
    await c.err("list", "FM_ERR_INVALID_ARGUMENT", kind="table")
    await c.err("enqueue", "FM_ERR_INVALID_ARGUMENT", queue=name("q"))
    await c.err("enqueue", "FM_ERR_TOO_LARGE", queue=name("q"), payload=b64(b"x" * (9 << 20)))
    # The session survives all of it.
    await c.ok("ping")
    await c.close()


async def test_dropped_connection_resumes_without_loss(broker: Broker) -> None:
    s = name("resume")
    c = await connect(broker.url())
    await c.ok("create_stream", stream=s)
    await c.ok("publish", stream=s, records=[rec(str(i).encode()) for i in range(20)])
    sub = await c.ok("subscribe", stream=s, partition=0, group="workers", start="committed", window=10)
    first = await c.messages(sub["sub"], 10)
    await c.ok("commit", stream=s, group="workers", partition=0, offset=first[-1]["offset"])
    # Drop the TCP connection without a close handshake.
    c.ws.transport.abort()
    c.reader.cancel()
    c2 = await connect(broker.url())
    await c2.ok("publish", stream=s, records=[rec(str(i).encode()) for i in range(20, 30)])
    sub2 = await c2.ok("subscribe", stream=s, partition=0, group="workers", start="committed", window=100)
    rest = await c2.messages(sub2["sub"], 20)
    assert [int(unb64(m["payload"])) for m in first + rest] == list(range(30))
    await c2.close()


async def test_slow_consumer_is_bounded_by_its_credit(broker: Broker) -> None:
    s = name("slow")
    c = await connect(broker.url())
    await c.ok("create_stream", stream=s)
    sub = (await c.ok("subscribe", stream=s, partition=0, start="earliest", window=5))["sub"]
    for i in range(0, 500, 100):
        await c.ok("publish", stream=s, records=[rec(b"%d" % j) for j in range(i, i + 100)])
    got = await c.messages(sub, 5)
    assert len(got) == 5
    # Without credit nothing more arrives (a bounded look).
    with pytest.raises(asyncio.TimeoutError):
        await c.push(sub, timeout=1.0)
    # A second subscription on the same connection is not held up by the first.
    other = (await c.ok("subscribe", stream=s, partition=0, start="offset", offset=490, window=100))["sub"]
    assert len(await c.messages(other, 10)) == 10
    await c.ok("credit", sub=sub, n=495)
    got += await c.messages(sub, 495)
    assert [int(unb64(m["payload"])) for m in got] == list(range(500))
    await c.close()


# ---- authentication ---------------------------------------------------------------
TOKEN, READER = "ws-admin-token", "ws-reader-token"


@pytest.fixture(scope="module")
def secured(tmp_path_factory: Any) -> Iterator[Broker]:
    access = tmp_path_factory.mktemp("access") / "access.json"
    access.write_text(json.dumps({"tokens": [
        {"id": "admin", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "tenant": "acme",
         "grants": [{"namespace": "*", "ops": ["*"]}]},
        {"id": "reader", "sha256": hashlib.sha256(READER.encode()).hexdigest(), "tenant": "acme",
         "grants": [{"namespace": "ws", "ops": ["read"]}]},
    ]}))
    b = Broker("--access-file", str(access))
    yield b
    b.stop()


async def test_auth_refusals_and_tokens(secured: Broker) -> None:
    s = name("secure")
    anon = await connect(secured.url())
    await anon.err("create_stream", "FM_ERR_UNAUTHORIZED", stream=s)
    await anon.ok("auth", token="wrong")
    await anon.err("create_stream", "FM_ERR_UNAUTHORIZED", stream=s)
    await anon.ok("auth", token=TOKEN)
    await anon.ok("create_stream", stream=s)
    await anon.close()
    # The token on the upgrade request: a header, or ?token= for browsers.
    admin = await connect(secured.url(), additional_headers={"Authorization": f"Bearer {TOKEN}"})
    await admin.ok("publish", stream=s, records=[rec(b"x")])
    await admin.close()
    reader = await connect(secured.url(f"?token={READER}"))
    assert len((await reader.ok("read", stream=s, partition=0, offset=0))["messages"]) == 1
    await reader.err("publish", "FM_ERR_UNAUTHORIZED", stream=s, records=[rec(b"y")])
    await reader.err("subscribe", "FM_ERR_UNAUTHORIZED", stream=f"other/ws/{s.split('/')[-1]}")
    await reader.close()


# ---- what the console uses, transactions, stream updates -------------------------
async def test_inventory_metrics_update_stream_and_kv_txn(broker: Broker) -> None:
    c = await connect(broker.url())
    s, q, b = name("inv-stream"), name("inv-queue"), name("inv-bucket")
    await c.ok("create_stream", stream=s, partitions=2)
    await c.ok("publish", stream=s, records=[rec(b"a", key=b64(b"k")), rec(b"b", key=b64(b"k"))])
    part = (await c.ok("publish", stream=s, records=[rec(b"c", key=b64(b"k"))]))["positions"][0]["partition"]
    await c.ok("commit", stream=s, group="g", partition=part, offset=0)
    await c.ok("enqueue", queue=q, payload=b64(b"j"))
    await c.ok("enqueue", queue=q, payload=b64(b"d"), delay_ms=600_000)
    await c.ok("kv_set", bucket=b, key="x", value=b64(b"1"))
    inv = await c.ok("inventory", prefix="acme/ws/inv-")
    streams = {x["name"]: x for x in inv["streams"]}
    assert s in streams and all(n.startswith("acme/ws/inv-") for n in streams)
    st = streams[s]
    assert st["messages"] == 3 and len(st["partitions"]) == 2 and st["tier"] == "durable"
    assert sum(p["latest"] for p in st["partitions"]) == 3
    lag = {g["group"]: {p["partition"]: p["lag"] for p in g["partitions"]} for g in st["groups"]}
    assert lag["g"][part] == 2, lag
    queues = {x["name"]: x for x in inv["queues"]}
    assert (queues[q]["pending"], queues[q]["delayed"], queues[q]["in_flight"], queues[q]["dead"]) == (1, 1, 0, 0)
    assert {x["name"]: x["keys"] for x in inv["buckets"]}[b] == 1
    m1 = await c.ok("metrics")
    m2 = await c.ok("metrics")
    assert m1["connections"] >= 1 and m1["uptime_ms"] >= 0
    assert m2["requests"] > m1["requests"] >= 10, (m1, m2)
    # update_stream: retention changes, partitions only grow.
    cfg = (await c.ok("update_stream", stream=s, partitions=3, max_messages=100))["config"]
    assert (cfg["partitions"], cfg["max_messages"]) == (3, 100)
    await c.err("update_stream", "FM_ERR_INVALID_ARGUMENT", stream=s, partitions=1)
    # kv_txn: all or nothing.
    r = await c.ok("kv_txn", ops=[
        {"op": "check", "bucket": b, "key": "x", "revision": 1},
        {"op": "put", "bucket": b, "key": "y", "value": b64(b"2")},
        {"op": "get", "bucket": b, "key": "x"},
        {"op": "get", "bucket": b, "key": "missing"},
        {"op": "list", "bucket": b, "prefix": ""},
        {"op": "delete", "bucket": b, "key": "x"},
    ])
    res = r["results"]
    assert [x["op"] for x in res] == ["check", "put", "get", "get", "list", "delete"]
    assert res[1]["revision"] > 0 and unb64(res[2]["entry"]["value"]) == b"1" and res[3]["entry"] is None
    assert [e["key"] for e in res[4]["entries"]] == ["x", "y"] and res[5]["deleted"] is True
    await c.err("kv_txn", "FM_ERR_CONFLICT", ops=[
        {"op": "check", "bucket": b, "key": "y", "revision": 0},
        {"op": "put", "bucket": b, "key": "z", "value": b64(b"3")}])
    assert (await c.ok("kv_exists", bucket=b, key="z"))["exists"] is False
    await c.err("kv_txn", "FM_ERR_INVALID_ARGUMENT", ops=[{"op": "bogus", "bucket": b}])
    await c.err("kv_txn", "FM_ERR_INVALID_ARGUMENT", ops="not a list")
    await c.close()


async def test_console_files_are_served(broker: Broker) -> None:
    import urllib.request

    def get(path: str) -> Tuple[int, str, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{broker.ws_port}{path}", timeout=WAIT) as r:
            return r.status, r.headers["content-type"], r.read().decode()

    status, ctype, body = await asyncio.to_thread(get, "/")
    assert status == 200 and ctype.startswith("text/html") and "/console.js" in body
    status, ctype, body = await asyncio.to_thread(get, "/flowmesh.js")
    assert ctype.startswith("text/javascript") and "export async function connect" in body


async def test_inventory_and_metrics_need_a_token(secured: Broker) -> None:
    s = name("inv-secure")
    anon = await connect(secured.url())
    await anon.err("inventory", "FM_ERR_UNAUTHORIZED")
    await anon.err("metrics", "FM_ERR_UNAUTHORIZED")
    await anon.close()
    admin = await connect(secured.url(f"?token={TOKEN}"))
    await admin.ok("create_stream", stream=s)
    await admin.ok("create_stream", stream=f"acme/elsewhere/{s.split('/')[-1]}")
    assert s in [x["name"] for x in (await admin.ok("inventory"))["streams"]]
    await admin.err("inventory", "FM_ERR_UNAUTHORIZED", prefix="other/")
    await admin.close()
    # The reader's grants cover namespace ws only: the other stream is not shown.
    reader = await connect(secured.url(f"?token={READER}"))
    names = [x["name"] for x in (await reader.ok("inventory"))["streams"]]
    assert s in names and all(n.startswith("acme/ws/") for n in names), names
    assert (await reader.ok("metrics"))["connections"] >= 1
    await reader.close()
