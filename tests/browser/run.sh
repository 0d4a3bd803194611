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

# The cluster run needs a Redis of its own, the relay run a TURN server (Debian's
# redis-server and coturn; tests/all.sh installs both).
need_tools() {
  command -v redis-server >/dev/null 2>&1 \
    || die "redis-server not found: the two-node run needs it (apt-get install -y redis-server)"
  command -v turnserver >/dev/null 2>&1 \
    || die "turnserver not found: the TURN relay run needs it (apt-get install -y coturn)"
}

if [ "${1:-}" != --in-namespace ]; then
  # ---- outside: install, build, enter the namespace ----
  need_tools
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

need_tools
WORK="$(mktemp -d)"
PIDS=()
# Stops every process started here: TERM first, KILL whatever is still there after 5 s.
cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# A free loopback port (TCP, or UDP with `udp`). The namespace is ours alone, so nothing else
# can take it before the process it is meant for binds it.
free_port() {
  node -e '
    const udp = process.argv[1] === "udp";
    const s = udp ? require("node:dgram").createSocket("udp4") : require("node:net").createServer();
    const done = () => { console.log(s.address().port); s.close(); };
    udp ? s.bind(0, "127.0.0.1", done) : s.listen(0, "127.0.0.1", done);' "${1:-tcp}"
}

# Prints the logs of everything started here, for a failure.
show_logs() {
  local f
  for f in "$WORK"/*.err "$WORK"/*.log; do
    [ -f "$f" ] || continue
    echo "--- $(basename "$f") (last 40 lines)" >&2
    tail -n 40 "$f" >&2 || true
  done
}

# The demo's static site: the page and the client package's file (clients/js), copied side by
# side (the server serves no symlink that leaves its static directory).
node "$ROOT/examples/browser/site.mjs" "$WORK/site" >/dev/null || die "could not assemble the demo site"

# A Redis of the test's own, without persistence, for the two server nodes.
REDIS_PORT="$(free_port)"
(
  cd "$WORK"
  exec redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK" >"$WORK/redis.log" 2>&1
) &
PIDS+=($!)
for _ in $(seq 100); do
  [ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] && break
  sleep 0.1
done
[ "$(redis-cli -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ] || { show_logs; die "redis-server did not answer PING on port $REDIS_PORT"; }

# A TURN server (coturn) on loopback, with the shared secret the server signs credentials with.
TURN_SECRET="browser-e2e-turn-secret-$RANDOM$RANDOM"
TURN_PORT="$(free_port)"
RELAY_MIN="$(free_port udp)"
if [ "$RELAY_MIN" -gt 65500 ]; then RELAY_MIN=65500; fi
(
  cd "$WORK"
  exec turnserver -n --listening-ip=127.0.0.1 --listening-port="$TURN_PORT" --relay-ip=127.0.0.1 \
    --use-auth-secret --static-auth-secret="$TURN_SECRET" --realm=octate.test \
    --allow-loopback-peers --no-cli --no-tls --no-dtls \
    --min-port="$RELAY_MIN" --max-port="$((RELAY_MIN + 31))" \
    --pidfile="$WORK/turnserver.pid" --userdb="$WORK/turndb" --log-file=stdout >"$WORK/turnserver.log" 2>&1
) &
PIDS+=($!)

# Two server nodes of one cluster, in development mode (tokens without an admin key, as the
# demo expects), sharing the Redis and one token secret. Each runs in an empty directory so
# that no .env file of the checkout applies. Node b also hands out TURN credentials.
TOKEN_SECRET="browser-e2e-token-secret-$RANDOM$RANDOM$RANDOM$RANDOM-0123456789"
start_node() {
  local id="$1"; shift
  # Nodes "solo" and "admin" are single servers of their own (resume; admin dashboard).
  local cluster=(OCTATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0" OCTATE_NODE_ID="$id"
    OCTATE_CLUSTER_HEARTBEAT_MS=100 OCTATE_CLUSTER_NODE_TTL_MS=1000 OCTATE_CLUSTER_REAP_INTERVAL_MS=100)
  if [ "$id" = solo ] || [ "$id" = admin ]; then cluster=(); fi
  mkdir -p "$WORK/node-$id"
  (
    cd "$WORK/node-$id"
    exec env -u OCTATE_ADMIN_KEY -u OCTATE_NO_SIGNALING_PORT -u OCTATE_TURN_URIS -u OCTATE_TURN_SECRET \
      -u OCTATE_REDIS_URL \
      OCTATE_ENV=development CORS_ORIGINS='*' \
      PORT=0 SIGNALING_PORT=0 HOST=127.0.0.1 OCTATE_STATIC_DIR="$WORK/site" \
      OCTATE_TOKEN_SECRET="$TOKEN_SECRET" OCTATE_RESUME_GRACE_MS=3000 "${cluster[@]}" \
      "$@" "$SERVER_BIN" >"$WORK/node-$id.out" 2>"$WORK/node-$id.err"
  ) &
  PIDS+=($!)
  local pid=$! addr=""
  for _ in $(seq 300); do
    addr="$(sed -n 's/^octate-server listening http=\([^ ]*\).*/\1/p' "$WORK/node-$id.out" 2>/dev/null | head -n1)"
    [ -n "$addr" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$addr" ]; then
    echo "--- node $id stdout" >&2; cat "$WORK/node-$id.out" >&2 || true
    show_logs
    die "server node $id did not print its listening line"
  fi
  NODE_ADDR="$addr"
}
start_node a
HTTP_ADDR="$NODE_ADDR"
start_node b OCTATE_TURN_URIS="turn:127.0.0.1:$TURN_PORT?transport=udp" OCTATE_TURN_SECRET="$TURN_SECRET"
HTTP_ADDR_B="$NODE_ADDR"
# A single server, for the resume scenario: its grace outlasts the scenario's 5 s cut.
start_node solo OCTATE_RESUME_GRACE_MS=8000
HTTP_ADDR_SOLO="$NODE_ADDR"
# A single server with an admin key, for the admin dashboard (admin.mjs).
ADMIN_KEY="browser-e2e-admin-key-$RANDOM$RANDOM$RANDOM"
start_node admin OCTATE_ADMIN_KEY="$ADMIN_KEY"
HTTP_ADDR_ADMIN="$NODE_ADDR"

# coturn is up once it accepts TCP on its port (it opens UDP on the same port with it).
turn_listens() { (exec 3<>"/dev/tcp/127.0.0.1/$TURN_PORT") 2>/dev/null; }
for _ in $(seq 100); do turn_listens && break; sleep 0.1; done
turn_listens || { show_logs; die "turnserver is not listening on 127.0.0.1:$TURN_PORT"; }
say "nodes a at http://$HTTP_ADDR and b at http://$HTTP_ADDR_B, single server at http://$HTTP_ADDR_SOLO (redis :$REDIS_PORT, turn :$TURN_PORT), $(ulimit -Sn) open files at most"

status=0
(cd "$HERE" && OCTATE_URL="http://$HTTP_ADDR" OCTATE_URL_B="http://$HTTP_ADDR_B" OCTATE_URL_SOLO="http://$HTTP_ADDR_SOLO" E2E_TURN=1 \
  E2E_TURN_RELAY="127.0.0.1:$RELAY_MIN-$((RELAY_MIN + 31))" \
  CHROMIUM="$CHROMIUM" RUST_PEER="$RUST_PEER_BIN" timeout 180 node e2e.mjs) || status=$?
# The y-webrtc endpoint with the real y-webrtc client (ywebrtc.mjs, examples/ywebrtc).
(cd "$HERE" && OCTATE_URL="http://$HTTP_ADDR" OCTATE_URL_B="http://$HTTP_ADDR_B" CHROMIUM="$CHROMIUM" timeout 180 node ywebrtc.mjs) || status=1
# The admin dashboard (admin.mjs); Node before 22 needs its WebSocket switched on.
ws_flag=()
node -e 'process.exit(typeof WebSocket === "function" ? 0 : 1)' || ws_flag=(--experimental-websocket)
(cd "$HERE" && OCTATE_URL="http://$HTTP_ADDR_ADMIN" OCTATE_ADMIN_KEY="$ADMIN_KEY" CHROMIUM="$CHROMIUM" \
  timeout 150 node "${ws_flag[@]}" admin.mjs) || status=1
if [ "$status" -ne 0 ]; then show_logs; fi
exit "$status"
