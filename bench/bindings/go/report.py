"""Turns the raw `go test -bench` output of run.sh into bench/results/bindings-go.md."""
import datetime
import os
import platform
import re
import statistics
import subprocess
import sys

raw, statfile, rounds, benchtime, fsync = sys.argv[1:6]
LINE = re.compile(r"^Benchmark(\w+)/impl=(\w+)-\d+\s+(\d+)\s+([\d.]+) ns/op")
runs = {}
order = []
for line in open(raw):
    m = LINE.match(line)
    if m:
        key = (m.group(1), m.group(2))
        if m.group(1) not in order:
            order.append(m.group(1))
        runs.setdefault(key, []).append(float(m.group(4)))


def sh(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "n/a"


def cpu():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def mem_gib():
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal"):
            return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "?"


def natsgo():
    for line in open("go.mod"):
        if "nats-io/nats.go " in line:
            return line.split()[-1]
    return "?"


def fmt_ns(v):
    return f"{v / 1000:.1f} µs" if v >= 10000 else f"{v / 1000:.2f} µs"


root = os.path.abspath("../../..")
print("# Go binding vs nats.go (JetStream), loopback\n")
print(f"Date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}  ")
print(f"Command: `bench/bindings/go/run.sh` (ROUNDS={rounds}, BENCHTIME={benchtime}, FM_BENCH_FSYNC={fsync}):"
      f" compiles `go test -c` once, then runs it {rounds} times with `-test.bench . -test.benchtime {benchtime}`;"
      " each round starts fresh servers and runs flowmesh then NATS for every operation, so the two alternate.  ")
print(f"Machine: {cpu()}, {os.cpu_count()} CPUs, {mem_gib()} RAM, Linux {platform.release()}  ")
print(f"Versions: {sh('go', 'version')}; flowmesh {sh(root + '/target/release/flowmesh', '--version').split()[-1]}"
      f" (git {sh('git', '-C', root, 'rev-parse', '--short', 'HEAD')}); {sh('nats-server', '--version') or 'nats-server: missing'};"
      f" nats.go {natsgo()}\n")
print("Setup: one client, one goroutine, 128-byte payloads/values, both servers on 127.0.0.1 with file storage in a temp dir.")
print(f"- flowmesh: `flowmesh serve --data file://DIR --fsync {fsync}`, Go binding over `grpc://`, `context.Background()` (calls run inline).")
print("- NATS: `nats-server -js -sd DIR` (defaults: JetStream syncs to disk every 2 min), nats.go legacy JetStream API,"
      " file-storage stream / KV bucket created per benchmark.")
print("- Publish = `Publish` vs `js.Publish` (wait for the stored ack); PublishAsync = b.N async publishes then"
      " `Flush` vs `PublishAsyncComplete` (max 16384 pending on both); KVSet = `Set` vs `kv.Put`; KVGet = `Get` vs `kv.Get` (same key).\n")
if not runs:
    print("No results (see the benchmark output).")
    sys.exit(0)
print(f"## Results (time per op, median of {rounds} rounds, min–max)\n")
print("| operation | flowmesh | NATS JetStream | NATS / flowmesh time | faster |")
print("|---|---|---|---|---|")
for op in order:
    f, n = runs.get((op, "flowmesh"), []), runs.get((op, "nats"), [])
    fcell = f"{fmt_ns(statistics.median(f))} ({fmt_ns(min(f))}–{fmt_ns(max(f))})" if f else "—"
    ncell = f"{fmt_ns(statistics.median(n))} ({fmt_ns(min(n))}–{fmt_ns(max(n))})" if n else "skipped"
    if f and n:
        r = statistics.median(n) / statistics.median(f)
        ratio, who = f"{r:.2f}", ("flowmesh" if r > 1 else "NATS") + f" {max(r, 1 / r):.1f}×"
    else:
        ratio, who = "—", "—"
    print(f"| {op} | {fcell} | {ncell} | {ratio} | {who} |")
print()
print("Ops/s (median): " + "; ".join(
    f"{op} flowmesh {1e9 / statistics.median(runs[(op, 'flowmesh')]):,.0f}"
    + (f" / NATS {1e9 / statistics.median(runs[(op, 'nats')]):,.0f}" if (op, "nats") in runs else "")
    for op in order if (op, "flowmesh") in runs) + "\n")
stat = open(statfile).read().strip()
if stat:
    print("## benchstat\n")
    print("```")
    print(stat)
    print("```\n")
print("## Raw\n")
print("```")
for line in open(raw):
    if line.startswith("Benchmark"):
        print(line.rstrip())
print("```")
