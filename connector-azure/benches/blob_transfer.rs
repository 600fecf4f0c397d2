//! 1 GiB (default) up and down through `AzureBlobStore` at default settings (8 MiB
//! blocks, 4 in flight), side by side with the official client's own calls (`upload` of
//! the whole body as one `Put Blob`, `download` as one stream), against the same Azurite
//! in the same run. Each transfer runs in a child process of its own, so its peak RSS
//! (VmHWM) is its own, baseline included.
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
use moodbridge_core::testing::pattern_stream;
use tokio::io::AsyncWriteExt;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

const PHASES: [(&str, &str); 5] = [
    ("put", "moodbridge put (staged blocks, 8 MiB x 4)"),
    (
        "raw-put",
        "official client upload (whole body in memory, one Put Blob)",
    ),
    ("get", "moodbridge get (ranges, 8 MiB x 4)"),
    (
        "get-stream",
        "moodbridge get (parallel_downloads(false): one stream)",
    ),
    ("raw-get", "official client download (one stream)"),
];

async fn phase(name: &str, endpoint: &str, path: &std::path::Path, size: u64) -> u64 {
    let store = connector_azure::blob::AzureBlobStore::builder("bench")
        .endpoint(endpoint)
        .credentials(connector_azure::blob::AzureCredentials::SharedKey(
            support::Azurite::key(),
        ))
        .parallel_downloads(name != "get-stream")
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
        "get" | "get-stream" => {
            let mut body = store.get(&ours, GetOptions::new()).await.unwrap().body;
            let mut n = 0u64;
            while let Some(chunk) = body.try_next().await.unwrap() {
                n += chunk.len() as u64;
            }
            n
        }
        "raw-get" => {
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
    let exe = std::env::current_exe().unwrap();
    for (name, label) in PHASES {
        let out = std::process::Command::new(&exe)
            .args([
                "--phase",
                name,
                &azurite.endpoint,
                path.to_str().unwrap(),
                &size.to_string(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "phase {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let fields: Vec<f64> = text
            .split_whitespace()
            .map(|f| f.parse().unwrap())
            .collect();
        let (bytes, secs, rss) = (fields[0], fields[1], fields[2]);
        println!(
            "{label}: {} MiB in {secs:.2} s = {:.1} MiB/s; peak RSS {rss:.1} MiB",
            bytes as u64 >> 20,
            bytes / 1048576.0 / secs
        );
    }
}
