#!/usr/bin/env bash
# Publish throughput of one C thread per delivery tier (bench/tiers/tiers_bench.c
# over fm_publish_with) on mem:// and on one nats-server, beside async-nats
# core publishes to the same server (examples/nats_core_publish.rs) in the
# same run. Writes bench/results/tiers.md (median and min..max over rounds).
#
#   bench/tiers.sh [--rounds N]
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
ROUNDS=5
[ "${1:-}" = "--rounds" ] && ROUNDS="$2"
REL="$("$ROOT/scripts/target-dir.sh")/release"
WORK="$(mktemp -d)"
NATS_PID=""
cleanup() { [ -n "$NATS_PID" ] && kill "$NATS_PID" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
say() { printf '[bench tiers] %s\n' "$*" >&2; }

cc -O2 -std=c11 -D_GNU_SOURCE -I"$ROOT/include" "$BENCH/tiers/tiers_bench.c" -o "$WORK/tiers_bench" \
  -L"$REL" -Wl,-rpath,"$REL" -lflowmesh -lpthread
(cd "$ROOT" && cargo build --release --example nats_core_publish >&2)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$("$ROOT/scripts/nats-server.sh")" -a 127.0.0.1 -p "$PORT" -js -sd "$WORK/js" >"$WORK/nats.log" 2>&1 &
NATS_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.1; done
NATS="nats://127.0.0.1:$PORT"

# name | command (prints "<msgs> <secs> <msg/s> ...")
CASES=(
  "mem:// memory|$WORK/tiers_bench mem:// memory 1000000"
  "mem:// memory, 1 live subscriber|$WORK/tiers_bench mem:// memory 1000000 128 1"
  "mem:// persistent|$WORK/tiers_bench mem:// persistent 300000"
  "nats:// memory (core NATS publish)|$WORK/tiers_bench $NATS memory 1000000"
  "async-nats core publish (same server)|$REL/examples/nats_core_publish $NATS 1000000"
  "nats:// memory + require_ack|$WORK/tiers_bench $NATS memory-ack 20000"
  "nats:// persistent (JetStream ack each)|$WORK/tiers_bench $NATS persistent 20000"
)
declare -A RESULTS
for r in $(seq "$ROUNDS"); do
  for c in "${CASES[@]}"; do
    name="${c%%|*}"; cmd="${c#*|}"
    rate="$($cmd | awk '{print $3}')"
    RESULTS["$name"]+="$rate "
    say "round $r: $name: $rate msg/s"
  done
done
OUT="$BENCH/results/tiers.md"
{
  echo "# Delivery tiers: publish throughput of one thread"
  echo
  echo "flowmesh $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown), $("$("$ROOT/scripts/nats-server.sh")" --version), $(nproc) cores, 128-byte payloads, $ROUNDS rounds (bench/tiers.sh)."
  echo
  echo "| case | median msg/s | min .. max |"
  echo "|---|---:|---:|"
  for c in "${CASES[@]}"; do
    name="${c%%|*}"
    echo "${RESULTS[$name]}" | tr ' ' '\n' | grep . | sort -n | awk -v name="$name" '
      { v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2;
        printf "| %s | %.0f | %.0f .. %.0f |\n", name, m, v[1], v[NR] }'
  done
} >"$OUT"
cat "$OUT"
