#!/bin/sh
# Go binding vs nats.go (JetStream) on loopback, alternating rounds.
# Each round runs the compiled benchmark binary once; its TestMain starts a
# fresh `flowmesh serve` (file:// temp dir) and `nats-server -js -sd DIR`
# (skipped with a note if nats-server is missing), runs every benchmark
# flowmesh-then-nats, and stops both. Results: ../../results/bindings-go.md
# Env: ROUNDS (5), BENCHTIME (1s), FM_BENCH_FSYNC (interval).
set -eu
cd "$(dirname "$0")"
ROUNDS=${ROUNDS:-5}
BENCHTIME=${BENCHTIME:-1s}
FM_BENCH_FSYNC=${FM_BENCH_FSYNC:-interval}
export FM_BENCH_FSYNC
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
go vet ./...
go test -c -o "$out/bench.test" .
i=1
while [ "$i" -le "$ROUNDS" ]; do
    echo "round $i/$ROUNDS" >&2
    "$out/bench.test" -test.run XXX -test.bench . -test.benchtime "$BENCHTIME" -test.count 1 | tee -a "$out/raw.txt" >&2
    i=$((i + 1))
done
stat=""
if command -v benchstat >/dev/null 2>&1; then
    stat=$(benchstat -col /impl "$out/raw.txt" 2>&1 || benchstat "$out/raw.txt" 2>&1 || true)
elif [ -x "$(go env GOPATH)/bin/benchstat" ]; then
    stat=$("$(go env GOPATH)/bin/benchstat" -col /impl "$out/raw.txt" 2>&1 || true)
fi
printf '%s\n' "$stat" > "$out/benchstat.txt"
python3 report.py "$out/raw.txt" "$out/benchstat.txt" "$ROUNDS" "$BENCHTIME" "$FM_BENCH_FSYNC" > ../../results/bindings-go.md
echo "wrote bench/results/bindings-go.md" >&2
