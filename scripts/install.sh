#!/usr/bin/env bash
# Installs tokend as a systemd service. Idempotent: run it again after an
# upgrade; it replaces the binary and the unit, and never touches an existing
# configuration or key-encryption key.
#
#   1. cargo build --release (unless --no-build);
#   2. target/release/tokend -> <prefix>/bin/tokend (0755);
#   3. system user and group `tokend`, when missing;
#   4. /etc/tokend (0750 root:tokend) with tokend.toml from
#      scripts/tokend.example.toml when absent (0640 root:tokend);
#   5. /etc/tokend/kek, 32 random bytes in base64, when absent
#      (0600 tokend:tokend);
#   6. the unit to /etc/systemd/system/tokend.service, and
#      `systemctl daemon-reload` when systemd runs;
#   7. prints the next steps.
#
# Usage: scripts/install.sh [--no-build] [--root DIR] [--prefix PREFIX]
#   --no-build       install the existing target/release/tokend
#   --binary PATH    install this binary instead of target/release/tokend
#   --root DIR       install under DIR instead of / (like DESTDIR): nothing
#                    outside DIR is changed, no user is created, systemctl is
#                    not called, and files are chowned to tokend only when
#                    that group already exists
#   --prefix PREFIX  install the binary to PREFIX/bin (default /usr/local);
#                    the unit's ExecStart follows
# Run as root (or it re-runs the root-only steps through sudo).

set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
# shellcheck source=scripts/lib.sh
. "$HERE/lib.sh"

BUILD=1
ROOT=/
PREFIX=/usr/local
BINARY=
while [ $# -gt 0 ]; do
    case "$1" in
        --no-build) BUILD=0 ;;
        --root | --destdir)
            [ $# -ge 2 ] || die "$1 needs a directory"
            ROOT=$2
            shift
            ;;
        --root=* | --destdir=*) ROOT=${1#*=} ;;
        --prefix)
            [ $# -ge 2 ] || die "--prefix needs a directory"
            PREFIX=$2
            shift
            ;;
        --prefix=*) PREFIX=${1#*=} ;;
        --binary)
            [ $# -ge 2 ] || die "--binary needs a path"
            BINARY=$2
            BUILD=0
            shift
            ;;
        --binary=*)
            BINARY=${1#*=}
            BUILD=0
            ;;
        -h | --help)
            sed -n '2,/^$/s/^# \{0,1\}//p' "$0"
            exit 0
            ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

case "$PREFIX" in
    /*) ;;
    *) die "--prefix must be an absolute path, got '$PREFIX'" ;;
esac
[ -d "$ROOT" ] || die "--root $ROOT: no such directory"
ROOT=$(cd "$ROOT" && pwd)
# DIR/ + /etc/tokend without a double slash.
dest() { if [ "$ROOT" = / ]; then printf '%s' "$1"; else printf '%s%s' "$ROOT" "$1"; fi; }

BIN_DIR="$PREFIX/bin"
ETC=/etc/tokend
UNIT=/etc/systemd/system/tokend.service

# 1. Build.
if [ "$BUILD" = 1 ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs) or pass --no-build"
    say "building (cargo build --release)"
    (cd "$REPO" && cargo build --release --locked --bin tokend)
fi
[ -n "$BINARY" ] || BINARY="$REPO/target/release/tokend"
[ -x "$BINARY" ] || die "$BINARY is missing: build it (cargo build --release) or drop --no-build"

if [ "$(id -u)" -ne 0 ] && [ "$ROOT" = / ]; then
    say "not root: re-running as root"
    args=(--no-build --binary "$BINARY" --prefix "$PREFIX")
    as_root "$0" "${args[@]}"
    exit $?
fi

# Installs $1 as $2 with mode $3 and owner $4 (user:group, empty = leave),
# atomically (a running tokend keeps its old inode), only when different.
# Prints "installed" or "unchanged".
put() {
    local src=$1 dst=$2 mode=$3 owner=$4 tmp
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
        chmod "$mode" "$dst"
        [ -z "$owner" ] || chown "$owner" "$dst"
        echo unchanged
        return
    fi
    tmp=$(mktemp "$dst.XXXXXX")
    cat "$src" >"$tmp"
    chmod "$mode" "$tmp"
    [ -z "$owner" ] || chown "$owner" "$tmp"
    mv -f "$tmp" "$dst"
    echo installed
}

# 3. User and group (first: the files below are owned by the group).
if [ "$ROOT" = / ]; then
    if ! getent group tokend >/dev/null; then
        groupadd --system tokend
        say "created group tokend"
    fi
    if ! getent passwd tokend >/dev/null; then
        nologin=/usr/sbin/nologin
        [ -x "$nologin" ] || nologin=/sbin/nologin
        useradd --system --no-create-home --home-dir /nonexistent \
            --gid tokend --shell "$nologin" --comment "tokend OAuth 2.0 token service" tokend
        say "created user tokend"
    fi
fi
# Owner of /etc/tokend and what is in it; under --root only when the group
# exists (and we may chown).
OWNER=
if getent group tokend >/dev/null && [ "$(id -u)" -eq 0 ]; then
    OWNER=root:tokend
elif [ "$ROOT" != / ]; then
    warn "no group tokend here (or not root): files under $ROOT keep the current owner"
fi

# 2. The binary.
mkdir -p "$(dest "$BIN_DIR")"
state=$(put "$BINARY" "$(dest "$BIN_DIR/tokend")" 755 "")
say "$BIN_DIR/tokend: $state"

# 4. The configuration directory and file.
mkdir -p "$(dest "$ETC")"
chmod 750 "$(dest "$ETC")"
[ -z "$OWNER" ] || chown "$OWNER" "$(dest "$ETC")"
umask 027
if [ -e "$(dest "$ETC/tokend.toml")" ]; then
    say "$ETC/tokend.toml exists: left as it is (compare with $REPO/scripts/tokend.example.toml after upgrades)"
else
    put "$REPO/scripts/tokend.example.toml" "$(dest "$ETC/tokend.toml")" 640 "$OWNER" >/dev/null
    say "$ETC/tokend.toml: created from the example; review it (database.url, server.listen, server.public_url)"
fi

# 5. The key-encryption key.
KEK=$(dest "$ETC/kek")
if [ -s "$KEK" ]; then
    say "$ETC/kek exists: left as it is"
else
    command -v base64 >/dev/null 2>&1 || die "base64 (coreutils) not found"
    tmp=$(mktemp "$KEK.XXXXXX")
    # 600, owned by the service's user: only tokend (and root) read it, as
    # tokend's own start-up check wants (it warns on any group or other bit).
    chmod 600 "$tmp"
    if [ -n "$OWNER" ]; then
        if getent passwd tokend >/dev/null; then chown tokend:tokend "$tmp"; else chown "$OWNER" "$tmp"; fi
    fi
    head -c 32 /dev/urandom | base64 | tr -d '\n' >"$tmp"
    printf '\n' >>"$tmp"
    mv -f "$tmp" "$KEK"
    say "$ETC/kek: created. Back it up: the signing keys in PostgreSQL cannot be opened without it"
fi
umask 022

# 6. The unit, with ExecStart following --prefix.
mkdir -p "$(dest /etc/systemd/system)"
unit_src=$(mktemp)
trap 'rm -f "$unit_src"' EXIT
sed "s|/usr/local/bin/tokend|$BIN_DIR/tokend|g" "$HERE/systemd/tokend.service" >"$unit_src"
state=$(put "$unit_src" "$(dest "$UNIT")" 644 "")
say "$UNIT: $state"
if [ "$ROOT" = / ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    say "systemctl daemon-reload: done"
elif [ "$ROOT" = / ]; then
    say "systemd is not running here: no daemon-reload"
fi

# 7. Next steps.
cat <<NEXT

tokend is installed$([ "$ROOT" = / ] || printf ' under %s' "$ROOT"). Next:
  1. edit $ETC/tokend.toml (database.url: a \`tokend\` role owning the
     \`tokend\` database; server.listen; server.public_url);
  2. create the schema and the first signing key:
       $BIN_DIR/tokend --config $ETC/tokend.toml migrate
  3. start it now and at boot:
       systemctl enable --now tokend
  4. check it:
       systemctl status tokend; journalctl -u tokend -f
       curl -s http://127.0.0.1:8080/readyz
NEXT
