#!/usr/bin/env bash
# Prints cargo's target directory for this repository (or for the cargo
# project in $1), as cargo itself resolves it: CARGO_TARGET_DIR, a
# build.target-dir in .cargo/config.toml, else <project>/target.
#
#   scripts/target-dir.sh            -> e.g. /home/me/src/flowmesh/target
#   scripts/target-dir.sh bench/harness
#
# Every script that builds or looks for the library asks this instead of
# assuming target/. Without cargo on PATH (a packaged install) it falls back
# to $CARGO_TARGET_DIR, then <project>/target.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
project="${1:-$root}"
project="$(cd "$project" && pwd)"
if command -v "${CARGO:-cargo}" >/dev/null 2>&1; then
    meta="$(cd "$project" && "${CARGO:-cargo}" metadata --format-version 1 --no-deps 2>/dev/null)" || {
        echo "target-dir.sh: 'cargo metadata' failed in $project" >&2
        (cd "$project" && "${CARGO:-cargo}" metadata --format-version 1 --no-deps >/dev/null)
        exit 1
    }
    dir="$(printf '%s' "$meta" | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
    if [ -z "$dir" ]; then
        echo "target-dir.sh: no target_directory in the output of 'cargo metadata' ($project)" >&2
        exit 1
    fi
    printf '%s\n' "$dir"
elif [ -n "${CARGO_TARGET_DIR:-}" ]; then
    case "$CARGO_TARGET_DIR" in
        /*) printf '%s\n' "$CARGO_TARGET_DIR" ;;
        *) printf '%s\n' "$project/$CARGO_TARGET_DIR" ;;
    esac
else
    printf '%s\n' "$project/target"
fi
