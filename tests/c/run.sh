#!/usr/bin/env bash
# The C ABI test suite, run twice:
#   1. built with -fsanitize=address,undefined and run (LeakSanitizer on);
#   2. built plain (-g) and run under valgrind memcheck
#      (--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite).
# Both must pass. Under valgrind the connect/close cycle test runs
# FM_TEST_CYCLES cycles (default here: 200 instead of 1000) and timeouts are
# scaled by FM_TEST_SLOW, because valgrind is slow.
#
# Usage: tests/c/run.sh [TEST_NAME_FILTER]     (from anywhere; needs target/release/libflowmesh.so)
set -u
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
filter="${1:-}"

if [ ! -e "$root/target/release/libflowmesh.so" ]; then
    echo "tests/c: $root/target/release/libflowmesh.so is missing: run 'make lib' first" >&2
    exit 1
fi
# The SONAME is libflowmesh.so.0; the build leaves that symlink next to it.
[ -e "$root/target/release/libflowmesh.so.0" ] || ln -sf libflowmesh.so "$root/target/release/libflowmesh.so.0"

echo "== tests/c: building (ASan+UBSan and plain) into tests/c/build/"
make -s all || { echo "tests/c: build failed"; exit 1; }

fail=0
total_pass=0
total_fail=0

# Runs the suite ($1 = label, rest = command), shows its output with the
# suite's own "N passed, N failed" line relabelled, and adds up the counts,
# so this script ends with exactly one overall "N passed, N failed" line.
run_suite() {
    local label="$1"; shift
    local out="$here/build/$label.log"
    "$@" > >(tee "$out" | sed -u -E "s/^([0-9]+) passed, ([0-9]+) failed$/tests\/c [$label]: \1 passed, \2 failed/") 2>&1
    local rc=$?
    wait
    local line
    line="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -1)"
    if [ -n "$line" ]; then
        total_pass=$((total_pass + $(echo "$line" | cut -d' ' -f1)))
        total_fail=$((total_fail + $(echo "$line" | cut -d' ' -f3)))
    fi
    # A crash, a sanitizer report or a valgrind error with all tests passing
    # still counts as one failure.
    if [ "$rc" != 0 ] && { [ -z "$line" ] || [ "$(echo "$line" | cut -d' ' -f3)" = 0 ]; }; then
        total_fail=$((total_fail + 1))
    fi
    return "$rc"
}

echo "== tests/c: AddressSanitizer + UndefinedBehaviorSanitizer build"
# detect_leaks: LeakSanitizer at exit. Suppressions (none needed so far) go in
# lsan.supp with a comment explaining why each is not a real leak.
lsan_opts="print_suppressions=0"
[ -s "$here/lsan.supp" ] && lsan_opts="$lsan_opts:suppressions=$here/lsan.supp"
if ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1" \
   LSAN_OPTIONS="$lsan_opts" \
   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
   run_suite asan ./build/test_abi_asan $filter; then
    echo "tests/c: ASan run: OK"
else
    echo "tests/c: ASan run: FAILED (exit $?)"
    fail=1
fi

echo "== tests/c: valgrind memcheck (plain -g build)"
if ! command -v valgrind >/dev/null 2>&1; then
    echo "tests/c: valgrind is not installed: cannot run the valgrind half of the C suite." >&2
    echo "tests/c: install it (e.g. 'apt-get install valgrind') and re-run; counting this as a failure." >&2
    fail=1
    total_fail=$((total_fail + 1))
else
    cycles="${FM_TEST_CYCLES_VALGRIND:-200}"
    echo "tests/c: under valgrind the connect/close cycle test runs FM_TEST_CYCLES=$cycles (1000 in the ASan run)"
    if FM_TEST_CYCLES="$cycles" FM_TEST_SLOW="${FM_TEST_SLOW:-10}" FM_TEST_VALGRIND=1 \
       FM_TEST_RSS_SLACK_KB="${FM_TEST_RSS_SLACK_KB:-8192}" \
       run_suite valgrind valgrind --quiet --error-exitcode=99 --leak-check=full \
                --errors-for-leak-kinds=definite --show-leak-kinds=definite \
                --track-origins=yes --fair-sched=yes \
                ./build/test_abi $filter; then
        echo "tests/c: valgrind run: OK (0 errors, 0 definite leaks)"
    else
        rc=$?
        if [ "$rc" = 99 ]; then
            echo "tests/c: valgrind run: FAILED: valgrind reported errors or definite leaks (exit 99)"
        else
            echo "tests/c: valgrind run: FAILED (exit $rc)"
        fi
        fail=1
    fi
fi

if [ "$fail" = 0 ]; then
    echo "tests/c: all C ABI tests passed under ASan and valgrind"
else
    echo "tests/c: FAILED"
fi
echo "$total_pass passed, $total_fail failed"
exit "$fail"
