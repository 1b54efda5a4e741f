#!/usr/bin/env bash
# Runs the Python binding's test suite against the library built in the repo.
# Called by the root `make test` after the library is built.
set -u
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check pytest >/dev/null 2>&1 \
  || "$PY" -m pip install --quiet --disable-pip-version-check pytest
# prometheus_client parses the metrics text in tests/test_metrics.py and
# carries flowmesh.lax's series; fastapi+httpx run the FastAPI examples
# through an ASGI test client (tests/test_lax.py).
"$PY" -m pip install --quiet --disable-pip-version-check prometheus_client fastapi httpx >/dev/null 2>&1 \
  || "$PY" -m pip install --quiet --disable-pip-version-check prometheus_client fastapi httpx
# Optional: with mypy installed the suite also checks `mypy --strict flowmesh`.
"$PY" -m pip install --quiet --disable-pip-version-check mypy >/dev/null 2>&1 || true
# The library and the broker binary: cargo's target directory (target/ or
# $CARGO_TARGET_DIR) unless FLOWMESH_LIB / FLOWMESH_BIN name them.
if [ -z "${FLOWMESH_LIB:-}" ] || [ -z "${FLOWMESH_BIN:-}" ]; then
  release="$(../../scripts/target-dir.sh)/release" || exit 1
  export FLOWMESH_LIB="${FLOWMESH_LIB:-$release/libflowmesh.so}"
  # The broker tests use this binary when it exists and supports `serve`.
  export FLOWMESH_BIN="${FLOWMESH_BIN:-$release/flowmesh}"
fi
if [ ! -f "$FLOWMESH_LIB" ]; then
  echo "bindings/python: $FLOWMESH_LIB is missing: build the library first (make lib)" >&2
  exit 1
fi
"$PY" -m pytest -q tests "$@"
exit $?
