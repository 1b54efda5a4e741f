#!/usr/bin/env python3
"""Turns the harness's JSON lines into bench/BENCHMARKS.md and PNG plots.

Every (workload, case, system) cell was measured once per round, the systems
alternating; we report the median over rounds and the spread (min-max), and
the ratio flowmesh/peer of the medians.
"""
import argparse
import json
import os
import statistics
from collections import OrderedDict

# The section on the nats:// engine; its figures come from bench/results/nats.md.
NATS_INTRO = ("`bench/nats.sh` (examples/nats_bench.rs): the `nats://` engine against the same workload written "
              "directly with async-nats on the same 3-node nats-server v2.15.3 cluster (the mapping's overhead; "
              "target <= 1.3x), the engine with replicas=1 against replicas=3, and three producers spread over 1, 2 "
              "and 3 gateways (`flowmesh serve --data nats://...`). Cluster, gateways and client share the machine, "
              "so adding gateways on it adds no cores: the cluster is the limit here. The sync_interval each "
              "figure used is in the first line below (docs/SCALING.md explains what it means).\n")

WORKLOADS = OrderedDict([
    ("publish_latency", ("1. Stream publish, single in-flight latency (and 6. payload sizes)",
                         "Each publish waits for its acknowledgement before the next is sent. "
                         "Redis SET is the reference round trip named by the latency target.")),
    ("publish_throughput", ("1. Stream publish, pipelined / batched throughput (and 6. payload sizes)",
                            "flowmesh: `publish_batch` of N records per call, or N single publishes in flight; "
                            "JetStream: async publish with N acks outstanding. N = 256 (64 for 64 KiB). "
                            "Each producer has its own connection/client; all write one stream (one partition).")),
    ("memory_latency", ("7. Memory tier: single in-flight publish latency",
                        "flowmesh: a stream created with tier=memory (no disk, bounded, fan-out), each publish awaited. "
                        "NATS core: publish + flush (one round trip to the server, no JetStream, no storage).")),
    ("memory_throughput", ("7. Memory tier: pipelined publish throughput",
                           "flowmesh: 256 publishes in flight to a tier=memory stream. "
                           "NATS core: fire-and-forget publishes, flushed every 256.")),
    ("consume", ("2. Consume with commit from a durable consumer group",
                 "The stream is prefilled (not timed); then a durable group reads everything from the start. "
                 "flowmesh commits the group offset every 256 messages and at the end (offsets are cumulative); "
                 "JetStream: durable pull consumer, `AckExplicit`, every message acked, the last one with a double ack.")),
    ("queue_throughput", ("3. Queue enqueue → reserve → ack, throughput",
                          "One producer (256 enqueues in flight) and one worker (receive up to 256, ack each) run for the cell duration; jobs acked per second. "
                          "JetStream: a `WorkQueue` stream, async publish, durable pull consumer with explicit ack.")),
    ("queue_rtt", ("3. Queue enqueue → reserve → ack, one job at a time (round-trip latency)",
                   "flowmesh: enqueue, reserve, ack, each awaited. JetStream: publish (acked), pull one, double ack.")),
    ("kv_set", ("4. KV set", "Each client has one operation in flight over 1000 keys; every client has its own connection.")),
    ("kv_get", ("4. KV get", "Keys preloaded (not timed); each client has one get in flight.")),
    ("capi_append", ("5. Embedded engine through the C ABI: batched append",
                     "`fm_publish_batch` with 1000 messages of 128 B per call, one thread, no network. Target ≥ 2M msg/s.")),
    ("capi_queue", ("5. Embedded engine through the C ABI: queue",
                    "mem://, `fm_queue_enqueue` per job, `fm_queue_receive` (or `fm_queue_reserve`) and `fm_queue_ack` per job. Target ≥ 500k jobs/s.")),
    ("ffi_overhead", ("5. FFI overhead per call",
                      "The same call, same engine (a named mem://), same run: through the C ABI (`fm_*` called directly), "
                      "through `BlockingClient::block_on(client.op())` (exactly what the C ABI forwards to), and through "
                      "the async Rust API awaited in one loop. Added = C ABI − path. Target < 200 ns added per call.")),
])

LAT_WORKLOADS = {"publish_latency", "queue_rtt", "kv_set", "kv_get", "memory_latency"}


def is_fm(system):
    return system.startswith("flowmesh") or system.startswith("C ABI") or system.startswith("Rust")


def peer_key(system):
    if system.startswith("NATS"):
        return "NATS"
    if system.startswith("Redis"):
        return "Redis"
    return None


def load(path):
    cells, notes = [], []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            d = json.loads(line)
            (notes if "note" in d else cells).append(d)
    return cells, notes


def group(cells):
    """workload -> case -> system -> [cells]"""
    g = OrderedDict()
    for c in cells:
        g.setdefault(c["workload"], OrderedDict()).setdefault(c["case"], OrderedDict()).setdefault(c["system"], []).append(c)
    return g


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def agg(rows, key):
    vals = [r.get(key) for r in rows if r.get(key) is not None]
    if not vals:
        return None
    return {"med": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt_num(v, unit=""):
    if v is None:
        return "–"
    if abs(v) >= 1e6:
        s = f"{v / 1e6:.2f}M"
    elif abs(v) >= 1e4:
        s = f"{v / 1e3:.0f}k"
    elif abs(v) >= 1e3:
        s = f"{v / 1e3:.1f}k"
    elif abs(v) >= 100:
        s = f"{v:.0f}"
    elif abs(v) >= 10:
        s = f"{v:.1f}"
    else:
        s = f"{v:.2f}"
    return s + unit


def fmt_agg(a, unit=""):
    if a is None:
        return "–"
    spread = ""
    if a["n"] > 1 and a["med"]:
        rel = (a["max"] - a["min"]) / 2 / a["med"] * 100
        spread = f" ±{rel:.0f}%"
    return f"{fmt_num(a['med'], unit)}{spread}"


def fmt_ratio(r, better_high=True):
    if r is None:
        return "–"
    return f"{r:.2f}×"


def ratio(a, b):
    if a is None or b is None or not b["med"]:
        return None
    return a["med"] / b["med"]


def table(workload, cases, out):
    lat = workload in LAT_WORKLOADS
    for case, systems in cases.items():
        peers = OrderedDict()
        for s, rows in systems.items():
            pk = peer_key(s)
            if pk and pk not in peers:
                peers[pk] = rows
        out.append(f"**{case}** — rounds: {max(len(r) for r in systems.values())}\n")
        if workload == "ffi_overhead":
            out.append("| path | ns per call (median of rounds ±half-range) | min–max | C ABI minus this path |")
            out.append("|---|---|---|---|")
            c_abi = next((agg(r, "ns_per_call") for s, r in systems.items() if s.startswith("C ABI")), None)
            for s, rows in systems.items():
                a = agg(rows, "ns_per_call")
                added = "–" if s.startswith("C ABI") or c_abi is None else f"{c_abi['med'] - a['med']:+.0f} ns"
                out.append(f"| {s} | {fmt_agg(a, ' ns')} | {a['min']:.0f}–{a['max']:.0f} | {added} |")
            out.append("")
            continue
        head = ["system", "ops/s (median ±half-range)", "min–max"]
        if any(r.get("mb_per_sec") for rows in systems.values() for r in rows):
            head.append("MB/s")
        if lat:
            head += ["p50 µs", "p99 µs", "p999 µs", "samples/round"]
        for pk in peers:
            head.append(f"ops/s ÷ {pk}")
            if lat:
                head.append(f"p50 ÷ {pk}")
                head.append(f"p99 ÷ {pk}")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for s, rows in systems.items():
            t = agg(rows, "ops_per_sec")
            cols = [s, fmt_agg(t), f"{fmt_num(t['min'])}–{fmt_num(t['max'])}"]
            if "MB/s" in head:
                cols.append(fmt_num((agg(rows, "mb_per_sec") or {}).get("med")))
            if lat:
                for k in ("p50_us", "p99_us", "p999_us"):
                    cols.append(fmt_agg(agg(rows, k)))
                cols.append(fmt_num(med([r.get("samples") for r in rows])))
            for pk, prow in peers.items():
                if is_fm(s):
                    cols.append(fmt_ratio(ratio(t, agg(prow, "ops_per_sec"))))
                    if lat:
                        cols.append(fmt_ratio(ratio(agg(rows, "p50_us"), agg(prow, "p50_us"))))
                        cols.append(fmt_ratio(ratio(agg(rows, "p99_us"), agg(prow, "p99_us"))))
                else:
                    cols += [""] * (3 if lat else 1)
            out.append("| " + " | ".join(cols) + " |")
        out.append("")


def find(g, workload, case_prefix, sys_pred):
    for case, systems in g.get(workload, {}).items():
        if not case.startswith(case_prefix):
            continue
        for s, rows in systems.items():
            if sys_pred(s):
                return rows
    return None


def targets(g):
    """(target, measured, verdict) rows for the project's performance targets."""
    res = []

    def verdict(ok):
        return "**met**" if ok else "**missed**"

    fm_variants = [("embedded fsync=batch", lambda s: s.startswith("flowmesh embedded fsync=batch")),
                   ("embedded fsync=interval", lambda s: s.startswith("flowmesh embedded fsync=interval")),
                   ("gRPC broker fsync=batch", lambda s: s.startswith("flowmesh gRPC broker fsync=batch")),
                   ("gRPC broker fsync=interval", lambda s: s.startswith("flowmesh gRPC broker fsync=interval"))]
    nats = lambda s: s.startswith("NATS")
    redis = lambda s: s.startswith("Redis")
    for name, pred in fm_variants:
        for prod in ("1 producer", "4 producers"):
            cases = g.get("publish_throughput", {})
            case = next((c for c in cases if c.startswith("128 B") and c.endswith(prod)), None)
            if not case:
                continue
            fm_best = None
            for s, rows in cases[case].items():
                if pred(s):
                    a = agg(rows, "ops_per_sec")
                    if fm_best is None or a["med"] > fm_best[1]["med"]:
                        fm_best = (s, a)
            peer = next((agg(r, "ops_per_sec") for s, r in cases[case].items() if nats(s)), None)
            window = next((agg(r, "ops_per_sec") for s, r in cases[case].items() if pred(s) and s.endswith("256 in flight")), None)
            batch = next((agg(r, "ops_per_sec") for s, r in cases[case].items() if pred(s) and s.endswith("batch 256")), None)
            if window and batch and name.endswith("fsync=batch"):
                r = ratio(window, batch)
                res.append((f"256 durable publishes in flight ≥ 0.5× batches of 256 ({prod}), {name}",
                            f"{fmt_num(window['med'])} vs {fmt_num(batch['med'])} msg/s = {r:.2f}×", verdict(r >= 0.5)))
            if fm_best and peer:
                r = ratio(fm_best[1], peer)
                res.append((f"pipelined durable publish ≥ 2× JetStream async ({prod}), {name}",
                            f"{fmt_num(fm_best[1]['med'])} vs {fmt_num(peer['med'])} msg/s = {r:.2f}×", verdict(r >= 2)))
        lat = find(g, "publish_latency", "128 B", pred)
        rset = find(g, "publish_latency", "128 B", redis)
        nlat = find(g, "publish_latency", "128 B", nats)
        if lat and rset:
            r = ratio(agg(lat, "p50_us"), agg(rset, "p50_us"))
            res.append((f"single publish p50 ≤ 1.2× Redis SET RTT, {name}",
                        f"{agg(lat, 'p50_us')['med']:.1f} vs {agg(rset, 'p50_us')['med']:.1f} µs = {r:.2f}×", verdict(r <= 1.2)))
        if lat and nlat:
            r = ratio(agg(lat, "p99_us"), agg(nlat, "p99_us"))
            res.append((f"single publish p99 ≤ ½ JetStream p99, {name}",
                        f"{agg(lat, 'p99_us')['med']:.1f} vs {agg(nlat, 'p99_us')['med']:.1f} µs = {r:.2f}×", verdict(r <= 0.5)))
        if name.startswith("gRPC broker") and lat:
            p50, p99 = agg(lat, "p50_us")["med"], agg(lat, "p99_us")["med"]
            res.append((f"broker single publish round trip p50 < 100 µs, p99 < 500 µs, {name}",
                        f"p50 {p50:.1f} µs, p99 {p99:.1f} µs", verdict(p50 < 100 and p99 < 500)))
        c = find(g, "consume", "", pred)
        cn = find(g, "consume", "", nats)
        if c and cn:
            r = ratio(agg(c, "ops_per_sec"), agg(cn, "ops_per_sec"))
            res.append((f"durable consume with commit ≥ 2× JetStream pull+ack, {name}",
                        f"{fmt_num(agg(c, 'ops_per_sec')['med'])} vs {fmt_num(agg(cn, 'ops_per_sec')['med'])} msg/s = {r:.2f}×", verdict(r >= 2)))
        for op in ("kv_set", "kv_get"):
            for clients in ("1 client", "16 clients"):
                f = find(g, op, f"128 B, {clients}", pred)
                rr = find(g, op, f"128 B, {clients}", redis)
                if f and rr:
                    r = ratio(agg(f, "ops_per_sec"), agg(rr, "ops_per_sec"))
                    res.append((f"{op.replace('_', ' ')} ≥ Redis, {clients}, {name}",
                                f"{fmt_num(agg(f, 'ops_per_sec')['med'])} vs {fmt_num(agg(rr, 'ops_per_sec')['med'])} ops/s = {r:.2f}×", verdict(r >= 1)))
                nn = find(g, op, f"128 B, {clients}", nats)
                if op == "kv_set" and f and nn:
                    r = ratio(agg(f, "ops_per_sec"), agg(nn, "ops_per_sec"))
                    res.append((f"kv set ≥ 3× JetStream KV put, {clients}, {name}",
                                f"{fmt_num(agg(f, 'ops_per_sec')['med'])} vs {fmt_num(agg(nn, 'ops_per_sec')['med'])} ops/s = {r:.2f}×", verdict(r >= 3)))
        one = find(g, "kv_set", "128 B, 1 client", pred)
        many = find(g, "kv_set", "128 B, 16 clients", pred)
        if one and many and name.endswith("fsync=batch"):
            r = ratio(agg(many, "ops_per_sec"), agg(one, "ops_per_sec"))
            res.append((f"kv set, 16 clients ≥ 8× one client (shared fsyncs), {name}",
                        f"{fmt_num(agg(many, 'ops_per_sec')['med'])} vs {fmt_num(agg(one, 'ops_per_sec')['med'])} ops/s = {r:.2f}×", verdict(r >= 8)))
    for case, systems in g.get("capi_append", {}).items():
        for s, rows in systems.items():
            a = agg(rows, "ops_per_sec")
            res.append((f"C ABI batched append ≥ 2M msg/s ({case})", f"{fmt_num(a['med'])} msg/s", verdict(a["med"] >= 2e6)))
    for case, systems in g.get("capi_queue", {}).items():
        for s, rows in systems.items():
            a = agg(rows, "ops_per_sec")
            res.append((f"queue enqueue→reserve→ack ≥ 500k jobs/s on mem:// ({s})", f"{fmt_num(a['med'])} jobs/s", verdict(a["med"] >= 5e5)))
    for case, systems in g.get("ffi_overhead", {}).items():
        c = next((agg(r, "ns_per_call") for s, r in systems.items() if s.startswith("C ABI")), None)
        b = next((agg(r, "ns_per_call") for s, r in systems.items() if s.startswith("Rust blocking")), None)
        a = next((agg(r, "ns_per_call") for s, r in systems.items() if s.startswith("Rust async")), None)
        name = case.split(",")[0]
        if c and a:
            added = c["med"] - a["med"]
            res.append((f"FFI overhead < 200 ns per call ({name}): C ABI vs the async Rust API",
                        f"C ABI {c['med']:.0f} ns vs Rust `Client` awaited in a loop {a['med']:.0f} ns: {added:+.0f} ns", verdict(added < 200)))
        if c and b:
            added = c["med"] - b["med"]
            res.append((f"… of which the C ABI layer itself ({name}): C ABI vs `BlockingClient::block_on` per call",
                        f"C ABI {c['med']:.0f} ns vs Rust blocking {b['med']:.0f} ns: {added:+.0f} ns", verdict(added < 200)))
    return res


def plots(g, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    made = []

    def short(s):
        return (s.replace("flowmesh embedded ", "fm emb ").replace("flowmesh gRPC broker", "fm gRPC")
                .replace("NATS JetStream", "JetStream").replace(" (reference RTT)", "")
                .replace("(appendfsync everysec)", "").replace("flowmesh C ABI ", ""))

    def color(s):
        if s.startswith("NATS"):
            return "#2b7bba"
        if s.startswith("Redis"):
            return "#c0392b"
        if "gRPC" in s:
            return "#af7ac5" if "interval" in s else "#6c3483"
        if "interval" in s:
            return "#52be80"
        return "#1e8449"

    def bars(fname, title, groups, key, ylabel, log=False):
        # groups: [(case label, OrderedDict(system -> rows))]
        groups = [(c, s) for c, s in groups if s]
        if not groups:
            return
        n = max(len(s) for _, s in groups)
        fig, axes = plt.subplots(1, len(groups), figsize=(max(5, 4.2 * len(groups)), 5.4), squeeze=False)
        for ax, (case, systems) in zip(axes[0], groups):
            names = list(systems)
            meds, lo, hi = [], [], []
            for s in names:
                a = agg(systems[s], key)
                meds.append(a["med"] if a else 0)
                lo.append((a["med"] - a["min"]) if a else 0)
                hi.append((a["max"] - a["med"]) if a else 0)
            x = range(len(names))
            ax.bar(x, meds, yerr=[lo, hi], capsize=3, color=[color(s) for s in names])
            ax.set_xticks(list(x))
            ax.set_xticklabels([short(s) for s in names], rotation=35, ha="right", fontsize=7)
            ax.set_title(case, fontsize=9)
            if log:
                ax.set_yscale("log")
            ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(axis="y", labelsize=8)
            ax.grid(axis="y", alpha=0.3)
        fig.suptitle(title + " — median of rounds, bars = min–max", fontsize=10)
        fig.tight_layout()
        path = os.path.join(outdir, fname)
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append((title, fname))

    def pct(fname, title, groups):
        groups = [(c, s) for c, s in groups if s]
        if not groups:
            return
        fig, axes = plt.subplots(1, len(groups), figsize=(max(5, 4.4 * len(groups)), 4.8), squeeze=False)
        for ax, (case, systems) in zip(axes[0], groups):
            names = list(systems)
            w = 0.8 / 3
            for i, (k, lab) in enumerate((("p50_us", "p50"), ("p99_us", "p99"), ("p999_us", "p99.9"))):
                vals = [(agg(systems[s], k) or {"med": 0})["med"] for s in names]
                ax.bar([j + (i - 1) * w for j in range(len(names))], vals, w, label=lab,
                       color=["#aed6f1", "#3498db", "#1b4f72"][i])
            ax.set_xticks(list(range(len(names))))
            ax.set_xticklabels([short(s) for s in names], rotation=35, ha="right", fontsize=7)
            ax.set_yscale("log")
            ax.set_ylabel("µs (log)", fontsize=8)
            ax.set_title(case, fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(title + " — latency percentiles (median of rounds)", fontsize=10)
        fig.tight_layout()
        fig.savefig(os.path.join(outdir, fname), dpi=110)
        plt.close(fig)
        made.append((title, fname))

    def cases(w, pred=lambda c: True):
        return [(c, s) for c, s in g.get(w, {}).items() if pred(c)]

    bars("publish_throughput.png", "Stream publish throughput (128 B)",
         cases("publish_throughput", lambda c: c.startswith("128 B")), "ops_per_sec", "msg/s (log)", log=True)
    bars("publish_throughput_sizes.png", "Publish throughput by payload size (1 producer)",
         cases("publish_throughput", lambda c: not c.startswith("128 B")), "mb_per_sec", "MB/s (log)", log=True)
    pct("publish_latency.png", "Single publish (1 in flight)", cases("publish_latency"))
    bars("consume_queue.png", "Consume with commit, queue round trips",
         cases("consume") + cases("queue_throughput"), "ops_per_sec", "msg/s or jobs/s (log)", log=True)
    pct("queue_latency.png", "Queue enqueue→reserve→ack, one at a time", cases("queue_rtt"))
    bars("kv_throughput.png", "KV set / get", [(f"{w.split('_')[1]}: {c}", s) for w in ("kv_set", "kv_get") for c, s in g.get(w, {}).items()],
         "ops_per_sec", "ops/s (log)", log=True)
    pct("kv_latency.png", "KV set / get", [(f"{w.split('_')[1]}: {c}", s) for w in ("kv_set", "kv_get") for c, s in g.get(w, {}).items()])
    bars("capi.png", "Embedded engine through the C ABI", cases("capi_append") + cases("capi_queue"), "ops_per_sec", "msg/s or jobs/s")
    bars("ffi_overhead.png", "FFI overhead", cases("ffi_overhead"), "ns_per_call", "ns per call")
    return made


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--report", required=True)
    ap.add_argument("--plots", required=True)
    ap.add_argument("--profile")
    ap.add_argument("--profile-notes")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args()
    cells, notes = load(a.raw)
    meta = json.load(open(a.meta))
    params = next((n["value"] for n in notes if n["note"] == "params"), {})
    errors = [n["value"] for n in notes if n["note"] == "error"]
    g = group(cells)
    made = [] if a.no_plots else plots(g, a.plots)
    rel = os.path.relpath(a.plots, os.path.dirname(os.path.abspath(a.report)))

    out = ["# flowmesh benchmarks", ""]
    out.append("Generated by `bench/run.sh` (the harness is `bench/harness`, the report `bench/report.py`); "
               "do not edit by hand: re-run the command below.\n")
    if meta.get("quick"):
        out.append("> **Quick mode** (`--quick`): short cells, for development only — do not quote these numbers.\n")
    if meta.get("harness_rc"):
        out.append(f"> **Incomplete run**: the harness exited with status {meta['harness_rc']} (124 = stopped at the time limit); only the cells that finished are reported.\n")
    out.append("## Run\n")
    out.append(f"- Command: `{meta['command']}` (`make bench`{' / `make bench-quick`' if meta.get('quick') else ''})")
    out.append(f"- Date: {meta['date']}")
    out.append(f"- Machine: {meta['cpu']}, {meta['nproc']} cores (nproc), {meta.get('mhz', '?')} MHz, cache {meta.get('cache', '?')}, "
               f"{meta['mem']} RAM, Linux {meta['kernel']}, disk {meta['disk']}; a shared, noisy VM: "
               "every system runs on the same 2 cores as the harness.")
    out.append(f"- Versions: flowmesh {meta['flowmesh']} ({meta['rustc']}); {meta['nats_server']} (Debian); "
               f"{meta['redis_server']} (Debian); clients: async-nats {meta['async_nats']}, redis-rs {meta['redis_crate']}.")
    out.append(f"- Rounds: {params.get('rounds')} per case; in each round every system runs once, the order rotating; "
               f"timed cells of {params.get('dur_ms')} ms ({params.get('size_dur_ms')} ms for the payload-size cases) "
               "unless a count is named. Reported: median over rounds, ±half the min–max range as % of the median, "
               "and min–max; ratios are ratios of medians, flowmesh ÷ peer (for latency, < 1 is better).")
    out.append(f"- flowmesh gRPC broker: {meta['broker']}.")
    out.append("")
    out.append("### Durability (fsync policy) of each system\n")
    out.append("| system | storage | fsync policy |")
    out.append("|---|---|---|")
    out.append("| flowmesh embedded fsync=batch | `file://` segment log in a fresh temp dir per cell | fsync before each call returns (concurrent calls share one fsync) — survives power loss |")
    out.append("| flowmesh embedded fsync=interval | same | background fsync every 1000 ms (`fsync_interval_ms=1000`) — survives a process crash, a power loss may lose ≤ 1 s |")
    out.append(f"| flowmesh gRPC broker fsync=batch / fsync=interval | two brokers, {meta['broker']} | as the embedded rows of the same name |")
    out.append(f"| NATS JetStream ({meta.get('nats_server', '?')}) | file storage, `store_dir` in the temp dir | server default: writes reach the OS page cache on every publish, fsync in the background every 2 min (default `sync_interval`) — like flowmesh interval, not like batch |")
    out.append("| Redis 7.0 | `appendonly yes`, `appendfsync everysec`, RDB snapshots off | fsync of the AOF once per second |")
    out.append("")
    out.append("The durable flowmesh default (fsync=batch) gives a stronger guarantee than both peers; "
               "fsync=interval is the like-for-like comparison.\n")

    out.append("## Targets\n")
    tg = targets(g)
    if tg:
        out.append("| target | measured (medians) | verdict |")
        out.append("|---|---|---|")
        for t, m, v in tg:
            out.append(f"| {t} | {m} | {v} |")
    out.append("")
    out.append("Embedded rows compare an in-process library with network servers: they show what a program linking "
               "flowmesh gets, not a like-for-like server comparison; the gRPC broker rows are that comparison.\n")

    if made:
        out.append("## Plots\n")
        for title, f in made:
            out.append(f"![{title}]({os.path.join(rel, f) if rel != '.' else f})")
        out.append("")

    out.append("## Results by workload\n")
    for w, (title, desc) in WORKLOADS.items():
        if w not in g:
            continue
        out.append(f"### {title}\n")
        out.append(desc + "\n")
        table(w, g[w], out)

    if errors:
        out.append("## Errors during the run\n")
        for e in errors:
            out.append(f"- {e['workload']} / {e['case']} / {e['system']}: `{e['error'][:300]}`")
        out.append("")

    out.append("## Profile\n")
    if a.profile_notes and os.path.exists(a.profile_notes):
        out.append(open(a.profile_notes).read().rstrip() + "\n")
    if a.profile and os.path.exists(a.profile):
        out.append(open(a.profile).read().rstrip() + "\n")
    else:
        out.append("Run `bench/profile.sh` to (re)generate the profile data.\n")
    bindings = [(lang, f"results/bindings-{lang}.md") for lang in ("python", "go", "node")]
    here = os.path.dirname(os.path.abspath(a.report))
    # The store benchmark (examples/store_bench.rs) is recorded by hand in results/store.md.
    store = os.path.join(here, "results", "store.md")
    if os.path.exists(store):
        out.append(open(store).read().rstrip() + "\n")
    present = [(l, p) for l, p in bindings if os.path.exists(os.path.join(here, p))]
    if present:
        out.append("## Bindings\n")
        out.append("Each binding is measured against the official NATS JetStream (and Redis) client of its language, "
                   "in the same run, by its own script in `bench/bindings/`: "
                   + ", ".join(f"[{l}]({p})" for l, p in present) + ".\n")
    lax = os.path.join(here, "results", "lax.md")
    if os.path.exists(lax):
        # Written by bench/lax/run.sh (make bench-lax), kept across full runs: its targets table.
        text = open(lax).read()
        lax_targets = text[text.find("## Targets"):] if "## Targets" in text else ""
        out.append("### The Python LAX client (`flowmesh.lax`) vs nats-py\n")
        out.append("By `bench/lax/run.sh` on one nats-server and a flowmesh broker: [results/lax.md](results/lax.md).\n")
        out.append(lax_targets.replace("## Targets", "").strip() + "\n")
    nats = os.path.join(here, "results", "nats.md")
    if os.path.exists(nats):
        # Written by bench/nats.sh (its own cluster and gateways), kept across full runs.
        out.append("## nats:// on a 3-node cluster\n")
        out.append(NATS_INTRO + "\n" + open(nats).read().rstrip() + "\n")
    out.append("## How to reproduce\n")
    out.append("`make bench` (full, writes this file) or `make bench-quick` (about 2 minutes, writes bench/results/quick/). "
               "Raw per-round numbers: `raw.jsonl` next to the plots. Peers are installed from Debian if missing and "
               "started on free 127.0.0.1 ports in a temporary directory, then stopped.\n")
    with open(a.report, "w") as f:
        f.write("\n".join(out))


if __name__ == "__main__":
    main()
