#!/usr/bin/env bash
# Runs the benchmarks whose figures are recorded in docs/performance.md.
# Usage: ./scripts/bench.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moodbridge/target}"
cargo bench --locked -p moodbridge-core --bench policy_overhead -- "$@"
cargo bench --locked -p moodbridge-core --features sqlite --bench audit_append -- 1000000
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput -- breakdown
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput_mimalloc
cargo bench --locked -p moodbridge-auth --bench credential_store -- "$@"
cargo bench --locked -p moodbridge-auth --bench token_cache
# The Salesforce benches start the sandbox example as a separate process (https for the
# side-by-side bench with simple-salesforce, which runs in a venv of its own).
cargo build --locked --release -p salesforce-sandbox --features tls --example sandbox
cargo bench --locked -p connector-salesforce --bench query_stream
cargo bench --locked -p connector-salesforce --bench bulk_sync
cargo bench --locked -p connector-salesforce --bench bulk_sync_mimalloc
BENCH_VENV="$HOME/.cache/moodbridge/bench-venv"
[ -x "$BENCH_VENV/bin/python" ] || python3 -m venv "$BENCH_VENV"
"$BENCH_VENV/bin/pip" install -q -r scripts/requirements-bench.txt
MOODBRIDGE_BENCH_PYTHON="$BENCH_VENV/bin/python" \
  cargo bench --locked -p connector-salesforce --bench vs_simple_salesforce -- 1000000
cargo bench --locked -p connector-aws --bench s3_transfer
cargo bench --locked -p connector-azure --bench blob_transfer
./scripts/measure_ops_server.sh 5
