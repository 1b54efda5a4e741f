#!/usr/bin/env bash
# The C ABI test suite:
#   1. built with -fsanitize=address,undefined and run (LeakSanitizer on) on
#      mem:// (every test: embedded-only and core);
#   2. the same ASan build's core tests (CORE_TEST, plus BROKER_TEST) against
#      a real broker, `<target>/release/flowmesh serve` on a free loopback port
#      (FM_TEST_URL=grpc://127.0.0.1:PORT), once with --data mem:// and once
#      with --data file://<fresh temp dir>; the broker must then exit cleanly
#      on SIGTERM;
#   2b. the ASan build's core tests against a single nats-server started here
#      (FM_TEST_URL=nats://127.0.0.1:PORT, scripts/nats-cluster.sh), stopped after;
#   3. the ASan build's broker kill tests (KILL_TEST): they start their own
#      brokers (FM_TEST_FLOWMESH): kill -9 while publishing (restart on the
#      same data, every acknowledged publish readable), a SIGSTOP'd broker,
#      and subscriptions across kills and restarts on the same port
#      (test_reconnect.c: max_reconnect_attempts, resume in order, close
#      during delivery, 200 restarts without thread/fd growth), and the
#      authorization matrix (test_auth.c: a broker with --access-file);
#   4. built plain (-g) and run under valgrind memcheck on mem://
#      (--error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite),
#      then its core tests under memcheck against a broker (--data mem://).
# All must pass. Brokers started here are killed on exit (trap). Under
# valgrind the connect/close cycle test runs
# FM_TEST_CYCLES cycles (default here: 200 instead of 1000) and timeouts are
# scaled by FM_TEST_SLOW, because valgrind is slow.
#
# Usage: tests/c/run.sh [TEST_NAME_FILTER]     (from anywhere; needs <target>/release/libflowmesh.so,
# <target> being cargo's target directory: target/ or $CARGO_TARGET_DIR)
set -u
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
filter="${1:-}"

release="$("$root/scripts/target-dir.sh")/release" || exit 1
if [ ! -e "$release/libflowmesh.so" ]; then
    echo "tests/c: $release/libflowmesh.so is missing: run 'make lib' first" >&2
    exit 1
fi
flowmesh_bin="$release/flowmesh"
if [ ! -x "$flowmesh_bin" ]; then
    echo "tests/c: $flowmesh_bin is missing: the broker passes need it (cargo build --release)" >&2
    exit 1
fi
# The SONAME is libflowmesh.so.0; the build leaves that symlink next to it.
major="$("$root/scripts/version.sh" major)" || exit 1
[ -e "$release/libflowmesh.so.$major" ] || ln -sf libflowmesh.so "$release/libflowmesh.so.$major"

echo "== tests/c: building (ASan+UBSan and plain) into tests/c/build/"
make -s all LIBDIR="$release" || { echo "tests/c: build failed"; exit 1; }

fail=0
total_pass=0
total_fail=0

# Runs the suite ($1 = label, rest = command), shows its output with the
# suite's own "N passed, N failed" line relabelled, and adds up the counts,
# so this script ends with exactly one overall "N passed, N failed" line.
run_suite() {
    local label="$1"; shift
    local out="$here/build/$label.log"
    # A plain pipeline (no background filter to wait for: a bare `wait`
    # would also wait for a broker running in the background).
    "$@" 2>&1 | tee "$out" | sed -u -E "s/^([0-9]+) passed, ([0-9]+) failed$/tests\/c [$label]: \1 passed, \2 failed/"
    local rc=${PIPESTATUS[0]}
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

# ---- the broker passes ------------------------------------------------------
broker_pid=""
tmp_dirs=()
cleanup() {
    if [ -n "$broker_pid" ]; then
        kill -9 "$broker_pid" 2>/dev/null
        wait "$broker_pid" 2>/dev/null
    fi
    for d in "${tmp_dirs[@]}"; do rm -rf "$d"; done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port (the kernel's pick for port 0).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
    else
        local p i
        for i in $(seq 1 50); do
            p=$((20000 + RANDOM % 40000))
            if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return 0; fi
        done
        return 1
    fi
}

# start_broker DATA_URL LOG: starts `flowmesh serve` on a free loopback port
# and waits (bounded: 10 s per attempt, 3 attempts) until the port accepts.
# Sets broker_pid and broker_port.
start_broker() {
    local data="$1" log="$2" attempt i
    for attempt in 1 2 3; do
        broker_port="$(free_port)" || return 1
        "$flowmesh_bin" serve --listen "127.0.0.1:$broker_port" --data "$data" >>"$log" 2>&1 &
        broker_pid=$!
        for i in $(seq 1 100); do
            if (exec 3<>"/dev/tcp/127.0.0.1/$broker_port") 2>/dev/null; then
                return 0
            fi
            kill -0 "$broker_pid" 2>/dev/null || break # exited (port taken?): next attempt
            sleep 0.1
        done
        kill -9 "$broker_pid" 2>/dev/null
        wait "$broker_pid" 2>/dev/null
        broker_pid=""
    done
    return 1
}

# stop_broker: SIGTERM (graceful shutdown), bounded wait (10 s), then
# SIGKILL. Returns 0 only if the broker exited by itself with status 0.
stop_broker() {
    local i rc
    [ -n "$broker_pid" ] || return 1
    kill -TERM "$broker_pid" 2>/dev/null
    for i in $(seq 1 100); do
        kill -0 "$broker_pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$broker_pid" 2>/dev/null; then
        echo "tests/c: the broker (pid $broker_pid) did not exit within 10 s of SIGTERM: killing it"
        kill -9 "$broker_pid" 2>/dev/null
        wait "$broker_pid" 2>/dev/null
        broker_pid=""
        return 1
    fi
    wait "$broker_pid"
    rc=$?
    broker_pid=""
    [ "$rc" = 0 ] || echo "tests/c: the broker exited with status $rc after SIGTERM"
    return "$rc"
}

for backing in mem file; do
    label="asan-broker-$backing"
    if [ "$backing" = mem ]; then
        data="mem://"
    else
        d="$(mktemp -d /tmp/flowmesh-cbroker-XXXXXX)"
        tmp_dirs+=("$d")
        data="file://$d"
    fi
    log="$here/build/$label-broker.log"
    : >"$log"
    echo "== tests/c: ASan build, core tests against flowmesh serve --data $data"
    if ! start_broker "$data" "$log"; then
        echo "tests/c: $label: cannot start the broker (log: $log)"
        tail -5 "$log"
        fail=1
        total_fail=$((total_fail + 1))
        continue
    fi
    echo "tests/c: broker pid $broker_pid on 127.0.0.1:$broker_port (log: $log)"
    if FM_TEST_URL="grpc://127.0.0.1:$broker_port" FM_TEST_DATA="$data" \
       ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1" \
       LSAN_OPTIONS="$lsan_opts" \
       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
       run_suite "$label" ./build/test_abi_asan $filter; then
        echo "tests/c: $label run: OK"
    else
        echo "tests/c: $label run: FAILED (exit $?)"
        fail=1
    fi
    if ! stop_broker; then
        echo "tests/c: $label: the broker did not shut down cleanly on SIGTERM (log: $log); counted as a failure"
        tail -5 "$log"
        fail=1
        total_fail=$((total_fail + 1))
    fi
done

# ---- the nats:// pass ---------------------------------------------------------
# The core tests on the nats:// engine: a single nats-server (JetStream)
# started here by scripts/nats-cluster.sh in a temp dir, loopback, wiped after.
# FM_TEST_NATS_SKIP (comma-separated test names) leaves cases out of this pass.
NATS_SKIP="${FM_TEST_NATS_SKIP-}"
nats_dir="$(mktemp -d /tmp/flowmesh-cnats-XXXXXX)"
tmp_dirs+=("$nats_dir")
nats_stop() { NATS_CLUSTER_DIR="$nats_dir/cluster" "$root/scripts/nats-cluster.sh" wipe >/dev/null 2>&1; }
trap 'nats_stop; cleanup' EXIT
echo "== tests/c: ASan build, core tests against a nats-server (nats://)"
if nats_url="$(NATS_CLUSTER_DIR="$nats_dir/cluster" NATS_NODES=1 "$root/scripts/nats-cluster.sh" start)"; then
    if FM_TEST_URL="$nats_url" FM_TEST_SKIP="$NATS_SKIP" \
       ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1" \
       LSAN_OPTIONS="$lsan_opts" \
       UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
       run_suite asan-nats ./build/test_abi_asan $filter; then
        echo "tests/c: asan-nats run: OK"
    else
        echo "tests/c: asan-nats run: FAILED (exit $?)"
        fail=1
    fi
else
    echo "tests/c: asan-nats: cannot start nats-server (scripts/nats-cluster.sh)"
    fail=1
    total_fail=$((total_fail + 1))
fi
nats_stop

echo "== tests/c: ASan build, kill -9 of a broker while a client publishes"
if FM_TEST_FLOWMESH="$flowmesh_bin" \
   ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=1" \
   LSAN_OPTIONS="$lsan_opts" \
   UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1" \
   run_suite asan-kill ./build/test_abi_asan $filter; then
    echo "tests/c: asan-kill run: OK"
else
    echo "tests/c: asan-kill run: FAILED (exit $?)"
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
    # run_valgrind LABEL [ENV=VALUE...]: the plain build under memcheck.
    run_valgrind() {
        local label="$1" rc; shift
        if run_suite "$label" env "$@" FM_TEST_CYCLES="$cycles" FM_TEST_SLOW="${FM_TEST_SLOW:-10}" \
                    FM_TEST_VALGRIND=1 FM_TEST_RSS_SLACK_KB="${FM_TEST_RSS_SLACK_KB:-8192}" \
                    valgrind --quiet --error-exitcode=99 --leak-check=full \
                    --errors-for-leak-kinds=definite --show-leak-kinds=definite \
                    --track-origins=yes --fair-sched=yes \
                    ./build/test_abi $filter; then
            echo "tests/c: $label run: OK (0 errors, 0 definite leaks)"
        else
            rc=$?
            if [ "$rc" = 99 ]; then
                echo "tests/c: $label run: FAILED: valgrind reported errors or definite leaks (exit 99)"
            else
                echo "tests/c: $label run: FAILED (exit $rc)"
            fi
            fail=1
        fi
    }
    run_valgrind valgrind
    # The core tests under memcheck against a broker too (mem:// data only:
    # it takes ~30 s; the file:// broker is covered by the ASan pass).
    echo "== tests/c: valgrind memcheck, core tests against flowmesh serve --data mem://"
    log="$here/build/valgrind-broker-mem-broker.log"
    : >"$log"
    if start_broker "mem://" "$log"; then
        echo "tests/c: broker pid $broker_pid on 127.0.0.1:$broker_port (log: $log)"
        run_valgrind valgrind-broker-mem FM_TEST_URL="grpc://127.0.0.1:$broker_port" FM_TEST_DATA="mem://"
        if ! stop_broker; then
            echo "tests/c: valgrind-broker-mem: the broker did not shut down cleanly on SIGTERM (log: $log); counted as a failure"
            fail=1
            total_fail=$((total_fail + 1))
        fi
    else
        echo "tests/c: valgrind-broker-mem: cannot start the broker (log: $log)"
        fail=1
        total_fail=$((total_fail + 1))
    fi
fi

if [ "$fail" = 0 ]; then
    echo "tests/c: all C ABI tests passed under ASan (embedded and broker) and valgrind"
else
    echo "tests/c: FAILED"
fi
echo "$total_pass passed, $total_fail failed"
exit "$fail"
