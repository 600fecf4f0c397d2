//! A large file to Azure Blob Storage (or Azurite) and back, with a progress bar each way:
//! blocks staged in parallel and committed, ranged parallel download, SHA-256 compared end
//! to end (and an MD5 on every request, checked by the service).
//!
//! ```sh
//! # A real account: its connection string (portal → Access keys), kept out of the shell history:
//! export AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…;EndpointSuffix=core.windows.net'
//! cargo run --features azure --example azure_upload -- --container case-documents --file scan.tif
//! # Azurite on its default port:
//! AZURE_STORAGE_CONNECTION_STRING=UseDevelopmentStorage=true \
//!   cargo run --features azure --example azure_upload -- --create-container --size-mib 256
//! ```
//!
//! Flags (or environment): `--connection-string` (`AZURE_STORAGE_CONNECTION_STRING`),
//! `--container` (`MOODBRIDGE_AZURE_CONTAINER`, default `moodbridge-examples`),
//! `--create-container`, `--file` or `--size-mib` (a generated file, default 64 MiB),
//! `--key`, `--keep`.

#[path = "common/transfer.rs"]
mod transfer;

use moodbridge::azure::auth::ConnectionString;
use moodbridge::azure::blob::AzureBlobStore;
use moodbridge::{Error, Result};
use transfer::{file_to_send, flag, key_for, round_trip, switch};

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let text = flag("--connection-string", "AZURE_STORAGE_CONNECTION_STRING").ok_or_else(|| {
        Error::config("no connection string").with_hint(
            "set AZURE_STORAGE_CONNECTION_STRING (UseDevelopmentStorage=true for Azurite)",
        )
    })?;
    let connection = ConnectionString::parse(&text)?;
    let container = flag("--container", "MOODBRIDGE_AZURE_CONTAINER")
        .unwrap_or_else(|| "moodbridge-examples".to_owned());
    let store = AzureBlobStore::builder(&container)
        .connection_string(&connection)
        .build()?;
    if switch("--create-container") {
        store.create_container().await?;
    }
    let (path, _guard) = file_to_send().await?;
    let key = key_for(&path)?;
    println!(
        "{}/{container}/{key} <- {}",
        connection.blob_endpoint.as_str().trim_end_matches('/'),
        path.display()
    );
    round_trip(&store, &key, &path).await
}
