#!/usr/bin/env bash
# The browser client (flowmesh.js) and the broker's web console in Debian's
# headless Chromium, driven by playwright-core (no browser download), against
# brokers the test starts. Also type-checks flowmesh.d.ts with tsc.
# Broker binary: $FLOWMESH_BIN, else flowmesh in cargo's target directory.
set -euo pipefail
cd "$(dirname "$0")"
if [ -z "${FLOWMESH_BIN:-}" ]; then
  export FLOWMESH_BIN="$(../../scripts/target-dir.sh)/release/flowmesh"
fi
if [ ! -x "$FLOWMESH_BIN" ]; then
  echo "bindings/web: $FLOWMESH_BIN is missing: build it first (make lib)" >&2
  exit 1
fi
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM" ]; then
  echo "bindings/web: $CHROMIUM is missing: install Debian's chromium (scripts/setup.sh test does, as root)" >&2
  exit 1
fi
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error >/dev/null
node_modules/.bin/tsc -p tsconfig.json
node --check flowmesh.js
exec node --test --test-concurrency=1 test/
