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
# links to the real release directory, so cargo finds everything up to date
# and nothing is rebuilt. FLOWMESH_LIB* (exported by make) are cleared so the
# scripts have to find the library themselves.
ctd="$tmp/cargo-target"
mkdir -p "$ctd" "$tmp/empty-target"
ln -s "$release" "$ctd/release"
in_ctd() { env -u FLOWMESH_LIB -u FLOWMESH_LIB_DIR -u FLOWMESH_BIN CARGO_TARGET_DIR="$1" "${@:2}"; }
check "scripts/target-dir.sh reports CARGO_TARGET_DIR" \
    test "$(in_ctd "$ctd" "$root/scripts/target-dir.sh")" = "$ctd"
check "make install with CARGO_TARGET_DIR set installs the library from there" bash -c "
    set -e
    $(declare -f in_ctd)
    in_ctd '$ctd' make -s -C '$root' install PREFIX='$tmp/prefix-ctd'
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

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
