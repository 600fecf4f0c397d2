//! The circuit breaker: stop calling a platform that keeps failing, probe it after a
//! while, resume when it answers again.
//!
//! The model is failsafe's (`failsafe::StateMachine` with a `FailurePolicy`): closed →
//! open when the failure policy says the platform is dead, open for a wait that grows on
//! each re-open, half-open probing, closed again once revived. We implement the machine
//! ourselves because failsafe reads `std::time::Instant` through a thread-local mock
//! clock (so tokio's paused clock cannot drive it in tests), works in whole seconds, and
//! lacks what the SDK needs:
//! - open on *N consecutive failures* **or** on a *failure rate* over a sliding time
//!   window once a minimum number of calls was seen;
//! - an optional *slow-call rate*: calls longer than a duration count as slow, and a slow
//!   rate over a threshold opens the circuit too;
//! - a configurable number of half-open trial calls (all must succeed to close; any failure
//!   or slow trial re-opens);
//! - manual force-open / force-close;
//! - a failure predicate on [`Error`]: by default only kinds that mean "the platform is in
//!   trouble" (unavailable, timeout, protocol) trip it — a 404 or a validation error is
//!   the platform answering correctly and counts as a success.
//!
//! Time comes from `tokio::time::Instant`, so tests run on the paused clock.

use std::collections::VecDeque;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::{Error, ErrorKind};
use crate::observe::metric;
use crate::validate::{Validate, Validator};

/// Settings of a [`CircuitBreaker`].
///
/// ```
/// use moodbridge_core::{CircuitBreakerConfig, SlowCallConfig};
/// use std::time::Duration;
///
/// let cfg = CircuitBreakerConfig {
///     consecutive_failures: Some(5),
///     failure_rate: Some(0.5),
///     minimum_calls: 20,
///     slow_call: Some(SlowCallConfig { duration: Duration::from_secs(2), rate: 0.8 }),
///     ..CircuitBreakerConfig::default()
/// };
/// assert_eq!(cfg.half_open_trials, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CircuitBreakerConfig {
    /// Open after this many failures in a row. `None` disables the rule.
    pub consecutive_failures: Option<u32>,
    /// Open when the share of failed calls in the window reaches this (0.0–1.0].
    /// `None` disables the rule.
    pub failure_rate: Option<f64>,
    /// Open when the share of slow calls in the window reaches the given rate.
    pub slow_call: Option<SlowCallConfig>,
    /// The sliding window the rates are computed over.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Rates are only judged once the window holds at least this many calls.
    pub minimum_calls: u32,
    /// How long the circuit stays open the first time.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
    /// Each re-open straight from half-open doubles the open time, up to this.
    #[serde(with = "humantime_serde")]
    pub max_open_for: Duration,
    /// Trial calls admitted while half-open; all must succeed to close the circuit.
    pub half_open_trials: u32,
}

/// The slow-call rule of a [`CircuitBreakerConfig`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlowCallConfig {
    /// A call taking at least this long is slow.
    #[serde(with = "humantime_serde")]
    pub duration: Duration,
    /// Open when the share of slow calls in the window reaches this (0.0–1.0].
    pub rate: f64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            consecutive_failures: Some(5),
            failure_rate: None,
            slow_call: None,
            window: Duration::from_secs(60),
            minimum_calls: 10,
            open_for: Duration::from_secs(30),
            max_open_for: Duration::from_secs(300),
            half_open_trials: 1,
        }
    }
}

impl Validate for CircuitBreakerConfig {
    fn validate_into(&self, v: &mut Validator) {
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if self.consecutive_failures == Some(0) {
            v.problem(
                "consecutive_failures",
                "is 0",
                "use 1 or more, or leave it out",
            );
        }
        if self.failure_rate.is_some_and(|r| !rate_ok(r)) {
            v.problem(
                "failure_rate",
                "is outside (0.0, 1.0]",
                "use a share like 0.5",
            );
        }
        if let Some(slow) = &self.slow_call {
            if !rate_ok(slow.rate) {
                v.problem(
                    "slow_call.rate",
                    "is outside (0.0, 1.0]",
                    "use a share like 0.8",
                );
            }
            if slow.duration.is_zero() {
                v.problem("slow_call.duration", "is zero", "use a value like \"2s\"");
            }
        }
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.slow_call.is_none()
        {
            v.problem(
                "",
                "no rule can open the circuit",
                "set consecutive_failures, failure_rate or slow_call, or remove the circuit_breaker table",
            );
        }
        if self.window < Duration::from_millis(10) {
            v.problem("window", "is shorter than 10ms", "use a value like \"60s\"");
        }
        if self.minimum_calls == 0 {
            v.problem("minimum_calls", "is 0", "use 1 or more");
        }
        if self.open_for.is_zero() {
            v.problem("open_for", "is zero", "use a value like \"30s\"");
        }
        if self.max_open_for < self.open_for {
            v.problem(
                "max_open_for",
                "is shorter than open_for",
                "set it to at least open_for",
            );
        }
        if self.half_open_trials == 0 {
            v.problem("half_open_trials", "is 0", "use 1 or more");
        }
    }
}

/// The state of a breaker, as callers and health checks see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CircuitState {
    /// Calls flow.
    Closed,
    /// Calls are rejected until the open time has passed.
    Open,
    /// A limited number of trial calls are let through.
    HalfOpen,
    /// Forced open by an operator: every call is rejected.
    ForcedOpen,
    /// Forced closed by an operator: every call flows and nothing trips it.
    ForcedClosed,
}

impl CircuitState {
    fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
            CircuitState::ForcedOpen => "forced_open",
            CircuitState::ForcedClosed => "forced_closed",
        }
    }

    fn gauge(self) -> f64 {
        match self {
            CircuitState::Closed | CircuitState::ForcedClosed => 0.0,
            CircuitState::HalfOpen => 1.0,
            CircuitState::Open | CircuitState::ForcedOpen => 2.0,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether an error counts as a failure of the platform.
pub type FailurePredicate = Arc<dyn Fn(&Error) -> bool + Send + Sync>;

/// The default failure predicate: unavailable, timeout and protocol errors count; every
/// other error (not found, invalid input, conflict, auth …) means the platform answered.
///
/// ```
/// use moodbridge_core::{Error, ErrorKind};
/// use moodbridge_core::resilience::circuit::counts_as_failure;
///
/// assert!(counts_as_failure(&Error::unavailable("503")));
/// assert!(!counts_as_failure(&Error::not_found("404")));
/// ```
pub fn counts_as_failure(err: &Error) -> bool {
    matches!(
        err.kind(),
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::Protocol
    )
}

/// How a permitted call ended, from the breaker's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The platform answered (successfully, or with an error that is not its failure).
    Success,
    /// The platform failed.
    Failure,
    /// The call never reached the platform (rejected by an inner step); not counted.
    Ignored,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    calls: u32,
    failures: u32,
    slow: u32,
}

/// A time-bucketed sliding window: `BUCKETS` buckets of `window / BUCKETS` each.
#[derive(Debug)]
struct Window {
    bucket_len: Duration,
    span: Duration,
    buckets: VecDeque<(Instant, Counts)>,
}

const BUCKETS: u32 = 10;

impl Window {
    fn new(span: Duration) -> Self {
        Window {
            bucket_len: (span / BUCKETS).max(Duration::from_millis(1)),
            span,
            buckets: VecDeque::with_capacity(BUCKETS as usize + 1),
        }
    }

    fn prune(&mut self, now: Instant) {
        while let Some((start, _)) = self.buckets.front() {
            if *start + self.span <= now {
                self.buckets.pop_front();
            } else {
                break;
            }
        }
    }

    fn record(&mut self, now: Instant, failure: bool, slow: bool) -> Counts {
        self.prune(now);
        let need_new = match self.buckets.back() {
            Some((start, _)) => *start + self.bucket_len <= now,
            None => true,
        };
        if need_new {
            self.buckets.push_back((now, Counts::default()));
        }
        if let Some((_, c)) = self.buckets.back_mut() {
            c.calls += 1;
            c.failures += u32::from(failure);
            c.slow += u32::from(slow);
        }
        self.buckets
            .iter()
            .fold(Counts::default(), |acc, (_, c)| Counts {
                calls: acc.calls + c.calls,
                failures: acc.failures + c.failures,
                slow: acc.slow + c.slow,
            })
    }

    fn clear(&mut self) {
        self.buckets.clear();
    }
}

#[derive(Debug)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { admitted: u32, succeeded: u32 },
    ForcedOpen,
    ForcedClosed,
}

#[derive(Debug)]
struct Machine {
    state: State,
    /// Bumped on every transition; outcomes of permits from an older generation are
    /// ignored, so a slow call admitted while closed cannot close a half-open circuit.
    generation: u64,
    consecutive: u32,
    window: Window,
    /// Re-opens in a row straight from half-open; grows the open time.
    reopens: u32,
}

struct Inner {
    name: Arc<str>,
    config: CircuitBreakerConfig,
    /// A rate rule is set, so every closed-state outcome must go into the window.
    windowed: bool,
    is_failure: FailurePredicate,
    machine: Mutex<Machine>,
    /// Lock-free mirror of the machine for the common case, written on every unlock:
    /// `generation << 2 | mode`, where mode says whether calls may be admitted without
    /// the lock. A closed breaker then costs one atomic load to admit and, for a success
    /// with nothing to reset, one more to record.
    fast: AtomicU64,
    /// Mirror of `consecutive > 0`: a success must take the lock to reset the count.
    failing: AtomicBool,
}

const MODE_LOCKED: u64 = 0;
const MODE_CLOSED: u64 = 1;
const MODE_FORCED_CLOSED: u64 = 2;
const MODE_MASK: u64 = 3;

/// The machine under its lock; publishes the lock-free mirror when released.
struct Guard<'a> {
    machine: MutexGuard<'a, Machine>,
    inner: &'a Inner,
}

impl Deref for Guard<'_> {
    type Target = Machine;
    fn deref(&self) -> &Machine {
        &self.machine
    }
}

impl DerefMut for Guard<'_> {
    fn deref_mut(&mut self) -> &mut Machine {
        &mut self.machine
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mode = match self.machine.state {
            State::Closed => MODE_CLOSED,
            State::ForcedClosed => MODE_FORCED_CLOSED,
            _ => MODE_LOCKED,
        };
        self.inner
            .failing
            .store(self.machine.consecutive > 0, Ordering::Release);
        self.inner
            .fast
            .store(self.machine.generation << 2 | mode, Ordering::Release);
    }
}

/// A circuit breaker shared by every call to one platform. Cloning shares the state.
///
/// ```
/// use moodbridge_core::{CircuitBreaker, CircuitBreakerConfig, CircuitState};
///
/// let breaker = CircuitBreaker::new("salesforce:prod", CircuitBreakerConfig::default());
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// breaker.force_open();
/// assert!(breaker.try_acquire().is_err());
/// breaker.reset();
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &self.state())
            .finish()
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`]. Report how the
/// call went with [`Permit::record`]; dropping it unrecorded (e.g. the call was
/// cancelled) counts as [`CallOutcome::Ignored`] and frees a half-open trial slot.
#[must_use = "record the call's outcome on the permit"]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    generation: u64,
    trial: bool,
    recorded: bool,
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("generation", &self.generation)
            .field("trial", &self.trial)
            .finish()
    }
}

impl Permit<'_> {
    /// Record the call's outcome and how long it took.
    pub fn record(mut self, outcome: CallOutcome, took: Duration) {
        self.recorded = true;
        self.breaker
            .on_outcome(self.generation, self.trial, outcome, took);
    }

    /// Record a call's result, classifying errors with the breaker's failure predicate.
    pub fn record_result<T>(self, result: &Result<T, Error>, took: Duration) {
        let outcome = self.breaker.classify(result);
        self.record(outcome, took);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.recorded {
            self.breaker.on_outcome(
                self.generation,
                self.trial,
                CallOutcome::Ignored,
                Duration::ZERO,
            );
        }
    }
}

struct Transition {
    to: CircuitState,
    reason: &'static str,
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the platform id; used in events and metrics).
    pub fn new(name: impl Into<Arc<str>>, config: CircuitBreakerConfig) -> Self {
        Self::with_predicate(name, config, Arc::new(counts_as_failure))
    }

    /// A breaker with a custom failure predicate.
    ///
    /// ```
    /// use moodbridge_core::{CircuitBreaker, CircuitBreakerConfig, ErrorKind};
    /// use std::sync::Arc;
    ///
    /// // Also trip on rate limits.
    /// let breaker = CircuitBreaker::with_predicate(
    ///     "s3:docs",
    ///     CircuitBreakerConfig::default(),
    ///     Arc::new(|e| moodbridge_core::resilience::circuit::counts_as_failure(e)
    ///         || matches!(e.kind(), ErrorKind::RateLimited { .. })),
    /// );
    /// # drop(breaker);
    /// ```
    pub fn with_predicate(
        name: impl Into<Arc<str>>,
        config: CircuitBreakerConfig,
        is_failure: FailurePredicate,
    ) -> Self {
        let window = Window::new(config.window);
        let windowed = config.failure_rate.is_some() || config.slow_call.is_some();
        let breaker = CircuitBreaker {
            inner: Arc::new(Inner {
                name: name.into(),
                config,
                windowed,
                fast: AtomicU64::new(MODE_CLOSED),
                failing: AtomicBool::new(false),
                is_failure,
                machine: Mutex::new(Machine {
                    state: State::Closed,
                    generation: 0,
                    consecutive: 0,
                    window,
                    reopens: 0,
                }),
            }),
        };
        metrics::gauge!(metric::CIRCUIT_STATE, "platform" => breaker.inner.name.to_string())
            .set(0.0);
        breaker
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The settings.
    pub fn config(&self) -> &CircuitBreakerConfig {
        &self.inner.config
    }

    /// Whether call durations matter to this breaker (a slow-call rule is set). When not,
    /// callers may record [`Duration::ZERO`] and skip timing the call.
    pub fn measures_duration(&self) -> bool {
        self.inner.config.slow_call.is_some()
    }

    fn lock(&self) -> Guard<'_> {
        // A panic while holding the lock leaves the machine consistent (every update is a
        // few assignments), so a poisoned lock is still usable.
        Guard {
            machine: self
                .inner
                .machine
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            inner: &self.inner,
        }
    }

    /// The current state. An open circuit whose time is up reports
    /// [`CircuitState::HalfOpen`]: the next call will be a trial.
    pub fn state(&self) -> CircuitState {
        let m = self.lock();
        match m.state {
            State::Closed => CircuitState::Closed,
            State::Open { until } if Instant::now() >= until => CircuitState::HalfOpen,
            State::Open { .. } => CircuitState::Open,
            State::HalfOpen { .. } => CircuitState::HalfOpen,
            State::ForcedOpen => CircuitState::ForcedOpen,
            State::ForcedClosed => CircuitState::ForcedClosed,
        }
    }

    /// Classify a result with the failure predicate.
    pub fn classify<T>(&self, result: &Result<T, Error>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Success,
            Err(e) if e.kind() == ErrorKind::Rejected => CallOutcome::Ignored,
            Err(e) if (self.inner.is_failure)(e) => CallOutcome::Failure,
            Err(_) => CallOutcome::Success,
        }
    }

    /// Ask to make a call. `Err` is an [`ErrorKind::Rejected`] error (with the remaining
    /// open time as `retry_after` context) when the circuit is open, forced open, or
    /// half-open with every trial slot taken.
    pub fn try_acquire(&self) -> Result<Permit<'_>, Error> {
        let fast = self.inner.fast.load(Ordering::Acquire);
        if fast & MODE_MASK != MODE_LOCKED {
            return Ok(Permit {
                breaker: self,
                generation: fast >> 2,
                trial: false,
                recorded: false,
            });
        }
        let mut transition = None;
        let decision = {
            let mut m = self.lock();
            match m.state {
                State::Closed | State::ForcedClosed => Ok(false),
                State::Open { until } if Instant::now() >= until => {
                    m.state = State::HalfOpen {
                        admitted: 1,
                        succeeded: 0,
                    };
                    m.generation += 1;
                    transition = Some(Transition {
                        to: CircuitState::HalfOpen,
                        reason: "open time elapsed",
                    });
                    Ok(true)
                }
                State::Open { until } => Err(Some(until.saturating_duration_since(Instant::now()))),
                State::HalfOpen {
                    ref mut admitted, ..
                } => {
                    if *admitted < self.inner.config.half_open_trials {
                        *admitted += 1;
                        Ok(true)
                    } else {
                        Err(None)
                    }
                }
                State::ForcedOpen => Err(None),
            }
            .map(|trial| (trial, m.generation))
        };
        if let Some(t) = transition {
            self.emit(t);
        }
        match decision {
            Ok((trial, generation)) => Ok(Permit {
                breaker: self,
                generation,
                trial,
                recorded: false,
            }),
            Err(wait) => {
                let mut err = Error::new(
                    ErrorKind::Rejected,
                    format!("circuit breaker of {} is {}", self.inner.name, self.state()),
                )
                .with_platform(self.inner.name.to_string())
                .with_context("by", "circuit_breaker")
                .with_hint("the platform has been failing; calls resume after the open time");
                if let Some(wait) = wait {
                    err = err.with_context("retry_after_ms", wait.as_millis());
                }
                Err(err)
            }
        }
    }

    fn on_outcome(&self, generation: u64, trial: bool, outcome: CallOutcome, took: Duration) {
        if !trial {
            let fast = self.inner.fast.load(Ordering::Acquire);
            if fast >> 2 == generation {
                match fast & MODE_MASK {
                    MODE_FORCED_CLOSED => return,
                    MODE_CLOSED if outcome == CallOutcome::Ignored => return,
                    MODE_CLOSED
                        if outcome == CallOutcome::Success
                            && !self.inner.windowed
                            && !self.inner.failing.load(Ordering::Acquire) =>
                    {
                        return;
                    }
                    _ => {}
                }
            }
        }
        let cfg = &self.inner.config;
        let slow = cfg
            .slow_call
            .as_ref()
            .is_some_and(|s| outcome != CallOutcome::Ignored && took >= s.duration);
        let transition = {
            let mut m = self.lock();
            if m.generation != generation {
                return;
            }
            match m.state {
                State::Closed => {
                    if outcome == CallOutcome::Ignored {
                        return;
                    }
                    let failure = outcome == CallOutcome::Failure;
                    m.consecutive = if failure { m.consecutive + 1 } else { 0 };
                    let counts = if cfg.failure_rate.is_some() || cfg.slow_call.is_some() {
                        m.window.record(Instant::now(), failure, slow)
                    } else {
                        Counts::default()
                    };
                    let judged = counts.calls >= cfg.minimum_calls && counts.calls > 0;
                    let ratio = |n: u32| f64::from(n) / f64::from(counts.calls.max(1));
                    let reason = if cfg.consecutive_failures.is_some_and(|n| m.consecutive >= n) {
                        Some("consecutive failures")
                    } else if judged
                        && cfg
                            .failure_rate
                            .is_some_and(|r| ratio(counts.failures) >= r)
                    {
                        Some("failure rate")
                    } else if judged
                        && cfg
                            .slow_call
                            .as_ref()
                            .is_some_and(|s| ratio(counts.slow) >= s.rate)
                    {
                        Some("slow-call rate")
                    } else {
                        None
                    };
                    reason.map(|reason| self.open(&mut m, reason))
                }
                State::HalfOpen {
                    ref mut admitted,
                    ref mut succeeded,
                } if trial => match outcome {
                    CallOutcome::Ignored => {
                        *admitted = admitted.saturating_sub(1);
                        None
                    }
                    CallOutcome::Failure => {
                        m.reopens += 1;
                        Some(self.open(&mut m, "trial call failed"))
                    }
                    CallOutcome::Success if slow => {
                        m.reopens += 1;
                        Some(self.open(&mut m, "trial call was slow"))
                    }
                    CallOutcome::Success => {
                        *succeeded += 1;
                        if *succeeded >= cfg.half_open_trials {
                            m.state = State::Closed;
                            m.generation += 1;
                            m.reopens = 0;
                            m.consecutive = 0;
                            m.window.clear();
                            Some(Transition {
                                to: CircuitState::Closed,
                                reason: "trial calls succeeded",
                            })
                        } else {
                            None
                        }
                    }
                },
                _ => None,
            }
        };
        if let Some(t) = transition {
            self.emit(t);
        }
    }

    fn open(&self, m: &mut Machine, reason: &'static str) -> Transition {
        let cfg = &self.inner.config;
        let factor = 1u32.checked_shl(m.reopens.min(31)).unwrap_or(u32::MAX);
        let open_for = cfg
            .open_for
            .checked_mul(factor)
            .unwrap_or(cfg.max_open_for)
            .min(cfg.max_open_for);
        m.state = State::Open {
            until: Instant::now() + open_for,
        };
        m.generation += 1;
        m.consecutive = 0;
        m.window.clear();
        Transition {
            to: CircuitState::Open,
            reason,
        }
    }

    /// Reject every call until [`force_close`](Self::force_close) or [`reset`](Self::reset).
    pub fn force_open(&self) {
        self.force(State::ForcedOpen, CircuitState::ForcedOpen);
    }

    /// Let every call through and never trip, until [`force_open`](Self::force_open) or
    /// [`reset`](Self::reset).
    pub fn force_close(&self) {
        self.force(State::ForcedClosed, CircuitState::ForcedClosed);
    }

    /// Back to closed with no history.
    pub fn reset(&self) {
        self.force(State::Closed, CircuitState::Closed);
    }

    fn force(&self, state: State, to: CircuitState) {
        {
            let mut m = self.lock();
            m.state = state;
            m.generation += 1;
            m.consecutive = 0;
            m.reopens = 0;
            m.window.clear();
        }
        self.emit(Transition {
            to,
            reason: "operator",
        });
    }

    fn emit(&self, t: Transition) {
        let name = self.inner.name.to_string();
        match t.to {
            CircuitState::Open | CircuitState::ForcedOpen => tracing::warn!(
                platform = %name, state = t.to.as_str(), reason = t.reason,
                "circuit breaker opened"
            ),
            _ => tracing::info!(
                platform = %name, state = t.to.as_str(), reason = t.reason,
                "circuit breaker state changed"
            ),
        }
        metrics::counter!(metric::CIRCUIT_TRANSITIONS, "platform" => name.clone(), "to" => t.to.as_str())
            .increment(1);
        metrics::gauge!(metric::CIRCUIT_STATE, "platform" => name).set(t.to.gauge());
    }
}

#[cfg(test)]
mod tests;
