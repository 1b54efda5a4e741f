#!/usr/bin/env bash
# flowmesh benchmarks side by side with NATS JetStream and Redis.
#
#   bench/run.sh            full run  -> bench/BENCHMARKS.md, bench/results/*.png
#   bench/run.sh --quick    about 2 minutes -> bench/results/quick/ (development)
#
# Options: --quick, --rounds N, --only w1,w2,... (w1 publish, w2 consume,
# w3 queue, w4 KV, w5 C ABI, w6 payload sizes, w7 memory tier vs NATS core),
# --no-grpc, --out-dir DIR.
#
# It installs Redis from Debian if missing (nats-server v2.15.3 comes from
# scripts/nats-server.sh), starts them itself on free
# loopback ports in a temporary directory (nats-server with JetStream file
# storage; redis-server with appendonly yes + appendfsync everysec), starts
# the flowmesh broker (target/release/flowmesh serve), runs the
# Rust harness in bench/harness, stops everything it started, and writes
# the report and plots. Everything is bounded in time; only 127.0.0.1 is used.
set -euo pipefail

BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$BENCH/.." && pwd)"
QUICK=0
ROUNDS=""
ONLY="w1,w2,w3,w4,w5,w6,w7"
GRPC=1
OUT_DIR=""
ARGS_ORIG="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) QUICK=1 ;;
    --rounds) ROUNDS="$2"; shift ;;
    --only) ONLY="$2"; shift ;;
    --no-grpc) GRPC=0 ;;
    --out-dir) OUT_DIR="$2"; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$OUT_DIR" ]; then
  if [ "$QUICK" = 1 ]; then OUT_DIR="$BENCH/results/quick"; else OUT_DIR="$BENCH/results"; fi
fi
mkdir -p "$OUT_DIR"
if [ "$QUICK" = 1 ]; then REPORT="$OUT_DIR/BENCHMARKS.md"; HARD_LIMIT=170; else REPORT="$BENCH/BENCHMARKS.md"; HARD_LIMIT=2400; fi

say() { printf '\033[1m[bench]\033[0m %s\n' "$*" >&2; }
T0=$(date +%s)

# ---- 1. peers and tools ---------------------------------------------------
# nats-server v2.15.3, the release users run (built once into a cache by
# scripts/nats-server.sh); Redis from Debian.
NATS_SERVER="$("$ROOT/scripts/nats-server.sh")"
need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  say "installing ${need_apt[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  timeout 300 apt-get update -qq
  timeout 600 apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
# The Debian package may start a system redis; we never use it (own port, own dir).
PLOTS=1
if ! python3 -c 'import matplotlib' >/dev/null 2>&1; then
  say "installing matplotlib (pip)"
  timeout 300 python3 -m pip install -q matplotlib >/dev/null 2>&1 || { say "matplotlib unavailable: report without plots"; PLOTS=0; }
fi

# ---- 2. harness --------------------------------------------------------------
say "building the harness (bench/harness, release)"
FMBENCH="$BENCH/harness/target/release/fmbench"
STALE=""
if ! ( cd "$BENCH/harness" && timeout 1200 cargo build --release -q ); then
  if [ -x "$FMBENCH" ] && [ "${FMBENCH_ALLOW_STALE:-0}" = 1 ]; then
    say "WARNING: harness build failed; FMBENCH_ALLOW_STALE=1, using the previous binary"
    STALE=" (STALE harness binary: the build of the current tree failed)"
  else
    say "harness build failed (set FMBENCH_ALLOW_STALE=1 to run the previous binary)"; exit 1
  fi
fi

# ---- 3. scratch dir, ports, cleanup -----------------------------------------
WORK="$(mktemp -d /tmp/fmbench.XXXXXX)"
PIDS=()
cleanup() {
  local rc=$?
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]:-}"; do
    [ -n "$pid" ] || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$WORK"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
wait_port() { # port, name, pid
  for _ in $(seq 1 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    kill -0 "$3" 2>/dev/null || { echo "$2 exited; log:" >&2; cat "$WORK/$2.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$2 did not listen on 127.0.0.1:$1 within 10 s" >&2; cat "$WORK/$2.log" >&2; exit 1
}

NATS_PORT=$(free_port)
mkdir -p "$WORK/nats"
cat > "$WORK/nats.conf" <<EOF
listen: 127.0.0.1:$NATS_PORT
max_payload: 1MB
jetstream {
  store_dir: "$WORK/nats"
  max_memory_store: 256MB
  max_file_store: 20GB
}
EOF
say "starting nats-server (JetStream, file storage) on 127.0.0.1:$NATS_PORT"
"$NATS_SERVER" -c "$WORK/nats.conf" > "$WORK/nats.log" 2>&1 &
PIDS+=($!); wait_port "$NATS_PORT" nats "$!"

REDIS_PORT=$(free_port)
mkdir -p "$WORK/redis"
say "starting redis-server (appendonly yes, appendfsync everysec, no RDB) on 127.0.0.1:$REDIS_PORT"
redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$WORK/redis" \
  --appendonly yes --appendfsync everysec --save "" --daemonize no \
  --protected-mode yes --logfile "$WORK/redis.log" &
PIDS+=($!); wait_port "$REDIS_PORT" redis "$!"

GRPC_ARGS=()
BROKER_NOTE="not available (target/release/flowmesh has no serve command)"
start_broker() { # name fsync -> prints port
  local name=$1 fsync=$2 port extra=()
  port=$(free_port)
  mkdir -p "$WORK/$name"
  if "$ROOT/target/release/flowmesh" serve --help 2>/dev/null | grep -q -- '--fsync-interval-ms'; then
    [ "$fsync" = interval ] && extra=(--fsync-interval-ms 1000)
  fi
  "$ROOT/target/release/flowmesh" serve --listen "127.0.0.1:$port" --data "file://$WORK/$name" \
    --fsync "$fsync" "${extra[@]}" > "$WORK/$name.log" 2>&1 &
  PIDS+=($!); wait_port "$port" "$name" "$!"
  BROKER_PORT=$port
  BROKER_ARGS="--fsync $fsync ${extra[*]}"
}
if [ "$GRPC" = 1 ] && [ -x "$ROOT/target/release/flowmesh" ] && "$ROOT/target/release/flowmesh" serve --help >/dev/null 2>&1; then
  say "starting two flowmesh brokers (file://, fsync=batch and fsync=interval)"
  start_broker broker-batch batch
  GRPC_ARGS=(--grpc "grpc://127.0.0.1:$BROKER_PORT")
  NOTE1="flowmesh serve --data file://TMP $BROKER_ARGS"
  start_broker broker-interval interval
  GRPC_ARGS+=(--grpc-interval "grpc://127.0.0.1:$BROKER_PORT")
  NOTE2="flowmesh serve --data file://TMP $BROKER_ARGS"
  case "$BROKER_ARGS" in *interval-ms*) IV="1000 ms" ;; *) IV="the broker's default interval (100 ms)" ;; esac
  BROKER_NOTE="\`$NOTE1\` and \`$NOTE2\`, fsync=interval = $IV"
  say "brokers: $BROKER_NOTE"
fi

# ---- 4. run -----------------------------------------------------------------
RAW="$OUT_DIR/raw.jsonl"
: > "$RAW"
HARGS=(run --out "$RAW" --data "$WORK/fm" --nats "nats://127.0.0.1:$NATS_PORT" \
  --redis "redis://127.0.0.1:$REDIS_PORT/" --only "$ONLY" "${GRPC_ARGS[@]}")
[ "$QUICK" = 1 ] && HARGS+=(--quick)
[ -n "$ROUNDS" ] && HARGS+=(--rounds "$ROUNDS")
say "running: fmbench ${HARGS[*]}"
HRC=0
timeout "$HARD_LIMIT" "$FMBENCH" "${HARGS[@]}" || HRC=$?
[ "$HRC" = 0 ] || say "WARNING: the harness exited with status $HRC (124 = stopped at the ${HARD_LIMIT}s limit); the report covers the cells that finished"

# ---- 5. report ----------------------------------------------------------------
lockver() { awk -v n="$1" '$0=="name = \""n"\"" {getline; gsub(/version = |"/,""); print; exit}' "$BENCH/harness/Cargo.lock"; }
python3 - "$OUT_DIR/meta.json" <<EOF
import json, sys, subprocess, platform, os, datetime
def sh(c):
    try: return subprocess.run(c, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception as e: return "?"
cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip()
meta = {
  "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
  "command": "bench/run.sh ${ARGS_ORIG}".strip(),
  "cpu": cpu, "nproc": sh("nproc"),
  "mhz": sh("grep -m1 'cpu MHz' /proc/cpuinfo | cut -d: -f2").strip(),
  "cache": sh("grep -m1 'cache size' /proc/cpuinfo | cut -d: -f2").strip(),
  "mem": sh("free -g | awk '/Mem:/ {print \$2\" GiB\"}'"),
  "kernel": platform.release(),
  "disk": sh("df -h /tmp | awk 'NR==2 {print \$1\" (\"\$2\")\"}'"),
  "flowmesh": sh("cd $ROOT && git describe --always --dirty") + "$STALE",
  "rustc": sh("rustc --version"),
  "nats_server": sh("$NATS_SERVER --version"),
  "redis_server": sh("redis-server --version | cut -d' ' -f1-3"),
  "async_nats": "$(lockver async-nats)", "redis_crate": "$(lockver redis)",
  "broker": "$BROKER_NOTE",
  "quick": $QUICK,
  "harness_rc": $HRC,
}
json.dump(meta, open(sys.argv[1], "w"), indent=1)
EOF
say "writing $REPORT"
python3 "$BENCH/report.py" --raw "$RAW" --meta "$OUT_DIR/meta.json" --report "$REPORT" \
  --plots "$OUT_DIR" --profile "$BENCH/results/profile.md" --profile-notes "$BENCH/PROFILE.md" $([ "$PLOTS" = 1 ] || echo --no-plots)
say "done in $(( $(date +%s) - T0 ))s: $REPORT"
exit "$HRC"
