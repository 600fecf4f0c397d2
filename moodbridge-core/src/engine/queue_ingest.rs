//! [`QueueIngest`]: messages of any [`MessageQueue`] into the durable event log, where the
//! consumers route them like webhooks and change events.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::queue::{MessageQueue, ReceiveOptions, ReceivedMessage};
use crate::state::{EventLog, NewEvent};

/// Moves a queue's messages into the event log: each message becomes an event, and is
/// acknowledged on the queue only once the event is committed. A message delivered
/// twice (a visibility timeout that ran out, a crash between the commit and the
/// acknowledgement) is a duplicate in the log, not a second event.
///
/// - The event's source is `queue:<name>` (or [`source`](Self::source)).
/// - Its id is the message attribute [`id_attribute`](Self::id_attribute) (default
///   `event-id`) when the message has it — so that a producer that sent the same event
///   twice is deduplicated too — else the queue's message id.
/// - Its type is the attribute `type` (default `message`), its partition key the
///   message's group, else its attribute `partition`.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// # #[cfg(feature = "sqlite")] {
/// use std::sync::Arc;
/// use moodbridge_core::engine::QueueIngest;
/// use moodbridge_core::queue::{MessageQueue, OutgoingMessage};
/// use moodbridge_core::state::{EventLog, SqliteStateStore};
/// use moodbridge_core::testing::MemoryQueue;
///
/// let dir = tempfile::tempdir().unwrap();
/// let log = Arc::new(SqliteStateStore::open(&dir.path().join("s.db")).await.unwrap());
/// let queue = Arc::new(MemoryQueue::new("orders"));
/// queue.send(&OutgoingMessage::new("{}").attribute("type", "order.placed")).await.unwrap();
/// let ingest = QueueIngest::new(queue, log.clone());
/// assert_eq!(ingest.run_once().await.unwrap(), 1);
/// let events = log.events_after(0, 10).await.unwrap();
/// assert_eq!(events[0].event.event_type, "order.placed");
/// assert_eq!(events[0].event.source, "queue:orders");
/// # }
/// # });
/// ```
pub struct QueueIngest {
    queue: Arc<dyn MessageQueue>,
    log: Arc<dyn EventLog>,
    source: String,
    id_attribute: String,
    wait: Duration,
    visibility: Duration,
}

impl std::fmt::Debug for QueueIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueIngest")
            .field("queue", &self.queue.name())
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl QueueIngest {
    /// Ingest `queue` into `log`.
    pub fn new(queue: Arc<dyn MessageQueue>, log: Arc<dyn EventLog>) -> Self {
        QueueIngest {
            source: format!("queue:{}", queue.name()),
            queue,
            log,
            id_attribute: "event-id".to_owned(),
            wait: Duration::from_secs(20),
            visibility: Duration::from_secs(60),
        }
    }

    /// The events' source (default `queue:<name>`).
    #[must_use]
    pub fn source(mut self, source: impl Into<String>) -> Self {
        self.source = source.into();
        self
    }

    /// The message attribute holding the producer's event id (default `event-id`).
    #[must_use]
    pub fn id_attribute(mut self, name: impl Into<String>) -> Self {
        self.id_attribute = name.into();
        self
    }

    /// How long a receive waits for messages (default 20 s, SQS's longest).
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    fn event_of(&self, m: &ReceivedMessage) -> NewEvent {
        let id = m.attributes.get(&self.id_attribute).unwrap_or(&m.id);
        let kind = m.attributes.get("type").map_or("message", String::as_str);
        let mut event = NewEvent::new(&self.source, id, kind, &m.body);
        if let Some(key) = m.group.as_ref().or_else(|| m.attributes.get("partition")) {
            event = event.partition(key);
        }
        event
    }

    /// Receive one batch (waiting up to the [`wait`](Self::wait) for it), append it and
    /// acknowledge it; the number of messages moved (duplicates included).
    ///
    /// # Errors
    /// The queue's or the log's errors. Messages received but not committed are not
    /// acknowledged: the queue delivers them again.
    pub async fn run_once(&self) -> Result<usize> {
        let features = self.queue.features();
        let messages = self
            .queue
            .receive(
                &ReceiveOptions::new(features.max_receive)
                    .wait(self.wait)
                    .visibility(self.visibility.min(features.max_visibility)),
            )
            .await?;
        if messages.is_empty() {
            return Ok(0);
        }
        let events: Vec<NewEvent> = messages.iter().map(|m| self.event_of(m)).collect();
        self.log.append_events(&events).await?;
        let receipts: Vec<_> = messages.iter().map(|m| m.receipt.clone()).collect();
        for (m, outcome) in messages.iter().zip(self.queue.ack_batch(&receipts).await?) {
            if let Err(e) = outcome {
                // Committed already: a redelivery will be a duplicate.
                tracing::warn!(queue = %self.queue.name(), message_id = %m.id, error = %e, "an ingested message could not be acknowledged");
            }
        }
        Ok(messages.len())
    }

    /// [`run_once`](Self::run_once) until `stop` resolves; the messages moved.
    ///
    /// # Errors
    /// The first error of a pass.
    pub async fn run_until(&self, stop: impl std::future::Future<Output = ()>) -> Result<u64> {
        tokio::pin!(stop);
        let mut moved = 0u64;
        loop {
            tokio::select! {
                () = &mut stop => return Ok(moved),
                n = self.run_once() => moved += n? as u64,
            }
        }
    }
}
