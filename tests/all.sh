#!/usr/bin/env bash
# Runs every check and test of the project; installs what the tests need when missing.
#   bash tests/all.sh            everything (what CI runs; about 15-20 minutes on 2 cores)
#   OCTATE_SKIP_BROWSER=1 ...    everything but the browser end-to-end test
#   OCTATE_QUICK=1 ...           format, lint, unit, property, integration and JS client
#                                tests only (no licence check, fuzzing, schemathesis or browser)
set -euo pipefail
QUICK="${OCTATE_QUICK:-0}"
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n=== %s\n' "$*"; }

step "format"
cargo fmt --all -- --check

step "lint"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "layering: octate-core has no I/O dependency"
if cargo tree -p octate-core -e normal --prefix none --locked | grep -Eq '^(tokio|hyper|mio|socket2|parking_lot|fastwebsockets) '; then
    echo "octate-core depends on an I/O crate:" >&2
    cargo tree -p octate-core -e normal --locked >&2
    exit 1
fi
echo "ok: $(cargo tree -p octate-core -e normal --prefix none --locked | sort -u | wc -l) crates, none doing I/O"

if [ "$QUICK" != "1" ]; then
step "licenses and bans"
if ! command -v cargo-deny >/dev/null 2>&1; then
    cargo install --locked cargo-deny
fi
cargo fetch --locked >/dev/null
cargo deny --log-level error --offline check licenses bans
fi

step "test services: Debian's redis-server (the cluster tests start their own instances)"
if ! command -v redis-server >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y redis-server || { apt-get update && apt-get install -y redis-server; } \
        || { echo "could not install redis-server with apt-get" >&2; exit 1; }
fi
redis-server --version

step "test services: Debian's coturn (tests/turn.rs starts its own turnserver)"
if ! command -v turnserver >/dev/null 2>&1 || ! command -v turnutils_uclient >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y coturn || { apt-get update && apt-get install -y coturn; } \
        || { echo "could not install coturn with apt-get" >&2; exit 1; }
fi
turnserver --version

step "test tools: curl (tests/tls.rs checks the binary with curl and Python's ssl)"
if ! command -v curl >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y curl || { apt-get update && apt-get install -y curl; } \
        || { echo "could not install curl with apt-get" >&2; exit 1; }
fi
curl --version | sed -n 1p

step "unit, property and integration tests"
cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked

step "JavaScript client (clients/js) against the real server binary"
if ! command -v node >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y nodejs || { apt-get update && apt-get install -y nodejs; } \
        || { echo "could not install nodejs with apt-get" >&2; exit 1; }
fi
cargo build -p octate-server --locked
# No npm dependencies (without a global WebSocket, the tests use their own small client).
(cd clients/js && node --test)

if [ "$QUICK" = "1" ]; then
    step "quick run passed (OCTATE_QUICK=1: no licence check, fuzzing, schemathesis or browser)"
    exit 0
fi

if [ -x tests/fuzz-smoke.sh ]; then
    step "fuzz smoke run"
    bash tests/fuzz-smoke.sh
fi

if [ -f tests/schemathesis/run.sh ]; then
    step "HTTP API against docs/openapi.yaml (schemathesis)"
    bash tests/schemathesis/run.sh
fi

if [ "${OCTATE_SKIP_BROWSER:-0}" != "1" ] && [ -f tests/browser/run.sh ]; then
    step "browser end-to-end (real Chromium, loopback-only network namespace)"
    bash tests/browser/run.sh
fi

step "all checks passed"
