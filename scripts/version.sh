#!/usr/bin/env bash
# Prints the flowmesh version: the one in Cargo.toml's [package] table. The
# crate, libflowmesh.so (fm_version), the CLI, the wheel, the npm package, the
# Go module tag (bindings/go/vX.Y.Z) and the Debian packages all take it from
# there; nothing else spells it out.
#
#   scripts/version.sh          -> 0.1.0
#   scripts/version.sh major    -> 0
set -euo pipefail
manifest="${FLOWMESH_CARGO_TOML:-$(cd "$(dirname "$0")/.." && pwd)/Cargo.toml}"
version="$(sed -n '/^\[package\]/,/^\[/s/^version *= *"\([^"]*\)".*/\1/p' "$manifest" | head -1)"
case "$version" in
    [0-9]*.[0-9]*.[0-9]*) ;;
    *) echo "version.sh: no MAJOR.MINOR.PATCH version in the [package] table of $manifest" >&2; exit 1 ;;
esac
case "${1:-}" in
    "") printf '%s\n' "$version" ;;
    major) printf '%s\n' "${version%%.*}" ;;
    *) echo "usage: $0 [major]" >&2; exit 2 ;;
esac
