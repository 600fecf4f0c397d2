//! The memory a ranged download holds, measured by a counting allocator (peakmem-alloc): every byte on
//! the heap, the download's blocks and the server's chunks included. One test per binary,
//! so no other test's allocations are counted.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::alloc::System;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use moodbridge_core::raw::{DownloadPlan, ranged_download};
use moodbridge_core::storage::byte_stream;
use peakmem_alloc::{INSTRUMENTED_SYSTEM, PeakMemAlloc, PeakMemAllocTrait};

#[global_allocator]
static GLOBAL: &PeakMemAlloc<System> = &INSTRUMENTED_SYSTEM;

const CHUNK: usize = 64 << 10;
const READ_BUFFER: usize = 512 << 10;

/// Peak heap bytes above the starting level while a slow reader downloads 64 MiB. The fake connection behaves like an HTTP client's: each chunk is a
/// slice of a 512 KiB read buffer, which stays allocated while any slice of it lives.
async fn peak_above_start(plan: DownloadPlan) -> usize {
    let size = 64u64 << 20;
    GLOBAL.reset_peak_memory();
    let body = ranged_download(0, size, plan, move |a, b| async move {
        let chunks = futures::stream::iter((a..b).step_by(READ_BUFFER)).flat_map(move |from| {
            let to = (from + READ_BUFFER as u64).min(b);
            // One read buffer, handed out as slices of it.
            let buffer = Bytes::from(vec![(from % 251) as u8; (to - from) as usize]);
            futures::stream::iter(
                (0..buffer.len())
                    .step_by(CHUNK)
                    .map(move |i| Ok(buffer.slice(i..(i + CHUNK).min(buffer.len())))),
            )
        });
        Ok(byte_stream(chunks))
    });
    let mut body = body;
    let mut n = 0u64;
    while let Some(chunk) = body.try_next().await.unwrap() {
        n += chunk.len() as u64;
        drop(chunk);
        // A reader slower than the network: the ranges ahead fill the buffer.
        tokio::time::sleep(std::time::Duration::from_micros(200)).await;
    }
    assert_eq!(n, size);
    drop(body);
    GLOBAL.get_peak_memory()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffer_bounds_what_a_download_holds() {
    let max = 8;
    let plan = DownloadPlan::new(4 << 20)
        .max_concurrency(max)
        .initial_concurrency(max);
    let buffer = 4usize << 20;
    let bounded = peak_above_start(plan.clone().buffer(buffer as u64)).await;
    // The blocks (the buffer), one pinned read buffer per range in flight and the one
    // being read, and 1 MiB for tasks, channels and the runtime.
    let limit = buffer + (max + 1) * READ_BUFFER + (1 << 20);
    assert!(
        bounded <= limit,
        "the download held {bounded} bytes at its peak, more than {limit}"
    );
    // With room for everything the same download holds far more: the measure sees it.
    let roomy = peak_above_start(plan.buffer(1 << 30)).await;
    assert!(
        roomy > limit,
        "the download without a bound held only {roomy} bytes"
    );
    eprintln!("peak heap above start: {bounded} bytes bounded, {roomy} bytes unbounded");
}
