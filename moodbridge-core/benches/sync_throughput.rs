//! Sync throughput with the system allocator; see `sync_common` for what it measures.
//!
//! Run: `cargo bench -p moodbridge-core --features testing --bench sync_throughput` (part of
//! `./scripts/bench.sh`). Results are recorded in docs/performance.md.

mod sync_common;

fn main() {
    sync_common::main();
}
