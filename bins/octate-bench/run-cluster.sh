#!/usr/bin/env bash
# Octate in cluster mode on this machine: N octate-server nodes sharing rooms through one
# Redis, measured with octate-bench; see docs/performance.md ("Cluster").
#
# Starts its own redis-server (free loopback port, no persistence) and NODES release
# octate-server processes (n1, n2, ...; ports chosen by the kernel, read from each
# node's "octate-server listening" line), waits until every node sees every other one
# through Redis, then runs, each on a fresh cluster:
#   1. relay same-node:  P=100 pairs, both peers of every pair on node 1;
#   2. relay cross-node: P=100 pairs, the first peer on node 1, the second on node 2;
#   3. (SCALE=1) idle:   PEERS peers in rooms of two, round robin over every node (the
#      two peers of a room on different nodes), split over enough generator processes.
# For each run it prints the generator's summary, every node's cluster counters, and
# Redis's used_memory (and CPU time, commands processed) before and after.
# Results go to target/bench-results/cluster-<time>.jsonl (one JSON line per run).
#
# Bounded: every process runs under `timeout`, every generator run has --max-runtime,
# every process is stopped by pid on exit (SIGTERM, then SIGKILL after a bounded wait),
# and the script stops starting runs after MAX_SECONDS. Traffic stays on 127.0.0.0/8.
# Every process here is capped at 20,000 open files.
#
# Knobs (environment): DURATION (s, default 10), NODES (default 3, at least 2),
# SCALE (1: also the idle run; default 0), PEERS (idle peers, default 57000),
# PAIRS (relay pairs, default 100), HOLD (idle hold, s, default 5), OUT
# (target/bench-results), MAX_SECONDS (900), BUILD (0: use the binaries as they are),
# SERVER / BENCH (binaries; default target/release/...), ALLOW_NO_CLUSTER (1: run
# against a build without cluster support, to check this script itself; cross-node
# pairs then never meet).
#
#   bash bins/octate-bench/run-cluster.sh                  # relay same-node vs cross-node
#   SCALE=1 bash bins/octate-bench/run-cluster.sh          # and 57,000 idle peers on 3 nodes

set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
NODES=${NODES:-3}
SCALE=${SCALE:-0}
PEERS=${PEERS:-57000}
PAIRS=${PAIRS:-100}
HOLD=${HOLD:-5}
OUT=${OUT:-target/bench-results}
MAX_SECONDS=${MAX_SECONDS:-900}
BUILD=${BUILD:-1}
SERVER=${SERVER:-target/release/octate-server}
BENCH=${BENCH:-target/release/octate-bench}
ALLOW_NO_CLUSTER=${ALLOW_NO_CLUSTER:-0}
# Open files per process, and connections per node (room for listeners and Redis links).
FILE_CAP=20000
NODE_MAX_CONNECTIONS=19500
# Peers per generator process (stays well under FILE_CAP).
PEERS_PER_SHARD=18000
# Longest a server or Redis may live, whatever happens to this script.
LIFETIME=$((MAX_SECONDS + 300))
SECRET="cluster-bench-secret-$(date +%s)-0123456789abcdef0123456789"

fail() {
    echo "run-cluster: $*" >&2
    exit 2
}

case $NODES in '' | *[!0-9]*) fail "NODES must be a number" ;; esac
[ "$NODES" -ge 2 ] || fail "NODES must be at least 2 (cross-node relay needs two nodes)"
if [ "$SCALE" = 1 ]; then
    per_node=$(((PEERS + NODES - 1) / NODES))
    [ "$per_node" -le "$NODE_MAX_CONNECTIONS" ] ||
        fail "PEERS=$PEERS on NODES=$NODES is $per_node per node, above $NODE_MAX_CONNECTIONS: raise NODES"
fi
command -v redis-server >/dev/null || fail "redis-server is not on PATH (apt-get install redis-server)"
command -v redis-cli >/dev/null || fail "redis-cli is not on PATH (apt-get install redis-tools)"

# Every process started from here on inherits this cap.
if [ "$(ulimit -Hn)" = unlimited ] || [ "$(ulimit -Hn)" -ge "$FILE_CAP" ]; then
    ulimit -n "$FILE_CAP"
fi
[ "$(ulimit -n)" -le "$FILE_CAP" ] || fail "could not cap open files at $FILE_CAP"

if [ "$BUILD" = 1 ]; then
    echo "== build"
    cargo build --release -p octate-server -p octate-bench
fi
[ -x "$SERVER" ] || fail "$SERVER not found: build it (cargo build --release -p octate-server) or set SERVER"
[ -x "$BENCH" ] || fail "$BENCH not found: build it (cargo build --release -p octate-bench) or set BENCH"
if ! "$SERVER" --help 2>/dev/null | grep -q -e '--redis-url' -e 'OCTATE_REDIS_URL'; then
    if [ "$ALLOW_NO_CLUSTER" = 1 ]; then
        echo "run-cluster: $SERVER has no cluster support; running anyway (ALLOW_NO_CLUSTER=1)" >&2
    else
        fail "$SERVER has no cluster support (no --redis-url in its --help): build a version with cluster mode"
    fi
    CLUSTER=0
else
    CLUSTER=1
fi

mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS="$OUT/cluster-$STAMP.jsonl"
LOGS="$OUT/cluster-logs-$STAMP"
mkdir -p "$LOGS"

# Processes this script started: "real pid:timeout pid" of each.
STARTED=()
# The generator run under way (its `timeout`), and the Redis watcher beside it.
RUNNING=()
REDIS_PORT=""
NODE_PIDS=()
NODE_HTTP=()
NODE_WS=()

# The pid of the program `timeout` runs as its child.
child_of() {
    local parent=$1
    for _ in $(seq 1 50); do
        local pid
        pid=$(pgrep -P "$parent" | head -n 1 || true)
        if [ -n "$pid" ]; then
            echo "$pid"
            return 0
        fi
        sleep 0.1
    done
    return 1
}

# SIGTERM, up to 10 s for it to exit, then SIGKILL (the program and its `timeout`).
stop_one() {
    local real=${1%%:*} wrapper=${1##*:}
    kill -TERM "$real" 2>/dev/null || true
    for _ in $(seq 1 100); do
        kill -0 "$real" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$real" 2>/dev/null || true
    kill -KILL "$wrapper" 2>/dev/null || true
    wait "$wrapper" 2>/dev/null || true
}

stop_all() {
    # The generator first (`timeout` passes the signal on), then the nodes (newest
    # first), then Redis, so no node sees its store vanish mid-run.
    local i pid
    for pid in "${RUNNING[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${RUNNING[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    RUNNING=()
    for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do
        stop_one "${STARTED[$i]}"
    done
    STARTED=()
    NODE_PIDS=()
    NODE_HTTP=()
    NODE_WS=()
    REDIS_PORT=""
}
trap stop_all EXIT
trap 'exit 130' INT TERM

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

redis() {
    timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"
}

# The value of `field` in Redis's INFO `section`.
redis_info() {
    redis INFO "$1" | tr -d '\r' | awk -F: -v f="$2" '$1 == f { print $2 }'
}

start_redis() {
    local port wrapper real
    for _ in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" && continue
        timeout -k 5 "$LIFETIME" redis-server --port "$port" --bind 127.0.0.1 \
            --save "" --appendonly no --daemonize no \
            >>"$LOGS/redis.log" 2>&1 &
        wrapper=$!
        real=$(child_of "$wrapper") || { kill -KILL "$wrapper" 2>/dev/null || true; continue; }
        STARTED+=("$real:$wrapper")
        REDIS_PORT=$port
        for _ in $(seq 1 50); do
            if [ "$(redis PING 2>/dev/null)" = PONG ]; then
                return 0
            fi
            kill -0 "$real" 2>/dev/null || break
            sleep 0.1
        done
        # Lost the port to someone else, or Redis did not come up: try another.
        stop_one "$real:$wrapper"
        unset 'STARTED[-1]'
        REDIS_PORT=""
    done
    fail "redis-server did not start (see $LOGS/redis.log)"
}

# Starts node n$1 and records its pid, HTTP address and WebSocket URL.
start_node() {
    local id="n$1" log="$LOGS/node-n$1.out" wrapper real line http sig
    : >"$log"
    env RUST_LOG=warn HOST=127.0.0.1 PORT=0 SIGNALING_PORT=0 \
        OCTATE_REDIS_URL="redis://127.0.0.1:$REDIS_PORT" OCTATE_NODE_ID="$id" \
        OCTATE_TOKEN_SECRET="$SECRET" \
        OCTATE_MESSAGES_PER_SECOND=1000000 OCTATE_MESSAGE_BURST=1000000 \
        OCTATE_MAX_CONNECTIONS="$NODE_MAX_CONNECTIONS" OCTATE_MAX_CONNECTIONS_PER_IP=0 \
        OCTATE_MAX_PEERS_PER_ROOM=64 OCTATE_MAX_ROOMS=1000000 \
        OCTATE_MEMORY_WARNING_MB=8000 OCTATE_MEMORY_CRITICAL_MB=16000 \
        timeout -k 5 "$LIFETIME" "$SERVER" >"$log" 2>>"$LOGS/node-$id.err" &
    wrapper=$!
    real=$(child_of "$wrapper") || fail "node $id did not start (see $LOGS/node-$id.err)"
    STARTED+=("$real:$wrapper")
    for _ in $(seq 1 100); do
        line=$(grep -m 1 '^octate-server listening ' "$log" || true)
        [ -n "$line" ] && break
        kill -0 "$real" 2>/dev/null || fail "node $id exited (see $LOGS/node-$id.err)"
        sleep 0.1
    done
    [ -n "$line" ] || fail "node $id printed no listening line in 10 s"
    http=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$line")
    sig=$(sed -n 's/.* signaling=\([^ ]*\).*/\1/p' <<<"$line")
    [ -n "$http" ] && [ -n "$sig" ] || fail "node $id: cannot read its ports from: $line"
    NODE_PIDS+=("$real")
    NODE_HTTP+=("$http")
    NODE_WS+=("ws://$sig/")
}

# GET `path` from an HTTP address (host:port) on loopback; the body on stdout.
http_get() {
    local host=${1%%:*} port=${1##*:}
    timeout 5 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" "$2" "$0:$1" >&3
        sed "1,/^\r*$/d" <&3' "$host" "$port" "$2" 2>/dev/null || true
}

# The cluster section of a node's /stats, on one line.
cluster_stats() {
    http_get "$1" /stats | grep -o '"cluster":{[^}]*}' || true
}

# Waits until every node reports the store connected and every node alive.
wait_cluster() {
    [ "$CLUSTER" = 1 ] || return 0
    local ready
    for _ in $(seq 1 200); do
        ready=0
        for http in "${NODE_HTTP[@]}"; do
            if cluster_stats "$http" | grep -q "\"nodesAlive\":$NODES[,}].*\"connected\":true\|\"connected\":true.*\"nodesAlive\":$NODES[,}]"; then
                ready=$((ready + 1))
            fi
        done
        [ "$ready" = "$NODES" ] && return 0
        sleep 0.1
    done
    for http in "${NODE_HTTP[@]}"; do
        echo "node $http: $(cluster_stats "$http")" >&2
    done
    fail "the nodes did not all see each other through Redis within 20 s"
}

start_cluster() {
    start_redis
    local i
    for i in $(seq 1 "$NODES"); do
        start_node "$i"
    done
    wait_cluster
    echo "redis 127.0.0.1:$REDIS_PORT (pid ${STARTED[0]%%:*}); nodes:"
    for i in $(seq 0 $((NODES - 1))); do
        echo "  n$((i + 1)) pid ${NODE_PIDS[$i]} http ${NODE_HTTP[$i]} ws ${NODE_WS[$i]}" \
            "($(awk '/Max open files/ {print $4}' "/proc/${NODE_PIDS[$i]}/limits") open files)"
    done
}

# What Redis holds and has done so far, on one line.
redis_line() {
    echo "used_memory=$(redis_info memory used_memory) ($(redis_info memory used_memory_human))" \
        "cpu_s=$(redis_info cpu used_cpu_user)+$(redis_info cpu used_cpu_sys)" \
        "commands=$(redis_info stats total_commands_processed)" \
        "clients=$(redis_info clients connected_clients)"
}

# Redis's largest used_memory while `$1` runs, sampled every 0.5 s, into `$2`.
watch_redis_peak() {
    local pid=$1 file=$2 peak=0 now
    while kill -0 "$pid" 2>/dev/null; do
        now=$(redis_info memory used_memory 2>/dev/null || true)
        case $now in
            '' | *[!0-9]*) ;;
            *) if [ "$now" -gt "$peak" ]; then
                peak=$now
                echo "$peak" >"$file"
            fi ;;
        esac
        sleep 0.5
    done
}

# Runs the generator with `$1` as its label and the rest as its arguments.
bench() {
    local label=$1
    shift
    echo "redis before: $(redis_line)"
    local peak_file="$LOGS/redis-peak-$label"
    echo 0 >"$peak_file"
    timeout -k 5 400 env OCTATE_TOKEN_SECRET="$SECRET" "$BENCH" "$@" \
        --label "$label" --max-runtime 380 \
        >>"$RESULTS" 2>"$LOGS/bench-$label.log" &
    local run=$!
    watch_redis_peak "$run" "$peak_file" &
    local watcher=$!
    RUNNING=("$run" "$watcher")
    local status=0
    wait "$run" || status=$?
    wait "$watcher" 2>/dev/null || true
    RUNNING=()
    grep -v '^octate-bench: .* done in' "$LOGS/bench-$label.log" | grep -E '^(relay|idle)' || true
    [ "$status" = 0 ] || echo "run failed ($status): $label; see $LOGS/bench-$label.log" >&2
    echo "redis after:  $(redis_line)"
    echo "redis peak used_memory during the run: $(cat "$peak_file")"
    [ "$CLUSTER" = 1 ] || return 0
    for i in $(seq 0 $((NODES - 1))); do
        echo "  n$((i + 1)) $(cluster_stats "${NODE_HTTP[$i]}")"
    done
}

past_deadline() {
    if [ "$SECONDS" -ge "$MAX_SECONDS" ]; then
        echo "run-cluster: stopping: past MAX_SECONDS=$MAX_SECONDS" >&2
        return 0
    fi
    return 1
}

{
    echo "machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB, ulimit -n $(ulimit -n)"
    echo "octate: $(git rev-parse --short HEAD 2>/dev/null || echo unknown); $(redis-server --version)"
    echo "nodes: $NODES; duration: $DURATION s; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$LOGS/versions.txt"

echo "== relay same-node: P=$PAIRS, both peers of every pair on n1"
start_cluster
bench "cluster-same-node" --scenario relay --pairs "$PAIRS" --window 1 --duration "$DURATION" \
    --ws "${NODE_WS[0]}" --http "${NODE_HTTP[0]}" --server-pid "${NODE_PIDS[0]}"
stop_all

if ! past_deadline; then
    echo "== relay cross-node: P=$PAIRS, first peer on n1, second on n2"
    start_cluster
    bench "cluster-cross-node" --scenario relay --pairs "$PAIRS" --window 1 --duration "$DURATION" \
        --ws "${NODE_WS[0]}" --http "${NODE_HTTP[0]}" \
        --ws-b "${NODE_WS[1]}" --http-b "${NODE_HTTP[1]}" \
        --server-pids "${NODE_PIDS[0]},${NODE_PIDS[1]}"
    # (The JSON line's keys are in alphabetical order.)
    if tail -n 1 "$RESULTS" | grep -q '"label":"cluster-cross-node".*"round_trips":0,'; then
        echo "run-cluster: cross-node: no round trip at all: the nodes did not relay to each other" >&2
    fi
    stop_all
fi

if [ "$SCALE" = 1 ] && ! past_deadline; then
    shards=$(((PEERS + PEERS_PER_SHARD - 1) / PEERS_PER_SHARD))
    echo "== idle across $NODES nodes: $PEERS peers, $shards generator processes"
    start_cluster
    ws_list=$(IFS=,; echo "${NODE_WS[*]}")
    http_list=$(IFS=,; echo "${NODE_HTTP[*]}")
    pid_list=$(IFS=,; echo "${NODE_PIDS[*]}")
    bench "cluster-idle" --scenario idle --peers "$PEERS" --shards "$shards" \
        --concurrency 128 --hold "$HOLD" \
        --ws-list "$ws_list" --http-list "$http_list" --server-pids "$pid_list"
    stop_all
fi

echo
"$BENCH" --scenario table --input "$RESULTS" || true
echo
echo "results: $RESULTS"
echo "logs:    $LOGS"
