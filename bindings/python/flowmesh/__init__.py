"""flowmesh: asyncio SDK for streams, queues and KV on the native flowmesh core.

import asyncio
from flowmesh import FlowMesh, Event

async def main() -> None:
    async with FlowMesh("mem://") as client:
        await client.stream.write("t", "ns", "orders", [Event(payload=b"hi")])
        print(await client.stream.read("t", "ns", "orders"))

asyncio.run(main())
"""

from ._bridge import Subscription
from ._errors import (
    FlowMeshAlreadyExistsError,
    FlowMeshClosedError,
    FlowMeshConflictError,
    FlowMeshDisconnectedError,
    FlowMeshError,
    FlowMeshInternalError,
    FlowMeshInvalidArgumentError,
    FlowMeshNotFoundError,
    FlowMeshTimeoutError,
    FlowMeshTooLargeError,
    FlowMeshUnauthorizedError,
    FlowMeshUnavailableError,
)
from .client import FlowMesh, connect
from ._version import read_version
from .types import ConnState, ConsumerGroupState, Event, Job, KVEvent, Message, QueueStats, RetryPolicy

__version__: str = read_version()
"""This package's version, the same as the native library's (`fm_version()`)."""

__all__ = [
    "FlowMesh",
    "connect",
    "ConnState",
    "Subscription",
    "Event",
    "Message",
    "Job",
    "QueueStats",
    "RetryPolicy",
    "ConsumerGroupState",
    "KVEvent",
    "FlowMeshError",
    "FlowMeshInvalidArgumentError",
    "FlowMeshNotFoundError",
    "FlowMeshTimeoutError",
    "FlowMeshDisconnectedError",
    "FlowMeshUnauthorizedError",
    "FlowMeshClosedError",
    "FlowMeshAlreadyExistsError",
    "FlowMeshConflictError",
    "FlowMeshTooLargeError",
    "FlowMeshUnavailableError",
    "FlowMeshInternalError",
]
