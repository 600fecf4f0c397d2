//! The resilience and telemetry contract every remote connector passes: its calls go
//! through the integration's [`Policy`], so a temporary failure is retried and counted,
//! retries run out into a persistent error naming the integration, and a circuit breaker
//! opens and closes again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::{ErrorKind, Result};
use crate::observe::metric;
use crate::resilience::{CircuitBreakerConfig, Policy, PolicyBuilder, PolicyConfig, RetryConfig};
use crate::testing::MetricsCapture;

/// Makes the platform fail on demand: the connector's test harness implements it (a proxy
/// in front of the emulator, a fault switch of a sandbox, a step of the vendor client's
/// pipeline). Injected failures are temporary ones in the platform's own format (an HTTP
/// 503 with its error body).
pub trait FaultInjector: Send + Sync {
    /// Fail the next `n` requests (`None`: every request until [`heal`](Self::heal)),
    /// and restart the request count.
    fn fail_next(&self, n: Option<u64>);
    /// Stop failing and restart the request count.
    fn heal(&self);
    /// Requests that reached the platform (failed or not) since the last
    /// [`fail_next`](Self::fail_next) or [`heal`](Self::heal).
    fn requests(&self) -> u64;
}

/// A ready-made [`FaultInjector`] for harnesses that see each request: ask
/// [`should_fail`](Self::should_fail) once per request.
///
/// ```
/// use moodbridge_core::testing::{FaultInjector, FaultPlan};
/// let plan = FaultPlan::default();
/// assert!(!plan.should_fail());
/// plan.fail_next(Some(1));
/// assert!(plan.should_fail());
/// assert!(!plan.should_fail());
/// assert_eq!(plan.requests(), 2);
/// ```
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Failures left; `u64::MAX` fails for ever.
    left: AtomicU64,
    requests: AtomicU64,
}

impl FaultPlan {
    /// Counts one request and says whether to fail it.
    pub fn should_fail(&self) -> bool {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| match n {
                0 => None,
                u64::MAX => Some(u64::MAX),
                n => Some(n - 1),
            })
            .is_ok()
    }
}

impl FaultInjector for FaultPlan {
    fn fail_next(&self, n: Option<u64>) {
        self.left.store(n.unwrap_or(u64::MAX), Ordering::SeqCst);
        self.requests.store(0, Ordering::SeqCst);
    }

    fn heal(&self) {
        self.fail_next(Some(0));
    }

    fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
}

/// What [`resilience_contract`] needs to know about the connector under test.
#[derive(Debug, Clone, Copy)]
pub struct ResilienceCase<'a> {
    /// The integration id the contract builds the policy for (`s3:documents`).
    pub id: &'a str,
    /// The connector kind (`s3`).
    pub kind: &'static str,
    /// The operation name of the probe's one call (`s3.head_object`).
    pub operation: &'a str,
}

/// How long the contract's breaker stays open.
const OPEN_FOR: Duration = Duration::from_millis(300);

/// The policy the contract hands to `build`: 3 attempts with millisecond backoff, and a
/// breaker that opens after 3 failures in a row for 300 ms.
pub fn resilience_contract_policy(case: &ResilienceCase<'_>) -> Policy {
    let config = PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(5),
            max_elapsed: Duration::from_secs(30),
            budget: None,
        }),
        circuit_breaker: Some(CircuitBreakerConfig {
            consecutive_failures: Some(3),
            minimum_calls: 1,
            open_for: OPEN_FOR,
            max_open_for: OPEN_FOR,
            half_open_trials: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    PolicyBuilder::from_config(case.id, &config)
        .expect("the contract's policy is valid")
        .connector(case.kind)
        .build()
}

/// The resilience and telemetry contract of a remote connector, against its local
/// service with faults injected by `faults`:
///
/// 1. `build` makes the integration around the policy it is given (every remote call
///    through it); `probe` makes exactly one call (operation `case.operation`), which
///    succeeds and counts one `moodbridge_calls_total{outcome="ok"}` labelled with the
///    integration id (`platform`), the kind (`connector`) and the operation.
/// 2. One injected 503 is retried by the policy: the probe succeeds, two requests reach
///    the platform, `moodbridge_retries_total` counts one retry.
/// 3. Failing for good: three attempts, then a persistent error naming the integration,
///    the kind and the operation, counted with its kind as `outcome`, with
///    `moodbridge_retry_exhausted_total{reason="attempts"}`; the breaker opens.
/// 4. While open, the probe is rejected without a request, counted in
///    `moodbridge_calls_rejected_total{by="circuit_breaker"}`.
/// 5. Healed, after the open time, the probe succeeds and the breaker closes.
///
/// The contract installs its own metrics recorder on the current thread (see
/// [`MetricsCapture`]): run it in the body of a test, not on a spawned task.
///
/// ```ignore
/// #[tokio::test]
/// async fn s3_meets_the_resilience_contract() {
///     let case = ResilienceCase { id: "s3:docs", kind: "s3", operation: "s3.head_object" };
///     resilience_contract(&case, &proxy.plan, async |policy| build(policy).await, async |s| probe(s).await).await;
/// }
/// ```
pub async fn resilience_contract<T>(
    case: &ResilienceCase<'_>,
    faults: &dyn FaultInjector,
    build: impl AsyncFnOnce(Policy) -> Result<T>,
    probe: impl AsyncFn(&T) -> Result<()>,
) {
    let capture = MetricsCapture::new();
    let _installed = capture.install();
    let labels = [
        ("platform", case.id),
        ("connector", case.kind),
        ("operation", case.operation),
    ];
    let with = |extra: (&'static str, &'static str)| {
        let mut all = labels.to_vec();
        all.push(extra);
        all
    };
    faults.heal();
    let integration = build(resilience_contract_policy(case))
        .await
        .unwrap_or_else(|e| panic!("building {} failed: {e}", case.id));
    capture.take();

    // 1. A plain call, counted under the integration id, the kind and the operation.
    faults.heal();
    probe(&integration)
        .await
        .unwrap_or_else(|e| panic!("the probe of {} failed with no fault: {e}", case.id));
    let seen = capture.take();
    assert_eq!(
        seen.sum(metric::CALLS, &with(("outcome", "ok"))),
        1,
        "one ok call of {} labelled platform={:?}, connector={:?}; counted:\n{seen}",
        case.operation,
        case.id,
        case.kind
    );
    assert_eq!(faults.requests(), 1, "the probe makes exactly one request");

    // 2. One 503, retried by the policy.
    faults.fail_next(Some(1));
    probe(&integration)
        .await
        .unwrap_or_else(|e| panic!("one injected 503 was not retried: {e}"));
    assert_eq!(
        faults.requests(),
        2,
        "the failed request and its retry reach the platform (the vendor client must not retry on its own)"
    );
    let seen = capture.take();
    assert_eq!(
        seen.sum(metric::CALLS, &with(("outcome", "ok"))),
        1,
        "{seen}"
    );
    assert_eq!(
        seen.sum(metric::RETRIES, &labels),
        1,
        "one retry counted:\n{seen}"
    );

    // 3. Failing for good: attempts run out; the breaker opens.
    faults.fail_next(None);
    let err = probe(&integration)
        .await
        .expect_err("a platform that always answers 503 fails the call");
    assert_eq!(faults.requests(), 3, "3 attempts reach the platform: {err}");
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unavailable | ErrorKind::RateLimited { .. }
        ),
        "a 503 is a temporary kind: {err}"
    );
    assert!(
        !err.is_temporary(),
        "spent retries make the error persistent: {err}"
    );
    assert_eq!(
        err.platform(),
        Some(case.id),
        "the error names the integration: {err}"
    );
    assert_eq!(
        err.connector(),
        Some(case.kind),
        "the error names the kind: {err}"
    );
    assert_eq!(
        err.operation(),
        Some(case.operation),
        "the error names the operation: {err}"
    );
    assert_eq!(err.context_value("attempts"), Some("3"), "{err}");
    let seen = capture.take();
    assert_eq!(
        seen.sum(metric::CALLS, &with(("outcome", err.kind().as_str()))),
        1,
        "the failed call is counted with its kind:\n{seen}"
    );
    assert_eq!(seen.sum(metric::RETRIES, &labels), 2, "{seen}");
    assert_eq!(
        seen.sum(metric::RETRY_EXHAUSTED, &with(("reason", "attempts"))),
        1,
        "{seen}"
    );
    assert_eq!(
        seen.sum(
            metric::CIRCUIT_TRANSITIONS,
            &[("platform", case.id), ("to", "open")]
        ),
        1,
        "3 failures in a row open the breaker:\n{seen}"
    );

    // 4. Open: rejected before reaching the platform.
    let err = probe(&integration)
        .await
        .expect_err("an open breaker rejects the call");
    assert_eq!(err.kind(), ErrorKind::Rejected, "{err}");
    assert_eq!(err.context_value("by"), Some("circuit_breaker"), "{err}");
    assert_eq!(faults.requests(), 3, "a rejected call sends nothing");
    let seen = capture.take();
    assert_eq!(
        seen.sum(metric::REJECTED, &with(("by", "circuit_breaker"))),
        1,
        "{seen}"
    );

    // 5. Healed and past the open time: one trial call closes the breaker.
    faults.heal();
    tokio::time::sleep(OPEN_FOR + Duration::from_millis(50)).await;
    probe(&integration)
        .await
        .unwrap_or_else(|e| panic!("the healed platform's trial call failed: {e}"));
    let seen = capture.take();
    assert_eq!(
        seen.sum(metric::CALLS, &with(("outcome", "ok"))),
        1,
        "{seen}"
    );
    assert_eq!(
        seen.sum(
            metric::CIRCUIT_TRANSITIONS,
            &[("platform", case.id), ("to", "closed")]
        ),
        1,
        "a successful trial closes the breaker:\n{seen}"
    );
}
