#!/usr/bin/env bash
# Runs the Python binding's test suite against the library built in the repo.
# Called by the root `make test` after the library is built.
set -u
cd "$(dirname "$0")"
PY="${PYTHON:-python3}"
"$PY" -m pip install --quiet --disable-pip-version-check pytest >/dev/null 2>&1 \
  || "$PY" -m pip install --quiet --disable-pip-version-check pytest
# Optional: prometheus_client parses the metrics text in tests/test_metrics.py
# (skipped without it); fastapi+httpx run the FastAPI example.
"$PY" -m pip install --quiet --disable-pip-version-check prometheus_client >/dev/null 2>&1 || true
# Optional: with mypy installed the suite also checks `mypy --strict flowmesh`.
"$PY" -m pip install --quiet --disable-pip-version-check mypy >/dev/null 2>&1 || true
if [ -z "${FLOWMESH_LIB:-}" ]; then
  FLOWMESH_LIB="$(cd ../.. && pwd)/target/release/libflowmesh.so"
  export FLOWMESH_LIB
fi
# The broker tests use this binary when it exists and supports `serve`.
if [ -z "${FLOWMESH_BIN:-}" ]; then
  FLOWMESH_BIN="$(cd ../.. && pwd)/target/release/flowmesh"
  export FLOWMESH_BIN
fi
"$PY" -m pytest -q tests "$@"
exit $?
