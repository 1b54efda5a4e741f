"""KV: set with TTL, get, list by prefix, compare-and-set, watch changes.

Runs with no server: FLOWMESH_URL defaults to mem:// (embedded, in memory).
"""

import asyncio
import os
from datetime import timedelta

from flowmesh import FlowMesh, FlowMeshConflictError

URL = os.environ.get("FLOWMESH_URL", "mem://")
B = ("shop", "prod", "cache")


async def main() -> None:
    async with FlowMesh(endpoint=URL) as client:
        await client.kv.set(*B, "user:1", b'{"name": "Ada"}')
        await client.kv.set(*B, "user:2", b'{"name": "Linus"}')
        await client.kv.set(*B, "session:x", b"token", ttl=timedelta(hours=1))
        print(f"user:1 = {await client.kv.get(*B, 'user:1')!r}")
        print(f"user keys: {await client.kv.list_keys(*B, prefix='user:')}")

        # Compare-and-set: update only if nobody changed the key meanwhile.
        value, revision = await client.kv.get_entry(*B, "user:1")
        await client.kv.cas(*B, "user:1", b'{"name": "Ada L."}', revision)
        try:
            await client.kv.cas(*B, "user:1", b"stale write", revision)
        except FlowMeshConflictError:
            print("stale compare-and-set rejected")

        # Watch a prefix: every put/delete/expire under it, in order.
        async with client.kv.watch(*B, prefix="user:") as changes:
            await client.kv.set(*B, "user:3", b'{"name": "Grace"}')
            await client.kv.delete(*B, "user:2")
            for _ in range(2):
                change = await changes.__anext__()
                print(f"watch: {change.op} {change.key} rev={change.revision}")

        print(f"user:2 exists: {await client.kv.exists(*B, 'user:2')}")


if __name__ == "__main__":
    asyncio.run(main())
