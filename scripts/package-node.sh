#!/usr/bin/env bash
# Packs the Node binding as an npm package, flowmesh-VERSION.tgz:
#
#   scripts/package-node.sh [OUT]      (default: <target>/npm; make npm)
#
# The package carries the library prebuilt for this machine
# (prebuilds/linux-x64/libflowmesh.so, stripped) and the crate (native/), so
# `npm install flowmesh-VERSION.tgz` needs no Rust here, and builds from
# source with cargo where the prebuilt library does not fit (install.js).
# The version is Cargo.toml's. The library must be built (make lib); this
# script runs no cargo build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
release="$("$root/scripts/target-dir.sh")/release"
out="${1:-$(dirname "$release")/npm}"
version="$("$root/scripts/version.sh")"
lib="${FLOWMESH_LIB:-$release/libflowmesh.so}"
if [ ! -f "$lib" ]; then
    echo "package-node.sh: $lib is missing: build the library first (make lib)" >&2
    exit 1
fi
platform="$(node -p 'process.platform + "-" + process.arch')"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
stage="$out/stage"
rm -rf "$stage"
mkdir -p "$stage/prebuilds/$platform" "$stage/native"
node="$root/bindings/node"
cp -r "$node/package.json" "$node/index.js" "$node/index.d.ts" "$node/lib" "$node/README.md" \
      "$node/install.js" "$node/examples" "$stage/"
install -m 0755 "$lib" "$stage/prebuilds/$platform/libflowmesh.so"
command -v strip >/dev/null 2>&1 && strip --strip-debug "$stage/prebuilds/$platform/libflowmesh.so"
cp -r "$root/Cargo.toml" "$root/Cargo.lock" "$root/build.rs" "$root/cbindgen.toml" "$root/flowmesh.map" \
      "$root/src" "$root/proto" "$root/include" "$stage/native/"

# The packed package.json: Cargo.toml's version, the install step, the
# prebuilt library and the crate in "files"; no dev-only fields.
(cd "$stage" && VERSION="$version" node -e '
  const fs = require("fs");
  const p = JSON.parse(fs.readFileSync("package.json", "utf8"));
  p.version = process.env.VERSION;
  p.scripts = { install: "node install.js" };
  p.files = [...new Set([...(p.files || []), "install.js", "examples/", "prebuilds/", "native/"])];
  p.os = ["linux"];
  delete p.devDependencies;
  fs.writeFileSync("package.json", JSON.stringify(p, null, 2) + "\n");
')
rm -f "$out/flowmesh-$version.tgz"
(cd "$stage" && npm pack --silent --pack-destination "$out" >/dev/null)
test -f "$out/flowmesh-$version.tgz" || { echo "package-node.sh: npm pack made no $out/flowmesh-$version.tgz" >&2; exit 1; }
rm -rf "$stage"
echo "$out/flowmesh-$version.tgz"
