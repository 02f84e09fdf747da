#!/usr/bin/env bash
# Runs every test tokend has, the way CI does (.ci/run calls this):
#
#   1. scripts/services.sh --for-tests
#                                   PostgreSQL and Redis on loopback, and
#                                   the programs the tests start themselves
#                                   (redis-server, redis-sentinel, nginx,
#                                   chromium and chromedriver)
#   2. cargo fmt --check            formatting
#   3. cargo clippy --all-targets -- -D warnings
#   4. the module layering          tests/it/layers.rs: every top-level module
#                                   of src/ imports only down the layers (no
#                                   cycle), read from the sources with syn
#   5. cargo test --all-targets --no-fail-fast
#                                   unit and integration tests (every target
#                                   runs even when one fails); the
#                                   integration tests start real `tokend
#                                   serve` processes against PostgreSQL and
#                                   Redis, each with its own database and
#                                   Redis key prefix
#   6. scripts/fuzz.sh              each fuzz target (fuzz/) for
#                                   FUZZ_SECONDS (5) seconds, so that a
#                                   regression in a parser shows up; needs
#                                   nightly Rust, says it skipped without
#                                   it, installs cargo-fuzz when missing.
#                                   Only on a full run (no arguments);
#                                   FUZZ_SECONDS=0 skips it
#
# Extra arguments go to `cargo test`, e.g.
#   scripts/test.sh config            only tests whose name contains "config"
#   scripts/test.sh -- --nocapture    show the tests' output
#
# Environment (defaults suit scripts/services.sh):
#   TOKEND_TEST_DATABASE_URL  admin connection; tests create and drop their
#                             own databases through it
#                             (postgres://tokend:tokend@127.0.0.1:5432/postgres)
#   TOKEND_TEST_REDIS_URL     (redis://127.0.0.1:6379/0)
#
# Exits with the status of the first step that fails, else 0.
set -euo pipefail
cd "$(dirname "$0")/.."
TOKEND_SCRIPT=test.sh
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

require_rust
scripts/services.sh --for-tests

export TOKEND_TEST_DATABASE_URL="${TOKEND_TEST_DATABASE_URL:-postgres://tokend:tokend@127.0.0.1:5432/postgres}"
export TOKEND_TEST_REDIS_URL="${TOKEND_TEST_REDIS_URL:-redis://127.0.0.1:6379/0}"

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        die "cargo ${component/rustfmt/fmt} is missing; install it with: rustup component add $component"
    fi
done

say "cargo fmt --check"
cargo fmt --check

say "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

say "module layering (cargo test --test it layers)"
cargo test --quiet --test it layers

say "cargo test --all-targets --no-fail-fast $*"
cargo test --all-targets --no-fail-fast "$@"

if [ $# -gt 0 ]; then
    say "fuzz smoke run skipped: test arguments were given (run scripts/fuzz.sh alone)"
elif [ "${FUZZ_SECONDS:-5}" = 0 ]; then
    say "fuzz smoke run skipped: FUZZ_SECONDS=0"
else
    say "fuzz targets, ${FUZZ_SECONDS:-5} s each (scripts/fuzz.sh)"
    FUZZ_SECONDS=${FUZZ_SECONDS:-5} FUZZ_RUNS= scripts/fuzz.sh
fi
