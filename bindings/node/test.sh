#!/usr/bin/env bash
# Installs the package's dependencies (koffi ships prebuilt binaries: no
# compiler step) and runs the node:test suite. Exit status = the suite's.
# Library: $FLOWMESH_LIB, else libflowmesh.so in cargo's target directory
# (target/ or $CARGO_TARGET_DIR); the broker binary likewise ($FLOWMESH_BIN).
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${FLOWMESH_LIB:-}" ] || [ -z "${FLOWMESH_BIN:-}" ]; then
  release="$(../../scripts/target-dir.sh)/release"
  export FLOWMESH_LIB="${FLOWMESH_LIB:-$release/libflowmesh.so}"
  export FLOWMESH_BIN="${FLOWMESH_BIN:-$release/flowmesh}"
fi
if [ ! -f "$FLOWMESH_LIB" ]; then
  echo "bindings/node: $FLOWMESH_LIB is missing: build the library first (make lib)" >&2
  exit 1
fi
npm install --no-audit --no-fund --loglevel=error >/dev/null
exec node --test test/
