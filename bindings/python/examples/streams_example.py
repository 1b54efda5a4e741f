"""Streams: write events, read them back, follow a stream with a consumer group.

Runs with no server: FLOWMESH_URL defaults to mem:// (embedded, in memory).
Point it at a broker with FLOWMESH_URL=localhost:50051.
"""

import asyncio
import os

from flowmesh import Event, FlowMesh

URL = os.environ.get("FLOWMESH_URL", "mem://")


async def main() -> None:
    async with FlowMesh(endpoint=URL) as client:
        offsets = await client.stream.write(
            "shop",
            "prod",
            "orders",
            [
                Event(
                    payload=b'{"order_id": "123", "amount": 99.99}', headers={"event_type": "order.created"}
                ),
                Event(
                    payload=b'{"order_id": "124", "amount": 149.99}', headers={"event_type": "order.created"}
                ),
            ],
        )
        print(f"written at offsets {offsets}")

        for msg in await client.stream.read("shop", "prod", "orders", partition=0, offset=0, max_messages=10):
            print(f"read offset={msg.offset} headers={msg.headers} payload={msg.payload!r}")

        # Subscribe first (async with starts the subscription), then publish:
        # the subscriber sees exactly what was published after it started.
        async with client.stream.subscribe(
            "shop", "prod", "orders", "billing", partition=0, start_offset=-2
        ) as sub:
            await client.stream.write("shop", "prod", "orders", [Event(payload=b'{"order_id": "125"}')])
            async for msg in sub:
                print(f"received offset={msg.offset} payload={msg.payload!r}")
                await client.stream.commit_offset("shop", "prod", "orders", "billing", 0, msg.offset)
                break

        state = await client.stream.get_consumer_group_state("shop", "prod", "orders", "billing", 0)
        print(
            f"group billing: committed={state.committed_offset} latest={state.latest_offset} lag={state.lag}"
        )


if __name__ == "__main__":
    asyncio.run(main())
