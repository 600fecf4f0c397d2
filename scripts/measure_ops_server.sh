#!/usr/bin/env bash
# Cold start and idle RSS of the ops server example (release build): the time from
# spawning the process to its first 200 on /api/integrations/health, and its RSS after
# 5 idle seconds. Figures: docs/performance.md ("Ops server").
# Run: ./scripts/measure_ops_server.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moodbridge/target}"
cargo build --release --locked --example ops_server >/dev/null 2>&1
bin="$CARGO_TARGET_DIR/release/examples/ops_server"
runs="${1:-5}"
for i in $(seq "$runs"); do
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start=$(date +%s%N)
  MOODBRIDGE_OPS_ADDR="127.0.0.1:$port" "$bin" >/dev/null 2>&1 &
  pid=$!
  until curl -sf -o /dev/null "http://127.0.0.1:$port/api/integrations/health"; do
    kill -0 "$pid" 2>/dev/null || { echo "ops server exited"; exit 1; }
    sleep 0.005
  done
  ready=$(( ($(date +%s%N) - start) / 1000000 ))
  sleep 5
  rss=$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  echo "run $i: first healthy answer after $ready ms; idle RSS $rss MiB (peak $hwm MiB)"
done
