//! A typed client of Apache Airflow 3's REST API v2.
//!
//! - Login: a username and password exchanged at `POST /auth/token` for a JWT (Airflow's
//!   own auth managers), or a token the host already holds. A `401` (an expired token)
//!   fetches a new one and repeats the request once; a `403` is permanent (the user lacks
//!   the permission, or the token is malformed).
//! - [`health`](AirflowClient::health); DAGs ([`dags`](AirflowClient::dags),
//!   [`set_paused`](AirflowClient::set_paused)); runs ([`trigger`](AirflowClient::trigger),
//!   [`wait_for_run`](AirflowClient::wait_for_run), which reports a paused DAG at once
//!   instead of waiting on a run that cannot start); task instances, their logs and XCom;
//!   [`clear_task_instances`](AirflowClient::clear_task_instances); variables;
//!   connections (passwords only as [`SecretRef`]s); and asset events
//!   ([`post_asset_event`](AirflowClient::post_asset_event)), which start the DAGs
//!   scheduled on an asset.
//! - Every request goes through the client's [`Policy`]. A trigger is safe to retry: the
//!   client names the run itself (`moodbridge__<uuid v7>`), so a repeated request finds
//!   the run the first one created. Path segments are percent-encoded (run ids hold `:`
//!   and `+`).
//! - Errors: Airflow's `detail` (a text or FastAPI's validation list) in the message,
//!   scrubbed of the password and token; the kind from the status (401 `Auth` once the
//!   token was renewed, 403 `Forbidden`, 404 `NotFound`, 409 `Conflict`, 422
//!   `InvalidInput`, 429 `RateLimited` with `Retry-After`, 5xx `Unavailable`).
//!
//! ```no_run
//! use connector_etl::airflow::{AirflowClient, AirflowConfig, Trigger, WaitOptions};
//! use secrecy::SecretString;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let airflow = AirflowClient::new(
//!     AirflowConfig::password("http://127.0.0.1:8080", "admin", SecretString::from("admin"))?,
//! )?;
//! let run = airflow
//!     .trigger("nightly_load", &Trigger::new().conf(serde_json::json!({"full": true})))
//!     .await?;
//! let done = airflow
//!     .wait_for_run("nightly_load", &run.dag_run_id, WaitOptions::default())
//!     .await?;
//! println!("{} ended {}", done.dag_run_id, done.state.as_str());
//! # Ok(()) }
//! ```

mod assets;
mod integration;
mod model;

pub use assets::PublishAssets;
pub use integration::{AirflowFactory, AirflowIntegration, AirflowSettings, KIND};
pub use model::{
    Asset, AssetEvent, Component, Connection, Dag, DagRun, Health, LogEvent, RunState,
    TaskInstance, Variable,
};

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moodbridge_core::credential::CredentialStore;
use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy, PolicyConfig};
use moodbridge_core::{Error, ErrorKind, Result, SecretRef};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::rest::{self, Bearer, path};

/// The connector's name in errors.
const CONNECTOR: &str = "airflow";

/// Airflow, for errors.
const AIRFLOW: rest::Product = rest::Product {
    connector: CONNECTOR,
    name: "Airflow",
    hint,
};

/// Items per page of a list request.
const PAGE: usize = 100;

/// The default policy: up to 4 attempts with backoff from 250 ms, 30 s per attempt.
///
/// ```
/// let policy = connector_etl::airflow::default_policy_config();
/// assert_eq!(policy.retry.unwrap().max_attempts, 4);
/// ```
pub fn default_policy_config() -> PolicyConfig {
    rest::default_policy_config()
}

/// How the client proves who it is.
#[derive(Clone)]
pub enum AirflowAuth {
    /// A user of Airflow's auth manager: its token comes from `POST /auth/token`, and a
    /// new one when it expires.
    Password {
        /// The user name.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// A token the host holds (a JWT Airflow issued); not renewed.
    Token(SecretString),
}

impl fmt::Debug for AirflowAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AirflowAuth::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[redacted]")
                .finish(),
            AirflowAuth::Token(_) => f.write_str("Token([redacted])"),
        }
    }
}

/// Where Airflow is and how to reach it.
///
/// ```
/// use connector_etl::airflow::AirflowConfig;
/// use secrecy::SecretString;
///
/// let config = AirflowConfig::password("http://127.0.0.1:8080/", "admin", SecretString::from("pw-1234"))
///     .unwrap();
/// assert!(!format!("{config:?}").contains("pw-1234"));
/// let err = AirflowConfig::token("ftp://airflow", SecretString::from("t")).unwrap_err();
/// assert!(err.to_string().contains("http"), "{err}");
/// ```
#[derive(Debug, Clone)]
pub struct AirflowConfig {
    url: url::Url,
    id: String,
    auth: AirflowAuth,
    policy: Option<Policy>,
    timeout: Duration,
}

impl AirflowConfig {
    /// Airflow at `url` (its API server's address), as `username`.
    ///
    /// # Errors
    /// [`Config`](ErrorKind::Config) when `url` is not an `http` or `https` URL.
    pub fn password(
        url: &str,
        username: impl Into<String>,
        password: SecretString,
    ) -> Result<AirflowConfig> {
        Self::with_auth(
            url,
            AirflowAuth::Password {
                username: username.into(),
                password,
            },
        )
    }

    /// Airflow at `url`, with a token the host holds.
    ///
    /// # Errors
    /// As [`password`](Self::password).
    pub fn token(url: &str, token: SecretString) -> Result<AirflowConfig> {
        Self::with_auth(url, AirflowAuth::Token(token))
    }

    fn with_auth(url: &str, auth: AirflowAuth) -> Result<AirflowConfig> {
        let mut parsed = url::Url::parse(url).map_err(|e| {
            Error::config(format!("Airflow URL {url:?} is not a URL: {e}"))
                .with_connector(CONNECTOR)
                .with_hint("give the API server's address, such as http://127.0.0.1:8080")
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(Error::config(format!(
                "Airflow URL {url:?} is not an http or https URL with a host"
            ))
            .with_connector(CONNECTOR)
            .with_hint("give the API server's address, such as https://airflow.example.com"));
        }
        if !parsed.path().ends_with('/') {
            let path = format!("{}/", parsed.path());
            parsed.set_path(&path);
        }
        Ok(AirflowConfig {
            url: parsed,
            id: "airflow".into(),
            auth,
            policy: None,
            timeout: Duration::from_secs(30),
        })
    }

    /// The integration id in errors and metrics (default `"airflow"`).
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Run every request through `policy` (default: [`default_policy_config`]).
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// The time one HTTP request may take (default 30 s).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// How to trigger a DAG run.
///
/// ```
/// use connector_etl::airflow::Trigger;
/// let trigger = Trigger::new().conf(serde_json::json!({"stream": "Account"})).unpause();
/// # let _ = trigger;
/// ```
#[derive(Debug, Clone, Default)]
pub struct Trigger {
    conf: Option<Value>,
    run_id: Option<String>,
    note: Option<String>,
    unpause: bool,
}

impl Trigger {
    /// A run with no configuration, named by the client.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run's configuration (`dag_run.conf`).
    #[must_use]
    pub fn conf(mut self, conf: Value) -> Self {
        self.conf = Some(conf);
        self
    }

    /// Name the run `run_id` (Airflow allows letters, digits and `_.~:+-`). A run of that
    /// name already there is a [`Conflict`](ErrorKind::Conflict). Without it the client
    /// names the run `moodbridge__<uuid v7>`, and a retried trigger finds its run.
    #[must_use]
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// A note on the run.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = Some(note.into());
        self
    }

    /// Unpause the DAG first (new DAGs start paused; a paused DAG's runs stay queued).
    #[must_use]
    pub fn unpause(mut self) -> Self {
        self.unpause = true;
        self
    }
}

/// How [`wait_for_run`](AirflowClient::wait_for_run) waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitOptions {
    /// Between two looks at the run (default 1 s).
    pub poll: Duration,
    /// At most this long in all (default 1 h).
    pub timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        WaitOptions {
            poll: Duration::from_secs(1),
            timeout: Duration::from_secs(3600),
        }
    }
}

/// Which task instances [`clear_task_instances`](AirflowClient::clear_task_instances)
/// clears (they run again).
///
/// ```
/// use connector_etl::airflow::Clear;
/// let clear = Clear::run("manual__2026-12-07T23:28:52+00:00").tasks(["load"]).downstream().dry_run();
/// # let _ = clear;
/// ```
#[derive(Debug, Clone)]
pub struct Clear {
    run_id: String,
    task_ids: Vec<String>,
    only_failed: bool,
    downstream: bool,
    dry_run: bool,
}

impl Clear {
    /// Every task of run `run_id`.
    pub fn run(run_id: impl Into<String>) -> Self {
        Clear {
            run_id: run_id.into(),
            task_ids: Vec::new(),
            only_failed: false,
            downstream: false,
            dry_run: false,
        }
    }

    /// Only these tasks.
    #[must_use]
    pub fn tasks<S: Into<String>>(mut self, task_ids: impl IntoIterator<Item = S>) -> Self {
        self.task_ids = task_ids.into_iter().map(Into::into).collect();
        self
    }

    /// Only the failed ones.
    #[must_use]
    pub fn only_failed(mut self) -> Self {
        self.only_failed = true;
        self
    }

    /// The tasks downstream of those too.
    #[must_use]
    pub fn downstream(mut self) -> Self {
        self.downstream = true;
        self
    }

    /// List what would be cleared; clear nothing.
    #[must_use]
    pub fn dry_run(mut self) -> Self {
        self.dry_run = true;
        self
    }
}

/// A connection to create or replace; its password only by reference.
///
/// ```
/// use connector_etl::airflow::ConnectionSpec;
/// let spec = ConnectionSpec::new("moodbridge_warehouse", "snowflake")
///     .host("acme.snowflakecomputing.com")
///     .login("LOADER")
///     .password("secret:snowflake/loader-password".parse().unwrap())
///     .extra(serde_json::json!({"warehouse": "LOAD_WH"}));
/// assert!(format!("{spec:?}").contains("secret:snowflake/loader-password"));
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionSpec {
    id: String,
    conn_type: String,
    host: Option<String>,
    login: Option<String>,
    schema: Option<String>,
    port: Option<u16>,
    extra: Option<Value>,
    description: Option<String>,
    password: Option<SecretRef>,
}

impl ConnectionSpec {
    /// Connection `id` of type `conn_type` (`http`, `postgres`, `snowflake` …).
    pub fn new(id: impl Into<String>, conn_type: impl Into<String>) -> Self {
        ConnectionSpec {
            id: id.into(),
            conn_type: conn_type.into(),
            host: None,
            login: None,
            schema: None,
            port: None,
            extra: None,
            description: None,
            password: None,
        }
    }

    /// Host.
    #[must_use]
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Login.
    #[must_use]
    pub fn login(mut self, login: impl Into<String>) -> Self {
        self.login = Some(login.into());
        self
    }

    /// Schema.
    #[must_use]
    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }

    /// Port.
    #[must_use]
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Extra settings (sent as JSON text, as Airflow keeps them).
    #[must_use]
    pub fn extra(mut self, extra: Value) -> Self {
        self.extra = Some(extra);
        self
    }

    /// Description.
    #[must_use]
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// The password, read from the host's credential store (or environment) when the
    /// connection is written.
    #[must_use]
    pub fn password(mut self, password: SecretRef) -> Self {
        self.password = Some(password);
        self
    }
}

/// A client of one Airflow deployment; cheap to clone.
#[derive(Clone)]
pub struct AirflowClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api: url::Url,
    base: url::Url,
    auth: AirflowAuth,
    /// The token in use (fetched on first need).
    bearer: Bearer,
    policy: Policy,
    secrets: Secrets,
}

impl fmt::Debug for AirflowClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AirflowClient")
            .field("url", &self.inner.base.as_str())
            .field("platform", &self.inner.policy.platform())
            .finish_non_exhaustive()
    }
}

/// One request's parts.
struct Call<'a> {
    op: Operation,
    method: Method,
    path: String,
    query: Vec<(&'a str, String)>,
    body: Option<Value>,
}

impl<'a> Call<'a> {
    fn new(op: &'static str, method: Method, path: String) -> Self {
        Call {
            op: Operation::new(op),
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    fn query(mut self, key: &'a str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    fn body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    fn non_idempotent(mut self) -> Self {
        self.op = self.op.non_idempotent();
        self
    }
}

/// `value` as a `T`, or a [`Protocol`](ErrorKind::Protocol) error naming `what`.
fn decode<T: DeserializeOwned>(value: Value, what: &str) -> Result<T> {
    AIRFLOW.decode(value, what)
}

/// What a kind of failure means for a caller of Airflow.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Auth => "check the username and password (or token) the client was given",
        ErrorKind::Forbidden => {
            "the user lacks this permission in Airflow's auth manager, or the token is malformed"
        }
        ErrorKind::NotFound => "check the DAG, run, task or key: it does not exist in Airflow",
        ErrorKind::Conflict => "it exists already: read it, or use another id",
        ErrorKind::InvalidInput => "Airflow refused the request's fields: see its detail",
        ErrorKind::RateLimited { .. } => "Airflow's API server is throttling: slow down",
        ErrorKind::Unavailable => "Airflow's API server failed or is restarting: retry later",
        _ => "",
    }
}

/// Airflow's `detail`: a text, or FastAPI's list of `{loc, msg}`.
fn detail(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<Value>(body) else {
        return body.trim().to_owned();
    };
    match &value["detail"] {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                let at: Vec<String> = i["loc"]
                    .as_array()
                    .map(|l| {
                        l.iter()
                            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default();
                format!(
                    "{}: {}",
                    at.join("."),
                    i["msg"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => body.trim().to_owned(),
        other => other.to_string(),
    }
}

impl AirflowClient {
    /// A client of the Airflow `config` describes (no request yet).
    ///
    /// # Errors
    /// [`Internal`](ErrorKind::Internal) when the HTTP client cannot be built;
    /// [`Config`](ErrorKind::Config) for a policy that cannot be built.
    pub fn new(config: AirflowConfig) -> Result<AirflowClient> {
        let (http, policy) = rest::transport(CONNECTOR, &config.id, config.policy, config.timeout)?;
        let secrets = Secrets::new();
        match &config.auth {
            AirflowAuth::Password { password, .. } => {
                secrets.remember([password.expose_secret()]);
            }
            AirflowAuth::Token(token) => secrets.remember([token.expose_secret()]),
        }
        let api = config
            .url
            .join("api/v2/")
            .map_err(|e| Error::config(format!("Airflow URL: {e}")))?;
        let bearer = match &config.auth {
            AirflowAuth::Token(t) => Bearer::fixed(t.clone()),
            AirflowAuth::Password { .. } => Bearer::fetched(),
        };
        Ok(AirflowClient {
            inner: Arc::new(Inner {
                http,
                api,
                base: config.url,
                auth: config.auth,
                bearer,
                policy,
                secrets,
            }),
        })
    }

    /// The API server's address.
    pub fn url(&self) -> &str {
        self.inner.base.as_str()
    }

    /// The policy every request goes through.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// A token from `POST /auth/token`.
    async fn fetch_token(&self) -> Result<SecretString> {
        let AirflowAuth::Password { username, password } = &self.inner.auth else {
            return Err(Error::internal(
                "no credentials to fetch an Airflow token with",
            ));
        };
        let url = self
            .inner
            .base
            .join("auth/token")
            .map_err(|e| Error::internal(format!("token URL: {e}")))?;
        let response = self
            .inner
            .http
            .post(url)
            .json(&json!({"username": username, "password": password.expose_secret()}))
            .send()
            .await
            .map_err(|e| self.transport_error("POST auth/token", &e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(AIRFLOW.login_error(&self.inner.secrets, username, status, &detail(&text)));
        }
        let token = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["access_token"].as_str().map(str::to_owned))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    "Airflow's token answer has no access_token",
                )
                .with_connector(CONNECTOR)
            })?;
        self.inner.secrets.remember([token.as_str()]);
        Ok(SecretString::from(token))
    }

    fn transport_error(&self, what: &str, e: &reqwest::Error) -> Error {
        AIRFLOW.transport_error(&self.inner.secrets, what, e)
    }

    /// One attempt: the request, then again with a new token after a 401.
    async fn attempt(&self, call: &Call<'_>) -> Result<(StatusCode, String)> {
        let mut url = self
            .inner
            .api
            .join(&call.path)
            .map_err(|e| Error::internal(format!("Airflow path {:?}: {e}", call.path)))?;
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let what = format!("{} {}", call.method, call.path);
        let mut renewed = false;
        loop {
            let token = self.inner.bearer.get(|| self.fetch_token()).await?;
            let mut request = self
                .inner
                .http
                .request(call.method.clone(), url.clone())
                .bearer_auth(token.expose_secret());
            if let Some(body) = &call.body {
                request = request.json(body);
            }
            let response = request
                .send()
                .await
                .map_err(|e| self.transport_error(&what, &e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED
                && !renewed
                && self.inner.bearer.refused(&token).await
            {
                renewed = true;
                continue;
            }
            let retry = rest::retry_after(response.headers());
            let text = response
                .text()
                .await
                .map_err(|e| self.transport_error(&what, &e))?;
            if status.is_success() {
                return Ok((status, text));
            }
            return Err(AIRFLOW.status_error(
                &self.inner.secrets,
                status,
                retry,
                &what,
                &detail(&text),
            ));
        }
    }

    /// A request through the policy; its JSON answer (`null` for an empty one).
    async fn send(&self, call: Call<'_>) -> Result<Value> {
        let (_, text) = self
            .inner
            .policy
            .call_as(call.op.clone(), || self.attempt(&call))
            .await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| AIRFLOW.not_json(&format!("{} {}", call.method, call.path), &e))
    }

    /// A request whose answer is a `T`.
    async fn fetch<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T> {
        let what = format!("{} {}", call.method, call.path);
        let value = self.send(call).await?;
        decode(value, &format!("Airflow's answer to {what}"))
    }

    /// Every item of a list endpoint (`{<key>: [...], "total_entries": n}`), page by page.
    async fn list<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: String,
        key: &str,
        query: &[(&'static str, String)],
    ) -> Result<Vec<T>> {
        let mut out = Vec::new();
        loop {
            let mut call = Call::new(op, Method::GET, path.clone())
                .query("limit", PAGE)
                .query("offset", out.len());
            for (k, v) in query {
                call = call.query(k, v);
            }
            let mut page = self.send(call).await?;
            let items: Vec<T> = decode(page[key].take(), &format!("Airflow's {key} list"))?;
            let total = page["total_entries"].as_u64().unwrap_or(0);
            let got = items.len();
            out.extend(items);
            if got == 0 || out.len() as u64 >= total {
                return Ok(out);
            }
        }
    }

    /// The deployment's health (`/api/v2/monitor/health`).
    ///
    /// # Errors
    /// When Airflow cannot be reached.
    pub async fn health(&self) -> Result<Health> {
        let value = self
            .send(Call::new(
                "airflow.health",
                Method::GET,
                "monitor/health".into(),
            ))
            .await?;
        Ok(Health::from_json(&value))
    }

    /// One authenticated request (the first DAG), to prove the credentials work.
    ///
    /// # Errors
    /// [`Auth`](ErrorKind::Auth) or [`Forbidden`](ErrorKind::Forbidden) when refused.
    pub async fn check_access(&self) -> Result<()> {
        self.send(Call::new("airflow.list_dags", Method::GET, "dags".into()).query("limit", 1))
            .await
            .map(drop)
    }

    /// Every DAG.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn dags(&self) -> Result<Vec<Dag>> {
        self.list("airflow.list_dags", "dags".into(), "dags", &[])
            .await
    }

    /// One DAG.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown DAG.
    pub async fn dag(&self, dag_id: &str) -> Result<Dag> {
        self.fetch(Call::new(
            "airflow.get_dag",
            Method::GET,
            path(&["dags", dag_id]),
        ))
        .await
    }

    /// Pause or unpause a DAG.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown DAG.
    pub async fn set_paused(&self, dag_id: &str, paused: bool) -> Result<Dag> {
        self.fetch(
            Call::new("airflow.patch_dag", Method::PATCH, path(&["dags", dag_id]))
                .query("update_mask", "is_paused")
                .body(json!({ "is_paused": paused })),
        )
        .await
    }

    /// Trigger a run of `dag_id`.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown DAG;
    /// [`Conflict`](ErrorKind::Conflict) when a run named as the trigger names it exists.
    pub async fn trigger(&self, dag_id: &str, trigger: &Trigger) -> Result<DagRun> {
        if trigger.unpause {
            self.set_paused(dag_id, false).await?;
        }
        let (run_id, ours) = match &trigger.run_id {
            Some(id) => (id.clone(), false),
            None => (format!("moodbridge__{}", uuid::Uuid::now_v7()), true),
        };
        let mut body = json!({
            "dag_run_id": run_id,
            "logical_date": null,
            "conf": trigger.conf.clone().unwrap_or_else(|| json!({})),
        });
        if let Some(note) = &trigger.note {
            body["note"] = json!(note);
        }
        let call = Call::new(
            "airflow.trigger_dag_run",
            Method::POST,
            path(&["dags", dag_id, "dagRuns"]),
        )
        .body(body);
        // A run named by the client makes the trigger idempotent: the run a lost answer
        // created is found under its name.
        let call = if ours { call } else { call.non_idempotent() };
        match self.fetch::<DagRun>(call).await {
            Err(e) if ours && e.kind() == ErrorKind::Conflict => {
                self.dag_run(dag_id, &run_id).await
            }
            Err(e) => Err(e
                .with_context("dag_id", dag_id)
                .with_context("run_id", &run_id)),
            ok => ok,
        }
    }

    /// One run.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown DAG or run.
    pub async fn dag_run(&self, dag_id: &str, run_id: &str) -> Result<DagRun> {
        self.fetch(Call::new(
            "airflow.get_dag_run",
            Method::GET,
            path(&["dags", dag_id, "dagRuns", run_id]),
        ))
        .await
    }

    /// The most recent `limit` runs of `dag_id`, newest first.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown DAG.
    pub async fn dag_runs(&self, dag_id: &str, limit: usize) -> Result<Vec<DagRun>> {
        let mut page = self
            .send(
                Call::new(
                    "airflow.list_dag_runs",
                    Method::GET,
                    path(&["dags", dag_id, "dagRuns"]),
                )
                .query("limit", limit.clamp(1, PAGE))
                .query("order_by", "-run_after"),
            )
            .await?;
        decode(page["dag_runs"].take(), "Airflow's run list")
    }

    /// Wait until run `run_id` of `dag_id` ends (`success` or `failed`: look at its
    /// [`state`](DagRun::state)).
    ///
    /// # Errors
    /// [`InvalidInput`](ErrorKind::InvalidInput) as soon as the run is queued behind a
    /// paused DAG (it would wait forever); [`Timeout`](ErrorKind::Timeout) when it has
    /// not ended within `options.timeout`; as Airflow answers.
    pub async fn wait_for_run(
        &self,
        dag_id: &str,
        run_id: &str,
        options: WaitOptions,
    ) -> Result<DagRun> {
        let started = Instant::now();
        loop {
            let run = self.dag_run(dag_id, run_id).await?;
            if run.state.is_finished() {
                return Ok(run);
            }
            if run.state == RunState::Queued && self.dag(dag_id).await?.is_paused {
                return Err(Error::invalid_input(format!(
                    "DAG {dag_id} is paused: its run {run_id} stays queued until it is unpaused"
                ))
                .with_connector(CONNECTOR)
                .with_hint("unpause the DAG (AirflowClient::set_paused, or Trigger::unpause) and wait again"));
            }
            if started.elapsed() >= options.timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "run {run_id} of DAG {dag_id} is still {} after {:?}",
                        run.state.as_str(),
                        options.timeout
                    ),
                )
                .with_connector(CONNECTOR)
                .with_hint("wait longer (WaitOptions::timeout), or look at its task instances"));
            }
            tokio::time::sleep(options.poll).await;
        }
    }

    /// The task instances of a run.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown DAG or run.
    pub async fn task_instances(&self, dag_id: &str, run_id: &str) -> Result<Vec<TaskInstance>> {
        self.list(
            "airflow.list_task_instances",
            path(&["dags", dag_id, "dagRuns", run_id, "taskInstances"]),
            "task_instances",
            &[],
        )
        .await
    }

    /// The log of attempt `try_number` of a task, event by event.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown task or attempt.
    pub async fn task_log(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        try_number: u32,
    ) -> Result<Vec<LogEvent>> {
        let mut page = self
            .send(
                Call::new(
                    "airflow.get_log",
                    Method::GET,
                    path(&[
                        "dags",
                        dag_id,
                        "dagRuns",
                        run_id,
                        "taskInstances",
                        task_id,
                        "logs",
                        &try_number.to_string(),
                    ]),
                )
                .query("full_content", "true"),
            )
            .await?;
        let content = match page["content"].take() {
            Value::Array(items) => items,
            Value::String(text) => text.lines().map(|l| json!(l)).collect(),
            _ => Vec::new(),
        };
        content
            .into_iter()
            .map(|item| match item {
                Value::String(line) => Ok(LogEvent {
                    timestamp: None,
                    level: None,
                    event: line,
                    fields: Map::new(),
                }),
                other => decode(other, &format!("a log event of task {task_id}")),
            })
            .collect()
    }

    /// The XCom value `key` a task pushed (`return_value` for its result), `None` when
    /// it pushed none.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn xcom(
        &self,
        dag_id: &str,
        run_id: &str,
        task_id: &str,
        key: &str,
    ) -> Result<Option<Value>> {
        let got = self
            .send(Call::new(
                "airflow.get_xcom",
                Method::GET,
                path(&[
                    "dags",
                    dag_id,
                    "dagRuns",
                    run_id,
                    "taskInstances",
                    task_id,
                    "xcomEntries",
                    key,
                ]),
            ))
            .await;
        match got {
            Ok(mut entry) => Ok(Some(entry["value"].take())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Clear task instances of a DAG so they run again; the instances cleared (or that
    /// would be, for a dry run).
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn clear_task_instances(
        &self,
        dag_id: &str,
        clear: &Clear,
    ) -> Result<Vec<TaskInstance>> {
        let mut body = json!({
            "dag_run_id": clear.run_id,
            "dry_run": clear.dry_run,
            "only_failed": clear.only_failed,
            "include_downstream": clear.downstream,
        });
        if !clear.task_ids.is_empty() {
            body["task_ids"] = json!(clear.task_ids);
        }
        let mut answer = self
            .send(
                Call::new(
                    "airflow.clear_task_instances",
                    Method::POST,
                    path(&["dags", dag_id, "clearTaskInstances"]),
                )
                .body(body),
            )
            .await?;
        decode(
            answer["task_instances"].take(),
            "Airflow's cleared task list",
        )
    }

    /// Variable `key`, `None` when there is none.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn variable(&self, key: &str) -> Result<Option<Variable>> {
        self.fetch_optional("airflow.get_variable", path(&["variables", key]))
            .await
    }

    /// Set variable `key` (created, or replaced).
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn set_variable(
        &self,
        key: &str,
        value: &str,
        description: Option<&str>,
    ) -> Result<Variable> {
        let body = json!({"key": key, "value": value, "description": description});
        self.upsert(
            ["airflow.post_variable", "airflow.patch_variable"],
            "variables",
            key,
            body,
        )
        .await
    }

    /// Delete variable `key`; `false` when there was none.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn delete_variable(&self, key: &str) -> Result<bool> {
        self.delete("airflow.delete_variable", path(&["variables", key]))
            .await
    }

    /// `GET path`; `None` for a 404.
    async fn fetch_optional<T: DeserializeOwned>(
        &self,
        op: &'static str,
        path: String,
    ) -> Result<Option<T>> {
        match self.fetch(Call::new(op, Method::GET, path)).await {
            Ok(found) => Ok(Some(found)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Create `id` in `collection` with `body`, or replace it when it exists.
    async fn upsert<T: DeserializeOwned>(
        &self,
        [post, patch]: [&'static str; 2],
        collection: &str,
        id: &str,
        body: Value,
    ) -> Result<T> {
        let created = self
            .fetch(Call::new(post, Method::POST, collection.to_owned()).body(body.clone()))
            .await;
        match created {
            Err(e) if e.kind() == ErrorKind::Conflict => {
                self.fetch(Call::new(patch, Method::PATCH, path(&[collection, id])).body(body))
                    .await
            }
            other => other,
        }
    }

    async fn delete(&self, op: &'static str, path: String) -> Result<bool> {
        match self.send(Call::new(op, Method::DELETE, path)).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Connection `id` (without its password, which Airflow masks), `None` when there is
    /// none.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn connection(&self, id: &str) -> Result<Option<Connection>> {
        self.fetch_optional("airflow.get_connection", path(&["connections", id]))
            .await
    }

    /// Create or replace a connection, its password read from `credentials` (or the
    /// environment) now.
    ///
    /// # Errors
    /// When the password's reference cannot be resolved; as Airflow answers.
    pub async fn put_connection(
        &self,
        spec: &ConnectionSpec,
        credentials: Option<&dyn CredentialStore>,
    ) -> Result<Connection> {
        let mut body = json!({
            "connection_id": spec.id,
            "conn_type": spec.conn_type,
            "host": spec.host,
            "login": spec.login,
            "schema": spec.schema,
            "port": spec.port,
            "description": spec.description,
            "extra": spec.extra.as_ref().map(Value::to_string),
        });
        if let Some(reference) = &spec.password {
            let password = reference.resolve(credentials).await?;
            self.inner.secrets.remember([password.expose_secret()]);
            body["password"] = json!(password.expose_secret());
        }
        self.upsert(
            ["airflow.post_connection", "airflow.patch_connection"],
            "connections",
            &spec.id,
            body,
        )
        .await
    }

    /// Delete connection `id`; `false` when there was none.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn delete_connection(&self, id: &str) -> Result<bool> {
        self.delete("airflow.delete_connection", path(&["connections", id]))
            .await
    }

    /// The asset whose URI is `uri`, `None` when no DAG declares it.
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn asset(&self, uri: &str) -> Result<Option<Asset>> {
        let assets: Vec<Asset> = self
            .list(
                "airflow.list_assets",
                "assets".into(),
                "assets",
                &[("uri_pattern", uri.to_owned())],
            )
            .await?;
        Ok(assets.into_iter().find(|a| a.uri == uri))
    }

    /// Say asset `uri` was updated, with `extra` about the update: the DAGs scheduled on
    /// it start. `None` when no DAG declares the asset (nothing to start).
    ///
    /// Not retried once sent (a second event would start the DAGs twice).
    ///
    /// # Errors
    /// As Airflow answers.
    pub async fn post_asset_event(
        &self,
        uri: &str,
        extra: Map<String, Value>,
    ) -> Result<Option<AssetEvent>> {
        let Some(asset) = self.asset(uri).await? else {
            tracing::debug!(uri, "no Airflow DAG declares this asset: no event posted");
            return Ok(None);
        };
        self.fetch(
            Call::new(
                "airflow.create_asset_event",
                Method::POST,
                "assets/events".into(),
            )
            .body(json!({"asset_id": asset.id, "extra": extra}))
            .non_idempotent(),
        )
        .await
        .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_are_read_as_airflow_writes_them() {
        // FastAPI's validation answer, as Airflow gives it to a trigger without
        // `logical_date`.
        let validation = r#"{"detail":[{"type":"missing","loc":["body","logical_date"],"msg":"Field required","input":{}}]}"#;
        assert_eq!(detail(validation), "body.logical_date: Field required");
        assert_eq!(
            detail(r#"{"detail":"The Dag with ID: `nope` was not found"}"#),
            "The Dag with ID: `nope` was not found"
        );
        assert_eq!(detail("Bad Gateway"), "Bad Gateway");
    }
}
