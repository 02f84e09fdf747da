#!/usr/bin/env bash
# Runs tokend's fuzz targets (fuzz/, cargo fuzz + libFuzzer) one after the
# other, each for a few seconds (the smoke run scripts/test.sh does) or for
# a number of executions (the long runs whose counts the README gives):
#
#   scripts/fuzz.sh                       every target, 5 s each
#   scripts/fuzz.sh jwt resp              these targets
#   FUZZ_SECONDS=60 scripts/fuzz.sh       60 s each
#   FUZZ_RUNS=10000000 scripts/fuzz.sh    10 million executions each
#
# The targets need nightly Rust (tokend itself builds on stable): without a
# nightly toolchain this says so and exits 0. cargo-fuzz is installed with
# `cargo install cargo-fuzz --locked` when it is missing (and the run is
# skipped, with a message, when that install fails, e.g. offline).
#
# Environment:
#   FUZZ_SECONDS   seconds per target (-max_total_time), default 5
#   FUZZ_RUNS      executions per target (-runs); wins over FUZZ_SECONDS
#   FUZZ_CORPUS    directory for the grown corpus (one subdirectory per
#                  target), kept between runs; default a temporary one,
#                  removed at the end. The committed seeds in
#                  fuzz/corpus/<target>/ are read, never written.
#
# Every run uses -rss_limit_mb=2048 -timeout=5 (a leak, a blow-up or one
# input taking over 5 s is a failure, like a panic). A failure prints the
# end of libFuzzer's output and the reproducer under fuzz/artifacts/; rerun
# it with `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-…`.
# Exits non-zero at the first target that fails.
set -euo pipefail
cd "$(dirname "$0")/.."
TOKEND_SCRIPT=fuzz.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ALL_TARGETS=(http_parse form authorization jwt resp config)
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")

if ! command -v rustup >/dev/null 2>&1 || ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "skipped: no nightly Rust toolchain (the fuzz targets need one: rustup toolchain install nightly)"
    exit 0
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    say "cargo-fuzz is missing: installing it (cargo install cargo-fuzz --locked)"
    if ! cargo install cargo-fuzz --locked; then
        # Like a missing nightly: a machine that cannot install it (offline,
        # as in a clean Debian root without network) skips the fuzz run and
        # says so, rather than failing the tests it has run.
        say "skipped: cargo-fuzz could not be installed (no network to crates.io?); install it with: cargo install cargo-fuzz --locked"
        exit 0
    fi
fi

# Offline (CARGO_NET_OFFLINE=true, as in a clean Debian root without
# network), the fuzz targets' own crates (libfuzzer-sys, ...) must already be
# in cargo's cache; when they are not, the run is skipped and says so.
if [ "${CARGO_NET_OFFLINE:-}" = true ] &&
    ! cargo +nightly fetch --manifest-path fuzz/Cargo.toml >/dev/null 2>&1; then
    say "skipped: offline (CARGO_NET_OFFLINE=true) and the fuzz targets' crates are not in cargo's cache; run it once with network"
    exit 0
fi

# Its own build directory: another toolchain and other flags than the
# product's (CARGO_TARGET_DIR may point at the product's).
export CARGO_TARGET_DIR="$PWD/fuzz/target"
# Release build with debug assertions and overflow checks, AddressSanitizer
# (cargo fuzz's default), so an overflow or an out-of-bounds access fails.
FLAGS=(--release --debug-assertions)

if [ -n "${FUZZ_RUNS:-}" ]; then
    limit=(-runs="$FUZZ_RUNS")
else
    limit=(-max_total_time="${FUZZ_SECONDS:-5}")
fi
corpus_root=${FUZZ_CORPUS:-}
if [ -z "$corpus_root" ]; then
    corpus_root=$(mktemp -d)
    trap 'rm -rf "$corpus_root"' EXIT
fi

say "building the fuzz targets (cargo +nightly fuzz build)"
cargo +nightly fuzz build "${FLAGS[@]}"

for t in "${targets[@]}"; do
    mkdir -p "$corpus_root/$t"
    log="$corpus_root/$t.log"
    # The first corpus directory receives what libFuzzer adds; the seeds
    # come second.
    if ! cargo +nightly fuzz run "${FLAGS[@]}" "$t" "$corpus_root/$t" "fuzz/corpus/$t" -- \
        "${limit[@]}" -rss_limit_mb=2048 -timeout=5 -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        die "fuzz target $t failed (reproducer under fuzz/artifacts/$t/)"
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    peak=$(sed -n 's/^stat::peak_rss_mb: *//p' "$log" | tail -n1)
    say "$t: ${runs:-?} executions in ${secs:-?} s (${rate:-?}/s, peak RSS ${peak:-?} MB), no crash"
done
