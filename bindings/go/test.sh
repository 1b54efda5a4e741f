#!/bin/sh
# Vet and test the Go binding against the library built in ../../target/release.
# Called by the root `make test` after the library is built.
set -eu
cd "$(dirname "$0")"
go vet ./...
go test -race -count=1 ./...
