//! 1 GiB (default) up and down through `S3ObjectStore` at default settings (8 MiB parts,
//! 4 in flight), side by side with a single-stream `put_object` / `get_object` of the raw
//! SDK, against the same moto server in the same run. Each transfer runs in a child
//! process of its own, so its peak RSS (VmHWM) is its own, baseline included.
//!
//! Run: `cargo bench -p connector-aws --bench s3_transfer` (`-- 256` for 256 MiB). Without
//! cargo bench's `--bench` flag it makes a 16 MiB smoke run. Results: docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use aws_sdk_s3::primitives::ByteStream as SdkBody;
use bytes::Buf;
use futures::TryStreamExt;
use moodbridge_core::storage::{GetOptions, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions};
use moodbridge_core::testing::{pattern_stream, peak_rss_mib};
use tokio::io::AsyncWriteExt;

const PHASES: [(&str, &str); 6] = [
    ("put", "moodbridge put (multipart, 8 MiB x 4)"),
    ("raw-put", "raw SDK put_object (single stream)"),
    (
        "get",
        "moodbridge get (8 MiB ranges, 4 -> 16 in flight, 24 MiB buffer)",
    ),
    (
        "get-stream",
        "moodbridge get (parallel_downloads(false): one stream)",
    ),
    ("raw-get", "raw SDK get_object (single stream)"),
    ("raw-range", "raw SDK get_object, one 8 MiB range"),
];

/// One transfer, in this (child) process.
async fn phase(name: &str, endpoint: &str, path: &std::path::Path, size: u64) -> u64 {
    let store = support::builder_at(endpoint, "bench")
        .parallel_downloads(name != "get-stream")
        .build()
        .await
        .unwrap();
    let client = store.client().clone();
    let ours = ObjectKey::new("bench/ours.bin").unwrap();
    let count = |mut body: moodbridge_core::storage::ByteStream| async move {
        let mut n = 0u64;
        while let Some(chunk) = body.try_next().await.unwrap() {
            n += chunk.len() as u64;
        }
        n
    };
    match name {
        "put" => {
            let file = tokio::fs::File::open(path).await.unwrap();
            store
                .put_reader(&ours, file, PutOptions::new().size(size))
                .await
                .unwrap()
                .size
        }
        "raw-put" => {
            let body = SdkBody::from_path(path).await.unwrap();
            client
                .put_object()
                .bucket("bench")
                .key("bench/raw.bin")
                .body(body)
                .send()
                .await
                .unwrap();
            size
        }
        "get" | "get-stream" => {
            count(store.get(&ours, GetOptions::new()).await.unwrap().body).await
        }
        "raw-get" => {
            let mut out = client
                .get_object()
                .bucket("bench")
                .key("bench/raw.bin")
                .send()
                .await
                .unwrap();
            let mut n = 0u64;
            while let Some(chunk) = out.body.try_next().await.unwrap() {
                n += chunk.len() as u64;
            }
            n
        }
        "raw-range" => {
            let out = client
                .get_object()
                .bucket("bench")
                .key("bench/raw.bin")
                .range("bytes=0-8388607")
                .send()
                .await
                .unwrap();
            out.body.collect().await.unwrap().remaining() as u64
        }
        other => panic!("unknown phase {other}"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Some(i) = args.iter().position(|a| a == "--phase") {
        let (name, endpoint, path, size) = (
            &args[i + 1],
            &args[i + 2],
            &args[i + 3],
            args[i + 4].parse().unwrap(),
        );
        let start = Instant::now();
        let n = rt.block_on(phase(name, endpoint, std::path::Path::new(path), size));
        let secs = start.elapsed().as_secs_f64();
        println!("{n} {secs} {}", peak_rss_mib());
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let mib: u64 = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(if smoke { 16 } else { 1024 });
    let size = mib << 20;
    let moto = support::Moto::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object.bin");
    rt.block_on(async {
        support::builder_at(&moto.endpoint, "bench")
            .build()
            .await
            .unwrap()
            .create_bucket()
            .await
            .unwrap();
        // The same bytes for every transfer: a file on disk.
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        let mut body = pattern_stream(size, 11, 1 << 20);
        while let Some(chunk) = body.try_next().await.unwrap() {
            file.write_all(&chunk).await.unwrap();
        }
        file.sync_all().await.unwrap();
    });
    println!(
        "s3_transfer: {mib} MiB object, moto 5.2.5 at {}; each line a child process",
        moto.endpoint
    );
    let exe = std::env::current_exe().unwrap();
    for (name, label) in PHASES {
        let out = std::process::Command::new(&exe)
            .args([
                "--phase",
                name,
                &moto.endpoint,
                path.to_str().unwrap(),
                &size.to_string(),
            ])
            .output()
            .unwrap();
        let fields = moodbridge_core::testing::child_figures(&format!("phase {name}"), out);
        let (bytes, secs, rss) = (fields[0], fields[1], fields[2]);
        println!(
            "{label}: {} MiB in {secs:.2} s = {:.1} MiB/s; peak RSS {rss:.1} MiB",
            bytes as u64 >> 20,
            bytes / 1048576.0 / secs
        );
    }
}
