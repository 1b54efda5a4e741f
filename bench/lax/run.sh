#!/usr/bin/env bash
# flowmesh.lax (the Python LAX client) against nats-py on the same
# nats-server: memory-tier publish vs nats-py core publish, persistent
# publish vs nats-py JetStream publish. Writes bench/results/lax.md.
#
#   bench/lax/run.sh [--rounds 5] [--seconds 1.0]
#
# nats-py and prometheus_client are installed from PyPI into a venv in a
# temporary directory (removed at the end); nats-server v2.15.3 comes from
# scripts/nats-server.sh. The whole run is bounded by BENCH_TIMEOUT seconds
# (default 600).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY="${PYTHON:-python3}"
TMP="$(mktemp -d "${TMPDIR:-/tmp}/flowmesh-lax-bench.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

"$PY" -m venv "$TMP/venv"
timeout 300 "$TMP/venv/bin/python" -m pip install --quiet --disable-pip-version-check "nats-py>=2.6" prometheus_client

release="$("$ROOT/scripts/target-dir.sh")/release"
if [ ! -f "$release/libflowmesh.so" ] || [ ! -x "$release/flowmesh" ] || [ "$ROOT/include/flowmesh.h" -nt "$release/libflowmesh.so" ]; then
  (cd "$ROOT" && cargo build --release)
fi
export FLOWMESH_LIB="${FLOWMESH_LIB:-$release/libflowmesh.so}"
export FLOWMESH_BIN="${FLOWMESH_BIN:-$release/flowmesh}"
export NATS_SERVER="${NATS_SERVER:-$("$ROOT/scripts/nats-server.sh")}"
export PYTHONPATH="$ROOT/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
timeout --kill-after=20 "${BENCH_TIMEOUT:-600}" "$TMP/venv/bin/python" "$HERE/bench.py" --tmp "$TMP" \
  --out "$ROOT/bench/results/lax.md" "$@"
