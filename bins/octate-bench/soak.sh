#!/usr/bin/env bash
# Bounded soak (a benchmark, not a CI test): 10 minutes of churn and relay against one
# release server on loopback, printing the server's RSS before, every minute, at the end
# of the load and after 30 s idle. Stops by itself (every process has a timeout).
#   bash bins/octate-bench/soak.sh            # SOAK_SECONDS=600 by default
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds="${SOAK_SECONDS:-600}"
secret=soak-secret-0123456789abcdef0123456789
cargo build --release -p octate-server -p octate-bench
OCTATE_TOKEN_SECRET=$secret HOST=127.0.0.1 PORT=3800 SIGNALING_PORT=3801 \
  OCTATE_MAX_CONNECTIONS_PER_IP=0 OCTATE_MESSAGES_PER_SECOND=100000 \
  OCTATE_MESSAGE_BURST=100000 RUST_LOG=warn \
  timeout $((seconds + 300)) ./target/release/octate-server >/dev/null 2>&1 &
guard=$!
trap 'kill $guard 2>/dev/null || true' EXIT
sleep 1
pid=$(pgrep -P "$guard" octate-server)
rss() { awk '/VmRSS/ {print $2*1024}' "/proc/$pid/status"; }
bench=(./target/release/octate-bench --http 127.0.0.1:3800 --ws ws://127.0.0.1:3801/
       --token-secret "$secret" --server-pid "$pid" --max-runtime $((seconds + 90)))
echo "cold_start_rss=$(rss)"
# Warm-up: touch the runtime's threads and the allocator's caches once, then settle.
timeout 60 "${bench[@]}" --scenario relay --duration 10 --pairs 50 | tail -1
sleep 30
echo "warm_idle_rss=$(rss)"
timeout $((seconds + 100)) "${bench[@]}" --scenario churn --duration "$seconds" --concurrency 16 | tail -3 &
timeout $((seconds + 100)) "${bench[@]}" --scenario relay --duration "$seconds" --pairs 50 | tail -3 &
for minute in $(seq 1 $((seconds / 60))); do
  sleep 60
  echo "t=${minute}m rss=$(rss)"
done
wait %2 %3 2>/dev/null || true
echo "end_of_load_rss=$(rss)"
sleep 30
echo "after_30s_idle_rss=$(rss)"
