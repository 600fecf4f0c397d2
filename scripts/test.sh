#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what they need first.
# This is the command CI runs (.ci/run) and the one README.md gives. Later issues add
# their local services (moto, Azurite, fakesnow, PostgreSQL, an OIDC provider) to the
# "services" section below; each service is started on 127.0.0.1 and stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

# A shared target dir outside the clone: repeated runs reuse what earlier ones built.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moodbridge/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# One build per run: incremental caches would only fill the disk (tens of GB).
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
export RUST_BACKTRACE=1

step() { printf '\n==> %s\n' "$*"; }

# ---------------------------------------------------------------------------------------
# Toolchain: rustfmt and clippy are rustup components; make sure they are present.
# ---------------------------------------------------------------------------------------
step "toolchain"
if command -v rustup >/dev/null 2>&1; then
  installed=$(rustup component list --installed 2>/dev/null || true)
  for component in rustfmt clippy; do
    if ! grep -q "^${component}" <<<"$installed"; then
      rustup component add "$component"
    fi
  done
fi
cargo --version
cargo fmt --version
cargo clippy --version

# ---------------------------------------------------------------------------------------
# Local services the tests run against. Tests start and stop their own instances on
# 127.0.0.1 (random ports); this section installs what they need. Later issues add their
# services here.
# ---------------------------------------------------------------------------------------
step "local services"
# OpenID provider for moodbridge-auth: oidc-provider (npm), pinned by its package-lock.
command -v node >/dev/null || apt-get install -y -qq nodejs npm >/dev/null || { apt-get update -qq && apt-get install -y -qq nodejs npm >/dev/null; } || true
command -v node >/dev/null || { echo "node is required (apt-get install -y nodejs npm)"; exit 1; }
# openssl (CLI) makes the throwaway certificate of the https Azurite (Entra ID tests).
command -v openssl >/dev/null || apt-get install -y -qq openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl >/dev/null; }
for npm_dir in moodbridge-auth/tests/oidc salesforce-sandbox/tests/jsforce salesforce-sandbox/tests/pubsub-node connector-azure/tests/azurite; do
  # oidc-provider for the auth tests; jsforce for the Salesforce sandbox conformance run;
  # the npm Pub/Sub API client for the sandbox's Pub/Sub service; Azurite (the Azure
  # Storage emulator) for the Blob tests.
  if ! npm ci --prefix "$npm_dir" --no-audit --no-fund --loglevel=error; then
    echo "npm ci failed for $npm_dir"; exit 1
  fi
done

# A venv at $1 with the pinned requirements file $2, reinstalled when that file changes
# (a copy of it inside the venv remembers what was installed).
venv_with() {
  local venv=$1 requirements=$2
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  if ! cmp -s "$requirements" "$venv/.$(basename "$requirements")"; then
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
    cp "$requirements" "$venv/.$(basename "$requirements")"
  fi
}
# Python services (moto for S3, fakesnow, the vendors' Python clients) in a venv kept
# beside the target dir, pinned by scripts/requirements-test.txt.
VENV="${MOODBRIDGE_VENV:-$HOME/.cache/moodbridge/venv}"
venv_with "$VENV" scripts/requirements-test.txt
export MOODBRIDGE_MOTO_SERVER="$VENV/bin/moto_server"
# Snowflake's Python connector 5.x cannot share the venv with fakesnow (which pins 4.x):
# a venv of its own, for the Snowflake sandbox's fidelity test.
VENV_SNOWFLAKE5="${MOODBRIDGE_SNOWFLAKE5_VENV:-$HOME/.cache/moodbridge/venv-snowflake5}"
venv_with "$VENV_SNOWFLAKE5" scripts/requirements-snowflake5.txt
export MOODBRIDGE_SNOWFLAKE5_PYTHON="$VENV_SNOWFLAKE5/bin/python"
# Apache Airflow 3 for the Airflow client's tests (connector-etl/tests/airflow.rs): a venv
# of its own (its pins would fight the others'); the tests start its parts on loopback.
VENV_AIRFLOW="${MOODBRIDGE_AIRFLOW_VENV:-$HOME/.cache/moodbridge/venv-airflow}"
venv_with "$VENV_AIRFLOW" scripts/requirements-airflow.txt
export MOODBRIDGE_AIRFLOW_BIN="$VENV_AIRFLOW/bin"
# (Not `airflow version`: importing Airflow writes a config under ~/airflow.)
"$VENV_AIRFLOW/bin/python" -c "import importlib.metadata as m; assert m.version('apache-airflow') == '3.3.2'" \
  || { echo "Airflow 3.3.2 is not installed in $VENV_AIRFLOW"; exit 1; }
"$MOODBRIDGE_MOTO_SERVER" --help >/dev/null || { echo "moto_server does not run"; exit 1; }
# s3s-fs: an S3 server keeping objects as plain files, so a fakesnow stage over a file://
# URL reads what the S3 connector wrote (the Snowflake sink's external stage test).
TOOLS="${MOODBRIDGE_TOOLS:-$HOME/.cache/moodbridge/tools}"
if ! "$TOOLS/bin/s3s-fs" --version 2>/dev/null | grep -qx "s3s-fs 0.14.1"; then
  echo "installing s3s-fs 0.14.1"
  cargo install --quiet --locked s3s-fs --version 0.14.1 --features binary --root "$TOOLS"
fi
export MOODBRIDGE_S3S_FS="$TOOLS/bin/s3s-fs"

# PostgreSQL 15 for the state store tests: a throwaway cluster on 127.0.0.1 at a free
# port (fsync off: speed matters here, durability does not); each test creates its own
# database in it. Stopped and deleted on exit.
PG_DIR=""
PG_AS=()
PGBIN=""
start_postgres() {
  PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$PGBIN" ]; then
    echo "installing PostgreSQL"
    apt-get install -y -qq postgresql >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }
    PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
  PG_DIR=$(mktemp -d)
  if [ "$(id -u)" = 0 ]; then
    # initdb refuses root: run the cluster as the packaged postgres user.
    chown postgres:postgres "$PG_DIR"
    PG_AS=(runuser -u postgres --)
  fi
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "${PG_AS[@]}" "$PGBIN/initdb" -D "$PG_DIR/data" -U postgres --auth=trust --no-sync -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
    || { cat "$PG_DIR/initdb.log"; return 1; }
  "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PG_DIR/data" -w -l "$PG_DIR/server.log" \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c fsync=off" start >/dev/null \
    || { cat "$PG_DIR/server.log"; return 1; }
  export MOODBRIDGE_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$port"
  # pg_dump / pg_restore of the same version, for the backup-and-restore test.
  export MOODBRIDGE_TEST_PGBIN="$PGBIN"
  echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port"
}
stop_postgres() {
  if [ -n "$PG_DIR" ]; then
    "${PG_AS[@]}" "$PGBIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
  fi
}

# moto and Azurite for the upload examples (the tests start their own): on free loopback
# ports, stopped on exit.
EXAMPLE_PIDS=()
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 200); do
    (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1"; return 1
}
stop_example_services() {
  for pid in "${EXAMPLE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
}

cleanup() { stop_example_services; stop_postgres; }
trap cleanup EXIT
start_postgres

# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "no module cycles inside a crate"
python3 scripts/module_cycles.py ./*/src src

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "feature subsets a host would pick"
# Each connector alone, core and auth without defaults, a PostgreSQL-only host with every
# connector: each must build on its own, without warnings (features are additive; none
# may lean on another crate's defaults).
for subset in \
  "-p moodbridge-core --no-default-features" \
  "-p moodbridge-auth --no-default-features" \
  "-p connector-salesforce" \
  "-p connector-sqlite" \
  "-p moodbridge-ops" \
  "-p connector-aws" \
  "-p connector-aws --no-default-features --features sqs" \
  "-p connector-aws --no-default-features --features sns" \
  "-p connector-aws --no-default-features --features secrets" \
  "-p connector-aws --no-default-features --features logs" \
  "-p connector-aws --no-default-features --features dynamodb" \
  "-p connector-azure" \
  "-p connector-azure --no-default-features --features queue" \
  "-p connector-azure --no-default-features --features keyvault" \
  "-p connector-azure --no-default-features --features servicebus" \
  "-p azure-sandbox" \
  "-p connector-snowflake" \
  "-p snowflake-sandbox" \
  "-p connector-etl" \
  "-p moodbridge --no-default-features --features postgres,full"; do
  echo "cargo clippy $subset"
  # shellcheck disable=SC2086 # the subset is a list of arguments
  cargo clippy --locked $subset -- -D warnings
done
# The PostgreSQL-only host compiles no SQLite and no HTTP listener.
if cargo tree --locked -p moodbridge --no-default-features --features postgres,full -e normal,build \
  | grep -iE 'sqlite|axum'; then
  echo "a PostgreSQL-only host pulls in SQLite or axum (above)"; exit 1
fi

step "tests (unit, integration, doc)"
cargo test --workspace --all-features --locked

# Benchmarks run once each in the test profile (no second, release build of the tree);
# their figures are recorded by scripts/bench.sh, not here.
step "benchmarks compile and run once"
cargo test --workspace --all-features --locked --benches

step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked

step "main example runs"
cargo run --locked --example quickstart

step "examples run at TRACE with planted secrets (the secret canary)"
# Every example runs with every library's TRACE output on (the vendor targets the
# logging setup caps by default named explicitly) and distinct secrets planted in its
# credentials; then every line it printed and every file it wrote is searched for each
# secret raw, percent-encoded and base64-encoded (scripts/canary.py). Secrets whose value
# is random (the sandbox's tokens) are found by their fixed shape.
CANARY_DIR=$(mktemp -d)
mkdir -p "$CANARY_DIR/tmp"
TRACE_ALL="trace,aws_config=trace,aws_sigv4=trace,aws_smithy_runtime=trace,aws_smithy_http_client=trace,azure_core=trace,hyper=trace,hyper_util=trace,reqwest=trace,h2=trace,rustls=trace,sqlx=trace"
AWS_CANARY_SECRET="canary/AwsSecretKey+7Q2wz9XkLmN4pR8sT1vY3bC6"
AWS_CANARY_TOKEN="FwoGZXIvYXdzCanarySessionToken/Qm9+z1Xy2Wv3Ut4=="
WEB_CANARY_SECRET="canary-web-client-secret-5f1c9e"
EVENTS_CANARY_SECRET="whsec_Y2FuYXJ5LWV2ZW50cy1zaWduaW5nLWtleS03YzQx"
SERVICEBUS_CANARY_KEY="canary-servicebus-key/3b9e+Q1w="
AZURITE_KEY="Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
# example NAME COMMAND…: run it at TRACE, its output in $CANARY_DIR/NAME.log (shown when
# it fails), its temporary files under $CANARY_DIR/tmp.
example() {
  local name=$1
  shift
  echo "example $name"
  if ! RUST_LOG="$TRACE_ALL" TMPDIR="$CANARY_DIR/tmp" "$@" >"$CANARY_DIR/$name.out" 2>"$CANARY_DIR/$name.log"; then
    tail -n 80 "$CANARY_DIR/$name.log" "$CANARY_DIR/$name.out"
    echo "example $name failed (the end of its output and log is above)"
    return 1
  fi
  tail -n 4 "$CANARY_DIR/$name.out"
}
MOODBRIDGE_QUICKSTART_DIR="$CANARY_DIR/quickstart" example quickstart cargo run --locked --example quickstart
# ops_server --check serves on a free loopback port, reads every page and exits.
example ops_server cargo run --locked --example ops_server -- --check
example salesforce_sync cargo run --locked --example salesforce_sync
# Salesforce (the embedded sandbox) into Snowflake (fakesnow, started by the example):
# Parquet files PUT to a stage, COPY'd and MERGEd by the sink of kind snowflake.
SNOWFLAKE_CANARY_PASSWORD="canary-snowflake-password-2d7e"
MOODBRIDGE_VENV="$VENV" MOODBRIDGE_SNOWFLAKE_PASSWORD="$SNOWFLAKE_CANARY_PASSWORD" \
  example salesforce_to_snowflake cargo run --locked --features snowflake --example salesforce_to_snowflake
# events: signed webhooks and Outbound Messages into the event log, consumed and replayed.
MOODBRIDGE_EVENTS_SECRET="$EVENTS_CANARY_SECRET" example events cargo run --locked --example events
for strategy in source-wins target-wins park; do
  example "bidirectional-$strategy" cargo run --locked --example bidirectional -- --conflicts "$strategy"
done
MOTO_PORT=$(free_port)
MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=$((1 << 30)) \
  "$MOODBRIDGE_MOTO_SERVER" -H 127.0.0.1 -p "$MOTO_PORT" >/dev/null 2>&1 &
EXAMPLE_PIDS+=($!)
AZURITE_PORT=$(free_port)
connector-azure/tests/azurite/node_modules/.bin/azurite-blob --blobHost 127.0.0.1 --blobPort "$AZURITE_PORT" \
  --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent >/dev/null 2>&1 &
EXAMPLE_PIDS+=($!)
AZURITE_QUEUE_PORT=$(free_port)
connector-azure/tests/azurite/node_modules/.bin/azurite-queue --queueHost 127.0.0.1 --queuePort "$AZURITE_QUEUE_PORT" \
  --inMemoryPersistence --skipApiVersionCheck --disableTelemetry --silent >/dev/null 2>&1 &
EXAMPLE_PIDS+=($!)
wait_port "$MOTO_PORT"
wait_port "$AZURITE_PORT"
wait_port "$AZURITE_QUEUE_PORT"
# Temporary credentials from the environment (the AWS chain), session token included.
AWS_ACCESS_KEY_ID=AKIDCANARYMOODBRIDGE AWS_SECRET_ACCESS_KEY="$AWS_CANARY_SECRET" AWS_SESSION_TOKEN="$AWS_CANARY_TOKEN" \
  example s3_upload cargo run --locked --features aws --example s3_upload -- \
  --endpoint "http://127.0.0.1:$MOTO_PORT" --path-style --create-bucket --bucket examples --size-mib 64
# Queue events into the pipeline: SQS queues on moto, created by the example.
AWS_ACCESS_KEY_ID=AKIDCANARYMOODBRIDGE AWS_SECRET_ACCESS_KEY="$AWS_CANARY_SECRET" AWS_SESSION_TOKEN="$AWS_CANARY_TOKEN" \
  example queues cargo run --locked --features aws-sqs --example queues -- \
  --endpoint "http://127.0.0.1:$MOTO_PORT" --create
# A worker fed by an SNS topic through a filter policy, both integrations from config.
AWS_ACCESS_KEY_ID=AKIDCANARYMOODBRIDGE AWS_SECRET_ACCESS_KEY="$AWS_CANARY_SECRET" AWS_SESSION_TOKEN="$AWS_CANARY_TOKEN" \
  example queue_worker cargo run --locked --features aws-sqs,aws-sns --example queue_worker -- \
  --endpoint "http://127.0.0.1:$MOTO_PORT" --create
# Salesforce (the embedded sandbox) into DynamoDB tables on moto, from a config file.
AWS_ACCESS_KEY_ID=AKIDCANARYMOODBRIDGE AWS_SECRET_ACCESS_KEY="$AWS_CANARY_SECRET" AWS_SESSION_TOKEN="$AWS_CANARY_TOKEN" \
  MOODBRIDGE_DYNAMODB_ENDPOINT="http://127.0.0.1:$MOTO_PORT" \
  example salesforce_dynamodb cargo run --locked --features aws-dynamodb --example salesforce_sync -- \
  examples/config/salesforce_dynamodb.toml
# The well-known Azurite development account (published by Microsoft, yet the key this
# run signs with: it must not leak either).
AZURE_STORAGE_CONNECTION_STRING="AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;BlobEndpoint=http://127.0.0.1:$AZURITE_PORT/devstoreaccount1" \
  example azure_upload cargo run --locked --features azure --example azure_upload -- --create-container --size-mib 64
# The same queue flow on Azure Queue storage (Azurite), with its poison queue.
AZURE_STORAGE_CONNECTION_STRING="AccountName=devstoreaccount1;AccountKey=$AZURITE_KEY;QueueEndpoint=http://127.0.0.1:$AZURITE_QUEUE_PORT/devstoreaccount1" \
  example azure_queues cargo run --locked --features azure-queue --example azure_queues -- --create
# The same queue flow on Azure Service Bus (the sandbox, in the example's process), its
# dead letters in the queue's $DeadLetterQueue.
MOODBRIDGE_SERVICEBUS_SANDBOX_KEY="$SERVICEBUS_CANARY_KEY" \
  example servicebus_queues cargo run --locked --features azure-servicebus --example servicebus_queues
# oauth_login against a real OpenID provider (oidc-provider, the auth tests' one), with
# curl as the "browser": it follows the login redirects, keeping cookies, to the
# example's loopback listener.
command -v curl >/dev/null || apt-get install -y -qq curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl >/dev/null; }
OIDC_OUT=$(mktemp)
OIDC_WEB_SECRET="$WEB_CANARY_SECRET" node moodbridge-auth/tests/oidc/provider.mjs >"$OIDC_OUT" 2>/dev/null &
EXAMPLE_PIDS+=($!)
for _ in $(seq 100); do [ -s "$OIDC_OUT" ] && break; sleep 0.1; done
OIDC_ISSUER=$(python3 -c 'import json, sys; print(json.loads(open(sys.argv[1]).readline())["issuer"])' "$OIDC_OUT")
WEB_SECRET="$WEB_CANARY_SECRET" example oauth_login cargo run --locked --example oauth_login -- --issuer "$OIDC_ISSUER" \
  --client-id web --client-secret-env WEB_SECRET --scopes "openid offline_access api:read" \
  --open-with "curl -sSL -b /dev/null -o /dev/null"
rm -f "$OIDC_OUT"
stop_example_services
python3 scripts/canary.py --self-test \
  --secret "$AWS_CANARY_SECRET" --secret "$AWS_CANARY_TOKEN" --secret "$AZURITE_KEY" \
  --secret "$WEB_CANARY_SECRET" --secret sandbox-secret \
  --secret "$EVENTS_CANARY_SECRET" --secret canary-events-signing-key-7c41 \
  --secret "$SERVICEBUS_CANARY_KEY" --pattern 'SharedAccessSignature sr=' \
  --secret "$SNOWFLAKE_CANARY_PASSWORD" \
  --secret '00D8d0000000001!sandbox.' --pattern '00D8d0000000001!sandbox\.[A-Za-z0-9_-]{6}' \
  --pattern '5Aep861sandbox[A-Za-z0-9_-]{6}' \
  "$CANARY_DIR" target/salesforce_sync
rm -rf "$CANARY_DIR"

step "all checks passed"
