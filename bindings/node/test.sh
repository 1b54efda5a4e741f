#!/usr/bin/env bash
# Installs the package's dependencies (koffi ships prebuilt binaries: no
# compiler step) and runs the node:test suite. Exit status = the suite's.
# Library: $FLOWMESH_LIB, else ../../target/release/libflowmesh.so.
set -euo pipefail
cd "$(dirname "$0")"
npm install --no-audit --no-fund --loglevel=error >/dev/null
exec node --test test/
