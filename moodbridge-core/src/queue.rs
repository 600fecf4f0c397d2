//! The [`MessageQueue`] capability: queues that hand each message to one receiver at a
//! time, hide it while the receiver works on it, and deliver it again unless it is
//! acknowledged — Amazon SQS, Azure Queue storage, Azure Service Bus and the embedded
//! queue ([`StoreQueue`], in the state store). One contract suite (`testing::message_queue_contract`) holds every
//! implementation to the same behaviour.
//!
//! Delivery is at least once: a receiver that does not [`ack`](MessageQueue::ack) in
//! time (the visibility timeout) gets the message again, with a higher
//! [`delivery_count`](ReceivedMessage::delivery_count). Handlers must be idempotent, or
//! deduplicate by [`ReceivedMessage::id`]. [`QueueWorker`] runs handlers on a queue:
//! it keeps a message hidden while its handler runs, acknowledges it after, and
//! releases it with a growing backoff when the handler fails.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use std::time::Duration;
//! use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
//! use moodbridge_core::testing::MemoryQueue;
//!
//! let queue = MemoryQueue::new("cases");
//! let id = queue
//!     .send(&OutgoingMessage::new(r#"{"Id": "500A"}"#).attribute("type", "case.closed"))
//!     .await
//!     .unwrap();
//! let received = queue.receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1))).await.unwrap();
//! assert_eq!(received[0].id, id);
//! assert_eq!(received[0].attributes["type"], "case.closed");
//! queue.ack(&received[0].receipt).await.unwrap();
//! # });
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::{Error, Result};

/// A message to send.
///
/// ```
/// use std::time::Duration;
/// use moodbridge_core::queue::OutgoingMessage;
/// let message = OutgoingMessage::new("body")
///     .attribute("source", "apex")
///     .group("case-500A")
///     .dedup_id("evt-1")
///     .delay(Duration::from_secs(5));
/// assert_eq!(message.group.as_deref(), Some("case-500A"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutgoingMessage {
    /// The body: text (a JSON document, usually).
    pub body: String,
    /// Attributes, delivered with the message (SQS message attributes, Service Bus
    /// application properties).
    pub attributes: BTreeMap<String, String>,
    /// The ordering group (an SQS FIFO message group, a Service Bus session): messages
    /// of one group are delivered in the order sent, one at a time. Required by FIFO
    /// queues, refused by others.
    pub group: Option<String>,
    /// The deduplication id: a second message with the same id within the queue's
    /// window is accepted but not delivered (FIFO queues).
    pub dedup_id: Option<String>,
    /// How long the message stays invisible after it is sent.
    pub delay: Duration,
}

impl OutgoingMessage {
    /// A message with `body`, no attributes, no group, no delay.
    pub fn new(body: impl Into<String>) -> Self {
        OutgoingMessage {
            body: body.into(),
            ..OutgoingMessage::default()
        }
    }

    /// Add attribute `name` = `value`.
    #[must_use]
    pub fn attribute(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// Send in ordering group `group`.
    #[must_use]
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Deduplicate by `id`.
    #[must_use]
    pub fn dedup_id(mut self, id: impl Into<String>) -> Self {
        self.dedup_id = Some(id.into());
        self
    }

    /// Deliver no sooner than `delay` from now.
    #[must_use]
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// The handle of one delivery of a message: what [`MessageQueue::ack`],
/// [`nack`](MessageQueue::nack) and [`extend`](MessageQueue::extend) take. A later
/// delivery of the same message has another receipt; an old one may be refused.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Receipt(String);

impl Receipt {
    /// A receipt from the queue's own handle (an SQS receipt handle, an Azure pop
    /// receipt with its message id, a lock token).
    pub fn new(handle: impl Into<String>) -> Self {
        Receipt(handle.into())
    }

    /// The queue's handle.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Receipt handles run to hundreds of characters: the start tells them apart.
        let shown: String = self.0.chars().take(12).collect();
        write!(f, "Receipt({shown}…)")
    }
}

/// A message as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The queue's id for the message (the same on every delivery).
    pub id: String,
    /// The body.
    pub body: String,
    /// The attributes it was sent with.
    pub attributes: BTreeMap<String, String>,
    /// Its ordering group, on queues that have them.
    pub group: Option<String>,
    /// Deliveries so far, this one included (1 the first time).
    pub delivery_count: u32,
    /// When it was sent, when the queue says.
    pub sent_at: Option<SystemTime>,
    /// This delivery's handle.
    pub receipt: Receipt,
}

/// How to receive.
///
/// ```
/// use std::time::Duration;
/// use moodbridge_core::queue::ReceiveOptions;
/// let options = ReceiveOptions::new(10).wait(Duration::from_secs(20)).visibility(Duration::from_secs(60));
/// assert_eq!(options.max_messages, 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// The most messages to return (1 to the queue's [`QueueFeatures::max_receive`]).
    pub max_messages: u32,
    /// How long to wait for a first message when none is there (long polling); zero
    /// answers at once.
    pub wait: Duration,
    /// How long the messages stay hidden from other receivers (default: the queue's).
    pub visibility: Option<Duration>,
}

impl ReceiveOptions {
    /// Up to `max_messages`, no waiting, the queue's visibility timeout.
    pub fn new(max_messages: u32) -> Self {
        ReceiveOptions {
            max_messages,
            wait: Duration::ZERO,
            visibility: None,
        }
    }

    /// Wait up to `wait` for a first message.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Hide the messages for `visibility`.
    #[must_use]
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = Some(visibility);
        self
    }
}

/// What a queue can do and its limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueFeatures {
    /// Ordering groups and deduplication ids (SQS FIFO, Service Bus sessions).
    pub fifo: bool,
    /// The largest body, in bytes.
    pub max_body_bytes: usize,
    /// The most messages of one [`send_batch`](MessageQueue::send_batch) request (a
    /// longer slice is sent in several).
    pub max_batch: usize,
    /// The most messages one [`receive`](MessageQueue::receive) returns.
    pub max_receive: u32,
    /// The longest [`OutgoingMessage::delay`].
    pub max_delay: Duration,
    /// The longest visibility timeout.
    pub max_visibility: Duration,
    /// Deliveries after which a message is moved to the dead-letter queue, when the
    /// queue has one.
    pub dead_letter_after: Option<u32>,
}

/// A message queue. See the [module docs](self).
#[async_trait]
pub trait MessageQueue: Send + Sync {
    /// The queue's name (for logs and errors).
    fn name(&self) -> &str;

    /// What the queue can do.
    fn features(&self) -> QueueFeatures;

    /// Send one message; its id.
    ///
    /// # Errors
    /// A message the queue refuses ([`InvalidInput`](crate::ErrorKind::InvalidInput):
    /// too large, a group on a standard queue, none on a FIFO queue), or the platform's
    /// errors.
    async fn send(&self, message: &OutgoingMessage) -> Result<String> {
        let mut outcomes = self.send_batch(std::slice::from_ref(message)).await?;
        outcomes
            .pop()
            .unwrap_or_else(|| Err(Error::internal("a batch of one gave no outcome")))
    }

    /// Send `messages`: one outcome per message, in order (the id, or why that message
    /// was refused). The whole call fails only when nothing could be sent.
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>>;

    /// Receive up to `options.max_messages` messages, waiting up to `options.wait` for
    /// the first; none is an empty list.
    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>>;

    /// The message of `receipt` is handled: delete it.
    async fn ack(&self, receipt: &Receipt) -> Result<()>;

    /// Acknowledge several deliveries: one outcome per receipt, in order.
    async fn ack_batch(&self, receipts: &[Receipt]) -> Result<Vec<Result<()>>> {
        let mut out = Vec::with_capacity(receipts.len());
        for receipt in receipts {
            out.push(self.ack(receipt).await);
        }
        Ok(out)
    }

    /// The message of `receipt` was not handled: deliver it again after `delay` (zero:
    /// at once). It counts as delivered once more.
    async fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()>;

    /// Keep the message of `receipt` hidden for `visibility` from now (a handler that
    /// needs longer than the visibility timeout).
    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()>;
}

/// Check `message` against `features`: the reason it would be refused, or `None`.
///
/// ```
/// use std::time::Duration;
/// use moodbridge_core::queue::{OutgoingMessage, QueueFeatures, refusal};
/// let features = QueueFeatures {
///     fifo: false, max_body_bytes: 8, max_batch: 10, max_receive: 10,
///     max_delay: Duration::from_secs(900), max_visibility: Duration::from_secs(43_200),
///     dead_letter_after: None,
/// };
/// assert!(refusal(&OutgoingMessage::new("short"), &features).is_none());
/// assert!(refusal(&OutgoingMessage::new("far too long"), &features).unwrap().contains("8 bytes"));
/// assert!(refusal(&OutgoingMessage::new("x").group("g"), &features).unwrap().contains("group"));
/// ```
pub fn refusal(message: &OutgoingMessage, features: &QueueFeatures) -> Option<String> {
    if message.body.len() > features.max_body_bytes {
        return Some(format!(
            "the message body is {} bytes: the queue takes at most {} bytes",
            message.body.len(),
            features.max_body_bytes
        ));
    }
    if message.delay > features.max_delay {
        return Some(format!(
            "a delay of {} s is over the queue's most, {} s",
            message.delay.as_secs(),
            features.max_delay.as_secs()
        ));
    }
    match (features.fifo, &message.group) {
        (true, None) => Some("a FIFO queue needs a group on every message".to_owned()),
        (true, Some(_)) if !message.delay.is_zero() => Some(
            "a FIFO queue cannot delay one message: set a delay on the queue instead".to_owned(),
        ),
        (false, Some(_)) => Some(
            "a standard queue has no ordering groups: send without a group, or use a FIFO queue"
                .to_owned(),
        ),
        _ => None,
    }
}

/// A durable queue in the state store (SQLite or PostgreSQL): the embedded queue, for
/// hosts without a cloud queue, with the same behaviour as SQS — visibility timeouts,
/// delays, delivery counts, FIFO groups with deduplication ids (five minutes), and a
/// dead-letter queue after N deliveries (another queue of the same store). Several
/// processes sharing the store can send and receive; each message goes to one at a
/// time.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions, StoreQueue};
/// use moodbridge_core::state::SqliteStateStore;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Arc::new(SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap());
/// let queue = StoreQueue::new(store.clone(), "cases").unwrap().dead_letter("cases-dlq", 5);
/// queue.send(&OutgoingMessage::new(r#"{"Id":"500A"}"#)).await.unwrap();
/// let got = queue.receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1))).await.unwrap();
/// assert_eq!(got[0].delivery_count, 1);
/// queue.ack(&got[0].receipt).await.unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct StoreQueue {
    store: std::sync::Arc<dyn crate::state::QueueStore>,
    name: String,
    fifo: bool,
    visibility: Duration,
    dead_letter: Option<(String, u32)>,
}

impl fmt::Debug for StoreQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreQueue")
            .field("name", &self.name)
            .field("fifo", &self.fifo)
            .field("dead_letter", &self.dead_letter)
            .finish_non_exhaustive()
    }
}

/// The largest body of the embedded queue (256 KiB).
pub const STORE_MAX_BODY: usize = 262_144;

impl StoreQueue {
    /// Queue `name` of `store`: FIFO when the name ends in `.fifo`; a 30-second
    /// visibility timeout.
    ///
    /// # Errors
    /// An empty name, or one over 80 characters ([`InvalidInput`](crate::ErrorKind::InvalidInput)).
    pub fn new(
        store: std::sync::Arc<dyn crate::state::QueueStore>,
        name: impl Into<String>,
    ) -> Result<Self> {
        let name = name.into();
        if name.trim().is_empty() || name.chars().count() > 80 {
            return Err(Error::invalid_input(format!(
                "queue name {name:?} must have 1 to 80 characters"
            )));
        }
        Ok(StoreQueue {
            store,
            fifo: name.ends_with(".fifo"),
            name,
            visibility: Duration::from_secs(30),
            dead_letter: None,
        })
    }

    /// Hide received messages for `visibility` unless a receive says otherwise.
    #[must_use]
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility;
        self
    }

    /// Move a message to queue `queue` of the same store once it has been delivered
    /// `after` times.
    #[must_use]
    pub fn dead_letter(mut self, queue: impl Into<String>, after: u32) -> Self {
        self.dead_letter = Some((queue.into(), after.max(1)));
        self
    }

    /// Messages visible now.
    ///
    /// # Errors
    /// The store's errors.
    pub async fn depth(&self) -> Result<u64> {
        self.store.queue_depth(&self.name).await
    }

    async fn settle(&self, receipt: &Receipt, settle: crate::state::Settle) -> Result<()> {
        if self
            .store
            .queue_settle(&self.name, receipt.as_str(), settle)
            .await?
        {
            Ok(())
        } else {
            Err(Error::invalid_input(format!(
                "queue {}: the receipt is not that of a message's current delivery",
                self.name
            ))
            .with_hint("a receipt is good until the message is delivered again or acknowledged"))
        }
    }
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

#[async_trait]
impl MessageQueue for StoreQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn features(&self) -> QueueFeatures {
        QueueFeatures {
            fifo: self.fifo,
            max_body_bytes: STORE_MAX_BODY,
            max_batch: 100,
            max_receive: 100,
            max_delay: Duration::from_secs(900),
            max_visibility: Duration::from_secs(43_200),
            dead_letter_after: self.dead_letter.as_ref().map(|(_, n)| *n),
        }
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
        let features = self.features();
        let mut outcomes: Vec<Option<Result<String>>> = vec![None; messages.len()];
        let mut stored = Vec::new();
        let mut at = Vec::new();
        for (i, m) in messages.iter().enumerate() {
            if let Some(why) = refusal(m, &features) {
                outcomes[i] = Some(Err(Error::invalid_input(format!(
                    "queue {}: {why}",
                    self.name
                ))));
                continue;
            }
            stored.push(crate::state::QueuedMessage {
                body: m.body.clone(),
                attributes: serde_json::to_string(&m.attributes)
                    .map_err(|e| Error::internal(format!("attributes as JSON: {e}")))?,
                group: m.group.clone(),
                dedup_id: m.dedup_id.clone().filter(|_| self.fifo),
                delay_ms: ms(m.delay),
            });
            at.push(i);
        }
        if !stored.is_empty() {
            let ids = self.store.queue_send(&self.name, &stored).await?;
            for (i, id) in at.into_iter().zip(ids) {
                outcomes[i] = Some(Ok(id.to_string()));
            }
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::internal("a message was not stored"))))
            .collect())
    }

    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        use rand::RngCore;
        let deadline = std::time::Instant::now() + options.wait;
        let visibility = options
            .visibility
            .unwrap_or(self.visibility)
            .min(self.features().max_visibility);
        loop {
            let mut nonce = [0u8; 12];
            rand::rng().fill_bytes(&mut nonce);
            let request = crate::state::QueueReceive {
                max: options.max_messages.clamp(1, 100),
                visibility_ms: ms(visibility),
                nonce: nonce.iter().map(|b| format!("{b:02x}")).collect(),
                dead_letter: self.dead_letter.clone(),
            };
            let rows = self.store.queue_receive(&self.name, &request).await?;
            if !rows.is_empty() || std::time::Instant::now() >= deadline {
                return rows
                    .into_iter()
                    .map(|r| {
                        Ok(ReceivedMessage {
                            id: r.id.to_string(),
                            body: r.body,
                            attributes: serde_json::from_str(&r.attributes).map_err(|e| {
                                Error::internal(format!("stored attributes are not JSON: {e}"))
                            })?,
                            group: r.group,
                            delivery_count: r.deliveries,
                            sent_at: u64::try_from(r.sent_at_ms)
                                .ok()
                                .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms)),
                            receipt: Receipt::new(r.receipt),
                        })
                    })
                    .collect();
            }
            // Long polling by polling: a message sent meanwhile is seen within 50 ms.
            tokio::time::sleep(Duration::from_millis(50).min(deadline - std::time::Instant::now()))
                .await;
        }
    }

    async fn ack(&self, receipt: &Receipt) -> Result<()> {
        self.settle(receipt, crate::state::Settle::Delete).await
    }

    async fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.settle(
            receipt,
            crate::state::Settle::Release {
                delay_ms: ms(delay),
            },
        )
        .await
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        self.settle(
            receipt,
            crate::state::Settle::Hide {
                for_ms: ms(visibility),
            },
        )
        .await
    }
}

/// Handles one received message for a [`QueueWorker`].
///
/// Implemented for closures `Fn(ReceivedMessage) -> impl Future<Output = Result<()>>`.
#[async_trait]
pub trait MessageHandler: Send + Sync {
    /// Handle `message`: `Ok` acknowledges it, an error lets it come back later.
    async fn handle(&self, message: &ReceivedMessage) -> Result<()>;
}

#[async_trait]
impl<F, Fut> MessageHandler for F
where
    F: Fn(ReceivedMessage) -> Fut + Send + Sync,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    async fn handle(&self, message: &ReceivedMessage) -> Result<()> {
        self(message.clone()).await
    }
}

/// What one [`QueueWorker::run_once`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkReport {
    /// Messages handled and acknowledged.
    pub handled: u64,
    /// Messages whose handler failed: released to come back after a backoff (or, past
    /// the queue's limit, to go to its dead-letter queue).
    pub failed: u64,
}

/// Receives messages and runs a [`MessageHandler`] on each, several at once:
/// - while a handler runs, the message's visibility is extended every half visibility
///   timeout, so a slow handler does not see its message handed to another receiver;
/// - a handler that succeeds acknowledges its message;
/// - a handler that fails releases it with a backoff that doubles with each delivery
///   (from `initial` up to `max`); the queue's dead-letter policy takes it after its
///   last delivery.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moodbridge_core::queue::{MessageQueue, OutgoingMessage, QueueWorker, ReceivedMessage};
/// use moodbridge_core::testing::MemoryQueue;
///
/// let queue = Arc::new(MemoryQueue::new("cases"));
/// queue.send(&OutgoingMessage::new("500A")).await.unwrap();
/// let worker = QueueWorker::new(queue.clone()).wait(Duration::from_millis(100));
/// let report = worker
///     .run_once(&|m: ReceivedMessage| async move {
///         println!("case {}", m.body);
///         Ok(())
///     })
///     .await
///     .unwrap();
/// assert_eq!(report.handled, 1);
/// # });
/// ```
pub struct QueueWorker {
    queue: std::sync::Arc<dyn MessageQueue>,
    visibility: Duration,
    wait: Duration,
    concurrency: usize,
    backoff: (Duration, Duration),
}

impl fmt::Debug for QueueWorker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueWorker")
            .field("queue", &self.queue.name())
            .field("visibility", &self.visibility)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl QueueWorker {
    /// A worker on `queue`: 30-second visibility, 20-second long polls, 8 messages at
    /// once, failures retried after 1 s doubling to at most 5 minutes.
    pub fn new(queue: std::sync::Arc<dyn MessageQueue>) -> Self {
        QueueWorker {
            queue,
            visibility: Duration::from_secs(30),
            wait: Duration::from_secs(20),
            concurrency: 8,
            backoff: (Duration::from_secs(1), Duration::from_secs(300)),
        }
    }

    /// Hide each message for `visibility` at a time (extended while its handler runs).
    #[must_use]
    pub fn visibility(mut self, visibility: Duration) -> Self {
        self.visibility = visibility.max(Duration::from_secs(1));
        self
    }

    /// Wait up to `wait` for messages.
    #[must_use]
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = wait;
        self
    }

    /// Handle up to `n` messages at once (and receive that many at a time).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Release a failed message for `initial` after its first delivery, doubling with
    /// each delivery up to `max`.
    #[must_use]
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = (initial, max.max(initial));
        self
    }

    /// The delay before delivery `count + 1` of a message that failed.
    fn delay_after(&self, count: u32) -> Duration {
        let (initial, max) = self.backoff;
        let factor = 2u32.saturating_pow(count.saturating_sub(1).min(20));
        initial.saturating_mul(factor).min(max)
    }

    /// Receive one batch (waiting up to [`wait`](Self::wait)) and handle it.
    ///
    /// # Errors
    /// The queue's errors on receive. A handler's error is not one: its message is
    /// released and counted in [`WorkReport::failed`].
    pub async fn run_once(&self, handler: &dyn MessageHandler) -> Result<WorkReport> {
        let features = self.queue.features();
        let visibility = self.visibility.min(features.max_visibility);
        let messages = self
            .queue
            .receive(
                &ReceiveOptions::new((self.concurrency as u32).min(features.max_receive))
                    .wait(self.wait)
                    .visibility(visibility),
            )
            .await?;
        let outcomes = futures::future::join_all(
            messages
                .iter()
                .map(|m| self.handle_one(handler, m, visibility)),
        )
        .await;
        let mut report = WorkReport::default();
        for ok in outcomes {
            if ok {
                report.handled += 1;
            } else {
                report.failed += 1;
            }
        }
        Ok(report)
    }

    /// Run `handler` on `message`, extending its visibility meanwhile; settle it.
    async fn handle_one(
        &self,
        handler: &dyn MessageHandler,
        message: &ReceivedMessage,
        visibility: Duration,
    ) -> bool {
        let work = handler.handle(message);
        tokio::pin!(work);
        let beat = visibility / 2;
        let outcome = loop {
            tokio::select! {
                outcome = &mut work => break outcome,
                () = tokio::time::sleep(beat) => {
                    if let Err(e) = self.queue.extend(&message.receipt, visibility).await {
                        tracing::warn!(queue = %self.queue.name(), message_id = %message.id, error = %e,
                            "the visibility of a message being handled could not be extended");
                    }
                }
            }
        };
        match outcome {
            Ok(()) => {
                if let Err(e) = self.queue.ack(&message.receipt).await {
                    tracing::warn!(queue = %self.queue.name(), message_id = %message.id, error = %e,
                        "a handled message could not be acknowledged: it will be delivered again");
                }
                true
            }
            Err(e) => {
                let delay = self
                    .delay_after(message.delivery_count)
                    .min(self.queue.features().max_visibility);
                tracing::warn!(queue = %self.queue.name(), message_id = %message.id,
                    delivery = message.delivery_count, retry_in = ?delay, error = %e,
                    "a message's handler failed");
                if let Err(e) = self.queue.nack(&message.receipt, delay).await {
                    tracing::warn!(queue = %self.queue.name(), message_id = %message.id, error = %e,
                        "a failed message could not be released: it comes back when its visibility ends");
                }
                false
            }
        }
    }

    /// [`run_once`](Self::run_once) until `stop` resolves; the totals.
    ///
    /// # Errors
    /// The first receive error.
    pub async fn run_until(
        &self,
        handler: &dyn MessageHandler,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<WorkReport> {
        tokio::pin!(stop);
        let mut total = WorkReport::default();
        loop {
            tokio::select! {
                () = &mut stop => return Ok(total),
                report = self.run_once(handler) => {
                    let report = report?;
                    total.handled += report.handled;
                    total.failed += report.failed;
                }
            }
        }
    }
}
