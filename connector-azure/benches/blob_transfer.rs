//! 1 GiB (default) up and down through `AzureBlobStore` at default settings (8 MiB
//! blocks, 4 in flight up; ranges from 4 to 16 in flight down), side by side with the
//! official client's own calls (`upload` of the whole body as one `Put Blob`, `download`
//! as one stream), against the same Azurite
//! in the same run. Each transfer runs in a child process of its own, so its peak RSS
//! (VmHWM) is its own, baseline included.
//!
//! Each client also downloads the other's blob: Azurite serves a blob committed from
//! staged blocks much slower than one written by a single Put Blob, whoever reads it.
//! Phases run interleaved for `MOODBRIDGE_BENCH_ROUNDS` rounds (3; 1 in the smoke run)
//! and the median is printed.
//!
//! Run: `cargo bench -p connector-azure --bench blob_transfer` (`-- 256` for 256 MiB).
//! Without cargo bench's `--bench` flag it makes a 16 MiB smoke run. Results:
//! docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    reason = "bench binary"
)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use azure_core::http::RequestContent;
use azure_storage_blob::models::{BlobClientDownloadOptions, BlockBlobClientUploadOptions};
use futures::TryStreamExt;
use moodbridge_core::storage::{GetOptions, ObjectKey, ObjectStore, ObjectStoreExt, PutOptions};
use moodbridge_core::testing::{pattern_stream, peak_rss_mib};
use tokio::io::AsyncWriteExt;

const PHASES: [(&str, &str); 7] = [
    ("put", "moodbridge put (staged blocks, 8 MiB x 4)"),
    (
        "raw-put",
        "official client upload (whole body in memory, one Put Blob)",
    ),
    (
        "get",
        "moodbridge get (8 MiB ranges, 4 -> 16 in flight, 24 MiB buffer)",
    ),
    (
        "get-stream",
        "moodbridge get (parallel_downloads(false): one stream)",
    ),
    ("raw-get", "official client download (one stream)"),
    (
        "raw-get-blocks",
        "official client download (one stream) of the block-staged blob",
    ),
    (
        "get-stream-single",
        "moodbridge get (one stream) of the single-Put-Blob blob",
    ),
];

async fn phase(name: &str, endpoint: &str, path: &std::path::Path, size: u64) -> u64 {
    let store = connector_azure::blob::AzureBlobStore::builder("bench")
        .endpoint(endpoint)
        .credentials(connector_azure::blob::AzureCredentials::SharedKey(
            support::Azurite::key(),
        ))
        .parallel_downloads(!name.starts_with("get-stream"))
        .build()
        .unwrap();
    let ours = ObjectKey::new("bench/ours.bin").unwrap();
    let raw = store.container_client().blob_client("bench/raw.bin");
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
            let data = tokio::fs::read(path).await.unwrap();
            let options = BlockBlobClientUploadOptions {
                parallel: std::num::NonZero::new(1),
                partition_size: std::num::NonZero::new(data.len().max(1) as u64),
                ..Default::default()
            };
            raw.upload(RequestContent::from(data), Some(options))
                .await
                .unwrap();
            size
        }
        "get" | "get-stream" | "get-stream-single" => {
            let key = if name == "get-stream-single" {
                ObjectKey::new("bench/raw.bin").unwrap()
            } else {
                ours
            };
            let mut body = store.get(&key, GetOptions::new()).await.unwrap().body;
            let mut n = 0u64;
            while let Some(chunk) = body.try_next().await.unwrap() {
                n += chunk.len() as u64;
            }
            n
        }
        "raw-get" | "raw-get-blocks" => {
            let raw = if name == "raw-get-blocks" {
                store.container_client().blob_client("bench/ours.bin")
            } else {
                raw
            };
            let options = BlobClientDownloadOptions {
                parallel: std::num::NonZero::new(1),
                ..Default::default()
            };
            let mut body = raw.download(Some(options)).await.unwrap().body;
            let mut n = 0u64;
            while let Some(chunk) = body.try_next().await.unwrap() {
                n += chunk.len() as u64;
            }
            n
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
        println!("{n} {} {}", start.elapsed().as_secs_f64(), peak_rss_mib());
        return;
    }
    let smoke = !args.iter().any(|a| a == "--bench");
    let mib: u64 = args
        .iter()
        .filter_map(|a| a.parse().ok())
        .next()
        .unwrap_or(if smoke { 16 } else { 1024 });
    let size = mib << 20;
    let azurite = support::Azurite::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object.bin");
    rt.block_on(async {
        azurite.store("bench", 8 << 20).await;
        let mut file = tokio::fs::File::create(&path).await.unwrap();
        let mut body = pattern_stream(size, 11, 1 << 20);
        while let Some(chunk) = body.try_next().await.unwrap() {
            file.write_all(&chunk).await.unwrap();
        }
        file.sync_all().await.unwrap();
    });
    println!(
        "blob_transfer: {mib} MiB object, Azurite 3.35.0 (in memory) at {}; each line a child process",
        azurite.endpoint
    );
    let rounds: usize = std::env::var("MOODBRIDGE_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if smoke { 1 } else { 3 });
    println!("{rounds} rounds, phases interleaved; median throughput (min-max), highest peak RSS");
    let exe = std::env::current_exe().unwrap();
    let mut results: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); PHASES.len()];
    for _ in 0..rounds {
        for (i, (name, _)) in PHASES.iter().enumerate() {
            results[i].push(run_phase(&exe, name, &azurite.endpoint, &path, size));
        }
    }
    for ((_, label), mut runs) in PHASES.iter().zip(results) {
        let bytes = runs[0].0;
        let rss = runs.iter().map(|r| r.2).fold(0.0, f64::max);
        let mut rates: Vec<f64> = runs.drain(..).map(|r| bytes / 1048576.0 / r.1).collect();
        rates.sort_by(f64::total_cmp);
        println!(
            "{label}: {} MiB at {:.1} MiB/s ({:.1}-{:.1}); peak RSS {rss:.1} MiB",
            bytes as u64 >> 20,
            rates[rates.len() / 2],
            rates[0],
            rates[rates.len() - 1],
        );
    }
}

/// One transfer in a child process: (bytes, seconds, peak RSS MiB).
fn run_phase(
    exe: &std::path::Path,
    name: &str,
    endpoint: &str,
    path: &std::path::Path,
    size: u64,
) -> (f64, f64, f64) {
    let out = std::process::Command::new(exe)
        .args([
            "--phase",
            name,
            endpoint,
            path.to_str().unwrap(),
            &size.to_string(),
        ])
        .output()
        .unwrap();
    let fields = moodbridge_core::testing::child_figures(&format!("phase {name}"), out);
    (fields[0], fields[1], fields[2])
}
