//! A large file to S3 (or any S3-compatible store) and back, with a progress bar each
//! way: parallel multipart upload, ranged parallel download, SHA-256 compared end to end.
//!
//! ```sh
//! # A real bucket, credentials from the AWS chain (env, profile, SSO, instance role):
//! cargo run --features aws --example s3_upload -- --bucket my-bucket --region eu-west-1 --file scan.tif
//! # An emulator (moto, MinIO …): endpoint, path-style addressing, create the bucket:
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   cargo run --features aws --example s3_upload -- --endpoint http://127.0.0.1:5000 --path-style \
//!   --create-bucket --bucket demo --size-mib 256
//! ```
//!
//! Flags (or environment): `--bucket` (`MOODBRIDGE_S3_BUCKET`), `--endpoint`
//! (`AWS_ENDPOINT_URL`), `--region` (`AWS_REGION`, default us-east-1), `--path-style`,
//! `--create-bucket`, `--file` or `--size-mib` (a generated file, default 64 MiB),
//! `--key` (default `examples/<file name>`), `--keep` (leave the object).

#[path = "common/transfer.rs"]
mod transfer;

use moodbridge::aws::s3::S3ObjectStore;
use moodbridge::{Error, Result};
use transfer::{file_to_send, flag, key_for, round_trip, switch};

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let bucket = flag("--bucket", "MOODBRIDGE_S3_BUCKET").ok_or_else(|| {
        Error::config("no bucket").with_hint("pass --bucket NAME or set MOODBRIDGE_S3_BUCKET")
    })?;
    let mut builder = S3ObjectStore::builder(&bucket)
        .region(flag("--region", "AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned()))
        .path_style(switch("--path-style"));
    if let Some(endpoint) = flag("--endpoint", "AWS_ENDPOINT_URL") {
        builder = builder.endpoint(endpoint);
    }
    let store = builder.build().await?;
    if switch("--create-bucket") {
        store.create_bucket().await?;
    }
    let (path, _guard) = file_to_send().await?;
    let key = key_for(&path)?;
    println!("s3://{bucket}/{key} <- {}", path.display());
    round_trip(&store, &key, &path).await
}
