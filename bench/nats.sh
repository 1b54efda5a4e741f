#!/usr/bin/env bash
# The nats:// engine on one 3-node JetStream cluster (scripts/nats-cluster.sh,
# nats-server v2.15.3), side by side with the same workload written directly
# with async-nats; R1 against R3; 1, 2, 3 gateways (`flowmesh serve --data
# nats://...`) in front of the cluster. Writes bench/results/nats.md
# (median and spread over rounds) and prints it.
#
#   bench/nats.sh [--rounds N] [--secs S] [--sync-interval always|DURATION]
#
# Everything runs on 127.0.0.1 in a temporary directory and is stopped on
# exit. The workload is examples/nats_bench.rs (built here with cargo).
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
ROUNDS=3
SECS=3
SYNC=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift ;;
    --secs) SECS="$2"; shift ;;
    --sync-interval) SYNC="$2"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "nats.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
say() { printf '\033[1m[bench nats]\033[0m %s\n' "$*" >&2; }

RELEASE="$("$ROOT/scripts/target-dir.sh")/release"
FLOWMESH="$RELEASE/flowmesh"
say "building flowmesh and examples/nats_bench.rs"
(cd "$ROOT" && cargo build --release --quiet --bin flowmesh --example nats_bench)
NATS_BENCH="$RELEASE/examples/nats_bench"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/fm-bench-nats-XXXXXX")"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  NATS_CLUSTER_DIR="$WORK/cluster" "$ROOT/scripts/nats-cluster.sh" wipe >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "starting a 3-node cluster (sync_interval: ${SYNC:-server default})"
URL="$(NATS_CLUSTER_DIR="$WORK/cluster" NATS_NODES=3 NATS_SYNC_INTERVAL="$SYNC" "$ROOT/scripts/nats-cluster.sh" start)"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
GATEWAYS=""
for i in 1 2 3; do
  port="$(free_port)"
  "$FLOWMESH" serve --listen "127.0.0.1:$port" --data "$URL" >"$WORK/gateway$i.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  GATEWAYS="$GATEWAYS${GATEWAYS:+,}grpc://127.0.0.1:$port"
done

say "running $ROUNDS rounds of ${SECS} s cells"
mkdir -p "$BENCH/results"
{
  echo "flowmesh $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo unknown), $("$("$ROOT/scripts/nats-server.sh")" --version), $(nproc) cores"
  echo
  timeout 1800 "$NATS_BENCH" "$URL" "$GATEWAYS" "$ROUNDS" "$SECS" "${SYNC:-server default, 2 min}"
} >"$BENCH/results/nats.md"
cat "$BENCH/results/nats.md"
