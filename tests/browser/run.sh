#!/usr/bin/env bash
# End-to-end test of the browser demo in Debian's Chromium, inside a private network
# namespace that has only loopback. See tests/browser/README.md.
#
#   bash tests/browser/run.sh
#
# Installs what is missing (Debian's chromium, `npm ci` here), builds the server, then
# re-runs itself inside `unshare -n` to start the server on free ports and run e2e.mjs.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER_BIN="$TARGET_DIR/debug/octate-server"
RUST_PEER_BIN="$TARGET_DIR/debug/examples/webrtc_peer"

say() { echo "browser e2e: $*"; }
die() { echo "browser e2e: ERROR: $*" >&2; exit 1; }

# Never more than 20,000 open files per process: lower a higher soft limit, never raise it.
soft="$(ulimit -Sn)"
if [ "$soft" = unlimited ] || [ "$soft" -gt 20000 ]; then ulimit -Sn 20000; fi

if [ "${1:-}" != --in-namespace ]; then
  # ---- outside: install, build, enter the namespace ----
  if [ ! -x "$CHROMIUM" ]; then
    say "installing Debian's chromium"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y chromium || { apt-get update && apt-get install -y chromium; } \
      || die "could not install chromium with apt-get"
  fi
  [ -x "$CHROMIUM" ] || die "$CHROMIUM not found"

  if [ ! -f "$HERE/node_modules/playwright-core/package.json" ]; then
    say "installing playwright-core (npm ci)"
    # playwright-core never downloads a browser; the test uses Debian's chromium.
    (cd "$HERE" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund) || die "npm ci failed"
  fi

  say "building the server"
  (cd "$ROOT" && cargo build -p octate-server) || die "cargo build -p octate-server failed"
  [ -x "$SERVER_BIN" ] || die "server binary not found at $SERVER_BIN"
  # The native Rust WebRTC peer of scenario 7 (examples/webrtc_peer.rs).
  say "building the Rust WebRTC peer"
  (cd "$ROOT" && cargo build --example webrtc_peer) || die "cargo build --example webrtc_peer failed"
  [ -x "$RUST_PEER_BIN" ] || die "Rust peer binary not found at $RUST_PEER_BIN"

  if ! unshare -n true 2>/dev/null; then
    die "'unshare -n' failed: this test runs only inside a private network namespace, which needs root (CAP_SYS_ADMIN); refusing to run it outside one"
  fi
  status=0
  unshare -n bash -c 'ip link set lo up && bash "$0" --in-namespace' "$HERE/run.sh" || status=$?
  exit "$status"
fi

# ---- inside the namespace ----
links="$(ip -o link show | cut -d: -f2 | tr -d ' ' | tr '\n' ' ')"
if [ "$links" != "lo " ]; then
  die "expected a network namespace with only loopback, found: $links"
fi

WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$SERVER_PID" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# The server runs in an empty directory so that no .env file of the checkout applies;
# development mode issues tokens without an admin key, as the demo expects.
(
  cd "$WORK"
  exec env -u OCTATE_ADMIN_KEY -u OCTATE_NO_SIGNALING_PORT -u OCTATE_TOKEN_SECRET \
    OCTATE_ENV=development CORS_ORIGINS='*' \
    PORT=0 SIGNALING_PORT=0 HOST=127.0.0.1 OCTATE_STATIC_DIR="$ROOT/examples/browser" \
    "$SERVER_BIN" >"$WORK/server.out" 2>"$WORK/server.err"
) &
SERVER_PID=$!

HTTP_ADDR=""
for _ in $(seq 300); do
  HTTP_ADDR="$(sed -n 's/^octate-server listening http=\([^ ]*\).*/\1/p' "$WORK/server.out" 2>/dev/null | head -n1)"
  [ -n "$HTTP_ADDR" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || break
  sleep 0.1
done
if [ -z "$HTTP_ADDR" ]; then
  echo "--- server stdout" >&2; cat "$WORK/server.out" >&2 || true
  echo "--- server stderr" >&2; tail -n 50 "$WORK/server.err" >&2 || true
  die "the server did not print its listening line"
fi
say "server at http://$HTTP_ADDR ($(ulimit -Sn) open files at most)"

status=0
(cd "$HERE" && OCTATE_URL="http://$HTTP_ADDR" CHROMIUM="$CHROMIUM" RUST_PEER="$RUST_PEER_BIN" timeout 180 node e2e.mjs) || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- server log (last 40 lines)" >&2
  tail -n 40 "$WORK/server.err" >&2 || true
fi
exit "$status"
