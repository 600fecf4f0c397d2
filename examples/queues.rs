//! Events from an Amazon SQS queue into the pipeline:
//!
//! 1. A producer sends case events to a queue in batches, one of them twice (the same
//!    `event-id`), and one that is not JSON.
//! 2. `QueueIngest` moves the messages into the durable event log, acknowledging each
//!    only once it is committed. The duplicate is stored once.
//! 3. A consumer routes the events to a SQLite warehouse through a pipeline. The event
//!    that is not JSON is dead-lettered with the reason.
//! 4. On the queue side, a message that keeps failing goes to the queue's dead-letter
//!    queue after three deliveries, and is redriven back.
//!
//! The same flow runs on Azure Queue storage in the `azure_queues` example.
//!
//! ```sh
//! # A local emulator (moto), queues created:
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   cargo run --features aws-sqs --example queues -- --endpoint http://127.0.0.1:5000 --create
//! # A real queue (credentials from the AWS chain):
//! cargo run --features aws-sqs --example queues -- --queue case-events --region eu-west-1
//! ```
//!
//! Flags (or environment): `--queue` (`MOODBRIDGE_SQS_QUEUE`, default
//! `moodbridge-case-events`; its dead-letter queue is `<queue>-dlq`), `--endpoint`
//! (`AWS_ENDPOINT_URL`), `--region` (`AWS_REGION`, default us-east-1), `--create`
//! (create both queues).

#[path = "common/queue_flow.rs"]
mod queue_flow;
#[path = "common/transfer.rs"]
#[allow(
    dead_code,
    reason = "shared by the examples; this one uses its flags only"
)]
mod transfer;

use std::sync::Arc;

use moodbridge::Result;
use moodbridge::aws::sqs::SqsQueue;
use moodbridge::queue::MessageQueue;
use transfer::{flag, switch};

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let name = flag("--queue", "MOODBRIDGE_SQS_QUEUE")
        .unwrap_or_else(|| "moodbridge-case-events".to_owned());
    let builder = |name: &str| {
        let mut builder = SqsQueue::builder(name)
            .region(flag("--region", "AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned()));
        if let Some(endpoint) = flag("--endpoint", "AWS_ENDPOINT_URL") {
            builder = builder.endpoint(endpoint);
        }
        builder
    };
    let dlq_name = format!("{name}-dlq");
    let (queue, dead_letters) = if switch("--create") {
        let dead_letters = builder(&dlq_name).create(None).await?;
        let queue = builder(&name).create(Some((&dead_letters, 3))).await?;
        (queue, dead_letters)
    } else {
        (
            builder(&name).build().await?,
            builder(&dlq_name).build().await?,
        )
    };
    println!(
        "queue {} (dead letters after {:?} deliveries, to {})",
        queue.url(),
        queue.features().dead_letter_after,
        dead_letters.name()
    );
    let redrive = {
        let (queue, dead_letters) = (queue.clone(), dead_letters.clone());
        async move || queue.redrive_from(&dead_letters, 10).await
    };
    queue_flow::run(Arc::new(queue), Arc::new(dead_letters), redrive).await
}
