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

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

tokio::task_local! {
    static CORRELATION_ID: CorrelationId;
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
