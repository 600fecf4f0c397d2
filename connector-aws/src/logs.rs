//! A `tracing` layer that ships the host's structured logs to Amazon CloudWatch Logs
//! (feature `logs`), on the official `aws-sdk-cloudwatchlogs`.
//!
//! - **Events** become one JSON line each — `{"level", "target", "message", "fields",
//!   "spans"}` — scrubbed of every secret-bearing pattern (authorization headers,
//!   signatures and tokens in URLs, token fields of JSON: the rules of
//!   [`scrub_patterns`]) and of every value the
//!   host registered with [`CloudWatchLogsBuilder::secrets`], before they leave the
//!   process.
//! - **Batches** respect the service's limits: at most 10,000 events and 1,048,576 bytes
//!   (each event's UTF-8 size plus 26) per `PutLogEvents`, events in time order, a batch
//!   spanning at most 24 hours. A batch is sent when full, every
//!   [`flush_every`](CloudWatchLogsBuilder::flush_every) (default 2 s), on
//!   [`LogShipper::flush`] and on [`LogShipper::shutdown`].
//! - **Back-pressure**: the layer never blocks the code that logs. Events wait in a
//!   bounded queue ([`capacity`](CloudWatchLogsBuilder::capacity), default 50,000);
//!   when it is full, or CloudWatch stays unreachable past the policy's retries with the
//!   queue full, the newest events are dropped and counted ([`LogStats::dropped`]).
//!   Batches that fail are kept and retried with the next flush while the queue has
//!   room.
//! - Events emitted while shipping (the SDK's own logs) are not shipped: no feedback
//!   loop.
//!
//! ```no_run
//! use connector_aws::logs::CloudWatchLogs;
//! use tracing_subscriber::layer::SubscriberExt;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let (layer, shipper) = CloudWatchLogs::builder("/moodbridge/prod", "worker-1")
//!     .region("eu-west-1")
//!     .create(true)
//!     .build()
//!     .await?;
//! let subscriber = tracing_subscriber::registry().with(layer);
//! tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
//! tracing::info!(case = "500A", "case closed");
//! shipper.shutdown().await?; // flushes what is left
//! # Ok(()) }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use moodbridge_core::redact::{Secrets, scrub_patterns};
use moodbridge_core::{Error, ErrorKind, Policy, PolicyConfig, Result};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::sdk::AwsCredentials;

const PLATFORM: &str = "cloudwatch-logs";

/// The most events of one `PutLogEvents`.
pub const MAX_BATCH_EVENTS: usize = 10_000;
/// The largest `PutLogEvents` body: the events' UTF-8 sizes plus 26 bytes each.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// What CloudWatch counts per event beyond its message.
pub const EVENT_OVERHEAD: usize = 26;
/// The longest span of one batch.
pub const MAX_BATCH_SPAN: Duration = Duration::from_secs(24 * 3600);
/// The largest event message (256 KiB less the overhead); longer ones are cut.
pub const MAX_EVENT_BYTES: usize = 262_144 - EVENT_OVERHEAD;

tokio::task_local! {
    /// Set while the shipper sends: events then are the SDK's own.
    static SHIPPING: ();
}

/// The entry point: [`CloudWatchLogs::builder`].
#[derive(Debug, Clone, Copy)]
pub struct CloudWatchLogs;

impl CloudWatchLogs {
    /// A builder shipping to stream `stream` of log group `group`.
    pub fn builder(group: impl Into<String>, stream: impl Into<String>) -> CloudWatchLogsBuilder {
        CloudWatchLogsBuilder {
            group: group.into(),
            stream: stream.into(),
            region: None,
            endpoint: None,
            credentials: AwsCredentials::default(),
            create: false,
            flush_every: Duration::from_secs(2),
            capacity: 50_000,
            secrets: Secrets::new(),
            policy: None,
        }
    }
}

/// Settings of the layer; made by [`CloudWatchLogs::builder`].
#[derive(Clone)]
pub struct CloudWatchLogsBuilder {
    group: String,
    stream: String,
    region: Option<String>,
    endpoint: Option<String>,
    credentials: AwsCredentials,
    create: bool,
    flush_every: Duration,
    capacity: usize,
    secrets: Secrets,
    policy: Option<Policy>,
}

impl fmt::Debug for CloudWatchLogsBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudWatchLogsBuilder")
            .field("group", &self.group)
            .field("stream", &self.stream)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("flush_every", &self.flush_every)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl CloudWatchLogsBuilder {
    /// The AWS region.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// A custom endpoint (a local emulator).
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Where the keys come from (default: the standard AWS chain).
    pub fn credentials(mut self, credentials: AwsCredentials) -> Self {
        self.credentials = credentials;
        self
    }

    /// Create the log group and stream when missing (default false).
    pub fn create(mut self, yes: bool) -> Self {
        self.create = yes;
        self
    }

    /// How often waiting events are sent (default 2 s).
    pub fn flush_every(mut self, every: Duration) -> Self {
        self.flush_every = every;
        self
    }

    /// Events held at most while waiting to be sent (default 50,000).
    pub fn capacity(mut self, events: usize) -> Self {
        self.capacity = events;
        self
    }

    /// Values to scrub from every event besides the secret-bearing patterns (a key the
    /// host holds, say); more can be added later through the same set.
    pub fn secrets(mut self, secrets: Secrets) -> Self {
        self.secrets = secrets;
        self
    }

    /// Run every `PutLogEvents` through `policy` (default: up to 4 attempts with
    /// backoff, 10 s each).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Makes the client (creating group and stream with [`create`](Self::create)) and
    /// starts the shipper task: the layer to install and the shipper's handle.
    ///
    /// # Errors
    /// A bad name or setting (`Config`); with `create`, the platform's errors.
    pub async fn build(self) -> Result<(CloudWatchLayer, LogShipper)> {
        check_names(&self.group, &self.stream)?;
        if self.capacity == 0 || self.flush_every.is_zero() {
            return Err(
                Error::config("CloudWatch Logs capacity and flush_every must be above 0")
                    .with_connector(PLATFORM),
            );
        }
        let parts = crate::sdk::client_parts(
            PLATFORM,
            &self
                .stream
                .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"),
            None,
            self.region.as_deref(),
            self.endpoint.as_deref(),
            &self.credentials,
            self.policy.as_ref(),
            default_policy_config(),
        )
        .await?;
        let mut config = aws_sdk_cloudwatchlogs::config::Builder::from(&parts.sdk)
            .retry_config(aws_smithy_types::retry::RetryConfig::disabled());
        if let Some(provider) = crate::sdk::remembering(&parts.sdk, &parts.secrets) {
            config = config.credentials_provider(provider);
        }
        if let Some(endpoint) = &self.endpoint {
            config = config.endpoint_url(endpoint.clone());
        }
        let shipper = Shipper {
            client: Client::from_conf(config.build()),
            policy: parts.policy.clone(),
            secrets: parts.secrets.clone(),
            group: self.group.clone(),
            stream: self.stream.clone(),
            capacity: self.capacity,
            stats: Arc::new(Counters::default()),
        };
        if self.create {
            shipper.create().await?;
        }
        let stats = shipper.stats.clone();
        let (events, received) = mpsc::channel(self.capacity);
        let (control, controls) = mpsc::channel(8);
        let every = self.flush_every;
        let task = tokio::spawn(SHIPPING.scope((), shipper.run(received, controls, every)));
        Ok((
            CloudWatchLayer {
                events,
                stats: stats.clone(),
                secrets: self.secrets,
            },
            LogShipper {
                id: parts.id,
                control,
                task: Some(task),
                stats,
            },
        ))
    }
}

fn check_names(group: &str, stream: &str) -> Result<()> {
    let group_ok = (1..=512).contains(&group.len())
        && group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-/.#".contains(c));
    let stream_ok =
        (1..=512).contains(&stream.len()) && !stream.contains(':') && !stream.contains('*');
    if !group_ok {
        return Err(
            Error::config(format!("CloudWatch log group name {group:?} is not valid"))
                .with_connector(PLATFORM)
                .with_hint("use 1 to 512 letters, digits and _ - / . #"),
        );
    }
    if !stream_ok {
        return Err(Error::config(format!(
            "CloudWatch log stream name {stream:?} is not valid"
        ))
        .with_connector(PLATFORM)
        .with_hint("use 1 to 512 characters, without ':' or '*'"));
    }
    Ok(())
}

/// The default policy: up to 4 attempts with backoff, 10 s each.
pub fn default_policy_config() -> PolicyConfig {
    crate::sdk::messaging_policy_config(Duration::from_secs(10))
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    batches: AtomicU64,
    dropped: AtomicU64,
    rejected: AtomicU64,
    failed_batches: AtomicU64,
}

/// What the shipper did so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LogStats {
    /// Events CloudWatch accepted.
    pub sent: u64,
    /// `PutLogEvents` requests that succeeded.
    pub batches: u64,
    /// Events dropped: the queue was full.
    pub dropped: u64,
    /// Events CloudWatch refused (too old, too new, expired).
    pub rejected: u64,
    /// Requests that failed after the policy's retries (their events kept for the next
    /// flush while there was room).
    pub failed_batches: u64,
}

impl Counters {
    fn snapshot(&self) -> LogStats {
        LogStats {
            sent: self.sent.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            failed_batches: self.failed_batches.load(Ordering::Relaxed),
        }
    }
}

/// One event waiting: its time (ms since the epoch) and its line.
#[derive(Debug, Clone)]
struct Entry {
    at: i64,
    line: String,
}

impl Entry {
    fn size(&self) -> usize {
        self.line.len() + EVENT_OVERHEAD
    }
}

/// The `tracing` layer: turns each event into a scrubbed JSON line for the shipper.
pub struct CloudWatchLayer {
    events: mpsc::Sender<Entry>,
    stats: Arc<Counters>,
    secrets: Secrets,
}

impl fmt::Debug for CloudWatchLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CloudWatchLayer").finish_non_exhaustive()
    }
}

/// Collects an event's (or span's) fields as JSON.
struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .insert(field.name().to_owned(), Value::String(value.to_owned()));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
}

/// A span's fields, kept in its extensions.
struct SpanFields(Map<String, Value>);

impl<S> tracing_subscriber::Layer<S> for CloudWatchLayer
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            let mut fields = Map::new();
            attrs.record(&mut Fields(&mut fields));
            span.extensions_mut().insert(SpanFields(fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        if SHIPPING.try_with(|_| ()).is_ok() {
            return;
        }
        let mut fields = Map::new();
        event.record(&mut Fields(&mut fields));
        let message = fields.remove("message").unwrap_or(Value::Null);
        let spans: Vec<Value> = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .from_root()
                    .map(|span| {
                        let extensions = span.extensions();
                        let fields = extensions
                            .get::<SpanFields>()
                            .map(|f| Value::Object(f.0.clone()))
                            .unwrap_or(Value::Null);
                        serde_json::json!({"name": span.name(), "fields": fields})
                    })
                    .collect()
            })
            .unwrap_or_default();
        let meta = event.metadata();
        let mut line = serde_json::json!({
            "level": meta.level().as_str(),
            "target": meta.target(),
            "message": message,
            "fields": fields,
        });
        if !spans.is_empty() {
            line["spans"] = Value::Array(spans);
        }
        let mut line = self.secrets.scrub(&scrub_patterns(&line.to_string()));
        if line.len() > MAX_EVENT_BYTES {
            let mut cut = MAX_EVENT_BYTES;
            while !line.is_char_boundary(cut) {
                cut -= 1;
            }
            line.truncate(cut);
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        if self.events.try_send(Entry { at, line }).is_err() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

enum Control {
    Flush(oneshot::Sender<()>),
}

/// The shipper task's handle: flush, stats, shutdown. The task runs while the layer or
/// this handle exists, and sends what is left before it ends.
pub struct LogShipper {
    /// The id its policy reports as `platform` (`cloudwatch-logs:<stream>`).
    id: String,
    control: mpsc::Sender<Control>,
    task: Option<tokio::task::JoinHandle<()>>,
    stats: Arc<Counters>,
}

impl fmt::Debug for LogShipper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogShipper")
            .field("id", &self.id)
            .field("stats", &self.stats.snapshot())
            .finish_non_exhaustive()
    }
}

impl LogShipper {
    /// Sends every event logged so far, and waits for it.
    ///
    /// # Errors
    /// The shipper task is gone (`Internal`).
    pub async fn flush(&self) -> Result<()> {
        let (done, wait) = oneshot::channel();
        self.control
            .send(Control::Flush(done))
            .await
            .map_err(|_| Error::internal("the CloudWatch Logs shipper has stopped"))?;
        wait.await
            .map_err(|_| Error::internal("the CloudWatch Logs shipper has stopped"))
    }

    /// What the shipper did so far.
    pub fn stats(&self) -> LogStats {
        self.stats.snapshot()
    }

    /// Flushes, then stops the task.
    ///
    /// # Errors
    /// As [`flush`](Self::flush).
    pub async fn shutdown(mut self) -> Result<LogStats> {
        self.flush().await?;
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        Ok(self.stats.snapshot())
    }
}

struct Shipper {
    client: Client,
    policy: Policy,
    secrets: Secrets,
    group: String,
    stream: String,
    capacity: usize,
    stats: Arc<Counters>,
}

impl Shipper {
    async fn call<T, E, F, Fut>(&self, operation: &'static str, idempotent: bool, f: F) -> Result<T>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    T,
                    aws_sdk_cloudwatchlogs::error::SdkError<
                        E,
                        aws_smithy_runtime_api::client::orchestrator::HttpResponse,
                    >,
                >,
            >,
        E: aws_sdk_cloudwatchlogs::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
    {
        let errors = crate::sdk::ServiceErrors {
            platform: PLATFORM,
            service: "CloudWatch Logs",
            kind_of: service_kind,
            hint_of: hint,
        };
        crate::sdk::call(
            &self.policy,
            &self.secrets,
            errors,
            &self.group,
            operation,
            idempotent,
            f,
        )
        .await
    }

    /// Creates the group and the stream; existing ones are fine.
    async fn create(&self) -> Result<()> {
        let exists = |e: &Error| e.kind() == ErrorKind::Conflict;
        match self
            .call("create_log_group", true, || {
                self.client
                    .create_log_group()
                    .log_group_name(&self.group)
                    .send()
            })
            .await
        {
            Ok(_) => {}
            Err(e) if exists(&e) => {}
            Err(e) => return Err(e),
        }
        match self
            .call("create_log_stream", true, || {
                self.client
                    .create_log_stream()
                    .log_group_name(&self.group)
                    .log_stream_name(&self.stream)
                    .send()
            })
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn run(
        self,
        mut events: mpsc::Receiver<Entry>,
        mut controls: mpsc::Receiver<Control>,
        every: Duration,
    ) {
        let mut waiting: VecDeque<Entry> = VecDeque::new();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Open while a layer exists; the task then serves flushes until the handle goes.
        let mut open = true;
        loop {
            tokio::select! {
                event = events.recv(), if open => match event {
                    Some(e) => {
                        if waiting.len() >= self.capacity {
                            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        waiting.push_back(e);
                        if waiting.len() >= MAX_BATCH_EVENTS {
                            self.send(&mut waiting, false).await;
                        }
                    }
                    None => {
                        self.send(&mut waiting, true).await;
                        open = false;
                    }
                },
                control = controls.recv() => match control {
                    Some(Control::Flush(done)) => {
                        while let Ok(e) = events.try_recv() {
                            if waiting.len() >= self.capacity {
                                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                            } else {
                                waiting.push_back(e);
                            }
                        }
                        self.send(&mut waiting, true).await;
                        let _ = done.send(());
                    }
                    // The handle is gone: the layer's events are shipped until it goes.
                    None if open => {}
                    None => {
                        self.send(&mut waiting, true).await;
                        break;
                    }
                },
                _ = tick.tick() => {
                    if !waiting.is_empty() {
                        self.send(&mut waiting, true).await;
                    }
                }
            }
        }
    }

    /// Sends `waiting` in batches within the limits: all of it with `all`, else the full
    /// batches only. A batch that fails is put back while there is room.
    async fn send(&self, waiting: &mut VecDeque<Entry>, all: bool) {
        waiting.make_contiguous().sort_by_key(|e| e.at);
        while !waiting.is_empty() {
            let batch = take_batch(waiting);
            // A batch cut by a limit is full; the last, partial one waits unless `all`.
            let full = batch.len() == MAX_BATCH_EVENTS || !waiting.is_empty();
            if !all && !full {
                for e in batch.into_iter().rev() {
                    waiting.push_front(e);
                }
                return;
            }
            if let Err(e) = self.put(&batch).await {
                self.stats.failed_batches.fetch_add(1, Ordering::Relaxed);
                // Not shipped itself (this task's events are skipped by the layer).
                tracing::warn!(error = %e, events = batch.len(), "a CloudWatch Logs batch failed; kept for the next flush");
                let room = self.capacity.saturating_sub(waiting.len());
                let kept = batch.len().min(room);
                self.stats
                    .dropped
                    .fetch_add((batch.len() - kept) as u64, Ordering::Relaxed);
                for e in batch.into_iter().take(kept).rev() {
                    waiting.push_front(e);
                }
                return;
            }
        }
    }

    async fn put(&self, batch: &[Entry]) -> Result<()> {
        let events: Vec<InputLogEvent> = batch
            .iter()
            .map(|e| {
                InputLogEvent::builder()
                    .timestamp(e.at)
                    .message(&e.line)
                    .build()
                    .map_err(|err| Error::internal(format!("a log event: {err}")))
            })
            .collect::<Result<_>>()?;
        let out = self
            .call("put_log_events", true, || {
                self.client
                    .put_log_events()
                    .log_group_name(&self.group)
                    .log_stream_name(&self.stream)
                    .set_log_events(Some(events.clone()))
                    .send()
            })
            .await?;
        let rejected = out.rejected_log_events_info().map_or(0, |r| {
            let too_new = r
                .too_new_log_event_start_index()
                .map_or(0, |i| batch.len().saturating_sub(i as usize));
            let too_old = r.too_old_log_event_end_index().map_or(0, |i| i as usize);
            let expired = r.expired_log_event_end_index().map_or(0, |i| i as usize);
            too_new + too_old.max(expired)
        });
        self.stats.batches.fetch_add(1, Ordering::Relaxed);
        self.stats.sent.fetch_add(
            (batch.len() - rejected.min(batch.len())) as u64,
            Ordering::Relaxed,
        );
        self.stats
            .rejected
            .fetch_add(rejected as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The longest run from the front of `waiting` (sorted by time) that fits one request.
fn take_batch(waiting: &mut VecDeque<Entry>) -> Vec<Entry> {
    let mut batch = Vec::new();
    let mut bytes = 0;
    let span = i64::try_from(MAX_BATCH_SPAN.as_millis()).unwrap_or(i64::MAX);
    while let Some(next) = waiting.front() {
        let first = batch.first().map_or(next.at, |e: &Entry| e.at);
        if batch.len() == MAX_BATCH_EVENTS
            || bytes + next.size() > MAX_BATCH_BYTES
            || next.at - first >= span
        {
            break;
        }
        bytes += next.size();
        if let Some(e) = waiting.pop_front() {
            batch.push(e);
        }
    }
    batch
}

/// The error kind of a CloudWatch Logs error code.
fn service_kind(status: u16, code: Option<&str>) -> ErrorKind {
    match code {
        Some("ResourceNotFoundException") => ErrorKind::NotFound,
        Some("ResourceAlreadyExistsException") => ErrorKind::Conflict,
        Some(
            "InvalidParameterException"
            | "InvalidSequenceTokenException"
            | "DataAlreadyAcceptedException",
        ) => ErrorKind::InvalidInput,
        Some("ThrottlingException" | "LimitExceededException") => {
            ErrorKind::RateLimited { retry_after: None }
        }
        Some("AccessDeniedException") => ErrorKind::Forbidden,
        Some(
            "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException",
        ) => ErrorKind::Auth,
        Some("ServiceUnavailableException") => ErrorKind::Unavailable,
        _ => moodbridge_core::raw::kind_of_status(status),
    }
}

fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "create the log group and stream, or build with create(true)",
        ErrorKind::Forbidden => {
            "the credentials lack logs:PutLogEvents (or logs:Create*) on this group"
        }
        ErrorKind::Auth => "check the access key id and secret",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: i64, len: usize) -> Entry {
        Entry {
            at,
            line: "x".repeat(len),
        }
    }

    #[test]
    fn batches_keep_to_the_count_size_and_span_limits() {
        let mut waiting: VecDeque<Entry> = (0..25_000).map(|i| entry(i, 10)).collect();
        assert_eq!(take_batch(&mut waiting).len(), MAX_BATCH_EVENTS);
        let mut big: VecDeque<Entry> = (0..10).map(|i| entry(i, 200_000)).collect();
        let batch = take_batch(&mut big);
        assert_eq!(
            batch.len(),
            5,
            "five 200 kB events fit in 1 MiB, six do not"
        );
        let day = i64::try_from(MAX_BATCH_SPAN.as_millis()).unwrap_or(i64::MAX);
        let mut spread: VecDeque<Entry> = [entry(0, 1), entry(day - 1, 1), entry(day, 1)].into();
        assert_eq!(
            take_batch(&mut spread).len(),
            2,
            "a batch spans less than 24 h"
        );
    }

    #[test]
    fn names_are_checked() {
        assert!(check_names("/moodbridge/prod", "worker-1").is_ok());
        assert!(check_names("bad group!", "s").is_err());
        assert!(check_names("g", "a:b").is_err());
    }
}
