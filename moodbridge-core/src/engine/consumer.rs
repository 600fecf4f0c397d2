//! Event consumers: read the [`EventLog`] in order from a committed position, hand each
//! event to a handler (retried through a [`Policy`]), dead-letter what keeps failing,
//! and commit the position as they go — so a restarted consumer resumes where it was,
//! and an operator can replay one consumer without touching the others.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::record::Record;
use crate::resilience::{Operation, Policy, RetryConfig};
use crate::state::{EventLog, FailureStage, NewDeadLetter, StateStore, StoredEvent};

/// The cursor-store partition a consumer's position is kept under.
pub const EVENTS_PARTITION: &str = "event-log";

/// Gauge: events in the log a consumer has not handled yet, by `consumer`.
pub const EVENTS_LAG: &str = "moodbridge_events_lag";
/// Counter: events handled by a consumer, by `consumer` and `outcome` (`handled`,
/// `dead_lettered`, `filtered`).
pub const EVENTS_HANDLED: &str = "moodbridge_events_handled_total";
/// Histogram, seconds: from an event's receipt to the end of its handling, by
/// `consumer`.
pub const EVENTS_LATENCY: &str = "moodbridge_event_latency_seconds";

/// What a consumer does with each event.
///
/// An error of a temporary kind is retried by the consumer's policy; an error that
/// stays (or a permanent one) dead-letters the event with the error as the reason, and
/// the consumer goes on. A handler should be idempotent: delivery is at least once (an
/// event handled just before a crash is handled again after it).
#[async_trait]
pub trait EventHandler: Send + Sync {
    /// Handle one event.
    async fn handle(&self, event: &StoredEvent) -> Result<()>;
}

#[async_trait]
impl<F, Fut> EventHandler for F
where
    F: Fn(StoredEvent) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    async fn handle(&self, event: &StoredEvent) -> Result<()> {
        self(event.clone()).await
    }
}

/// What one pass of a consumer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumeReport {
    /// Events handled.
    pub handled: u64,
    /// Events dead-lettered after their retries.
    pub dead_lettered: u64,
    /// Events passed over by the consumer's filter.
    pub filtered: u64,
    /// The committed position after the pass.
    pub position: i64,
}

/// How far behind a consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Events after its position.
    pub events: i64,
    /// How long ago the oldest of them was received (`None` when caught up).
    pub oldest: Option<Duration>,
}

/// One named consumer of the [`EventLog`]: it reads the log in order from its committed
/// position, hands each event to a handler (retried through a [`Policy`]), dead-letters
/// what keeps failing (stage [`FailureStage::Handle`], under the consumer's name), and
/// commits its position after each page — so a restarted consumer resumes where it was
/// (at-least-once: make handlers idempotent), and an operator can replay one consumer
/// ([`replay_from`](Self::replay_from), [`replay_since`](Self::replay_since)) without
/// touching the others. Its position is a cursor ([`EVENTS_PARTITION`]) in the state
/// store.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use moodbridge_core::engine::EventConsumer;
/// use moodbridge_core::state::{EventLog, NewEvent, SqliteStateStore, StoredEvent};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Arc::new(SqliteStateStore::open(&dir.path().join("s.db")).await.unwrap());
/// store.append_events(&[NewEvent::new("apex", "1", "case.updated", "{}")]).await.unwrap();
/// let consumer = EventConsumer::new("case-updates", store.clone(), store.clone());
/// let report = consumer
///     .run_once(&|event: StoredEvent| async move {
///         assert_eq!(event.event.event_type, "case.updated");
///         Ok(())
///     })
///     .await
///     .unwrap();
/// assert_eq!((report.handled, report.position), (1, 1));
/// # });
/// ```
#[derive(Clone)]
pub struct EventConsumer {
    name: String,
    log: Arc<dyn EventLog>,
    state: Arc<dyn StateStore>,
    policy: Policy,
    page: u32,
    filter: Option<super::FilterPolicy>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("name", &self.name)
            .field("page", &self.page)
            .finish_non_exhaustive()
    }
}

impl EventConsumer {
    /// Consumer `name` of `log`, keeping its position and dead letters in `state`;
    /// handler errors retried with the default [`RetryConfig`], 500 events a page.
    pub fn new(
        name: impl Into<String>,
        log: Arc<dyn EventLog>,
        state: Arc<dyn StateStore>,
    ) -> Self {
        let name = name.into();
        EventConsumer {
            policy: Policy::builder(format!("events.{name}"))
                .retry(RetryConfig::default())
                .build(),
            name,
            log,
            state,
            page: 500,
            filter: None,
        }
    }

    /// Hand over only the events whose JSON body matches `filter` (Amazon SNS's filter
    /// policy syntax); the others are passed over (counted, `filtered`), as is a body
    /// that is not JSON.
    ///
    /// ```
    /// use moodbridge_core::engine::FilterPolicy;
    /// let closed = FilterPolicy::parse(&serde_json::json!({"type": ["case.closed"]})).unwrap();
    /// # let _ = closed;
    /// ```
    pub fn filter(mut self, filter: super::FilterPolicy) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Retry handler errors through `policy` instead.
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Read `events` a page (at least 1); the position is committed after each page.
    pub fn page(mut self, events: u32) -> Self {
        self.page = events.max(1);
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The committed position: the last sequence handled (0 before the first).
    pub async fn position(&self) -> Result<i64> {
        match self.state.cursor(&self.name, EVENTS_PARTITION).await? {
            None => Ok(0),
            Some(c) => c.position.parse().map_err(|_| {
                Error::new(
                    ErrorKind::Integrity,
                    format!(
                        "consumer {}'s position {:?} is not a sequence number",
                        self.name, c.position
                    ),
                )
                .with_hint("reset it with replay_from")
            }),
        }
    }

    /// Handle every event after the committed position, in order, committing the
    /// position after each page; returns when the log has nothing more.
    pub async fn run_once(&self, handler: &dyn EventHandler) -> Result<ConsumeReport> {
        let mut report = ConsumeReport {
            position: self.position().await?,
            ..ConsumeReport::default()
        };
        loop {
            let events = self.log.events_after(report.position, self.page).await?;
            let Some(last) = events.last().map(|e| e.sequence) else {
                break;
            };
            for event in &events {
                self.handle_one(handler, event, &mut report).await?;
            }
            self.state
                .commit_cursor(&self.name, EVENTS_PARTITION, &last.to_string())
                .await?;
            report.position = last;
        }
        self.record_lag(report.position).await;
        Ok(report)
    }

    /// Run until `stop` resolves: a pass, then a pause of `idle` when the log had
    /// nothing new. A failing pass (the log or the state store down) is retried after
    /// `idle` too.
    pub async fn run_until(
        &self,
        handler: &dyn EventHandler,
        idle: Duration,
        stop: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(stop);
        loop {
            let pass = async {
                match self.run_once(handler).await {
                    Ok(r) if r.handled + r.dead_lettered + r.filtered > 0 => {}
                    Ok(_) => tokio::time::sleep(idle).await,
                    Err(e) => {
                        tracing::warn!(consumer = %self.name, error = %e, "an event consumer's pass failed; trying again");
                        tokio::time::sleep(idle).await;
                    }
                }
            };
            tokio::select! {
                () = &mut stop => return,
                () = pass => {}
            }
        }
    }

    async fn handle_one(
        &self,
        handler: &dyn EventHandler,
        event: &StoredEvent,
        report: &mut ConsumeReport,
    ) -> Result<()> {
        if let Some(filter) = &self.filter {
            let body = serde_json::from_str(&event.event.body).unwrap_or(serde_json::Value::Null);
            if !filter.matches(&body) {
                report.filtered += 1;
                metrics::counter!(EVENTS_HANDLED, "consumer" => self.name.clone(), "outcome" => "filtered")
                    .increment(1);
                return Ok(());
            }
        }
        let outcome = self
            .policy
            .call_as(Operation::new("handle"), || handler.handle(event))
            .await;
        let label = match outcome {
            Ok(()) => {
                report.handled += 1;
                "handled"
            }
            Err(e) => {
                tracing::warn!(consumer = %self.name, sequence = event.sequence, error = %e, "an event was dead-lettered");
                self.state
                    .put_dead_letter(&NewDeadLetter {
                        pipeline: self.name.clone(),
                        stream: event.event.source.clone(),
                        record_key: event.event.event_id.clone(),
                        record: event_record(event),
                        reason: e.to_string(),
                        stage: FailureStage::Handle,
                        run: None,
                    })
                    .await?;
                report.dead_lettered += 1;
                "dead_lettered"
            }
        };
        metrics::counter!(EVENTS_HANDLED, "consumer" => self.name.clone(), "outcome" => label)
            .increment(1);
        if let Ok(age) = SystemTime::now().duration_since(event.event.received_at) {
            metrics::histogram!(EVENTS_LATENCY, "consumer" => self.name.clone())
                .record(age.as_secs_f64());
        }
        Ok(())
    }

    /// Move the position so that the next pass starts after `sequence` (0: from the
    /// first event kept). Other consumers are not touched.
    pub async fn replay_from(&self, sequence: i64) -> Result<()> {
        if sequence < 0 {
            return Err(Error::invalid_input(format!(
                "a position is 0 or more, not {sequence}"
            )));
        }
        self.state
            .commit_cursor(&self.name, EVENTS_PARTITION, &sequence.to_string())
            .await?;
        Ok(())
    }

    /// Move the position to just before the first event received at or after `time`.
    pub async fn replay_since(&self, time: SystemTime) -> Result<i64> {
        let sequence = self.log.sequence_before(time).await?;
        self.replay_from(sequence).await?;
        Ok(sequence)
    }

    /// How far behind the consumer is.
    pub async fn lag(&self) -> Result<Lag> {
        self.lag_from(self.position().await?).await
    }

    async fn lag_from(&self, position: i64) -> Result<Lag> {
        let last = self.log.last_sequence().await?;
        let oldest = self
            .log
            .events_after(position, 1)
            .await?
            .first()
            .and_then(|e| SystemTime::now().duration_since(e.event.received_at).ok());
        Ok(Lag {
            events: (last - position).max(0),
            oldest,
        })
    }

    async fn record_lag(&self, position: i64) {
        if let Ok(lag) = self.lag_from(position).await {
            metrics::gauge!(EVENTS_LAG, "consumer" => self.name.clone()).set(lag.events as f64);
        }
    }
}

/// An event as a dead letter's record: what replaying it needs.
fn event_record(event: &StoredEvent) -> Record {
    let e = &event.event;
    let body = serde_json::from_str(&e.body).unwrap_or_else(|_| e.body.clone().into());
    let mut r = Record::new();
    r.set("sequence", event.sequence.into());
    r.set("source", e.source.clone().into());
    r.set("event_id", e.event_id.clone().into());
    r.set("event_type", e.event_type.clone().into());
    r.set(
        "partition_key",
        e.partition_key
            .clone()
            .map_or(serde_json::Value::Null, Into::into),
    );
    r.set("body", body);
    r
}
