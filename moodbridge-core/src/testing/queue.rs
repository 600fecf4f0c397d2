//! The [`MessageQueue`] contract suite, and [`MemoryQueue`]: an in-process queue with
//! the semantics the suite asks for (the reference the suite is checked against).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;

use crate::error::{Error, ErrorKind, Result};
use crate::queue::{
    MessageQueue, OutgoingMessage, QueueFeatures, Receipt, ReceiveOptions, ReceivedMessage, refusal,
};

/// An in-process [`MessageQueue`]: visibility timeouts, delays, delivery counts, FIFO
/// groups with deduplication (5 minutes), and a dead-letter queue after N deliveries.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use moodbridge_core::queue::{MessageQueue, OutgoingMessage, ReceiveOptions};
/// use moodbridge_core::testing::MemoryQueue;
///
/// let dlq = Arc::new(MemoryQueue::new("cases-dlq"));
/// let queue = MemoryQueue::new("cases").dead_letter(dlq.clone(), 1);
/// queue.send(&OutgoingMessage::new("poison")).await.unwrap();
/// let first = queue.receive(&ReceiveOptions::new(1)).await.unwrap();
/// queue.nack(&first[0].receipt, Duration::ZERO).await.unwrap();
/// assert!(queue.receive(&ReceiveOptions::new(1)).await.unwrap().is_empty());
/// assert_eq!(dlq.receive(&ReceiveOptions::new(1)).await.unwrap()[0].body, "poison");
/// # });
/// ```
pub struct MemoryQueue {
    name: String,
    fifo: bool,
    visibility: Duration,
    dead_letter: Option<(Arc<MemoryQueue>, u32)>,
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    next: u64,
    messages: Vec<Stored>,
    /// Deduplication ids seen, with when.
    dedup: HashMap<String, (Instant, String)>,
}

struct Stored {
    id: String,
    message: OutgoingMessage,
    sent_at: SystemTime,
    visible_at: Instant,
    deliveries: u32,
    /// The receipt of the current delivery, while one is out.
    receipt: Option<String>,
}

const DEDUP_WINDOW: Duration = Duration::from_secs(300);

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("name", &self.name)
            .field("fifo", &self.fifo)
            .finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// A standard queue named `name`, with a 30-second visibility timeout.
    pub fn new(name: impl Into<String>) -> Self {
        MemoryQueue {
            name: name.into(),
            fifo: false,
            visibility: Duration::from_secs(30),
            dead_letter: None,
            state: Mutex::default(),
        }
    }

    /// A FIFO queue: groups in order, deduplication ids.
    #[must_use]
    pub fn fifo(mut self) -> Self {
        self.fifo = true;
        self
    }

    /// Move a message to `queue` once it has been delivered `after` times.
    #[must_use]
    pub fn dead_letter(mut self, queue: Arc<MemoryQueue>, after: u32) -> Self {
        self.dead_letter = Some((queue, after));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn take_visible(&self, options: &ReceiveOptions) -> Vec<ReceivedMessage> {
        let now = Instant::now();
        let visibility = options.visibility.unwrap_or(self.visibility);
        let mut state = self.lock();
        let mut out = Vec::new();
        let mut dead = Vec::new();
        // FIFO: a group waits behind its first message that is not available (out with
        // a receiver, or delayed); earlier ones may go out together, in order.
        let mut blocked: HashSet<String> = HashSet::new();
        let mut next = state.next;
        for (i, m) in state.messages.iter_mut().enumerate() {
            if out.len() as u32 >= options.max_messages {
                break;
            }
            let group = m.message.group.clone().filter(|_| self.fifo);
            if group.as_ref().is_some_and(|g| blocked.contains(g)) {
                continue;
            }
            if m.visible_at > now {
                if let Some(g) = group {
                    blocked.insert(g);
                }
                continue;
            }
            if let Some((_, after)) = &self.dead_letter
                && m.deliveries >= *after
            {
                dead.push(i);
                continue;
            }
            m.deliveries += 1;
            m.visible_at = now + visibility;
            next += 1;
            let receipt = format!("{}-{next}", m.id);
            m.receipt = Some(receipt.clone());
            out.push(ReceivedMessage {
                id: m.id.clone(),
                body: m.message.body.clone(),
                attributes: m.message.attributes.clone(),
                group: m.message.group.clone(),
                delivery_count: m.deliveries,
                sent_at: Some(m.sent_at),
                receipt: Receipt::new(receipt),
            });
        }
        state.next = next;
        let moved: Vec<Stored> = dead
            .into_iter()
            .rev()
            .map(|i| state.messages.remove(i))
            .collect();
        drop(state);
        if let Some((dlq, _)) = &self.dead_letter {
            let mut target = dlq.lock();
            for mut m in moved.into_iter().rev() {
                m.visible_at = now;
                m.receipt = None;
                m.deliveries = 0;
                target.messages.push(m);
            }
        }
        out
    }

    fn with_receipt<T>(
        &self,
        receipt: &Receipt,
        f: impl FnOnce(&mut QueueState, usize) -> T,
    ) -> Result<T> {
        let mut state = self.lock();
        let at = state
            .messages
            .iter()
            .position(|m| m.receipt.as_deref() == Some(receipt.as_str()))
            .ok_or_else(|| {
                Error::invalid_input(format!(
                    "queue {}: the receipt is not that of a message's current delivery",
                    self.name
                ))
                .with_hint("a receipt is good until the message is delivered again or acknowledged")
            })?;
        Ok(f(&mut state, at))
    }
}

#[async_trait]
impl MessageQueue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn features(&self) -> QueueFeatures {
        QueueFeatures {
            fifo: self.fifo,
            max_body_bytes: 262_144,
            max_batch: 10,
            max_receive: 10,
            max_delay: Duration::from_secs(900),
            max_visibility: Duration::from_secs(43_200),
            dead_letter_after: self.dead_letter.as_ref().map(|(_, n)| *n),
        }
    }

    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
        let features = self.features();
        let now = Instant::now();
        let mut state = self.lock();
        state
            .dedup
            .retain(|_, (at, _)| now.duration_since(*at) < DEDUP_WINDOW);
        Ok(messages
            .iter()
            .map(|m| {
                if let Some(why) = refusal(m, &features) {
                    return Err(Error::invalid_input(format!("queue {}: {why}", self.name)));
                }
                if let Some(d) = m.dedup_id.as_ref().filter(|_| self.fifo)
                    && let Some((_, id)) = state.dedup.get(d)
                {
                    return Ok(id.clone());
                }
                state.next += 1;
                let id = format!("m{}", state.next);
                if let Some(d) = m.dedup_id.as_ref().filter(|_| self.fifo) {
                    state.dedup.insert(d.clone(), (now, id.clone()));
                }
                state.messages.push(Stored {
                    id: id.clone(),
                    message: m.clone(),
                    sent_at: SystemTime::now(),
                    visible_at: now + m.delay,
                    deliveries: 0,
                    receipt: None,
                });
                Ok(id)
            })
            .collect())
    }

    async fn receive(&self, options: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        let deadline = Instant::now() + options.wait;
        loop {
            let got = self.take_visible(options);
            if !got.is_empty() || Instant::now() >= deadline {
                return Ok(got);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn ack(&self, receipt: &Receipt) -> Result<()> {
        self.with_receipt(receipt, |state, at| {
            state.messages.remove(at);
        })
    }

    async fn nack(&self, receipt: &Receipt, delay: Duration) -> Result<()> {
        self.with_receipt(receipt, |state, at| {
            state.messages[at].visible_at = Instant::now() + delay;
            state.messages[at].receipt = None;
        })
    }

    async fn extend(&self, receipt: &Receipt, visibility: Duration) -> Result<()> {
        self.with_receipt(receipt, |state, at| {
            state.messages[at].visible_at = Instant::now() + visibility;
        })
    }
}

/// What the [`message_queue_contract`] is run on.
#[async_trait]
pub trait QueueFixture: Send + Sync {
    /// A new, empty queue: FIFO when `fifo` (`None` when the platform has no FIFO
    /// queues). With `dead_letter_after`, the queue moves a message to the returned
    /// dead-letter queue once it has been delivered that many times.
    async fn queue(
        &self,
        fifo: bool,
        dead_letter_after: Option<u32>,
    ) -> Option<(Arc<dyn MessageQueue>, Option<Arc<dyn MessageQueue>>)>;
}

/// Receive until `n` messages have come or `within` has passed.
async fn drain(queue: &dyn MessageQueue, n: usize, within: Duration) -> Vec<ReceivedMessage> {
    let deadline = Instant::now() + within;
    let mut out = Vec::new();
    while out.len() < n && Instant::now() < deadline {
        let got = queue
            .receive(
                &ReceiveOptions::new(queue.features().max_receive)
                    .wait(Duration::from_secs(1))
                    .visibility(Duration::from_secs(30)),
            )
            .await
            .expect("receive");
        out.extend(got);
    }
    out
}

/// Nothing is delivered within `within`.
async fn assert_empty(queue: &dyn MessageQueue, within: Duration, what: &str) {
    let got = queue
        .receive(&ReceiveOptions::new(10).wait(within))
        .await
        .expect("receive");
    assert!(
        got.is_empty(),
        "{what}: expected nothing, got {:?}",
        got.iter().map(|m| &m.body).collect::<Vec<_>>()
    );
}

/// The [`MessageQueue`] contract: every implementation must pass it. It checks, on
/// fresh queues from `fixture`:
/// - a round trip: id, body, attributes and delivery count as sent; nothing after `ack`;
/// - a visibility timeout that runs out delivers the message again, counted;
/// - `nack` delivers again at once or after its delay; `extend` keeps a message hidden;
/// - a delayed message stays hidden for its delay;
/// - a batch with one refused message sends the others and says which failed;
/// - long polling returns as soon as a message arrives;
/// - dead-lettering after N deliveries (where the fixture gives a dead-letter queue);
/// - FIFO queues: per-group order, one message of a group out at a time, and
///   deduplication by id.
///
/// The suite waits on real timeouts (a few seconds in all).
///
/// # Panics
/// On the first broken rule, with a message naming it.
pub async fn message_queue_contract(fixture: &dyn QueueFixture) {
    let (queue, _) = fixture
        .queue(false, None)
        .await
        .expect("every platform has standard queues");
    let q = &*queue;
    let features = q.features();

    // Round trip.
    let sent = OutgoingMessage::new(r#"{"Id":"500A","Status":"Closed"}"#)
        .attribute("type", "case.closed")
        .attribute("source", "apex");
    let id = q.send(&sent).await.expect("send");
    let got = drain(q, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "a sent message is received");
    let m = &got[0];
    assert_eq!(m.id, id, "the id send gave is the one received");
    assert_eq!(m.body, sent.body, "the body");
    assert_eq!(m.attributes, sent.attributes, "the attributes");
    assert_eq!(m.delivery_count, 1, "a first delivery counts 1");
    q.ack(&m.receipt).await.expect("ack");
    assert_empty(q, Duration::from_millis(1_200), "after ack").await;

    // A visibility timeout that runs out.
    q.send(&OutgoingMessage::new("unacked"))
        .await
        .expect("send");
    let got = q
        .receive(
            &ReceiveOptions::new(1)
                .wait(Duration::from_secs(5))
                .visibility(Duration::from_secs(1)),
        )
        .await
        .expect("receive");
    assert_eq!(got.len(), 1);
    assert_empty(q, Duration::ZERO, "while the message is hidden").await;
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let again = drain(q, 1, Duration::from_secs(5)).await;
    assert_eq!(again.len(), 1, "an unacknowledged message comes back");
    assert_eq!(again[0].id, got[0].id);
    assert_eq!(again[0].delivery_count, 2, "the second delivery counts 2");

    // nack at once, nack with a delay, extend.
    q.nack(&again[0].receipt, Duration::ZERO)
        .await
        .expect("nack");
    let third = drain(q, 1, Duration::from_secs(5)).await;
    assert_eq!(
        third.len(),
        1,
        "a message nacked without delay comes back at once"
    );
    assert_eq!(third[0].delivery_count, 3);
    q.nack(&third[0].receipt, Duration::from_secs(2))
        .await
        .expect("nack with a delay");
    assert_empty(q, Duration::from_millis(1_000), "during a nack's delay").await;
    let fourth = drain(q, 1, Duration::from_secs(5)).await;
    assert_eq!(
        fourth.len(),
        1,
        "a nacked message comes back after its delay"
    );
    q.extend(&fourth[0].receipt, Duration::from_secs(4))
        .await
        .expect("extend");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_empty(q, Duration::from_millis(1_500), "while extended").await;
    q.ack(&fourth[0].receipt).await.expect("ack after extend");

    // A delayed message.
    q.send(&OutgoingMessage::new("later").delay(Duration::from_secs(2)))
        .await
        .expect("send delayed");
    assert_empty(q, Duration::from_millis(1_000), "during a message's delay").await;
    let later = drain(q, 1, Duration::from_secs(5)).await;
    assert_eq!(later.len(), 1, "a delayed message arrives after its delay");
    q.ack(&later[0].receipt).await.expect("ack");

    // A batch with one refused message.
    let mut batch: Vec<OutgoingMessage> = (0..features.max_batch.min(10) - 1)
        .map(|i| OutgoingMessage::new(format!("batch {i}")))
        .collect();
    batch.insert(
        3,
        OutgoingMessage::new("x".repeat(features.max_body_bytes + 1)),
    );
    let outcomes = q.send_batch(&batch).await.expect("send_batch");
    assert_eq!(outcomes.len(), batch.len(), "one outcome per message");
    for (i, outcome) in outcomes.iter().enumerate() {
        if i == 3 {
            let err = outcome
                .as_ref()
                .expect_err("the oversized message is refused");
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        } else {
            assert!(outcome.is_ok(), "message {i} of the batch: {outcome:?}");
        }
    }
    let got = drain(q, batch.len() - 1, Duration::from_secs(10)).await;
    let mut bodies: Vec<&str> = got.iter().map(|m| m.body.as_str()).collect();
    bodies.sort_unstable();
    let mut expected: Vec<String> = (0..batch.len() - 1).map(|i| format!("batch {i}")).collect();
    expected.sort();
    assert_eq!(bodies, expected, "the batch's other messages all arrive");
    let acks = q
        .ack_batch(&got.iter().map(|m| m.receipt.clone()).collect::<Vec<_>>())
        .await
        .expect("ack_batch");
    assert!(acks.iter().all(Result::is_ok), "{acks:?}");
    assert_empty(q, Duration::from_millis(500), "after ack_batch").await;

    // Long polling returns when a message arrives, not at the end of the wait.
    let (sender, body) = (queue.clone(), "wake up".to_owned());
    let send_later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        sender.send(&OutgoingMessage::new(body)).await
    });
    let started = Instant::now();
    let got = q
        .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(10)))
        .await
        .expect("long poll");
    let waited = started.elapsed();
    send_later.await.expect("sender").expect("send");
    assert_eq!(got.len(), 1, "the long poll got the message");
    assert!(
        waited < Duration::from_secs(6),
        "a long poll returns when a message arrives (waited {waited:?})"
    );
    q.ack(&got[0].receipt).await.expect("ack");

    // Dead letters.
    if let Some((queue, Some(dlq))) = fixture.queue(false, Some(2)).await {
        let q = &*queue;
        assert_eq!(q.features().dead_letter_after, Some(2));
        q.send(&OutgoingMessage::new("poison").attribute("kind", "bad"))
            .await
            .expect("send");
        for delivery in 1..=2 {
            let got = drain(q, 1, Duration::from_secs(5)).await;
            assert_eq!(got.len(), 1, "delivery {delivery} of 2");
            q.nack(&got[0].receipt, Duration::ZERO).await.expect("nack");
        }
        assert_empty(q, Duration::from_millis(1_500), "after the last delivery").await;
        let dead = drain(&*dlq, 1, Duration::from_secs(5)).await;
        assert_eq!(dead.len(), 1, "the message is in the dead-letter queue");
        assert_eq!(dead[0].body, "poison");
        assert_eq!(
            dead[0].attributes.get("kind").map(String::as_str),
            Some("bad")
        );
    }

    // FIFO.
    if let Some((queue, _)) = fixture.queue(true, None).await {
        let q = &*queue;
        assert!(q.features().fifo);
        let err = q
            .send(&OutgoingMessage::new("no group"))
            .await
            .expect_err("a FIFO queue refuses a message without a group");
        assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
        let mut messages = Vec::new();
        for i in 0..6 {
            for group in ["A", "B"] {
                messages.push(
                    OutgoingMessage::new(format!("{group}{i}"))
                        .group(group)
                        .dedup_id(format!("{group}-{i}")),
                );
            }
        }
        // A duplicate of A0: accepted, not delivered.
        messages.push(OutgoingMessage::new("A0").group("A").dedup_id("A-0"));
        for chunk in messages.chunks(q.features().max_batch) {
            for outcome in q.send_batch(chunk).await.expect("send FIFO batch") {
                outcome.expect("a FIFO message is accepted");
            }
        }
        let mut order: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut total = 0;
        while total < 12 && Instant::now() < deadline {
            let got = q
                .receive(&ReceiveOptions::new(10).wait(Duration::from_secs(1)))
                .await
                .expect("receive");
            for m in &got {
                let group = m.group.clone().expect("a FIFO message has its group");
                order.entry(group).or_default().push(m.body.clone());
            }
            total += got.len();
            let receipts: Vec<Receipt> = got.iter().map(|m| m.receipt.clone()).collect();
            for outcome in q.ack_batch(&receipts).await.expect("ack") {
                outcome.expect("ack");
            }
        }
        assert_eq!(
            order.get("A").cloned().unwrap_or_default(),
            (0..6).map(|i| format!("A{i}")).collect::<Vec<_>>(),
            "group A in the order sent, the duplicate dropped"
        );
        assert_eq!(
            order.get("B").cloned().unwrap_or_default(),
            (0..6).map(|i| format!("B{i}")).collect::<Vec<_>>(),
            "group B in the order sent"
        );
        assert_empty(q, Duration::from_millis(1_200), "after the FIFO messages").await;

        // A group's next message waits while one is out.
        q.send(&OutgoingMessage::new("C0").group("C").dedup_id("C-0"))
            .await
            .expect("send");
        q.send(&OutgoingMessage::new("C1").group("C").dedup_id("C-1"))
            .await
            .expect("send");
        let first = q
            .receive(&ReceiveOptions::new(1).wait(Duration::from_secs(5)))
            .await
            .expect("receive");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].body, "C0");
        assert_empty(q, Duration::from_millis(800), "while C0 is out, C1 waits").await;
        q.ack(&first[0].receipt).await.expect("ack");
        let next = drain(q, 1, Duration::from_secs(5)).await;
        assert_eq!(next.first().map(|m| m.body.as_str()), Some("C1"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(
        clippy::unwrap_used,
        reason = "test code: a panic is the failure report"
    )]
    use futures::FutureExt;

    use super::*;

    /// Memory queues; with `lax`, nacks ignore their delay (a broken queue).
    struct Memory {
        lax: bool,
    }

    /// A queue that redelivers a nacked message at once, whatever the delay.
    struct Lax(MemoryQueue);

    #[async_trait]
    impl MessageQueue for Lax {
        fn name(&self) -> &str {
            self.0.name()
        }
        fn features(&self) -> QueueFeatures {
            self.0.features()
        }
        async fn send_batch(&self, m: &[OutgoingMessage]) -> Result<Vec<Result<String>>> {
            self.0.send_batch(m).await
        }
        async fn receive(&self, o: &ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
            self.0.receive(o).await
        }
        async fn ack(&self, r: &Receipt) -> Result<()> {
            self.0.ack(r).await
        }
        async fn nack(&self, r: &Receipt, _: Duration) -> Result<()> {
            self.0.nack(r, Duration::ZERO).await
        }
        async fn extend(&self, r: &Receipt, v: Duration) -> Result<()> {
            self.0.extend(r, v).await
        }
    }

    #[async_trait]
    impl QueueFixture for Memory {
        async fn queue(
            &self,
            fifo: bool,
            dead_letter_after: Option<u32>,
        ) -> Option<(Arc<dyn MessageQueue>, Option<Arc<dyn MessageQueue>>)> {
            let mut queue = MemoryQueue::new("contract");
            if fifo {
                queue = queue.fifo();
            }
            let mut dlq = None;
            if let Some(after) = dead_letter_after {
                let d = Arc::new(MemoryQueue::new("contract-dlq"));
                queue = queue.dead_letter(d.clone(), after);
                dlq = Some(d as Arc<dyn MessageQueue>);
            }
            let queue: Arc<dyn MessageQueue> = if self.lax {
                Arc::new(Lax(queue))
            } else {
                Arc::new(queue)
            };
            Some((queue, dlq))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_memory_queue_meets_the_contract_and_a_broken_one_does_not() {
        message_queue_contract(&Memory { lax: false }).await;
        let broken = std::panic::AssertUnwindSafe(message_queue_contract(&Memory { lax: true }))
            .catch_unwind()
            .await;
        let reason = broken.expect_err("a queue that ignores a nack's delay fails the contract");
        let text = reason.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("nack's delay"), "{text}");
    }

    #[tokio::test]
    async fn a_stale_receipt_is_refused_with_a_hint() {
        let queue = MemoryQueue::new("q");
        queue.send(&OutgoingMessage::new("a")).await.unwrap();
        let got = queue.receive(&ReceiveOptions::new(1)).await.unwrap();
        queue.ack(&got[0].receipt).await.unwrap();
        let err = queue.ack(&got[0].receipt).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.hint().contains("acknowledged"), "{err:?}");
        assert!(format!("{:?}", got[0].receipt).starts_with("Receipt("));
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_worker_extends_a_slow_handlers_message_and_backs_off_a_failed_one() {
        use std::sync::atomic::{AtomicU32, Ordering};

        use crate::queue::{QueueWorker, WorkReport};

        let queue = Arc::new(MemoryQueue::new("work"));
        queue.send(&OutgoingMessage::new("slow")).await.unwrap();
        let worker = QueueWorker::new(queue.clone())
            .visibility(Duration::from_secs(2))
            .wait(Duration::from_millis(200))
            .backoff(Duration::from_millis(600), Duration::from_secs(5));
        // A handler more than twice as slow as the visibility timeout (extended every
        // second): while it runs, the message is not handed out again.
        let watcher = queue.clone();
        let stolen = tokio::spawn(async move {
            let mut stolen = 0;
            for _ in 0..30 {
                tokio::time::sleep(Duration::from_millis(150)).await;
                stolen += watcher
                    .receive(&ReceiveOptions::new(10))
                    .await
                    .unwrap()
                    .len();
            }
            stolen
        });
        let report = worker
            .run_once(&|_: ReceivedMessage| async {
                tokio::time::sleep(Duration::from_millis(4_500)).await;
                Ok(())
            })
            .await
            .unwrap();
        assert_eq!(
            report,
            WorkReport {
                handled: 1,
                failed: 0
            }
        );
        assert_eq!(
            stolen.await.unwrap(),
            0,
            "the message stayed hidden while handled"
        );
        assert!(
            queue
                .receive(&ReceiveOptions::new(10))
                .await
                .unwrap()
                .is_empty(),
            "acknowledged"
        );

        // A failing handler: released, back after the backoff (600 ms), counted 2.
        queue
            .send(&OutgoingMessage::new("fails once"))
            .await
            .unwrap();
        let calls = Arc::new(AtomicU32::new(0));
        let handler = {
            let calls = calls.clone();
            move |m: ReceivedMessage| {
                let calls = calls.clone();
                async move {
                    calls.fetch_add(1, Ordering::SeqCst);
                    if m.delivery_count == 1 {
                        Err(Error::unavailable("the warehouse is down"))
                    } else {
                        Ok(())
                    }
                }
            }
        };
        let first = worker.run_once(&handler).await.unwrap();
        assert_eq!(
            first,
            WorkReport {
                handled: 0,
                failed: 1
            }
        );
        let early = queue
            .receive(&ReceiveOptions::new(1).wait(Duration::from_millis(300)))
            .await
            .unwrap();
        assert!(early.is_empty(), "not back before its backoff");
        tokio::time::sleep(Duration::from_millis(400)).await;
        let second = worker.run_once(&handler).await.unwrap();
        assert_eq!(
            second,
            WorkReport {
                handled: 1,
                failed: 0
            }
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
