//! Specification of [`Policy`], on tokio's paused clock: no real sleeps.

use super::*;
use crate::error::ErrorStatus;
use crate::observe::{CorrelationId, with_correlation_id};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

fn retry(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        max_attempts,
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        max_elapsed: Duration::from_secs(30),
        budget: None,
    }
}

/// An operation that fails with the given errors in order, then succeeds; counts calls.
struct Script {
    errors: Mutex<Vec<Error>>,
    calls: AtomicU32,
}

impl Script {
    fn new(mut errors: Vec<Error>) -> Self {
        errors.reverse();
        Script {
            errors: Mutex::new(errors),
            calls: AtomicU32::new(0),
        }
    }

    async fn run(&self) -> Result<&'static str> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match self.errors.lock().unwrap().pop() {
            Some(e) => Err(e),
            None => Ok("done"),
        }
    }

    fn calls(&self) -> u32 {
        self.calls.load(Ordering::SeqCst)
    }
}

#[tokio::test(start_paused = true)]
async fn a_temporary_error_is_retried_until_success() {
    let policy = Policy::builder("p").retry(retry(4)).build();
    let script = Script::new(vec![
        Error::unavailable("503"),
        Error::rate_limited("429", None),
    ]);
    assert_eq!(policy.call(|| script.run()).await.unwrap(), "done");
    assert_eq!(script.calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_permanent_error_is_not_retried() {
    let policy = Policy::builder("p").retry(retry(4)).build();
    let script = Script::new(vec![Error::not_found("404")]);
    let err = policy.call(|| script.run()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(err.status(), ErrorStatus::Permanent);
    assert_eq!(script.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured() {
    let policy = Policy::builder("p").retry(retry(4)).build();
    let script = Script::new(vec![Error::rate_limited(
        "429",
        Some(Duration::from_secs(7)),
    )]);
    let start = Instant::now();
    policy.call(|| script.run()).await.unwrap();
    assert!(
        start.elapsed() >= Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );
    // Full jitter over a 100 ms cap adds at most 100 ms on top of the asked wait.
    assert!(start.elapsed() <= Duration::from_millis(7_100));
}

#[tokio::test(start_paused = true)]
async fn spent_attempts_return_the_last_error_as_persistent() {
    let policy = Policy::builder("p").retry(retry(3)).build();
    let script = Script::new(
        (0..5)
            .map(|i| Error::unavailable(format!("503 #{i}")))
            .collect(),
    );
    let err = policy.call(|| script.run()).await.unwrap_err();
    assert_eq!(script.calls(), 3);
    assert_eq!(err.status(), ErrorStatus::Persistent);
    assert_eq!(err.message(), "503 #2");
    assert_eq!(err.context_value("attempts"), Some("3"));
}

#[tokio::test(start_paused = true)]
async fn the_time_budget_stops_retries() {
    let policy = Policy::builder("p")
        .retry(RetryConfig {
            max_attempts: 100,
            max_elapsed: Duration::from_secs(10),
            ..retry(100)
        })
        .build();
    // Each failure asks for 4 s: attempts at 0 s, 4 s, 8 s; a fourth would start at 12 s.
    let script = Script::new(
        (0..100)
            .map(|_| Error::rate_limited("429", Some(Duration::from_secs(4))))
            .collect(),
    );
    let start = Instant::now();
    let err = policy.call(|| script.run()).await.unwrap_err();
    assert_eq!(script.calls(), 3);
    assert_eq!(err.status(), ErrorStatus::Persistent);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn the_call_deadline_cuts_a_hanging_call() {
    let policy = Policy::builder("p")
        .timeout(Duration::from_secs(5))
        .retry(retry(3))
        .build();
    let start = Instant::now();
    let err = policy
        .call(|| async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(err.status(), ErrorStatus::Persistent);
    assert_eq!(start.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_retried_for_idempotent_operations() {
    let policy = Policy::builder("p")
        .attempt_timeout(Duration::from_secs(1))
        .retry(retry(3))
        .build();
    let calls = AtomicU32::new(0);
    let out = policy
        .call_as("query", || async {
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
            }
            Ok(1)
        })
        .await
        .unwrap();
    assert_eq!(out, 1);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_timeout_is_not_retried_for_non_idempotent_operations() {
    let policy = Policy::builder("p")
        .attempt_timeout(Duration::from_secs(1))
        .retry(retry(3))
        .build();
    let calls = AtomicU32::new(0);
    let err = policy
        .call_as(Operation::new("create").non_idempotent(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_stops_retries_without_calling_the_platform() {
    let breaker = CircuitBreaker::new(
        "p",
        CircuitBreakerConfig {
            consecutive_failures: Some(2),
            ..CircuitBreakerConfig::default()
        },
    );
    let policy = Policy::builder("p")
        .retry(retry(10))
        .circuit_breaker(breaker.clone())
        .build();
    let script = Script::new((0..10).map(|_| Error::unavailable("503")).collect());
    let err = policy.call(|| script.run()).await.unwrap_err();
    assert_eq!(script.calls(), 2, "the breaker opened after two failures");
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn not_found_errors_do_not_trip_the_breaker() {
    let breaker = CircuitBreaker::new(
        "p",
        CircuitBreakerConfig {
            consecutive_failures: Some(1),
            ..CircuitBreakerConfig::default()
        },
    );
    let policy = Policy::builder("p")
        .circuit_breaker(breaker.clone())
        .build();
    for _ in 0..5 {
        let r = policy
            .call(|| async { Err::<(), _>(Error::not_found("404")) })
            .await;
        assert_eq!(r.unwrap_err().kind(), ErrorKind::NotFound);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn calls_wait_for_the_rate_limiter() {
    let limiter = RateLimiter::new(
        "p",
        RateLimitConfig::new(RateQuota::per_second(2).with_burst(1)),
    )
    .unwrap();
    let policy = Policy::builder("p").rate_limiter(limiter).build();
    let start = Instant::now();
    for _ in 0..3 {
        policy.call(|| async { Ok(()) }).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_spends_no_rate_quota() {
    let breaker = CircuitBreaker::new("p", CircuitBreakerConfig::default());
    let limiter = RateLimiter::new(
        "p",
        RateLimitConfig {
            on_limit: OnLimit::Fail,
            ..RateLimitConfig::new(RateQuota::per_minute(1))
        },
    )
    .unwrap();
    let policy = Policy::builder("p")
        .circuit_breaker(breaker.clone())
        .rate_limiter(limiter)
        .build();
    breaker.force_open();
    for _ in 0..3 {
        let err = policy.call(|| async { Ok(()) }).await.unwrap_err();
        assert_eq!(err.context_value("by"), Some("circuit_breaker"));
    }
    breaker.reset();
    policy.call(|| async { Ok(()) }).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_caps_calls_in_flight() {
    let policy = Policy::builder("p")
        .bulkhead(Bulkhead::new("p", 2, None))
        .build();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let (policy, in_flight, peak) = (policy.clone(), in_flight.clone(), peak.clone());
            tokio::spawn(async move {
                policy
                    .call(|| async {
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn errors_are_tagged_with_platform_and_operation() {
    let policy = Policy::passthrough("salesforce:prod");
    let err = policy
        .call_as("query", || async {
            Err::<(), _>(Error::invalid_input("bad SOQL"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.platform(), Some("salesforce:prod"));
    assert_eq!(err.operation(), Some("query"));
}

#[tokio::test(start_paused = true)]
async fn calls_share_the_callers_correlation_id_and_children_inherit_it() {
    let policy = Policy::passthrough("p");
    let seen = with_correlation_id("req-42".into(), async {
        policy
            .call(|| async {
                let outer = CorrelationId::current();
                let inner = policy
                    .call(|| async { Ok(CorrelationId::current()) })
                    .await?;
                Ok((outer, inner))
            })
            .await
    })
    .await
    .unwrap();
    assert_eq!(seen.0.map(|c| c.to_string()).as_deref(), Some("req-42"));
    assert_eq!(seen.1.map(|c| c.to_string()).as_deref(), Some("req-42"));
}

#[tokio::test(start_paused = true)]
async fn a_call_without_a_correlation_id_gets_a_fresh_one() {
    let policy = Policy::passthrough("p");
    let a = policy
        .call(|| async { Ok(CorrelationId::current()) })
        .await
        .unwrap();
    let b = policy
        .call(|| async { Ok(CorrelationId::current()) })
        .await
        .unwrap();
    assert!(a.is_some() && b.is_some());
    assert_ne!(a, b);
}

/// Run `scenario` on a paused current-thread runtime with a metrics capture; return
/// every counter it recorded.
fn counters_of<F: std::future::Future<Output = ()>>(
    scenario: impl FnOnce() -> F,
) -> crate::testing::Counters {
    let capture = crate::testing::MetricsCapture::new();
    {
        let _installed = capture.install();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(scenario());
    }
    capture.take()
}

#[test]
fn retries_and_outcomes_are_counted_in_metrics() {
    let counters = counters_of(|| async {
        let policy = Policy::builder("sf").retry(retry(5)).build();
        let script = Script::new(vec![Error::unavailable("503"), Error::unavailable("503")]);
        policy.call_as("query", || script.run()).await.unwrap();
    });
    assert_eq!(
        counters.sum(
            crate::observe::metric::RETRIES,
            &[("kind", "unavailable"), ("platform", "sf")]
        ),
        2,
        "{counters}"
    );
    assert_eq!(
        counters.sum(crate::observe::metric::CALLS, &[("outcome", "ok")]),
        1
    );
}

#[test]
fn breaker_transitions_rejections_and_give_ups_are_counted_in_metrics() {
    let counters = counters_of(|| async {
        let breaker = CircuitBreaker::new(
            "sf",
            CircuitBreakerConfig {
                consecutive_failures: Some(2),
                ..CircuitBreakerConfig::default()
            },
        );
        let policy = Policy::builder("sf")
            .retry(retry(2))
            .circuit_breaker(breaker)
            .build();
        let script = Script::new((0..10).map(|_| Error::unavailable("503")).collect());
        // Two attempts fail: retries give up, and the breaker opens on the second failure.
        policy.call_as("query", || script.run()).await.unwrap_err();
        // The next call is rejected by the open breaker.
        policy.call_as("query", || script.run()).await.unwrap_err();
    });
    use crate::observe::metric;
    assert_eq!(
        counters.sum(metric::CIRCUIT_TRANSITIONS, &[("to", "open")]),
        1
    );
    assert_eq!(
        counters.sum(metric::RETRY_EXHAUSTED, &[("reason", "attempts")]),
        1
    );
    assert_eq!(
        counters.sum(metric::REJECTED, &[("by", "circuit_breaker")]),
        1
    );
    assert_eq!(counters.sum(metric::CALLS, &[("outcome", "rejected")]), 1);
}

#[test]
fn each_call_is_a_span_with_platform_operation_correlation_id_and_outcome() {
    use tracing_subscriber::fmt::format::FmtSpan;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buf = Buf::default();
    let writer = buf.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(with_correlation_id("req-9".into(), async {
            let policy = Policy::builder("sf").retry(retry(3)).build();
            let script = Script::new(vec![Error::unavailable("503")]);
            policy.call_as("query", || script.run()).await.unwrap();
        }));
    });
    let out = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
    let close = out
        .lines()
        .find(|l| l.contains("remote_call") && l.contains("close"))
        .unwrap_or_else(|| panic!("no remote_call close line in:\n{out}"));
    for field in [
        "platform=sf",
        "operation=query",
        "correlation_id=req-9",
        "attempts=2",
        "outcome=\"ok\"",
    ] {
        assert!(close.contains(field), "{field} missing in {close}");
    }
    assert!(out.contains("retry scheduled"), "{out}");
}
