//! Cursors: where a subscription keeps its place in a stream of events.

use std::time::SystemTime;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;

/// A committed position of one consumer in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredCursor {
    /// The consumer (a subscription's name).
    pub consumer: String,
    /// The partition of the stream (a channel, a topic partition, a shard).
    pub partition: String,
    /// The position, opaque to the store: a replay id, a sequence number, a token.
    pub position: String,
    /// 1 for the first commit, then one more at every commit: a fenced commit
    /// ([`CursorStore::commit_cursor_if`]) names the sequence it read.
    pub sequence: i64,
    /// When it was committed.
    pub committed_at: SystemTime,
}

/// Where subscriptions keep their place: one position per consumer and partition,
/// committed once the events up to it are handled, read back on restart.
///
/// The state stores implement it ([`StateStore`](super::StateStore) is a
/// `CursorStore`), in the same database as the sync state. Every implementation passes
/// `testing::cursor_store_contract`.
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// use moodbridge_core::state::{CursorStore, SqliteStateStore};
/// let dir = tempfile::tempdir().unwrap();
/// let store = SqliteStateStore::open(&dir.path().join("state.db")).await.unwrap();
/// assert!(store.cursor("case-changes", "/data/CaseChangeEvent").await.unwrap().is_none());
/// store.commit_cursor("case-changes", "/data/CaseChangeEvent", "8123").await.unwrap();
/// let at = store.cursor("case-changes", "/data/CaseChangeEvent").await.unwrap().unwrap();
/// assert_eq!((at.position.as_str(), at.sequence), ("8123", 1));
/// # });
/// ```
#[async_trait]
pub trait CursorStore: Send + Sync {
    /// The committed position of `consumer` in `partition`, if any.
    async fn cursor(&self, consumer: &str, partition: &str) -> Result<Option<StoredCursor>>;

    /// Commit `position` for `consumer` in `partition`; the new sequence.
    async fn commit_cursor(&self, consumer: &str, partition: &str, position: &str) -> Result<i64>;

    /// Commit `position` only if the committed sequence is still `expected` (`0`: no
    /// cursor yet) — for two workers that must not both advance one consumer. A
    /// mismatch is a [`Conflict`](crate::ErrorKind::Conflict) and changes nothing.
    async fn commit_cursor_if(
        &self,
        consumer: &str,
        partition: &str,
        position: &str,
        expected: i64,
    ) -> Result<i64>;

    /// Every cursor of `consumer`, by partition.
    async fn cursors(&self, consumer: &str) -> Result<Vec<StoredCursor>>;

    /// Forget every cursor of `consumer` (it starts over from its configured start); the
    /// number forgotten.
    async fn reset_cursors(&self, consumer: &str) -> Result<u64>;
}
