"""The noex client API on flowmesh: a reactive document store client.

import asyncio
from flowmesh.noex import NoexClient

async def main() -> None:
    async with NoexClient("mem://") as client:
        users = client.store.bucket("users")
        await users.insert({"name": "Alice"})
        await client.store.define_query("all-users", {"type": "all", "bucket": "users"})
        unsub = await client.store.subscribe("all-users", lambda data: print("Updated:", data))
        unsub()

asyncio.run(main())

Works on every URL flowmesh takes: mem://, file:///dir, grpc://host:port,
ws://host:port (a broker's WebSocket listener), nats://host:port.
The store behaves as docs/STORE.md describes.
"""

from .client import EVENTS, ConnectionState, NoexClient
from .errors import DisconnectedError, NoexClientError, RequestTimeoutError
from .options import AuthOptions, ClientOptions, CredentialOptions, ReconnectOptions, WelcomeInfo
from .procedures import ProceduresAPI
from .rules import RulesAPI
from .identity import AuditAPI, AuthAPI, IdentityAPI
from .store import BucketAPI, StoreAPI, Unsubscribe

__all__ = [
    "NoexClient",
    "ConnectionState",
    "EVENTS",
    "ClientOptions",
    "AuthOptions",
    "CredentialOptions",
    "ReconnectOptions",
    "WelcomeInfo",
    "StoreAPI",
    "BucketAPI",
    "RulesAPI",
    "ProceduresAPI",
    "AuthAPI",
    "IdentityAPI",
    "AuditAPI",
    "Unsubscribe",
    "NoexClientError",
    "RequestTimeoutError",
    "DisconnectedError",
]
