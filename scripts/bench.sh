#!/usr/bin/env bash
# Runs the benchmarks whose figures are recorded in docs/performance.md.
# Usage: ./scripts/bench.sh [criterion filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moodbridge/target}"
cargo bench --locked -p moodbridge-core --bench policy_overhead -- "$@"
cargo bench --locked -p moodbridge-core --features sqlite --bench audit_append -- 1000000
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput -- breakdown
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput -- rows
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput -- rows audit
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput -- audit
cargo bench --locked -p moodbridge-core --features testing --bench sync_throughput_mimalloc
# Webhook ingest: the most the receiver takes (closed loop), then latency at the target
# rate (open loop, 10,000 events/s offered over 1,000 connections).
cargo bench --locked -p moodbridge-ops --bench webhook_ingest -- 1000 200000
cargo bench --locked -p moodbridge-ops --bench webhook_ingest -- 200 200000
cargo bench --locked -p moodbridge-ops --bench webhook_ingest -- 1000 200000 10000
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
# The S3 download bench runs against s3s-fs (a Rust S3 server on a directory), side by
# side with aws-cli from the bench venv.
TOOLS="$HOME/.cache/moodbridge/tools"
if ! "$TOOLS/bin/s3s-fs" --version 2>/dev/null | grep -qx "s3s-fs 0.14.1"; then
  CARGO_TARGET_DIR="$HOME/.cache/moodbridge/tools-target" \
    cargo install --locked s3s-fs --version 0.14.1 --features binary --root "$TOOLS"
fi
MOODBRIDGE_S3S_FS="$TOOLS/bin/s3s-fs" MOODBRIDGE_AWS_CLI="$BENCH_VENV/bin/aws" \
  MOODBRIDGE_BENCH_PYTHON="$BENCH_VENV/bin/python" \
  cargo bench --locked -p connector-aws --bench s3_download
cargo bench --locked -p connector-aws --features sqs --bench sqs_throughput
cargo bench --locked -p connector-aws --features sns,sqs --bench sns_fanout
cargo bench --locked -p connector-aws --features dynamodb --bench dynamodb_sync
cargo bench --locked -p connector-azure --features queue --bench queue_throughput
cargo bench --locked -p connector-azure --features servicebus --bench servicebus_throughput
cargo bench --locked -p connector-azure --bench blob_transfer
# Snowflake: a large result fetched from the Snowflake sandbox, ours and Snowflake's
# Python connector 4.x and 5.x (the venvs scripts/test.sh installs).
cargo bench --locked -p connector-snowflake --bench fetch
# Snowflake: 1M Salesforce-shaped records loaded into fakesnow, SnowflakeSink and the
# Python connector's PUT + COPY of pyarrow-written Parquet (write_pandas's way).
cargo bench --locked -p connector-snowflake --bench load
# Profiling 1M Salesforce-shaped records, records and rows paths; HyperLogLog++ against
# exact distinct counts.
cargo bench --locked -p connector-etl --bench profile
./scripts/measure_ops_server.sh 5
