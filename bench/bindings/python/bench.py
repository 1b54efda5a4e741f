"""Python publish and KV throughput: flowmesh (through the binding) vs
nats-py (JetStream publish, JetStream KV) and redis-py (SET/GET), against
real servers started here on loopback, in the same run.

Run through run.sh (it installs the client libraries). Every server runs
with durable storage in a temporary directory:
  * flowmesh serve --data file://DIR         (default fsync: batch)
  * nats-server -js -sd DIR                  (JetStream defaults)
  * redis-server --appendonly yes --appendfsync everysec
plus flowmesh embedded (file://DIR, in-process) for reference.

Each measurement runs for --seconds: "seq" awaits one operation at a time
(the plain `await x` loop), "c64" keeps 64 operations in flight (64 tasks).
Rounds alternate the order of the systems; the table gives the median of
the rounds and their spread (min-max). 100-byte payloads / values.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import datetime as dt
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Awaitable, Callable, Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[2]
RESULTS = ROOT / "bench" / "results" / "bindings-python.md"
PAYLOAD = b"x" * 100
CONCURRENCY = 64
KEYS = 1000

import flowmesh  # noqa: E402
import nats  # noqa: E402
import redis.asyncio as aioredis  # noqa: E402
from flowmesh import Event, FlowMesh  # noqa: E402

Op = Callable[[int], Awaitable[int]]
BATCH = 100


# ---- servers ---------------------------------------------------------------------
def _die_with_parent() -> None:
    # The server gets SIGKILL if this process dies (even by SIGKILL).
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: "subprocess.Popen[bytes]", what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


class Servers:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: List[Tuple[str, "subprocess.Popen[bytes]"]] = []
        self.ports: Dict[str, int] = {}

    def start(self, what: str, argv: List[str], port: int) -> None:
        log = open(self.tmp / f"{what}.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, preexec_fn=_die_with_parent)
        log.close()
        self.procs.append((what, proc))
        wait_port(port, proc, what)
        self.ports[what] = port

    def start_all(self, flowmesh_bin: str) -> None:
        p = free_port()
        (self.tmp / "fm").mkdir()
        self.start(
            "flowmesh",
            [flowmesh_bin, "serve", "--listen", f"127.0.0.1:{p}", "--data", f"file://{self.tmp / 'fm'}"],
            p,
        )
        p = free_port()
        (self.tmp / "fm-interval").mkdir()
        self.start(
            "flowmesh-interval",
            [
                flowmesh_bin, "serve", "--listen", f"127.0.0.1:{p}", "--data", f"file://{self.tmp / 'fm-interval'}",
                "--fsync", "interval",
            ],
            p,
        )
        p = free_port()
        (self.tmp / "nats").mkdir()
        self.start("nats", ["nats-server", "-a", "127.0.0.1", "-p", str(p), "-js", "-sd", str(self.tmp / "nats")], p)
        p = free_port()
        (self.tmp / "redis").mkdir()
        self.start(
            "redis",
            [
                "redis-server", "--port", str(p), "--bind", "127.0.0.1", "--dir", str(self.tmp / "redis"),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--protected-mode", "no",
            ],
            p,
        )

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


# ---- measuring ---------------------------------------------------------------------
async def measure(op: Op, seconds: float, concurrency: int) -> float:
    """Messages (operations) per second over about ``seconds`` with
    ``concurrency`` calls in flight."""
    for i in range(20):  # warm-up
        await op(i)
    count = 0
    stop_at = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal count
        i = w
        while time.perf_counter() < stop_at:
            done = await op(i)  # messages done by the call
            count += done  # (not `count += await`: that reads count before awaiting)
            i += concurrency

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(worker(w) for w in range(concurrency))), seconds + 60)
    return count / (time.perf_counter() - started)


class System:
    name = ""

    async def open(self, round_no: int) -> None: ...
    async def close(self) -> None: ...
    async def publish(self, i: int) -> int: ...
    async def publish_batch(self, i: int) -> int: ...
    async def kv_set(self, i: int) -> int: ...
    async def kv_get(self, i: int) -> int: ...


class FlowMeshSystem(System):
    def __init__(self, name: str, url: str, options: Optional[Dict[str, str]] = None) -> None:
        self.name = name
        self.url = url
        self.options = options
        self.client: Optional[FlowMesh] = None

    async def open(self, round_no: int) -> None:
        self.client = FlowMesh(self.url, options=self.options)
        await self.client.connect()
        self.stream = f"pub{round_no}"
        self.store = f"kv{round_no}"
        await self.client.stream.create("bench", "py", self.stream)
        self.events = [Event(payload=PAYLOAD)]
        self.batch = [Event(payload=PAYLOAD)] * BATCH
        for k in range(KEYS):
            await self.client.kv.set("bench", "py", self.store, f"k{k}", PAYLOAD)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    async def publish(self, i: int) -> int:
        assert self.client is not None
        await self.client.stream.write("bench", "py", self.stream, self.events)
        return 1

    async def publish_batch(self, i: int) -> int:
        assert self.client is not None
        await self.client.stream.write("bench", "py", self.stream, self.batch)
        return BATCH

    async def kv_set(self, i: int) -> int:
        assert self.client is not None
        await self.client.kv.set("bench", "py", self.store, f"k{i % KEYS}", PAYLOAD)
        return 1

    async def kv_get(self, i: int) -> int:
        assert self.client is not None
        await self.client.kv.get("bench", "py", self.store, f"k{i % KEYS}")
        return 1


class NatsSystem(System):
    name = "nats-py JetStream"

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self, round_no: int) -> None:
        self.nc = await nats.connect(f"nats://127.0.0.1:{self.port}", connect_timeout=5)
        self.js = self.nc.jetstream(timeout=10)
        self.subject = f"pub{round_no}.x"
        await self.js.add_stream(name=f"PUB{round_no}", subjects=[f"pub{round_no}.>"])
        self.kv = await self.js.create_key_value(bucket=f"kv{round_no}")
        for k in range(KEYS):
            await self.kv.put(f"k{k}", PAYLOAD)

    async def close(self) -> None:
        await self.nc.close()

    async def publish(self, i: int) -> int:
        await self.js.publish(self.subject, PAYLOAD)
        return 1

    async def publish_batch(self, i: int) -> int:
        # nats-py's pipelined publish: send BATCH, then wait for every ack.
        acks = [await self.js.publish_async(self.subject, PAYLOAD) for _ in range(BATCH)]
        await asyncio.gather(*acks)
        return BATCH

    async def kv_set(self, i: int) -> int:
        await self.kv.put(f"k{i % KEYS}", PAYLOAD)
        return 1

    async def kv_get(self, i: int) -> int:
        await self.kv.get(f"k{i % KEYS}")
        return 1


class RedisSystem(System):
    name = "redis-py"

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self, round_no: int) -> None:
        self.r = aioredis.Redis(host="127.0.0.1", port=self.port, max_connections=CONCURRENCY + 8)
        self.prefix = f"kv{round_no}:"
        for k in range(KEYS):
            await self.r.set(f"{self.prefix}k{k}", PAYLOAD)

    async def close(self) -> None:
        await self.r.aclose() if hasattr(self.r, "aclose") else await self.r.close()

    async def kv_set(self, i: int) -> int:
        await self.r.set(f"{self.prefix}k{i % KEYS}", PAYLOAD)
        return 1

    async def kv_get(self, i: int) -> int:
        await self.r.get(f"{self.prefix}k{i % KEYS}")
        return 1


FM = "flowmesh broker"
FM_I = "flowmesh broker, fsync interval"
FM_E = "flowmesh embedded, fsync interval"
NATS = "nats-py JetStream"
REDIS = "redis-py"
# operation -> systems that have it
OPS = {
    "publish": [FM, FM_I, NATS, FM_E],
    "kv set": [FM, FM_I, NATS, REDIS, FM_E],
    "kv get": [FM, FM_I, NATS, REDIS, FM_E],
}
# mode -> (calls in flight, operation suffix)
MODES = {"seq": (1, ""), f"c{CONCURRENCY}": (CONCURRENCY, ""), f"b{BATCH}": (1, "batch")}
MODES_OF = {"publish": ["seq", f"c{CONCURRENCY}", f"b{BATCH}"], "kv set": ["seq", f"c{CONCURRENCY}"],
            "kv get": ["seq", f"c{CONCURRENCY}"]}
MAIN = {"publish": NATS, "kv set": NATS, "kv get": NATS}


async def run(args: argparse.Namespace, servers: Servers, tmp: Path) -> Dict[Tuple[str, str, str], List[float]]:
    systems: List[System] = [
        FlowMeshSystem(FM, f"grpc://127.0.0.1:{servers.ports['flowmesh']}"),
        FlowMeshSystem(FM_I, f"grpc://127.0.0.1:{servers.ports['flowmesh-interval']}"),
        NatsSystem(servers.ports["nats"]),
        RedisSystem(servers.ports["redis"]),
        FlowMeshSystem(FM_E, f"file://{tmp / 'embedded'}", {"fsync": "interval"}),
    ]
    results: Dict[Tuple[str, str, str], List[float]] = {}
    for r in range(args.rounds):
        order = systems if r % 2 == 0 else list(reversed(systems))
        for system in order:
            await asyncio.wait_for(system.open(r), 120)
            try:
                for op_name, names in OPS.items():
                    if system.name not in names:
                        continue
                    for mode in MODES_OF[op_name]:
                        conc, suffix = MODES[mode]
                        op = {
                            "publish": system.publish_batch if suffix else system.publish,
                            "kv set": system.kv_set,
                            "kv get": system.kv_get,
                        }[op_name]
                        rate = await measure(op, args.seconds, conc)
                        results.setdefault((op_name, mode, system.name), []).append(rate)
                        print(f"round {r + 1} {op_name:8s} {mode:4s} {system.name:34s} {rate:10.0f}/s", flush=True)
            finally:
                await asyncio.wait_for(system.close(), 30)
    return results


# ---- report --------------------------------------------------------------------------
def version_of(argv: List[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except Exception as exc:  # pragma: no cover
        return f"unknown ({exc})"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def report(results: Dict[Tuple[str, str, str], List[float]], args: argparse.Namespace, command: str) -> str:
    med = {k: statistics.median(v) for k, v in results.items()}
    lines: List[str] = []
    lines.append("# Python binding benchmark: flowmesh vs nats-py (JetStream) and redis-py")
    lines.append("")
    lines.append(f"- command: `{command}`")
    lines.append(f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}")
    lines.append(
        f"- machine: {cpu_model()}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}; "
        "all servers and the client on the same machine, loopback"
    )
    lines.append(
        f"- versions: Python {platform.python_version()}, flowmesh binding {flowmesh.__version__} "
        f"(libflowmesh {FlowMesh.native_version()}), nats-py {metadata.version('nats-py')}, "
        f"redis-py {metadata.version('redis')}, {version_of(['nats-server', '--version'])}, "
        f"{version_of(['redis-server', '--version']).split(' sha=')[0]}"
    )
    lines.append(
        "- servers: `flowmesh serve --data file://TMP` (fsync batch, the default: fsync before every ack) "
        "and a second one with `--fsync interval`; "
        "`nats-server -js -sd TMP` (JetStream defaults); "
        "`redis-server --appendonly yes --appendfsync everysec`; flowmesh embedded = `FlowMesh('file://TMP')` "
        "in process (reference, no network)"
    )
    lines.append(
        f"- method: {args.rounds} rounds, system order alternated each round; each cell runs "
        f"{args.seconds:g} s; `seq` = one `await` at a time, `c{CONCURRENCY}` = {CONCURRENCY} tasks in flight, "
        f"`b{BATCH}` = batches of {BATCH} (one at a time); "
        f"100-byte payloads, {KEYS} keys; per second, median of the rounds [min-max]"
    )
    lines.append("- publish = `client.stream.write(t, ns, s, [Event(payload)])` vs `js.publish(subject, payload)` "
                 "(both wait for the server's ack); kv set/get = `client.kv.set/get` vs JetStream KV `put/get` vs "
                 "redis `SET/GET`")
    lines.append("")
    for op_name, names in OPS.items():
        modes = MODES_OF[op_name]
        lines.append(f"## {op_name} ({'messages' if op_name == 'publish' else 'operations'}/s)")
        lines.append("")
        lines.append("| system | " + " | ".join(modes) + " |")
        lines.append("|---|" + "---|" * len(modes))
        for name in names:
            cells = []
            for mode in modes:
                xs = results.get((op_name, mode, name), [])
                cells.append(f"{fmt(statistics.median(xs))} [{fmt(min(xs))}-{fmt(max(xs))}]" if xs else "-")
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
        lines.append("Ratios of medians (flowmesh / other):")
        lines.append("")
        for fm in (FM, FM_I, FM_E):
            for other in (NATS, REDIS):
                if other not in names:
                    continue
                parts = []
                for mode in modes:
                    a, b = med.get((op_name, mode, fm)), med.get((op_name, mode, other))
                    if a and b:
                        parts.append(f"{mode} {a / b:.2f}x")
                lines.append(f"- {fm} / {other}: " + ", ".join(parts))
        lines.append("")
    lines.append("## Target: flowmesh publish >= 3x nats-py JetStream publish")
    lines.append("")
    met: List[str] = []
    missed: List[str] = []
    for fm in (FM, FM_I):
        parts = []
        for mode in MODES_OF["publish"]:
            a, b = med.get(("publish", mode, fm)), med.get(("publish", mode, NATS))
            if a and b:
                ok = a / b >= 3
                (met if ok else missed).append(f"{fm} {mode} ({a / b:.2f}x)")
                parts.append(f"{mode} {a / b:.2f}x ({'met' if ok else 'not met'})")
        lines.append(f"- {fm}: " + ", ".join(parts))
    lines.append("")
    lines.append(
        "`seq` and `c64` publish one message per call on both sides; "
        f"`b{BATCH}` is each client's batch path: one `stream.write` of {BATCH} events vs "
        f"{BATCH} `js.publish_async` then waiting for the {BATCH} acks."
    )
    lines.append("")
    if met and not missed:
        verdict = "**Target met** in every mode."
    elif met:
        verdict = f"**Target met only for: {'; '.join(met)}. Not met for: {'; '.join(missed)}.**"
    else:
        verdict = "**Target not met** in any mode."
    lines.append(verdict)
    lines.append("")
    lines.append(
        f"Noise: the client and every server share {os.cpu_count()} CPUs, so rounds differ a lot "
        "(see the min-max spreads); compare medians, and only large ratios."
    )
    lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.5)
    ap.add_argument("--quick", action="store_true", help="1 round of 0.5 s (smoke test, no report)")
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.seconds = 1, 0.5
    if args.rounds < 1:
        ap.error("--rounds must be >= 1")
    command = "bench/bindings/python/run.sh " + " ".join(sys.argv[1:])
    flowmesh_bin = os.environ.get("FLOWMESH_BIN", str(ROOT / "target" / "release" / "flowmesh"))

    # SIGTERM (e.g. from timeout) unwinds normally, so the servers are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="fm-bench-py-"))
    servers = Servers(tmp)
    try:
        servers.start_all(flowmesh_bin)
        results = asyncio.run(run(args, servers, tmp))
    finally:
        servers.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = report(results, args, command.strip())
    print(text)
    if not args.quick:
        Path(args.out).write_text(text)
        print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
