#!/bin/sh
# Vet and test the Go binding against the library built in cargo's target
# directory (target/ or $CARGO_TARGET_DIR). Called by the root `make test`
# after the library is built.
set -eu
cd "$(dirname "$0")"
release="$(../../scripts/target-dir.sh)/release"
if [ ! -f "$release/libflowmesh.so" ]; then
  echo "bindings/go: $release/libflowmesh.so is missing: build the library first (make lib)" >&2
  exit 1
fi
# link_repo.go names ../../target/release; these flags come first, so a
# library in another target directory wins.
export CGO_LDFLAGS="-L$release -Wl,-rpath,$release ${CGO_LDFLAGS:-}"
export FLOWMESH_BIN="${FLOWMESH_BIN:-$release/flowmesh}"
go vet ./...
go test -race -count=1 ./...
