//! # moodbridge-ops
//!
//! The operations HTTP surface of MoodBridge Integrations (`moodbridge::http` with the
//! umbrella's feature `http`): an [`axum::Router`] a host mounts to let operators watch
//! its integrations. Core holds no HTTP server; this crate builds on its public API
//! (integrations, their health and breakers, the state store's runs).
//!
//! - `GET /api/integrations/health` — every integration's health as JSON (status,
//!   latency, detail, circuit-breaker state, rate-limit quota), checked concurrently,
//!   each check cut after [`Ops::check_timeout`]; answered `200` when nothing is down,
//!   `503` when something is. Event consumers given to [`Ops::event_consumers`] are
//!   listed too (id `events:<consumer>`, kind `event-consumer`): degraded past their lag
//!   thresholds.
//! - `GET /metrics` — the Prometheus text format of everything recorded through the
//!   `metrics` facade (names in `docs/telemetry.md`), when a Prometheus recorder is given.
//! - `GET /` — a small status page (server-rendered HTML, no script, refreshes itself every
//!   10 seconds) with the same health and the recent sync runs of the pipelines given.
//!
//! ```no_run
//! use std::sync::Arc;
//! use moodbridge_ops::{Ops, install_prometheus};
//! use moodbridge_core::registry::Integrations;
//! use moodbridge_core::state::SqliteStateStore;
//!
//! # async fn run(integrations: Integrations) -> moodbridge_core::Result<()> {
//! let metrics = install_prometheus()?;            // once per process, before any call
//! let state = Arc::new(SqliteStateStore::open(std::path::Path::new("state.db")).await?);
//! let app = Ops::new(integrations)
//!     .state_store(state, ["salesforce-to-warehouse"])
//!     .prometheus(metrics)
//!     .router();                                  // mount it, or serve it alone:
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8000").await
//!     .map_err(|e| moodbridge_core::Error::config("cannot listen on 127.0.0.1:8000").with_source(e))?;
//! axum::serve(listener, app).await
//!     .map_err(|e| moodbridge_core::Error::internal("ops server stopped").with_source(e))?;
//! # Ok(()) }
//! ```

pub mod outbound;
pub mod webhooks;

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};

use moodbridge_core::engine::{EventConsumer, LagThresholds};
use moodbridge_core::integration::{HealthReport, HealthStatus};
use moodbridge_core::registry::Integrations;
use moodbridge_core::resilience::CircuitState;
use moodbridge_core::state::{StateStore, SyncRun};
use moodbridge_core::{Error, Result};

/// Installs a Prometheus recorder as the process's `metrics` recorder and returns the
/// handle [`Ops::prometheus`] renders. Call it once, before the first call is recorded;
/// a second call (or another recorder already installed) is an error.
pub fn install_prometheus() -> Result<PrometheusHandle> {
    PrometheusBuilder::new().install_recorder().map_err(|e| {
        Error::config(format!("cannot install the Prometheus recorder: {e}"))
            .with_hint("install it once per process, before any other metrics recorder")
    })
}

/// What the operations surface shows; [`router`](Ops::router) serves it.
#[derive(Clone)]
pub struct Ops {
    integrations: Integrations,
    state: Option<Arc<dyn StateStore>>,
    pipelines: Vec<String>,
    prometheus: Option<PrometheusHandle>,
    check_timeout: Duration,
    title: String,
    consumers: Vec<(EventConsumer, LagThresholds)>,
}

impl std::fmt::Debug for Ops {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ops")
            .field("integrations", &self.integrations.len())
            .field("pipelines", &self.pipelines)
            .field("prometheus", &self.prometheus.is_some())
            .field("check_timeout", &self.check_timeout)
            .field("consumers", &self.consumers.len())
            .finish_non_exhaustive()
    }
}

/// One integration's health, as `/api/integrations/health` answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntegrationHealth {
    /// The integration id.
    pub id: String,
    /// Its kind (`salesforce`, `s3` …).
    pub kind: String,
    /// Up, degraded or down.
    pub status: HealthStatus,
    /// How long the check took, in milliseconds.
    pub latency_ms: f64,
    /// What the check said (API version, remaining quota, the error).
    pub detail: String,
    /// The state of its policy's circuit breaker, when it has one.
    pub circuit_breaker: Option<CircuitState>,
    /// Its policy's rate limit, when it has one.
    pub rate_limit: Option<RateLimitInfo>,
}

/// A rate limiter's quota.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RateLimitInfo {
    /// Calls allowed per second, on average.
    pub per_second: f64,
    /// Calls allowed at once after a quiet period.
    pub burst: Option<u32>,
}

/// Every integration's health and the overall status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthSummary {
    /// Down when one integration is down, degraded when one is degraded, up otherwise.
    pub status: HealthStatus,
    /// When the checks ran (RFC 3339).
    pub checked_at: String,
    /// Each integration, sorted by id, then each event consumer given to
    /// [`Ops::event_consumers`].
    pub integrations: Vec<IntegrationHealth>,
}

impl Ops {
    /// A surface over these integrations, with no state store and no metrics yet.
    pub fn new(integrations: Integrations) -> Self {
        Ops {
            integrations,
            state: None,
            pipelines: Vec::new(),
            prometheus: None,
            check_timeout: Duration::from_secs(5),
            title: "MoodBridge integrations".to_owned(),
            consumers: Vec::new(),
        }
    }

    /// Event consumers whose lag the health report shows (`events:<name>`, kind
    /// `event-consumer`): degraded past `thresholds` (events waiting, age of the oldest,
    /// open dead letters), down when the log cannot be read.
    ///
    /// ```
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// use std::sync::Arc;
    /// use moodbridge_core::engine::{EventConsumer, LagThresholds};
    /// use moodbridge_core::registry::Integrations;
    /// use moodbridge_core::state::SqliteStateStore;
    /// use moodbridge_ops::Ops;
    ///
    /// let dir = tempfile::tempdir().unwrap();
    /// let store = Arc::new(SqliteStateStore::open(&dir.path().join("s.db")).await.unwrap());
    /// let consumer = EventConsumer::new("case-updates", store.clone(), store);
    /// let ops = Ops::new(Integrations::default())
    ///     .event_consumers([consumer], LagThresholds::default());
    /// let health = ops.health().await;
    /// assert_eq!(health.integrations[0].id, "events:case-updates");
    /// # });
    /// ```
    pub fn event_consumers(
        mut self,
        consumers: impl IntoIterator<Item = EventConsumer>,
        thresholds: LagThresholds,
    ) -> Self {
        self.consumers
            .extend(consumers.into_iter().map(|c| (c, thresholds)));
        self
    }

    /// The state store whose recent runs of `pipelines` the status page lists.
    pub fn state_store<I, S>(mut self, state: Arc<dyn StateStore>, pipelines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.state = Some(state);
        self.pipelines = pipelines.into_iter().map(Into::into).collect();
        self
    }

    /// The Prometheus recorder `/metrics` renders (see [`install_prometheus`]). Without
    /// one, `/metrics` answers 404.
    pub fn prometheus(mut self, handle: PrometheusHandle) -> Self {
        self.prometheus = Some(handle);
        self
    }

    /// How long one health check may take before it counts as down (default 5 s).
    pub fn check_timeout(mut self, timeout: Duration) -> Self {
        self.check_timeout = timeout;
        self
    }

    /// The status page's title.
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = title.into();
        self
    }

    /// Checks every integration concurrently.
    pub async fn health(&self) -> HealthSummary {
        let checks = self.integrations.iter().map(|(id, built)| async move {
            let started = Instant::now();
            let report = tokio::time::timeout(self.check_timeout, built.integration.health_check())
                .await
                .unwrap_or_else(|_| {
                    HealthReport::new(
                        HealthStatus::Down,
                        started.elapsed(),
                        format!("no answer within {:?}", self.check_timeout),
                    )
                });
            IntegrationHealth {
                id: id.to_owned(),
                kind: built.integration.kind().to_owned(),
                status: report.status,
                latency_ms: report.latency.as_secs_f64() * 1e3,
                detail: report.detail,
                circuit_breaker: built.policy.circuit_breaker().map(|b| b.state()),
                rate_limit: built.policy.rate_limiter().map(|l| {
                    let quota = l.quota();
                    RateLimitInfo {
                        per_second: quota.per_second_rate(),
                        burst: quota.burst,
                    }
                }),
            }
        });
        let mut integrations = futures::future::join_all(checks).await;
        let lags = self.consumers.iter().map(|(consumer, limits)| async move {
            let report = tokio::time::timeout(self.check_timeout, consumer.health(limits))
                .await
                .unwrap_or_else(|_| {
                    HealthReport::new(
                        HealthStatus::Down,
                        self.check_timeout,
                        format!("no answer within {:?}", self.check_timeout),
                    )
                });
            IntegrationHealth {
                id: format!("events:{}", consumer.name()),
                kind: "event-consumer".to_owned(),
                status: report.status,
                latency_ms: report.latency.as_secs_f64() * 1e3,
                detail: report.detail,
                circuit_breaker: None,
                rate_limit: None,
            }
        });
        integrations.extend(futures::future::join_all(lags).await);
        let status = overall(integrations.iter().map(|i| i.status));
        HealthSummary {
            status,
            checked_at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            integrations,
        }
    }

    /// The newest runs (10 per pipeline), newest first.
    pub async fn recent_runs(&self) -> Result<Vec<SyncRun>> {
        let Some(state) = &self.state else {
            return Ok(Vec::new());
        };
        let mut runs = Vec::new();
        for pipeline in &self.pipelines {
            runs.extend(state.recent_runs(pipeline, 10).await?);
        }
        runs.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        Ok(runs)
    }

    /// The router: `/api/integrations/health`, `/metrics` and `/`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/api/integrations/health", get(health))
            .route("/metrics", get(metrics))
            .route("/", get(status_page))
            .with_state(Arc::new(self))
    }
}

fn overall(statuses: impl Iterator<Item = HealthStatus>) -> HealthStatus {
    statuses.fold(HealthStatus::Up, |worst, s| match (worst, s) {
        (HealthStatus::Down, _) | (_, HealthStatus::Down) => HealthStatus::Down,
        (HealthStatus::Degraded, _) | (_, HealthStatus::Degraded) => HealthStatus::Degraded,
        _ => HealthStatus::Up,
    })
}

fn status_code(status: HealthStatus) -> StatusCode {
    if status == HealthStatus::Down {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

async fn health(State(ops): State<Arc<Ops>>) -> Response {
    let summary = ops.health().await;
    (status_code(summary.status), axum::Json(summary)).into_response()
}

async fn metrics(State(ops): State<Arc<Ops>>) -> Response {
    match &ops.prometheus {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::NOT_FOUND,
            "no metrics recorder: give Ops::prometheus(install_prometheus()?)\n",
        )
            .into_response(),
    }
}

async fn status_page(State(ops): State<Arc<Ops>>) -> Response {
    let summary = ops.health().await;
    let runs = ops.recent_runs().await;
    let mut page = String::with_capacity(4096);
    let title = escape(&ops.title);
    let _ = write!(
        page,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"10\"><title>{title}</title><style>\
         body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}\
         table{{border-collapse:collapse;margin:1em 0}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}\
         .up{{color:#1a7f37}}.degraded{{color:#9a6700}}.down{{color:#cf222e}}.n{{text-align:right}}\
         </style></head><body><h1>{title}</h1>\
         <p>Overall: <strong class=\"{status}\">{status}</strong> · checked {checked} · refreshes every 10 s · \
         <a href=\"/api/integrations/health\">JSON</a> · <a href=\"/metrics\">metrics</a></p>\
         <h2>Integrations</h2><table><tr><th>id</th><th>kind</th><th>status</th><th>latency</th>\
         <th>circuit breaker</th><th>rate limit</th><th>detail</th></tr>",
        status = summary.status,
        checked = escape(&summary.checked_at),
    );
    if summary.integrations.is_empty() {
        page.push_str("<tr><td colspan=\"7\">no integration registered</td></tr>");
    }
    for i in &summary.integrations {
        let _ = write!(
            page,
            "<tr><td>{}</td><td>{}</td><td class=\"{s}\">{s}</td><td class=\"n\">{:.1} ms</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&i.id),
            escape(&i.kind),
            i.latency_ms,
            i.circuit_breaker.map_or("–".to_owned(), |c| c.to_string()),
            i.rate_limit.map_or("–".to_owned(), |r| format!(
                "{:.1}/s{}",
                r.per_second,
                r.burst.map(|b| format!(", burst {b}")).unwrap_or_default()
            )),
            escape(&i.detail),
            s = i.status,
        );
    }
    page.push_str(
        "</table><h2>Recent sync runs</h2><table><tr><th>pipeline</th><th>run</th><th>status</th>\
         <th>started</th><th>took</th><th class=\"n\">read</th><th class=\"n\">written</th>\
         <th class=\"n\">failed</th><th>error</th></tr>",
    );
    match runs {
        Ok(runs) if runs.is_empty() => {
            page.push_str("<tr><td colspan=\"9\">no run yet</td></tr>");
        }
        Ok(runs) => {
            for run in runs {
                let took = run
                    .finished_at
                    .and_then(|f| f.duration_since(run.started_at).ok())
                    .map_or("running".to_owned(), |d| {
                        format!("{:.2} s", d.as_secs_f64())
                    });
                let _ = write!(
                    page,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
                    escape(&run.pipeline),
                    run.id,
                    escape(&format!("{:?}", run.status).to_lowercase()),
                    humantime::format_rfc3339_seconds(run.started_at),
                    took,
                    run.counts.read,
                    run.counts.written,
                    run.counts.failed,
                    escape(run.error.as_deref().unwrap_or("")),
                );
            }
        }
        Err(e) => {
            let _ = write!(
                page,
                "<tr><td colspan=\"9\" class=\"down\">cannot read the state store: {}</td></tr>",
                escape(&e.to_string())
            );
        }
    }
    page.push_str("</table></body></html>");
    (status_code(summary.status), Html(page)).into_response()
}

/// Text made safe for HTML element content and quoted attributes.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_worst_status_wins() {
        use HealthStatus::{Degraded, Down, Up};
        assert_eq!(overall([].into_iter()), Up);
        assert_eq!(overall([Up, Degraded, Up].into_iter()), Degraded);
        assert_eq!(overall([Degraded, Down, Up].into_iter()), Down);
        assert_eq!(status_code(Degraded), StatusCode::OK);
        assert_eq!(status_code(Down), StatusCode::SERVICE_UNAVAILABLE);
    }

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }
}
