#!/usr/bin/env bash
# Install test: installs flowmesh into a temporary prefix, then builds and
# runs examples/c/demo.c the ways a user would:
#   - pkg-config, shared:  cc demo.c $(pkg-config --cflags --libs flowmesh)
#   - pkg-config, static:  the installed libflowmesh.a plus Libs.private
#   - CMake:               find_package(flowmesh) + flowmesh::flowmesh / flowmesh::flowmesh_static
#   - C++:                 the header compiles as C++
# plus the installed layout, SONAME, pkg-config metadata, the CMake version
# check and a DESTDIR-style staged install. Prints "N passed, N failed".
#
# By default it calls scripts/install.sh directly (no cargo rebuild); set
# FM_INSTALL_VIA_MAKE=1 to go through `make install PREFIX=...` instead.
set -u
root="$(cd "$(dirname "$0")/../.." && pwd)"
tmp="$(mktemp -d /tmp/flowmesh-install-test.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
prefix="$tmp/prefix"
passed=0
failed=0
log="$tmp/log"

pass() { passed=$((passed + 1)); echo "ok   $1"; }
fail() {
    failed=$((failed + 1)); echo "FAIL $1"
    [ -s "$log" ] && sed 's/^/    | /' "$log" | tail -25
    return 0
}
# check NAME COMMAND...: runs the command with output to $log.
check() {
    local name="$1"; shift
    if "$@" >"$log" 2>&1; then pass "$name"; else fail "$name"; fi
}

echo "== tests/install: prefix $prefix"
version="$("$root/scripts/version.sh")"
major="${version%%.*}"
release="$("$root/scripts/target-dir.sh")/release"

if [ "${FM_INSTALL_VIA_MAKE:-0}" = 1 ]; then
    check "make install PREFIX=$prefix" make -C "$root" install PREFIX="$prefix"
else
    check "scripts/install.sh $prefix $prefix" "$root/scripts/install.sh" "$prefix" "$prefix"
fi

L="$prefix/lib"
check "installed layout (lib, symlinks, .a, header, .pc, cmake)" bash -c "
    set -e
    test -f '$L/libflowmesh.so.$version' && ! test -L '$L/libflowmesh.so.$version'
    test \"\$(readlink '$L/libflowmesh.so.$major')\" = 'libflowmesh.so.$version'
    test \"\$(readlink '$L/libflowmesh.so')\" = 'libflowmesh.so.$major'
    test -f '$L/libflowmesh.a'
    cmp '$prefix/include/flowmesh.h' '$root/include/flowmesh.h'
    test -f '$L/pkgconfig/flowmesh.pc'
    test -f '$L/cmake/flowmesh/flowmeshConfig.cmake'
    test -f '$L/cmake/flowmesh/flowmeshConfigVersion.cmake'"

check "installed SONAME is libflowmesh.so.$major and only fm_* is exported" bash -c "
    set -e
    readelf -d '$L/libflowmesh.so.$version' | grep -q 'SONAME.*\[libflowmesh.so.$major\]'
    bad=\$(nm -D --defined-only '$L/libflowmesh.so.$version' | awk '{print \$3}' | grep -v '^fm_' | grep -v '^\$' || true)
    if [ -n \"\$bad\" ]; then echo \"non-fm_ exports:\"; echo \"\$bad\" | head; exit 1; fi"

export PKG_CONFIG_PATH="$L/pkgconfig"
check "pkg-config metadata (version, cflags, libs, Libs.private)" bash -c "
    set -e
    test \"\$(pkg-config --modversion flowmesh)\" = '$version'
    pkg-config --cflags flowmesh | grep -q -- '-I$prefix/include'
    pkg-config --libs flowmesh | grep -q -- '-L$L'
    pkg-config --libs flowmesh | grep -q -- '-lflowmesh'
    s=\$(pkg-config --static --libs flowmesh)
    for l in -lpthread -ldl -lm; do echo \"\$s\" | grep -q -- \"\$l\"; done
    test \"\$(pkg-config --variable=prefix flowmesh)\" = '$prefix'"

demo="$root/examples/c/demo.c"
# Run without LD_LIBRARY_PATH pointing at the repo, so only the installed library can be found.
unset LD_LIBRARY_PATH

check "build demo.c with pkg-config (shared)" bash -c "
    cc '$demo' -o '$tmp/demo_pc' \$(pkg-config --cflags --libs flowmesh)"
check "run demo (pkg-config, shared) on mem:// with the installed library" bash -c "
    set -e
    LD_LIBRARY_PATH='$L' ldd '$tmp/demo_pc' | grep -q '$L/libflowmesh.so.$major'
    LD_LIBRARY_PATH='$L' '$tmp/demo_pc' mem:// | tail -3
    LD_LIBRARY_PATH='$L' '$tmp/demo_pc' mem:// | grep -q 'demo OK'"

check "build demo.c statically against libflowmesh.a (+ Libs.private)" bash -c "
    set -e
    cc '$demo' -o '$tmp/demo_static' \$(pkg-config --cflags flowmesh) '$L/libflowmesh.a' \
       \$(pkg-config --static --libs-only-l flowmesh | sed 's/-lflowmesh//')
    ! readelf -d '$tmp/demo_static' | grep -q 'NEEDED.*libflowmesh'"
check "run demo (static) on mem://" bash -c "'$tmp/demo_static' mem:// | grep -q 'demo OK'"

check "flowmesh.h compiles as C++ (extern \"C\")" bash -c "
    printf '#include <flowmesh.h>\nint main(){ return fm_version()[0] == 0; }\n' > '$tmp/t.cpp'
    c++ -std=c++11 -Wall -Werror \$(pkg-config --cflags flowmesh) '$tmp/t.cpp' -o '$tmp/t_cpp' \
        \$(pkg-config --libs flowmesh) && LD_LIBRARY_PATH='$L' '$tmp/t_cpp'"

# ---- CMake ------------------------------------------------------------------
mkdir -p "$tmp/cm"
cp "$demo" "$tmp/cm/demo.c"
cat > "$tmp/cm/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(flowmesh_consumer C)
find_package(flowmesh 0.1 REQUIRED)
message(STATUS "flowmesh ${flowmesh_VERSION} found in ${flowmesh_DIR}")
add_executable(demo demo.c)
target_link_libraries(demo PRIVATE flowmesh::flowmesh)
add_executable(demo_static demo.c)
target_link_libraries(demo_static PRIVATE flowmesh::flowmesh_static)
CMAKE
gen=()
command -v ninja >/dev/null 2>&1 && gen=(-G Ninja)
check "cmake configure with find_package(flowmesh 0.1)" \
    cmake -S "$tmp/cm" -B "$tmp/cm/build" "${gen[@]}" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release
check "cmake build (flowmesh::flowmesh and flowmesh::flowmesh_static)" cmake --build "$tmp/cm/build"
check "run cmake-built demo (shared, build rpath) on mem://" bash -c "
    set -e
    ldd '$tmp/cm/build/demo' | grep -q '$L/libflowmesh.so.$major'
    '$tmp/cm/build/demo' mem:// | grep -q 'demo OK'"
check "run cmake-built demo (static) on mem://" bash -c "'$tmp/cm/build/demo_static' mem:// | grep -q 'demo OK'"

mkdir -p "$tmp/cm2"
cat > "$tmp/cm2/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.13)
project(flowmesh_version_check NONE)
find_package(flowmesh 99.0 QUIET)
if(flowmesh_FOUND)
  message(FATAL_ERROR "find_package(flowmesh 99.0) accepted version ${flowmesh_VERSION}")
endif()
find_package(flowmesh 0.0.1 REQUIRED)
CMAKE
check "cmake version file rejects 99.0 and accepts 0.0.1" \
    cmake -S "$tmp/cm2" -B "$tmp/cm2/build" -DCMAKE_PREFIX_PATH="$prefix"

# ---- DESTDIR-style staged install --------------------------------------------
check "staged install (DESTROOT != PREFIX) writes the final prefix into flowmesh.pc" bash -c "
    set -e
    '$root/scripts/install.sh' '$tmp/stage/opt/flowmesh' /opt/flowmesh >/dev/null
    grep -qx 'prefix=/opt/flowmesh' '$tmp/stage/opt/flowmesh/lib/pkgconfig/flowmesh.pc'
    ! grep -q '$tmp' '$tmp/stage/opt/flowmesh/lib/pkgconfig/flowmesh.pc'
    ! grep -q '$tmp' '$tmp/stage/opt/flowmesh/lib/cmake/flowmesh/flowmeshConfig.cmake'"

check "install.sh refuses a relative PREFIX and wrong arguments" bash -c "
    ! '$root/scripts/install.sh' '$tmp/x' relative/prefix && ! '$root/scripts/install.sh' '$tmp/x'"

# ---- CARGO_TARGET_DIR ---------------------------------------------------------
# A developer's CARGO_TARGET_DIR: the Makefile, install.sh and the Python
# build must look there, never in target/. The temporary target directory
# links to the real release directory (nothing is built here). FLOWMESH_LIB* (exported by make) are cleared so the
# scripts have to find the library themselves.
ctd="$tmp/cargo-target"
mkdir -p "$ctd" "$tmp/empty-target"
ln -s "$release" "$ctd/release"
in_ctd() { env -u FLOWMESH_LIB -u FLOWMESH_LIB_DIR -u FLOWMESH_BIN CARGO_TARGET_DIR="$1" "${@:2}"; }
check "scripts/target-dir.sh reports CARGO_TARGET_DIR" \
    test "$(in_ctd "$ctd" "$root/scripts/target-dir.sh")" = "$ctd"
# `-o lib`: make takes the library as built (it is) and runs no cargo build,
# which with another target directory path would recompile the crate.
check "make install with CARGO_TARGET_DIR set installs the library from there" bash -c "
    set -e
    $(declare -f in_ctd)
    in_ctd '$ctd' make -s -C '$root' -o lib install PREFIX='$tmp/prefix-ctd'
    cmp '$tmp/prefix-ctd/lib/libflowmesh.so.$version' '$release/libflowmesh.so'"
check "install.sh fails loudly when CARGO_TARGET_DIR holds no library" bash -c "
    $(declare -f in_ctd)
    ! in_ctd '$tmp/empty-target' '$root/scripts/install.sh' '$tmp/p-empty' '$tmp/p-empty' 2>'$tmp/err'
    cat '$tmp/err'; grep -q '$tmp/empty-target/release/libflowmesh.so is missing' '$tmp/err'"
# The Python build, without running cargo (FLOWMESH_NO_CARGO): it must take
# the library from CARGO_TARGET_DIR, or fail when none is there.
wheel_cmd="python3 -m pip wheel --no-deps --disable-pip-version-check -q $root/bindings/python"
noenv="env -u FLOWMESH_LIB -u FLOWMESH_LIB_DIR -u FLOWMESH_BIN FLOWMESH_NO_CARGO=1"
check "pip wheel with CARGO_TARGET_DIR set bundles the library from there" bash -c "
    set -e
    $noenv CARGO_TARGET_DIR='$ctd' $wheel_cmd -w '$tmp/wheel-ctd'
    python3 -c 'import sys, zipfile; sys.exit(\"flowmesh/_native/libflowmesh.so\" not in zipfile.ZipFile(sys.argv[1]).namelist())' \
        $tmp/wheel-ctd/flowmesh-$version-*.whl"
check "pip wheel fails loudly when the library is nowhere" bash -c "
    ! $noenv CARGO_TARGET_DIR='$tmp/empty-target' $wheel_cmd -w '$tmp/wheel-none' >'$tmp/err' 2>&1
    grep -q 'libflowmesh.so is missing' '$tmp/err' || { tail -5 '$tmp/err'; exit 1; }
    ! ls '$tmp'/wheel-none/*.whl 2>/dev/null"

# ---- packaging ------------------------------------------------------------------
# The packages users install, built from the library already built (no cargo
# build here), then installed the way users install them, on machines
# without Rust or a C compiler where that is the point.
here="$root/tests/install"
pkgs="$tmp/pkgs"
# A PATH with what an end user has (Python, Node, a shell) and no cargo,
# rustc or C compiler.
nobuild="$tmp/nobuild-bin"
mkdir -p "$nobuild"
for tool in sh bash env node npm cat ls mkdir rm cp mv ln chmod dirname basename uname grep sed tar gzip; do
    t="$(command -v "$tool" 2>/dev/null)" && ln -sf "$t" "$nobuild/$tool"
done
check "the end-user PATH has no cargo, rustc, cc, gcc or c++" bash -c "
    ! PATH='$nobuild' command -v cargo && ! PATH='$nobuild' command -v rustc && ! PATH='$nobuild' command -v cc \
        && ! PATH='$nobuild' command -v gcc && ! PATH='$nobuild' command -v c++"
clean_env="env -u FLOWMESH_LIB -u FLOWMESH_LIB_DIR -u FLOWMESH_BIN -u PYTHONPATH -u NODE_PATH"

# Python: the manylinux wheel into a fresh virtualenv, the quick start on mem://.
check "python: wheel (pip wheel + auditwheel repair) and sdist" "$root/scripts/package-python.sh" "$pkgs/python"
wheel="$(ls "$pkgs"/python/flowmesh-"$version"-py3-none-manylinux*_x86_64.whl 2>/dev/null | head -1)"
sdist="$pkgs/python/flowmesh-$version.tar.gz"
check "python: the wheel carries libflowmesh.so and needs nothing outside manylinux" bash -c "
    set -e
    test -n '$wheel'
    python3 -c 'import sys, zipfile; n = zipfile.ZipFile(sys.argv[1]).namelist(); sys.exit(not {\"flowmesh/_native/libflowmesh.so\", \"flowmesh/py.typed\", \"flowmesh/VERSION\"} <= set(n))' '$wheel'
    '$(dirname "$release")/python-tools/bin/auditwheel' show '$wheel' | tee /dev/stderr | grep -q 'manylinux_'"
python3 -m venv "$tmp/venv" >/dev/null 2>&1
check "python: pip install the wheel into a fresh venv without cargo or cc on PATH" \
    $clean_env PATH="$tmp/venv/bin:$nobuild" "$tmp/venv/bin/python" -m pip install --no-index --no-deps \
    --disable-pip-version-check -q "$wheel"
check "python: the quick start on mem:// from the installed wheel" bash -c "
    cd '$tmp' && $clean_env PATH='$tmp/venv/bin:$nobuild' '$tmp/venv/bin/python' '$here/quickstart.py' | tee /dev/stderr |
        grep -q 'python quick start OK: flowmesh $version from $tmp/venv/'"
check "python: the sdist carries the crate and builds a wheel (library from FLOWMESH_LIB)" bash -c "
    set -e
    tar tzf '$sdist' > '$tmp/sdist.list'
    for f in native/Cargo.toml native/Cargo.lock native/build.rs native/src/lib.rs native/proto native/include/flowmesh.h setup.py flowmesh/py.typed; do
        grep -q \"^flowmesh-$version/\$f\" '$tmp/sdist.list' || { echo \"sdist lacks \$f\"; exit 1; }
    done
    FLOWMESH_LIB='$release/libflowmesh.so' FLOWMESH_NO_CARGO=1 python3 -m pip wheel --no-deps -q \
        --disable-pip-version-check -w '$tmp/from-sdist' '$sdist'
    ls '$tmp'/from-sdist/flowmesh-$version-py3-none-linux_x86_64.whl"

# Node: npm pack with the prebuilt library, installed into an empty project.
check "node: npm pack with a prebuilt linux-x64 library" "$root/scripts/package-node.sh" "$pkgs/npm"
tgz="$pkgs/npm/flowmesh-$version.tgz"
mkdir -p "$tmp/nodeapp"
printf '{ "name": "fm-consumer", "version": "1.0.0", "private": true }\n' > "$tmp/nodeapp/package.json"
cp "$here/pubsub.js" "$here/pubsub.mjs" "$tmp/nodeapp/"
check "node: npm install the package into an empty project without cargo or cc on PATH" bash -c "
    cd '$tmp/nodeapp' && $clean_env PATH='$nobuild' npm install --no-audit --no-fund --loglevel=error '$tgz'"
check "node: require() and publish/subscribe on mem://" bash -c "
    cd '$tmp/nodeapp' && $clean_env PATH='$nobuild' node pubsub.js | tee /dev/stderr | grep -q 'node pubsub OK'"
check "node: import (ESM)" bash -c "cd '$tmp/nodeapp' && $clean_env PATH='$nobuild' node pubsub.mjs | grep -q 'node import OK'"
check "node: without a fitting prebuilt library and without cargo, install fails and says why" bash -c "
    mkdir -p '$tmp/nodeapp2' && cd '$tmp/nodeapp2' && echo '{\"name\":\"x\",\"version\":\"1.0.0\"}' > package.json
    ! $clean_env FLOWMESH_BUILD_FROM_SOURCE=1 PATH='$nobuild' npm install --no-audit --no-fund --loglevel=error '$tgz' >'$tmp/npm.err' 2>&1
    grep -q 'needs cargo' '$tmp/npm.err' || { tail -20 '$tmp/npm.err'; exit 1; }"

# Debian: make deb's packages, extracted into a temporary root (dpkg -x).
check "debian: libflowmesh0, libflowmesh-dev, flowmesh (dpkg-deb)" "$root/scripts/package-deb.sh" "$pkgs/debian"
arch="$(dpkg --print-architecture)"
multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)"
droot="$tmp/debroot"
DL="$droot/usr/lib/$multiarch"
check "debian: dpkg -x into a temporary root; package fields and layout" bash -c "
    set -e
    for p in libflowmesh0 libflowmesh-dev flowmesh; do
        deb='$pkgs/debian/'\${p}_$version-1_$arch.deb
        test \"\$(dpkg-deb -f \"\$deb\" Package)\" = \"\$p\"
        test \"\$(dpkg-deb -f \"\$deb\" Version)\" = '$version-1'
        dpkg -x \"\$deb\" '$droot'
    done
    dpkg-deb -f '$pkgs/debian/libflowmesh-dev_$version-1_$arch.deb' Depends | grep -qx 'libflowmesh0 (= $version-1)'
    dpkg-deb -I '$pkgs/debian/libflowmesh0_$version-1_$arch.deb' shlibs | grep -qx 'libflowmesh $major libflowmesh0 (>= $version)'
    dpkg-deb -I '$pkgs/debian/flowmesh_$version-1_$arch.deb' conffiles | grep -qx /etc/flowmesh/flowmesh.conf
    readelf -d '$DL/libflowmesh.so.$version' | grep -q 'SONAME.*\[libflowmesh.so.$major\]'
    test \"\$(readlink '$DL/libflowmesh.so.$major')\" = libflowmesh.so.$version
    test -f '$DL/libflowmesh.a' && test -f '$droot/usr/include/flowmesh.h'
    test -f '$DL/cmake/flowmesh/flowmeshConfig.cmake'
    grep -qx 'prefix=/usr' '$DL/pkgconfig/flowmesh.pc'
    test -d '$droot/var/lib/flowmesh' && test -f '$droot/etc/flowmesh/flowmesh.conf'
    test \"\$('$droot/usr/bin/flowmesh' --version)\" = 'flowmesh $version'"
check "debian: a C program builds with pkg-config against the extracted root and runs" bash -c "
    set -e
    export PKG_CONFIG_PATH='$DL/pkgconfig' PKG_CONFIG_SYSROOT_DIR='$droot' PKG_CONFIG_LIBDIR=
    test \"\$(pkg-config --modversion flowmesh)\" = '$version'
    cc '$root/examples/c/demo.c' -o '$tmp/demo_deb' \$(pkg-config --cflags --libs flowmesh)
    LD_LIBRARY_PATH='$DL' ldd '$tmp/demo_deb' | grep -q '$DL/libflowmesh.so.$major'
    LD_LIBRARY_PATH='$DL' '$tmp/demo_deb' mem:// | grep -q 'demo OK'"
if command -v systemd-analyze >/dev/null 2>&1; then
    # The unit as shipped, pointed at the extracted binary (the root is not /).
    mkdir -p "$tmp/unit"
    sed "s|/usr/bin/flowmesh|$droot/usr/bin/flowmesh|" "$droot/lib/systemd/system/flowmesh.service" > "$tmp/unit/flowmesh.service"
    check "debian: systemd-analyze verify flowmesh.service reports nothing" bash -c "
        out=\$(systemd-analyze verify --man=no '$tmp/unit/flowmesh.service' 2>&1); rc=\$?
        echo \"\$out\"; [ \$rc = 0 ] && [ -z \"\$out\" ]"
else
    echo "skip debian: systemd-analyze verify (systemd-analyze is not installed)"
fi
check "debian: the unit's config starts a broker that answers and stops on SIGTERM" bash -c "
    set -e
    . '$droot/etc/flowmesh/flowmesh.conf'
    case \"\$FLOWMESH_SERVE_ARGS\" in *'--data file:///var/lib/flowmesh'*) ;; *) exit 1 ;; esac
    port=\$(python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); print(s.getsockname()[1])')
    args=\$(echo \"\$FLOWMESH_SERVE_ARGS\" | sed -e \"s|127.0.0.1:50051|127.0.0.1:\$port|\" -e 's|file:///var/lib/flowmesh|file://$tmp/svcdata|')
    '$droot/usr/bin/flowmesh' serve \$args >'$tmp/svc.log' 2>&1 &
    pid=\$!
    ok=0
    for i in \$(seq 1 100); do
        if '$droot/usr/bin/flowmesh' health --url grpc://127.0.0.1:\$port >/dev/null 2>&1; then ok=1; break; fi
        sleep 0.1
    done
    kill -TERM \$pid; wait \$pid; rc=\$?
    cat '$tmp/svc.log' | tail -3
    [ \$ok = 1 ] && [ \$rc = 0 ]"

# Go: a module outside the repository consumes the binding (replace points
# at this checkout, as `go get` of a tagged release would fetch it), linked
# through pkg-config against the extracted Debian root, and with the
# documented CGO_CFLAGS/CGO_LDFLAGS instead.
gomod="$tmp/goapp"
mkdir -p "$gomod"
cp "$here/consumer.go" "$gomod/main.go"
check "go: a temporary module requires the flowmesh module (go mod edit, go mod tidy)" bash -c "
    set -e
    cd '$gomod'
    go mod init example.com/fmconsumer >/dev/null 2>&1
    go mod edit -require=github.com/flowmesh/flowmesh/bindings/go@v$version \
        -replace=github.com/flowmesh/flowmesh/bindings/go='$root/bindings/go'
    go mod tidy"
check "go: build with -tags flowmesh_pkgconfig (pkg-config flowmesh) and run" bash -c "
    set -e
    cd '$gomod'
    # Go's build cache keys a cgo package on CGO_* but not on what
    # pkg-config prints (golang/go#24544): name this root in CGO_CFLAGS so a
    # build from an earlier run's root is never reused.
    PKG_CONFIG_PATH='$DL/pkgconfig' PKG_CONFIG_SYSROOT_DIR='$droot' PKG_CONFIG_LIBDIR= \
        CGO_CFLAGS=\"-O2 -g -DFLOWMESH_TEST_ROOT=$droot\" go build -tags flowmesh_pkgconfig -o app-pc .
    LD_LIBRARY_PATH='$DL' ./app-pc | tee /dev/stderr | grep -q 'go consumer OK: flowmesh $version'"
check "go: build with CGO_CFLAGS/CGO_LDFLAGS naming the library and run" bash -c "
    set -e
    cd '$gomod'
    CGO_CFLAGS='-I$droot/usr/include' CGO_LDFLAGS='-L$DL -Wl,-rpath,$DL' go build -o app-flags .
    ./app-flags | grep -q 'go consumer OK: flowmesh $version'"

check "docs: the C reference (make docs) has an entry for every exported function" bash -c "
    set -e
    python3 '$root/scripts/docs_site.py' header '$root/include/flowmesh.h' '$tmp/c.html' '$version' >/dev/null
    missing=\$(nm -D --defined-only '$release/libflowmesh.so' | awk '\$3 ~ /^fm_/ {print \$3}' | while read -r f; do
        grep -q \"id='\$f'\" '$tmp/c.html' || echo \"\$f\"; done)
    [ -z \"\$missing\" ] || { echo \"no entry for: \$missing\"; exit 1; }"
check "one version everywhere: Cargo.toml, wheel, npm, Debian, CLI, fm_version" bash -c "
    set -e
    test \"\$(tar xzf '$tgz' -O package/package.json | python3 -c 'import json,sys; print(json.load(sys.stdin)[\"version\"])')\" = '$version'
    test \"\$($clean_env '$tmp/venv/bin/python' -c 'import flowmesh; print(flowmesh.__version__)')\" = '$version'
    test \"\$('$release/flowmesh' --version)\" = 'flowmesh $version'
    case '$wheel' in *flowmesh-$version-*) ;; *) exit 1 ;; esac"

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
