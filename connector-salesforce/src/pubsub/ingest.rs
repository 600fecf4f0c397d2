//! From a Pub/Sub subscription into the durable event log: each event is appended (its
//! replay id is its id, so a redelivery is a duplicate), then the replay id is committed
//! as the subscription's position; a restarted ingest resumes after it.

use std::sync::Arc;

use futures::StreamExt;
use moodbridge_core::state::{CursorStore, EventLog, NewEvent};
use moodbridge_core::{Error, Result};

use super::client::{PubSubClient, PubSubEvent, ReplayFrom};

/// The cursor-store partition an ingest keeps its position under (its consumer name is
/// the event log source, `pubsub:<topic>`).
pub const INGEST_PARTITION: &str = "pubsub-replay";

/// Moves a topic's events into the [`EventLog`]: appended durably, in order, each once
/// (the log's source is `pubsub:<topic>` and an event's id its replay id), with the
/// replay id committed after each append so that a restart resumes after it. Where
/// there is no position yet it starts from [`start`](Self::start) (default: only new
/// events).
///
/// The event's type is the change event's `entityName` (a platform event's topic
/// otherwise) and its partition key the first record id, so that consumers keep each
/// record's changes in order.
///
/// ```no_run
/// # async fn run(client: connector_salesforce::pubsub::PubSubClient,
/// #     store: std::sync::Arc<moodbridge_core::state::SqliteStateStore>) -> moodbridge_core::Result<()> {
/// use connector_salesforce::pubsub::PubSubIngest;
/// let ingest = PubSubIngest::new(client, "/data/AccountChangeEvent", store.clone(), store);
/// let moved = ingest.run_until(std::future::pending()).await?;
/// # Ok(()) }
/// ```
pub struct PubSubIngest {
    client: PubSubClient,
    topic: String,
    log: Arc<dyn EventLog>,
    cursors: Arc<dyn CursorStore>,
    start: ReplayFrom,
    batch: u32,
}

impl std::fmt::Debug for PubSubIngest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PubSubIngest")
            .field("topic", &self.topic)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl PubSubIngest {
    /// Ingest `topic` from `client` into `log`, keeping the position in `cursors`.
    pub fn new(
        client: PubSubClient,
        topic: impl Into<String>,
        log: Arc<dyn EventLog>,
        cursors: Arc<dyn CursorStore>,
    ) -> Self {
        PubSubIngest {
            client,
            topic: topic.into(),
            log,
            cursors,
            start: ReplayFrom::Latest,
            batch: 100,
        }
    }

    /// Where to start when no position is stored.
    pub fn start(mut self, from: ReplayFrom) -> Self {
        self.start = from;
        self
    }

    /// Events asked for at a time (1 to 100).
    pub fn batch(mut self, events: u32) -> Self {
        self.batch = events;
        self
    }

    /// The event log source of the topic's events.
    pub fn source(&self) -> String {
        format!("pubsub:{}", self.topic)
    }

    /// The stored position: the replay id of the last event appended, if any.
    pub async fn position(&self) -> Result<Option<Vec<u8>>> {
        let Some(cursor) = self
            .cursors
            .cursor(&self.source(), INGEST_PARTITION)
            .await?
        else {
            return Ok(None);
        };
        hex_decode(&cursor.position).map(Some)
    }

    /// Subscribe (after the stored position) and move events until `stop` resolves or the
    /// subscription ends; the number of events appended (duplicates not counted). A
    /// subscription that fails is an error: call again to resume after the last event
    /// appended.
    pub async fn run_until(&self, stop: impl std::future::Future<Output = ()>) -> Result<u64> {
        let from = match self.position().await? {
            Some(id) => ReplayFrom::After(id),
            None => self.start.clone(),
        };
        let mut events = self.client.subscribe(&self.topic, from, self.batch).await?;
        tokio::pin!(stop);
        let mut moved = 0;
        loop {
            let next = tokio::select! {
                () = &mut stop => return Ok(moved),
                next = events.next() => next,
            };
            let Some(event) = next else {
                return Ok(moved);
            };
            let event = event?;
            if self.append(&event).await? {
                moved += 1;
            }
        }
    }

    /// Append one event, then commit its replay id; whether it was new.
    async fn append(&self, event: &PubSubEvent) -> Result<bool> {
        let header = &event.payload["ChangeEventHeader"];
        let event_type = header["entityName"]
            .as_str()
            .unwrap_or(&self.topic)
            .to_owned();
        let replay = hex_encode(&event.replay_id);
        let mut new = NewEvent::new(
            self.source(),
            &replay,
            event_type,
            event.payload.to_string(),
        );
        if let Some(id) = header["recordIds"].get(0).and_then(|v| v.as_str()) {
            new = new.partition(id);
        }
        let appended = self.log.append_events(&[new]).await?;
        let stored = matches!(
            appended.first(),
            Some(moodbridge_core::state::Appended::Stored(_))
        );
        self.cursors
            .commit_cursor(&self.source(), INGEST_PARTITION, &replay)
            .await?;
        Ok(stored)
    }
}

/// A replay id as text: lowercase hex.
fn hex_encode(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

fn hex_decode(text: &str) -> Result<Vec<u8>> {
    hex::decode(text).map_err(|_| {
        Error::new(
            moodbridge_core::ErrorKind::Integrity,
            format!("the stored Pub/Sub position {text:?} is not a replay id"),
        )
        .with_hint("reset the ingest's cursor (consumer pubsub:<topic>) to start over")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_ids_round_trip_as_hex() {
        let id = 4_242u64.to_be_bytes().to_vec();
        assert_eq!(hex_decode(&hex_encode(&id)).unwrap(), id);
        assert!(hex_decode("abc").is_err());
        assert!(hex_decode("zz").is_err());
    }
}
