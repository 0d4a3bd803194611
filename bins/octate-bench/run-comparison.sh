#!/usr/bin/env bash
# Octate vs matchbox_server, every scenario, on this machine; see docs/performance.md.
#
# Builds the release binaries (and installs matchbox_server from crates.io if it is not
# on PATH and MATCHBOX_BIN is unset), then for each mode (pinned: servers on core 0 and
# the generator on core 1; two-core: no pinning) and each scenario: starts both servers
# fresh on loopback, runs the scenario against Octate then matchbox, and stops both.
# Results go to target/bench-results/results-<time>.jsonl (one JSON line per run) and a
# Markdown table next to it.
#
# Bounded: every generator run has --max-runtime and a `timeout`, every server is
# stopped by pid (SIGTERM, then SIGKILL), and the whole script gives up after
# MAX_SECONDS. Traffic goes to 127.0.0.0/8 only.
#
# Knobs (environment): DURATION (s, default 10), MODES ("pinned two-core"),
# SCENARIOS ("relay100 relay1000 churn idle1000 idle19000 fanout"), MATCHBOX_BIN,
# OUT (target/bench-results), MAX_SECONDS (2400), PRIO (a command prefix such as
# "chrt -r 20" for the servers and the generator; none by default, see below).

set -euo pipefail
cd "$(dirname "$0")/../.."

DURATION=${DURATION:-10}
MODES=${MODES:-"pinned two-core"}
SCENARIOS=${SCENARIOS:-"relay100 relay1000 churn idle1000 idle19000 fanout"}
OUT=${OUT:-target/bench-results}
MAX_SECONDS=${MAX_SECONDS:-2400}
MATCHBOX_VERSION=0.15.0
OCT_HTTP=13000
OCT_WS=13001
MBX_PORT=13536
SECRET="bench-only-secret-$(date +%s)-0123456789abcdef0123456789"
# Scheduling priority of the servers and the generator: none by default. On a quiet
# machine SCHED_RR does harm: the real-time tasks keep the kernel's softirq threads
# (which finish loopback TCP work under load) off the CPU, and both servers lose
# throughput. On a machine shared with other work, PRIO="chrt -r 20" (as root) lets the
# benchmark processes have their cores when runnable; RT throttling (950 ms per second)
# then shows up as pauses of up to 50 ms at p99.9. PRIO="nice -n -19" is the milder choice.
PRIO=${PRIO:-}

mkdir -p "$OUT"
STAMP=$(date +%Y%m%d-%H%M%S)
RESULTS="$OUT/results-$STAMP.jsonl"
TABLE="$OUT/table-$STAMP.md"
LOGS="$OUT/logs-$STAMP"
mkdir -p "$LOGS"

echo "== build"
cargo build --release -p octate-server -p octate-bench
BENCH=target/release/octate-bench
SERVER=target/release/octate-server
if [ -z "${MATCHBOX_BIN:-}" ]; then
    MATCHBOX_BIN=$(command -v matchbox_server || true)
fi
if [ -z "$MATCHBOX_BIN" ]; then
    cargo install matchbox_server --version "$MATCHBOX_VERSION" --root target/matchbox
    MATCHBOX_BIN=target/matchbox/bin/matchbox_server
fi

OCT_PID=""
MBX_PID=""

stop_pid() {
    local pid=$1
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_servers() {
    stop_pid "$OCT_PID"
    stop_pid "$MBX_PID"
    OCT_PID=""
    MBX_PID=""
}
trap stop_servers EXIT

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "port $1 did not open" >&2
    return 1
}

# $1: the command prefix that pins the servers ("" or "taskset -c 0").
start_servers() {
    local pin=$1
    env RUST_LOG=warn HOST=127.0.0.1 PORT=$OCT_HTTP SIGNALING_PORT=$OCT_WS \
        OCTATE_TOKEN_SECRET="$SECRET" \
        OCTATE_MESSAGES_PER_SECOND=1000000 OCTATE_MESSAGE_BURST=1000000 \
        OCTATE_MAX_CONNECTIONS=19500 OCTATE_MAX_CONNECTIONS_PER_IP=0 \
        OCTATE_MAX_PEERS_PER_ROOM=64 OCTATE_MAX_ROOMS=1000000 \
        OCTATE_MEMORY_WARNING_MB=8000 OCTATE_MEMORY_CRITICAL_MB=16000 \
        $PRIO $pin "$SERVER" >>"$LOGS/octate-server.log" 2>&1 &
    OCT_PID=$!
    env RUST_LOG=warn $PRIO $pin "$MATCHBOX_BIN" "127.0.0.1:$MBX_PORT" >>"$LOGS/matchbox-server.log" 2>&1 &
    MBX_PID=$!
    wait_port $OCT_WS
    wait_port $MBX_PORT
}

scenario_args() {
    case $1 in
        relay100) echo "--scenario relay --pairs 100 --window 1 --duration $DURATION" ;;
        relay1000) echo "--scenario relay --pairs 1000 --window 1 --duration $DURATION" ;;
        churn) echo "--scenario churn --concurrency 64 --max-sessions 300000 --duration $DURATION" ;;
        idle1000) echo "--scenario idle --peers 1000 --concurrency 64 --hold 5" ;;
        idle19000) echo "--scenario idle --peers 19000 --shards 2 --concurrency 128 --hold 5" ;;
        fanout) echo "--scenario fanout --rooms 32 --room-size 16 --window 4 --duration $DURATION" ;;
        *) echo "unknown scenario $1" >&2; return 1 ;;
    esac
}

{
    echo "machine: $(nproc) CPUs, $(free -g | awk '/Mem:/ {print $2}') GiB, ulimit -n $(ulimit -n)"
    echo "rustc: $(rustc -V)"
    echo "octate: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "matchbox_server: $("$MATCHBOX_BIN" --version 2>/dev/null || echo "$MATCHBOX_VERSION")"
    echo "priority: ${PRIO:-none}; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$LOGS/versions.txt"

for mode in $MODES; do
    case $mode in
        pinned) PIN_SERVER="taskset -c 0"; PIN_GEN="taskset -c 1" ;;
        two-core) PIN_SERVER=""; PIN_GEN="" ;;
        *) echo "unknown mode $mode" >&2; exit 2 ;;
    esac
    for scenario in $SCENARIOS; do
        if [ "$SECONDS" -ge "$MAX_SECONDS" ]; then
            echo "giving up: past MAX_SECONDS=$MAX_SECONDS" >&2
            break 2
        fi
        args=$(scenario_args "$scenario")
        start_servers "$PIN_SERVER"
        for target in octate matchbox; do
            if [ "$target" = octate ]; then
                pid=$OCT_PID; ws="ws://127.0.0.1:$OCT_WS/"
            else
                pid=$MBX_PID; ws="ws://127.0.0.1:$MBX_PORT/"
            fi
            echo "== $mode $scenario $target"
            # shellcheck disable=SC2086
            timeout -k 5 240 env OCTATE_TOKEN_SECRET="$SECRET" $PRIO $PIN_GEN "$BENCH" $args \
                --target "$target" --ws "$ws" --http "127.0.0.1:$OCT_HTTP" \
                --server-pid "$pid" --label "$mode" --max-runtime 220 \
                >>"$RESULTS" 2>>"$LOGS/bench.log" || echo "run failed: $mode $scenario $target" >&2
            tail -n 2 "$LOGS/bench.log" | grep -v '^octate-bench: .* done in' || true
            sleep 1
        done
        stop_servers
        sleep 2
    done
done

"$BENCH" --scenario table --input "$RESULTS" | tee "$TABLE"
echo
echo "results: $RESULTS"
echo "table:   $TABLE"
