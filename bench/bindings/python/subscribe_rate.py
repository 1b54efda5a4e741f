"""Messages/s consumed through `stream.subscribe` on mem://, callback bridge
vs pull mode (fm_subscription_next), alternating rounds.

    python3 bench/bindings/python/subscribe_rate.py [--messages 200000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "bindings" / "python"))

sys.path.insert(0, str(Path(__file__).resolve().parent))

from callback_subscribe import subscribe_callback  # noqa: E402
from flowmesh import Event, FlowMesh  # noqa: E402


async def one(mode: str, total: int, size: int) -> float:
    async with FlowMesh("mem://") as client:
        payload = b"x" * size
        batch = [Event(payload=payload) for _ in range(1000)]
        for _ in range(total // 1000):
            await client.stream.write("b", "n", "s", batch)
        got = 0
        t0 = time.perf_counter()
        if mode == "callback":
            sub = subscribe_callback(client, "b", "n", "s")
        else:
            sub = client.stream.subscribe("b", "n", "s", None, 0, 0)
        async for msg in sub:
            got += 1
            if got == total:
                break
        return total / (time.perf_counter() - t0)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    rates: dict[str, list[float]] = {"callback": [], "pull": []}
    for r in range(args.rounds):
        order = ["callback", "pull"] if r % 2 == 0 else ["pull", "callback"]
        for mode in order:
            rate = await one(mode, args.messages, args.size)
            rates[mode].append(rate)
            print(f"round {r + 1} {mode:8s} {rate:10.0f} msg/s", flush=True)
    for mode, xs in rates.items():
        print(f"{mode:8s} median {statistics.median(xs):10.0f} msg/s  min {min(xs):.0f}  max {max(xs):.0f}")


if __name__ == "__main__":
    asyncio.run(main())
