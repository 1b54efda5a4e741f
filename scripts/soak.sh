#!/bin/sh
# Soak (not part of make test): SOAK_MINUTES (30) of mixed publish /
# subscribe / queue / KV CAS / watch traffic against a broker that is
# SIGKILLed and restarted every SOAK_KILL_SECONDS (180). Reports loss and
# duplicates (both must be 0; the exit status says) and writes the RSS and
# descriptor curves of the broker and the clients to
# bench/out/soak/soak.png (samples in soak.csv).
set -eu
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
out=${SOAK_OUT:-$root/bench/out/soak}
mkdir -p "$out"
bin="$out/soak"
(cd "$root/bench/soak" && go build -o "$bin" .)
status=0
"$bin" -flowmesh "${FLOWMESH_BIN:-$target/release/flowmesh}" -minutes "${SOAK_MINUTES:-30}" \
  -kill-every "${SOAK_KILL_SECONDS:-180}s" -csv "$out/soak.csv" || status=$?
python=python3
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  # A private environment for the plot (the repository's target directory).
  [ -x "$target/plot-venv/bin/python" ] || python3 -m venv "$target/plot-venv"
  "$target/plot-venv/bin/python" -c 'import matplotlib' 2>/dev/null ||
    "$target/plot-venv/bin/pip" install -q matplotlib
  python="$target/plot-venv/bin/python"
fi
"$python" "$root/bench/soak/plot.py" "$out/soak.csv" "$out/soak.png"
exit $status
