"""client.metrics(), the HTTP exporter and the FastAPI example, parsed with
prometheus_client's own text parser."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Dict, Tuple

import pytest

from flowmesh import Event, FlowMesh, FlowMeshClosedError, FlowMeshNotFoundError
from flowmesh.metrics import CONTENT_TYPE, start_http_server

parser = pytest.importorskip("prometheus_client.parser")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

Key = Tuple[str, Tuple[Tuple[str, str], ...]]


def samples(text: str) -> Dict[Key, float]:
    out: Dict[Key, float] = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def op(name: str, status: str = "ok") -> Key:
    return ("flowmesh_client_operations_total", (("op", name), ("status", status)))


async def workload(client: FlowMesh, name: str) -> None:
    await client.stream.write("t", "ns", name, [Event(payload=b"abcd") for _ in range(3)])
    await client.stream.write("t", "ns", name, [Event(payload=b"xy")])
    await client.kv.set("t", "ns", name, "k", b"v")
    with pytest.raises(FlowMeshNotFoundError):
        await client.kv.get("t", "ns", name, "missing")


async def test_metrics_exact_counts(url: str, name: str) -> None:
    async with FlowMesh(url) as client:
        await workload(client, name)
        s = samples(client.metrics())
    assert s[op("publish")] == 2  # two batches
    assert s[op("kv_set")] == 1
    assert s[op("kv_get", "not_found")] == 1
    assert s[("flowmesh_client_messages_published_total", ())] == 4
    assert s[("flowmesh_client_published_bytes_total", ())] == 14
    assert s[("flowmesh_client_in_flight", ())] == 0
    hist = "flowmesh_client_operation_duration_seconds"
    assert s[(hist + "_count", (("op", "publish"),))] == 2
    assert s[(hist + "_bucket", (("le", "+Inf"), ("op", "publish")))] == 2
    assert s[(hist + "_sum", (("op", "publish"),))] > 0


async def test_metrics_after_close_raises() -> None:
    client = FlowMesh("mem://")
    await client.connect()
    await client.close()
    with pytest.raises(FlowMeshClosedError):
        client.metrics()


async def test_http_exporter(name: str) -> None:
    async with FlowMesh("mem://") as client:
        await workload(client, name)
        with start_http_server(client) as server:
            with urllib.request.urlopen(server.url, timeout=10) as resp:
                assert resp.headers["Content-Type"] == CONTENT_TYPE
                s = samples(resp.read().decode())
            assert s[op("publish")] == 2
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=10)
            assert err.value.code == 404


async def test_memory_tier_stream(name: str, tmp_path: Path) -> None:
    async with FlowMesh(f"file://{tmp_path / 'data'}") as client:
        await client.stream.create("t", "ns", name, tier="memory", max_messages=10)
        await client.stream.write("t", "ns", name, [Event(payload=b"m%d" % i) for i in range(25)])
        msgs = await client.stream.read("t", "ns", name)
        assert [m.offset for m in msgs] == list(range(15, 25))
    assert not [p for p in (tmp_path / "data").rglob("*") if name in str(p)]


def test_fastapi_example() -> None:
    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("httpx") is None:
        pytest.skip("fastapi/httpx not installed")
    code = f"""
import sys
sys.path.insert(0, {str(EXAMPLES)!r})
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
import fastapi_metrics
with TestClient(fastapi_metrics.app) as http:
    for i in range(3):
        r = http.post("/publish/clicks", content=b'{{"n": %d}}' % i)
        assert r.status_code == 200 and r.json() == {{"offset": i}}, r.text
    r = http.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    values = {{(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(r.text) for s in f.samples}}
    assert values[("flowmesh_client_messages_published_total", ())] == 3, values
print("fastapi ok")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "fastapi ok" in r.stdout
