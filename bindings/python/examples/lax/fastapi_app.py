"""The LAX client in a FastAPI app: lifespan, Depends, /events (memory
tier, direct path), /orders (persistent, acknowledged) and /metrics.

    pip install fastapi uvicorn prometheus_client
    LAX_NATS_URLS=nats://localhost:4222 LAX_BROKER_ADDR=localhost:50051 \\
        uvicorn fastapi_app:app --port 8000
    curl -X POST localhost:8000/events -H 'content-type: application/json' -d '{"click": 1}'
    curl -X POST localhost:8000/orders -H 'content-type: application/json' -d '{"id": "o-1"}'
    curl localhost:8000/metrics

LAX_NATS_URLS (comma-separated) and LAX_BROKER_ADDR name the servers; set
one to "" to leave it out (both "" = the in-process engine mem://lax).
"""

from __future__ import annotations

import os
from contextlib import asynccontextmanager
from typing import AsyncIterator, List, Optional

from fastapi import Depends, FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from flowmesh.lax import ClientOptions, LaxClient, PublishOptions, Tier


def _nats_urls() -> Optional[List[str]]:
    raw = os.environ.get("LAX_NATS_URLS", "nats://localhost:4222")
    return [u for u in raw.split(",") if u] or None


def _broker_addr() -> Optional[str]:
    return os.environ.get("LAX_BROKER_ADDR", "localhost:50051") or None


# Global client
lax_client: Optional[LaxClient] = None


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    global lax_client
    # Startup
    lax_client = LaxClient(ClientOptions(
        nats_urls=_nats_urls(),
        broker_addr=_broker_addr(),
    ))
    await lax_client.connect()
    yield
    # Shutdown
    await lax_client.close()


app = FastAPI(lifespan=lifespan)


def get_client() -> LaxClient:
    assert lax_client is not None, "the app is not started"
    return lax_client


@app.post("/events")
async def publish_event(
    data: dict,
    client: LaxClient = Depends(get_client),
) -> dict:
    # Automatically uses direct NATS for memory tier
    message_id = await client.publish("events.api", data)
    return {"message_id": message_id}


@app.post("/orders")
async def create_order(
    order: dict,
    client: LaxClient = Depends(get_client),
) -> dict:
    # Uses the acknowledged path for the persistent tier
    message_id = await client.publish(
        "orders.created",
        order,
        options=PublishOptions(tier=Tier.PERSISTENT, require_ack=True),
    )
    return {"order_id": order["id"], "message_id": message_id}


@app.get("/metrics")
async def metrics() -> Response:
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("PORT", "8000")))
