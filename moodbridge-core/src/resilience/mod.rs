//! Resilience: a [`Policy`] wraps any async operation in, outermost first,
//!
//! 1. a **total deadline** for the whole call, retries included;
//! 2. **retry** — exponential backoff with full jitter, bounded attempts and time,
//!    honouring `Retry-After`, only for temporary errors, with an optional retry budget
//!    ([`retry`]);
//! 3. a **circuit breaker** ([`circuit`]);
//! 4. a **rate limiter** — governor's GCRA, waiting by default, keyed if asked
//!    ([`rate_limit`]);
//! 5. a **bulkhead** — a cap on calls in flight ([`bulkhead`]);
//! 6. a **per-attempt timeout**.
//!
//! Every step is optional; each knows one thing. The breaker sits inside the retry so each
//! attempt is judged on its own and an open breaker stops the retries; the limiter sits
//! inside the breaker so no quota is spent on calls an open breaker would refuse anyway.
//!
//! Every call runs in a `remote_call` tracing span (platform, operation, correlation id,
//! attempts, outcome, latency), each attempt in a child `attempt` span, and every decision
//! is a tracing event and a metric ([`crate::observe::metric`]).
//!
//! The same policy wraps whole integrations as a layer: see [`layer`].

pub mod bulkhead;
mod call_metrics;
pub mod circuit;
pub mod layer;
pub mod rate_limit;
pub mod retry;

pub use bulkhead::Bulkhead;
pub use circuit::{
    CallOutcome, CircuitBreaker, CircuitBreakerConfig, CircuitState, SlowCallConfig,
};
pub use layer::{Guarded, Layer, LayerExt};
pub use rate_limit::{OnLimit, RateLimitConfig, RateLimiter, RatePeriod, RateQuota};
pub use retry::{RetryBudgetConfig, RetryConfig};

use std::borrow::Cow;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::Instrument;

use crate::error::{Error, ErrorKind, Result};
use crate::observe::{CorrelationId, metric, scope_correlation_id};
use crate::validate::{Validate, Validator};
use call_metrics::CallMetrics;
use retry::{Decision, Retry};

/// What a call does, as the policy needs to know it.
///
/// ```
/// use moodbridge_core::Operation;
///
/// let op = Operation::new("salesforce.sobject_create").non_idempotent().keyed("00D000000000001");
/// assert!(!op.is_idempotent());
/// let read: Operation = "salesforce.query".into();
/// assert!(read.is_idempotent());
/// ```
#[derive(Debug, Clone)]
pub struct Operation {
    name: Cow<'static, str>,
    idempotent: bool,
    key: Option<Arc<str>>,
}

impl Operation {
    /// An idempotent operation named `name` (`<kind>.<operation>`, e.g. `"s3.put_object"`; see [`observe::op`](crate::observe::op)).
    pub fn new(name: impl Into<Cow<'static, str>>) -> Self {
        Operation {
            name: name.into(),
            idempotent: true,
            key: None,
        }
    }

    /// Mark the operation non-idempotent: timeouts and `Unavailable` errors are then not
    /// retried, since the platform may have applied the first attempt.
    pub fn non_idempotent(mut self) -> Self {
        self.idempotent = false;
        self
    }

    /// The rate-limit key (org id, tenant) for keyed limiters.
    pub fn keyed(mut self, key: impl Into<Arc<str>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// The operation's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether repeating it is safe.
    pub fn is_idempotent(&self) -> bool {
        self.idempotent
    }
}

impl From<&'static str> for Operation {
    fn from(name: &'static str) -> Self {
        Operation::new(name)
    }
}

impl From<String> for Operation {
    fn from(name: String) -> Self {
        Operation::new(name)
    }
}

/// The serde form of a [`Policy`], as written in an integration's config.
///
/// ```
/// use moodbridge_core::PolicyConfig;
/// let cfg: PolicyConfig = toml::from_str(r#"
///     timeout = "2m"
///     attempt_timeout = "30s"
///     max_concurrency = 8
///     [retry]
///     max_attempts = 5
///     [circuit_breaker]
///     consecutive_failures = 5
///     [rate_limit]
///     rate = 25
///     per = "second"
/// "#).unwrap();
/// assert_eq!(cfg.retry.unwrap().max_attempts, 5);
/// ```
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Deadline of a whole call, retries included.
    #[serde(with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// Timeout of one attempt.
    #[serde(with = "humantime_serde")]
    pub attempt_timeout: Option<Duration>,
    /// Retry settings; no retries when absent.
    pub retry: Option<RetryConfig>,
    /// Circuit-breaker settings; no breaker when absent.
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// Rate-limit settings; no limit when absent.
    pub rate_limit: Option<RateLimitConfig>,
    /// Most calls in flight at once; unlimited when absent.
    pub max_concurrency: Option<usize>,
    /// Longest wait for a concurrency slot before rejecting; unlimited when absent.
    #[serde(with = "humantime_serde")]
    pub max_concurrency_wait: Option<Duration>,
}

impl PolicyConfig {
    /// This config with every part `overrides` sets replacing this one's: how a
    /// connector's default policy and an integration's `policy` table combine (a table
    /// that sets only `rate_limit` keeps the connector's retry and timeouts).
    ///
    /// ```
    /// use moodbridge_core::{PolicyConfig, RetryConfig};
    /// use std::time::Duration;
    ///
    /// let default = PolicyConfig { retry: Some(RetryConfig::default()), attempt_timeout: Some(Duration::from_secs(60)), ..Default::default() };
    /// let mine = PolicyConfig { attempt_timeout: Some(Duration::from_secs(5)), ..Default::default() };
    /// let both = default.overlay(&mine);
    /// assert_eq!(both.retry, Some(RetryConfig::default()));
    /// assert_eq!(both.attempt_timeout, Some(Duration::from_secs(5)));
    /// ```
    #[must_use]
    pub fn overlay(&self, overrides: &PolicyConfig) -> PolicyConfig {
        PolicyConfig {
            timeout: overrides.timeout.or(self.timeout),
            attempt_timeout: overrides.attempt_timeout.or(self.attempt_timeout),
            retry: overrides.retry.clone().or_else(|| self.retry.clone()),
            circuit_breaker: overrides
                .circuit_breaker
                .clone()
                .or_else(|| self.circuit_breaker.clone()),
            rate_limit: overrides
                .rate_limit
                .clone()
                .or_else(|| self.rate_limit.clone()),
            max_concurrency: overrides.max_concurrency.or(self.max_concurrency),
            max_concurrency_wait: overrides.max_concurrency_wait.or(self.max_concurrency_wait),
        }
    }
}

impl Validate for PolicyConfig {
    fn validate_into(&self, v: &mut Validator) {
        if self.timeout.is_some_and(|d| d.is_zero()) {
            v.problem(
                "timeout",
                "is zero",
                "use a value like \"2m\", or leave it out",
            );
        }
        if self.attempt_timeout.is_some_and(|d| d.is_zero()) {
            v.problem(
                "attempt_timeout",
                "is zero",
                "use a value like \"30s\", or leave it out",
            );
        }
        if let (Some(total), Some(attempt)) = (self.timeout, self.attempt_timeout)
            && attempt > total
        {
            v.problem(
                "attempt_timeout",
                "is longer than timeout, so it can never fire",
                "make attempt_timeout shorter than timeout",
            );
        }
        if self.max_concurrency == Some(0) {
            v.problem(
                "max_concurrency",
                "is 0, which would block every call",
                "use 1 or more",
            );
        }
        if let Some(r) = &self.retry {
            v.nested("retry", |v| r.validate_into(v));
        }
        if let Some(c) = &self.circuit_breaker {
            v.nested("circuit_breaker", |v| c.validate_into(v));
        }
        if let Some(r) = &self.rate_limit {
            v.nested("rate_limit", |v| r.validate_into(v));
        }
    }
}

/// The TSC clock latency is read from: a raw read costs a few nanoseconds, a
/// `clock_gettime` several times that.
fn latency_clock() -> &'static quanta::Clock {
    static CLOCK: std::sync::OnceLock<quanta::Clock> = std::sync::OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

struct Inner {
    platform: Arc<str>,
    connector: Option<&'static str>,
    metrics: CallMetrics,
    timeout: Option<Duration>,
    retry: Option<Retry>,
    breaker: Option<CircuitBreaker>,
    limiter: Option<RateLimiter>,
    bulkhead: Option<Bulkhead>,
    attempt_timeout: Option<Duration>,
}

/// Timeout, retry, circuit breaker, rate limit and bulkhead around the calls to one
/// platform. Cheap to clone; clones share breaker, limiter and bulkhead state.
///
/// ```
/// use moodbridge_core::{Error, Policy, RetryConfig};
/// use std::sync::atomic::{AtomicU32, Ordering};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let policy = Policy::builder("salesforce:prod").retry(RetryConfig::default()).build();
/// let calls = AtomicU32::new(0);
/// let answer = policy
///     .call(|| async {
///         // Fails once with a temporary error, then succeeds.
///         if calls.fetch_add(1, Ordering::SeqCst) == 0 {
///             Err(Error::unavailable("503 Service Unavailable"))
///         } else {
///             Ok(42)
///         }
///     })
///     .await
///     .unwrap();
/// assert_eq!(answer, 42);
/// assert_eq!(calls.load(Ordering::SeqCst), 2);
/// # });
/// ```
#[derive(Clone)]
pub struct Policy {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("platform", &self.inner.platform)
            .field("connector", &self.inner.connector)
            .field("timeout", &self.inner.timeout)
            .field("retry", &self.inner.retry.as_ref().map(|r| &r.config))
            .field("circuit_breaker", &self.inner.breaker)
            .field("rate_limiter", &self.inner.limiter)
            .field("bulkhead", &self.inner.bulkhead)
            .field("attempt_timeout", &self.inner.attempt_timeout)
            .finish()
    }
}

/// Builds a [`Policy`] step by step.
#[derive(Debug)]
pub struct PolicyBuilder {
    platform: Arc<str>,
    connector: Option<&'static str>,
    timeout: Option<Duration>,
    retry: Option<RetryConfig>,
    breaker: Option<CircuitBreaker>,
    limiter: Option<RateLimiter>,
    bulkhead: Option<Bulkhead>,
    attempt_timeout: Option<Duration>,
}

impl PolicyBuilder {
    /// The builder of a policy from its config (for steps a config cannot hold, such as
    /// the [`connector`](Self::connector) kind). Invalid settings are a
    /// [`ErrorKind::Config`] error listing every problem.
    ///
    /// ```
    /// use moodbridge_core::resilience::PolicyBuilder;
    /// use moodbridge_core::PolicyConfig;
    /// let cfg: PolicyConfig = toml::from_str("[retry]\nmax_attempts = 3").unwrap();
    /// let policy = PolicyBuilder::from_config("s3:docs", &cfg).unwrap().connector("s3").build();
    /// assert_eq!((policy.platform(), policy.connector()), ("s3:docs", Some("s3")));
    /// ```
    pub fn from_config(platform: impl Into<Arc<str>>, config: &PolicyConfig) -> Result<Self> {
        config.validate()?;
        let platform: Arc<str> = platform.into();
        let mut b = Policy::builder(Arc::clone(&platform));
        b.timeout = config.timeout;
        b.attempt_timeout = config.attempt_timeout;
        b.retry = config.retry.clone();
        if let Some(c) = &config.circuit_breaker {
            b.breaker = Some(CircuitBreaker::new(Arc::clone(&platform), c.clone()));
        }
        if let Some(r) = &config.rate_limit {
            b.limiter = Some(RateLimiter::new(Arc::clone(&platform), r.clone())?);
        }
        if let Some(n) = config.max_concurrency {
            b.bulkhead = Some(Bulkhead::new(
                Arc::clone(&platform),
                n,
                config.max_concurrency_wait,
            ));
        }
        Ok(b)
    }

    /// The connector kind (`salesforce`, `s3` …) of the guarded integration: the
    /// `connector` field of spans, the `connector` label of call metrics and the
    /// [`Error::connector`] of errors that do not name one yet. The registry sets it
    /// to the factory's kind.
    pub fn connector(mut self, kind: &'static str) -> Self {
        self.connector = Some(kind);
        self
    }

    /// Deadline of a whole call, retries included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Retry temporary errors.
    pub fn retry(mut self, config: RetryConfig) -> Self {
        self.retry = Some(config);
        self
    }

    /// Use a circuit breaker (share one between policies by cloning it).
    pub fn circuit_breaker(mut self, breaker: CircuitBreaker) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Use a rate limiter (share one between policies by cloning it).
    pub fn rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Cap calls in flight.
    pub fn bulkhead(mut self, bulkhead: Bulkhead) -> Self {
        self.bulkhead = Some(bulkhead);
        self
    }

    /// Timeout of one attempt.
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// The policy.
    pub fn build(self) -> Policy {
        Policy {
            inner: Arc::new(Inner {
                metrics: CallMetrics::new(&self.platform, self.connector),
                platform: self.platform,
                connector: self.connector,
                timeout: self.timeout,
                retry: self.retry.map(Retry::new),
                breaker: self.breaker,
                limiter: self.limiter,
                bulkhead: self.bulkhead,
                attempt_timeout: self.attempt_timeout,
            }),
        }
    }
}

impl Policy {
    /// Start building a policy for `platform` (the integration id, used in errors, spans
    /// and metric labels).
    pub fn builder(platform: impl Into<Arc<str>>) -> PolicyBuilder {
        PolicyBuilder {
            platform: platform.into(),
            connector: None,
            timeout: None,
            retry: None,
            breaker: None,
            limiter: None,
            bulkhead: None,
            attempt_timeout: None,
        }
    }

    /// A policy with no steps: calls pass straight through (still traced and counted).
    pub fn passthrough(platform: impl Into<Arc<str>>) -> Self {
        Self::builder(platform).build()
    }

    /// A policy from its config. Invalid settings are a [`ErrorKind::Config`] error listing
    /// every problem.
    ///
    /// ```
    /// use moodbridge_core::{Policy, PolicyConfig};
    /// let cfg: PolicyConfig = toml::from_str("[retry]\nmax_attempts = 3").unwrap();
    /// let policy = Policy::from_config("s3:docs", &cfg).unwrap();
    /// assert_eq!(policy.platform(), "s3:docs");
    /// ```
    pub fn from_config(platform: impl Into<Arc<str>>, config: &PolicyConfig) -> Result<Self> {
        Ok(PolicyBuilder::from_config(platform, config)?.build())
    }

    /// The platform this policy guards.
    pub fn platform(&self) -> &str {
        &self.inner.platform
    }

    /// The connector kind of the guarded integration, if set
    /// ([`PolicyBuilder::connector`]).
    pub fn connector(&self) -> Option<&'static str> {
        self.inner.connector
    }

    /// The circuit breaker, if any (for health reports and manual control).
    pub fn circuit_breaker(&self) -> Option<&CircuitBreaker> {
        self.inner.breaker.as_ref()
    }

    /// The timeout of one attempt, if any (connectors with their own transport timeouts
    /// use it to avoid a second timer per call).
    ///
    /// ```
    /// use moodbridge_core::Policy;
    /// use std::time::Duration;
    /// let p = Policy::builder("crm").attempt_timeout(Duration::from_secs(5)).build();
    /// assert_eq!(p.attempt_timeout(), Some(Duration::from_secs(5)));
    /// ```
    pub fn attempt_timeout(&self) -> Option<Duration> {
        self.inner.attempt_timeout
    }

    /// The rate limiter, if any (connectors adjust its quota from platform headers).
    pub fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.inner.limiter.as_ref()
    }

    /// Run `f` under the policy as an idempotent operation named `"call"`. `f` is called
    /// once per attempt.
    pub fn call<T, F, Fut>(&self, f: F) -> impl Future<Output = Result<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.call_as(Operation::new("call"), f)
    }

    /// Run `f` under the policy as `operation`. `f` is called once per attempt. Errors come
    /// back with the platform and operation set (unless the connector set them already)
    /// and, if retries were spent, marked persistent.
    pub fn call_as<T, F, Fut>(
        &self,
        operation: impl Into<Operation>,
        f: F,
    ) -> impl Future<Output = Result<T>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        // A plain function building one wrapper around one state machine: every extra
        // async layer would hold its child future twice (before and after wrapping it),
        // and moving those bytes was most of the policy's cost.
        let op = operation.into();
        let correlation_id = CorrelationId::current().unwrap_or_else(CorrelationId::generate);
        let span = tracing::info_span!(
            "remote_call",
            platform = %self.inner.platform,
            connector = self.inner.connector.unwrap_or_default(),
            operation = %op.name,
            correlation_id = %correlation_id,
            attempts = tracing::field::Empty,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        // A span no subscriber wants is not entered at every poll.
        let call = if span.is_disabled() {
            futures::future::Either::Left(self.execute(op, f, None))
        } else {
            let record = span.clone();
            futures::future::Either::Right(self.execute(op, f, Some(record)).instrument(span))
        };
        scope_correlation_id(correlation_id, call)
    }

    /// The call's attempts, then its outcome recorded: in metrics, and in `span` (the
    /// call's `remote_call` span, when a subscriber wants it).
    async fn execute<T, F, Fut>(
        &self,
        op: Operation,
        mut f: F,
        span: Option<tracing::Span>,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &*self.inner;
        // Latency is real elapsed time, read from the TSC (quanta): a `clock_gettime` costs
        // twice as much and was the largest single cost of a call. Tokio's clock is read
        // only where paused-clock semantics matter (deadline, retry time budget).
        let started = latency_clock().raw();
        let mut attempts = 0u32;
        let result = match inner.timeout {
            None => {
                self.retry_loop(&op, &mut f, started, None, &mut attempts)
                    .await
            }
            // Boxed: a `Timeout` embeds a timer entry; out of line it costs nothing to the
            // calls that set no deadline.
            Some(limit) => {
                let deadline = Instant::now() + limit;
                let attempts_loop =
                    self.retry_loop(&op, &mut f, started, Some(deadline), &mut attempts);
                match Box::pin(tokio::time::timeout_at(deadline, attempts_loop)).await {
                    Ok(r) => r,
                    Err(_) => Err(Error::new(
                        ErrorKind::Timeout,
                        format!(
                            "no answer within the call deadline of {}ms",
                            limit.as_millis()
                        ),
                    )
                    .with_hint("the platform is slow; retry later or raise the policy timeout")
                    .persist()),
                }
            }
        };
        let result = result.map_err(|e| {
            let e = e
                .with_platform(inner.platform.to_string())
                .with_operation(op.name.clone());
            match inner.connector {
                Some(kind) => e.with_connector(kind),
                None => e,
            }
        });
        let outcome = match &result {
            Ok(_) => "ok",
            Err(e) => e.kind().as_str(),
        };
        let took = latency_clock().delta(started, latency_clock().raw());
        if let Some(span) = span {
            span.record("attempts", attempts);
            span.record("outcome", outcome);
            span.record("latency_ms", took.as_millis() as u64);
        }
        inner.metrics.record(&op.name, outcome, took);
        result
    }

    /// Retry around attempts; each attempt is breaker → limiter → bulkhead → per-attempt
    /// timeout → `f`, inline so the state machine stays one level deep.
    async fn retry_loop<T, F, Fut>(
        &self,
        op: &Operation,
        f: &mut F,
        started: u64,
        deadline: Option<Instant>,
        attempts: &mut u32,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let inner = &*self.inner;
        if let Some(r) = &inner.retry {
            r.on_call();
        }
        // Set at the first failure: (tokio time then, real time of the first attempt). The
        // retry time budget counts from the first attempt's start; tokio's clock measures
        // the rest so that paused-clock tests see the backoff sleeps.
        let mut first_failure: Option<(Instant, Duration)> = None;
        loop {
            *attempts += 1;
            let attempt = *attempts;

            // Circuit breaker.
            let permit = match &inner.breaker {
                Some(b) => match b.try_acquire() {
                    Ok(p) => Some(p),
                    Err(e) => return Err(self.rejected(op, e)),
                },
                None => None,
            };
            // Limiter and bulkhead: a synchronous fast path; the waiting paths are boxed so
            // their futures (timer entries, semaphore waiters) do not bloat every call.
            if let Some(l) = &inner.limiter
                && !l.try_acquire_now(op.key.as_deref())
                && let Err(e) = Box::pin(l.acquire(op.key.as_deref())).await
            {
                return Err(self.rejected(op, e));
            }
            let slot = match &inner.bulkhead {
                Some(b) => match b.try_acquire_now() {
                    Some(slot) => Some(slot),
                    None => match Box::pin(b.acquire()).await {
                        Ok(slot) => Some(slot),
                        Err(e) => return Err(self.rejected(op, e)),
                    },
                },
                None => None,
            };
            // The call itself, with the per-attempt timeout.
            let call_started = match &inner.breaker {
                Some(b) if b.measures_duration() => Some(Instant::now()),
                _ => None,
            };
            let span = tracing::debug_span!("attempt", attempt);
            let call = if span.is_disabled() {
                futures::future::Either::Left(f())
            } else {
                futures::future::Either::Right(f().instrument(span))
            };
            let result = match inner.attempt_timeout {
                None => call.await,
                Some(limit) => match Box::pin(tokio::time::timeout(limit, call)).await {
                    Ok(r) => r,
                    Err(_) => {
                        metrics::counter!(metric::ATTEMPT_TIMEOUTS, inner.labels(op, None))
                            .increment(1);
                        Err(Error::new(
                            ErrorKind::Timeout,
                            format!("attempt took longer than {}ms", limit.as_millis()),
                        ))
                    }
                },
            };
            drop(slot);
            if let Some(p) = permit {
                p.record_result(
                    &result,
                    call_started.map_or(Duration::ZERO, |t| t.elapsed()),
                );
            }
            let err = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };

            // Retry decision.
            let Some(retry) = &inner.retry else {
                return Err(err);
            };
            let now = Instant::now();
            let (failed_at, first_attempt) = *first_failure.get_or_insert_with(|| {
                (now, latency_clock().delta(started, latency_clock().raw()))
            });
            let decision = retry.decide(
                &err,
                op.idempotent,
                attempt,
                first_attempt + (now - failed_at),
                deadline.map(|d| d.saturating_duration_since(now)),
            );
            match decision {
                Decision::Return => return Err(err),
                Decision::GiveUp(why) => {
                    tracing::warn!(
                        platform = %inner.platform, operation = %op.name, attempt,
                        reason = why.as_str(), error = %err,
                        "giving up retrying"
                    );
                    metrics::counter!(
                        metric::RETRY_EXHAUSTED,
                        inner.labels(op, Some(("reason", why.as_str().into())))
                    )
                    .increment(1);
                    return Err(err.persist().with_context("attempts", attempt));
                }
                Decision::RetryAfter(delay) => {
                    tracing::info!(
                        platform = %inner.platform, operation = %op.name, attempt,
                        delay_ms = delay.as_millis() as u64, kind = err.kind().as_str(),
                        error = %err,
                        "retry scheduled"
                    );
                    metrics::counter!(
                        metric::RETRIES,
                        inner.labels(op, Some(("kind", err.kind().as_str().into())))
                    )
                    .increment(1);
                    drop(err);
                    Box::pin(tokio::time::sleep(delay)).await;
                }
            }
        }
    }

    fn rejected(&self, op: &Operation, err: Error) -> Error {
        let by = err.context_value("by").unwrap_or("policy").to_owned();
        tracing::warn!(
            platform = %self.inner.platform, operation = %op.name, by = %by,
            "call rejected"
        );
        metrics::counter!(
            metric::REJECTED,
            self.inner.labels(op, Some(("by", by.into())))
        )
        .increment(1);
        err
    }
}

impl Inner {
    /// The labels of an uncached call metric: `platform`, `connector` (when set),
    /// `operation`, then `extra`.
    fn labels(
        &self,
        op: &Operation,
        extra: Option<(&'static str, metrics::SharedString)>,
    ) -> Vec<metrics::Label> {
        let mut labels = Vec::with_capacity(4);
        labels.push(metrics::Label::new("platform", self.platform.to_string()));
        if let Some(kind) = self.connector {
            labels.push(metrics::Label::new("connector", kind));
        }
        labels.push(metrics::Label::new("operation", op.name.clone()));
        if let Some((key, value)) = extra {
            labels.push(metrics::Label::new(key, value));
        }
        labels
    }
}

#[cfg(test)]
mod tests;
