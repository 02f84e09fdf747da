#!/usr/bin/env bash
# Makes sure the services tokend needs for development and tests are up:
#
#   PostgreSQL on 127.0.0.1:5432, with a role `tokend` (password `tokend`,
#              LOGIN, CREATEDB — the tests create and drop their own
#              databases) and a database `tokend` owned by it;
#   Redis      on 127.0.0.1:6379.
#
# Idempotent: it installs (apt-get), creates or starts only what is missing,
# and on a machine where everything is in place it changes nothing and needs
# neither root nor sudo. Where it must act it runs as root, or through sudo
# when not root. Works with or without systemd (containers, WSL, CI).
#
# Usage: scripts/services.sh [--for-tests]
#   --for-tests  also install the programs the tests start themselves, even
#                where a Redis already answers on 6379: redis-server, and
#                Sentinel from Debian's redis-sentinel package, for the
#                failover tests; nginx (Debian's nginx-light) for the test of
#                the README's auth_request snippet; chromium and
#                chromium-driver (chromedriver) for the test that signs in
#                through a real headless browser. The sentinel and nginx
#                services Debian starts on install are stopped again and
#                kept from starting at boot (the tests run their own).
#
# Environment:
#   TOKEND_SERVICES_WAIT   seconds to wait for the services (default 30)
set -euo pipefail
cd "$(dirname "$0")/.."
TOKEND_SCRIPT=services.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

PG_HOST=127.0.0.1
PG_PORT=5432
REDIS_HOST=127.0.0.1
REDIS_PORT=6379
DB_ROLE=tokend
DB_PASSWORD=tokend
DB_NAME=tokend
WAIT_SECONDS=${TOKEND_SERVICES_WAIT:-30}
FOR_TESTS=0
case ${1:-} in
"") ;;
--for-tests) FOR_TESTS=1 ;;
-h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
*) die "unknown argument '$1' (usage: scripts/services.sh [--for-tests])" ;;
esac

# ---------------------------------------------------------------- probes

pg_up() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1
    else
        port_open "$PG_HOST" "$PG_PORT"
    fi
}

redis_up() {
    if command -v redis-cli >/dev/null 2>&1; then
        [ "$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
    else
        port_open "$REDIS_HOST" "$REDIS_PORT"
    fi
}

# psql over TCP as the tokend role, the way tokend and the tests connect.
# Extra arguments are appended (e.g. -Atc 'select 1').
tokend_psql() {
    env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGSERVICE \
        PGPASSWORD="$DB_PASSWORD" PGCONNECT_TIMEOUT=3 \
        psql -X -q -h "$PG_HOST" -p "$PG_PORT" -U "$DB_ROLE" -d "$DB_NAME" "$@"
}

# ---------------------------------------------------------------- install

apt_updated=0
apt_update() {
    command -v apt-get >/dev/null 2>&1 ||
        die "apt-get not found: this script installs packages on Debian/Ubuntu only. Install $* yourself (PostgreSQL >= 13 on $PG_HOST:$PG_PORT, Redis on $REDIS_HOST:$REDIS_PORT, and nginx, chromium and chromedriver for the tests) and run it again."
    if [ "$apt_updated" -eq 0 ]; then
        say "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        apt_updated=1
    fi
}

apt_install() {
    apt_update "$@"
    say "installing: $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

install_missing() {
    local pkgs=()
    # Servers only when they are not already answering (e.g. one running in
    # Docker, or installed another way): no point installing a second one.
    if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! port_open "$PG_HOST" "$PG_PORT"; then
        pkgs+=(postgresql)
    fi
    if ! command -v psql >/dev/null 2>&1 || ! command -v pg_isready >/dev/null 2>&1; then
        pkgs+=(postgresql-client)
    fi
    if ! command -v redis-server >/dev/null 2>&1 && ! port_open "$REDIS_HOST" "$REDIS_PORT"; then
        pkgs+=(redis-server)
    fi
    if ! command -v redis-cli >/dev/null 2>&1; then
        pkgs+=(redis-tools)
    fi
    local sentinel=0
    if [ "$FOR_TESTS" = 1 ]; then
        # The tests start their own redis-server processes (replicas, a
        # TLS-only one) and sentinels.
        if ! command -v redis-server >/dev/null 2>&1 && [[ " ${pkgs[*]} " != *" redis-server "* ]]; then
            pkgs+=(redis-server)
        fi
        if ! command -v redis-sentinel >/dev/null 2>&1; then
            pkgs+=(redis-sentinel)
            sentinel=1
        fi
    fi
    if [ "${#pkgs[@]}" -gt 0 ]; then
        apt_install "${pkgs[@]}"
    fi
    if [ "$sentinel" = 1 ]; then
        stop_packaged_sentinel
    fi
    # tests/it/nginx.rs runs the README's auth_request snippet with a real
    # nginx, which it starts itself. Debian keeps nginx in /usr/sbin, which
    # is not on every user's PATH.
    if [ "$FOR_TESTS" = 1 ] && ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
        install_nginx
    fi
    # tests/it/browser.rs signs a user in through a real headless Chromium,
    # driven through chromedriver, which it starts itself (neither package
    # starts a service). chromium-driver depends on the chromium of its own
    # version, so both come from the same apt-get install.
    if [ "$FOR_TESTS" = 1 ] && {
        { ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; } ||
            { ! command -v chromedriver >/dev/null 2>&1 && [ ! -x /usr/bin/chromedriver ]; }
    }; then
        apt_install chromium chromium-driver ||
            die "could not install chromium and chromium-driver (apt-get install chromium chromium-driver); the browser test needs them"
    fi
}

# Debian's redis-sentinel starts a sentinel on 26379 when installed (under
# systemd, or its init script without). The tests run their own: stop it,
# and keep it from starting at boot.
stop_packaged_sentinel() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now redis-sentinel >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/redis-sentinel ]; then
        as_root /etc/init.d/redis-sentinel stop >/dev/null 2>&1 || true
        # Without systemd the package's sysvinit links would start it at
        # the next boot.
        as_root update-rc.d redis-sentinel disable >/dev/null 2>&1 || true
    fi
}

# Installs nginx without letting the package start it. Debian's nginx
# packages start nginx on port 80 as they install, and their installation
# fails when something else already holds port 80; the test needs neither.
# A policy-rc.d that refuses every start (what Debian's Docker images ship)
# covers the install, under systemd (deb-systemd-invoke reads it too) or
# not; one that is already there is left alone. nginx-light is Debian 12's
# smallest nginx with auth_request; later releases have only `nginx`.
install_nginx() {
    local policy=/usr/sbin/policy-rc.d ours=0 ok=1 pkg=nginx
    apt_update nginx
    if apt-cache show nginx-light >/dev/null 2>&1; then
        pkg=nginx-light
    fi
    if [ ! -e "$policy" ]; then
        as_root sh -c "printf '#!/bin/sh\n# scripts/services.sh: no service starts while nginx is installed\nexit 101\n' > $policy && chmod 755 $policy"
        ours=1
    fi
    apt_install "$pkg" || ok=0
    if [ "$ours" = 1 ]; then
        as_root rm -f "$policy"
    fi
    [ "$ok" = 1 ] || die "could not install $pkg (apt-get install $pkg); the nginx test needs it"
    stop_packaged_nginx
}

# Makes sure the packaged nginx service neither runs nor starts at boot (a
# policy-rc.d of the machine's own may have let it start): the test runs its
# own nginx on a free port, and port 80 is none of the tests' business.
stop_packaged_nginx() {
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        as_root systemctl disable --now nginx >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/nginx ]; then
        as_root /etc/init.d/nginx stop >/dev/null 2>&1 || true
        as_root update-rc.d nginx disable >/dev/null 2>&1 || true
    fi
}

# ---------------------------------------------------------------- PostgreSQL

# Starts the Debian cluster that serves port 5432 (creating one when there is
# none). pg_ctlcluster --skip-systemctl-redirect starts it directly, so this
# works the same with systemd, without it, and in containers.
start_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 ||
        die "PostgreSQL is not answering on $PG_HOST:$PG_PORT and pg_ctlcluster (Debian's postgresql-common) is missing; start PostgreSQL yourself"
    local line ver name port status
    # Prefer the cluster configured for our port, else the newest "main".
    line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print; exit }')
    if [ -z "$line" ]; then
        line=$(pg_lsclusters -h 2>/dev/null | awk '$2 == "main"' | sort -V -k1,1 | tail -n1)
    fi
    if [ -z "$line" ]; then
        ver=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/postgres' 2>/dev/null |
            awk -F/ '{ print $5 }' | sort -V | tail -n1)
        [ -n "$ver" ] || die "no PostgreSQL server found under /usr/lib/postgresql; install the postgresql package"
        # Debian's default listen_addresses is 'localhost': loopback only.
        say "creating PostgreSQL $ver cluster 'main' on port $PG_PORT"
        as_root pg_createcluster -p "$PG_PORT" "$ver" main >/dev/null
        line=$(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print; exit }')
        [ -n "$line" ] || die "pg_createcluster did not create a cluster on port $PG_PORT"
    fi
    read -r ver name port status _ <<<"$line"
    if [ "$port" != "$PG_PORT" ]; then
        die "PostgreSQL cluster $ver/$name is configured for port $port, not $PG_PORT; set 'port = $PG_PORT' in /etc/postgresql/$ver/$name/postgresql.conf (or stop whatever uses $PG_PORT) and run again"
    fi
    case $status in
    online*)
        die "PostgreSQL cluster $ver/$name is running but does not answer on $PG_HOST:$PG_PORT; check listen_addresses in /etc/postgresql/$ver/$name/postgresql.conf (it must include localhost)"
        ;;
    esac
    say "starting PostgreSQL $ver/$name on port $PG_PORT"
    # The socket directory lives on a tmpfs on many systems; make sure it exists.
    if [ ! -d /var/run/postgresql ]; then
        as_root install -d -o postgres -g postgres -m 2775 /var/run/postgresql
    fi
    as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
        die "could not start PostgreSQL $ver/$name; see /var/log/postgresql/postgresql-$ver-$name.log"
}

# Runs psql as a superuser: as the postgres OS user over the local socket
# (Debian's default "peer" authentication), or, when that is not possible,
# over TCP as the postgres role. Chosen once by pick_pg_admin.
PG_ADMIN=
pg_admin() {
    case $PG_ADMIN in
    socket)
        as_user postgres env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGSERVICE -u PGPASSWORD \
            psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"
        ;;
    tcp)
        env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGSERVICE PGCONNECT_TIMEOUT=3 \
            psql -X -q -v ON_ERROR_STOP=1 -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres "$@"
        ;;
    esac
}

pick_pg_admin() {
    PG_ADMIN=socket
    if id postgres >/dev/null 2>&1 && [ "$(pg_admin -Atc 'select 1' 2>/dev/null)" = 1 ]; then
        return
    fi
    PG_ADMIN=tcp
    if [ "$(pg_admin -Atc 'select 1' 2>/dev/null)" = 1 ]; then
        return
    fi
    die "cannot reach PostgreSQL as a superuser (neither as the postgres OS user over the local socket, nor as role postgres over TCP). Run this script as root or with sudo available, or create them yourself: CREATE ROLE $DB_ROLE LOGIN CREATEDB PASSWORD '$DB_PASSWORD'; CREATE DATABASE $DB_NAME OWNER $DB_ROLE;"
}

# The role and database tokend and the tests use. Fast path: when tokend can
# already log in over TCP, has CREATEDB and owns its database, nothing is
# touched and no superuser access is needed.
ensure_role_and_database() {
    local state
    state=$(tokend_psql -Atc "SELECT r.rolcreatedb AND d.datdba = r.oid FROM pg_roles r, pg_database d WHERE r.rolname = current_user AND d.datname = current_database()" 2>/dev/null || true)
    if [ "$state" = t ]; then
        say "PostgreSQL: role '$DB_ROLE' and database '$DB_NAME' are in place"
        return
    fi

    pick_pg_admin
    local exists attrs owner alter=()
    exists=$(pg_admin -Atc "SELECT 1 FROM pg_roles WHERE rolname = '$DB_ROLE'")
    if [ "$exists" != 1 ]; then
        pg_admin -c "CREATE ROLE $DB_ROLE LOGIN CREATEDB PASSWORD '$DB_PASSWORD'"
        say "PostgreSQL: created role '$DB_ROLE' (LOGIN, CREATEDB, password '$DB_PASSWORD')"
    else
        attrs=$(pg_admin -Atc "SELECT concat(rolcanlogin::int, rolcreatedb::int, (rolpassword IS NOT NULL)::int) FROM pg_authid WHERE rolname = '$DB_ROLE'")
        [ "${attrs:0:1}" = 1 ] || alter+=(LOGIN)
        [ "${attrs:1:1}" = 1 ] || alter+=(CREATEDB)
        # An existing password is left alone; only a missing one is set.
        [ "${attrs:2:1}" = 1 ] || alter+=("PASSWORD '$DB_PASSWORD'")
        if [ "${#alter[@]}" -gt 0 ]; then
            pg_admin -c "ALTER ROLE $DB_ROLE ${alter[*]}"
            say "PostgreSQL: role '$DB_ROLE' given ${alter[*]}"
        fi
    fi
    owner=$(pg_admin -Atc "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = '$DB_NAME'")
    if [ -z "$owner" ]; then
        pg_admin -c "CREATE DATABASE $DB_NAME OWNER $DB_ROLE"
        say "PostgreSQL: created database '$DB_NAME' owned by '$DB_ROLE'"
    elif [ "$owner" != "$DB_ROLE" ]; then
        warn "database '$DB_NAME' is owned by '$owner', not '$DB_ROLE'; 'tokend migrate' may lack rights. Fix: ALTER DATABASE $DB_NAME OWNER TO $DB_ROLE;"
    fi
}

# ---------------------------------------------------------------- Redis

start_redis() {
    command -v redis-server >/dev/null 2>&1 ||
        die "Redis is not answering on $REDIS_HOST:$REDIS_PORT and redis-server is not installed"
    if port_open "$REDIS_HOST" "$REDIS_PORT"; then
        die "something listens on $REDIS_HOST:$REDIS_PORT but does not answer PING with PONG (a Redis with a password?); the tests need a Redis without AUTH there, or set TOKEND_TEST_REDIS_URL"
    fi
    # `-::1` (bind IPv6 loopback when available) needs Redis 7; older ones
    # get IPv4 loopback only.
    local ver bind=(127.0.0.1)
    ver=$(redis-server --version 2>/dev/null | sed -n 's/.* v=\([0-9.]*\).*/\1/p')
    if [ -n "$ver" ] && version_ge "$ver" 7; then
        bind+=(-::1)
    fi
    say "starting Redis ${ver:-?} on $REDIS_HOST:$REDIS_PORT (development settings: no persistence)"
    as_root mkdir -p /var/lib/redis /var/log/redis
    # Development only: no persistence at all, and it runs as whoever runs
    # this script (root is fine here: loopback only). Production must run
    # Redis under its own user with AOF (appendonly yes, appendfsync
    # everysec); see "Redis in production" in README.md.
    as_root redis-server --daemonize yes --bind "${bind[@]}" --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis \
        --logfile /var/log/redis/tokend-dev.log ||
        die "could not start redis-server; see /var/log/redis/tokend-dev.log"
}

# ---------------------------------------------------------------- main

# Waits until `check` succeeds or the shared deadline passes.
deadline=$((SECONDS + WAIT_SECONDS))
wait_for() {
    local what=$1 check=$2
    until "$check"; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            return 1
        fi
        sleep 1
    done
    say "$what: ok"
}

install_missing

if pg_up; then
    say "PostgreSQL: already running on $PG_HOST:$PG_PORT"
else
    start_postgres
fi
if redis_up; then
    say "Redis: already running on $REDIS_HOST:$REDIS_PORT"
else
    start_redis
fi

deadline=$((SECONDS + WAIT_SECONDS))
wait_for "PostgreSQL accepting connections on $PG_HOST:$PG_PORT" pg_up ||
    die "PostgreSQL does not answer on $PG_HOST:$PG_PORT after ${WAIT_SECONDS}s (see /var/log/postgresql/)"

ensure_role_and_database

# Wait for a real TCP login as tokend. A refused password or a missing role
# will not fix itself, so those stop the wait at once.
login_error=
while :; do
    if login_error=$(tokend_psql -Atc 'select 1' 2>&1 >/dev/null); then
        login_error=
        break
    fi
    login_error=$(printf '%s\n' "$login_error" | head -n1)
    case $login_error in
    *"password authentication failed"* | *"no pg_hba.conf entry"* | *"does not exist"*) break ;;
    esac
    if [ "$SECONDS" -ge "$deadline" ]; then
        login_error="no answer after ${WAIT_SECONDS}s (${login_error})"
        break
    fi
    sleep 1
done
if [ -n "$login_error" ]; then
    die "cannot log in as '$DB_ROLE' to database '$DB_NAME' on $PG_HOST:$PG_PORT: $login_error
  If the role exists with another password: ALTER ROLE $DB_ROLE PASSWORD '$DB_PASSWORD';
  If pg_hba.conf rejects it: allow 'host all all 127.0.0.1/32 scram-sha-256' (Debian's default)."
fi
say "PostgreSQL login as '$DB_ROLE' over TCP: ok"

wait_for "Redis answering PING on $REDIS_HOST:$REDIS_PORT" redis_up ||
    die "Redis does not answer PING on $REDIS_HOST:$REDIS_PORT after ${WAIT_SECONDS}s (see /var/log/redis/)"

say "ready: postgres://$DB_ROLE:$DB_PASSWORD@$PG_HOST:$PG_PORT/$DB_NAME and redis://$REDIS_HOST:$REDIS_PORT/0"
