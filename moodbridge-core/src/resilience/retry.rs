//! Retry: exponential backoff with full jitter, bounded by attempts *and* time, honouring
//! `Retry-After`, with an optional retry budget.
//!
//! Which errors are retried is decided from the error alone (OpenDAL's rule):
//! - only [`ErrorStatus::Temporary`](crate::ErrorStatus::Temporary) errors;
//! - never [`ErrorKind::Rejected`]: the SDK refused the call on purpose (open breaker,
//!   fail-fast limiter, full bulkhead), and retrying inside the same call would defeat it;
//! - [`ErrorKind::Timeout`] and [`ErrorKind::Unavailable`] only for idempotent operations,
//!   because the platform may have applied the first attempt (arrow-rs `object_store`
//!   does the same).
//!
//! The delay before retry *n* (1-based) is uniform in `[0, min(max_backoff,
//! initial_backoff × 2ⁿ⁻¹)]` ("full jitter", AWS architecture blog), raised to the
//! platform's `Retry-After` when it asked for longer. The retry stops — and the last error
//! is marked [`ErrorStatus::Persistent`](crate::ErrorStatus::Persistent) — when the
//! attempts are spent, when the next wait would pass the time budget or the caller's
//! deadline, or when the retry budget is empty.
//!
//! The retry budget is tower's `TpsBudget`: every call deposits, every retry withdraws,
//! and retries may not exceed a set share of calls (plus a small floor per second), so a
//! platform that is down is not hit with a retry storm multiplied by every caller.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tower::retry::budget::{Budget, TpsBudget};

use crate::error::{Error, ErrorKind};
use crate::validate::{Validate, Validator};

/// Settings of the retry step of a [`Policy`](crate::Policy).
///
/// ```
/// use moodbridge_core::RetryConfig;
/// use std::time::Duration;
///
/// let retry = RetryConfig {
///     max_attempts: 5,
///     initial_backoff: Duration::from_millis(100),
///     ..RetryConfig::default()
/// };
/// assert_eq!(retry.max_backoff, Duration::from_secs(20));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included. 1 disables retries.
    pub max_attempts: u32,
    /// Upper bound of the first retry's delay.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Upper bound of any retry's delay (before `Retry-After` is applied).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Total time from the first attempt after which no further retry is started.
    #[serde(with = "humantime_serde")]
    pub max_elapsed: Duration,
    /// Optional cap on retries as a share of calls.
    pub budget: Option<RetryBudgetConfig>,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(20),
            max_elapsed: Duration::from_secs(60),
            budget: None,
        }
    }
}

/// A retry budget: retries may not exceed `percent` of calls seen over `window`, plus
/// `min_per_second` retries per second that are always allowed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryBudgetConfig {
    /// How long a call's deposit stays in the budget.
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    /// Retries per second allowed whatever the traffic.
    pub min_per_second: u32,
    /// Retries allowed as a share of calls, 0.0–1000.0 (0.2 = one retry per five calls).
    pub percent: f32,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        RetryBudgetConfig {
            window: Duration::from_secs(10),
            min_per_second: 10,
            percent: 0.2,
        }
    }
}

impl Validate for RetryConfig {
    fn validate_into(&self, v: &mut Validator) {
        if self.max_attempts == 0 {
            v.problem("max_attempts", "is 0", "set it to 1 (no retries) or more");
        }
        if self.initial_backoff.is_zero() {
            v.problem("initial_backoff", "is zero", "use a value like \"200ms\"");
        }
        if self.max_backoff < self.initial_backoff {
            v.problem(
                "max_backoff",
                "is smaller than initial_backoff",
                "set max_backoff to at least initial_backoff",
            );
        }
        if self.max_elapsed.is_zero() {
            v.problem("max_elapsed", "is zero", "use a value like \"60s\"");
        }
        if let Some(b) = &self.budget {
            v.nested("budget", |v| {
                if b.window < Duration::from_secs(1) || b.window > Duration::from_secs(60) {
                    v.problem("window", "is outside 1s–60s", "use a value like \"10s\"");
                }
                if !(0.0..=1000.0).contains(&b.percent) || b.percent.is_nan() {
                    v.problem("percent", "is outside 0.0–1000.0", "use a share like 0.2");
                }
            });
        }
    }
}

/// The upper bound of the delay before retry number `retry` (1-based):
/// `min(max, initial × 2^(retry−1))`, without overflow.
///
/// ```
/// use moodbridge_core::resilience::retry::backoff_cap;
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// assert_eq!(backoff_cap(1, ms(100), ms(1000)), ms(100));
/// assert_eq!(backoff_cap(3, ms(100), ms(1000)), ms(400));
/// assert_eq!(backoff_cap(60, ms(100), ms(1000)), ms(1000));
/// ```
pub fn backoff_cap(retry: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32
        .checked_shl(retry.saturating_sub(1))
        .unwrap_or(u32::MAX);
    initial.checked_mul(factor).unwrap_or(max).min(max)
}

/// The delay before retry number `retry`: full jitter below [`backoff_cap`], raised to
/// `retry_after` when the platform asked for longer. `unit` is a uniform sample in
/// `[0, 1]`.
///
/// ```
/// use moodbridge_core::resilience::retry::retry_delay;
/// use std::time::Duration;
/// let ms = Duration::from_millis;
/// assert_eq!(retry_delay(2, ms(100), ms(1000), None, 1.0), ms(200));
/// assert_eq!(retry_delay(2, ms(100), ms(1000), Some(ms(5000)), 0.5), ms(5000));
/// ```
pub fn retry_delay(
    retry: u32,
    initial: Duration,
    max: Duration,
    retry_after: Option<Duration>,
    unit: f64,
) -> Duration {
    let cap = backoff_cap(retry, initial, max);
    let jittered = cap.mul_f64(unit.clamp(0.0, 1.0));
    match retry_after {
        Some(after) if after > jittered => after,
        _ => jittered,
    }
}

/// Why a retry loop stopped retrying a temporary error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    Attempts,
    TimeBudget,
    Deadline,
    RetryBudget,
}

impl GiveUp {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            GiveUp::Attempts => "attempts",
            GiveUp::TimeBudget => "time_budget",
            GiveUp::Deadline => "deadline",
            GiveUp::RetryBudget => "retry_budget",
        }
    }
}

/// What the retry step does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Not a retryable error: return it unchanged.
    Return,
    /// Retryable, but the limits are reached: return it as persistent.
    GiveUp(GiveUp),
    /// Wait this long, then try again.
    RetryAfter(Duration),
}

/// The retry step at run time: its settings plus the shared budget.
#[derive(Clone)]
pub(crate) struct Retry {
    pub(crate) config: RetryConfig,
    budget: Option<Arc<TpsBudget>>,
}

impl Retry {
    pub(crate) fn new(config: RetryConfig) -> Self {
        let budget = config
            .budget
            .as_ref()
            .map(|b| Arc::new(TpsBudget::new(b.window, b.min_per_second, b.percent)));
        Retry { config, budget }
    }

    /// Record a call (a deposit into the retry budget).
    pub(crate) fn on_call(&self) {
        if let Some(b) = &self.budget {
            b.deposit();
        }
    }

    /// Whether `err` is worth retrying at all for an operation of this idempotency.
    pub(crate) fn is_retryable(err: &Error, idempotent: bool) -> bool {
        if !err.is_temporary() {
            return false;
        }
        match err.kind() {
            ErrorKind::Rejected => false,
            ErrorKind::Timeout | ErrorKind::Unavailable => idempotent,
            _ => true,
        }
    }

    /// Decide what to do after failed attempt number `attempt` (1-based), `elapsed` after
    /// the first attempt started, with `until_deadline` left before the caller's deadline.
    pub(crate) fn decide(
        &self,
        err: &Error,
        idempotent: bool,
        attempt: u32,
        elapsed: Duration,
        until_deadline: Option<Duration>,
    ) -> Decision {
        if !Self::is_retryable(err, idempotent) {
            return Decision::Return;
        }
        let c = &self.config;
        if attempt >= c.max_attempts {
            return Decision::GiveUp(GiveUp::Attempts);
        }
        let delay = retry_delay(
            attempt,
            c.initial_backoff,
            c.max_backoff,
            err.retry_after(),
            rand::random::<f64>(),
        );
        if elapsed + delay >= c.max_elapsed {
            return Decision::GiveUp(GiveUp::TimeBudget);
        }
        if until_deadline.is_some_and(|left| delay >= left) {
            return Decision::GiveUp(GiveUp::Deadline);
        }
        if let Some(b) = &self.budget
            && !b.withdraw()
        {
            return Decision::GiveUp(GiveUp::RetryBudget);
        }
        Decision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn retry(max_attempts: u32) -> Retry {
        Retry::new(RetryConfig {
            max_attempts,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(30),
            budget: None,
        })
    }

    #[test]
    fn permanent_errors_are_returned_unchanged() {
        let d = retry(5).decide(&Error::not_found("x"), true, 1, Duration::ZERO, None);
        assert_eq!(d, Decision::Return);
    }

    #[test]
    fn rejections_are_not_retried() {
        let err = Error::new(ErrorKind::Rejected, "circuit open");
        assert_eq!(
            retry(5).decide(&err, true, 1, Duration::ZERO, None),
            Decision::Return
        );
    }

    #[test]
    fn timeouts_are_retried_only_for_idempotent_operations() {
        let err = Error::new(ErrorKind::Timeout, "slow");
        assert!(matches!(
            retry(5).decide(&err, true, 1, Duration::ZERO, None),
            Decision::RetryAfter(_)
        ));
        assert_eq!(
            retry(5).decide(&err, false, 1, Duration::ZERO, None),
            Decision::Return
        );
    }

    #[test]
    fn rate_limits_are_retried_even_for_non_idempotent_operations() {
        let err = Error::rate_limited("429", None);
        assert!(matches!(
            retry(5).decide(&err, false, 1, Duration::ZERO, None),
            Decision::RetryAfter(_)
        ));
    }

    #[test]
    fn gives_up_when_attempts_are_spent() {
        let err = Error::unavailable("503");
        assert_eq!(
            retry(3).decide(&err, true, 3, Duration::ZERO, None),
            Decision::GiveUp(GiveUp::Attempts)
        );
    }

    #[test]
    fn a_retry_after_longer_than_the_time_budget_gives_up_at_once() {
        let err = Error::rate_limited("429", Some(Duration::from_secs(120)));
        assert_eq!(
            retry(5).decide(&err, true, 1, Duration::ZERO, None),
            Decision::GiveUp(GiveUp::TimeBudget)
        );
    }

    #[test]
    fn a_wait_past_the_callers_deadline_gives_up() {
        let err = Error::rate_limited("429", Some(Duration::from_secs(5)));
        assert_eq!(
            retry(5).decide(&err, true, 1, Duration::ZERO, Some(Duration::from_secs(1))),
            Decision::GiveUp(GiveUp::Deadline)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_retry_budget_caps_retries_to_a_share_of_calls() {
        let r = Retry::new(RetryConfig {
            budget: Some(RetryBudgetConfig {
                window: Duration::from_secs(10),
                min_per_second: 0,
                percent: 0.5,
            }),
            ..RetryConfig::default()
        });
        for _ in 0..10 {
            r.on_call();
        }
        let err = Error::unavailable("503");
        let granted = (0..10)
            .filter(|_| {
                matches!(
                    r.decide(&err, true, 1, Duration::ZERO, None),
                    Decision::RetryAfter(_)
                )
            })
            .count();
        assert_eq!(granted, 5, "half of ten calls may be retried");
    }

    #[test]
    fn validation_reports_every_problem() {
        let cfg = RetryConfig {
            max_attempts: 0,
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(1),
            ..RetryConfig::default()
        };
        let problems = cfg.validate().unwrap_err();
        let text = problems.to_string();
        assert!(text.contains("max_attempts"), "{text}");
        assert!(text.contains("max_backoff"), "{text}");
    }

    proptest! {
        #[test]
        fn delay_never_exceeds_the_cap_unless_the_platform_asked(
            retry in 1u32..200,
            initial_ms in 1u64..10_000,
            extra_ms in 0u64..100_000,
            unit in 0.0f64..=1.0,
            after_ms in proptest::option::of(0u64..1_000_000),
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = Duration::from_millis(initial_ms + extra_ms);
            let after = after_ms.map(Duration::from_millis);
            let cap = backoff_cap(retry, initial, max);
            prop_assert!(cap <= max);
            prop_assert!(cap >= initial.min(max));
            let d = retry_delay(retry, initial, max, after, unit);
            match after {
                Some(a) => prop_assert!(d >= a && d <= a.max(cap)),
                None => prop_assert!(d <= cap),
            }
        }

        #[test]
        fn caps_grow_monotonically(retry in 1u32..100, initial_ms in 1u64..1000) {
            let initial = Duration::from_millis(initial_ms);
            let max = Duration::from_secs(3600);
            prop_assert!(backoff_cap(retry + 1, initial, max) >= backoff_cap(retry, initial, max));
        }
    }
}
