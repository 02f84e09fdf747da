# shellcheck shell=bash
# Shared helpers for the scripts in scripts/. Source it; do not run it.
#
#   . "$(dirname "$0")/lib.sh"

# Short, prefixed status lines on stderr, so that stdout stays clean for
# anything a caller may want to capture.
say() { printf '%s: %s\n' "${TOKEND_SCRIPT:-${0##*/}}" "$*" >&2; }
warn() { printf '%s: warning: %s\n' "${TOKEND_SCRIPT:-${0##*/}}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${TOKEND_SCRIPT:-${0##*/}}" "$*" >&2
    exit 1
}

# Runs a command as root: directly when we are root, through sudo otherwise.
# Only called when something actually needs root, so a machine where
# everything is already set up never asks for a sudo password.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "this step needs root: run as root or install sudo (command: $*)"
    fi
}

# "sudo " when a command needing root must go through sudo, "" when we are
# root: for the commands the scripts print for the user to paste.
root_prefix() {
    if [ "$(id -u)" -ne 0 ]; then
        printf 'sudo '
    fi
}

# Runs a command as another OS user (e.g. postgres), from / so that tools
# do not complain about an unreadable working directory.
as_user() {
    local user=$1
    shift
    if [ "$(id -un)" = "$user" ]; then
        (cd / && "$@")
    elif [ "$(id -u)" -eq 0 ]; then
        if command -v runuser >/dev/null 2>&1; then
            (cd / && runuser -u "$user" -- "$@")
        else
            # su needs one command string; quote every word for the shell.
            local cmd
            cmd=$(printf '%q ' "$@")
            (cd / && su -s /bin/sh "$user" -c "$cmd")
        fi
    elif command -v sudo >/dev/null 2>&1; then
        (cd / && sudo -u "$user" -- "$@")
    else
        return 1
    fi
}

# Checks that the Rust toolchain (and a C compiler/linker, which Rust and the
# aws-lc crypto library need) are present, with a clear way out when not.
require_rust() {
    if ! command -v cargo >/dev/null 2>&1; then
        if [ -x "$HOME/.cargo/bin/cargo" ]; then
            die "cargo is installed in ~/.cargo/bin but not on PATH; run:  . \"\$HOME/.cargo/env\"   (or open a new shell) and try again"
        fi
        cat >&2 <<EOF
error: cargo (the Rust toolchain) was not found.

Install Rust with rustup (https://rustup.rs), then open a new shell:

    $(root_prefix)apt-get install -y curl ca-certificates build-essential
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y
    . "\$HOME/.cargo/env"

Debian's own \`cargo\` package is too old for this crate; use rustup.
EOF
        exit 1
    fi
    if ! command -v cc >/dev/null 2>&1; then
        die "no C compiler/linker (cc) found; Rust needs one to link and to build aws-lc: $(root_prefix)apt-get install -y build-essential"
    fi
    # The crate declares its minimum Rust version; say so plainly when the
    # installed toolchain is older, rather than letting cargo fail later.
    local need have
    need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml 2>/dev/null | head -n1)
    have=$(cargo --version 2>/dev/null | awk '{print $2}' | sed 's/-.*//')
    if [ -n "$need" ] && [ -n "$have" ] && ! version_ge "$have" "$need"; then
        die "cargo $have is older than the crate's rust-version $need; run: rustup update stable"
    fi
}

# True when something accepts TCP connections on host:port.
port_open() {
    timeout 2 bash -c ": </dev/tcp/$1/$2" >/dev/null 2>&1
}

# version_ge A B: true when dotted version A >= B.
version_ge() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
