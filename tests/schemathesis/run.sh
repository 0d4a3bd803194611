#!/usr/bin/env bash
# Property-based API tests: Schemathesis against a live octate-server, driven by docs/openapi.yaml.
#   bash tests/schemathesis/run.sh
# Environment:
#   SCHEMATHESIS_SEED           seed of the generated cases (default 42)
#   SCHEMATHESIS_MAX_EXAMPLES   cases per operation and phase (default 100)
#   SCHEMATHESIS_VERSION        version installed into the venv when missing (default 4.32.5)
# Exits non-zero when a pass finds a failure (or the server does not start).
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$PWD"

seed="${SCHEMATHESIS_SEED:-42}"
max_examples="${SCHEMATHESIS_MAX_EXAMPLES:-100}"
version="${SCHEMATHESIS_VERSION:-4.32.5}"
venv="$root/target/schemathesis-venv"
spec="$root/docs/openapi.yaml"
config="$root/tests/schemathesis/schemathesis.toml"
work="$root/target/schemathesis"

if [ ! -x "$venv/bin/schemathesis" ]; then
    echo "installing schemathesis $version into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
fi
st="$venv/bin/schemathesis"

cargo build --quiet -p octate-server
server="$root/target/debug/octate-server"

rm -rf "$work"
mkdir -p "$work"
server_pid=""
stop_server() {
    if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    server_pid=""
}
trap stop_server EXIT INT TERM

# Starts the server on loopback with free ports; sets $base_url. Extra env as arguments.
start_server() {
    local out="$work/server-$1.out"
    shift
    # Run from $work so that no .env file of the checkout is picked up.
    (cd "$work" && exec env -i PATH="$PATH" HOME="${HOME:-/tmp}" \
        HOST=127.0.0.1 PORT=0 SIGNALING_PORT=0 \
        OCTATE_TOKEN_SECRET="schemathesis-token-secret-0123456789abcdef" \
        "$@" "$server" >"$out" 2>"$out.log") &
    server_pid=$!
    local addr=""
    for _ in $(seq 1 100); do
        addr="$(sed -n 's/^octate-server listening http=\([^ ]*\).*/\1/p' "$out" 2>/dev/null | head -n1)"
        [ -n "$addr" ] && break
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "octate-server exited:" >&2
            cat "$out.log" >&2
            exit 1
        fi
        sleep 0.1
    done
    if [ -z "$addr" ]; then
        echo "octate-server did not report its address" >&2
        exit 1
    fi
    base_url="http://$addr"
    echo "octate-server at $base_url"
}

# One Schemathesis pass: every check, every phase, bounded, fixed seed, one worker.
run_pass() {
    local name="$1"
    shift
    echo
    echo "=== schemathesis: $name"
    (cd "$work" && timeout 90 "$st" --config-file "$config" run "$spec" \
        --url "$base_url" \
        --checks all \
        --max-examples "$max_examples" \
        --seed "$seed" \
        --workers 1 \
        --generation-database none \
        --request-timeout 10 \
        --no-color \
        --report junit --report-junit-path "$work/junit-$name.xml" \
        "$@")
}

status=0

# Pass 1: production-like, with an admin key; the bearer header is sent, and
# `ignored_auth` checks that admin operations refuse requests without it.
admin_key="schemathesis-admin-$RANDOM$RANDOM$RANDOM"
start_server admin OCTATE_ADMIN_KEY="$admin_key"
run_pass admin-key -H "Authorization: Bearer $admin_key" || status=1
stop_server

# Pass 2: development mode, no admin key: the Authorization header is not required,
# so auth checks and generated security parameters do not apply.
start_server open
run_pass no-admin-key \
    --exclude-checks ignored_auth,missing_required_header \
    --generation-with-security-parameters false || status=1
stop_server

if [ "$status" -ne 0 ]; then
    echo "schemathesis found failures (JUnit reports in $work)" >&2
fi
exit "$status"
