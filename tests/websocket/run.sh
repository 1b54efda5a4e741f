#!/usr/bin/env bash
# The JSON WebSocket protocol of `flowmesh serve --ws`, from Python's
# `websockets` client against the broker binary cargo built.
set -u
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
for pkg in pytest websockets; do
  "$PY" -m pip install --quiet --disable-pip-version-check "$pkg" >/dev/null 2>&1 \
    || "$PY" -m pip install --quiet --disable-pip-version-check "$pkg" || exit 1
done
if [ -z "${FLOWMESH_BIN:-}" ]; then
  export FLOWMESH_BIN="$(../../scripts/target-dir.sh)/release/flowmesh" || exit 1
fi
if [ ! -x "$FLOWMESH_BIN" ]; then
  echo "tests/websocket: $FLOWMESH_BIN is missing: build it first (make lib)" >&2
  exit 1
fi
"$PY" -m pytest -q -p no:cacheprovider test_protocol.py "$@"
