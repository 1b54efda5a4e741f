"""flowmesh.lax: the LAX client API on flowmesh, a publish API with a
delivery tier per message.

import asyncio
from flowmesh.lax import LaxClient, ClientOptions, PublishOptions, Tier

async def main() -> None:
    async with LaxClient(ClientOptions(nats_urls=["nats://localhost:4222"], broker_addr=None)) as client:
        await client.publish("events.user.login", {"user_id": "123"})            # memory tier, direct
        await client.publish("orders.created", {"order_id": "456"},
                             options=PublishOptions(tier=Tier.PERSISTENT, require_ack=True))

asyncio.run(main())

Memory-tier publishes without ``require_ack`` take the direct path
(fire-and-forget, nothing stored); the others the acknowledged path. See
``ClientOptions`` for where each path connects.
"""

from .breaker import State as CircuitState
from .client import LaxClient
from .exceptions import CircuitBreakerOpen, ConnectionError, LaxError, PublishError
from .options import EMBEDDED_URL, ClientOptions, PublishOptions, Tier

__all__ = [
    "LaxClient",
    "ClientOptions",
    "PublishOptions",
    "Tier",
    "CircuitState",
    "EMBEDDED_URL",
    "LaxError",
    "PublishError",
    "CircuitBreakerOpen",
    "ConnectionError",
]
