#!/bin/sh
# Linearizability of KV set/get/CAS and queue enqueue/reserve/ack from 4
# clients, checked with Porcupine: on file:// (no faults), on a broker
# that is killed, paused (SIGSTOP) and cut off through a proxy meanwhile,
# and on a nats-server of its own (no faults). LIN_SECONDS sets each run's
# length (8); LIN_URLS adds engines to check (e.g. "nats://127.0.0.1:4222",
# starting empty: the runs use fixed names).
set -eu
cd "$(dirname "$0")"
target=${CARGO_TARGET_DIR:-$(cd ../.. && pwd)/target}
release=${FLOWMESH_LIB_DIR:-$target/release}
# The Go binding links $repo/target/release by default; point cgo at the
# library cargo really built (CARGO_TARGET_DIR may place it elsewhere).
export CGO_LDFLAGS="-L$release -Wl,-rpath,$release ${CGO_LDFLAGS:-}"
bin="${TMPDIR:-/tmp}/fm-linearizability-$$"
dir=$(mktemp -d)
nats="NATS_CLUSTER_DIR=$dir/nats NATS_NODES=1 ../../scripts/nats-cluster.sh"
trap 'env $nats wipe >/dev/null 2>&1; rm -rf "$dir" "$bin"' EXIT
go vet .
go build -o "$bin" .
secs=${LIN_SECONDS:-8}
"$bin" -url "file://$dir/data" -seconds "$secs"
"$bin" -url broker -flowmesh "${FLOWMESH_BIN:-$target/release/flowmesh}" -seconds "$secs"
env $nats start >"$dir/nats-start.log"
"$bin" -url "$(tail -n 1 "$dir/nats-start.log")" -seconds "$secs"
env $nats wipe >/dev/null
for url in ${LIN_URLS:-}; do
  "$bin" -url "$url" -seconds "$secs"
done
echo "linearizability: all histories linearizable, no job lost or acknowledged twice"
