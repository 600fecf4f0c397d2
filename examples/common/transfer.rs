//! What `s3_upload` and `azure_upload` share: command-line flags, a file to send (given,
//! or generated), and an upload → download round trip through any `ObjectStore` with a
//! progress bar each way and the SHA-256 compared end to end.

use std::path::{Path, PathBuf};
use std::time::Instant;

use futures::TryStreamExt;
use moodbridge::storage::{GetOptions, ObjectStore, PutOptions, TransferProgress};
use moodbridge::{Error, ObjectKey, ObjectStoreExt, Result};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// `--name value` from the command line, else the environment variable `env`.
pub fn flag(name: &str, env: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .or_else(|| std::env::var(env).ok().filter(|v| !v.is_empty()))
}

/// `--name` given on the command line.
pub fn switch(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

/// The file to send: `--file PATH`, or one of `--size-mib N` (default 64) generated in a
/// temporary directory (kept alive by the returned guard).
pub async fn file_to_send() -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(path) = flag("--file", "MOODBRIDGE_UPLOAD_FILE") {
        return Ok((PathBuf::from(path), None));
    }
    let mib: u64 = flag("--size-mib", "MOODBRIDGE_UPLOAD_MIB")
        .map(|v| {
            v.parse()
                .map_err(|_| Error::config(format!("--size-mib {v:?} is not a number")))
        })
        .transpose()?
        .unwrap_or(64);
    let dir = tempfile::tempdir().map_err(|e| Error::internal("no temp dir").with_source(e))?;
    let path = dir.path().join(format!("scan-{mib}MiB.bin"));
    let io = |e: std::io::Error| Error::internal("cannot write the test file").with_source(e);
    let mut file = tokio::fs::File::create(&path).await.map_err(io)?;
    // Not compressible, not all zeros: xorshift bytes.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..mib {
        for word in chunk.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.sync_all().await.map_err(io)?;
    Ok((path, Some(dir)))
}

/// The object key: `--key`, else `examples/<file name>`.
pub fn key_for(path: &Path) -> Result<ObjectKey> {
    let key = flag("--key", "MOODBRIDGE_UPLOAD_KEY").unwrap_or_else(|| {
        format!(
            "examples/{}",
            path.file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("upload.bin")
        )
    });
    ObjectKey::new(key)
}

fn bar(total: u64, what: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "  {msg:<8} [{bar:32}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} {eta:>4}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Uploads `path` to `key`, downloads it back, compares SHA-256; deletes the object
/// unless `--keep` was given.
pub async fn round_trip(store: &dyn ObjectStore, key: &ObjectKey, path: &Path) -> Result<()> {
    let size = tokio::fs::metadata(path)
        .await
        .map_err(|e| Error::config(format!("cannot read {}", path.display())).with_source(e))?
        .len();
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| Error::config(format!("cannot open {}", path.display())).with_source(e))?;

    let up = bar(size, "upload");
    let progress = {
        let up = up.clone();
        move |p: TransferProgress| up.set_position(p.bytes)
    };
    let started = Instant::now();
    let put = store
        .put_reader(
            key,
            file,
            PutOptions::new()
                .size(size)
                .content_type("application/octet-stream")
                .metadata("source", "moodbridge_example")
                .progress(progress),
        )
        .await?;
    up.finish();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "uploaded {key}: {size} bytes in {secs:.2} s ({:.1} MiB/s), sha256 {}",
        size as f64 / 1_048_576.0 / secs,
        hex(&put.sha256)
    );

    let down = bar(size, "download");
    let progress = {
        let down = down.clone();
        move |p: TransferProgress| down.set_position(p.bytes)
    };
    let started = Instant::now();
    let mut body = store
        .get(key, GetOptions::new().progress(progress))
        .await?
        .body;
    let mut hasher = Sha256::new();
    let mut received = 0u64;
    while let Some(chunk) = body
        .try_next()
        .await
        .map_err(|e| Error::unavailable(format!("download of {key} broke off")).with_source(e))?
    {
        received += chunk.len() as u64;
        hasher.update(&chunk);
    }
    down.finish();
    let digest: [u8; 32] = hasher.finalize().into();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "downloaded {received} bytes in {secs:.2} s ({:.1} MiB/s), sha256 {}",
        received as f64 / 1_048_576.0 / secs,
        hex(&digest)
    );
    if received != size || digest != put.sha256 {
        return Err(Error::new(
            moodbridge::ErrorKind::Integrity,
            format!(
                "{key} came back different: {received} bytes, sha256 {} (sent {size}, {})",
                hex(&digest),
                hex(&put.sha256)
            ),
        ));
    }
    println!("round trip verified: same size, same SHA-256");
    if !switch("--keep") {
        store.delete(key).await?;
        println!("deleted {key} (pass --keep to keep it)");
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
