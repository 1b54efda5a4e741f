#!/usr/bin/env bash
# Installs flowmesh for C and C++ users. Called by `make install`:
#
#   scripts/install.sh DESTROOT PREFIX
#
# DESTROOT  where files are written ("$(DESTDIR)$(PREFIX)", e.g. /tmp/stage/usr/local)
# PREFIX    where they will live at run time (e.g. /usr/local); written into
#           flowmesh.pc. The CMake config is relocatable and needs no prefix.
#
# Installs, under DESTROOT:
#   lib/libflowmesh.so.X.Y.Z, lib/libflowmesh.so.X -> .so.X.Y.Z, lib/libflowmesh.so -> .so.X
#   lib/libflowmesh.a
#   include/flowmesh.h
#   lib/pkgconfig/flowmesh.pc                 (from packaging/flowmesh.pc.in)
#   lib/cmake/flowmesh/flowmeshConfig.cmake   (imported targets flowmesh::flowmesh,
#   lib/cmake/flowmesh/flowmeshConfigVersion.cmake     flowmesh::flowmesh_static)
#
# Environment: FLOWMESH_LIB_DIR (default: cargo's target directory, as
# scripts/target-dir.sh reports it, /release) holds the built libflowmesh.so
# and libflowmesh.a; LIBDIR (default "lib") names the library
# directory under the prefix (e.g. lib64 or lib/x86_64-linux-gnu).
set -euo pipefail

if [ "$#" -ne 2 ]; then
    echo "usage: $0 DESTROOT PREFIX   (e.g. $0 /tmp/stage/usr/local /usr/local)" >&2
    exit 2
fi
destroot="$1"
prefix="$2"
case "$prefix" in
    /*) ;;
    *) echo "install.sh: PREFIX must be an absolute path, got '$prefix'" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${FLOWMESH_LIB_DIR:-}" ]; then
    src="$FLOWMESH_LIB_DIR"
else
    src="$("$root/scripts/target-dir.sh")/release" || exit 1
fi
libdir="${LIBDIR:-lib}"
includedir="include"

version="$("$root/scripts/version.sh")" || exit 1
major="${version%%.*}"

for f in "$src/libflowmesh.so" "$src/libflowmesh.a" "$root/include/flowmesh.h"; do
    if [ ! -f "$f" ]; then
        echo "install.sh: $f is missing: build first (make lib)" >&2
        exit 1
    fi
done

# The shared library must carry SONAME libflowmesh.so.<major>.
if command -v readelf >/dev/null 2>&1; then
    soname="$(readelf -d "$src/libflowmesh.so" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')"
    if [ "$soname" != "libflowmesh.so.$major" ]; then
        echo "install.sh: $src/libflowmesh.so has SONAME '$soname', expected libflowmesh.so.$major" >&2
        exit 1
    fi
fi

subst() { # template output
    sed -e "s|@PREFIX@|$prefix|g" -e "s|@VERSION@|$version|g" -e "s|@MAJOR@|$major|g" \
        -e "s|@LIBDIR@|$libdir|g" -e "s|@INCLUDEDIR@|$includedir|g" "$1" > "$2"
}

L="$destroot/$libdir"
install -d "$L" "$L/pkgconfig" "$L/cmake/flowmesh" "$destroot/$includedir"

install -m 0755 "$src/libflowmesh.so" "$L/libflowmesh.so.$version"
ln -sfn "libflowmesh.so.$version" "$L/libflowmesh.so.$major"
ln -sfn "libflowmesh.so.$major" "$L/libflowmesh.so"
install -m 0644 "$src/libflowmesh.a" "$L/libflowmesh.a"
install -m 0644 "$root/include/flowmesh.h" "$destroot/$includedir/flowmesh.h"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
subst "$root/packaging/flowmesh.pc.in" "$tmp/flowmesh.pc"
subst "$root/packaging/flowmeshConfig.cmake.in" "$tmp/flowmeshConfig.cmake"
subst "$root/packaging/flowmeshConfigVersion.cmake.in" "$tmp/flowmeshConfigVersion.cmake"
install -m 0644 "$tmp/flowmesh.pc" "$L/pkgconfig/flowmesh.pc"
install -m 0644 "$tmp/flowmeshConfig.cmake" "$L/cmake/flowmesh/flowmeshConfig.cmake"
install -m 0644 "$tmp/flowmeshConfigVersion.cmake" "$L/cmake/flowmesh/flowmeshConfigVersion.cmake"

echo "installed flowmesh $version into $destroot (prefix $prefix):"
echo "  $libdir/libflowmesh.so.$version (+ .so.$major, .so), $libdir/libflowmesh.a"
echo "  $includedir/flowmesh.h, $libdir/pkgconfig/flowmesh.pc, $libdir/cmake/flowmesh/"
case "$prefix" in
    /usr|/usr/local) ;;
    *) echo "  build with: PKG_CONFIG_PATH=$prefix/$libdir/pkgconfig cc app.c \$(pkg-config --cflags --libs flowmesh)"
       echo "  run with:   LD_LIBRARY_PATH=$prefix/$libdir ./app   (or link with -Wl,-rpath,$prefix/$libdir)" ;;
esac
