//! A worker fed by a topic, from a config file: case events published to an Amazon SNS
//! topic fan out to an SQS queue through a filter policy, and a `QueueWorker` handles
//! them:
//!
//! 1. The topic (`sns`) and the queue (`sqs`, with a dead-letter queue after three
//!    deliveries) are integrations of a host config, built by the registry and checked
//!    with their health checks.
//! 2. The queue subscribes to the topic with a filter: only `case.updated` and
//!    `case.closed` events reach it (`case.viewed` does not).
//! 3. A publisher sends 20 events, one of them a message no handler can process.
//! 4. The worker handles them, several at once, keeping each hidden while its handler
//!    runs; the bad one fails, comes back with a growing backoff, and after its third
//!    delivery the queue moves it to the dead-letter queue.
//!
//! ```sh
//! # A local emulator (moto), topic and queues created:
//! AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test \
//!   cargo run --features aws-sqs,aws-sns --example queue_worker -- --endpoint http://127.0.0.1:5000 --create
//! ```
//!
//! Flags (or environment): `--endpoint` (`AWS_ENDPOINT_URL`), `--region` (`AWS_REGION`,
//! default us-east-1), `--create` (create the topic and the queues).

#[path = "common/transfer.rs"]
#[allow(
    dead_code,
    reason = "shared by the examples; this one uses its flags only"
)]
mod transfer;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moodbridge::aws::sns::{SnsTopic, Subscription};
use moodbridge::aws::sqs::SqsQueue;
use moodbridge::queue::{
    MessageQueue, OutgoingMessage, QueueWorker, ReceiveOptions, ReceivedMessage,
};
use moodbridge::{Error, HealthStatus, Result, SdkConfig};
use transfer::{flag, switch};

const TOPIC: &str = "moodbridge-case-events";
const QUEUE: &str = "moodbridge-case-work";
const DEAD_LETTERS: &str = "moodbridge-case-work-dlq";

#[tokio::main]
async fn main() -> Result<()> {
    moodbridge::observe::logging::init();
    let region = flag("--region", "AWS_REGION").unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = flag("--endpoint", "AWS_ENDPOINT_URL");
    let with = |mut q: moodbridge::aws::sqs::SqsBuilder| {
        q = q.region(&region);
        if let Some(e) = &endpoint {
            q = q.endpoint(e);
        }
        q
    };
    let mut topic = SnsTopic::builder(TOPIC).region(&region);
    if let Some(e) = &endpoint {
        topic = topic.endpoint(e);
    }
    let topic = if switch("--create") {
        let dlq = with(SqsQueue::builder(DEAD_LETTERS)).create(None).await?;
        let queue = with(SqsQueue::builder(QUEUE))
            .create(Some((&dlq, 3)))
            .await?;
        let topic = topic.create().await?;
        queue.allow_topic(topic.arn()).await?;
        let arn = queue
            .arn()
            .ok_or_else(|| Error::internal("SQS gave no queue ARN"))?;
        topic
            .subscribe_queue(
                arn,
                &Subscription::raw()
                    .filter(serde_json::json!({"type": ["case.updated", "case.closed"]})),
            )
            .await?;
        topic
    } else {
        topic.build().await?
    };

    // 1. The host config: both integrations built by the registry, then checked.
    let endpoint_line = endpoint
        .as_deref()
        .map(|e| format!("endpoint = \"{e}\""))
        .unwrap_or_default();
    let config = SdkConfig::from_toml(&format!(
        r#"
        [[integration]]
        id = "sns:case-events"
        kind = "sns"
        [integration.settings]
        topic = "{TOPIC}"
        region = "{region}"
        {endpoint_line}

        [[integration]]
        id = "sqs:case-work"
        kind = "sqs"
        [integration.settings]
        queue = "{QUEUE}"
        region = "{region}"
        {endpoint_line}
        "#
    ))?;
    let built = moodbridge::registry().build_all(&config, None).await?;
    for id in ["sns:case-events", "sqs:case-work"] {
        let integration = &built
            .get(id)
            .ok_or_else(|| Error::internal(format!("{id} was not built")))?
            .integration;
        let health = integration.health_check().await;
        println!("{id}: {:?} ({})", health.status, health.detail);
        if health.status != HealthStatus::Up {
            return Err(Error::internal(format!("{id} is not healthy")));
        }
    }
    let queue = built.get_as::<dyn MessageQueue>("sqs:case-work")?;
    println!(
        "queue {} moves a message to its dead-letter queue after {:?} deliveries",
        queue.name(),
        queue.features().dead_letter_after
    );

    // 2–3. Publish: 20 events for the worker, 1 it never sees (filtered out), 1 bad.
    let mut events: Vec<OutgoingMessage> = (0..20)
        .map(|i| {
            let kind = if i % 5 == 0 {
                "case.closed"
            } else {
                "case.updated"
            };
            OutgoingMessage::new(serde_json::json!({"Id": format!("500A{i:02}")}).to_string())
                .attribute("type", kind)
        })
        .collect();
    events.push(OutgoingMessage::new(r#"{"Id":"500V"}"#).attribute("type", "case.viewed"));
    events[7] = OutgoingMessage::new("not json").attribute("type", "case.updated");
    for outcome in topic.publish_batch(&events).await? {
        outcome?;
    }
    println!("published {} events to {TOPIC}", events.len());

    // 4. The worker.
    let worker = QueueWorker::new(queue.clone())
        .wait(Duration::from_secs(1))
        .visibility(Duration::from_secs(5))
        .concurrency(8)
        .backoff(Duration::from_millis(200), Duration::from_secs(2));
    let failures = Arc::new(AtomicU64::new(0));
    let seen_failures = failures.clone();
    let handler = move |m: ReceivedMessage| {
        let failures = seen_failures.clone();
        async move {
            let case: serde_json::Value = serde_json::from_str(&m.body).map_err(|e| {
                failures.fetch_add(1, Ordering::SeqCst);
                Error::invalid_input(format!("message {} is not JSON: {e}", m.id))
            })?;
            tracing::debug!(case = %case["Id"], kind = ?m.attributes.get("type"), "handled");
            Ok(())
        }
    };
    let mut handled = 0;
    let mut quiet = 0;
    while quiet < 6 {
        let report = worker.run_once(&handler).await?;
        handled += report.handled;
        quiet = if report.handled + report.failed == 0 {
            quiet + 1
        } else {
            0
        };
    }
    let dead = with(SqsQueue::builder(DEAD_LETTERS)).build().await?;
    let dead_letters = dead
        .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(2)))
        .await?;
    println!(
        "worker: {handled} handled, {} failed deliveries; in {DEAD_LETTERS}: {:?}",
        failures.load(Ordering::SeqCst),
        dead_letters
            .iter()
            .map(|m| m.body.as_str())
            .collect::<Vec<_>>()
    );
    for m in &dead_letters {
        dead.ack(&m.receipt).await?;
    }
    if handled != 19 || failures.load(Ordering::SeqCst) != 3 || dead_letters.len() != 1 {
        return Err(Error::internal(format!(
            "expected 19 handled, 3 failed deliveries and 1 dead letter; got {handled}, {}, {}",
            failures.load(Ordering::SeqCst),
            dead_letters.len()
        )));
    }
    println!(
        "queue worker example finished: the filtered event never arrived, the bad one was dead-lettered after 3 deliveries"
    );
    Ok(())
}
