//! Where events go: [`EventRouter`] sends each event to the first route that matches
//! its type, source or body; [`SinkHandler`] writes events as records to a sync sink
//! through a pipeline's mapping and rules; [`SyncTrigger`] runs a pipeline's
//! incremental sync when an event says records changed.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;

use super::{EventHandler, FilterPolicy, Pipeline, SyncEngine};
use crate::catalog::StreamDescriptor;
use crate::error::{Error, ErrorKind, Result};
use crate::record::{Record, RecordBatch};
use crate::state::StoredEvent;
use crate::sync::{FailureKind, SyncSink, SyncSource, WriteMode};

/// What a route of an [`EventRouter`] matches: every part given must match.
///
/// A type or source pattern is exact, or ends in `*` for a prefix (`case.*`); the body
/// is matched by an Amazon SNS filter policy ([`FilterPolicy`]).
///
/// ```
/// use moodbridge_core::engine::{FilterPolicy, Match};
/// let urgent_cases = Match::event_type("case.*")
///     .body(FilterPolicy::parse(&serde_json::json!({"Priority": ["High"]})).unwrap());
/// # let _ = urgent_cases;
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Match {
    event_type: Option<String>,
    source: Option<String>,
    body: Option<FilterPolicy>,
}

impl Match {
    /// Every event.
    pub fn any() -> Self {
        Match::default()
    }

    /// Events of type `pattern` (exact, or a prefix ending in `*`).
    pub fn event_type(pattern: impl Into<String>) -> Self {
        Match::any().and_type(pattern)
    }

    /// Events from source `pattern` (exact, or a prefix ending in `*`).
    pub fn source(pattern: impl Into<String>) -> Self {
        Match::any().and_source(pattern)
    }

    /// And of type `pattern`.
    pub fn and_type(mut self, pattern: impl Into<String>) -> Self {
        self.event_type = Some(pattern.into());
        self
    }

    /// And from source `pattern`.
    pub fn and_source(mut self, pattern: impl Into<String>) -> Self {
        self.source = Some(pattern.into());
        self
    }

    /// And whose JSON body matches `policy`.
    pub fn body(mut self, policy: FilterPolicy) -> Self {
        self.body = Some(policy);
        self
    }

    /// Whether `event` matches.
    ///
    /// ```
    /// use moodbridge_core::engine::Match;
    /// use moodbridge_core::state::{NewEvent, StoredEvent};
    /// let event = StoredEvent { sequence: 1, event: NewEvent::new("outbound:prod", "n1", "Case", "{}") };
    /// assert!(Match::event_type("Case").and_source("outbound:*").matches(&event));
    /// assert!(!Match::event_type("Cas").matches(&event));
    /// ```
    pub fn matches(&self, event: &StoredEvent) -> bool {
        fn like(pattern: &str, value: &str) -> bool {
            match pattern.strip_suffix('*') {
                Some(prefix) => value.starts_with(prefix),
                None => pattern == value,
            }
        }
        if let Some(p) = &self.event_type
            && !like(p, &event.event.event_type)
        {
            return false;
        }
        if let Some(p) = &self.source
            && !like(p, &event.event.source)
        {
            return false;
        }
        if let Some(policy) = &self.body {
            let body = serde_json::from_str(&event.event.body).unwrap_or(serde_json::Value::Null);
            return policy.matches(&body);
        }
        true
    }
}

/// Content-based routing: each event goes to the handler of the first route that
/// matches it, or to the fallback; with none, it is passed over (and logged at debug).
/// A router is itself a handler, so a consumer's retries and dead letters apply to the
/// route's handler.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::{Arc, Mutex};
/// use moodbridge_core::engine::{EventHandler, EventRouter, Match};
/// use moodbridge_core::state::{NewEvent, StoredEvent};
///
/// let routed = Arc::new(Mutex::new(Vec::new()));
/// let to = |name: &'static str| {
///     let routed = routed.clone();
///     move |_: StoredEvent| {
///         routed.lock().unwrap().push(name);
///         async { Ok(()) }
///     }
/// };
/// let router = EventRouter::new()
///     .route(Match::event_type("case.*"), to("cases"))
///     .route(Match::source("outbound:*"), to("outbound"))
///     .fallback(to("other"));
/// for (source, kind) in [("apex", "case.closed"), ("outbound:prod", "Contact"), ("apex", "ping")] {
///     let event = StoredEvent { sequence: 1, event: NewEvent::new(source, "1", kind, "{}") };
///     router.handle(&event).await.unwrap();
/// }
/// assert_eq!(*routed.lock().unwrap(), ["cases", "outbound", "other"]);
/// # });
/// ```
#[derive(Clone, Default)]
pub struct EventRouter {
    routes: Vec<(Match, Arc<dyn EventHandler>)>,
    fallback: Option<Arc<dyn EventHandler>>,
}

impl std::fmt::Debug for EventRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventRouter")
            .field(
                "routes",
                &self.routes.iter().map(|(m, _)| m).collect::<Vec<_>>(),
            )
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl EventRouter {
    /// A router with no routes.
    pub fn new() -> Self {
        EventRouter::default()
    }

    /// Send events matching `when` to `handler` (routes are tried in the order added).
    pub fn route(mut self, when: Match, handler: impl EventHandler + 'static) -> Self {
        self.routes.push((when, Arc::new(handler)));
        self
    }

    /// Send events no route matches to `handler`.
    pub fn fallback(mut self, handler: impl EventHandler + 'static) -> Self {
        self.fallback = Some(Arc::new(handler));
        self
    }
}

#[async_trait]
impl EventHandler for EventRouter {
    async fn handle(&self, event: &StoredEvent) -> Result<()> {
        let handler = self
            .routes
            .iter()
            .find(|(m, _)| m.matches(event))
            .map(|(_, h)| h)
            .or(self.fallback.as_ref());
        match handler {
            Some(h) => h.handle(event).await,
            None => {
                tracing::debug!(
                    sequence = event.sequence,
                    event_type = %event.event.event_type,
                    "no route for an event"
                );
                Ok(())
            }
        }
    }
}

/// Writes each event as one record of a pipeline's stream to a sync sink: the JSON body
/// (or the object at [`at`](Self::at) in it) becomes the record, the stream's mapping,
/// cleaning and rules apply, and the stream's write mode (an upsert by its key, so a
/// redelivered event writes the same) is used. A record the rules refuse, or the sink
/// rejects, fails the event — the consumer dead-letters it with the reason; a temporary
/// sink failure is retried by the consumer's policy.
///
/// The sink's stream is begun once, before the first write (a table sink makes its
/// table then, keyed by the upsert key), and each write is flushed before the event
/// counts as handled, so a sink that buffers loses nothing when the consumer's position
/// moves on.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use moodbridge_core::engine::{EventHandler, Pipeline, SinkHandler};
/// use moodbridge_core::state::{NewEvent, StoredEvent};
/// use moodbridge_core::testing::MemorySink;
///
/// let pipeline = Pipeline::from_toml(r#"
///     name = "case-events"
///     [[streams]]
///     name = "Case"
///     write = { mode = "upsert", key = ["Id"] }
///     validate = [{ rule = "required", field = "Id" }]
/// "#).unwrap();
/// let sink = Arc::new(MemorySink::new());
/// let handler = SinkHandler::new(Arc::new(pipeline), "Case", sink.clone()).unwrap();
/// let body = r#"{"Id": "500A", "Status": "Closed"}"#;
/// let event = StoredEvent { sequence: 1, event: NewEvent::new("apex", "1", "case.closed", body) };
/// handler.handle(&event).await.unwrap();
/// handler.handle(&event).await.unwrap(); // redelivered: the same record
/// assert_eq!(sink.len("Case"), 1);
/// # });
/// ```
#[derive(Clone)]
pub struct SinkHandler {
    pipeline: Arc<Pipeline>,
    stream: String,
    target: String,
    mode: WriteMode,
    sink: Arc<dyn SyncSink>,
    at: Option<String>,
    /// Set once the sink's stream has been begun.
    begun: Arc<tokio::sync::OnceCell<()>>,
}

impl std::fmt::Debug for SinkHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkHandler")
            .field("pipeline", &self.pipeline.name())
            .field("stream", &self.stream)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl SinkHandler {
    /// Write events as records of `pipeline`'s stream `stream` to `sink`. The stream
    /// must declare its write mode (`write = { mode = "upsert", key = [...] }` for
    /// events that may be delivered twice).
    pub fn new(
        pipeline: Arc<Pipeline>,
        stream: impl Into<String>,
        sink: Arc<dyn SyncSink>,
    ) -> Result<Self> {
        let stream = stream.into();
        let plan = pipeline.plan(&stream).ok_or_else(|| {
            Error::config(format!(
                "pipeline {} has no stream {stream} to write events to",
                pipeline.name()
            ))
            .with_hint("add it under [[streams]], or name one of the pipeline's streams")
        })?;
        let mode = plan.config.write.clone().ok_or_else(|| {
            Error::config(format!(
                "stream {stream} of pipeline {} does not say how events are written",
                pipeline.name()
            ))
            .with_hint("set write = { mode = \"upsert\", key = [\"Id\"] } on the stream: an event may be delivered twice")
        })?;
        if mode == WriteMode::Overwrite {
            return Err(Error::config(format!(
                "stream {stream} of pipeline {} overwrites its target, which events cannot do: they arrive one by one, with no run to swap in",
                pipeline.name()
            ))
            .with_hint("write events with mode = \"upsert\" (or \"append\")"));
        }
        let target = plan.config.target.clone().unwrap_or_else(|| stream.clone());
        Ok(SinkHandler {
            pipeline,
            stream,
            target,
            mode,
            sink,
            at: None,
            begun: Arc::default(),
        })
    }

    /// Take the record from the object at JSON pointer `pointer` in the body (`/data`).
    pub fn at(mut self, pointer: impl Into<String>) -> Self {
        self.at = Some(pointer.into());
        self
    }
}

#[async_trait]
impl EventHandler for SinkHandler {
    async fn handle(&self, event: &StoredEvent) -> Result<()> {
        let body: serde_json::Value = serde_json::from_str(&event.event.body).map_err(|e| {
            Error::invalid_input(format!(
                "event {} has a body that is not JSON: {e}",
                event.sequence
            ))
        })?;
        let value = match &self.at {
            Some(p) => body.pointer(p).cloned().ok_or_else(|| {
                Error::invalid_input(format!("event {} has nothing at {p}", event.sequence))
            })?,
            None => body,
        };
        let record = Record::from_json(value)?;
        let record = self.pipeline.transform(&self.stream, record)?;
        self.begun
            .get_or_try_init(|| async {
                let mut target = StreamDescriptor::new(&self.target);
                if let WriteMode::Upsert { key } = &self.mode {
                    target.primary_key.clone_from(key);
                }
                self.sink.begin_stream(&target, &self.mode).await
            })
            .await?;
        let batch = RecordBatch::new(&self.target, vec![record]);
        let report = self.sink.write(&batch, &self.mode).await?;
        self.sink.flush(&self.target).await?;
        report.check_complete(1)?;
        if let Some((_, failure)) = report.failures().next() {
            let kind = match failure.kind {
                FailureKind::InvalidInput => ErrorKind::InvalidInput,
                FailureKind::Conflict => ErrorKind::Conflict,
                FailureKind::NotFound => ErrorKind::NotFound,
                FailureKind::Forbidden => ErrorKind::Forbidden,
                FailureKind::Temporary => ErrorKind::Unavailable,
                FailureKind::Other => ErrorKind::Internal,
            };
            return Err(Error::new(
                kind,
                format!(
                    "the sink refused the record of event {}: {}",
                    event.sequence, failure.message
                ),
            ));
        }
        Ok(())
    }
}

/// Runs a pipeline's incremental sync when an event says records changed (a change
/// event, an Outbound Message, a webhook naming records): the records it names are
/// among what the run reads, since they changed after the stream's last checkpoint.
///
/// Events share runs: an event is done once a run that **started after it was
/// received** has succeeded, so a burst of events costs one or two runs, not one each.
/// A failed run fails the events waiting on it (the consumer retries them, then
/// dead-letters them with the run's error).
///
/// ```
/// # #[cfg(feature = "sqlite")]
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// use std::sync::Arc;
/// use moodbridge_core::engine::{EventHandler, Pipeline, SyncEngine, SyncTrigger};
/// use moodbridge_core::state::{NewEvent, SqliteStateStore, StoredEvent};
/// use moodbridge_core::testing::{MemorySink, MemorySource};
///
/// let dir = tempfile::tempdir().unwrap();
/// let state = Arc::new(SqliteStateStore::open(&dir.path().join("s.db")).await.unwrap());
/// let source = Arc::new(MemorySource::accounts(3));
/// let sink = Arc::new(MemorySink::new());
/// let pipeline = Pipeline::from_toml("name = \"accounts\"\n[[streams]]\nname = \"Account\"").unwrap();
/// let trigger = SyncTrigger::new(SyncEngine::new(state), Arc::new(pipeline), source, sink.clone());
/// let event = StoredEvent { sequence: 1, event: NewEvent::new("apex", "1", "account.changed", "{}") };
/// trigger.handle(&event).await.unwrap();
/// assert_eq!(sink.len("Account"), 3);
/// assert_eq!(trigger.runs(), 1);
/// trigger.handle(&event).await.unwrap(); // already covered by that run
/// assert_eq!(trigger.runs(), 1);
/// # });
/// ```
pub struct SyncTrigger {
    engine: SyncEngine,
    pipeline: Arc<Pipeline>,
    source: Arc<dyn SyncSource>,
    sink: Arc<dyn SyncSink>,
    /// When the last successful run started; held across a run, so events wait for it.
    last_ok: tokio::sync::Mutex<Option<SystemTime>>,
    runs: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SyncTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncTrigger")
            .field("pipeline", &self.pipeline.name())
            .field("runs", &self.runs())
            .finish_non_exhaustive()
    }
}

impl SyncTrigger {
    /// Run `pipeline` from `source` to `sink` with `engine` for the events handed over.
    pub fn new(
        engine: SyncEngine,
        pipeline: Arc<Pipeline>,
        source: Arc<dyn SyncSource>,
        sink: Arc<dyn SyncSink>,
    ) -> Self {
        SyncTrigger {
            engine,
            pipeline,
            source,
            sink,
            last_ok: tokio::sync::Mutex::new(None),
            runs: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Runs started so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[async_trait]
impl EventHandler for SyncTrigger {
    async fn handle(&self, event: &StoredEvent) -> Result<()> {
        let mut last_ok = self.last_ok.lock().await;
        if last_ok.is_some_and(|t| t >= event.event.received_at) {
            return Ok(());
        }
        let started = SystemTime::now();
        self.runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let report = self
            .engine
            .run(&self.pipeline, &*self.source, &*self.sink)
            .await?;
        tracing::info!(
            pipeline = %self.pipeline.name(),
            run = %report.run,
            sequence = event.sequence,
            "an event started an incremental sync"
        );
        *last_ok = Some(started);
        Ok(())
    }
}
