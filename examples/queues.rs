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

use std::sync::Arc;
use std::time::Duration;

use moodbridge::aws::sqs::SqsQueue;
use moodbridge::engine::{EventConsumer, EventRouter, Match, Pipeline, QueueIngest, SinkHandler};
use moodbridge::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge::sqlite::SqliteTableSink;
use moodbridge::state::{EventLog, SqliteStateStore, StateStore};
use moodbridge::{Error, Result};

/// `--name value`, else environment variable `env`.
fn flag(name: &str, env: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    let given = args
        .iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1));
    given.cloned().or_else(|| std::env::var(env).ok())
}

fn switch(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}

const CASES_PIPELINE: &str = r#"
name = "case-events"
[[streams]]
name = "Case"
write = { mode = "upsert", key = ["Id"] }
validate = [{ rule = "required", field = "Id" }]
"#;

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

    // 1. The producer.
    let mut messages: Vec<OutgoingMessage> = (0..24)
        .map(|i| {
            let id = format!("500A{i:02}");
            let status = if i % 3 == 0 { "Closed" } else { "Working" };
            OutgoingMessage::new(serde_json::json!({"Id": id, "Status": status}).to_string())
                .attribute("type", "case.updated")
                .attribute("event-id", format!("evt-{i}"))
                .attribute("partition", id)
        })
        .collect();
    messages.push(messages[5].clone()); // sent twice
    messages.push(
        OutgoingMessage::new("<Case><Id>500B</Id></Case>")
            .attribute("type", "case.updated")
            .attribute("event-id", "evt-xml"),
    );
    let mut sent = 0;
    for outcome in queue.send_batch(&messages).await? {
        outcome?;
        sent += 1;
    }
    println!("sent {sent} messages in batches of at most 10");

    // 2. Into the durable event log.
    let dir = tempfile::tempdir()
        .map_err(|e| Error::config("cannot make a temporary directory").with_source(e))?;
    let state = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await?);
    let ingest =
        QueueIngest::new(Arc::new(queue.clone()), state.clone()).wait(Duration::from_secs(1));
    let mut moved = 0;
    while moved < sent {
        let n = ingest.run_once().await?;
        if n == 0 {
            return Err(Error::internal(format!(
                "the queue ran dry after {moved} of {sent} messages"
            )));
        }
        moved += n;
    }
    let stored = state.last_sequence().await?;
    println!("ingested {moved} messages: {stored} events in the log (the duplicate stored once)");

    // 3. Routed to the warehouse.
    let warehouse = Arc::new(SqliteTableSink::open(&dir.path().join("warehouse.db")).await?);
    let router = EventRouter::new().route(
        Match::event_type("case.*"),
        SinkHandler::new(
            Arc::new(Pipeline::from_toml(CASES_PIPELINE)?),
            "Case",
            warehouse.clone(),
        )?,
    );
    let consumer = EventConsumer::new("cases", state.clone(), state.clone());
    let report = consumer.run_once(&router).await?;
    println!(
        "consumer cases: {} events handled, {} dead-lettered",
        report.handled, report.dead_lettered
    );
    for letter in state.dead_letters("cases", None, 10).await? {
        println!("  dead letter {}: {}", letter.record_key, letter.reason);
    }
    let rows = warehouse.count("Case").await?;
    println!("warehouse: {rows} cases");

    // 4. A message that keeps failing, on the queue side.
    queue
        .send(&OutgoingMessage::new("always fails").attribute("type", "case.broken"))
        .await?;
    let mut deliveries = 0;
    loop {
        let got = queue
            .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(2)))
            .await?;
        let Some(m) = got.first() else { break };
        deliveries += 1;
        queue.nack(&m.receipt, Duration::ZERO).await?;
    }
    println!(
        "a failing message was delivered {deliveries} times, then moved to {} ({} waiting there)",
        dead_letters.name(),
        dead_letters.approximate_depth().await?
    );
    let back = queue.redrive_from(&dead_letters, 10).await?;
    let again = queue
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(2)))
        .await?;
    println!(
        "redriven back: {back} message(s); received again: {:?}",
        again.first().map(|m| m.body.as_str())
    );
    if let Some(m) = again.first() {
        queue.ack(&m.receipt).await?;
    }

    if stored != 25 || rows != 24 || report.dead_lettered != 1 || deliveries != 3 || back != 1 {
        return Err(Error::internal(format!(
            "expected 25 events, 24 cases, 1 dead letter, 3 deliveries and 1 redriven; got {stored}, {rows}, {}, {deliveries}, {back}",
            report.dead_lettered
        )));
    }
    println!(
        "queues example finished: nothing lost, the duplicate stored once, the bad event dead-lettered"
    );
    Ok(())
}
