#!/usr/bin/env bash
# tokend's benchmark suite, one command:   bench/run.sh
#
# Builds tokend and the may_minihttp ceiling (bench/baseline) in release mode,
# starts PostgreSQL and Redis (scripts/services.sh), creates a throw-away
# database tokend_bench_<random> and Redis prefix tokend:bench:<random>:
# (both removed at exit), 1,000 users, a client and their tokens, then
# measures with tokend pinned to CPU 0 (one worker core) and wrk pinned to
# CPU 1:
#   - full speed, RUNS runs per scenario, interleaved (median, min, max):
#     baseline and baseline_p16 (the ceiling), healthz, validate,
#     validate_p16 (16 requests pipelined), validate_redis (a second tokend
#     with the revocation mirror off), validate_redis_tls (the same through
#     TLS: a third tokend on a TLS-only redis-server of the run's own, with
#     certificates openssl makes for the run), introspect, introspect_p16,
#     validate_401 (no token), validate_malformed (a bearer value that is no
#     JWT), client_credentials (one token signed a request), authorize (a
#     signed-in browser gets a code: single sign-on), authorization_code
#     (each request redeems one of the codes authorize made just before, with
#     its PKCE verifier: an access token, an ID token and a refresh token),
#     refresh, login, mixed; the measured tokend runs with redis.revocation_mirror = true;
#   - instructions per request on the serving core's thread, counted by
#     callgrind (bench/callgrind.py, CALLGRIND_REQUESTS requests a scenario
#     after a warm-up) for healthz, validate, the 401 paths, an expired
#     token (refused before its signature), a forged
#     signature, introspect, client_credentials and the baseline, and
#     pipelined (16 requests to a write) for healthz, validate, introspect
#     and the baseline;
#   - argon2id's single-thread rate (sequential logins, one pool thread);
#   - constant rate at RATES req/s: wrk2 (validate and mixed) when installed,
#     otherwise oha -q RATE --latency-correction (validate only, one token);
#   - the login storm: validate at a constant STORM_RATE req/s alone, then
#     while wrk (bench/login.lua, STORM_CONNECTIONS connections) keeps the
#     blocking pool busy with logins;
#   - tokend's resident memory after the runs, with no connection and with
#     HOLD_CONNECTIONS idle keep-alive connections (bench/hold_connections.py).
# Writes bench/results/latest.json, bench/results/summary.md and
# bench/results/chart.png (bench/chart, plotters).
#
# Env: DURATION (10s), RUNS (3), CONNECTIONS (64), RATES ("5000 10000 20000
# 40000"), RATE_TOOL (auto: wrk2 when installed, else oha; or wrk2, oha),
# STORM_RATE (20000), STORM_CONNECTIONS (8), HOLD_CONNECTIONS (10000),
# CALLGRIND_REQUESTS (2000, a multiple of 16; 0 skips the counts),
# CALLGRIND_KEEP (empty; 1 keeps callgrind's dumps in bench/results/raw/cg/
# for callgrind_annotate), MINT_FACTOR (16: the codes
# for authorization_code are made during MINT_FACTOR × DURATION before each
# of its runs), ONLY (empty: everything;
# ONLY=callgrind: the instruction counts alone, printed as a table, in about
# a minute once the builds are done; summary.md is left as it was),
# PORT (18080),
# REDIS_CHECK_PORT (PORT + 1), callgrind's tokend on PORT + 2, the TLS
# tokend on PORT + 3 and its redis-server on PORT + 4,
# BASELINE_PORT (18090), callgrind's baseline on BASELINE_PORT + 1,
# SERVER_CPU (0), CLIENT_CPU (1), BIN (target/release/tokend: the binary
# measured; the release build is made anyway).
# RATES=, STORM_RATE= or HOLD_CONNECTIONS=0 skips that part.
# Needs: wrk (apt-get install wrk), valgrind (for the instruction counts), python3, psql, redis-cli, taskset, curl,
# openssl (validate_redis_tls is skipped without it);
# oha is installed with `cargo install oha --locked` when constant-rate runs
# need it and neither wrk2 nor oha is present (a few minutes, once). wrk2
# (github.com/giltene/wrk2) is not packaged by Debian: build it from source
# and put it on PATH as wrk2.
# Takes about 20 minutes with the defaults, plus the release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION="${DURATION:-10s}"; RUNS="${RUNS:-3}"; CONNECTIONS="${CONNECTIONS:-64}"
RATES="${RATES-5000 10000 20000 40000}"   # RATES= (empty) skips them
RATE_TOOL="${RATE_TOOL:-auto}"
STORM_RATE="${STORM_RATE-20000}"; STORM_CONNECTIONS="${STORM_CONNECTIONS:-8}"
HOLD_CONNECTIONS="${HOLD_CONNECTIONS:-10000}"
CALLGRIND_REQUESTS="${CALLGRIND_REQUESTS:-2000}"
CALLGRIND_KEEP="${CALLGRIND_KEEP:-}"
# A code is made about four times slower than it is redeemed (2,599
# against 10,796 a second in the run of 2026-12-08). With 4 the pool ran dry
# in a run where the exchange went faster, and a dry pool falsifies the
# figure (the script then asks for /healthz): 16 leaves room.
MINT_FACTOR="${MINT_FACTOR:-16}"
[[ "$MINT_FACTOR" =~ ^[1-9][0-9]*$ ]] || { echo "MINT_FACTOR must be a positive number (got '$MINT_FACTOR')" >&2; exit 1; }
ONLY="${ONLY:-}"
case "$ONLY" in "" | callgrind) ;; *) echo "ONLY must be empty or callgrind (got '$ONLY')" >&2; exit 1 ;; esac
[ "$ONLY" = callgrind ] && [ "$CALLGRIND_REQUESTS" -eq 0 ] && { echo "ONLY=callgrind needs CALLGRIND_REQUESTS > 0" >&2; exit 1; }
NOTES=()
[[ "$CALLGRIND_REQUESTS" =~ ^[0-9]+$ ]] || { echo "CALLGRIND_REQUESTS must be a number (got '$CALLGRIND_REQUESTS')" >&2; exit 1; }
PORT="${PORT:-18080}"; BASELINE_PORT="${BASELINE_PORT:-18090}"
SERVER_CPU="${SERVER_CPU:-0}"; CLIENT_CPU="${CLIENT_CPU:-1}"
RES=bench/results; RAW=$RES/raw
URL="http://127.0.0.1:$PORT"; BASE_URL="http://127.0.0.1:$BASELINE_PORT"
REDIS_CHECK_PORT="${REDIS_CHECK_PORT:-$((PORT + 1))}"; REDIS_CHECK_URL="http://127.0.0.1:$REDIS_CHECK_PORT"
TLS_CHECK_URL="http://127.0.0.1:$((PORT + 3))"; REDIS_TLS_PORT=$((PORT + 4))
TLS_DIR=
START=$SECONDS

say() { printf '[bench %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# DURATION in whole seconds (wrk's forms: 10, 10s, 2m, 1h).
case "$DURATION" in
  *[0-9]s) DURATION_S=${DURATION%s} ;;
  *[0-9]m) DURATION_S=$(( ${DURATION%m} * 60 )) ;;
  *[0-9]h) DURATION_S=$(( ${DURATION%h} * 3600 )) ;;
  *[0-9]) DURATION_S=$DURATION ;;
  *) die "DURATION must be like 10s, 2m or 1h (got '$DURATION')" ;;
esac
[[ "$DURATION_S" =~ ^[0-9]+$ ]] || die "DURATION must be whole seconds, minutes or hours (got '$DURATION')"

# Debian packages the run needs (wrk, and fonts for the chart), installed
# when missing and we may (root with apt-get), as scripts/services.sh does.
missing=()
command -v wrk >/dev/null || missing+=(wrk)
[ "$CALLGRIND_REQUESTS" -gt 0 ] && ! command -v callgrind_control >/dev/null && missing+=(valgrind)
[ -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
ldconfig -p 2>/dev/null | grep libfontconfig.so.1 >/dev/null || missing+=(libfontconfig1)
if [ ${#missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  say "installing ${missing[*]} (apt-get)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
for tool in wrk python3 psql redis-cli taskset curl cargo; do
  command -v "$tool" >/dev/null || die "$tool is missing (wrk: apt-get install wrk)"
done

# ------------------------------------------------------------------ build
say "release builds (tokend, the may_minihttp baseline, the chart)"
cargo build --release -q
(cd bench/baseline && cargo build --release -q)
(cd bench/chart && cargo build --release -q)
# BIN: the tokend measured (default: the release build of this checkout),
# e.g. an older build to compare with under the same conditions.
BIN="${BIN:-$PWD/target/release/tokend}"
BASELINE_BIN=$PWD/bench/baseline/target/release/tokend-baseline

# The constant-rate tool (RATES and the login storm): wrk2 when installed,
# otherwise oha.
if { [ -z "$RATES" ] && [ -z "$STORM_RATE" ]; } || [ "$ONLY" = callgrind ]; then
  RATE_TOOL=none
elif [ "$RATE_TOOL" = auto ]; then
  if command -v wrk2 >/dev/null; then RATE_TOOL=wrk2; else RATE_TOOL=oha; fi
fi
case "$RATE_TOOL" in
  none) ;;
  wrk2) command -v wrk2 >/dev/null || die "RATE_TOOL=wrk2 but wrk2 is not on PATH" ;;
  oha)
    command -v oha >/dev/null || [ -x "$HOME/.cargo/bin/oha" ] || {
      say "oha not found: cargo install oha --locked (takes a few minutes, once)"
      cargo install oha --locked -q
    }
    command -v oha >/dev/null || PATH="$HOME/.cargo/bin:$PATH" ;;
  *) die "RATE_TOOL must be auto, wrk2 or oha (got '$RATE_TOOL')" ;;
esac

# 10,000 held connections need as many descriptors in tokend and in the
# holder (both inherit this limit): raise the soft limit to the hard one.
if [ "$HOLD_CONNECTIONS" -gt 0 ]; then
  NOFILE_WANT=$((HOLD_CONNECTIONS + 1024))
  if [ "$(ulimit -Hn)" = unlimited ]; then ulimit -n "$NOFILE_WANT"; else ulimit -n "$(ulimit -Hn)"; fi
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$NOFILE_WANT" ]; then
    say "open files limit $(ulimit -n) < $NOFILE_WANT: holding $(( $(ulimit -n) - 1024 )) connections instead of $HOLD_CONNECTIONS"
    HOLD_CONNECTIONS=$(( $(ulimit -n) - 1024 ))
  fi
fi
# The measured tokend must accept them all on its one core (default cap
# server.max_connections_per_core = 10000, and the holder is not alone).
MAX_CONNS=$(( HOLD_CONNECTIONS + 1000 > 10000 ? HOLD_CONNECTIONS + 1000 : 10000 ))

scripts/services.sh

# ------------------------------------------------------------------ state
ID=$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
DB=tokend_bench_$ID
PREFIX="tokend:bench:$ID:"
pg() { env -u PGHOST -u PGUSER -u PGDATABASE -u PGPASSWORD psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p 5432 -U postgres "$@"; }

unset TOKEND_CONFIG
export TOKEND_DATABASE_URL="postgres://postgres@127.0.0.1:5432/$DB"
export TOKEND_REDIS_PREFIX="$PREFIX"
TOKEND_KEYS_KEK=$(head -c 32 /dev/urandom | base64)
export TOKEND_KEYS_KEK
export TOKEND_SERVER_LOG_LEVEL=warn
export TOKEND_SERVER_LISTEN="127.0.0.1:$PORT"
export TOKEND_SERVER_PUBLIC_URL="$URL"
# Long enough that no access token expires during the run, and that no
# code made for authorization_code expires before it is redeemed.
export TOKEND_TOKENS_ACCESS_TTL=2h
export TOKEND_OAUTH_CODE_TTL=10m

PIDS=()
forget_pid() { # pid: a process that has ended is no longer cleanup's to kill
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}
cleanup() {
  local rc=$?
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  pg -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
  redis-cli --scan --pattern "${PREFIX}*" | xargs -r -n 500 redis-cli DEL >/dev/null 2>&1 || true
  if [ -n "$TLS_DIR" ]; then rm -rf "$TLS_DIR"; fi
  # Secrets and single-use material: never left behind.
  rm -f "$RES/client.txt" "$RES/users.txt" "$RES/tokens.txt" "$RES/refresh.txt" "$RES/refresh.txt.tmp" \
    "$RES/web.txt" "$RES/web-client.json" "$RES/codes.txt" "$RES/codes.txt.tmp"
  say "cleaned up database $DB and Redis prefix $PREFIX (exit $rc)"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RAW"
rm -rf "${RAW:?}"/*
pg -d postgres -c "CREATE DATABASE $DB"
"$BIN" migrate >/dev/null

# 1,000 users sharing ONE password: argon2id hashes it once (tokend user add
# for bench0001), and its PHC string is copied into the other 999 rows with
# one INSERT … SELECT. Every login still runs a full argon2id verify.
PASSWORD="bench-$ID-password"
printf '%s\n' "$PASSWORD" | "$BIN" user add bench0001 --scope read >/dev/null
pg -d "$DB" -c "INSERT INTO users (username, password_hash, scopes)
  SELECT 'bench' || lpad(g::text, 4, '0'), u.password_hash, u.scopes
  FROM users u CROSS JOIN generate_series(2, 1000) g WHERE u.username = 'bench0001'"
for i in $(seq -w 1 1000); do printf 'bench%04d %s\n' "$((10#$i))" "$PASSWORD"; done >"$RES/users.txt"
"$BIN" client add bench --grant password --grant refresh_token --grant client_credentials --scope read --json |
  python3 -c 'import json,sys; c=json.load(sys.stdin); print(c["client_id"]); print(c["client_secret"])' >"$RES/client.txt"
chmod 600 "$RES/client.txt" "$RES/users.txt"
# The browser app of the authorization code flow (authorize,
# authorization_code): a confidential client with a loopback redirect URI;
# nothing listens there, wrk only reads the code off the 303.
# Its secret goes to a file only the user can read, never to a command line.
WEB_REDIRECT=http://127.0.0.1/bench/callback
(umask 077; "$BIN" client add bench-web --grant authorization_code --grant refresh_token --scope read \
  --scope openid --redirect-uri "$WEB_REDIRECT" --json >"$RES/web-client.json")

# Whether the tokend at URL reports its one core's revocation mirror current.
# The page is read whole first: `curl | grep -q` fails under pipefail when
# grep stops reading early and curl gets SIGPIPE (it did once the metrics
# page grew).
mirror_current() { # url
  local page
  page=$(curl -sf "$1/metrics" 2>/dev/null) || return 1
  grep '^tokend_revocation_mirror_current_cores 1$' <<<"$page" >/dev/null
}
SERVER_PID=
start_tokend() { # extra env assignments...
  env "$@" "$BIN" serve 2>>"$RAW/tokend.log" &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 100); do curl -sf "$URL/healthz" >/dev/null 2>&1 && return; sleep 0.1; done
  die "tokend did not start; see $RAW/tokend.log"
}
stop_tokend() { kill -TERM "$SERVER_PID"; wait "$SERVER_PID" || true; forget_pid "$SERVER_PID"; }
# Waits (at most 15 s) until tokend uses under 10% of a CPU, so that logins
# still queued in its blocking pool by one run do not slow the next one.
wait_idle() {
  local a b
  for _ in $(seq 30); do
    a=$(awk '{print $14 + $15}' "/proc/$TOKEND_PID/stat")
    sleep 0.5
    b=$(awk '{print $14 + $15}' "/proc/$TOKEND_PID/stat")
    [ $((b - a)) -le $(( $(getconf CLK_TCK) / 20 )) ] && return 0
  done
  say "tokend still busy after 15 s; going on"
}

# Tokens: every user logs in once (a tokend on both CPUs, to be quick).
say "logging 1,000 users in"
start_tokend
python3 bench/prepare.py tokens "$URL" "$RES" 8
python3 bench/prepare.py web "$URL" "$RES" "$WEB_REDIRECT"
stop_tokend

# argon2id single-thread rate: one blocking-pool thread, sequential logins.
if [ "$ONLY" != callgrind ]; then
  say "argon2id single-thread rate"
  start_tokend TOKEND_SERVER_CORES=1 TOKEND_LIMITS_BLOCKING_THREADS=1 taskset -c "$SERVER_CPU"
  ARGON2=$(python3 bench/prepare.py argon2 "$URL" "$RES" 40)
  stop_tokend
  say "argon2: $ARGON2"
fi

# The measured servers, all pinned to SERVER_CPU (an idle one costs
# nothing): tokend with the in-memory revocation mirror on
# (redis.revocation_mirror, the setting for the fastest validation), a second
# tokend with it off (validate_redis: one Redis round trip per check, the
# default), and the ceiling.
start_tokend TOKEND_SERVER_CORES=1 TOKEND_SERVER_MAX_CONNECTIONS_PER_CORE="$MAX_CONNS" \
  TOKEND_REDIS_REVOCATION_MIRROR=true taskset -c "$SERVER_CPU"
TOKEND_PID=$SERVER_PID
for _ in $(seq 100); do
  mirror_current "$URL" && break
  sleep 0.1
done
mirror_current "$URL" ||
  die "tokend's revocation mirror did not become current; see $RAW/tokend.log"
TOKEND_SERVER_CORES=1 TOKEND_SERVER_LISTEN="127.0.0.1:$REDIS_CHECK_PORT" taskset -c "$SERVER_CPU" \
  "$BIN" serve 2>>"$RAW/tokend.log" &
PIDS+=("$!")
for _ in $(seq 100); do curl -sf "$REDIS_CHECK_URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
# validate_redis_tls: a third tokend with the mirror off whose Redis
# connections are TLS (rediss://, issue #14), to a redis-server of the run's
# own that listens with TLS only; a CA and a server certificate for
# 127.0.0.1 (P-256) are made for the run and removed at exit. Beside
# validate_redis, the difference is TLS (and a Redis of its own, unpinned
# like the shared one, holding only the seed marker).
TLS_SCENARIO=
if command -v openssl >/dev/null; then
  TLS_DIR=$(mktemp -d)
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj /CN=tokend-bench-ca -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\n' >"$TLS_DIR/san.ext"
  openssl x509 -req -days 1 -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -extfile "$TLS_DIR/san.ext" -out "$TLS_DIR/server.pem" 2>/dev/null
  redis-server --port 0 --tls-port "$REDIS_TLS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --tls-cert-file "$TLS_DIR/server.pem" --tls-key-file "$TLS_DIR/server.key" \
    --tls-ca-cert-file "$TLS_DIR/ca.pem" --tls-auth-clients no >"$RAW/redis-tls.log" 2>&1 &
  PIDS+=("$!")
  for _ in $(seq 100); do
    redis-cli -p "$REDIS_TLS_PORT" --tls --cacert "$TLS_DIR/ca.pem" PING >/dev/null 2>&1 && break
    sleep 0.1
  done
  TOKEND_SERVER_CORES=1 TOKEND_SERVER_LISTEN="127.0.0.1:$((PORT + 3))" \
    TOKEND_REDIS_URL="rediss://127.0.0.1:$REDIS_TLS_PORT/0" TOKEND_REDIS_TLS_CA_FILE="$TLS_DIR/ca.pem" \
    taskset -c "$SERVER_CPU" "$BIN" serve 2>>"$RAW/tokend.log" &
  PIDS+=("$!")
  for _ in $(seq 100); do curl -sf "$TLS_CHECK_URL/readyz" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -sf "$TLS_CHECK_URL/readyz" >/dev/null ||
    die "the TLS tokend is not ready; see $RAW/tokend.log and $RAW/redis-tls.log"
  TLS_SCENARIO="validate_redis_tls|$TLS_CHECK_URL|validate.lua|"
else
  say "openssl not found: validate_redis_tls skipped"
fi
# limits.blocking_threads default: the CPUs the process may use (taskset's).
BLOCKING_THREADS=$(taskset -c "$SERVER_CPU" nproc)
BASELINE_WORKERS=1 taskset -c "$SERVER_CPU" "$BASELINE_BIN" "127.0.0.1:$BASELINE_PORT" 2>"$RAW/baseline.log" &
BASELINE_PID=$!
PIDS+=("$BASELINE_PID")
for _ in $(seq 100); do curl -sf "$BASE_URL/" >/dev/null 2>&1 && break; sleep 0.1; done

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
# name | url | script | script args
SCENARIOS=(
  "baseline|$BASE_URL|healthz.lua|"
  "baseline_p16|$BASE_URL|healthz.lua|16"
  "healthz|$URL|healthz.lua|"
  "validate|$URL|validate.lua|"
  "validate_p16|$URL|validate.lua|16"
  "validate_redis|$REDIS_CHECK_URL|validate.lua|"
  ${TLS_SCENARIO:+"$TLS_SCENARIO"}
  "introspect|$URL|introspect.lua|"
  "introspect_p16|$URL|introspect.lua|16"
  "validate_401|$URL|validate_401.lua|"
  "validate_malformed|$URL|validate_401.lua|malformed"
  "client_credentials|$URL|client_credentials.lua|"
  # authorize: single sign-on, a session cookie and no password. Before
  # authorization_code, an unmeasured run of authorize.lua (mint_codes)
  # makes the codes it redeems.
  "authorize|$URL|authorize.lua|"
  "authorization_code|$URL|authorization_code.lua|"
  "refresh|$URL|refresh.lua|"
  "login|$URL|login.lua|"
  "mixed|$URL|mixed.lua|"
)
export TOKEND_BENCH_THREADS=1
: >"$RAW/index.tsv"
# ONLY=callgrind: no full-speed runs (nor the profile of one) before the counts.
[ "$ONLY" = callgrind ] && RUNS=0
# Codes for authorization_code, made by the measured tokend just before it
# redeems them: authorize.lua for MINT_FACTOR × DURATION (each /authorize of
# a signed-in browser looks its user up in PostgreSQL, so codes are made
# several times slower than they are redeemed). It writes codes.txt.
mint_codes() {
  local out="$RAW/mint.$1.txt"
  taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$((DURATION_S * MINT_FACTOR))s" -s bench/authorize.lua "$URL" \
    >"$out" 2>"$out.err" || say "wrk failed minting codes (see $out.err)"
  say "run $1/$RUNS: $(wc -l <"$RES/codes.txt") codes made for authorization_code"
}
for run in $(seq "$RUNS"); do
  for s in "${SCENARIOS[@]}"; do
    IFS='|' read -r name url script args <<<"$s"
    [ "$name" = authorization_code ] && mint_codes "$run"
    out="$RAW/full.$name.$run.txt"
    # shellcheck disable=SC2086
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency -s "bench/$script" "$url" ${args:+-- $args} >"$out" 2>"$out.err" ||
      say "wrk failed for $name (see $out and $out.err)"
    printf 'full\t%s\t%s\t%s\n' "$name" "$run" "$out" >>"$RAW/index.tsv"
    say "run $run/$RUNS $name: $(awk '/Requests\/sec/ {print $2}' "$out") req/s$(grep -o 'Non-2xx or 3xx responses: [0-9]*' "$out" | sed 's/^/, /')"
    case "$name" in login | mixed) wait_idle ;; esac
  done
done

# Profiles at full speed: perf with the cpu-clock event (works on VMs where
# hardware counters don't), the server's process only, call graphs off, for
# validate (the top symbols too), and pipelined for validate, introspect and
# the ceiling (where the server's time goes between its own code, the libc
# and the kernel, when 16 requests share each read and write). The
# reports' top entries and the split by DSO go into the summary. Skipped,
# with a note, where perf is missing or not permitted.
rm -f "$RAW"/profile.*.txt
if [ "$ONLY" != callgrind ] && command -v perf >/dev/null; then
  # name | pid | url | script | script args
  PROFILES=(
    "validate|$TOKEND_PID|$URL|validate.lua|"
    "validate_p16|$TOKEND_PID|$URL|validate.lua|16"
    "introspect_p16|$TOKEND_PID|$URL|introspect.lua|16"
    "baseline_p16|$BASELINE_PID|$BASE_URL|healthz.lua|16"
  )
  for p in "${PROFILES[@]}"; do
    IFS='|' read -r name pid url script args <<<"$p"
    say "profile: $name at full speed under perf record -e cpu-clock"
    # shellcheck disable=SC2086
    taskset -c "$CLIENT_CPU" wrk -t1 -c"$CONNECTIONS" -d"$DURATION" -s "bench/$script" "$url" ${args:+-- $args} \
      >"$RAW/profile.$name.wrk.txt" 2>&1 &
    PROFILE_WRK=$!
    sleep 1
    if perf record -q -e cpu-clock -p "$pid" -o "$RAW/profile.perf.data" -- sleep $((DURATION_S > 3 ? DURATION_S - 2 : 1)) >"$RAW/perf.err" 2>&1; then
      perf report -i "$RAW/profile.perf.data" --stdio --no-children --sort dso,sym -q --percent-limit 0.7 2>/dev/null |
        sed '/^$/d' | head -20 >"$RAW/profile.$name.symbols.txt" || true
      perf report -i "$RAW/profile.perf.data" --stdio --no-children --sort dso -q 2>/dev/null |
        sed '/^$/d' | head -8 >"$RAW/profile.$name.dsos.txt" || true
    else
      say "perf record failed for $name (see $RAW/perf.err); no profile"
    fi
    wait "$PROFILE_WRK" || true
    rm -f "$RAW/profile.perf.data"
  done
fi

# Instructions per request: callgrind counts the instructions each request
# costs on the serving core's thread (bench/callgrind.py: one keep-alive
# connection, a warm-up, then CALLGRIND_REQUESTS requests one at a time).
# Unlike requests/s, the count repeats from run to run on a noisy machine.
# tokend runs as measured above (one core, the mirror on), under valgrind on
# its own port; then the baseline (the ceiling), the same way.
: >"$RAW/callgrind.jsonl"
cg_serve() { # port health-path [VAR=value...] command... (sets CG_PID)
  # The variables go to valgrind's environment (an `env` under valgrind
  # would exec the server outside it); TOKEND_BENCH_THREADS, the Lua
  # scripts' variable, is no configuration key, and tokend refuses unknown
  # TOKEND_* variables.
  local port=$1 path=$2 vars=()
  shift 2
  while [[ "$1" == *=* ]]; do vars+=("$1"); shift; done
  env -u TOKEND_BENCH_THREADS "${vars[@]}" taskset -c "$SERVER_CPU" valgrind --tool=callgrind \
    --separate-threads=yes --callgrind-out-file="$RAW/cg.%p" "$@" 2>>"$RAW/callgrind.log" &
  CG_PID=$!
  PIDS+=("$CG_PID")
  for _ in $(seq 600); do curl -sf "http://127.0.0.1:$port$path" >/dev/null 2>&1 && return; sleep 0.1; done
  die "$* did not start under valgrind; see $RAW/callgrind.log"
}
cg_stop() {
  kill -TERM "$CG_PID"; wait "$CG_PID" || true; forget_pid "$CG_PID"
  if [ -n "$CALLGRIND_KEEP" ]; then mkdir -p "$RAW/cg"; mv "$RAW"/cg.* "$RAW/cg/"; else rm -f "$RAW"/cg.*; fi
}
if [ "$CALLGRIND_REQUESTS" -eq 0 ]; then
  NOTES+=("CALLGRIND_REQUESTS=0: no instruction counts.")
elif ! command -v callgrind_control >/dev/null; then
  NOTES+=("valgrind is not installed (apt-get install valgrind): no instruction counts.")
else
  CG_PORT=$((PORT + 2)); CG_BASELINE_PORT=$((BASELINE_PORT + 1))
  say "instructions per request (callgrind, $CALLGRIND_REQUESTS requests a scenario)"
  # Under valgrind tokend runs some 50 times slower: its mirror can fall
  # more than the default 1 s behind the stream, and its Redis replies
  # outlast the default 100 ms timeout (the mirror then reconnects and
  # syncs), when checks go to Redis instead. Both are raised so that the
  # counts are of the mirror's path, the one measured at full speed;
  # bench/callgrind.py measures again any scenario where checks still went
  # to Redis, and reports them.
  cg_serve "$CG_PORT" /healthz TOKEND_SERVER_CORES=1 TOKEND_SERVER_LISTEN="127.0.0.1:$CG_PORT" \
    TOKEND_REDIS_REVOCATION_MIRROR=true TOKEND_REDIS_MIRROR_MAX_LAG=60s TOKEND_REDIS_TIMEOUT=5s \
    "$BIN" serve
  for _ in $(seq 300); do
    mirror_current "http://127.0.0.1:$CG_PORT" && break
    sleep 0.2
  done
  taskset -c "$CLIENT_CPU" python3 bench/callgrind.py "$CG_PID" "http://127.0.0.1:$CG_PORT" "$RES" "$RAW" \
    "$CALLGRIND_REQUESTS" healthz validate validate_401 validate_malformed validate_forged validate_expired introspect \
    client_credentials healthz_p16 validate_p16 introspect_p16 >>"$RAW/callgrind.jsonl" || say "callgrind.py failed for tokend (see above)"
  cg_stop
  cg_serve "$CG_BASELINE_PORT" / BASELINE_WORKERS=1 "$BASELINE_BIN" "127.0.0.1:$CG_BASELINE_PORT"
  taskset -c "$CLIENT_CPU" python3 bench/callgrind.py "$CG_PID" "http://127.0.0.1:$CG_BASELINE_PORT" "$RES" "$RAW" \
    "$CALLGRIND_REQUESTS" baseline baseline_p16 >>"$RAW/callgrind.jsonl" || say "callgrind.py failed for the baseline (see above)"
  cg_stop
  say "instructions per request: $(python3 bench/prepare.py brief callgrind "$RAW/callgrind.jsonl")"
fi
if [ "$ONLY" = callgrind ]; then
  # The table alone, on stdout; summary.md and latest.json are left as the
  # last full run wrote them.
  python3 bench/prepare.py instructions "$RAW/callgrind.jsonl"
  say "done in $((SECONDS - START))s (ONLY=callgrind: $RAW/callgrind.jsonl)"
  exit 0
fi

# Constant rate. wrk2 -U prints its HdrHistogram percentiles corrected for
# coordinated omission, then uncorrected; the scripts' done() print status
# counts on stderr.
rate_wrk2() { # out scenario rate connections
  taskset -c "$CLIENT_CPU" wrk2 -t1 -c"$4" -d"$DURATION" -R"$3" -U -s "bench/$2.lua" "$URL" >"$1" 2>"$1.err" ||
    say "wrk2 failed for $2 @ $3/s (see $1 and $1.err)"
}
rate_oha() { # out rate
  taskset -c "$CLIENT_CPU" oha --no-tui --output-format json -z "$DURATION" -w -c "$CONNECTIONS" -q "$2" --latency-correction \
    -H "Authorization: Bearer $TOKEN" "$URL/validate" >"$1" 2>"$1.err" || say "oha failed @ $2/s (see $1.err)"
}
rate_said() { # out
  python3 bench/prepare.py brief "$RATE_TOOL" "$1"
}
TOKEN=$(head -n1 "$RES/tokens.txt")
if [ -z "$RATES" ]; then
  NOTES+=("RATES is empty: no constant-rate runs.")
elif [ "$RATE_TOOL" = wrk2 ]; then
  for scenario in validate mixed; do
    for rate in $RATES; do
      out="$RAW/rate.$scenario.$rate.txt"
      wait_idle
      rate_wrk2 "$out" "$scenario" "$rate" "$CONNECTIONS"
      printf 'rate-wrk2\t%s\t%s\t%s\n' "$scenario" "$rate" "$out" >>"$RAW/index.tsv"
      say "wrk2 $scenario @ $rate/s: $(rate_said "$out")"
    done
  done
else
  for rate in $RATES; do
    out="$RAW/rate.validate.$rate.json"
    wait_idle
    rate_oha "$out" "$rate"
    printf 'rate-oha\t%s\t%s\t%s\n' validate "$rate" "$out" >>"$RAW/index.tsv"
    say "oha validate @ $rate/s: $(rate_said "$out")"
  done
  NOTES+=("wrk2 is not installed (or RATE_TOOL=oha): constant-rate runs use oha -q RATE --latency-correction, for validate only (oha sends one fixed request, so every request carries the same token, and it cannot run the mixed script).")
fi

# Login storm: validate at STORM_RATE alone, then again while wrk keeps
# STORM_CONNECTIONS logins in flight (more than the blocking pool's threads,
# so it never idles). Both load generators share CLIENT_CPU.
if [ -n "$STORM_RATE" ]; then
  ext=txt; [ "$RATE_TOOL" = oha ] && ext=json
  for phase in alone storm; do
    out="$RAW/storm.validate.$phase.$ext"
    login_pid=
    wait_idle
    if [ "$phase" = storm ]; then
      taskset -c "$CLIENT_CPU" wrk -t1 -c"$STORM_CONNECTIONS" -d"$((DURATION_S + 3))s" --latency -s bench/login.lua "$URL" \
        >"$RAW/storm.login.txt" 2>"$RAW/storm.login.txt.err" &
      login_pid=$!
      PIDS+=("$login_pid")
      sleep 1   # the pool is full before the measurement starts
    fi
    if [ "$RATE_TOOL" = wrk2 ]; then
      rate_wrk2 "$out" validate "$STORM_RATE" "$CONNECTIONS"
    else
      rate_oha "$out" "$STORM_RATE"
    fi
    if [ -n "$login_pid" ]; then
      wait "$login_pid" || say "wrk login.lua (storm) failed: see $RAW/storm.login.txt.err"
      forget_pid "$login_pid"
    fi
    printf 'storm-%s\t%s\t%s\t%s\n' "$RATE_TOOL" "$phase" "$STORM_RATE" "$out" >>"$RAW/index.tsv"
    say "storm, validate @ $STORM_RATE/s $phase: $(rate_said "$out")"
  done
  printf 'storm-login\tlogin\t%s\t%s\n' "$STORM_CONNECTIONS" "$RAW/storm.login.txt" >>"$RAW/index.tsv"
fi

# Memory after the runs, then with HOLD_CONNECTIONS idle keep-alive
# connections (each answered one validate first).
wait_idle
VMRSS=$(awk '/^VmRSS/ {print $2}' "/proc/$TOKEND_PID/status")
VMHWM=$(awk '/^VmHWM/ {print $2}' "/proc/$TOKEND_PID/status")
say "tokend VmRSS ${VMRSS} KiB (peak ${VMHWM} KiB)"
: >"$RAW/connections.json"
if [ "$HOLD_CONNECTIONS" -gt 0 ]; then
  taskset -c "$CLIENT_CPU" python3 bench/hold_connections.py "$URL" "$RES/tokens.txt" "$HOLD_CONNECTIONS" "$TOKEND_PID" 3 \
    >"$RAW/connections.json" 2>"$RAW/connections.err" || say "hold_connections.py failed: see $RAW/connections.err"
  say "with $HOLD_CONNECTIONS connections: $(python3 bench/prepare.py brief hold "$RAW/connections.json")"
fi

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
NOTES+=("Load average (1, 5, 15 min) before the measurements: $LOAD_BEFORE; after: $LOAD_AFTER. With nproc 2 and both CPUs in use by the benchmark, a load well above 2 means other work shared the CPUs and the figures are low and noisy.")
NOTES+=("All 1,000 users share one password (hashed once, its PHC string copied), so user creation is fast; every login still runs a full argon2id verify.")
if [ "$MAX_CONNS" -ne 10000 ]; then
  NOTES+=("Access tokens live 2h (TOKENS_ACCESS_TTL) and codes 10m (OAUTH_CODE_TTL) in this run so none expires mid-run, and server.max_connections_per_core is $MAX_CONNS (default 10000) so that the $HOLD_CONNECTIONS held connections fit beside the others; everything else is tokend's default configuration.")
else
  NOTES+=("Access tokens live 2h (TOKENS_ACCESS_TTL) and codes 10m (OAUTH_CODE_TTL) in this run so none expires mid-run; everything else is tokend's default configuration.")
fi
ARGON2_RATE=$(python3 -c 'import json,sys; print(round(json.loads(sys.argv[1])["hashes_per_second"]))' "$ARGON2")
NOTES+=("mixed at full speed is bound by its 1% of logins: one CPU verifies ~$ARGON2_RATE argon2id hashes/s, so the mix cannot go much above 100 × that, and connections waiting on a login stall.")
[ -s "$RAW/profile.validate.symbols.txt" ] || NOTES+=("No profile in this run: perf is missing or not permitted (apt-get install linux-perf; kernel.perf_event_paranoid).")

export ARGON2 VMRSS VMHWM DURATION RUNS CONNECTIONS SERVER_CPU CLIENT_CPU BLOCKING_THREADS RATE_TOOL
export STORM_RATE STORM_CONNECTIONS HOLD_CONNECTIONS MAX_CONNS
export CMD="DURATION=$DURATION RUNS=$RUNS bench/run.sh"
printf '%s\n' "${NOTES[@]}" >"$RAW/notes.txt"
python3 - "$RAW/meta.json" <<'PY'
import json, os, platform, subprocess, sys, datetime
e = os.environ
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
notes = [l.rstrip("\n") for l in open(os.path.join(os.path.dirname(sys.argv[1]), "notes.txt")) if l.strip()]
meta = {
    "generated_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    "command": e["CMD"],
    "machine": {"nproc": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release()},
    "settings": {
        "duration": e["DURATION"], "runs": int(e["RUNS"]), "connections": int(e["CONNECTIONS"]),
        "server_cpu": e["SERVER_CPU"], "client_cpu": e["CLIENT_CPU"], "tokend_worker_cores": 1,
        "blocking_threads": int(e["BLOCKING_THREADS"]), "login_pool_usable_cores": 1,
        "rate_tool": e["RATE_TOOL"], "wrk": "wrk -t1 --latency",
        "storm_rate": int(e["STORM_RATE"]) if e["STORM_RATE"] else None,
        "storm_connections": int(e["STORM_CONNECTIONS"]),
        "hold_connections": int(e["HOLD_CONNECTIONS"]),
        "max_connections_per_core": int(e["MAX_CONNS"]),
    },
    "argon2": json.loads(e["ARGON2"]),
    "memory": {"vmrss_kib": int(e["VMRSS"]), "vmhwm_kib": int(e["VMHWM"])},
    "notes": notes,
}
json.dump(meta, open(sys.argv[1], "w"), indent=2)
PY
python3 bench/prepare.py report "$RES"
bench/chart/target/release/tokend-bench-chart "$RES/latest.json" "$RES/chart.png" ||
  say "chart not drawn (see the error above)"
say "done in $((SECONDS - START))s: $RES/latest.json, $RES/summary.md"
