//! The rate limiter: governor's GCRA, on tokio's clock, waiting by default.
//!
//! - Quotas per second, minute or hour, with a burst.
//! - Waits for capacity (default) or fails fast with [`ErrorKind::Rejected`]; an optional
//!   `max_wait` turns a long wait into a rejection.
//! - Keyed: one independent quota per key (per org, per tenant) when `keyed = true`; the
//!   key comes from the call's [`Operation::keyed`](crate::Operation::keyed).
//! - The quota can be changed at run time ([`RateLimiter::set_quota`]): connectors feed it
//!   the platform's remaining-quota headers (Salesforce `Sforce-Limit-Info`). Lowering the
//!   quota starts the new limiter with its burst spent, so a lower quota is never an
//!   excuse for a burst; raising it starts fresh.
//!
//! governor's own `until_ready` sleeps on `futures-timer` (wall clock); we wait with
//! `tokio::time::sleep` instead, reading governor's computed earliest instant, so the
//! limiter obeys tokio's paused clock in tests and the runtime's timer in production.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{NotUntil, Quota};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::observe::metric;
use crate::validate::{Validate, Validator};

/// governor's clock trait over `tokio::time::Instant`, so a paused tokio clock drives the
/// limiter.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        tokio::time::Instant::now().into_std()
    }
}

type DirectLimiter =
    governor::RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<std::time::Instant>>;
type KeyedLimiter = governor::RateLimiter<
    String,
    DefaultKeyedStateStore<String>,
    TokioClock,
    NoOpMiddleware<std::time::Instant>,
>;

/// The period a quota's `rate` is counted over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    /// Per second.
    Second,
    /// Per minute.
    Minute,
    /// Per hour.
    Hour,
}

impl RatePeriod {
    fn duration(self) -> Duration {
        match self {
            RatePeriod::Second => Duration::from_secs(1),
            RatePeriod::Minute => Duration::from_secs(60),
            RatePeriod::Hour => Duration::from_secs(3600),
        }
    }
}

/// A quota: `rate` calls per `per`, with bursts of up to `burst` calls (default: `rate`).
///
/// ```
/// use moodbridge_core::resilience::{RatePeriod, RateQuota};
/// let q = RateQuota::per_second(25).with_burst(50);
/// assert_eq!(q.per, RatePeriod::Second);
/// assert_eq!(q.burst, Some(50));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateQuota {
    /// Calls per period.
    pub rate: u32,
    /// The period.
    pub per: RatePeriod,
    /// The largest burst; `None` means `rate`.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl RateQuota {
    /// `rate` calls per second.
    pub fn per_second(rate: u32) -> Self {
        RateQuota {
            rate,
            per: RatePeriod::Second,
            burst: None,
        }
    }

    /// `rate` calls per minute.
    pub fn per_minute(rate: u32) -> Self {
        RateQuota {
            rate,
            per: RatePeriod::Minute,
            burst: None,
        }
    }

    /// The same quota with a burst size.
    pub fn with_burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The sustained rate in calls per second.
    pub fn per_second_rate(&self) -> f64 {
        f64::from(self.rate) / self.per.duration().as_secs_f64()
    }

    fn to_governor(self) -> Result<Quota> {
        let rate = NonZeroU32::new(self.rate).ok_or_else(|| {
            Error::config("rate limit rate is 0").with_hint("use a rate of 1 or more")
        })?;
        let burst = match self.burst {
            None => rate,
            Some(b) => NonZeroU32::new(b).ok_or_else(|| {
                Error::config("rate limit burst is 0").with_hint("use a burst of 1 or more")
            })?,
        };
        let quota = match self.per {
            RatePeriod::Second => Quota::per_second(rate),
            RatePeriod::Minute => Quota::per_minute(rate),
            RatePeriod::Hour => Quota::per_hour(rate),
        };
        Ok(quota.allow_burst(burst))
    }
}

/// What to do when the quota is spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnLimit {
    /// Wait for capacity (up to `max_wait`, if set).
    #[default]
    Wait,
    /// Fail at once with [`ErrorKind::Rejected`].
    Fail,
}

/// Settings of a [`RateLimiter`].
///
/// ```
/// use moodbridge_core::resilience::{RateLimitConfig, RateQuota};
/// let cfg: RateLimitConfig = toml::from_str(r#"
///     rate = 100
///     per = "minute"
///     burst = 10
///     keyed = true
///     max_wait = "5s"
/// "#).unwrap();
/// assert_eq!(cfg.quota, RateQuota::per_minute(100).with_burst(10));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// The quota.
    #[serde(flatten)]
    pub quota: RateQuota,
    /// Wait (default) or fail when the quota is spent.
    #[serde(default)]
    pub on_limit: OnLimit,
    /// Longest wait before the call is rejected instead; `None` waits as long as needed.
    #[serde(default, with = "humantime_serde")]
    pub max_wait: Option<Duration>,
    /// One quota per key (org, tenant) instead of one for all calls.
    #[serde(default)]
    pub keyed: bool,
}

impl RateLimitConfig {
    /// Wait for capacity, one quota for all calls.
    pub fn new(quota: RateQuota) -> Self {
        RateLimitConfig {
            quota,
            on_limit: OnLimit::Wait,
            max_wait: None,
            keyed: false,
        }
    }
}

impl Validate for RateLimitConfig {
    fn validate_into(&self, v: &mut Validator) {
        if self.quota.rate == 0 {
            v.problem("rate", "is 0", "use 1 or more calls per period");
        }
        if self.quota.burst == Some(0) {
            v.problem(
                "burst",
                "is 0",
                "use 1 or more, or leave it out to equal the rate",
            );
        }
    }
}

enum Limiter {
    Direct(DirectLimiter),
    Keyed(KeyedLimiter),
}

impl Limiter {
    fn build(quota: Quota, keyed: bool) -> Self {
        if keyed {
            Limiter::Keyed(governor::RateLimiter::dashmap_with_clock(quota, TokioClock))
        } else {
            Limiter::Direct(governor::RateLimiter::direct_with_clock(quota, TokioClock))
        }
    }

    fn check(&self, key: Option<&str>) -> std::result::Result<(), NotUntil<std::time::Instant>> {
        match self {
            Limiter::Direct(l) => l.check(),
            Limiter::Keyed(l) => l.check_key(&key.unwrap_or("").to_owned()),
        }
    }
}

struct Current {
    quota: RateQuota,
    limiter: Limiter,
}

struct Inner {
    name: Arc<str>,
    on_limit: OnLimit,
    max_wait: Option<Duration>,
    keyed: bool,
    current: ArcSwap<Current>,
}

/// A rate limiter shared by every call to one platform. Cloning shares the quota.
///
/// ```
/// use moodbridge_core::resilience::{RateLimitConfig, RateLimiter, RateQuota};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let limiter = RateLimiter::new("salesforce:prod", RateLimitConfig::new(RateQuota::per_second(100))).unwrap();
/// let waited = limiter.acquire(None).await.unwrap();
/// assert!(waited.is_zero());
/// // The platform says the org is nearly out of calls: slow down.
/// limiter.set_quota(RateQuota::per_minute(10)).unwrap();
/// # });
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("quota", &self.quota())
            .field("on_limit", &self.inner.on_limit)
            .field("keyed", &self.inner.keyed)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter named `name` (the platform id; used in events and metrics).
    pub fn new(name: impl Into<Arc<str>>, config: RateLimitConfig) -> Result<Self> {
        let quota = config.quota.to_governor()?;
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                name: name.into(),
                on_limit: config.on_limit,
                max_wait: config.max_wait,
                keyed: config.keyed,
                current: ArcSwap::from_pointee(Current {
                    quota: config.quota,
                    limiter: Limiter::build(quota, config.keyed),
                }),
            }),
        })
    }

    /// The current quota.
    pub fn quota(&self) -> RateQuota {
        self.inner.current.load().quota
    }

    /// Replace the quota. Calls already waiting finish their wait and then check the new
    /// quota. See the module docs for how the burst is treated.
    pub fn set_quota(&self, quota: RateQuota) -> Result<()> {
        let gov = quota.to_governor()?;
        let old = self.quota();
        let limiter = Limiter::build(gov, self.inner.keyed);
        if quota.per_second_rate() < old.per_second_rate()
            && let Limiter::Direct(l) = &limiter
        {
            // Spend the fresh burst: lowering the rate must not grant a burst.
            let burst = gov.burst_size();
            let _ = l.check_n(burst);
        }
        self.inner
            .current
            .store(Arc::new(Current { quota, limiter }));
        tracing::info!(
            platform = %self.inner.name,
            rate = quota.rate, per = ?quota.per, burst = quota.burst,
            "rate limit changed"
        );
        Ok(())
    }

    /// Take one unit of quota for `key` without waiting; `false` when the quota is spent
    /// right now. The policy's fast path: it only enters the (larger) async wait of
    /// [`acquire`](Self::acquire) when this fails.
    pub fn try_acquire_now(&self, key: Option<&str>) -> bool {
        self.inner.current.load().limiter.check(key).is_ok()
    }

    /// Take one unit of quota for `key` (ignored unless the limiter is keyed), waiting if
    /// needed. Returns how long it waited. Fails with [`ErrorKind::Rejected`] in fail-fast
    /// mode or when the wait would exceed `max_wait`.
    pub async fn acquire(&self, key: Option<&str>) -> Result<Duration> {
        let mut waited = Duration::ZERO;
        loop {
            let not_until = {
                let current = self.inner.current.load();
                match current.limiter.check(key) {
                    Ok(()) => break,
                    Err(n) => n,
                }
            };
            let wait = not_until.wait_time_from(TokioClock.now());
            let over_max = self.inner.max_wait.is_some_and(|m| waited + wait > m);
            if self.inner.on_limit == OnLimit::Fail || over_max {
                return Err(Error::new(
                    ErrorKind::Rejected,
                    format!("rate limit of {} reached", self.inner.name),
                )
                .with_platform(self.inner.name.to_string())
                .with_context("by", "rate_limiter")
                .with_context("retry_after_ms", wait.as_millis())
                .with_hint("call less often, or raise the rate limit if the platform allows"));
            }
            tracing::debug!(
                platform = %self.inner.name,
                wait_ms = wait.as_millis() as u64,
                "rate limit: waiting"
            );
            tokio::time::sleep(wait).await;
            waited += wait;
        }
        if !waited.is_zero() {
            metrics::histogram!(metric::RATE_LIMIT_WAIT, "platform" => self.inner.name.to_string())
                .record(waited.as_secs_f64());
        }
        Ok(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn limiter(quota: RateQuota) -> RateLimiter {
        RateLimiter::new("p", RateLimitConfig::new(quota)).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn admits_the_burst_then_waits_one_replenish_interval_per_call() {
        // 10 per second with a burst of 5: five at once, then one every 100 ms.
        let l = limiter(RateQuota::per_second(10).with_burst(5));
        let start = Instant::now();
        for _ in 0..5 {
            assert_eq!(l.acquire(None).await.unwrap(), Duration::ZERO);
        }
        assert_eq!(l.acquire(None).await.unwrap(), Duration::from_millis(100));
        assert_eq!(l.acquire(None).await.unwrap(), Duration::from_millis(100));
        assert_eq!(start.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn fail_fast_rejects_with_the_wait_it_would_have_needed() {
        let l = RateLimiter::new(
            "p",
            RateLimitConfig {
                on_limit: OnLimit::Fail,
                ..RateLimitConfig::new(RateQuota::per_minute(1))
            },
        )
        .unwrap();
        l.acquire(None).await.unwrap();
        let err = l.acquire(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
        assert_eq!(err.context_value("retry_after_ms"), Some("60000"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_over_max_wait_is_rejected() {
        let l = RateLimiter::new(
            "p",
            RateLimitConfig {
                max_wait: Some(Duration::from_millis(500)),
                ..RateLimitConfig::new(RateQuota::per_second(1))
            },
        )
        .unwrap();
        l.acquire(None).await.unwrap();
        let err = l.acquire(None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Rejected);
    }

    #[tokio::test(start_paused = true)]
    async fn keyed_limiters_keep_one_quota_per_key() {
        let l = RateLimiter::new(
            "p",
            RateLimitConfig {
                keyed: true,
                on_limit: OnLimit::Fail,
                ..RateLimitConfig::new(RateQuota::per_second(1))
            },
        )
        .unwrap();
        l.acquire(Some("org-a")).await.unwrap();
        l.acquire(Some("org-b")).await.unwrap();
        assert!(l.acquire(Some("org-a")).await.is_err());
        assert!(l.acquire(Some("org-b")).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn lowering_the_quota_at_run_time_slows_calls_without_a_new_burst() {
        let l = limiter(RateQuota::per_second(100));
        l.acquire(None).await.unwrap();
        l.set_quota(RateQuota::per_second(2)).unwrap();
        assert_eq!(l.quota(), RateQuota::per_second(2));
        // The burst of the new quota is spent: the first call waits a full interval.
        assert_eq!(l.acquire(None).await.unwrap(), Duration::from_millis(500));
        assert_eq!(l.acquire(None).await.unwrap(), Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_quota_at_run_time_admits_the_new_burst() {
        let l = limiter(RateQuota::per_minute(1));
        l.acquire(None).await.unwrap();
        l.set_quota(RateQuota::per_second(3)).unwrap();
        for _ in 0..3 {
            assert_eq!(l.acquire(None).await.unwrap(), Duration::ZERO);
        }
    }

    #[test]
    fn a_zero_rate_is_a_config_error() {
        let err =
            RateLimiter::new("p", RateLimitConfig::new(RateQuota::per_second(0))).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }
}
