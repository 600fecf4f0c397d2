//! `sync_throughput` with mimalloc as the global allocator: what a host that picks a
//! faster allocator than the system's gets. The engine allocates a map per record, and
//! the reading task allocates what the writing task frees; glibc's malloc pays for that
//! cross-thread traffic.
//!
//! Run: `cargo bench -p moodbridge-core --features testing --bench sync_throughput_mimalloc`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod sync_common;

fn main() {
    sync_common::main();
}
