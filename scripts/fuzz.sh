#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ and runs each for FUZZ_RUNS
# executions (default 1000000), starting from the corpus kept in
# fuzz/corpus/<target>; afterwards the smallest set of inputs covering
# what the old corpus and the run's new inputs cover replaces it.
# A crash stops the run: its input is in fuzz/artifacts/<target>/ (replay it
# with `<binary> <file>`), and it belongs in tests/fuzz.rs as a regression
# test. Prints one line per target: executions, seconds, corpus size.
#
#   scripts/fuzz.sh [TARGET...]       (default: every target of fuzz/Cargo.toml)
#
# Needs the nightly toolchain (`rustup toolchain install nightly`) and a C++
# compiler (libfuzzer-sys builds libFuzzer). No sanitizer: the targets run
# safe Rust plus the C ABI, and coverage guidance is what matters here.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
runs="${FUZZ_RUNS:-1000000}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(sed -n 's/^name = "\(.*\)"$/\1/p' "$fuzz/Cargo.toml" | grep -v '^flowmesh-fuzz$')
fi
if ! cargo "+$toolchain" --version >/dev/null 2>&1; then
    echo "fuzz: the $toolchain toolchain is missing: rustup toolchain install $toolchain" >&2
    exit 1
fi
# Its own target directory (other RUSTFLAGS than the crate's builds), under
# CARGO_TARGET_DIR when that is set.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$fuzz/target}"
triple="$(rustc "+$toolchain" -vV | sed -n 's/^host: //p')"
# What cargo-fuzz passes: coverage counters and comparison tracing for
# libFuzzer, debug assertions and overflow checks on. --target keeps these
# flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks"
(cd "$fuzz" && cargo "+$toolchain" build --release --locked --target "$triple" --bins)
bin="$CARGO_TARGET_DIR/$triple/release"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    corpus="$fuzz/corpus/$t"
    mkdir -p "$corpus" "$fuzz/artifacts/$t" "$work/$t"
    log="$work/$t.log"
    start=$(date +%s)
    # New inputs go to the scratch directory (first); the kept corpus is read.
    if ! "$bin/$t" -runs="$runs" -max_len=1024 -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$fuzz/artifacts/$t/" "$work/$t" "$corpus" >"$log" 2>&1; then
        tail -40 "$log" >&2
        echo "fuzz: $t failed; the input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
    secs=$(( $(date +%s) - start ))
    done_runs="$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)"
    # Keep the corpus small: the fewest inputs that cover what the kept
    # corpus and this run's new inputs cover replace it.
    kept="$work/$t.kept"
    mkdir -p "$kept"
    "$bin/$t" -set_cover_merge=1 -max_len=1024 "$kept" "$corpus" "$work/$t" >"$work/$t.merge.log" 2>&1
    rm -rf "$corpus"
    mv "$kept" "$corpus"
    bytes="$(find "$corpus" -type f -printf '%s\n' | awk '{ n += $1 } END { print n + 0 }')"
    echo "fuzz: $t: ${done_runs:-?} runs in ${secs} s, corpus $(find "$corpus" -type f | wc -l) files, $bytes bytes"
done
