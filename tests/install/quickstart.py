"""The Python quick start (bindings/python/README.md) on mem://, run from an
installed wheel: streams, a queue job and KV, plus what the package says
about itself."""

import asyncio
import sys
from pathlib import Path

import flowmesh
from flowmesh import Event, FlowMesh


async def main() -> None:
    async with FlowMesh("mem://") as client:
        await client.health_check()
        offsets = await client.stream.write(
            "acme", "prod", "orders", [Event(payload=b'{"order_id": "123"}', headers={"event_type": "order.created"})]
        )
        msgs = await client.stream.read("acme", "prod", "orders")
        assert [m.payload for m in msgs] == [b'{"order_id": "123"}'], msgs
        await client.queue.enqueue("acme", "prod", "emails", b"welcome")
        job = await client.queue.reserve("acme", "prod", "emails")
        assert job is not None and job.payload == b"welcome", job
        await client.queue.ack("acme", "prod", "emails", job.id)
        await client.kv.set("acme", "prod", "settings", "theme", b"dark")
        assert await client.kv.get("acme", "prod", "settings", "theme") == b"dark"
        print("offsets", offsets)
    lib = Path(flowmesh.__file__).parent / "_native" / "libflowmesh.so"
    assert lib.is_file(), lib
    assert FlowMesh.native_version() == flowmesh.__version__, (FlowMesh.native_version(), flowmesh.__version__)
    assert (Path(flowmesh.__file__).parent / "py.typed").is_file()
    print(f"python quick start OK: flowmesh {flowmesh.__version__} from {Path(flowmesh.__file__).parent}")


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
