//! Events from an Azure Service Bus queue into the pipeline — the flow of the `queues`
//! example (producer, ingest into the durable event log, pipeline into a SQLite
//! warehouse, a message that keeps failing) on Service Bus:
//!
//! - attributes (`type`, `event-id`) are application properties;
//! - the failing message is moved by Service Bus to `<queue>/$DeadLetterQueue` after its
//!   third delivery (the queue's `MaxDeliveryCount`), and redriven back from there.
//!
//! ```sh
//! # The Service Bus sandbox (azure-sandbox), started in this process:
//! cargo run --features azure-servicebus --example servicebus_queues
//! # A namespace whose queue has MaxDeliveryCount 3:
//! AZURE_SERVICEBUS_CONNECTION_STRING='Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=…;SharedAccessKey=…' \
//!   cargo run --features azure-servicebus --example servicebus_queues -- --queue case-events
//! ```
//!
//! Flags (or environment): `--connection-string` (`AZURE_SERVICEBUS_CONNECTION_STRING`;
//! without one, the sandbox is started on a loopback port), `--queue`
//! (`MOODBRIDGE_SERVICEBUS_QUEUE`, default `moodbridge-case-events`). The sandbox's key
//! is `MOODBRIDGE_SERVICEBUS_SANDBOX_KEY` when set.

#[path = "common/queue_flow.rs"]
mod queue_flow;
#[path = "common/transfer.rs"]
#[allow(
    dead_code,
    reason = "shared by the examples; this one uses its flags only"
)]
mod transfer;

use std::sync::Arc;
use std::time::Duration;

use azure_sandbox::{QueueOptions, ServiceBus, ServiceBusConfig};
use moodbridge::Result;
use moodbridge::azure::servicebus::{ServiceBusConnectionString, ServiceBusQueue};
use moodbridge::queue::MessageQueue;
use secrecy::{ExposeSecret, SecretString};
use transfer::flag;

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let name = flag("--queue", "MOODBRIDGE_SERVICEBUS_QUEUE")
        .unwrap_or_else(|| "moodbridge-case-events".to_owned());
    let (connection_string, sandbox) =
        match flag("--connection-string", "AZURE_SERVICEBUS_CONNECTION_STRING") {
            Some(text) => (SecretString::from(text), None),
            None => {
                let mut config = ServiceBusConfig::default();
                if let Ok(key) = std::env::var("MOODBRIDGE_SERVICEBUS_SANDBOX_KEY") {
                    config.key = key;
                }
                let bus = ServiceBus::start(config)
                    .await
                    .map_err(|e| moodbridge::Error::internal(format!("the sandbox: {e}")))?;
                bus.create_queue(
                    &name,
                    QueueOptions {
                        max_delivery_count: 3,
                        lock_duration: Duration::from_secs(30),
                        ..QueueOptions::default()
                    },
                );
                println!("the Service Bus sandbox on {}", bus.endpoint());
                (SecretString::from(bus.connection_string()), Some(bus))
            }
        };
    let queue = ServiceBusQueue::builder(&name)
        .connection_string(ServiceBusConnectionString::parse(
            connection_string.expose_secret(),
        )?)
        .max_delivery_count(3)
        .build()?;
    let dead_letters = queue.dead_letter_queue()?;
    println!(
        "queue {name} (moved to {} after {:?} deliveries)",
        dead_letters.name(),
        queue.features().dead_letter_after,
    );
    let redrive = {
        let queue = queue.clone();
        async move || queue.redrive_dead_letters(10).await
    };
    let outcome = queue_flow::run(Arc::new(queue.clone()), Arc::new(dead_letters), redrive).await;
    queue.close().await;
    if let Some(bus) = sandbox {
        bus.stop().await;
    }
    outcome
}
