//! The embedded queue (`queue::StoreQueue`) on both state stores: the `MessageQueue`
//! contract suite on SQLite and on PostgreSQL (the server `scripts/test.sh` starts), and
//! receivers in two processes' worth of connections sharing one queue, each message
//! handed to exactly one of them.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

mod pg_support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions, StoreQueue};
use moodbridge_core::state::{PostgresStateStore, QueueStore, SqliteStateStore};
use moodbridge_core::testing::{QueueFixture, message_queue_contract};

/// Fresh queues (new names) of one store.
struct Fixture {
    store: Arc<dyn QueueStore>,
    made: AtomicU32,
}

#[async_trait]
impl QueueFixture for Fixture {
    async fn queue(
        &self,
        fifo: bool,
        dead_letter_after: Option<u32>,
    ) -> Option<(Arc<dyn MessageQueue>, Option<Arc<dyn MessageQueue>>)> {
        let n = self.made.fetch_add(1, Ordering::SeqCst);
        let suffix = if fifo { ".fifo" } else { "" };
        let mut queue =
            StoreQueue::new(self.store.clone(), format!("contract-{n}{suffix}")).unwrap();
        let mut dlq = None;
        if let Some(after) = dead_letter_after {
            let name = format!("contract-{n}-dlq");
            queue = queue.dead_letter(&name, after);
            dlq = Some(Arc::new(StoreQueue::new(self.store.clone(), name).unwrap())
                as Arc<dyn MessageQueue>);
        }
        Some((Arc::new(queue), dlq))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_queue_meets_the_contract_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    message_queue_contract(&Fixture {
        store,
        made: AtomicU32::new(0),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_queue_meets_the_contract_on_postgres() {
    let url = pg_support::fresh_database("queue_test").await;
    let store = Arc::new(PostgresStateStore::connect(&url).await.unwrap());
    message_queue_contract(&Fixture {
        store,
        made: AtomicU32::new(0),
    })
    .await;
}

/// Eight receivers on two stores opened on one database: every message is handed to
/// exactly one of them, none lost.
async fn competing_receivers(a: Arc<dyn QueueStore>, b: Arc<dyn QueueStore>) {
    let sender = StoreQueue::new(a.clone(), "shared").unwrap();
    let messages: Vec<OutgoingMessage> = (0..500)
        .map(|i| OutgoingMessage::new(i.to_string()))
        .collect();
    for chunk in messages.chunks(100) {
        for outcome in sender.send_batch(chunk).await.unwrap() {
            outcome.unwrap();
        }
    }
    let mut workers = Vec::new();
    for w in 0..8 {
        let store = if w % 2 == 0 { a.clone() } else { b.clone() };
        workers.push(tokio::spawn(async move {
            let queue = StoreQueue::new(store, "shared").unwrap();
            let mut got = Vec::new();
            loop {
                let batch = queue
                    .receive(&ReceiveOptions::new(7).wait(Duration::from_millis(300)))
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                for m in batch {
                    queue.ack(&m.receipt).await.unwrap();
                    got.push(m.body);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 500, "each message received once");
    assert_eq!(distinct.len(), 500, "no message twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_receivers_on_sqlite_each_get_a_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a = Arc::new(SqliteStateStore::open(&path).await.unwrap());
    let b = Arc::new(SqliteStateStore::open(&path).await.unwrap());
    competing_receivers(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn competing_receivers_on_postgres_each_get_a_message_once() {
    let url = pg_support::fresh_database("queue_test").await;
    let a = Arc::new(PostgresStateStore::connect(&url).await.unwrap());
    let b = Arc::new(PostgresStateStore::connect(&url).await.unwrap());
    competing_receivers(a, b).await;
}
