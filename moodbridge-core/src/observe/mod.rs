//! Correlation ids and the names of every metric the SDK emits.
//!
//! Every remote call made through a [`Policy`](crate::Policy) runs in a `remote_call`
//! tracing span carrying the platform, operation, correlation id, attempt count, outcome
//! and latency. The correlation id is the caller's when one is in scope
//! ([`with_correlation_id`]), or a new one; calls made inside the scope (child calls)
//! inherit it, so one sync run or one inbound request can be followed across platforms.
//!
//! The metric names, labels and units are listed in `docs/telemetry.md`; the constants
//! here are the single source of those names.

#[cfg(feature = "logging")]
pub mod logging;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

tokio::task_local! {
    static CORRELATION_ID: CorrelationId;
    static RUN_SCOPE: RunScope;
}

/// The sync run the current task works for: set by the engine around every run, so a
/// sink can label what it does with the run that caused it (Snowflake's `QUERY_TAG`,
/// lineage events, cost reports).
///
/// ```
/// use moodbridge_core::observe::{RunScope, with_run_scope};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let scope = RunScope::new("accounts", 42);
/// let seen = with_run_scope(scope, async { RunScope::current() }).await.unwrap();
/// assert_eq!(seen.tag(), "moodbridge:accounts:run-42");
/// assert!(RunScope::current().is_none());
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunScope {
    pipeline: Arc<str>,
    run: i64,
    source: Option<Arc<str>>,
    jobs: SourceJobs,
}

/// The source's own jobs per stream, shared by every clone of a scope. A side channel: two
/// scopes of the same run are equal whatever their sources noted.
#[derive(Debug, Clone, Default)]
struct SourceJobs(Arc<Mutex<BTreeMap<String, Vec<String>>>>);

impl PartialEq for SourceJobs {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SourceJobs {}

impl std::hash::Hash for SourceJobs {
    fn hash<H: std::hash::Hasher>(&self, _: &mut H) {}
}

impl RunScope {
    /// The scope of run `run` (its id in the state store) of `pipeline`.
    pub fn new(pipeline: impl Into<Arc<str>>, run: i64) -> Self {
        RunScope {
            pipeline: pipeline.into(),
            run,
            source: None,
            jobs: SourceJobs::default(),
        }
    }

    /// The same scope, reading from the source whose datasets live in `namespace` (an
    /// OpenLineage namespace such as `salesforce://acme.my.salesforce.com`).
    #[must_use]
    pub fn with_source(mut self, namespace: Option<String>) -> Self {
        self.source = namespace.map(Arc::from);
        self
    }

    /// The run's source, as an OpenLineage namespace, when the source names one.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// Note that the source read `stream` through its own job `job` (Salesforce's Bulk
    /// API query job id, say), so a sink can name it in the stream's lineage. A source
    /// notes a job when it receives the job's first results; noting one twice keeps one.
    ///
    /// Notes are shared by every clone of the scope: a source captures the scope in
    /// [`read`](crate::SyncSource::read) (its stream may be polled on another task) and a
    /// sink reads them from the scope it writes in.
    ///
    /// ```
    /// use moodbridge_core::observe::RunScope;
    ///
    /// let scope = RunScope::new("accounts", 42);
    /// let seen_by_the_source = scope.clone();
    /// seen_by_the_source.note_source_job("Account", "750R0000000zlhBIAQ");
    /// seen_by_the_source.note_source_job("Account", "750R0000000zlhBIAQ");
    /// assert_eq!(scope.source_jobs("Account"), ["750R0000000zlhBIAQ"]);
    /// assert!(scope.source_jobs("Contact").is_empty());
    /// ```
    pub fn note_source_job(&self, stream: &str, job: &str) {
        let mut jobs = self.jobs.0.lock().unwrap_or_else(PoisonError::into_inner);
        let noted = jobs.entry(stream.to_owned()).or_default();
        if !noted.iter().any(|j| j == job) {
            noted.push(job.to_owned());
        }
    }

    /// The jobs the source noted for `stream` so far, in the order noted.
    pub fn source_jobs(&self, stream: &str) -> Vec<String> {
        let jobs = self.jobs.0.lock().unwrap_or_else(PoisonError::into_inner);
        jobs.get(stream).cloned().unwrap_or_default()
    }

    /// The run in scope of the current task, if any.
    pub fn current() -> Option<Self> {
        RUN_SCOPE.try_with(Clone::clone).ok()
    }

    /// The pipeline's name.
    pub fn pipeline(&self) -> &str {
        &self.pipeline
    }

    /// The run's id in the state store.
    pub fn run(&self) -> i64 {
        self.run
    }

    /// A label for the run that is the same wherever it is written:
    /// `moodbridge:<pipeline>:run-<id>`.
    pub fn tag(&self) -> String {
        format!("moodbridge:{}:run-{}", self.pipeline, self.run)
    }
}

/// Run `fut` as part of the run `scope` names ([`RunScope::current`] inside it).
pub async fn with_run_scope<F: Future>(scope: RunScope, fut: F) -> F::Output {
    RUN_SCOPE.scope(scope, fut).await
}

/// An id that ties together every call made for one unit of work.
///
/// ```
/// use moodbridge_core::observe::CorrelationId;
/// let a = CorrelationId::generate();
/// let b = CorrelationId::generate();
/// assert_ne!(a, b);
/// assert_eq!(CorrelationId::from("req-42").to_string(), "req-42");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId(Repr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum Repr {
    /// Process prefix (random per process) and a counter: unique without a syscall.
    Generated(u32, u64),
    Supplied(Arc<str>),
}

impl CorrelationId {
    /// A new id, unique within this process and, with overwhelming probability, across
    /// processes.
    pub fn generate() -> Self {
        // Each thread takes a block of 2^32 ids from the global counter once, then counts
        // locally: no shared cache line is written per call.
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static BLOCKS: AtomicU64 = AtomicU64::new(0);
        thread_local! {
            static NEXT: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let prefix = *PREFIX.get_or_init(rand::random::<u32>);
        let n = NEXT.with(|next| {
            let mut n = next.get();
            if n & 0xFFFF_FFFF == 0 {
                n = (BLOCKS.fetch_add(1, Ordering::Relaxed) << 32) | 1;
            }
            next.set(n + 1);
            n
        });
        CorrelationId(Repr::Generated(prefix, n))
    }

    /// The id in scope of the current task, if any.
    pub fn current() -> Option<Self> {
        CORRELATION_ID.try_with(Clone::clone).ok()
    }
}

impl From<&str> for CorrelationId {
    fn from(s: &str) -> Self {
        CorrelationId(Repr::Supplied(Arc::from(s)))
    }
}

impl From<String> for CorrelationId {
    fn from(s: String) -> Self {
        CorrelationId(Repr::Supplied(Arc::from(s)))
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::Generated(p, n) => write!(f, "{p:08x}-{n:016x}"),
            Repr::Supplied(s) => f.write_str(s),
        }
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({self})")
    }
}

/// Run `fut` with `id` as the correlation id of every call made inside it.
///
/// ```
/// use moodbridge_core::observe::{with_correlation_id, CorrelationId};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let seen = with_correlation_id("req-7".into(), async { CorrelationId::current() }).await;
/// assert_eq!(seen.map(|id| id.to_string()), Some("req-7".to_owned()));
/// assert!(CorrelationId::current().is_none());
/// # });
/// ```
pub async fn with_correlation_id<F: Future>(id: CorrelationId, fut: F) -> F::Output {
    CORRELATION_ID.scope(id, fut).await
}

/// `fut` running with `id` as its correlation id (a plain wrapper, no extra async layer).
pub(crate) fn scope_correlation_id<F: Future>(
    id: CorrelationId,
    fut: F,
) -> impl Future<Output = F::Output> {
    CORRELATION_ID.scope(id, fut)
}

/// Operation names of the connectors: `<kind>.<operation>`, snake case — the `operation`
/// of `remote_call` spans, of call metrics and of errors. One call through a
/// [`Policy`](crate::Policy) is one operation (a paged listing counts a call per page).
///
/// Capability-level wrappers that do not know the connector (the sync engine's
/// source and sink policies, [`Guarded`](crate::resilience::Guarded)) name the capability
/// verb instead: `read`, `write`, `discover`, `secret.get` ….
///
/// ```
/// use moodbridge_core::observe::op;
/// assert_eq!(op::s3::PUT_OBJECT, "s3.put_object");
/// assert_eq!(op::azure_blob::PUT_BLOCK_LIST, "azure_blob.put_block_list");
/// assert_eq!(op::salesforce::SOBJECT_RETRIEVE, "salesforce.sobject_retrieve");
/// assert!(op::s3::ALL.contains(&op::s3::HEAD_OBJECT));
/// ```
pub mod op {
    /// The `salesforce` kind (REST, Bulk API 2.0, Streaming API).
    pub mod salesforce {
        /// `GET /services/data`: the API versions the org offers.
        pub const VERSIONS: &str = "salesforce.versions";
        /// One page of a SOQL query (REST).
        pub const QUERY: &str = "salesforce.query";
        /// A SOSL search.
        pub const SEARCH: &str = "salesforce.search";
        /// The org's limits.
        pub const LIMITS: &str = "salesforce.limits";
        /// Describe of one object.
        pub const DESCRIBE: &str = "salesforce.describe";
        /// Describe of every object (global describe).
        pub const DESCRIBE_GLOBAL: &str = "salesforce.describe_global";
        /// The records of one object deleted within a window (`sObject Get Deleted`).
        pub const GET_DELETED: &str = "salesforce.get_deleted";
        /// Create one record.
        pub const SOBJECT_CREATE: &str = "salesforce.sobject_create";
        /// Retrieve one record.
        pub const SOBJECT_RETRIEVE: &str = "salesforce.sobject_retrieve";
        /// Update one record.
        pub const SOBJECT_UPDATE: &str = "salesforce.sobject_update";
        /// Upsert one record by external id.
        pub const SOBJECT_UPSERT: &str = "salesforce.sobject_upsert";
        /// Delete one record.
        pub const SOBJECT_DELETE: &str = "salesforce.sobject_delete";
        /// Create up to 200 records (sObject Collections).
        pub const COLLECTIONS_CREATE: &str = "salesforce.collections_create";
        /// Retrieve up to 2,000 records by id (sObject Collections).
        pub const COLLECTIONS_RETRIEVE: &str = "salesforce.collections_retrieve";
        /// Update up to 200 records (sObject Collections).
        pub const COLLECTIONS_UPDATE: &str = "salesforce.collections_update";
        /// Upsert up to 200 records by external id (sObject Collections).
        pub const COLLECTIONS_UPSERT: &str = "salesforce.collections_upsert";
        /// Delete up to 200 records (sObject Collections).
        pub const COLLECTIONS_DELETE: &str = "salesforce.collections_delete";
        /// A Composite request (up to 25 dependent subrequests).
        pub const COMPOSITE: &str = "salesforce.composite";
        /// A Composite Batch request (up to 25 subrequests).
        pub const COMPOSITE_BATCH: &str = "salesforce.composite_batch";
        /// A Composite sObject Tree request.
        pub const COMPOSITE_TREE: &str = "salesforce.composite_tree";
        /// Create a Bulk API 2.0 ingest job.
        pub const BULK_CREATE: &str = "salesforce.bulk_create";
        /// Upload a Bulk API 2.0 job's CSV data.
        pub const BULK_UPLOAD: &str = "salesforce.bulk_upload";
        /// Close a Bulk API 2.0 job (`UploadComplete`).
        pub const BULK_CLOSE: &str = "salesforce.bulk_close";
        /// Poll a Bulk API 2.0 job's state.
        pub const BULK_POLL: &str = "salesforce.bulk_poll";
        /// Abort a Bulk API 2.0 job.
        pub const BULK_ABORT: &str = "salesforce.bulk_abort";
        /// One page of a Bulk API 2.0 job's results.
        pub const BULK_RESULTS: &str = "salesforce.bulk_results";
        /// Create a Bulk API 2.0 query job.
        pub const BULK_QUERY: &str = "salesforce.bulk_query";
        /// Streaming API (CometD) handshake.
        pub const STREAMING_HANDSHAKE: &str = "salesforce.streaming_handshake";
        /// Streaming API subscribe.
        pub const STREAMING_SUBSCRIBE: &str = "salesforce.streaming_subscribe";
        /// One Streaming API long poll (`/meta/connect`).
        pub const STREAMING_CONNECT: &str = "salesforce.streaming_connect";
        /// Every operation of the kind.
        pub const ALL: &[&str] = &[
            VERSIONS,
            QUERY,
            SEARCH,
            LIMITS,
            DESCRIBE,
            DESCRIBE_GLOBAL,
            GET_DELETED,
            SOBJECT_CREATE,
            SOBJECT_RETRIEVE,
            SOBJECT_UPDATE,
            SOBJECT_UPSERT,
            SOBJECT_DELETE,
            COLLECTIONS_CREATE,
            COLLECTIONS_RETRIEVE,
            COLLECTIONS_UPDATE,
            COLLECTIONS_UPSERT,
            COLLECTIONS_DELETE,
            COMPOSITE,
            COMPOSITE_BATCH,
            COMPOSITE_TREE,
            BULK_CREATE,
            BULK_UPLOAD,
            BULK_CLOSE,
            BULK_POLL,
            BULK_ABORT,
            BULK_RESULTS,
            BULK_QUERY,
            STREAMING_HANDSHAKE,
            STREAMING_SUBSCRIBE,
            STREAMING_CONNECT,
        ];
    }
    /// The `s3` kind.
    pub mod s3 {
        /// `PutObject`.
        pub const PUT_OBJECT: &str = "s3.put_object";
        /// `CreateMultipartUpload`.
        pub const CREATE_MULTIPART_UPLOAD: &str = "s3.create_multipart_upload";
        /// `UploadPart`.
        pub const UPLOAD_PART: &str = "s3.upload_part";
        /// `UploadPartCopy`.
        pub const UPLOAD_PART_COPY: &str = "s3.upload_part_copy";
        /// `CompleteMultipartUpload`.
        pub const COMPLETE_MULTIPART_UPLOAD: &str = "s3.complete_multipart_upload";
        /// `AbortMultipartUpload`.
        pub const ABORT_MULTIPART_UPLOAD: &str = "s3.abort_multipart_upload";
        /// `HeadObject`.
        pub const HEAD_OBJECT: &str = "s3.head_object";
        /// `GetObject` (up to the response headers; the body streams after).
        pub const GET_OBJECT: &str = "s3.get_object";
        /// `ListObjectsV2`, one page.
        pub const LIST_OBJECTS: &str = "s3.list_objects";
        /// `DeleteObject`.
        pub const DELETE_OBJECT: &str = "s3.delete_object";
        /// `DeleteObjects`, up to 1,000 keys.
        pub const DELETE_OBJECTS: &str = "s3.delete_objects";
        /// `CopyObject`.
        pub const COPY_OBJECT: &str = "s3.copy_object";
        /// `CreateBucket`.
        pub const CREATE_BUCKET: &str = "s3.create_bucket";
        /// `HeadBucket` (the health check).
        pub const HEAD_BUCKET: &str = "s3.head_bucket";
        /// Every operation of the kind.
        pub const ALL: &[&str] = &[
            PUT_OBJECT,
            CREATE_MULTIPART_UPLOAD,
            UPLOAD_PART,
            UPLOAD_PART_COPY,
            COMPLETE_MULTIPART_UPLOAD,
            ABORT_MULTIPART_UPLOAD,
            HEAD_OBJECT,
            GET_OBJECT,
            LIST_OBJECTS,
            DELETE_OBJECT,
            DELETE_OBJECTS,
            COPY_OBJECT,
            CREATE_BUCKET,
            HEAD_BUCKET,
        ];
    }
    /// The `azure-blob` kind.
    pub mod azure_blob {
        /// `Put Blob`: a blob that fits in one block.
        pub const PUT_BLOB: &str = "azure_blob.put_blob";
        /// `Put Block`: one staged block.
        pub const PUT_BLOCK: &str = "azure_blob.put_block";
        /// `Put Block List`: commits the staged blocks.
        pub const PUT_BLOCK_LIST: &str = "azure_blob.put_block_list";
        /// `Get Blob`: one range (with its body; a single streamed download: up to the response headers).
        pub const GET_BLOB: &str = "azure_blob.get_blob";
        /// `Get Blob Properties`.
        pub const GET_BLOB_PROPERTIES: &str = "azure_blob.get_blob_properties";
        /// `List Blobs`, one page.
        pub const LIST_BLOBS: &str = "azure_blob.list_blobs";
        /// `Delete Blob`.
        pub const DELETE_BLOB: &str = "azure_blob.delete_blob";
        /// `Copy Blob` (start; its status is polled with `get_blob_properties`).
        pub const COPY_BLOB: &str = "azure_blob.copy_blob";
        /// `Create Container`.
        pub const CREATE_CONTAINER: &str = "azure_blob.create_container";
        /// `Get Container Properties` (the health check).
        pub const GET_CONTAINER_PROPERTIES: &str = "azure_blob.get_container_properties";
        /// `Get User Delegation Key` (Entra ID presigning).
        pub const GET_USER_DELEGATION_KEY: &str = "azure_blob.get_user_delegation_key";
        /// Every operation of the kind.
        pub const ALL: &[&str] = &[
            PUT_BLOB,
            PUT_BLOCK,
            PUT_BLOCK_LIST,
            GET_BLOB,
            GET_BLOB_PROPERTIES,
            LIST_BLOBS,
            DELETE_BLOB,
            COPY_BLOB,
            CREATE_CONTAINER,
            GET_CONTAINER_PROPERTIES,
            GET_USER_DELEGATION_KEY,
        ];
    }
}

/// Metric names. Labels and units are documented in `docs/telemetry.md`.
pub mod metric {
    /// Counter: calls through a policy, by `platform`, `operation`, `outcome`
    /// (`ok` or an error kind).
    pub const CALLS: &str = "moodbridge_calls_total";
    /// Histogram, seconds: duration of a whole policy call including retries.
    pub const CALL_DURATION: &str = "moodbridge_call_duration_seconds";
    /// Counter: retries scheduled, by `platform`, `operation`, `kind` (error kind retried).
    pub const RETRIES: &str = "moodbridge_retries_total";
    /// Counter: calls that stopped retrying, by `platform`, `operation`, `reason`
    /// (`attempts`, `time_budget`, `deadline`, `retry_budget`).
    pub const RETRY_EXHAUSTED: &str = "moodbridge_retry_exhausted_total";
    /// Counter: calls refused before reaching the platform, by `platform`, `operation`,
    /// `by` (`circuit_breaker`, `rate_limiter`, `bulkhead`).
    pub const REJECTED: &str = "moodbridge_calls_rejected_total";
    /// Counter: circuit-breaker state changes, by `platform`, `to` (`open`, `half_open`,
    /// `closed`).
    pub const CIRCUIT_TRANSITIONS: &str = "moodbridge_circuit_transitions_total";
    /// Gauge: circuit-breaker state by `platform`: 0 closed, 1 half-open, 2 open.
    pub const CIRCUIT_STATE: &str = "moodbridge_circuit_state";
    /// Histogram, seconds: time spent waiting for the rate limiter, by `platform`,
    /// `operation`.
    pub const RATE_LIMIT_WAIT: &str = "moodbridge_rate_limit_wait_seconds";
    /// Gauge: calls in flight inside a bulkhead, by `platform`.
    pub const IN_FLIGHT: &str = "moodbridge_bulkhead_in_flight";
    /// Counter: attempts that hit the per-attempt timeout, by `platform`, `operation`.
    pub const ATTEMPT_TIMEOUTS: &str = "moodbridge_attempt_timeouts_total";
    /// Counter: records handled by the sync engine, by `pipeline`, `stream`, `outcome`
    /// (`read`, `written`, `failed`).
    pub const SYNC_RECORDS: &str = "moodbridge_sync_records_total";
    /// Counter: checkpoints committed by the sync engine, by `pipeline`, `stream`.
    pub const SYNC_CHECKPOINTS: &str = "moodbridge_sync_checkpoints_total";
    /// Counter: sync runs ended, by `pipeline`, `status` (`succeeded`, `failed`).
    pub const SYNC_RUNS: &str = "moodbridge_sync_runs_total";

    /// Register a description and unit for each metric with the installed recorder.
    pub fn describe() {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_counter!(CALLS, Unit::Count, "Calls made through a resilience policy");
        describe_histogram!(
            CALL_DURATION,
            Unit::Seconds,
            "Duration of a policy call including retries"
        );
        describe_counter!(RETRIES, Unit::Count, "Retries scheduled by a retry policy");
        describe_counter!(RETRY_EXHAUSTED, Unit::Count, "Calls that gave up retrying");
        describe_counter!(
            REJECTED,
            Unit::Count,
            "Calls refused before reaching the platform"
        );
        describe_counter!(
            CIRCUIT_TRANSITIONS,
            Unit::Count,
            "Circuit breaker state changes"
        );
        describe_gauge!(
            CIRCUIT_STATE,
            "Circuit breaker state: 0 closed, 1 half-open, 2 open"
        );
        describe_histogram!(
            RATE_LIMIT_WAIT,
            Unit::Seconds,
            "Time spent waiting for the rate limiter"
        );
        describe_gauge!(IN_FLIGHT, Unit::Count, "Calls in flight inside a bulkhead");
        describe_counter!(
            ATTEMPT_TIMEOUTS,
            Unit::Count,
            "Attempts that hit the per-attempt timeout"
        );
        describe_counter!(
            SYNC_RECORDS,
            Unit::Count,
            "Records handled by the sync engine"
        );
        describe_counter!(
            SYNC_CHECKPOINTS,
            Unit::Count,
            "Checkpoints committed by the sync engine"
        );
        describe_counter!(SYNC_RUNS, Unit::Count, "Sync runs ended");
    }
}

#[cfg(test)]
mod tests {
    use super::op;

    #[test]
    fn operation_names_follow_the_rule_and_are_documented() {
        let telemetry = include_str!("../../../docs/telemetry.md");
        let kinds = [
            ("salesforce", op::salesforce::ALL),
            ("s3", op::s3::ALL),
            ("azure_blob", op::azure_blob::ALL),
        ];
        for (kind, names) in kinds {
            let mut seen = std::collections::HashSet::new();
            for name in names {
                let rest = name
                    .strip_prefix(kind)
                    .and_then(|r| r.strip_prefix('.'))
                    .unwrap_or_else(|| panic!("{name} does not start with `{kind}.`"));
                assert!(
                    !rest.is_empty()
                        && rest
                            .chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                    "{name}: the operation is snake case"
                );
                assert!(seen.insert(name), "{name} twice");
                assert!(
                    telemetry.contains(&format!("| `{name}` |")),
                    "{name} is missing from docs/telemetry.md"
                );
            }
        }
    }
}
