#!/usr/bin/env bash
# Prints the path of a nats-server v2.15.3 binary (the version the nats://
# engine is built and tested against), building it from the Go module proxy
# into a cache outside the repository the first time (about a minute).
#   scripts/nats-server.sh          path of nats-server
#   scripts/nats-server.sh --cli    path of the NATS CLI (natscli v0.5.0)
# Set NATS_SERVER_BIN to use another binary of the same version.
set -euo pipefail

SERVER_VERSION=v2.15.3
CLI_VERSION=v0.5.0
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/flowmesh"

build() { # module version name dir
  local module=$1 version=$2 name=$3 dir=$4
  if [ ! -x "$dir/$name" ]; then
    command -v go >/dev/null 2>&1 || { echo "nats-server.sh: Go is needed to build $name $version" >&2; exit 1; }
    mkdir -p "$dir"
    echo "nats-server.sh: building $name $version into $dir (once)" >&2
    # Build into a scratch dir first so an interrupted build leaves no half binary.
    local tmp
    tmp=$(mktemp -d "$dir/.build.XXXXXX")
    if ! GOBIN="$tmp" GOFLAGS=-mod=mod go install "$module@$version" >&2; then
      rm -rf "$tmp"
      echo "nats-server.sh: go install $module@$version failed" >&2
      exit 1
    fi
    mv "$tmp/$name" "$dir/$name"
    rm -rf "$tmp"
  fi
  echo "$dir/$name"
}

case "${1:-}" in
  --cli) build github.com/nats-io/natscli/nats "$CLI_VERSION" nats "$CACHE/natscli-$CLI_VERSION" ;;
  "")
    if [ -n "${NATS_SERVER_BIN:-}" ]; then
      "$NATS_SERVER_BIN" --version | grep -q "${SERVER_VERSION#v}" ||
        { echo "nats-server.sh: $NATS_SERVER_BIN is not nats-server $SERVER_VERSION" >&2; exit 1; }
      echo "$NATS_SERVER_BIN"
    else
      build github.com/nats-io/nats-server/v2 "$SERVER_VERSION" nats-server "$CACHE/nats-$SERVER_VERSION"
    fi ;;
  *) echo "usage: $0 [--cli]" >&2; exit 2 ;;
esac
