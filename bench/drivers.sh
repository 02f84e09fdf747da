#!/usr/bin/env bash
# Compares monoio's drivers on this machine: /healthz requests/s with tokend
# pinned to CPU 0 (one worker core) and wrk pinned to CPU 1, median of RUNS
# runs per driver, interleaved so machine noise hits both alike.
#
#   bench/drivers.sh            (needs scripts/services.sh done, a migrated
#                                database and a KEK: it uses .dev/tokend.toml
#                                from scripts/run.sh, or TOKEND_* variables)
# Env: RUNS (3), DURATION (10s), CONNECTIONS (64), PORT (18080)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS="${RUNS:-3}"; DURATION="${DURATION:-10s}"; CONNECTIONS="${CONNECTIONS:-64}"; PORT="${PORT:-18080}"
BIN=target/release/tokend
[ -x "$BIN" ] || cargo build --release
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
CONFIG_ARGS=()
[ -f .dev/tokend.toml ] && CONFIG_ARGS=(--config .dev/tokend.toml)

run_one() { # driver -> requests/s
  local driver="$1" pid rps
  TOKEND_SERVER_DRIVER="$driver" TOKEND_SERVER_CORES=1 TOKEND_SERVER_LISTEN="127.0.0.1:$PORT" \
    TOKEND_SERVER_LOG_LEVEL=warn taskset -c 0 "$BIN" "${CONFIG_ARGS[@]}" serve 2>"/tmp/tokend-bench-$driver.log" &
  pid=$!
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  rps=$(taskset -c 1 wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s bench/healthz.lua "http://127.0.0.1:$PORT" \
        | awk '/Requests\/sec/ {print $2}')
  kill -TERM "$pid"; wait "$pid" || true
  echo "$rps"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A results
for i in $(seq "$RUNS"); do
  for driver in epoll io_uring; do
    r=$(run_one "$driver"); echo "run $i $driver: $r req/s" >&2
    results[$driver]+="$r "
  done
done
for driver in epoll io_uring; do
  echo "$driver: median $(echo "${results[$driver]}" | tr ' ' '\n' | grep . | median) req/s over $RUNS runs (all: ${results[$driver]})"
done
