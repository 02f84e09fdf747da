#!/usr/bin/env bash
# Sets up a development tokend and runs it, in one command:
#
#   1. checks for the Rust toolchain (cargo) and a C compiler;
#   2. scripts/services.sh: PostgreSQL and Redis on loopback, role/database tokend;
#   3. cargo build --release;
#   4. .dev/kek (key-encryption key) and .dev/tokend.toml, when absent;
#   5. tokend migrate;
#   6. first run only: user `demo` (password in .dev/demo-password) and the
#      confidential client `demo-cli` (credentials in .dev/demo-client.json);
#   7. prints the URL and curl lines to try, then runs `tokend serve` in the
#      foreground (Ctrl-C stops it).
#
# Usage: scripts/run.sh [--reset]
#   --reset   start over: drop and recreate the development database `tokend`,
#             delete the Redis keys under the dev prefix and remove .dev/,
#             then set everything up again.
#
# Environment: TOKEND_SERVER_LISTEN (written into a new .dev/tokend.toml, and
# as every TOKEND_* variable, it overrides the file at run time).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
TOKEND_SCRIPT=run.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DEV="$ROOT/.dev"
CFG="$DEV/tokend.toml"
KEK="$DEV/kek"
DEMO_USER=demo
DEMO_CLIENT=demo-cli
DEMO_PASSWORD_FILE="$DEV/demo-password"
DEMO_CLIENT_FILE="$DEV/demo-client.json"
# The development database; scripts/services.sh creates it.
DEV_DB=tokend
DEV_PG=(-h 127.0.0.1 -p 5432 -U tokend)
DEV_PG_PASSWORD=tokend

reset=0
case ${1:-} in
"") ;;
--reset) reset=1 ;;
-h | --help)
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
    exit 0
    ;;
*) die "unknown argument '$1' (usage: scripts/run.sh [--reset])" ;;
esac

dev_psql() {
    env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGSERVICE \
        PGPASSWORD="$DEV_PG_PASSWORD" PGCONNECT_TIMEOUT=3 PGOPTIONS=--client-min-messages=warning psql -X -q -v ON_ERROR_STOP=1 "${DEV_PG[@]}" "$@"
}

# Prints the string value of `key` in the JSON object found in `file`:
# python3 when it is there and works, sed otherwise.
json_field() {
    local file=$1 key=$2 value=
    if command -v python3 >/dev/null 2>&1; then
        value=$(python3 - "$file" "$key" 2>/dev/null <<'PY' || true
import json, sys
text = open(sys.argv[1], encoding="utf-8").read()
start, end = text.find("{"), text.rfind("}")
value = json.loads(text[start:end + 1]).get(sys.argv[2]) if start >= 0 else None
print(value if isinstance(value, str) else "")
PY
        )
    fi
    if [ -z "$value" ]; then
        value=$(tr -d '\n' <"$file" | sed -n "s/.*\"$key\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p")
    fi
    printf '%s' "$value"
}

# A TOML basic string holding $1.
toml_string() {
    printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
}

# A word quoted for pasting into a POSIX shell (single quotes).
shell_quote() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# ------------------------------------------------------------ 1-3: tools, services, build

require_rust
scripts/services.sh

if [ "$reset" -eq 1 ]; then
    prefix=tokend:dev:
    if [ -f "$CFG" ]; then
        p=$(sed -n 's/^prefix *= *"\(.*\)"[[:space:]]*$/\1/p' "$CFG" | head -n1)
        prefix=${p:-$prefix}
    fi
    say "reset: recreating database '$DEV_DB', deleting Redis keys '$prefix*', removing .dev/"
    dev_psql -d postgres -c "DROP DATABASE IF EXISTS $DEV_DB WITH (FORCE)" -c "CREATE DATABASE $DEV_DB"
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern "$prefix*" | xargs -r redis-cli -h 127.0.0.1 -p 6379 del >/dev/null
    rm -rf "$DEV"
fi

say "cargo build --release (the first build takes several minutes)"
cargo build --release
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/tokend"
[ -x "$BIN" ] || die "cargo build succeeded but $BIN is missing"
tokend() { "$BIN" --config "$CFG" "$@"; }

# ------------------------------------------------------------ 4: .dev/

mkdir -p "$DEV"
chmod 700 "$DEV"
umask 077

if [ ! -s "$KEK" ]; then
    # A new key-encryption key cannot open signing keys sealed under an old
    # one: refuse rather than produce a server that cannot sign.
    sealed=$(dev_psql -d "$DEV_DB" -Atc 'SELECT count(*) FROM signing_keys' 2>/dev/null || true)
    if [ -n "$sealed" ] && [ "$sealed" != 0 ]; then
        die "the database '$DEV_DB' holds signing keys sealed under a key-encryption key that is no longer in .dev/kek. Start over with: scripts/run.sh --reset"
    fi
    head -c 32 /dev/urandom | base64 | tr -d '\n' >"$KEK.tmp"
    chmod 600 "$KEK.tmp"
    mv "$KEK.tmp" "$KEK"
    say "created .dev/kek (key-encryption key of the signing keys: keep it as long as the database)"
fi

if [ ! -f "$CFG" ]; then
    cat >"$CFG.tmp" <<EOF
# Development configuration, written by scripts/run.sh. Edit freely; delete
# it to have it written again. Every key can also be overridden with an
# environment variable TOKEND_<SECTION>_<KEY>, e.g. TOKEND_SERVER_LISTEN.
# All keys and their defaults: README.md, "Configuration".

[server]
listen = $(toml_string "${TOKEND_SERVER_LISTEN:-127.0.0.1:8080}")

[database]
url = "postgres://tokend:$DEV_PG_PASSWORD@127.0.0.1:5432/$DEV_DB"

[redis]
url = "redis://127.0.0.1:6379/0"
prefix = "tokend:dev:"

[keys]
kek_file = $(toml_string "$KEK")

[users]
self_registration = false
EOF
    mv "$CFG.tmp" "$CFG"
    say "created .dev/tokend.toml"
fi

# ------------------------------------------------------------ 5: migrate

say "tokend migrate"
tokend migrate

# ------------------------------------------------------------ 6: demo user and client

new_password=
if [ ! -s "$DEMO_PASSWORD_FILE" ]; then
    # 24 URL-safe characters (144 random bits).
    password=$(head -c 18 /dev/urandom | base64 | tr '+/' '-_')
    if printf '%s\n' "$password" | tokend user add "$DEMO_USER"; then
        printf '%s\n' "$password" >"$DEMO_PASSWORD_FILE"
        chmod 600 "$DEMO_PASSWORD_FILE"
        new_password=$password
        say "created user '$DEMO_USER'"
    else
        warn "could not create user '$DEMO_USER' (left over from an earlier setup? 'scripts/run.sh --reset' starts over)"
    fi
fi

if [ ! -s "$DEMO_CLIENT_FILE" ]; then
    if out=$(tokend client add "$DEMO_CLIENT" --grant password --grant refresh_token --json); then
        printf '%s\n' "$out" >"$DEMO_CLIENT_FILE.tmp"
        chmod 600 "$DEMO_CLIENT_FILE.tmp"
        mv "$DEMO_CLIENT_FILE.tmp" "$DEMO_CLIENT_FILE"
        say "created client '$DEMO_CLIENT' (credentials in .dev/demo-client.json)"
    else
        warn "could not create client '$DEMO_CLIENT' (left over from an earlier setup? 'scripts/run.sh --reset' starts over)"
    fi
fi

client_id=
client_secret=
if [ -s "$DEMO_CLIENT_FILE" ]; then
    client_id=$(json_field "$DEMO_CLIENT_FILE" client_id)
    client_secret=$(json_field "$DEMO_CLIENT_FILE" client_secret)
    if [ -z "$client_id" ] || [ -z "$client_secret" ]; then
        warn ".dev/demo-client.json holds no client_id/client_secret; delete it and run again"
    fi
fi

# ------------------------------------------------------------ 7: what to try, then serve

# The effective listen address (file plus TOKEND_* overrides), as tokend sees it.
listen=$(tokend config check 2>/dev/null | sed -n 's/^listen *= *"\(.*\)"[[:space:]]*$/\1/p' | head -n1 || true)
listen=${listen:-127.0.0.1:8080}
host=${listen%:*}
port=${listen##*:}
case $host in
0.0.0.0) host=127.0.0.1 ;;
"[::]") host="[::1]" ;;
esac
url="http://$host:$port"

probe_host=${host#[}
probe_host=${probe_host%]}
if port_open "$probe_host" "$port"; then
    die "something already listens on $host:$port (another tokend?). Stop it, or pick another address: TOKEND_SERVER_LISTEN=127.0.0.1:8081 scripts/run.sh"
fi

{
    echo
    echo "tokend: $url   (configuration: .dev/tokend.toml; Ctrl-C stops it)"
    if [ -n "$new_password" ]; then
        echo
        echo "  user '$DEMO_USER' password: $new_password   (shown once; kept in .dev/demo-password)"
    fi
    echo
    echo "Try, from another terminal:"
    echo
    echo "  curl -i $url/healthz"
    if [ -s "$DEMO_PASSWORD_FILE" ] && [ -n "$client_secret" ]; then
        login="curl -s -u $(shell_quote "$client_id:$client_secret") -d grant_type=password -d username=$DEMO_USER --data-urlencode \"password=\$(cat $(shell_quote "$DEMO_PASSWORD_FILE"))\" $url/oauth/token"
        echo
        echo "  # log in as '$DEMO_USER' with client '$client_id' (password grant):"
        echo "  $login"
        echo
        echo "  # validate the access token it returns:"
        # shellcheck disable=SC2016 # printed for the user's shell, not expanded here
        printf '  TOKEN=$(%s | sed -n %s)\n' "$login" "'s/.*\"access_token\" *: *\"\\([^\"]*\\)\".*/\\1/p'"
        echo "  curl -i -H \"Authorization: Bearer \$TOKEN\" $url/validate"
    fi
    echo
}

exec "$BIN" --config "$CFG" serve
