//! The event log: events received from platforms (webhooks, outbound messages, change
//! events), stored durably before they are acknowledged, each once, in order.
//!
//! - **Durable**: [`EventLog::append_events`] returns only once its transaction is
//!   committed (`synchronous = FULL` on SQLite, a commit on PostgreSQL), so a receiver
//!   acknowledges only what survives a crash. [`EventWriter`] groups concurrent appends
//!   into one transaction (one fsync for many requests).
//! - **Once**: an event is named by its source and its id there; appending it again is
//!   reported as a [`Appended::Duplicate`] of the first, in the same transaction as the
//!   insert. The dedup window is the retention: a purged event's id is forgotten.
//! - **In order**: events get gapless sequence numbers in commit order; a consumer reads
//!   [`events_after`](EventLog::events_after) the sequence it last handled and keeps
//!   that position in the [`CursorStore`](super::CursorStore).
//!
//! Every implementation passes `testing::event_log_contract`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// An event to append.
///
/// ```
/// use moodbridge_core::state::NewEvent;
/// let event = NewEvent::new("webhook:apex", "msg_2Kx", "case.updated", r#"{"Id":"500A"}"#)
///     .partition("500A");
/// assert_eq!(event.partition_key.as_deref(), Some("500A"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// Where it came from (a receiver's source name): with `event_id`, what names it.
    pub source: String,
    /// Its id at the source (a webhook's `webhook-id`, a notification's `Id`).
    pub event_id: String,
    /// What events must stay in order with it (a record id), if any.
    pub partition_key: Option<String>,
    /// Its type (`case.updated`, an sObject's name …).
    pub event_type: String,
    /// Its payload as received (JSON for webhooks).
    pub body: String,
    /// When it was received.
    pub received_at: SystemTime,
}

impl NewEvent {
    /// An event of `source` with id `event_id`, received now.
    pub fn new(
        source: impl Into<String>,
        event_id: impl Into<String>,
        event_type: impl Into<String>,
        body: impl Into<String>,
    ) -> Self {
        NewEvent {
            source: source.into(),
            event_id: event_id.into(),
            partition_key: None,
            event_type: event_type.into(),
            body: body.into(),
            received_at: SystemTime::now(),
        }
    }

    /// The same event, ordered with the others of partition `key`.
    pub fn partition(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }
}

/// What became of an appended event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Appended {
    /// Stored with this sequence number.
    Stored(i64),
    /// Already in the log (same source and id) with this sequence number; not stored
    /// again.
    Duplicate(i64),
}

impl Appended {
    /// The event's sequence number, new or first.
    ///
    /// ```
    /// use moodbridge_core::state::Appended;
    /// assert_eq!(Appended::Duplicate(7).sequence(), 7);
    /// ```
    pub fn sequence(self) -> i64 {
        match self {
            Appended::Stored(s) | Appended::Duplicate(s) => s,
        }
    }
}

/// An event in the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Its place in the log: 1, 2, 3 … in commit order, no gaps.
    pub sequence: i64,
    /// The event as appended.
    pub event: NewEvent,
}

/// The durable event log: events received from platforms (webhooks, outbound messages,
/// change events), stored before they are acknowledged, each once, in order.
///
/// - **Durable**: [`append_events`](Self::append_events) returns only once its
///   transaction is committed (`synchronous = FULL` on SQLite, a commit on PostgreSQL),
///   so a receiver acknowledges only what survives a crash. [`EventWriter`] groups
///   concurrent appends into one transaction (one fsync for many requests).
/// - **Once**: an event is named by its source and its id there; appending it again is
///   reported as an [`Appended::Duplicate`] of the first, decided in the transaction of
///   the insert. The dedup window is the retention: a purged event's id is forgotten.
/// - **In order**: events get gapless sequence numbers in commit order; a consumer reads
///   [`events_after`](Self::events_after) the sequence it last handled and keeps that
///   position in the [`CursorStore`](super::CursorStore).
///
/// The state stores implement it, in the same database as the sync state; every
/// implementation passes `testing::event_log_contract`. The time received is kept to the
/// millisecond.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use moodbridge_core::state::{Appended, EventLog, NewEvent, SqliteStateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let log = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
/// let event = NewEvent::new("webhook:apex", "msg_1", "case.updated", "{}");
/// assert_eq!(log.append_events(&[event.clone()]).await.unwrap(), [Appended::Stored(1)]);
/// assert_eq!(log.append_events(&[event]).await.unwrap(), [Appended::Duplicate(1)]);
/// let read = log.events_after(0, 10).await.unwrap();
/// assert_eq!(read.len(), 1);
/// # });
/// ```
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Append `events` in one transaction, in order, and return what became of each once
    /// it is committed. An event already in the log (same source and id, this call's
    /// earlier events included) is a duplicate and is not stored again.
    async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<Appended>>;

    /// Up to `limit` events with sequence numbers above `sequence`, in order.
    async fn events_after(&self, sequence: i64, limit: u32) -> Result<Vec<StoredEvent>>;

    /// The highest sequence number handed out (0 for an empty log).
    async fn last_sequence(&self) -> Result<i64>;

    /// The position just before the first event received at or after `time` — where a
    /// consumer replaying from `time` resumes; the last sequence when there is none.
    async fn sequence_before(&self, time: SystemTime) -> Result<i64>;

    /// Delete the events received before `before` whose sequence is at most `up_to` (the
    /// lowest position every consumer has passed); the number deleted. Their ids are
    /// forgotten: the dedup window is the retention.
    async fn purge_events(&self, before: SystemTime, up_to: i64) -> Result<u64>;
}

#[async_trait]
impl<T: EventLog + ?Sized> EventLog for Arc<T> {
    async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<Appended>> {
        (**self).append_events(events).await
    }
    async fn events_after(&self, sequence: i64, limit: u32) -> Result<Vec<StoredEvent>> {
        (**self).events_after(sequence, limit).await
    }
    async fn last_sequence(&self) -> Result<i64> {
        (**self).last_sequence().await
    }
    async fn sequence_before(&self, time: SystemTime) -> Result<i64> {
        (**self).sequence_before(time).await
    }
    async fn purge_events(&self, before: SystemTime, up_to: i64) -> Result<u64> {
        (**self).purge_events(before, up_to).await
    }
}

/// One caller's events waiting for the next group commit.
struct Request {
    events: Vec<NewEvent>,
    reply: oneshot::Sender<Result<Vec<Appended>>>,
}

/// Group commit: appends from many tasks (a receiver's concurrent requests) go to the
/// log in one transaction — one fsync — per group, each caller answered once its events
/// are committed. A group takes what is waiting when the last one ends, up to
/// `max_group` events, so a lone request is not delayed and a burst shares commits.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use std::sync::Arc;
/// use moodbridge_core::state::{Appended, EventWriter, NewEvent, SqliteStateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let log = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap());
/// let writer = EventWriter::spawn(log, 500);
/// let done = writer.append(vec![NewEvent::new("s", "1", "t", "{}")]).await.unwrap();
/// assert_eq!(done, [Appended::Stored(1)]);
/// # });
/// ```
#[derive(Debug, Clone)]
pub struct EventWriter {
    requests: mpsc::Sender<Request>,
}

/// Requests waiting for the writer, at most (more wait to be queued).
const QUEUED: usize = 4096;

impl EventWriter {
    /// Start the writer task over `log`, committing at most `max_group` events (at
    /// least 1) a transaction. It stops when every clone of the writer is dropped.
    pub fn spawn(log: Arc<dyn EventLog>, max_group: usize) -> EventWriter {
        let max_group = max_group.max(1);
        let (requests, mut queue) = mpsc::channel::<Request>(QUEUED);
        tokio::spawn(async move {
            let mut waiting: VecDeque<Request> = VecDeque::new();
            loop {
                if waiting.is_empty() {
                    match queue.recv().await {
                        Some(r) => waiting.push_back(r),
                        None => return,
                    }
                }
                while let Ok(r) = queue.try_recv() {
                    waiting.push_back(r);
                }
                // A group: whole requests up to `max_group` events (one larger request
                // goes alone).
                // Each caller's reply and how many of the group's events are its own.
                let mut group = Vec::new();
                let mut events = Vec::new();
                while let Some(r) = waiting.front() {
                    if !group.is_empty() && events.len() + r.events.len() > max_group {
                        break;
                    }
                    let Some(r) = waiting.pop_front() else { break };
                    group.push((r.reply, r.events.len()));
                    events.extend(r.events);
                }
                let outcome = log.append_events(&events).await;
                let mut at = 0;
                for (reply, n) in group {
                    let answer = match &outcome {
                        Ok(all) => all
                            .get(at..at + n)
                            .map(<[Appended]>::to_vec)
                            .ok_or_else(|| {
                                Error::internal(
                                    "the event log answered for fewer events than it was given",
                                )
                            }),
                        Err(e) => Err(e.clone()),
                    };
                    at += n;
                    // A caller that gave up does not stop the others.
                    let _ = reply.send(answer);
                }
            }
        });
        EventWriter { requests }
    }

    /// Append `events` with the next group; returns once they are committed.
    pub async fn append(&self, events: Vec<NewEvent>) -> Result<Vec<Appended>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { events, reply })
            .await
            .map_err(|_| Error::internal("the event writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::internal("the event writer stopped before committing"))?
    }
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::state::SqliteStateStore;

    /// An event log that counts the transactions asked of it, and their sizes.
    struct Counting {
        inner: SqliteStateStore,
        groups: std::sync::Mutex<Vec<usize>>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl EventLog for Counting {
        async fn append_events(&self, events: &[NewEvent]) -> Result<Vec<Appended>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.groups
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(events.len());
            self.inner.append_events(events).await
        }
        async fn events_after(&self, sequence: i64, limit: u32) -> Result<Vec<StoredEvent>> {
            self.inner.events_after(sequence, limit).await
        }
        async fn last_sequence(&self) -> Result<i64> {
            self.inner.last_sequence().await
        }
        async fn sequence_before(&self, time: SystemTime) -> Result<i64> {
            self.inner.sequence_before(time).await
        }
        async fn purge_events(&self, before: SystemTime, up_to: i64) -> Result<u64> {
            self.inner.purge_events(before, up_to).await
        }
    }

    /// Requests waiting together are committed together, whole, at most `max_group`
    /// events a transaction, and every caller gets its own events' outcomes.
    #[tokio::test(flavor = "current_thread")]
    async fn waiting_appends_share_a_commit() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let inner = SqliteStateStore::open(&dir.path().join("s.db"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let log = Arc::new(Counting {
            inner,
            groups: std::sync::Mutex::new(Vec::new()),
            calls: AtomicUsize::new(0),
        });
        let writer = EventWriter::spawn(log.clone(), 50);
        // On one thread the writer runs only once every request is queued.
        let appends = (0..100).map(|i| {
            let writer = writer.clone();
            async move {
                let mut events = vec![NewEvent::new("s", format!("{i}"), "t", "{}")];
                if i % 10 == 0 {
                    events.push(NewEvent::new("s", "shared", "t", "{}"));
                }
                writer.append(events).await
            }
        });
        let outcomes = futures::future::join_all(appends).await;
        let groups = log
            .groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        // 100 requests, 110 events: three groups at the least, each of whole requests.
        assert_eq!(groups.len(), 3, "{groups:?}");
        assert!(groups.iter().all(|&g| g <= 50), "{groups:?}");
        assert_eq!(groups.iter().sum::<usize>(), 110);
        let mut shared = Vec::new();
        for (i, out) in outcomes.into_iter().enumerate() {
            let out = out.unwrap_or_else(|e| panic!("{e}"));
            assert!(
                matches!(out[0], Appended::Stored(_)),
                "request {i}: {out:?}"
            );
            if let Some(s) = out.get(1) {
                shared.push(*s);
            }
        }
        assert_eq!(shared.len(), 10);
        assert_eq!(
            shared
                .iter()
                .filter(|s| matches!(s, Appended::Stored(_)))
                .count(),
            1,
            "the shared id stored once: {shared:?}"
        );
        assert_eq!(
            log.last_sequence().await.unwrap_or_else(|e| panic!("{e}")),
            101
        );
    }
}
