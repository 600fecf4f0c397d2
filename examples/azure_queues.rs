//! Events from an Azure Queue storage queue into the pipeline — the flow of the `queues`
//! example (producer, ingest into the durable event log, pipeline into a SQLite
//! warehouse, a message that keeps failing) on Azure:
//!
//! - attributes (`type`, `event-id`) travel in the message text, since Queue storage
//!   has none of its own;
//! - the failing message is moved to `<queue>-poison` on its fourth delivery (Azure
//!   Queue storage has no dead-letter queue: the poison queue is the convention Azure
//!   Functions follows), and redriven back from there.
//!
//! ```sh
//! # Azurite (npx azurite-queue --queueHost 127.0.0.1 --queuePort 10001 --inMemoryPersistence):
//! cargo run --features azure-queue --example azure_queues -- --create
//! # A storage account:
//! AZURE_STORAGE_CONNECTION_STRING='DefaultEndpointsProtocol=https;AccountName=…;AccountKey=…' \
//!   cargo run --features azure-queue --example azure_queues -- --queue case-events
//! ```
//!
//! Flags (or environment): `--connection-string` (`AZURE_STORAGE_CONNECTION_STRING`,
//! default `UseDevelopmentStorage=true`: Azurite on its usual ports), `--queue`
//! (`MOODBRIDGE_AZURE_QUEUE`, default `moodbridge-case-events`), `--create` (create the
//! queue and its poison queue).

#[path = "common/queue_flow.rs"]
mod queue_flow;
#[path = "common/transfer.rs"]
#[allow(
    dead_code,
    reason = "shared by the examples; this one uses its flags only"
)]
mod transfer;

use std::sync::Arc;

use moodbridge::azure::auth::ConnectionString;
use moodbridge::azure::queue::AzureQueue;
use moodbridge::queue::MessageQueue;
use moodbridge::{Error, Result};
use secrecy::SecretString;
use transfer::{flag, switch};

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let connection_string = SecretString::from(
        flag("--connection-string", "AZURE_STORAGE_CONNECTION_STRING")
            .unwrap_or_else(|| "UseDevelopmentStorage=true".to_owned()),
    );
    let connection_string =
        ConnectionString::parse(secrecy::ExposeSecret::expose_secret(&connection_string))?;
    let name = flag("--queue", "MOODBRIDGE_AZURE_QUEUE")
        .unwrap_or_else(|| "moodbridge-case-events".to_owned());
    let builder = AzureQueue::builder(&name)
        .connection_string(&connection_string)
        .poison_after(3);
    let queue = if switch("--create") {
        builder.create().await?
    } else {
        builder.build()?
    };
    let poison = queue
        .poison_queue()
        .cloned()
        .ok_or_else(|| Error::internal("poison_after was set"))?;
    println!(
        "queue {} (moved to {} after {:?} deliveries)",
        queue
            .client()
            .url()
            .as_str()
            .split('?')
            .next()
            .unwrap_or_default(),
        poison.name(),
        queue.features().dead_letter_after,
    );
    let redrive = {
        let queue = queue.clone();
        async move || queue.redrive_poison(10).await
    };
    queue_flow::run(Arc::new(queue), Arc::new(poison), redrive).await
}
