//! Specification of the circuit breaker, on tokio's paused clock.

use super::*;
use proptest::prelude::*;
use tokio::time::advance;

const MS: Duration = Duration::from_millis(1);

fn consecutive(n: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        consecutive_failures: Some(n),
        open_for: Duration::from_secs(10),
        max_open_for: Duration::from_secs(60),
        ..CircuitBreakerConfig::default()
    }
}

fn call(b: &CircuitBreaker, outcome: CallOutcome) -> bool {
    match b.try_acquire() {
        Ok(p) => {
            p.record(outcome, MS);
            true
        }
        Err(_) => false,
    }
}

fn fail(b: &CircuitBreaker) -> bool {
    call(b, CallOutcome::Failure)
}

fn succeed(b: &CircuitBreaker) -> bool {
    call(b, CallOutcome::Success)
}

#[tokio::test(start_paused = true)]
async fn opens_after_five_consecutive_failures() {
    let b = CircuitBreaker::new("p", consecutive(5));
    for _ in 0..4 {
        assert!(fail(&b));
    }
    assert_eq!(b.state(), CircuitState::Closed);
    assert!(fail(&b));
    assert_eq!(b.state(), CircuitState::Open);
    let err = b.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Rejected);
    assert_eq!(err.context_value("retry_after_ms"), Some("10000"));
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_consecutive_count() {
    let b = CircuitBreaker::new("p", consecutive(3));
    fail(&b);
    fail(&b);
    succeed(&b);
    fail(&b);
    fail(&b);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_not_found_error_does_not_trip_the_breaker() {
    let b = CircuitBreaker::new("p", consecutive(1));
    let p = b.try_acquire().unwrap();
    p.record_result::<()>(&Err(Error::not_found("404")), MS);
    assert_eq!(b.state(), CircuitState::Closed);
    let p = b.try_acquire().unwrap();
    p.record_result::<()>(&Err(Error::unavailable("503")), MS);
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn rejections_from_inner_steps_are_not_counted() {
    let b = CircuitBreaker::new("p", consecutive(1));
    let p = b.try_acquire().unwrap();
    p.record_result::<()>(&Err(Error::new(ErrorKind::Rejected, "bulkhead full")), MS);
    assert_eq!(b.state(), CircuitState::Closed);
}

fn rate(threshold: f64, minimum_calls: u32) -> CircuitBreakerConfig {
    CircuitBreakerConfig {
        consecutive_failures: None,
        failure_rate: Some(threshold),
        minimum_calls,
        window: Duration::from_secs(10),
        ..consecutive(1)
    }
}

#[tokio::test(start_paused = true)]
async fn opens_on_failure_rate_once_the_minimum_calls_are_seen() {
    let b = CircuitBreaker::new("p", rate(0.5, 10));
    // 4 failures out of 4 calls: 100%, but below the minimum of 10 calls.
    for _ in 0..4 {
        fail(&b);
    }
    assert_eq!(b.state(), CircuitState::Closed);
    for _ in 0..5 {
        succeed(&b);
    }
    // 4 of 9: still closed.
    assert_eq!(b.state(), CircuitState::Closed);
    fail(&b);
    // 5 of 10 = 50%.
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_are_forgotten() {
    let b = CircuitBreaker::new("p", rate(0.5, 4));
    fail(&b);
    fail(&b);
    advance(Duration::from_secs(11)).await;
    succeed(&b);
    succeed(&b);
    fail(&b);
    // Only the last three calls are in the window: 1 failure of 3, under the minimum.
    succeed(&b);
    // 1 of 4 = 25%.
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_high_slow_call_rate_opens_the_circuit() {
    let b = CircuitBreaker::new(
        "p",
        CircuitBreakerConfig {
            consecutive_failures: None,
            slow_call: Some(SlowCallConfig {
                duration: Duration::from_secs(2),
                rate: 0.6,
            }),
            minimum_calls: 5,
            ..consecutive(1)
        },
    );
    for took in [1, 3, 3, 1] {
        b.try_acquire()
            .unwrap()
            .record(CallOutcome::Success, Duration::from_secs(took));
    }
    assert_eq!(b.state(), CircuitState::Closed);
    b.try_acquire()
        .unwrap()
        .record(CallOutcome::Success, Duration::from_secs(5));
    // 3 slow of 5 = 60%.
    assert_eq!(b.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn rejects_while_open_and_half_opens_after_the_open_time() {
    let b = CircuitBreaker::new("p", consecutive(1));
    fail(&b);
    advance(Duration::from_millis(9_999)).await;
    assert!(b.try_acquire().is_err());
    advance(MS).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_the_configured_number_of_trial_calls() {
    let b = CircuitBreaker::new(
        "p",
        CircuitBreakerConfig {
            half_open_trials: 3,
            ..consecutive(1)
        },
    );
    fail(&b);
    advance(Duration::from_secs(10)).await;
    let trials: Vec<Permit> = (0..3).map(|_| b.try_acquire().unwrap()).collect();
    assert!(b.try_acquire().is_err(), "a fourth trial must be rejected");
    for (i, p) in trials.into_iter().enumerate() {
        assert_eq!(
            b.state(),
            CircuitState::HalfOpen,
            "closed after only {i} successes"
        );
        p.record(CallOutcome::Success, MS);
    }
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn a_failed_trial_reopens_for_twice_as_long() {
    let b = CircuitBreaker::new("p", consecutive(1));
    fail(&b);
    advance(Duration::from_secs(10)).await;
    assert!(fail(&b), "the trial is admitted");
    assert_eq!(b.state(), CircuitState::Open);
    advance(Duration::from_secs(19)).await;
    assert!(b.try_acquire().is_err());
    advance(Duration::from_secs(1)).await;
    assert!(succeed(&b));
    assert_eq!(b.state(), CircuitState::Closed);
    // Back to the base open time after closing.
    fail(&b);
    advance(Duration::from_secs(10)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn the_open_time_never_exceeds_its_maximum() {
    let b = CircuitBreaker::new("p", consecutive(1));
    fail(&b);
    for _ in 0..10 {
        advance(Duration::from_secs(60)).await;
        assert!(fail(&b));
    }
    advance(Duration::from_secs(60)).await;
    assert_eq!(b.state(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_trial_permit_frees_its_slot() {
    let b = CircuitBreaker::new("p", consecutive(1));
    fail(&b);
    advance(Duration::from_secs(10)).await;
    let p = b.try_acquire().unwrap();
    assert!(b.try_acquire().is_err());
    drop(p);
    assert!(succeed(&b));
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn an_outcome_from_before_the_circuit_opened_is_ignored() {
    let b = CircuitBreaker::new("p", consecutive(1));
    let early = b.try_acquire().unwrap();
    fail(&b);
    advance(Duration::from_secs(10)).await;
    let trial = b.try_acquire().unwrap();
    early.record(CallOutcome::Success, MS);
    assert_eq!(
        b.state(),
        CircuitState::HalfOpen,
        "a stale success must not close it"
    );
    trial.record(CallOutcome::Success, MS);
    assert_eq!(b.state(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn forced_states_override_the_rules() {
    let b = CircuitBreaker::new("p", consecutive(1));
    b.force_open();
    assert!(b.try_acquire().is_err());
    advance(Duration::from_secs(3600)).await;
    assert!(b.try_acquire().is_err(), "forced open never half-opens");
    b.force_close();
    for _ in 0..10 {
        assert!(fail(&b));
    }
    assert_eq!(b.state(), CircuitState::ForcedClosed);
    b.reset();
    fail(&b);
    assert_eq!(b.state(), CircuitState::Open);
}

#[test]
fn validation_rejects_a_breaker_that_can_never_open() {
    let cfg = CircuitBreakerConfig {
        consecutive_failures: None,
        half_open_trials: 0,
        ..CircuitBreakerConfig::default()
    };
    let text = cfg.validate().unwrap_err().to_string();
    assert!(text.contains("no rule can open the circuit"), "{text}");
    assert!(text.contains("half_open_trials"), "{text}");
}

/// One step of a generated scenario.
#[derive(Debug, Clone)]
enum Step {
    Call(CallOutcome),
    Advance(u64),
    /// Acquire a permit and keep it until the next `Release`.
    Hold,
    Release(CallOutcome),
}

fn step() -> impl Strategy<Value = Step> {
    let outcome = prop_oneof![
        Just(CallOutcome::Success),
        Just(CallOutcome::Failure),
        Just(CallOutcome::Ignored)
    ];
    prop_oneof![
        4 => outcome.clone().prop_map(Step::Call),
        2 => (0u64..15).prop_map(Step::Advance),
        1 => Just(Step::Hold),
        1 => outcome.prop_map(Step::Release),
    ]
}

/// The reference model: consecutive-failures rule only, open time doubling from 4 s up
/// to 16 s, `TRIALS` trial calls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Model {
    Closed {
        consecutive: u32,
    },
    Open {
        remaining: u64,
        reopens: u32,
    },
    HalfOpen {
        admitted: u32,
        succeeded: u32,
        reopens: u32,
    },
}

const THRESHOLD: u32 = 3;
const TRIALS: u32 = 2;

fn open_secs(reopens: u32) -> u64 {
    (4u64 << reopens.min(10)).min(16)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_breaker_follows_the_reference_model(steps in proptest::collection::vec(step(), 1..80)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let b = CircuitBreaker::new("model", CircuitBreakerConfig {
                consecutive_failures: Some(THRESHOLD),
                open_for: Duration::from_secs(4),
                max_open_for: Duration::from_secs(16),
                half_open_trials: TRIALS,
                ..CircuitBreakerConfig::default()
            });
            let mut model = Model::Closed { consecutive: 0 };
            // Permits held across steps, with the model's view of them (trial or not).
            let mut held: Vec<(Permit, bool, u64)> = Vec::new();
            let mut generation = 0u64;

            for s in steps {
                match s {
                    Step::Advance(secs) => {
                        advance(Duration::from_secs(secs)).await;
                        if let Model::Open { remaining, reopens } = model {
                            model = Model::Open { remaining: remaining.saturating_sub(secs), reopens };
                        }
                    }
                    Step::Call(_) | Step::Hold => {
                        let outcome = match s { Step::Call(o) => Some(o), _ => None };
                        // Admission, as the model sees it.
                        let (admit, trial) = match model {
                            Model::Closed { .. } => (true, false),
                            Model::Open { remaining: 0, reopens } => {
                                model = Model::HalfOpen { admitted: 0, succeeded: 0, reopens };
                                generation += 1;
                                (true, true)
                            }
                            Model::Open { .. } => (false, false),
                            Model::HalfOpen { admitted, .. } => (admitted < TRIALS, true),
                        };
                        if let (true, Model::HalfOpen { admitted, .. }) = (admit, &mut model) {
                            *admitted += 1;
                        }
                        let got = b.try_acquire();
                        prop_assert_eq!(got.is_ok(), admit, "admission differs in {:?}", model);
                        let Ok(permit) = got else { continue };
                        let Some(outcome) = outcome else {
                            held.push((permit, trial, generation));
                            continue;
                        };
                        permit.record(outcome, MS);
                        let current = generation;
                        apply(&mut model, &mut generation, trial, current, outcome);
                    }
                    Step::Release(outcome) => {
                        if let Some((permit, trial, gen_at)) = held.pop() {
                            permit.record(outcome, MS);
                            apply(&mut model, &mut generation, trial, gen_at, outcome);
                        }
                    }
                }
                let expected = match model {
                    Model::Closed { .. } => CircuitState::Closed,
                    Model::Open { remaining: 0, .. } | Model::HalfOpen { .. } => CircuitState::HalfOpen,
                    Model::Open { .. } => CircuitState::Open,
                };
                prop_assert_eq!(b.state(), expected, "model {:?}", model);
            }
            Ok(())
        })?;
    }
}

/// Apply a recorded outcome to the model, ignoring outcomes of permits from an older
/// generation (the breaker's rule for stale permits).
fn apply(
    model: &mut Model,
    generation: &mut u64,
    trial: bool,
    permit_gen: u64,
    outcome: CallOutcome,
) {
    if permit_gen != *generation {
        return;
    }
    match (*model, outcome) {
        (Model::Closed { .. }, CallOutcome::Ignored) => {}
        (Model::Closed { consecutive }, CallOutcome::Success) => {
            let _ = consecutive;
            *model = Model::Closed { consecutive: 0 };
        }
        (Model::Closed { consecutive }, CallOutcome::Failure) => {
            if consecutive + 1 >= THRESHOLD {
                *model = Model::Open {
                    remaining: open_secs(0),
                    reopens: 0,
                };
                *generation += 1;
            } else {
                *model = Model::Closed {
                    consecutive: consecutive + 1,
                };
            }
        }
        (
            Model::HalfOpen {
                admitted,
                succeeded,
                reopens,
            },
            o,
        ) if trial => match o {
            CallOutcome::Ignored => {
                *model = Model::HalfOpen {
                    admitted: admitted - 1,
                    succeeded,
                    reopens,
                };
            }
            CallOutcome::Failure => {
                *model = Model::Open {
                    remaining: open_secs(reopens + 1),
                    reopens: reopens + 1,
                };
                *generation += 1;
            }
            CallOutcome::Success => {
                if succeeded + 1 >= TRIALS {
                    *model = Model::Closed { consecutive: 0 };
                    *generation += 1;
                } else {
                    *model = Model::HalfOpen {
                        admitted,
                        succeeded: succeeded + 1,
                        reopens,
                    };
                }
            }
        },
        _ => {}
    }
}
