//! What the queue examples (`queues` on Amazon SQS, `azure_queues` on Azure Queue
//! storage) share: the producer, the ingest into the durable event log, the pipeline
//! into a SQLite warehouse, and a message that keeps failing until the queue moves it
//! to its dead-letter (or poison) queue — all through the `MessageQueue` trait.

use std::sync::Arc;
use std::time::Duration;

use moodbridge::engine::{EventConsumer, EventRouter, Match, Pipeline, QueueIngest, SinkHandler};
use moodbridge::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
use moodbridge::sqlite::SqliteTableSink;
use moodbridge::state::{EventLog, SqliteStateStore, StateStore};
use moodbridge::{Error, Result};

const CASES_PIPELINE: &str = r#"
name = "case-events"
[[streams]]
name = "Case"
write = { mode = "upsert", key = ["Id"] }
validate = [{ rule = "required", field = "Id" }]
"#;

/// Runs the flow on `queue`, whose dead letters land in `dead_letters` after three
/// deliveries; `redrive` moves them back and says how many it moved.
pub async fn run(
    queue: Arc<dyn MessageQueue>,
    dead_letters: Arc<dyn MessageQueue>,
    redrive: impl AsyncFnOnce() -> Result<u64>,
) -> Result<()> {
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
    println!(
        "sent {sent} messages in batches of at most {}",
        queue.features().max_batch
    );

    // 2. Into the durable event log.
    let dir = tempfile::tempdir()
        .map_err(|e| Error::config("cannot make a temporary directory").with_source(e))?;
    let state = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await?);
    let ingest = QueueIngest::new(queue.clone(), state.clone()).wait(Duration::from_secs(1));
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
    // What waits in the dead-letter queue: received, counted, released.
    let waiting = dead_letters
        .receive(
            &ReceiveOptions::new(10)
                .wait(Duration::from_secs(2))
                .visibility(Duration::from_secs(5)),
        )
        .await?;
    for m in &waiting {
        dead_letters.nack(&m.receipt, Duration::ZERO).await?;
    }
    println!(
        "a failing message was delivered {deliveries} times, then moved to {} ({} waiting there)",
        dead_letters.name(),
        waiting.len()
    );
    let back = redrive().await?;
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
        "queue example finished: nothing lost, the duplicate stored once, the bad event dead-lettered"
    );
    Ok(())
}
