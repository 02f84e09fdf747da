#!/usr/bin/env bash
# A production-shaped tokend on one machine, to watch a Redis failover:
# a Redis primary and a replica, three sentinels (quorum 2), and several
# tokend nodes that find the primary through the sentinels. As root (where
# `ip netns` works), each Redis server and each sentinel is a host of its
# own: a network namespace with its own address on a bridge
# (10.231.<BASE mod 250>.0/24; the bridge, 10.231.x.1, is the machine's side,
# where the tokend nodes run, since they need the local PostgreSQL).
# Otherwise everything runs on loopback ports. Either way its state is under
# one directory; nothing is installed.
# Sentinels run as Debian's redis-sentinel (scripts/services.sh --for-tests
# installs it), or as `redis-server --sentinel` where only that is there.
#
# Usage: scripts/topology.sh up | down | status | kill-primary
#   up            start everything (an existing topology in the directory is
#                 stopped first), then print where each part listens
#   down          stop everything and remove the directory
#   status        which process is up, and which Redis is the primary
#   kill-primary  SIGKILL the current Redis primary (a failover follows:
#                 the sentinels promote the replica within about 2-3 s)
#
# `up` writes the sentinels' addresses (host:port,host:port,host:port) to
# $TOPOLOGY_DIR/sentinels.
#
# Environment:
#   TOPOLOGY_DIR        state, configuration and logs (default
#                       /tmp/tokend-topology-$USER)
#   TOPOLOGY_BASE_PORT  Redis primary on BASE, replica BASE+1, sentinels
#                       BASE+10..12, tokend nodes BASE+20.. (default 17000)
#   TOPOLOGY_NODES      tokend nodes (default 2; 0 starts Redis only)
#   TOPOLOGY_MASTER     the name the sentinels know the primary by (default
#                       tokend-primary)
#   TOPOLOGY_TOKEND_BIN the tokend binary (default target/release/tokend,
#                       built when missing)
#   TOKEND_DATABASE_URL the database the nodes share (default the one
#                       scripts/services.sh creates:
#                       postgres://tokend:tokend@127.0.0.1:5432/tokend);
#                       `tokend migrate` is run on it
#   TOKEND_KEYS_KEK     the nodes' key-encryption key (default: a new one,
#                       kept in the directory)
#   TOPOLOGY_NETNS      auto (default: namespaces as root, loopback
#                       otherwise), 1 (namespaces or fail), 0 (loopback)
#   TOPOLOGY_NODE<n>_ENV  VAR=value words for node n only (e.g.
#                       TOPOLOGY_NODE2_ENV=TOKEND_REDIS_REVOCATION_MIRROR=true)
#   any other TOKEND_*  passed to every node (e.g. TOKEND_REDIS_PREFIX;
#                       TOKEND_SERVER_PUBLIC_URL, the issuer of every node,
#                       defaults to node 1's URL)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd -P)
TOKEND_SCRIPT=topology.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

DIR=${TOPOLOGY_DIR:-/tmp/tokend-topology-$(id -un)}
BASE=${TOPOLOGY_BASE_PORT:-17000}
NODES=${TOPOLOGY_NODES:-2}
MASTER=${TOPOLOGY_MASTER:-tokend-primary}
PRIMARY_PORT=$BASE
REPLICA_PORT=$((BASE + 1))
SENTINEL_PORTS=($((BASE + 10)) $((BASE + 11)) $((BASE + 12)))
DATABASE_URL=${TOKEND_DATABASE_URL:-postgres://tokend:tokend@127.0.0.1:5432/tokend}
SUBNET=10.231.$((BASE % 250))
BRIDGE=tkbr$BASE
# Whether this topology's Redis hosts are network namespaces (decided by
# `up`, remembered in $DIR/netns for the other commands).
NETNS=0
[ -f "$DIR/netns" ] && NETNS=1

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"
}

command -v redis-server >/dev/null 2>&1 ||
    die "redis-server is missing: $(root_prefix)apt-get install -y redis-server redis-sentinel (scripts/services.sh --for-tests does it)"
command -v redis-cli >/dev/null 2>&1 ||
    die "redis-cli is missing: $(root_prefix)apt-get install -y redis-tools"

# The Redis hosts: name, port, last octet of its address in namespaces.
HOSTS=("p $PRIMARY_PORT 10" "r $REPLICA_PORT 11" "s0 ${SENTINEL_PORTS[0]} 20"
    "s1 ${SENTINEL_PORTS[1]} 21" "s2 ${SENTINEL_PORTS[2]} 22")

# The address of the Redis host listening on `port`.
host_of() {
    local h name port octet
    if [ "$NETNS" = 0 ]; then
        echo 127.0.0.1
        return
    fi
    for h in "${HOSTS[@]}"; do
        read -r name port octet <<<"$h"
        [ "$port" = "$1" ] && echo "$SUBNET.$octet" && return
    done
    die "no host listens on port $1"
}

# Runs a command on the Redis host of `port`: in its namespace, or here.
on_host() {
    local port=$1 h name p octet
    shift
    if [ "$NETNS" = 0 ]; then
        "$@"
        return
    fi
    for h in "${HOSTS[@]}"; do
        read -r name p octet <<<"$h"
        if [ "$p" = "$port" ]; then
            ip netns exec "tk$BASE-$name" "$@"
            return
        fi
    done
    die "no host listens on port $port"
}

netns_teardown() {
    local h name port octet
    for h in "${HOSTS[@]}"; do
        read -r name port octet <<<"$h"
        ip netns del "tk$BASE-$name" 2>/dev/null || true
    done
    ip link del "$BRIDGE" 2>/dev/null || true
}

# One namespace per Redis host, each with a veth on the bridge.
netns_setup() {
    local h name port octet ns veth
    netns_teardown
    ip link add "$BRIDGE" type bridge || return 1
    ip addr add "$SUBNET.1/24" dev "$BRIDGE" || return 1
    ip link set "$BRIDGE" up || return 1
    for h in "${HOSTS[@]}"; do
        read -r name port octet <<<"$h"
        ns="tk$BASE-$name"
        veth="tk$BASE$name"
        ip netns add "$ns" || return 1
        ip link add "$veth" type veth peer name eth0 netns "$ns" || return 1
        ip link set "$veth" master "$BRIDGE" up || return 1
        ip netns exec "$ns" ip addr add "$SUBNET.$octet/24" dev eth0 || return 1
        ip netns exec "$ns" ip link set eth0 up || return 1
        ip netns exec "$ns" ip link set lo up || return 1
    done
}

# Waits until host:port accepts connections, or dies naming `what` and its log.
wait_port() {
    local port=$1 what=$2 log=$3 i host
    host=$(host_of "$port")
    for i in $(seq 1 100); do
        port_open "$host" "$port" && return 0
        sleep 0.1
    done
    die "$what did not start on $host:$port; its log: $log"
}

# Sends one command to a Redis or sentinel port; prints the reply.
rcli() {
    local port=$1
    shift
    redis-cli -h "$(host_of "$port")" -p "$port" --no-auth-warning "$@"
}

# The port of the primary the first answering sentinel names.
current_primary_port() {
    local p reply
    for p in "${SENTINEL_PORTS[@]}"; do
        if reply=$(rcli "$p" SENTINEL get-master-addr-by-name "$MASTER" 2>/dev/null) && [ -n "$reply" ]; then
            printf '%s\n' "$reply" | sed -n 2p
            return 0
        fi
    done
    return 1
}

start_redis() {
    local name=$1 port=$2
    shift 2
    mkdir -p "$DIR/$name"
    # What the README's "Production topology" asks of the data nodes: an
    # append-only file and no eviction. No password, and protected mode off
    # so that the other namespaces may connect: this network is the
    # machine's own (production: requirepass and masterauth, see the
    # README). Not `min-replicas-to-write`: with
    # one replica, the promoted one would have none left and refuse every
    # write until the old primary is back (see the README).
    on_host "$port" redis-server --port "$port" --bind "$(host_of "$port")" --dir "$DIR/$name" \
        --daemonize yes --pidfile "$DIR/$name/pid" --logfile "$DIR/$name/log" \
        --save "" --appendonly yes --appendfsync everysec \
        --maxmemory-policy noeviction \
        --protected-mode no \
        "$@"
    wait_port "$port" "redis $name" "$DIR/$name/log"
}

start_sentinel() {
    local i=$1 port=$2 dir="$DIR/sentinel$1"
    mkdir -p "$dir"
    # Sentinel rewrites its configuration file: one per sentinel, writable.
    cat >"$dir/sentinel.conf" <<EOF
port $port
bind $(host_of "$port")
protected-mode no
dir $dir
daemonize yes
pidfile $dir/pid
logfile $dir/log
sentinel monitor $MASTER $(host_of "$PRIMARY_PORT") $PRIMARY_PORT 2
sentinel down-after-milliseconds $MASTER 1000
sentinel failover-timeout $MASTER 5000
sentinel parallel-syncs $MASTER 1
EOF
    if command -v redis-sentinel >/dev/null 2>&1; then
        on_host "$port" redis-sentinel "$dir/sentinel.conf"
    else
        on_host "$port" redis-server "$dir/sentinel.conf" --sentinel
    fi
    wait_port "$port" "sentinel $i" "$dir/log"
}

stop_pidfile() {
    local f=$1 pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}

down() {
    [ -d "$DIR" ] || return 0
    local f
    for f in "$DIR"/node*/pid "$DIR"/sentinel*/pid "$DIR"/primary/pid "$DIR"/replica/pid; do
        [ -e "$f" ] && stop_pidfile "$f"
    done
    if [ "$NETNS" = 1 ]; then
        netns_teardown
    fi
    rm -rf "$DIR"
}

tokend_bin() {
    local bin=${TOPOLOGY_TOKEND_BIN:-}
    if [ -z "$bin" ]; then
        bin="${CARGO_TARGET_DIR:-$ROOT/target}/release/tokend"
        if [ ! -x "$bin" ]; then
            require_rust
            say "cargo build --release (the first build takes several minutes)"
            cargo build --release >&2
        fi
    fi
    [ -x "$bin" ] || die "no tokend binary at $bin"
    printf '%s\n' "$bin"
}

up() {
    down
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    case ${TOPOLOGY_NETNS:-auto} in
    0) NETNS=0 ;;
    1 | auto)
        NETNS=0
        if [ "$(id -u)" -eq 0 ] && command -v ip >/dev/null 2>&1 && netns_setup 2>"$DIR/netns.err"; then
            NETNS=1
            touch "$DIR/netns"
        else
            netns_teardown
            [ "${TOPOLOGY_NETNS:-auto}" = 1 ] &&
                die "network namespaces are not available (root and iproute2 needed): $(cat "$DIR/netns.err" 2>/dev/null)"
        fi
        ;;
    *) die "TOPOLOGY_NETNS must be auto, 0 or 1" ;;
    esac
    start_redis primary "$PRIMARY_PORT"
    start_redis replica "$REPLICA_PORT" --replicaof "$(host_of "$PRIMARY_PORT")" "$PRIMARY_PORT"
    # The replica must hold the data before it can be promoted.
    for _ in $(seq 1 100); do
        rcli "$REPLICA_PORT" INFO replication | grep -q '^master_link_status:up' && break
        sleep 0.1
    done
    local i
    for i in 0 1 2; do
        start_sentinel "$i" "${SENTINEL_PORTS[$i]}"
    done
    # A failover needs the sentinels to know the replica and each other.
    for _ in $(seq 1 150); do
        local known
        known=$(rcli "${SENTINEL_PORTS[0]}" SENTINEL master "$MASTER" 2>/dev/null |
            awk 'p {print; p=0} /^num-other-sentinels$/ {p=1}')
        [ "${known:-0}" -ge 2 ] && [ -n "$(rcli "${SENTINEL_PORTS[0]}" SENTINEL replicas "$MASTER")" ] && break
        sleep 0.1
    done
    local sentinels="" port
    for port in "${SENTINEL_PORTS[@]}"; do
        sentinels+="$(host_of "$port"):$port,"
    done
    sentinels=${sentinels%,}
    printf '%s\n' "$sentinels" >"$DIR/sentinels"
    local where="on loopback"
    [ "$NETNS" = 1 ] && where="each in a network namespace of its own"
    say "redis primary $(host_of "$PRIMARY_PORT"):$PRIMARY_PORT, replica $(host_of "$REPLICA_PORT"):$REPLICA_PORT, sentinels $sentinels (master name $MASTER), $where"

    [ "$NODES" -gt 0 ] || return 0
    local bin kek
    bin=$(tokend_bin)
    if [ -n "${TOKEND_KEYS_KEK:-}" ]; then
        kek=$TOKEND_KEYS_KEK
    else
        head -c 32 /dev/urandom | base64 | tr -d '\n' >"$DIR/kek"
        kek=$(cat "$DIR/kek")
    fi
    export TOKEND_DATABASE_URL=$DATABASE_URL
    export TOKEND_KEYS_KEK=$kek
    export TOKEND_REDIS_SENTINELS=$sentinels
    export TOKEND_REDIS_SENTINEL_MASTER=$MASTER
    # The URL's host and port are not used with sentinels; its database is.
    export TOKEND_REDIS_URL=${TOKEND_REDIS_URL:-redis://$(host_of "$PRIMARY_PORT"):$PRIMARY_PORT/0}
    export TOKEND_REDIS_PREFIX=${TOKEND_REDIS_PREFIX:-tokend:topology:}
    # One deployment, one issuer: every node signs and accepts tokens as
    # the address clients use (in production, the balancer's). Without it
    # each node's issuer would be its own listen address.
    export TOKEND_SERVER_PUBLIC_URL=${TOKEND_SERVER_PUBLIC_URL:-http://127.0.0.1:$((BASE + 20))}
    "$bin" migrate >"$DIR/migrate.log" 2>&1 || die "tokend migrate failed: $(tail -n 3 "$DIR/migrate.log")"
    local n port
    for n in $(seq 1 "$NODES"); do
        port=$((BASE + 19 + n))
        mkdir -p "$DIR/node$n"
        local own_var="TOPOLOGY_NODE${n}_ENV" own
        # Word splitting on purpose: VAR=value words.
        read -r -a own <<<"${!own_var:-}"
        env TOKEND_SERVER_LISTEN="127.0.0.1:$port" TOKEND_SERVER_CORES="${TOKEND_SERVER_CORES:-1}" \
            "${own[@]}" nohup "$bin" serve >"$DIR/node$n/log" 2>&1 </dev/null &
        echo $! >"$DIR/node$n/pid"
    done
    for n in $(seq 1 "$NODES"); do
        port=$((BASE + 19 + n))
        local ready=0
        for _ in $(seq 1 300); do
            if curl -fsS -o /dev/null "http://127.0.0.1:$port/readyz" 2>/dev/null; then
                ready=1
                break
            fi
            kill -0 "$(cat "$DIR/node$n/pid")" 2>/dev/null || break
            sleep 0.1
        done
        [ "$ready" = 1 ] || die "tokend node $n is not ready on 127.0.0.1:$port; its log: $DIR/node$n/log"
        say "tokend node $n: http://127.0.0.1:$port (log $DIR/node$n/log)"
    done
}

status() {
    local name port pid f
    for f in "$DIR"/primary/pid "$DIR"/replica/pid "$DIR"/sentinel*/pid "$DIR"/node*/pid; do
        [ -e "$f" ] || continue
        name=$(basename "$(dirname "$f")")
        pid=$(cat "$f")
        if kill -0 "$pid" 2>/dev/null; then echo "$name: up (pid $pid)"; else echo "$name: down"; fi
    done
    if port=$(current_primary_port); then
        echo "primary (as the sentinels say): $(host_of "$port"):$port"
    else
        echo "primary: no sentinel answers"
    fi
}

kill_primary() {
    local port name
    port=$(current_primary_port) || die "no sentinel answers"
    case $port in
    "$PRIMARY_PORT") name=primary ;;
    "$REPLICA_PORT") name=replica ;;
    *) die "the sentinels name 127.0.0.1:$port, which this topology did not start" ;;
    esac
    kill -KILL "$(cat "$DIR/$name/pid")"
    rm -f "$DIR/$name/pid"
    say "killed the primary ($name, $(host_of "$port"):$port) with SIGKILL at $(date +%s.%N)"
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
kill-primary) kill_primary ;;
-h | --help) usage ;;
*)
    usage >&2
    exit 2
    ;;
esac
