//! Bulk API 2.0 benchmarks against the sandbox in its own process, with the system
//! allocator (glibc): see `bulk/mod.rs` for the phases. `bulk_sync_mimalloc` runs the same
//! with mimalloc.
//!
//! Run: `cargo bench -p connector-salesforce --bench bulk_sync`
//! (records: `-- 1000000`; `MALLOC_ARENA_MAX=1` in the environment limits glibc to one
//! arena, see docs/performance.md). Without cargo bench's `--bench` flag it makes a smoke
//! run. Results are in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

mod bulk;
mod common;

fn main() {
    bulk::main("glibc malloc");
}
