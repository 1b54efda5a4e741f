#!/usr/bin/env bash
# A local NATS JetStream cluster on loopback for development and tests.
#
#   scripts/nats-cluster.sh start      start the nodes, wait until JetStream has a
#                                      meta leader and answers; prints the client URL
#   scripts/nats-cluster.sh stop       stop every node gracefully (state is kept)
#   scripts/nats-cluster.sh status     one line per node: pid or "stopped", ports
#   scripts/nats-cluster.sh url        the client URL (nats://h:p,h:p,...)
#   scripts/nats-cluster.sh kill N     SIGKILL node N (1-based)
#   scripts/nats-cluster.sh stop-node N    stop node N gracefully
#   scripts/nats-cluster.sh restart N  start node N again (after kill/stop-node)
#   scripts/nats-cluster.sh wipe       stop every node and delete the state dir
#
# Environment: NATS_CLUSTER_DIR (state dir; default a fixed dir under $TMPDIR),
# NATS_NODES (node count at start, default 3; 1 = a single server without
# clustering), NATS_START_TIMEOUT (seconds, default 30), NATS_SYNC_INTERVAL
# (JetStream sync_interval, e.g. "always"; default the server's),
# NATS_TEST_ACCOUNTS (N extra accounts T1..TN with JetStream, users t1..tN,
# password t: tests give each case an account of its own).
# Every node has an application account APP (JetStream enabled; user app,
# password app, also the default for clients without credentials) and the
# system account SYS (user sys, password sys). Ports are chosen free at the
# first start and kept in the state dir, so restarts reuse them.
set -euo pipefail

DIR="${NATS_CLUSTER_DIR:-${TMPDIR:-/tmp}/flowmesh-nats-$(id -u)}"
NODES="${NATS_NODES:-3}"
TIMEOUT="${NATS_START_TIMEOUT:-30}"
HERE="$(cd "$(dirname "$0")" && pwd)"

die() { echo "nats-cluster.sh: $*" >&2; exit 1; }

free_ports() { # count
  python3 - "$1" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
PY
}

node_count() { cat "$DIR/nodes"; }
port() { sed -n "${1}p" "$DIR/$2"; } # node kind(client|route|monitor)

pid_of() { # node -> pid if running
  local f="$DIR/n$1.pid"
  [ -f "$f" ] || return 1
  local pid
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null || return 1
  # A stopped (SIGSTOP) process still counts as running.
  echo "$pid"
}

write_config() { # node
  local n=$1 count routes="" i
  count=$(node_count)
  for i in $(seq 1 "$count"); do
    routes="$routes    nats-route://127.0.0.1:$(route_target "$i" "$n")\n"
  done
  {
    echo "server_name: n$n"
    echo "listen: 127.0.0.1:$(port "$n" client)"
    echo "http: 127.0.0.1:$(port "$n" monitor)"
    # Room for flowmesh's 8 MiB default max_payload_bytes plus headers.
    echo "max_payload: 16MB"
    echo "max_pending: 64MB"
    echo "jetstream {"
    echo "  store_dir: \"$DIR/n$n/js\""
    echo "  max_memory_store: 1GB"
    echo "  max_file_store: 20GB"
    [ -n "${NATS_SYNC_INTERVAL:-}" ] && echo "  sync_interval: ${NATS_SYNC_INTERVAL}"
    echo "}"
    if [ "$count" -gt 1 ]; then
      echo "cluster {"
      echo "  name: flowmesh"
      echo "  listen: 127.0.0.1:$(port "$n" route)"
      # Behind route proxies, gossip must not hand out the real route ports
      # (peers would dial them directly, around the proxies): advertise a
      # port nothing listens on, so only the configured routes connect.
      if compgen -G "$DIR/route-proxy*" >/dev/null; then echo "  advertise: 127.0.0.1:1"; fi
      echo "  routes: ["
      printf "%b" "$routes"
      echo "  ]"
      echo "}"
    fi
    echo "accounts {"
    echo "  APP: { jetstream: enabled, users: [ { user: app, password: app } ] }"
    echo "  SYS: { users: [ { user: sys, password: sys } ] }"
    for i in $(seq 1 "$(cat "$DIR/test-accounts")"); do
      echo "  T$i: { jetstream: enabled, users: [ { user: t$i, password: t } ] }"
    done
    echo "}"
    cat <<'CONF'

system_account: SYS
no_auth_user: app
CONF
  } >"$DIR/n$n.conf"
}

# The port node $2 dials for its route to node $1: node $1's route port, or
# the port of a proxy in front of it when the caller set one up, written by
# fault tests before start: route-proxy.n<from> (one proxy per pair, so one
# node can be cut off alone) or route-proxy (one per target), a port per line.
route_target() {
  if [ -f "$DIR/route-proxy.n$2" ]; then sed -n "${1}p" "$DIR/route-proxy.n$2"
  elif [ -f "$DIR/route-proxy" ]; then sed -n "${1}p" "$DIR/route-proxy"
  else port "$1" route; fi
}

start_node() { # node
  local n=$1 bin
  if pid_of "$n" >/dev/null; then return 0; fi
  bin=$("$HERE/nats-server.sh")
  mkdir -p "$DIR/n$n/js"
  write_config "$n"
  "$bin" -c "$DIR/n$n.conf" >>"$DIR/n$n.log" 2>&1 &
  echo $! >"$DIR/n$n.pid"
}

url() {
  local count i out=""
  count=$(node_count)
  for i in $(seq 1 "$count"); do out="$out${out:+,}127.0.0.1:$(port "$i" client)"; done
  echo "nats://$out"
}

# Ready when every running node answers /healthz (JetStream current) and one
# reports a meta leader (clustered) or JetStream enabled (single server).
wait_ready() {
  local deadline=$((SECONDS + TIMEOUT)) count i ok
  count=$(node_count)
  while :; do
    ok=1
    for i in $(seq 1 "$count"); do
      pid_of "$i" >/dev/null || continue
      curl -fsS "http://127.0.0.1:$(port "$i" monitor)/healthz" >/dev/null 2>&1 || { ok=0; break; }
    done
    if [ "$ok" = 1 ]; then
      for i in $(seq 1 "$count"); do
        pid_of "$i" >/dev/null || continue
        local jsz
        jsz=$(curl -fsS "http://127.0.0.1:$(port "$i" monitor)/jsz" 2>/dev/null || true)
        if [ "$count" = 1 ] || echo "$jsz" | grep -q '"leader": *"n'; then
          return 0
        fi
      done
    fi
    [ "$SECONDS" -lt "$deadline" ] || die "cluster in $DIR not ready within ${TIMEOUT}s (logs: $DIR/n*.log)"
    sleep 0.2
  done
}

need_state() { [ -f "$DIR/nodes" ] || die "no cluster in $DIR (run start first)"; }
node_arg() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ] && [ "$1" -le "$(node_count)" ] ||
    die "expected a node number 1-$(node_count), got '${1:-}'"
}

stop_pid() { # pid: SIGTERM, wait up to 10 s, then SIGKILL
  local pid=$1 i
  kill -CONT "$pid" 2>/dev/null || true
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cmd=${1:-}
case "$cmd" in
  start)
    mkdir -p "$DIR"
    if [ ! -f "$DIR/nodes" ]; then
      [[ "$NODES" =~ ^[1-9]$ ]] || die "NATS_NODES must be 1-9"
      echo "$NODES" >"$DIR/nodes"
      echo "${NATS_TEST_ACCOUNTS:-0}" >"$DIR/test-accounts"
      ports=($(free_ports $((NODES * 3))))
      : >"$DIR/client"; : >"$DIR/route"; : >"$DIR/monitor"
      for i in $(seq 0 $((NODES - 1))); do
        echo "${ports[$((i * 3))]}" >>"$DIR/client"
        echo "${ports[$((i * 3 + 1))]}" >>"$DIR/route"
        echo "${ports[$((i * 3 + 2))]}" >>"$DIR/monitor"
      done
    fi
    for i in $(seq 1 "$(node_count)"); do start_node "$i"; done
    wait_ready
    url | tee "$DIR/url"
    ;;
  stop)
    need_state
    for i in $(seq 1 "$(node_count)"); do
      pid=$(pid_of "$i") && stop_pid "$pid"
      rm -f "$DIR/n$i.pid"
    done
    ;;
  status)
    need_state
    for i in $(seq 1 "$(node_count)"); do
      if pid=$(pid_of "$i"); then state="running pid $pid"; else state=stopped; fi
      echo "n$i $state client=$(port "$i" client) route=$(port "$i" route) monitor=$(port "$i" monitor)"
    done
    ;;
  url) need_state; url ;;
  kill)
    need_state; node_arg "${2:-}"
    if pid=$(pid_of "$2"); then kill -KILL "$pid"; while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done; fi
    ;;
  stop-node)
    need_state; node_arg "${2:-}"
    if pid=$(pid_of "$2"); then stop_pid "$pid"; fi
    rm -f "$DIR/n$2.pid"
    ;;
  restart)
    need_state; node_arg "${2:-}"
    start_node "$2"
    wait_ready
    ;;
  wipe)
    if [ -f "$DIR/nodes" ]; then "$0" stop; fi
    rm -rf "$DIR"
    ;;
  *) sed -n '2,20p' "$0" >&2; exit 2 ;;
esac
