"""flowmesh.lax vs nats-py on one nats-server, several rounds in one run.

Cells (each round runs every cell once, the order rotating):
- memory-1:     LaxClient memory-tier publish (direct path), one publisher
- nats-core-1:  nats-py ``nc.publish`` (core NATS), one publisher, flushed at the end
- broker-1:     LaxClient persistent publish on the acknowledged path to a
                flowmesh broker (``flowmesh serve --data file://... --fsync interval``), one at a time
- persist-1:    LaxClient persistent publish with only the nats-server
                (the nats:// engine's JetStream publish), one at a time
- js-1:         nats-py ``js.publish``, one at a time
- broker-64, persist-64, js-64: the same with 64 concurrent publishers

Every publish carries the same 128-byte payload. Reported: median over
rounds of msg/s, ± half the min-max range as % of the median, per-publish
p50/p99 latency (median over rounds).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from typing import Any, Awaitable, Callable, Dict, List, Tuple

import nats

from flowmesh.lax import ClientOptions, LaxClient, PublishOptions, Tier

PAYLOAD = b"x" * 128
CONCURRENCY = 64


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(proc: "subprocess.Popen[bytes]", port: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{what} did not start")


def start_broker(tmp: str) -> Tuple["subprocess.Popen[bytes]", str]:
    port = free_port()
    proc = subprocess.Popen(
        [os.environ["FLOWMESH_BIN"], "serve", "--listen", f"127.0.0.1:{port}", "--data",
         "file://" + os.path.join(tmp, "fm"), "--fsync", "interval"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(proc, port, "flowmesh serve")
    return proc, f"127.0.0.1:{port}"


def start_nats(tmp: str) -> Tuple["subprocess.Popen[bytes]", str]:
    port = free_port()
    proc = subprocess.Popen(
        [os.environ["NATS_SERVER"], "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", os.path.join(tmp, "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(proc, port, "nats-server")
    return proc, f"nats://127.0.0.1:{port}"


async def timed(seconds: float, workers: int, one: Callable[[], Awaitable[Any]]) -> Tuple[int, float, List[float]]:
    """Run ``one`` in ``workers`` loops for ``seconds``: (count, elapsed, latencies)."""
    lat: List[float] = []
    stop = time.perf_counter() + seconds
    count = 0

    async def loop() -> None:
        nonlocal count
        pc = time.perf_counter
        while True:
            t0 = pc()
            if t0 >= stop:
                return
            await one()
            lat.append(pc() - t0)
            count += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(loop() for _ in range(workers)))
    return count, time.perf_counter() - t0, lat


def pct(values: List[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


async def run(args: argparse.Namespace, url: str, broker: str) -> Dict[str, List[Dict[str, float]]]:
    lax = LaxClient(ClientOptions(nats_urls=[url], broker_addr=None, metrics_prefix="bench_lax"))
    await lax.connect()
    both = LaxClient(ClientOptions(nats_urls=[url], broker_addr=broker, metrics_prefix="bench_lax"))
    await both.connect()
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="BENCHJS", subjects=["benchjs.>"])
    persistent = PublishOptions(tier=Tier.PERSISTENT)
    # Warm up both paths (stream creation, connections).
    for _ in range(200):
        await lax.publish("benchlax.p", PAYLOAD, options=persistent)
        await both.publish("benchfm.p", PAYLOAD, options=persistent)
        await lax.publish("benchmem.m", PAYLOAD)
        await js.publish("benchjs.p", PAYLOAD)
        await nc.publish("benchcore.m", PAYLOAD)
    await nc.flush()

    async def nats_core(seconds: float) -> Tuple[int, float, List[float]]:
        t0 = time.perf_counter()
        n, _, lat = await timed(seconds, 1, lambda: nc.publish("benchcore.m", PAYLOAD))
        await nc.flush()  # the messages have reached the server
        return n, time.perf_counter() - t0, lat

    cells: Dict[str, Callable[[float], Awaitable[Tuple[int, float, List[float]]]]] = {
        "memory-1": lambda s: timed(s, 1, lambda: lax.publish("benchmem.m", PAYLOAD)),
        "nats-core-1": nats_core,
        "broker-1": lambda s: timed(s, 1, lambda: both.publish("benchfm.p", PAYLOAD, options=persistent)),
        "persist-1": lambda s: timed(s, 1, lambda: lax.publish("benchlax.p", PAYLOAD, options=persistent)),
        "js-1": lambda s: timed(s, 1, lambda: js.publish("benchjs.p", PAYLOAD)),
        f"broker-{CONCURRENCY}": lambda s: timed(
            s, CONCURRENCY, lambda: both.publish("benchfm.p", PAYLOAD, options=persistent)
        ),
        f"persist-{CONCURRENCY}": lambda s: timed(
            s, CONCURRENCY, lambda: lax.publish("benchlax.p", PAYLOAD, options=persistent)
        ),
        f"js-{CONCURRENCY}": lambda s: timed(s, CONCURRENCY, lambda: js.publish("benchjs.p", PAYLOAD)),
    }
    names = list(cells)
    results: Dict[str, List[Dict[str, float]]] = {k: [] for k in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            n, elapsed, lat = await cells[name](args.seconds)
            results[name].append({"rate": n / elapsed, "p50": pct(lat, 0.5), "p99": pct(lat, 0.99)})
            print(f"round {r + 1} {name}: {n / elapsed:,.0f} msg/s p99 {pct(lat, 0.99) * 1e3:.3f} ms", file=sys.stderr)
    await nc.close()
    await lax.close()
    await both.close()
    return results


def summary(rows: List[Dict[str, float]]) -> Dict[str, float]:
    rates = [r["rate"] for r in rows]
    med = statistics.median(rates)
    return {
        "rate": med,
        "spread": (max(rates) - min(rates)) / 2 / med * 100 if med else 0.0,
        "min": min(rates),
        "max": max(rates),
        "p50": statistics.median(r["p50"] for r in rows),
        "p99": statistics.median(r["p99"] for r in rows),
    }


def report(args: argparse.Namespace, results: Dict[str, List[Dict[str, float]]], server: str) -> str:
    s = {k: summary(v) for k, v in results.items()}
    c = CONCURRENCY
    labels = {
        "memory-1": "flowmesh.lax memory tier (direct path), 1 publisher",
        "nats-core-1": "nats-py core publish, 1 publisher",
        "broker-1": "flowmesh.lax persistent via the flowmesh broker, 1 at a time",
        "persist-1": "flowmesh.lax persistent via the nats-server (JetStream), 1 at a time",
        "js-1": "nats-py JetStream publish, 1 at a time",
        f"broker-{c}": f"flowmesh.lax persistent via the flowmesh broker, {c} concurrent",
        f"persist-{c}": f"flowmesh.lax persistent via the nats-server, {c} concurrent",
        f"js-{c}": f"nats-py JetStream publish, {c} concurrent",
    }
    out = [
        "# flowmesh.lax vs nats-py",
        "",
        "Generated by `bench/lax/run.sh`: the Python LAX client (`flowmesh.lax`) and nats-py, "
        "both against one nats-server on loopback, in one run.",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; machine: {platform.machine()}, "
        f"{os.cpu_count()} cores (shared, noisy); Python {platform.python_version()}; {server}.",
        f"- Rounds: {args.rounds}, cells of {args.seconds} s, order rotating; payload 128 bytes; "
        "median over rounds, ±half the min–max range as % of the median; latency = one `await publish` "
        "(median over rounds of each round's p50/p99).",
        "- The lax client runs with its defaults (metrics on, retries 3, breaker 10, 4 connections). "
        "Persistent via the broker: `nats_urls` and `broker_addr` both given, as the client routes it, the broker "
        "storing on `file://` with `--fsync interval` (like JetStream's default: written on every publish, fsync in "
        "the background). Persistent via the nats-server: only `nats_urls` given, the nats:// engine's JetStream "
        "publish (file storage) on the same server nats-py uses.",
        "",
        "| case | msg/s (median) | spread | min–max | p50 | p99 |",
        "|---|---|---|---|---|---|",
    ]
    for k, label in labels.items():
        v = s[k]
        out.append(
            f"| {label} | {v['rate']:,.0f} | ±{v['spread']:.0f}% | {v['min']:,.0f}–{v['max']:,.0f} | "
            f"{v['p50'] * 1e3:.3f} ms | {v['p99'] * 1e3:.3f} ms |"
        )

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**missed**"

    ratio_mem = s["memory-1"]["rate"] / s["nats-core-1"]["rate"]
    ratio_p1 = s["broker-1"]["rate"] / s["js-1"]["rate"]
    ratio_pc = s[f"broker-{c}"]["rate"] / s[f"js-{c}"]["rate"]
    ratio_n1 = s["persist-1"]["rate"] / s["js-1"]["rate"]
    ratio_nc = s[f"persist-{c}"]["rate"] / s[f"js-{c}"]["rate"]
    best_persist = max(s["broker-1"]["rate"], s[f"broker-{c}"]["rate"])
    out += [
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        f"| memory tier ≥ 1× nats-py core publish | {ratio_mem:.2f}× | {verdict(ratio_mem >= 1)} |",
        f"| persistent (broker) ≥ 2× nats-py JetStream publish, 1 at a time | {ratio_p1:.2f}× | {verdict(ratio_p1 >= 2)} |",
        f"| persistent (broker) ≥ 2× nats-py JetStream publish, {c} concurrent | {ratio_pc:.2f}× | {verdict(ratio_pc >= 2)} |",
        f"| persistent (nats-server) ≥ 2× nats-py JetStream publish, 1 at a time | {ratio_n1:.2f}× | {verdict(ratio_n1 >= 2)} |",
        f"| persistent (nats-server) ≥ 2× nats-py JetStream publish, {c} concurrent | {ratio_nc:.2f}× | {verdict(ratio_nc >= 2)} |",
        f"| memory tier ≥ 100k msg/s | {s['memory-1']['rate']:,.0f} msg/s | {verdict(s['memory-1']['rate'] >= 100_000)} |",
        f"| memory tier p99 < 5 ms | {s['memory-1']['p99'] * 1e3:.3f} ms | {verdict(s['memory-1']['p99'] < 0.005)} |",
        f"| persistent ≥ 5k msg/s | {best_persist:,.0f} msg/s | {verdict(best_persist >= 5_000)} |",
        f"| persistent (broker) p99 < 50 ms ({c} concurrent) | {s[f'broker-{c}']['p99'] * 1e3:.3f} ms | "
        f"{verdict(s[f'broker-{c}']['p99'] < 0.05)} |",
        "",
    ]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    proc, url = start_nats(args.tmp)
    fm, broker = start_broker(args.tmp)
    try:
        version = subprocess.run([os.environ["NATS_SERVER"], "--version"], capture_output=True, text=True).stdout.strip()
        results = asyncio.run(run(args, url, broker))
    finally:
        for p in (proc, fm):
            p.terminate()
            p.wait(timeout=10)
    text = report(args, results, version)
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
