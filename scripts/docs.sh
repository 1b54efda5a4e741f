#!/usr/bin/env bash
# Builds the documentation site into <target>/docs (make docs):
#
#   index.html       links every part, with the version
#   rust/            the crate's API (cargo doc --no-deps)
#   c.html           the C ABI reference, from include/flowmesh.h
#   python/          the Python SDK (pdoc, from PyPI into <target>/python-tools)
#   go.html          go doc -all of the Go module
#   node.html        the Node package's TypeScript typings (index.d.ts)
#
#   scripts/docs.sh [OUT]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
target="$("$root/scripts/target-dir.sh")"
out="${1:-$target/docs}"
version="$("$root/scripts/version.sh")"
PY="${PYTHON:-python3}"
site="$root/scripts/docs_site.py"
mkdir -p "$out"
out="$(cd "$out" && pwd)"

echo "docs: Rust API (cargo doc)"
(cd "$root" && cargo doc --release --no-deps --locked --lib -q)
rm -rf "$out/rust"
cp -r "$target/doc" "$out/rust"

echo "docs: C header reference"
"$PY" "$site" header "$root/include/flowmesh.h" "$out/c.html" "$version"

echo "docs: Python API (pdoc)"
tools="$target/python-tools"
if [ ! -x "$tools/bin/pdoc" ]; then
    [ -x "$tools/bin/python" ] || "$PY" -m venv "$tools"
    "$tools/bin/python" -m pip install --quiet --disable-pip-version-check pdoc
fi
rm -rf "$out/python"
# Importing the package needs no library (it is loaded at connect).
(cd "$root/bindings/python" && PYTHONPATH=. "$tools/bin/pdoc" --output-directory "$out/python" flowmesh)

echo "docs: Go (go doc -all)"
(cd "$root/bindings/go" && go doc -all . > "$out/go.txt")
"$PY" "$site" text "flowmesh Go module $version (go doc -all)" "$out/go.txt" "$out/go.html"
rm -f "$out/go.txt"

echo "docs: Node typings"
"$PY" "$site" text "flowmesh Node package $version: index.d.ts" "$root/bindings/node/index.d.ts" "$out/node.html"

"$PY" "$site" index "$out" "$version"
echo "docs: $out/index.html"
