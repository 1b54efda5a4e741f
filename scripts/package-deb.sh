#!/usr/bin/env bash
# Builds the Debian packages with dpkg-deb into OUT (default: <target>/debian; make deb):
#
#   libflowmesh0_VERSION-1_ARCH.deb     the shared library (SONAME libflowmesh.so.MAJOR)
#   libflowmesh-dev_VERSION-1_ARCH.deb  header, libflowmesh.so link, static library,
#                                       pkg-config and CMake files
#   flowmesh_VERSION-1_ARCH.deb         the CLI, the systemd unit of `flowmesh serve`,
#                                       /etc/flowmesh/flowmesh.conf, /var/lib/flowmesh
#
#   scripts/package-deb.sh [OUT]
#
# The library and the CLI must be built (make lib); this script runs no cargo
# build. Files are laid out by scripts/install.sh (PREFIX=/usr, the multiarch
# library directory) and stripped of debug sections, as dh_strip would.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
release="$("$root/scripts/target-dir.sh")/release"
out="${1:-$(dirname "$release")/debian}"
version="$("$root/scripts/version.sh")"
major="${version%%.*}"
debver="$version-1"
for f in libflowmesh.so libflowmesh.a flowmesh; do
    if [ ! -f "$release/$f" ]; then
        echo "package-deb.sh: $release/$f is missing: build first (make lib)" >&2
        exit 1
    fi
done
arch="$(dpkg --print-architecture)"
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch 2>/dev/null || true)"
[ -n "$multiarch" ] || { echo "package-deb.sh: cannot tell the multiarch library directory" >&2; exit 1; }
libdir="lib/$multiarch"
# glibc the library needs: the highest GLIBC_x.y symbol version it uses.
glibc="$(objdump -T "$release/libflowmesh.so" "$release/flowmesh" | sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -uV | tail -1)"
maint="flowmesh developers <flowmesh@localhost>"

mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Stripped copies of what ships.
mkdir -p "$work/bin"
cp "$release/libflowmesh.so" "$release/libflowmesh.a" "$release/flowmesh" "$work/bin/"
strip --strip-debug "$work/bin/libflowmesh.so" "$work/bin/libflowmesh.a" "$work/bin/flowmesh"

# Everything install.sh lays out, then split into the two library packages.
FLOWMESH_LIB_DIR="$work/bin" LIBDIR="$libdir" "$root/scripts/install.sh" "$work/all/usr" /usr >/dev/null
lib0="$work/libflowmesh0"
dev="$work/libflowmesh-dev"
cli="$work/flowmesh"
mkdir -p "$lib0/usr/$libdir" "$dev/usr/$libdir" "$cli/usr/bin"
mv "$work/all/usr/$libdir/libflowmesh.so.$version" "$work/all/usr/$libdir/libflowmesh.so.$major" "$lib0/usr/$libdir/"
mv "$work/all/usr/include" "$dev/usr/"
mv "$work/all/usr/$libdir"/* "$dev/usr/$libdir/"

install -m 0755 "$work/bin/flowmesh" "$cli/usr/bin/flowmesh"
install -D -m 0644 "$root/packaging/debian/flowmesh.service" "$cli/lib/systemd/system/flowmesh.service"
install -D -m 0644 "$root/packaging/debian/flowmesh.conf" "$cli/etc/flowmesh/flowmesh.conf"
install -d -m 0750 "$cli/var/lib/flowmesh"

for pkg in libflowmesh0 libflowmesh-dev flowmesh; do
    d="$work/$pkg"
    install -d "$d/DEBIAN" "$d/usr/share/doc/$pkg"
    gzip -9n < "$root/CHANGELOG.md" > "$d/usr/share/doc/$pkg/changelog.gz"
    printf 'flowmesh\nLicense: Apache-2.0 (see /usr/share/common-licenses/Apache-2.0)\n' > "$d/usr/share/doc/$pkg/copyright"
done

control() { # package section depends description-line long-description
    local size
    size="$(du -sk --exclude=DEBIAN "$work/$1" | cut -f1)"
    {
        echo "Package: $1"
        echo "Version: $debver"
        echo "Architecture: $arch"
        echo "Maintainer: $maint"
        echo "Installed-Size: $size"
        echo "Section: $2"
        echo "Priority: optional"
        [ -n "$3" ] && echo "Depends: $3"
        echo "Homepage: https://github.com/flowmesh/flowmesh"
        echo "Description: $4"
        echo "$5" | fold -s -w 72 | sed -e "s/ *$//" -e "s/^/ /"
    } > "$work/$1/DEBIAN/control"
}
base_deps="libc6 (>= $glibc), libgcc-s1"
control libflowmesh0 libs "$base_deps" \
    "flowmesh messaging core, shared library" \
    "One native core for streams, queues, key-value and events, with a C ABI, embedded (mem://, file://) or against a flowmesh broker (grpc://, grpcs://). This package has the shared library libflowmesh.so.$major."
echo "libflowmesh $major libflowmesh0 (>= $version)" > "$lib0/DEBIAN/shlibs"
install -m 0644 "$root/packaging/debian/libflowmesh0.triggers" "$lib0/DEBIAN/triggers"

control libflowmesh-dev libdevel "libflowmesh0 (= $debver)" \
    "flowmesh messaging core, development files" \
    "Header (flowmesh.h), static library, pkg-config (flowmesh.pc) and CMake (find_package(flowmesh)) files for building C and C++ programs against libflowmesh: cc app.c \$(pkg-config --cflags --libs flowmesh)."

control flowmesh net "$base_deps, adduser" \
    "flowmesh broker and command-line client" \
    "The flowmesh command: the broker (flowmesh serve, run by the systemd unit flowmesh.service, configured in /etc/flowmesh/flowmesh.conf, storing in /var/lib/flowmesh) and a client for streams, queues, key-value, metrics, tokens and development TLS certificates."
echo "/etc/flowmesh/flowmesh.conf" > "$cli/DEBIAN/conffiles"
for script in postinst prerm postrm; do
    install -m 0755 "$root/packaging/debian/flowmesh.$script" "$cli/DEBIAN/$script"
done

rm -f "$out"/libflowmesh0_*.deb "$out"/libflowmesh-dev_*.deb "$out"/flowmesh_*.deb
for pkg in libflowmesh0 libflowmesh-dev flowmesh; do
    d="$work/$pkg"
    (cd "$d" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum > DEBIAN/md5sums)
    # gzip: fast to build and read everywhere (xz would take minutes for the static library).
    dpkg-deb --root-owner-group -Zgzip --build "$d" "$out/${pkg}_${debver}_${arch}.deb" >/dev/null
    echo "$out/${pkg}_${debver}_${arch}.deb"
done
