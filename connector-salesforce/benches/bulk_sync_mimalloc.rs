//! `bulk_sync` with mimalloc as the global allocator: what a host that picks a faster
//! allocator than the system's gets. Records are maps allocated by the reading task and
//! freed by the writing one; glibc's malloc pays for that cross-thread traffic.
//!
//! Run: `cargo bench -p connector-salesforce --bench bulk_sync_mimalloc`
//! (records: `-- 1000000`). Results are in docs/performance.md.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "bench binary")]

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bulk;
mod common;

fn main() {
    bulk::main("mimalloc");
}
