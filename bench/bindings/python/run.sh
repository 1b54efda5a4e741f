#!/usr/bin/env bash
# Python binding benchmark: flowmesh (broker and embedded) vs nats-py
# JetStream and redis-py, against real servers started here on loopback.
#
#   bench/bindings/python/run.sh [--rounds 3] [--seconds 1.5] [--quick]
#
# Installs nats-py and redis into a venv (FLOWMESH_BENCH_VENV, default
# ~/.cache/flowmesh-bench-venv), nats-server/redis-server with apt-get when
# missing, then runs bench.py, which writes bench/results/bindings-python.md.
# The whole run is bounded by BENCH_TIMEOUT seconds (default 900).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../../.." && pwd)"
PY="${PYTHON:-python3}"
VENV="${FLOWMESH_BENCH_VENV:-$HOME/.cache/flowmesh-bench-venv}"

if ! command -v nats-server >/dev/null || ! command -v redis-server >/dev/null; then
  echo "installing nats-server and redis-server (apt-get)" >&2
  timeout 300 apt-get update -qq
  DEBIAN_FRONTEND=noninteractive timeout 300 apt-get install -y -qq nats-server redis-server >/dev/null
fi
# The Debian package starts a system redis on 6379; this benchmark uses its own.

if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
timeout 300 "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "nats-py>=2.6" "redis>=5"

if [ ! -f "$ROOT/target/release/libflowmesh.so" ] || [ ! -x "$ROOT/target/release/flowmesh" ] \
   || [ "$ROOT/include/flowmesh.h" -nt "$ROOT/target/release/libflowmesh.so" ]; then
  (cd "$ROOT" && cargo build --release && ln -sf libflowmesh.so target/release/libflowmesh.so.0)
fi

export FLOWMESH_LIB="${FLOWMESH_LIB:-$ROOT/target/release/libflowmesh.so}"
export FLOWMESH_BIN="${FLOWMESH_BIN:-$ROOT/target/release/flowmesh}"
export PYTHONPATH="$ROOT/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
exec timeout --kill-after=20 "${BENCH_TIMEOUT:-900}" "$VENV/bin/python" "$HERE/bench.py" "$@"
