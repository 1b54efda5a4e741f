"""Simple async use of the LAX client: fire-and-forget events, an
acknowledged order, a batch, and the error classes.

    LAX_NATS_URLS=nats://localhost:4222 LAX_BROKER_ADDR=localhost:50051 python async_example.py

With LAX_NATS_URLS="" and LAX_BROKER_ADDR="" it runs on the in-process
engine (mem://lax), no server needed.
"""

from __future__ import annotations

import asyncio
import logging
import os

from flowmesh.lax import ClientOptions, LaxClient, PublishOptions, Tier
from flowmesh.lax.exceptions import CircuitBreakerOpen, ConnectionError, PublishError

logger = logging.getLogger("example")


async def main() -> None:
    nats_urls = [u for u in os.environ.get("LAX_NATS_URLS", "nats://localhost:4222").split(",") if u]
    broker_addr = os.environ.get("LAX_BROKER_ADDR", "localhost:50051") or None
    options = ClientOptions(nats_urls=nats_urls or None, broker_addr=broker_addr, metrics_prefix="example_lax")

    async with LaxClient(options) as client:
        # Memory tier: the direct path, nothing stored.
        for i in range(3):
            await client.publish("events.user.login", {"user_id": str(i), "ip": "192.168.1.1"})
        print("sent 3 login events")

        # Persistent tier with acknowledgement.
        message_id = await client.publish(
            "orders.created",
            {"order_id": "456", "amount": 99.99},
            options=PublishOptions(tier=Tier.PERSISTENT, require_ack=True),
        )
        print(f"order stored, message id {message_id}")

        messages = [
            {"subject": "events.click", "data": {"button": "submit"}},
            {"subject": "events.view", "data": {"page": "/home"}},
        ]
        results = await client.batch_publish(messages)
        print(f"Sent {results['success_count']} messages")

        try:
            await client.publish("events.ping", {"n": 1})
        except CircuitBreakerOpen:
            logger.error("Circuit breaker open, service degraded")
        except PublishError as e:
            logger.error(f"Publish failed: {e}")
        except ConnectionError as e:
            logger.error(f"Connection error: {e}")
        print("done")


if __name__ == "__main__":
    asyncio.run(main())
