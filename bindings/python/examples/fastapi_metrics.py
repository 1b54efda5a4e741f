"""FastAPI with flowmesh: a publish endpoint and a Prometheus /metrics route.

    pip install fastapi uvicorn
    FLOWMESH_URL=mem:// uvicorn fastapi_metrics:app --port 8000
    curl -X POST 'localhost:8000/publish/orders' -d '{"id": 1}'
    curl localhost:8000/metrics
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator, Dict

from fastapi import FastAPI, Request, Response

from flowmesh import Event, FlowMesh
from flowmesh.metrics import CONTENT_TYPE

client = FlowMesh(os.environ.get("FLOWMESH_URL", "mem://"))


@asynccontextmanager
async def lifespan(_: FastAPI) -> AsyncIterator[None]:
    await client.connect()
    # A memory-tier stream for telemetry-like traffic: no disk, bounded.
    await client.stream.create("app", "web", "clicks", tier="memory")
    yield
    await client.close()


app = FastAPI(lifespan=lifespan)


@app.post("/publish/{stream}")
async def publish(stream: str, request: Request) -> Dict[str, int]:
    offsets = await client.stream.write("app", "web", stream, [Event(payload=await request.body())])
    return {"offset": offsets[0]}


@app.get("/metrics")
def metrics() -> Response:
    return Response(client.metrics(), media_type=CONTENT_TYPE)
