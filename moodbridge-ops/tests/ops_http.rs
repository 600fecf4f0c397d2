//! The operations surface served on 127.0.0.1 and read with a plain HTTP client: health
//! (status codes, breaker state, rate limit, a hung check cut by the timeout), Prometheus
//! metrics recorded by real policy calls and a real sync run, and the status page with
//! that run and escaped details.

#![allow(
    clippy::unwrap_used,
    reason = "test code: a panic is the failure report"
)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use moodbridge_core::engine::{EventConsumer, LagThresholds, Pipeline, SyncEngine};
use moodbridge_core::registry::{Built, Integrations};
use moodbridge_core::resilience::{
    CircuitBreaker, CircuitBreakerConfig, CircuitState, RateLimitConfig, RateLimiter, RateQuota,
};
use moodbridge_core::state::{EventLog, NewEvent, SqliteStateStore};
use moodbridge_core::testing::{MemorySink, MemorySource};
use moodbridge_core::{
    Capabilities, HealthReport, HealthStatus, PlatformIntegration, Policy, Result,
};
use moodbridge_ops::{HealthSummary, Ops, install_prometheus};

struct Fake {
    id: &'static str,
    status: HealthStatus,
    detail: &'static str,
    hang: bool,
}

#[async_trait]
impl PlatformIntegration for Fake {
    fn id(&self) -> &str {
        self.id
    }
    fn kind(&self) -> &str {
        "fake"
    }
    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(Capabilities::default())
    }
    async fn health_check(&self) -> HealthReport {
        if self.hang {
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        HealthReport::new(self.status, Duration::from_millis(3), self.detail)
    }
}

fn built(fake: Fake, policy: Policy) -> Built {
    Built::new(Arc::new(fake), policy)
}

async fn serve(ops: Ops) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        axum::serve(listener, ops.router()).await.unwrap();
    });
    (url, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_status_page() {
    let metrics = install_prometheus().unwrap();
    assert!(
        install_prometheus().is_err(),
        "a second recorder is refused"
    );

    // A CRM that is up behind a breaker and a rate limiter; a file store that is down and
    // whose detail carries markup; an integration whose check never answers.
    let breaker = CircuitBreaker::new("crm", CircuitBreakerConfig::default());
    let limiter = RateLimiter::new(
        "crm",
        RateLimitConfig::new(RateQuota::per_second(25).with_burst(5)),
    )
    .unwrap();
    let crm_policy = Policy::builder("crm")
        .circuit_breaker(breaker.clone())
        .rate_limiter(limiter)
        .build();
    let mut all = Integrations::default();
    all.insert(built(
        Fake {
            id: "crm:prod",
            status: HealthStatus::Up,
            detail: "API v62.0",
            hang: false,
        },
        crm_policy.clone(),
    ));
    all.insert(built(
        Fake {
            id: "files:scans",
            status: HealthStatus::Down,
            detail: "<b>disk</b> full",
            hang: false,
        },
        Policy::builder("files").build(),
    ));
    all.insert(built(
        Fake {
            id: "slow:legacy",
            status: HealthStatus::Up,
            detail: "",
            hang: true,
        },
        Policy::builder("slow").build(),
    ));

    // Something for the metrics and the status page: policy calls and a sync run.
    for _ in 0..3 {
        crm_policy
            .call_as("salesforce.sobject_retrieve", || async { Ok(()) })
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let state = Arc::new(
        SqliteStateStore::open(&dir.path().join("state.db"))
            .await
            .unwrap(),
    );
    let pipeline =
        Pipeline::from_toml("name = \"accounts\"\n[[streams]]\nname = \"Account\"\n").unwrap();
    let report = SyncEngine::new(state.clone())
        .run(&pipeline, &MemorySource::accounts(40), &MemorySink::new())
        .await
        .unwrap();
    assert_eq!(report.counts.written, 40);

    // An event consumer behind: three events waiting, one allowed.
    let three: Vec<NewEvent> = (1..=3)
        .map(|i| NewEvent::new("apex", format!("m{i}"), "case.updated", "{}"))
        .collect();
    state.append_events(&three).await.unwrap();
    let consumer = EventConsumer::new("case-updates", state.clone(), state.clone());
    let ops = Ops::new(all.clone())
        .event_consumers(
            [consumer],
            LagThresholds {
                max_events: 1,
                ..LagThresholds::default()
            },
        )
        .state_store(state.clone(), ["accounts"])
        .prometheus(metrics)
        .check_timeout(Duration::from_millis(300));
    let (url, server) = serve(ops).await;
    let http = reqwest::Client::new();

    // Health: one down → 503; every integration listed with its details.
    let response = http
        .get(format!("{url}/api/integrations/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let summary: HealthSummary = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(summary.status, HealthStatus::Down);
    let ids: Vec<&str> = summary.integrations.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "crm:prod",
            "files:scans",
            "slow:legacy",
            "events:case-updates"
        ]
    );
    let lagging = &summary.integrations[3];
    assert_eq!(
        (lagging.status, lagging.kind.as_str()),
        (HealthStatus::Degraded, "event-consumer")
    );
    assert!(
        lagging.detail.contains("3 events waiting (more than 1)"),
        "{}",
        lagging.detail
    );
    let crm = &summary.integrations[0];
    assert_eq!(crm.status, HealthStatus::Up);
    assert_eq!(crm.detail, "API v62.0");
    assert_eq!(crm.circuit_breaker, Some(CircuitState::Closed));
    let rate = crm.rate_limit.unwrap();
    assert!((rate.per_second - 25.0).abs() < 1e-9 && rate.burst == Some(5));
    let slow = &summary.integrations[2];
    assert_eq!(slow.status, HealthStatus::Down);
    assert!(slow.detail.contains("no answer within"), "{}", slow.detail);
    // Cut by the timeout (300 ms), not answered after the check's 60 s.
    assert!(slow.latency_ms >= 300.0, "{}", slow.latency_ms);

    // An operator forces the breaker open: health shows it.
    breaker.force_open();
    let summary: HealthSummary = serde_json::from_str(
        &http
            .get(format!("{url}/api/integrations/health"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        summary.integrations[0].circuit_breaker,
        Some(CircuitState::ForcedOpen)
    );
    breaker.force_close();

    // Metrics: Prometheus text with the SDK's names, counting what happened.
    let response = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()[reqwest::header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    // The consumer's gauges, set when its health was checked.
    for gauge in [
        "moodbridge_events_lag{consumer=\"case-updates\"} 3",
        "moodbridge_events_dead_letters{consumer=\"case-updates\"} 0",
    ] {
        assert!(text.lines().any(|l| l == gauge), "{gauge} missing:\n{text}");
    }
    assert!(
        text.lines()
            .any(|l| l
                .starts_with("moodbridge_events_oldest_age_seconds{consumer=\"case-updates\"}")),
        "{text}"
    );
    let calls = text
        .lines()
        .find(|l| {
            l.starts_with("moodbridge_calls_total{")
                && l.contains("platform=\"crm\"")
                && l.contains("operation=\"salesforce.sobject_retrieve\"")
        })
        .unwrap_or_else(|| panic!("no call counter in:\n{text}"));
    assert!(calls.ends_with(" 3"), "{calls}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("moodbridge_sync_records_total{")
                && l.contains("outcome=\"written\"")
                && l.ends_with(" 40")),
        "{text}"
    );

    // The status page: the same health, the run, markup escaped, refreshing itself.
    let response = http.get(format!("{url}/")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    let page = response.text().await.unwrap();
    assert!(page.contains("http-equiv=\"refresh\""));
    assert!(page.contains("crm:prod") && page.contains("files:scans"));
    assert!(page.contains("&lt;b&gt;disk&lt;/b&gt; full") && !page.contains("<b>disk"));
    assert!(page.contains(&report.run.to_string()), "the run is listed");
    assert!(page.contains(">40<"), "its counts are listed");
    server.abort();

    // Nothing down → 200.
    let mut healthy = Integrations::default();
    healthy.insert(all.get("crm:prod").unwrap().clone());
    let (url, server) = serve(Ops::new(healthy)).await;
    let response = http
        .get(format!("{url}/api/integrations/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    // Without a recorder, /metrics says how to get one.
    let response = http.get(format!("{url}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("install_prometheus")
    );
    server.abort();
}
