//! The storage side of the embedded message queues: what
//! [`StoreQueue`](crate::queue::StoreQueue) asks of a state store. Both state stores
//! implement it (`queue_messages` and `queue_dedup` tables).

use async_trait::async_trait;

use crate::error::Result;

/// How long a FIFO deduplication id is remembered, in milliseconds (five minutes, as
/// on SQS).
pub const DEDUP_WINDOW_MS: i64 = 300_000;

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedMessage {
    /// The body.
    pub body: String,
    /// The attributes, as a JSON object.
    pub attributes: String,
    /// The FIFO group.
    pub group: Option<String>,
    /// The deduplication id: a second message with it within [`DEDUP_WINDOW_MS`] is
    /// not stored (its id is the first's).
    pub dedup_id: Option<String>,
    /// Milliseconds before it becomes visible.
    pub delay_ms: i64,
}

/// What one receive asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueReceive {
    /// The most messages.
    pub max: u32,
    /// How long they stay hidden, in milliseconds.
    pub visibility_ms: i64,
    /// A fresh random text: the receipts of this receive are `<nonce>.<id>`.
    pub nonce: String,
    /// Move messages delivered this many times to this queue instead of delivering
    /// them again.
    pub dead_letter: Option<(String, u32)>,
}

/// A message handed out by a receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueRow {
    /// Its id.
    pub id: i64,
    /// The body.
    pub body: String,
    /// The attributes, as a JSON object.
    pub attributes: String,
    /// The FIFO group.
    pub group: Option<String>,
    /// Deliveries so far, this one included.
    pub deliveries: u32,
    /// When it was sent, ms since the epoch.
    pub sent_at_ms: i64,
    /// This delivery's receipt.
    pub receipt: String,
}

/// What becomes of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Handled: delete the message.
    Delete,
    /// Not handled: visible again after `delay_ms`, the receipt void.
    Release {
        /// Milliseconds from now.
        delay_ms: i64,
    },
    /// Still being handled: hidden for `for_ms` from now.
    Hide {
        /// Milliseconds from now.
        for_ms: i64,
    },
}

/// Durable message queues in a state store. Every queue lives in the same tables, by
/// name; a receive is atomic, so several processes can receive from one queue.
#[async_trait]
pub trait QueueStore: Send + Sync {
    /// Store `messages` in `queue`, in one transaction; their ids, in order (a
    /// deduplicated message has its first copy's id).
    async fn queue_send(&self, queue: &str, messages: &[QueuedMessage]) -> Result<Vec<i64>>;

    /// Hand out up to `request.max` visible messages of `queue`, hiding them.
    async fn queue_receive(&self, queue: &str, request: &QueueReceive) -> Result<Vec<QueueRow>>;

    /// Settle the delivery of `receipt`; `false` when no message has that receipt any
    /// more (acknowledged, or delivered again since).
    async fn queue_settle(&self, queue: &str, receipt: &str, settle: Settle) -> Result<bool>;

    /// Messages of `queue` visible now.
    async fn queue_depth(&self, queue: &str) -> Result<u64>;
}
