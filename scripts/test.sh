#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what they need first.
# This is the command CI runs (.ci/run) and the one README.md gives. Later issues add
# their local services (moto, Azurite, fakesnow, PostgreSQL, an OIDC provider) to the
# "services" section below; each service is started on 127.0.0.1 and stopped on exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

# A shared target dir outside the clone makes repeated CI runs incremental.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/moodbridge/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
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
command -v node >/dev/null || { echo "node is required (apt-get install -y nodejs npm)"; exit 1; }
if ! npm ci --prefix moodbridge-auth/tests/oidc --no-audit --no-fund --loglevel=error; then
  echo "npm ci failed for moodbridge-auth/tests/oidc"; exit 1
fi

cleanup() { :; }
trap cleanup EXIT

# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------
step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, all features, warnings are errors)"
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings

step "tests (unit, integration, doc)"
cargo test --workspace --all-features --locked

# Benchmarks run once each in the test profile (no second, release build of the tree);
# their figures are recorded by scripts/bench.sh, not here.
step "benchmarks compile and run once"
cargo test --workspace --all-features --locked --benches

step "docs (warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps --locked

step "main example runs"
cargo run --locked --all-features --example quickstart

step "all checks passed"
