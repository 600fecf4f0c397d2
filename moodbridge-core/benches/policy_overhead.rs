//! Overhead of a [`Policy`] on an operation that is already ready (no I/O), so the figure
//! is the cost of the policy alone:
//!
//! - `bare`: the operation awaited directly;
//! - `policy/passthrough`: a policy with no steps — the cost of its observability alone
//!   (span, correlation id, latency, call metrics);
//! - `policy/limiter+breaker+retry`: our `Policy` with a rate limiter (quota never
//!   reached), a circuit breaker (closed) and retry (never needed);
//! - `hand/governor+failsafe+retry`: the same three steps hand-composed from raw
//!   `governor` (check), `failsafe` (futures circuit breaker) and a retry loop — the
//!   baseline of "what you would write yourself";
//! - `policy/full`: every step: deadline, retry, breaker, limiter, bulkhead and
//!   per-attempt timeout.
//!
//! Run: `cargo bench -p moodbridge-core --bench policy_overhead`. Results are recorded in
//! docs/performance.md.

use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use failsafe::futures::CircuitBreaker as _;
use moodbridge_core::resilience::{Bulkhead, RateLimitConfig, RateLimiter, RateQuota};
use moodbridge_core::{CircuitBreaker, CircuitBreakerConfig, Error, Policy, RetryConfig};

const HUGE: u32 = 1_000_000_000;

fn limiter() -> RateLimiter {
    RateLimiter::new("bench", RateLimitConfig::new(RateQuota::per_second(HUGE)))
        .expect("valid quota")
}

async fn ready(n: u64) -> Result<u64, Error> {
    Ok(black_box(n))
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("policy_overhead");

    group.bench_function("bare", |b| {
        b.to_async(&rt).iter(|| ready(1));
    });

    // No steps: what the span, correlation id, latency and call metrics cost alone.
    let passthrough = Policy::passthrough("bench");
    group.bench_function("policy/passthrough", |b| {
        b.to_async(&rt)
            .iter(|| passthrough.call_as("op", || ready(1)));
    });

    let policy = Policy::builder("bench")
        .retry(RetryConfig::default())
        .circuit_breaker(CircuitBreaker::new(
            "bench",
            CircuitBreakerConfig::default(),
        ))
        .rate_limiter(limiter())
        .build();
    group.bench_function("policy/limiter+breaker+retry", |b| {
        b.to_async(&rt).iter(|| policy.call_as("op", || ready(1)));
    });

    let gov = governor::RateLimiter::direct(governor::Quota::per_second(
        NonZeroU32::new(HUGE).expect("non-zero"),
    ));
    let breaker = failsafe::Config::new().build();
    group.bench_function("hand/governor+failsafe+retry", |b| {
        b.to_async(&rt).iter(|| async {
            let mut attempt = 0u32;
            loop {
                attempt += 1;
                if gov.check().is_err() {
                    continue;
                }
                match breaker.call(ready(1)).await {
                    Ok(v) => break Ok(v),
                    Err(failsafe::Error::Inner(e)) if e.is_temporary() && attempt < 4 => continue,
                    Err(failsafe::Error::Inner(e)) => break Err(e),
                    Err(failsafe::Error::Rejected) => break Err(Error::unavailable("rejected")),
                }
            }
        });
    });

    let full = Policy::builder("bench")
        .timeout(Duration::from_secs(60))
        .retry(RetryConfig::default())
        .circuit_breaker(CircuitBreaker::new(
            "bench",
            CircuitBreakerConfig::default(),
        ))
        .rate_limiter(limiter())
        .bulkhead(Bulkhead::new("bench", 64, None))
        .attempt_timeout(Duration::from_secs(30))
        .build();
    group.bench_function("policy/full", |b| {
        b.to_async(&rt).iter(|| full.call_as("op", || ready(1)));
    });

    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
