//! Event consumers: read the [`EventLog`] in order from a committed position, hand each
//! event to a handler (retried through a [`Policy`]), dead-letter what keeps failing,
//! and commit the position as they go — so a restarted consumer resumes where it was,
//! and an operator can replay one consumer without touching the others.
//!
//! A consumer can also handle the events of different partition keys concurrently
//! (keeping each key's order), put out-of-order events of a key back in the source's
//! order within a window, and split the log into partitions that several workers share
//! under leases.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::integration::{HealthReport, HealthStatus};
use crate::record::Record;
use crate::resilience::{Operation, Policy, RetryConfig};
use crate::state::{EventLog, FailureStage, Lease, NewDeadLetter, StateStore, StoredEvent};

/// The cursor-store partition a consumer's position is kept under (with
/// [`EventConsumer::partitions`] above 1: `event-log/<p>/<n>`, one per partition).
pub const EVENTS_PARTITION: &str = "event-log";

/// Gauge: events in the log a consumer has not handled yet, by `consumer`.
pub const EVENTS_LAG: &str = "moodbridge_events_lag";
/// Gauge, seconds: how long ago the oldest event a consumer has not handled was
/// received (0 when caught up), by `consumer`.
pub const EVENTS_OLDEST_AGE: &str = "moodbridge_events_oldest_age_seconds";
/// Gauge: a consumer's open dead letters (set by [`EventConsumer::health`]), by
/// `consumer`.
pub const EVENTS_DEAD_LETTERS: &str = "moodbridge_events_dead_letters";
/// Counter: events handled by a consumer, by `consumer` and `outcome` (`handled`,
/// `dead_lettered`, `filtered`, `late`).
pub const EVENTS_HANDLED: &str = "moodbridge_events_handled_total";
/// Histogram, seconds: from an event's receipt to the end of its handling, by
/// `consumer`.
pub const EVENTS_LATENCY: &str = "moodbridge_event_latency_seconds";

/// Keys whose last delivered order a resequencing consumer remembers; past this the
/// memory starts over (an event of a forgotten key is never taken for late).
const LATE_MEMORY: usize = 100_000;

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

#[async_trait]
impl<T: EventHandler + ?Sized> EventHandler for Arc<T> {
    async fn handle(&self, event: &StoredEvent) -> Result<()> {
        (**self).handle(event).await
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
    /// Events passed over as late: older, in the source's order, than an event of the
    /// same key already handled ([`Resequence`]).
    pub late: u64,
    /// Events left for a later pass because they are younger than the resequencing
    /// window.
    pub held: u64,
    /// Partitions this worker held during the pass.
    pub partitions: u32,
    /// The committed position after the pass (the lowest of its partitions').
    pub position: i64,
}

impl ConsumeReport {
    fn add(&mut self, other: &ConsumeReport) {
        self.handled += other.handled;
        self.dead_lettered += other.dead_lettered;
        self.filtered += other.filtered;
        self.late += other.late;
    }

    fn touched(&self) -> u64 {
        self.handled + self.dead_lettered + self.filtered + self.late
    }
}

/// How far behind a consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// Events after its position.
    pub events: i64,
    /// How long ago the oldest of them was received (`None` when caught up).
    pub oldest: Option<Duration>,
}

/// When a consumer's [`health`](EventConsumer::health) turns degraded.
///
/// ```
/// use std::time::Duration;
/// use moodbridge_core::engine::LagThresholds;
/// let strict = LagThresholds { max_age: Duration::from_secs(5), ..LagThresholds::default() };
/// assert_eq!(strict.max_events, 10_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LagThresholds {
    /// Degraded when more events than this wait (default 10,000).
    pub max_events: i64,
    /// Degraded when the oldest waiting event was received longer ago (default 30 s).
    pub max_age: Duration,
    /// Degraded when more dead letters than this are open (default 0: any).
    pub max_dead_letters: u32,
}

impl Default for LagThresholds {
    fn default() -> Self {
        LagThresholds {
            max_events: 10_000,
            max_age: Duration::from_secs(30),
            max_dead_letters: 0,
        }
    }
}

/// Putting a key's events back in the source's order: a consumer holds each event for
/// `window` after its receipt, then hands over the events of one partition key sorted
/// by the value at `order_by` in their JSON body (a JSON pointer to a number or a
/// string: a change event's commit number, an ISO timestamp). An event that arrives
/// later still, older than one of its key already handled, is **late**: it is passed
/// over (counted) unless [`keep_late`](Self::keep_late) is set.
///
/// The ordering scope is the partition key; events without the field keep their log
/// order, ahead of the sorted ones of their key, and are never late. What was last
/// handled per key is kept in memory (the last 100,000 keys): after a restart, the first
/// event of a key is not taken for late. Only an event that reached the log after every
/// event of its key handled so far can be late, so a replay hands every event over
/// again.
///
/// ```
/// use std::time::Duration;
/// use moodbridge_core::engine::Resequence;
/// let by_commit = Resequence::by("/ChangeEventHeader/commitNumber", Duration::from_secs(2)).unwrap();
/// assert!(Resequence::by("commitNumber", Duration::from_secs(2)).is_err());
/// # let _ = by_commit;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resequence {
    order_by: String,
    window: Duration,
    keep_late: bool,
}

impl Resequence {
    /// Order by the body's value at JSON pointer `order_by` (`/a/b`), holding events for
    /// `window`.
    pub fn by(order_by: impl Into<String>, window: Duration) -> Result<Self> {
        let order_by = order_by.into();
        if !order_by.starts_with('/') {
            return Err(Error::invalid_input(format!(
                "the resequencing field {order_by:?} is not a JSON pointer"
            ))
            .with_hint(format!(
                "write it as \"/{order_by}\" (RFC 6901: /a/b for a.b)"
            )));
        }
        Ok(Resequence {
            order_by,
            window,
            keep_late: false,
        })
    }

    /// Hand late events over too (counted as handled), for handlers that compare
    /// versions themselves.
    pub fn keep_late(mut self) -> Self {
        self.keep_late = true;
        self
    }

    fn order_of(&self, event: &StoredEvent) -> Option<OrderValue> {
        let body: serde_json::Value = serde_json::from_str(&event.event.body).ok()?;
        match body.pointer(&self.order_by)? {
            serde_json::Value::Number(n) => n.as_f64().map(OrderValue::Number),
            serde_json::Value::String(s) => Some(OrderValue::Text(s.clone())),
            _ => None,
        }
    }
}

/// A value events of a key are ordered by: numbers before text.
#[derive(Debug, Clone, PartialEq)]
enum OrderValue {
    Number(f64),
    Text(String),
}

impl OrderValue {
    fn cmp(&self, other: &OrderValue) -> Ordering {
        match (self, other) {
            (OrderValue::Number(a), OrderValue::Number(b)) => a.total_cmp(b),
            (OrderValue::Text(a), OrderValue::Text(b)) => a.cmp(b),
            (OrderValue::Number(_), OrderValue::Text(_)) => Ordering::Less,
            (OrderValue::Text(_), OrderValue::Number(_)) => Ordering::Greater,
        }
    }
}

/// Several workers sharing one consumer: who this one is, and how long its leases last.
#[derive(Debug, Clone)]
struct WorkerConfig {
    holder: String,
    ttl: Duration,
    max_partitions: u32,
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
/// Options:
/// - [`filter`](Self::filter): only events whose body matches an SNS filter policy;
/// - [`parallel`](Self::parallel): up to N partition keys handled at once, each key's
///   events in order;
/// - [`resequence`](Self::resequence): a key's events put in the source's order within a
///   window, late ones passed over;
/// - [`partitions`](Self::partitions) and [`worker`](Self::worker): the log split by
///   partition key into N partitions, each with its own position, shared by several
///   workers that each hold the leases of some.
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
    parallel: usize,
    resequence: Option<Resequence>,
    partitions: u32,
    worker: Option<WorkerConfig>,
    /// The leases this worker holds, by partition.
    leases: Arc<Mutex<BTreeMap<u32, Lease>>>,
    /// Per partition key: the order value of the last event handled, and the highest
    /// sequence handled.
    last_order: Arc<Mutex<HashMap<String, (OrderValue, i64)>>>,
}

impl std::fmt::Debug for EventConsumer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventConsumer")
            .field("name", &self.name)
            .field("page", &self.page)
            .field("parallel", &self.parallel)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Where one partition of a consumer is: its position and the cursor sequence read.
#[derive(Debug, Clone, Copy)]
struct At {
    position: i64,
    sequence: i64,
}

impl EventConsumer {
    /// Consumer `name` of `log`, keeping its position and dead letters in `state`;
    /// handler errors retried with the default [`RetryConfig`], 500 events a page, one
    /// event at a time, one partition.
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
            parallel: 1,
            resequence: None,
            partitions: 1,
            worker: None,
            leases: Arc::default(),
            last_order: Arc::default(),
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

    /// Handle up to `keys` partition keys of a page at once (at least 1; default 1, the
    /// log's order). Events of one key are still handled one after the other, in order;
    /// events without a key have no order among themselves. The position is committed
    /// once the whole page is handled.
    pub fn parallel(mut self, keys: usize) -> Self {
        self.parallel = keys.max(1);
        self
    }

    /// Put each key's events back in the source's order ([`Resequence`]).
    pub fn resequence(mut self, resequence: Resequence) -> Self {
        self.resequence = Some(resequence);
        self
    }

    /// Split the log into `n` partitions by partition key (at least 1; default 1), each
    /// with its own position, so that [`worker`](Self::worker)s can share them. Events of
    /// one key are always in the same partition. Changing `n` starts the new partitions
    /// from the lowest position of the old ones (events between are handled again).
    pub fn partitions(mut self, n: u32) -> Self {
        self.partitions = n.max(1);
        self
    }

    /// Run as worker `holder` among several sharing this consumer: a pass handles only
    /// the partitions whose lease (in the state store) this worker holds, taking free or
    /// lapsed ones up to [`max_partitions`](Self::max_partitions) and renewing them for
    /// `ttl` after each page. A worker that loses a lease stops at once (its pass fails
    /// with a conflict) and the next holder resumes from the committed position; the
    /// positions are committed fenced, so a stale worker cannot move one back.
    pub fn worker(mut self, holder: impl Into<String>, ttl: Duration) -> Self {
        self.worker = Some(WorkerConfig {
            holder: holder.into(),
            ttl,
            max_partitions: u32::MAX,
        });
        self
    }

    /// Hold at most `n` partitions as a [`worker`](Self::worker) (at least 1; default
    /// all): with W workers and P partitions, P / W spreads them.
    pub fn max_partitions(mut self, n: u32) -> Self {
        if let Some(w) = &mut self.worker {
            w.max_partitions = n.max(1);
        }
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn cursor_partition(&self, p: u32) -> String {
        if self.partitions == 1 {
            EVENTS_PARTITION.to_owned()
        } else {
            format!("{EVENTS_PARTITION}/{p}/{}", self.partitions)
        }
    }

    fn lease_name(&self, p: u32) -> String {
        format!("events:{}/{p}/{}", self.name, self.partitions)
    }

    /// The partition an event belongs to: by its partition key (by its id when it has
    /// none).
    fn partition_of(&self, event: &StoredEvent) -> u32 {
        if self.partitions == 1 {
            return 0;
        }
        let key = event
            .event
            .partition_key
            .as_deref()
            .unwrap_or(&event.event.event_id);
        let digest = Sha256::digest(key.as_bytes());
        let mut head = [0u8; 8];
        head.copy_from_slice(&digest[..8]);
        (u64::from_be_bytes(head) % u64::from(self.partitions)) as u32
    }

    fn parse_position(&self, position: &str) -> Result<i64> {
        position.parse().map_err(|_| {
            Error::new(
                ErrorKind::Integrity,
                format!(
                    "consumer {}'s position {position:?} is not a sequence number",
                    self.name
                ),
            )
            .with_hint("reset it with replay_from")
        })
    }

    /// The positions of partitions `ps`; a partition never committed in this layout
    /// starts from the lowest position committed in another layout (0 when none).
    async fn positions(&self, ps: &[u32]) -> Result<BTreeMap<u32, At>> {
        let cursors = self.state.cursors(&self.name).await?;
        let mut by_name = HashMap::new();
        let mut lowest: Option<i64> = None;
        for c in &cursors {
            let Some(layout) = layout_of(&c.partition) else {
                continue;
            };
            let position = self.parse_position(&c.position)?;
            if layout == self.partitions {
                by_name.insert(c.partition.as_str(), (position, c.sequence));
            } else {
                // Another layout's partitions: where this one's start.
                lowest = Some(lowest.map_or(position, |l| l.min(position)));
            }
        }
        Ok(ps
            .iter()
            .map(|&p| {
                let at = match by_name.get(self.cursor_partition(p).as_str()) {
                    Some(&(position, sequence)) => At { position, sequence },
                    None => At {
                        position: lowest.unwrap_or(0),
                        sequence: 0,
                    },
                };
                (p, at)
            })
            .collect())
    }

    /// The committed position: the last sequence handled (0 before the first); with
    /// several partitions, the lowest of theirs.
    pub async fn position(&self) -> Result<i64> {
        let all: Vec<u32> = (0..self.partitions).collect();
        Ok(self
            .positions(&all)
            .await?
            .values()
            .map(|a| a.position)
            .min()
            .unwrap_or(0))
    }

    /// Take and renew this worker's leases; the partitions it holds (all of them when it
    /// is not a worker).
    async fn hold_partitions(&self) -> Result<Vec<u32>> {
        let Some(worker) = &self.worker else {
            return Ok((0..self.partitions).collect());
        };
        let held: Vec<u32> = self
            .leases
            .lock()
            .expect("leases")
            .keys()
            .copied()
            .collect();
        let mut now_held = BTreeMap::new();
        for p in held {
            if let Some(lease) = self
                .state
                .acquire_lease(&self.lease_name(p), &worker.holder, worker.ttl)
                .await?
            {
                now_held.insert(p, lease);
            }
        }
        // Free or lapsed partitions, from a place that depends on the worker so that
        // workers starting together do not all try the same ones first.
        let start = Sha256::digest(worker.holder.as_bytes())[0] as u32 % self.partitions;
        for i in 0..self.partitions {
            if now_held.len() as u32 >= worker.max_partitions {
                break;
            }
            let p = (start + i) % self.partitions;
            if now_held.contains_key(&p) {
                continue;
            }
            if let Some(lease) = self
                .state
                .acquire_lease(&self.lease_name(p), &worker.holder, worker.ttl)
                .await?
            {
                now_held.insert(p, lease);
            }
        }
        let ps = now_held.keys().copied().collect();
        *self.leases.lock().expect("leases") = now_held;
        Ok(ps)
    }

    async fn renew_leases(&self) -> Result<()> {
        let Some(worker) = &self.worker else {
            return Ok(());
        };
        let held: Vec<Lease> = self
            .leases
            .lock()
            .expect("leases")
            .values()
            .cloned()
            .collect();
        for lease in held {
            match self.state.renew_lease(&lease, worker.ttl).await {
                Ok(renewed) => {
                    self.leases
                        .lock()
                        .expect("leases")
                        .insert(partition_of_lease(&lease.name), renewed);
                }
                Err(e) => {
                    self.leases
                        .lock()
                        .expect("leases")
                        .remove(&partition_of_lease(&lease.name));
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Give back every lease this worker holds (at shutdown, so that another worker takes
    /// its partitions at once instead of after they lapse).
    pub async fn release(&self) -> Result<()> {
        let held: Vec<Lease> = std::mem::take(&mut *self.leases.lock().expect("leases"))
            .into_values()
            .collect();
        for lease in held {
            self.state.release_lease(&lease).await?;
        }
        Ok(())
    }

    /// Handle every event after the committed position (of the partitions this worker
    /// holds), committing the position after each page; returns when the log has nothing
    /// more, or only events still inside the resequencing window.
    pub async fn run_once(&self, handler: &dyn EventHandler) -> Result<ConsumeReport> {
        let owned = self.hold_partitions().await?;
        let mut report = ConsumeReport {
            partitions: owned.len() as u32,
            ..ConsumeReport::default()
        };
        if owned.is_empty() {
            report.position = self.position().await?;
            return Ok(report);
        }
        let mut at = self.positions(&owned).await?;
        loop {
            let from = at.values().map(|a| a.position).min().unwrap_or(0);
            report.position = from;
            let events = self.log.events_after(from, self.page).await?;
            if events.is_empty() {
                break;
            }
            let mut cut = events.len();
            if let Some(r) = &self.resequence {
                let horizon = SystemTime::now()
                    .checked_sub(r.window)
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                if let Some(i) = events.iter().position(|e| e.event.received_at > horizon) {
                    cut = i;
                    report.held = (events.len() - i) as u64;
                }
            }
            let page = &events[..cut];
            let Some(last) = page.last().map(|e| e.sequence) else {
                break;
            };
            let mine: Vec<&StoredEvent> = page
                .iter()
                .filter(|e| {
                    at.get(&self.partition_of(e))
                        .is_some_and(|a| e.sequence > a.position)
                })
                .collect();
            let done = self.handle_page(handler, mine).await?;
            report.add(&done);
            self.renew_leases().await?;
            for (&p, a) in at.iter_mut() {
                if a.position >= last {
                    continue;
                }
                let partition = self.cursor_partition(p);
                let position = last.to_string();
                a.sequence = if self.worker.is_some() {
                    self.state
                        .commit_cursor_if(&self.name, &partition, &position, a.sequence)
                        .await?
                } else {
                    self.state
                        .commit_cursor(&self.name, &partition, &position)
                        .await?
                };
                a.position = last;
            }
            report.position = last;
            if cut < events.len() {
                break;
            }
        }
        self.record_lag(report.position).await;
        Ok(report)
    }

    /// Run until `stop` resolves: a pass, then a pause of `idle` when the log had
    /// nothing new. A failing pass (the log or the state store down, a lease lost) is
    /// retried after `idle` too. A worker gives its leases back when stopped.
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
                    Ok(r) if r.touched() > 0 => {}
                    Ok(_) => tokio::time::sleep(idle).await,
                    Err(e) => {
                        tracing::warn!(consumer = %self.name, error = %e, "an event consumer's pass failed; trying again");
                        tokio::time::sleep(idle).await;
                    }
                }
            };
            tokio::select! {
                () = &mut stop => break,
                () = pass => {}
            }
        }
        if let Err(e) = self.release().await {
            tracing::warn!(consumer = %self.name, error = %e, "could not give the consumer's leases back; they lapse");
        }
    }

    /// Handle one page's events: in order, or by key with up to `parallel` keys at once,
    /// each key's events resequenced when asked.
    async fn handle_page(
        &self,
        handler: &dyn EventHandler,
        events: Vec<&StoredEvent>,
    ) -> Result<ConsumeReport> {
        if self.parallel == 1 && self.resequence.is_none() {
            let mut report = ConsumeReport::default();
            for event in events {
                self.handle_one(handler, event, &mut report).await?;
            }
            return Ok(report);
        }
        let mut groups: Vec<Vec<&StoredEvent>> = Vec::new();
        let mut by_key: HashMap<&str, usize> = HashMap::new();
        for event in events {
            match event.event.partition_key.as_deref() {
                Some(key) => {
                    let i = *by_key.entry(key).or_insert_with(|| {
                        groups.push(Vec::new());
                        groups.len() - 1
                    });
                    groups[i].push(event);
                }
                None => groups.push(vec![event]),
            }
        }
        // Futures made in a loop, not a closure: a closure over the borrowed events would
        // tie the pass's future to one lifetime and make it unusable inside a handler.
        let mut work = Vec::with_capacity(groups.len());
        for group in groups {
            work.push(self.handle_group(handler, group));
        }
        futures::stream::iter(work)
            .buffer_unordered(self.parallel)
            .try_fold(ConsumeReport::default(), |mut total, r| async move {
                total.add(&r);
                Ok(total)
            })
            .await
    }

    /// One key's events of a page, one after the other.
    async fn handle_group(
        &self,
        handler: &dyn EventHandler,
        group: Vec<&StoredEvent>,
    ) -> Result<ConsumeReport> {
        let mut report = ConsumeReport::default();
        let Some(r) = &self.resequence else {
            for event in group {
                self.handle_one(handler, event, &mut report).await?;
            }
            return Ok(report);
        };
        let mut ordered: Vec<(Option<OrderValue>, &StoredEvent)> =
            group.into_iter().map(|e| (r.order_of(e), e)).collect();
        ordered.sort_by(|(a, x), (b, y)| match (a, b) {
            (Some(a), Some(b)) => a.cmp(b).then(x.sequence.cmp(&y.sequence)),
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (None, None) => x.sequence.cmp(&y.sequence),
        });
        for (order, event) in ordered {
            let key = event.event.partition_key.as_deref();
            if let (Some(order), Some(key)) = (&order, key) {
                let late = self
                    .last_order
                    .lock()
                    .expect("order memory")
                    .get(key)
                    .is_some_and(|(last, seq)| {
                        event.sequence > *seq && order.cmp(last) == Ordering::Less
                    });
                if late && !r.keep_late {
                    tracing::debug!(consumer = %self.name, sequence = event.sequence, "a late event was passed over");
                    report.late += 1;
                    metrics::counter!(EVENTS_HANDLED, "consumer" => self.name.clone(), "outcome" => "late")
                        .increment(1);
                    continue;
                }
            }
            self.handle_one(handler, event, &mut report).await?;
            if let (Some(order), Some(key)) = (order, key) {
                let mut memory = self.last_order.lock().expect("order memory");
                if memory.len() >= LATE_MEMORY && !memory.contains_key(key) {
                    memory.clear();
                }
                let newest = memory
                    .get(key)
                    .map_or(event.sequence, |(_, seq)| event.sequence.max(*seq));
                memory.insert(key.to_owned(), (order, newest));
            }
        }
        Ok(report)
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
    /// first event kept), in every partition. Other consumers are not touched.
    pub async fn replay_from(&self, sequence: i64) -> Result<()> {
        if sequence < 0 {
            return Err(Error::invalid_input(format!(
                "a position is 0 or more, not {sequence}"
            )));
        }
        for p in 0..self.partitions {
            self.state
                .commit_cursor(&self.name, &self.cursor_partition(p), &sequence.to_string())
                .await?;
        }
        Ok(())
    }

    /// Move the position to just before the first event received at or after `time`.
    pub async fn replay_since(&self, time: SystemTime) -> Result<i64> {
        let sequence = self.log.sequence_before(time).await?;
        self.replay_from(sequence).await?;
        Ok(sequence)
    }

    /// How far behind the consumer is (from its lowest partition's position).
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
            metrics::gauge!(EVENTS_OLDEST_AGE, "consumer" => self.name.clone())
                .set(lag.oldest.map_or(0.0, |d| d.as_secs_f64()));
        }
    }

    /// The consumer's health: degraded when it is further behind than `limits` allow
    /// (events waiting, age of the oldest, open dead letters), down when its position
    /// or the log cannot be read. Sets the lag, age and dead-letter gauges.
    ///
    /// ```
    /// # #[cfg(feature = "sqlite")]
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use moodbridge_core::HealthStatus;
    /// use moodbridge_core::engine::{EventConsumer, LagThresholds};
    /// use moodbridge_core::state::{EventLog, NewEvent, SqliteStateStore};
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Arc::new(SqliteStateStore::open(&dir.path().join("s.db")).await.unwrap());
    /// let consumer = EventConsumer::new("case-updates", store.clone(), store.clone());
    /// let limits = LagThresholds { max_events: 1, ..LagThresholds::default() };
    /// assert_eq!(consumer.health(&limits).await.status, HealthStatus::Up);
    /// let two = [NewEvent::new("apex", "1", "t", "{}"), NewEvent::new("apex", "2", "t", "{}")];
    /// store.append_events(&two).await.unwrap();
    /// let report = consumer.health(&limits).await;
    /// assert_eq!(report.status, HealthStatus::Degraded);
    /// assert!(report.detail.contains("2 events waiting"), "{}", report.detail);
    /// # });
    /// ```
    pub async fn health(&self, limits: &LagThresholds) -> HealthReport {
        let started = std::time::Instant::now();
        let checked = async {
            let lag = self.lag().await?;
            let letters = self
                .state
                .dead_letters(&self.name, None, limits.max_dead_letters.saturating_add(1))
                .await?
                .len();
            Ok::<_, Error>((lag, letters))
        }
        .await;
        let (lag, letters) = match checked {
            Ok(v) => v,
            Err(e) => return HealthReport::from_result(started.elapsed(), Err::<(), _>(e)),
        };
        metrics::gauge!(EVENTS_LAG, "consumer" => self.name.clone()).set(lag.events as f64);
        metrics::gauge!(EVENTS_OLDEST_AGE, "consumer" => self.name.clone())
            .set(lag.oldest.map_or(0.0, |d| d.as_secs_f64()));
        metrics::gauge!(EVENTS_DEAD_LETTERS, "consumer" => self.name.clone()).set(letters as f64);
        let age = lag.oldest.unwrap_or_default();
        let mut problems = Vec::new();
        if lag.events > limits.max_events {
            problems.push(format!(
                "{} events waiting (more than {})",
                lag.events, limits.max_events
            ));
        }
        if age > limits.max_age {
            problems.push(format!(
                "the oldest waiting event is {:.1} s old (more than {:.1} s)",
                age.as_secs_f64(),
                limits.max_age.as_secs_f64()
            ));
        }
        if letters > limits.max_dead_letters as usize {
            problems.push(format!(
                "more than {} open dead letters",
                limits.max_dead_letters
            ));
        }
        if problems.is_empty() {
            HealthReport::new(
                HealthStatus::Up,
                started.elapsed(),
                format!(
                    "{} events waiting, oldest {:.1} s",
                    lag.events,
                    age.as_secs_f64()
                ),
            )
        } else {
            HealthReport::new(
                HealthStatus::Degraded,
                started.elapsed(),
                problems.join("; "),
            )
        }
    }
}

/// The number of partitions of the layout a cursor partition belongs to (`event-log`:
/// 1, `event-log/<p>/<n>`: n); `None` for a cursor that is not an event-log position.
fn layout_of(partition: &str) -> Option<u32> {
    if partition == EVENTS_PARTITION {
        return Some(1);
    }
    let rest = partition
        .strip_prefix(EVENTS_PARTITION)?
        .strip_prefix('/')?;
    let (_, n) = rest.split_once('/')?;
    n.parse().ok()
}

fn partition_of_lease(name: &str) -> u32 {
    name.rsplit('/')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// Delete the events received more than `keep` ago that every one of `consumers` has
/// passed (the lowest of their positions; a consumer that never ran holds everything).
/// Returns the number deleted. Their ids are forgotten: the dedup window is `keep`.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moodbridge_core::engine::{purge_consumed_events, EventConsumer};
/// use moodbridge_core::state::{EventLog, NewEvent, SqliteStateStore, StoredEvent};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Arc::new(SqliteStateStore::open(&dir.path().join("s.db")).await.unwrap());
/// store.append_events(&[NewEvent::new("apex", "1", "t", "{}")]).await.unwrap();
/// let a = EventConsumer::new("a", store.clone(), store.clone());
/// a.run_once(&|_: StoredEvent| async { Ok(()) }).await.unwrap();
/// // "b" has not read it yet: kept.
/// assert_eq!(purge_consumed_events(&*store, &["a", "b"], Duration::ZERO).await.unwrap(), 0);
/// assert_eq!(purge_consumed_events(&*store, &["a"], Duration::ZERO).await.unwrap(), 1);
/// # });
/// ```
pub async fn purge_consumed_events(
    state: &dyn StateStore,
    consumers: &[&str],
    keep: Duration,
) -> Result<u64> {
    let mut lowest = i64::MAX;
    for consumer in consumers {
        let cursors = state.cursors(consumer).await?;
        let positions: Vec<i64> = cursors
            .iter()
            .filter(|c| layout_of(&c.partition).is_some())
            .map(|c| c.position.parse::<i64>().unwrap_or(0))
            .collect();
        lowest = lowest.min(positions.into_iter().min().unwrap_or(0));
    }
    if consumers.is_empty() || lowest <= 0 {
        return Ok(0);
    }
    let before = SystemTime::now()
        .checked_sub(keep)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    state.purge_events(before, lowest).await
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
