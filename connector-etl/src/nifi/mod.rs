//! A typed client of Apache NiFi 2's REST API (`/nifi-api`).
//!
//! - Login: a username and password exchanged at `POST /access/token` for a bearer token
//!   (renewed once when a call gets 401), a token the host holds, or none (a NiFi without
//!   a login provider).
//! - The flow: [`about`](NifiClient::about), [`controller_status`](NifiClient::controller_status),
//!   process groups ([`process_group`](NifiClient::process_group),
//!   [`child_groups`](NifiClient::child_groups)) and their processors.
//! - Run states with revisions: [`set_processor_state`](NifiClient::set_processor_state)
//!   names the revision it read, as NiFi requires; when another client changed the
//!   processor meanwhile (409), it reads it again and retries once.
//!   [`schedule_group`](NifiClient::schedule_group) starts or stops a whole group, and
//!   [`wait_group_idle`](NifiClient::wait_group_idle) waits for its threads to end.
//! - [`bulletins`](NifiClient::bulletins) (the flow's warnings and errors, after an id,
//!   filtered); [`provenance`](NifiClient::provenance), which follows NiFi's asynchronous
//!   query life-cycle (submit, poll until finished, always delete).
//! - Flow definitions: [`download_flow`](NifiClient::download_flow) and
//!   [`upload_flow`](NifiClient::upload_flow) (a new group from a definition).
//!
//! Every request goes through the client's [`Policy`]; a change (`PUT`, `POST`) is not
//! retried once sent unless NiFi refused it outright.
//!
//! ```no_run
//! use connector_etl::nifi::{NifiClient, NifiConfig, ProcessorState};
//! use secrecy::SecretString;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let nifi = NifiClient::new(NifiConfig::password(
//!     "https://nifi.example.com:8443",
//!     "moodbridge",
//!     SecretString::from("…"),
//! )?)?;
//! let root = nifi.root_group_id().await?;
//! for p in nifi.processors(&root, true).await? {
//!     if p.state == ProcessorState::Stopped {
//!         nifi.set_processor_state(&p.id, ProcessorState::Running).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

mod integration;
mod model;

pub use integration::{KIND, NifiFactory, NifiIntegration, NifiSettings};
pub use model::{
    About, Bulletin, ControllerStatus, ProcessGroup, Processor, ProcessorState, ProvenanceEvent,
    Revision, Snapshot,
};

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy, PolicyConfig};
use moodbridge_core::{Error, ErrorKind, Result};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::rest::{self, Bearer, path};
use model::{GroupEntity, ProcessorEntity};

/// The connector's name in errors.
const CONNECTOR: &str = "nifi";
/// NiFi, for errors.
const NIFI: rest::Product = rest::Product {
    connector: CONNECTOR,
    name: "NiFi",
    hint,
};

/// The default policy: up to 4 attempts with backoff from 250 ms, 30 s per attempt.
///
/// ```
/// let policy = connector_etl::nifi::default_policy_config();
/// assert_eq!(policy.retry.unwrap().max_attempts, 4);
/// ```
pub fn default_policy_config() -> PolicyConfig {
    rest::default_policy_config()
}

/// How the client proves who it is.
#[derive(Clone)]
pub enum NifiAuth {
    /// No login (a NiFi without a login provider, on a trusted network).
    None,
    /// A user of NiFi's login identity provider: its token comes from
    /// `POST /access/token`, and a new one when it expires.
    Password {
        /// The user name.
        username: String,
        /// The password.
        password: SecretString,
    },
    /// A token the host holds; not renewed.
    Token(SecretString),
}

impl fmt::Debug for NifiAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NifiAuth::None => f.write_str("None"),
            NifiAuth::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .field("password", &"[redacted]")
                .finish(),
            NifiAuth::Token(_) => f.write_str("Token([redacted])"),
        }
    }
}

/// Where NiFi is and how to reach it.
///
/// ```
/// use connector_etl::nifi::NifiConfig;
/// use secrecy::SecretString;
///
/// let config = NifiConfig::password("https://nifi:8443", "me", SecretString::from("pw-7781")).unwrap();
/// assert!(!format!("{config:?}").contains("pw-7781"));
/// assert!(NifiConfig::anonymous("nifi:8080").is_err());
/// ```
#[derive(Debug, Clone)]
pub struct NifiConfig {
    url: url::Url,
    id: String,
    auth: NifiAuth,
    policy: Option<Policy>,
    timeout: Duration,
}

impl NifiConfig {
    /// NiFi at `url` (its address, without `/nifi-api`), as `username`.
    ///
    /// # Errors
    /// [`Config`](ErrorKind::Config) when `url` is not an `http` or `https` URL.
    pub fn password(
        url: &str,
        username: impl Into<String>,
        password: SecretString,
    ) -> Result<NifiConfig> {
        Self::with_auth(
            url,
            NifiAuth::Password {
                username: username.into(),
                password,
            },
        )
    }

    /// NiFi at `url`, with a token the host holds.
    ///
    /// # Errors
    /// As [`password`](Self::password).
    pub fn token(url: &str, token: SecretString) -> Result<NifiConfig> {
        Self::with_auth(url, NifiAuth::Token(token))
    }

    /// NiFi at `url`, without a login.
    ///
    /// # Errors
    /// As [`password`](Self::password).
    pub fn anonymous(url: &str) -> Result<NifiConfig> {
        Self::with_auth(url, NifiAuth::None)
    }

    fn with_auth(url: &str, auth: NifiAuth) -> Result<NifiConfig> {
        let bad = || {
            Error::config(format!(
                "NiFi URL {url:?} is not an http or https URL with a host"
            ))
            .with_connector(CONNECTOR)
            .with_hint("give NiFi's address, such as https://nifi.example.com:8443")
        };
        let mut parsed = url::Url::parse(url).map_err(|_| bad())?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(bad());
        }
        let trimmed = parsed.path().trim_end_matches('/').to_owned();
        let api = if trimmed.ends_with("/nifi-api") {
            format!("{trimmed}/")
        } else {
            format!("{trimmed}/nifi-api/")
        };
        parsed.set_path(&api);
        Ok(NifiConfig {
            url: parsed,
            id: "nifi".into(),
            auth,
            policy: None,
            timeout: Duration::from_secs(30),
        })
    }

    /// The integration id in errors and metrics (default `"nifi"`).
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

/// Which bulletins [`bulletins`](NifiClient::bulletins) returns.
///
/// ```
/// use connector_etl::nifi::BulletinQuery;
/// let query = BulletinQuery::default().after(41).source("^Put").limit(50);
/// # let _ = query;
/// ```
#[derive(Debug, Clone, Default)]
pub struct BulletinQuery {
    after: Option<i64>,
    limit: Option<u32>,
    group: Option<String>,
    source: Option<String>,
    message: Option<String>,
}

impl BulletinQuery {
    /// Only bulletins with a larger id (the last one seen).
    #[must_use]
    pub fn after(mut self, id: i64) -> Self {
        self.after = Some(id);
        self
    }

    /// At most `n`.
    #[must_use]
    pub fn limit(mut self, n: u32) -> Self {
        self.limit = Some(n);
        self
    }

    /// Only from the group whose id matches this regular expression.
    #[must_use]
    pub fn group(mut self, pattern: impl Into<String>) -> Self {
        self.group = Some(pattern.into());
        self
    }

    /// Only from components whose name matches this regular expression.
    #[must_use]
    pub fn source(mut self, pattern: impl Into<String>) -> Self {
        self.source = Some(pattern.into());
        self
    }

    /// Only messages matching this regular expression.
    #[must_use]
    pub fn message(mut self, pattern: impl Into<String>) -> Self {
        self.message = Some(pattern.into());
        self
    }
}

/// Which provenance events [`provenance`](NifiClient::provenance) searches for.
///
/// ```
/// use connector_etl::nifi::ProvenanceQuery;
/// let query = ProvenanceQuery::new(500).component("016a1000-0000-1000-0000-000000000000");
/// # let _ = query;
/// ```
#[derive(Debug, Clone)]
pub struct ProvenanceQuery {
    max_results: u32,
    component: Option<String>,
    poll: Duration,
    timeout: Duration,
}

impl ProvenanceQuery {
    /// The newest `max_results` events.
    pub fn new(max_results: u32) -> Self {
        ProvenanceQuery {
            max_results,
            component: None,
            poll: Duration::from_millis(250),
            timeout: Duration::from_secs(60),
        }
    }

    /// Only the events of this component.
    #[must_use]
    pub fn component(mut self, id: impl Into<String>) -> Self {
        self.component = Some(id.into());
        self
    }

    /// Between two looks at the query (default 250 ms), and at most `timeout` in all
    /// (default 60 s).
    #[must_use]
    pub fn waiting(mut self, poll: Duration, timeout: Duration) -> Self {
        self.poll = poll;
        self.timeout = timeout;
        self
    }
}

/// A client of one NiFi; cheap to clone.
#[derive(Clone)]
pub struct NifiClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    api: url::Url,
    auth: NifiAuth,
    bearer: Bearer,
    policy: Policy,
    secrets: Secrets,
    /// This client's id in the revisions it writes.
    client_id: String,
}

impl fmt::Debug for NifiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NifiClient")
            .field("url", &self.inner.api.as_str())
            .field("platform", &self.inner.policy.platform())
            .finish_non_exhaustive()
    }
}

/// One request.
struct Call {
    op: Operation,
    method: Method,
    path: String,
    query: Vec<(&'static str, String)>,
    body: Option<Body>,
}

enum Body {
    Json(Value),
    /// A flow definition upload: the group's name and the definition.
    Upload(String, Vec<u8>, String),
}

impl Call {
    fn new(op: &'static str, method: Method, path: String) -> Self {
        let op = Operation::new(op);
        let op = if method == Method::GET || method == Method::DELETE {
            op
        } else {
            op.non_idempotent()
        };
        Call {
            op,
            method,
            path,
            query: Vec::new(),
            body: None,
        }
    }

    fn query(mut self, key: &'static str, value: impl ToString) -> Self {
        self.query.push((key, value.to_string()));
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.body = Some(Body::Json(body));
        self
    }
}

/// NiFi's error bodies are text.
fn hint(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Auth => "check the username and password (or token) the client was given",
        ErrorKind::Forbidden => "the user lacks this permission in NiFi's access policies",
        ErrorKind::NotFound => "check the id: NiFi has no such component",
        ErrorKind::Conflict => {
            "the component changed meanwhile (another revision) or is in a state that forbids this: read it again"
        }
        ErrorKind::InvalidInput => "NiFi refused the request: see its message",
        ErrorKind::RateLimited { .. } => "NiFi is throttling requests: slow down",
        ErrorKind::Unavailable => "NiFi failed or is restarting: retry later",
        _ => "",
    }
}

impl NifiClient {
    /// A client of the NiFi `config` describes (no request yet).
    ///
    /// # Errors
    /// [`Internal`](ErrorKind::Internal) when the HTTP client cannot be built;
    /// [`Config`](ErrorKind::Config) for a policy that cannot be built.
    pub fn new(config: NifiConfig) -> Result<NifiClient> {
        let (http, policy) = rest::transport(CONNECTOR, &config.id, config.policy, config.timeout)?;
        let secrets = Secrets::new();
        let bearer = match &config.auth {
            NifiAuth::Password { password, .. } => {
                secrets.remember([password.expose_secret()]);
                Bearer::fetched()
            }
            NifiAuth::Token(token) => {
                secrets.remember([token.expose_secret()]);
                Bearer::fixed(token.clone())
            }
            NifiAuth::None => Bearer::fixed(SecretString::from("")),
        };
        Ok(NifiClient {
            inner: Arc::new(Inner {
                http,
                api: config.url,
                auth: config.auth,
                bearer,
                policy,
                secrets,
                client_id: uuid::Uuid::new_v4().to_string(),
            }),
        })
    }

    /// The id this client writes into the revisions it changes.
    pub fn client_id(&self) -> &str {
        &self.inner.client_id
    }

    async fn fetch_token(&self) -> Result<SecretString> {
        let NifiAuth::Password { username, password } = &self.inner.auth else {
            return Err(Error::internal("no credentials to fetch a NiFi token with"));
        };
        let url = self
            .inner
            .api
            .join("access/token")
            .map_err(|e| Error::internal(format!("token URL: {e}")))?;
        let response = self
            .inner
            .http
            .post(url)
            .form(&[
                ("username", username.as_str()),
                ("password", password.expose_secret()),
            ])
            .send()
            .await
            .map_err(|e| NIFI.transport_error(&self.inner.secrets, "POST access/token", &e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        if !status.is_success() {
            return Err(NIFI.login_error(&self.inner.secrets, username, status, &text));
        }
        let token = text.trim().to_owned();
        if token.is_empty() {
            return Err(
                Error::new(ErrorKind::Protocol, "NiFi's token answer is empty")
                    .with_connector(CONNECTOR),
            );
        }
        self.inner.secrets.remember([token.as_str()]);
        Ok(SecretString::from(token))
    }

    /// One attempt: the request, then again with a new token after a 401.
    async fn attempt(&self, call: &Call) -> Result<String> {
        let mut url = self
            .inner
            .api
            .join(&call.path)
            .map_err(|e| Error::internal(format!("NiFi path {:?}: {e}", call.path)))?;
        if !call.query.is_empty() {
            url.query_pairs_mut()
                .extend_pairs(call.query.iter().map(|(k, v)| (*k, v.as_str())));
        }
        let what = format!("{} {}", call.method, call.path);
        let mut renewed = false;
        loop {
            let token = match self.inner.auth {
                NifiAuth::None => None,
                _ => Some(self.inner.bearer.get(|| self.fetch_token()).await?),
            };
            let mut request = self.inner.http.request(call.method.clone(), url.clone());
            if let Some(token) = &token {
                request = request.bearer_auth(token.expose_secret());
            }
            request = match &call.body {
                Some(Body::Json(body)) => request.json(body),
                Some(Body::Upload(name, file, client)) => {
                    let part = reqwest::multipart::Part::bytes(file.clone())
                        .file_name("flow.json")
                        .mime_str("application/json")
                        .map_err(|e| Error::internal(format!("upload part: {e}")))?;
                    request.multipart(
                        reqwest::multipart::Form::new()
                            .text("groupName", name.clone())
                            .text("positionX", "0.0")
                            .text("positionY", "0.0")
                            .text("clientId", client.clone())
                            .text("disconnectedNodeAcknowledged", "false")
                            .part("file", part),
                    )
                }
                None => request,
            };
            let response = request
                .send()
                .await
                .map_err(|e| NIFI.transport_error(&self.inner.secrets, &what, &e))?;
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED
                && !renewed
                && let Some(token) = &token
                && self.inner.bearer.refused(token).await
            {
                renewed = true;
                continue;
            }
            let retry = rest::retry_after(response.headers());
            let text = response
                .text()
                .await
                .map_err(|e| NIFI.transport_error(&self.inner.secrets, &what, &e))?;
            if status.is_success() {
                return Ok(text);
            }
            return Err(NIFI.status_error(&self.inner.secrets, status, retry, &what, text.trim()));
        }
    }

    /// A request through the policy; its JSON answer (`null` for an empty one).
    async fn send(&self, call: Call) -> Result<Value> {
        let text = self
            .inner
            .policy
            .call_as(call.op.clone(), || self.attempt(&call))
            .await?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| NIFI.not_json(&format!("{} {}", call.method, call.path), &e))
    }

    async fn fetch<T: DeserializeOwned>(&self, call: Call, what: &str) -> Result<T> {
        let value = self.send(call).await?;
        NIFI.decode(value, what)
    }

    /// NiFi's version.
    ///
    /// # Errors
    /// As NiFi answers.
    pub async fn about(&self) -> Result<About> {
        let mut v = self
            .send(Call::new("nifi.about", Method::GET, "flow/about".into()))
            .await?;
        NIFI.decode(v["about"].take(), "NiFi's about")
    }

    /// The whole flow at a glance.
    ///
    /// # Errors
    /// As NiFi answers.
    pub async fn controller_status(&self) -> Result<ControllerStatus> {
        let mut v = self
            .send(Call::new(
                "nifi.controller_status",
                Method::GET,
                "flow/status".into(),
            ))
            .await?;
        NIFI.decode(v["controllerStatus"].take(), "NiFi's controller status")
    }

    /// The root group's id.
    ///
    /// # Errors
    /// As NiFi answers.
    pub async fn root_group_id(&self) -> Result<String> {
        let v = self
            .send(Call::new(
                "nifi.group_status",
                Method::GET,
                "flow/process-groups/root/status".into(),
            ))
            .await?;
        v["processGroupStatus"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(ErrorKind::Protocol, "NiFi's root group status has no id")
                    .with_connector(CONNECTOR)
            })
    }

    /// Process group `id` (`"root"` for the root).
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown group.
    pub async fn process_group(&self, id: &str) -> Result<ProcessGroup> {
        let entity: GroupEntity = self
            .fetch(
                Call::new(
                    "nifi.get_process_group",
                    Method::GET,
                    path(&["process-groups", id]),
                ),
                "NiFi's process group",
            )
            .await?;
        Ok(entity.into())
    }

    /// The groups directly inside group `id`.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown group.
    pub async fn child_groups(&self, id: &str) -> Result<Vec<ProcessGroup>> {
        let mut v = self
            .send(Call::new(
                "nifi.get_process_groups",
                Method::GET,
                path(&["process-groups", id, "process-groups"]),
            ))
            .await?;
        let entities: Vec<GroupEntity> =
            NIFI.decode(v["processGroups"].take(), "NiFi's group list")?;
        Ok(entities.into_iter().map(Into::into).collect())
    }

    /// The processors of group `id`, and of the groups under it when `descendants`.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown group.
    pub async fn processors(&self, id: &str, descendants: bool) -> Result<Vec<Processor>> {
        let mut v = self
            .send(
                Call::new(
                    "nifi.get_processors",
                    Method::GET,
                    path(&["process-groups", id, "processors"]),
                )
                .query("includeDescendantGroups", descendants),
            )
            .await?;
        let entities: Vec<ProcessorEntity> =
            NIFI.decode(v["processors"].take(), "NiFi's processor list")?;
        Ok(entities.into_iter().map(Into::into).collect())
    }

    /// Processor `id`.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown processor.
    pub async fn processor(&self, id: &str) -> Result<Processor> {
        let entity: ProcessorEntity = self
            .fetch(
                Call::new("nifi.get_processor", Method::GET, path(&["processors", id])),
                "NiFi's processor",
            )
            .await?;
        Ok(entity.into())
    }

    /// Set processor `id`'s run state, naming the revision just read; read again and
    /// retried once when another client changed it meanwhile.
    ///
    /// # Errors
    /// [`Conflict`](ErrorKind::Conflict) when it changed again, or its state forbids the
    /// change (a disabled processor cannot start); as NiFi answers.
    pub async fn set_processor_state(&self, id: &str, state: ProcessorState) -> Result<Processor> {
        let mut tried = false;
        loop {
            let current = self.processor(id).await?;
            let call = Call::new(
                "nifi.update_run_status",
                Method::PUT,
                path(&["processors", id, "run-status"]),
            )
            .json(json!({
                "revision": {"version": current.revision.version, "clientId": self.inner.client_id},
                "state": state.as_str(),
                "disconnectedNodeAcknowledged": false,
            }));
            match self
                .fetch::<ProcessorEntity>(call, "NiFi's processor")
                .await
            {
                Ok(entity) => return Ok(entity.into()),
                Err(e) if e.kind() == ErrorKind::Conflict && !tried && is_stale(&e) => {
                    tried = true;
                }
                Err(e) => return Err(e.with_context("processor", id)),
            }
        }
    }

    /// Start (`running`) or stop every processor of group `id` and the groups under it.
    ///
    /// # Errors
    /// As NiFi answers.
    pub async fn schedule_group(&self, id: &str, running: bool) -> Result<()> {
        let state = if running { "RUNNING" } else { "STOPPED" };
        let v = self
            .send(
                Call::new(
                    "nifi.schedule_components",
                    Method::PUT,
                    path(&["flow", "process-groups", id]),
                )
                .json(json!({"id": id, "state": state, "disconnectedNodeAcknowledged": false})),
            )
            .await?;
        if v["state"].as_str() == Some(state) {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Protocol,
                format!("NiFi answered {v} when group {id} was set {state}"),
            )
            .with_connector(CONNECTOR))
        }
    }

    /// Wait until group `id` has no thread at work (after it was stopped), at most
    /// `timeout`.
    ///
    /// # Errors
    /// [`Timeout`](ErrorKind::Timeout) when threads are still at work; as NiFi answers.
    pub async fn wait_group_idle(&self, id: &str, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            let group = self.process_group(id).await?;
            if group.status.active_thread_count == 0 {
                return Ok(());
            }
            if started.elapsed() >= timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "group {id} still has {} threads at work after {timeout:?}",
                        group.status.active_thread_count
                    ),
                )
                .with_connector(CONNECTOR)
                .with_hint("a processor is stuck in a task: look at its bulletins"));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The bulletins `query` selects, oldest first.
    ///
    /// # Errors
    /// As NiFi answers.
    pub async fn bulletins(&self, query: &BulletinQuery) -> Result<Vec<Bulletin>> {
        let mut call = Call::new(
            "nifi.bulletin_board",
            Method::GET,
            "flow/bulletin-board".into(),
        );
        if let Some(after) = query.after {
            call = call.query("after", after);
        }
        if let Some(limit) = query.limit {
            call = call.query("limit", limit);
        }
        for (key, value) in [
            ("groupId", &query.group),
            ("sourceName", &query.source),
            ("message", &query.message),
        ] {
            if let Some(v) = value {
                call = call.query(key, v);
            }
        }
        let v = self.send(call).await?;
        v["bulletinBoard"]["bulletins"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| !e["bulletin"].is_null())
            .map(|e| NIFI.decode(e["bulletin"].clone(), "a NiFi bulletin"))
            .collect()
    }

    /// The provenance events `query` selects, newest first: the query is submitted,
    /// polled until NiFi finished it, and deleted whatever happens.
    ///
    /// # Errors
    /// [`Timeout`](ErrorKind::Timeout) when NiFi has not finished within the query's
    /// timeout; as NiFi answers.
    pub async fn provenance(&self, query: &ProvenanceQuery) -> Result<Vec<ProvenanceEvent>> {
        let mut request = json!({
            "maxResults": query.max_results,
            "summarize": true,
            "incrementalResults": false,
        });
        if let Some(component) = &query.component {
            request["searchTerms"] = json!({"ProcessorID": {"value": component, "inverse": false}});
        }
        let submitted = self
            .send(
                Call::new("nifi.submit_provenance", Method::POST, "provenance".into())
                    .json(json!({"provenance": {"request": request}})),
            )
            .await?;
        let id = submitted["provenance"]["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(ErrorKind::Protocol, "NiFi's provenance query has no id")
                    .with_connector(CONNECTOR)
            })?;
        let outcome = self.finish_provenance(&id, submitted, query).await;
        // A query holds server memory until deleted: always delete it.
        let deleted = self
            .send(Call::new(
                "nifi.delete_provenance",
                Method::DELETE,
                path(&["provenance", &id]),
            ))
            .await;
        if let Err(e) = &deleted {
            tracing::warn!(query = %id, error = %e, "a NiFi provenance query was not deleted");
        }
        outcome
    }

    async fn finish_provenance(
        &self,
        id: &str,
        mut answer: Value,
        query: &ProvenanceQuery,
    ) -> Result<Vec<ProvenanceEvent>> {
        let started = Instant::now();
        while answer["provenance"]["finished"] != json!(true) {
            if started.elapsed() >= query.timeout {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "NiFi's provenance query {id} is {}% done after {:?}",
                        answer["provenance"]["percentCompleted"], query.timeout
                    ),
                )
                .with_connector(CONNECTOR)
                .with_hint("narrow the query (a component, fewer results) or wait longer"));
            }
            tokio::time::sleep(query.poll).await;
            answer = self
                .send(Call::new(
                    "nifi.get_provenance",
                    Method::GET,
                    path(&["provenance", id]),
                ))
                .await?;
        }
        NIFI.decode(
            answer["provenance"]["results"]["provenanceEvents"].take(),
            "NiFi's provenance events",
        )
    }

    /// Group `id`'s flow definition (JSON), as NiFi's "Download flow definition" writes
    /// it.
    ///
    /// # Errors
    /// [`NotFound`](ErrorKind::NotFound) for an unknown group.
    pub async fn download_flow(&self, id: &str) -> Result<Value> {
        self.send(Call::new(
            "nifi.download_flow",
            Method::GET,
            path(&["process-groups", id, "download"]),
        ))
        .await
    }

    /// A new group `name` inside group `parent`, made from a flow `definition` (what
    /// [`download_flow`](Self::download_flow) returns).
    ///
    /// # Errors
    /// [`InvalidInput`](ErrorKind::InvalidInput) when NiFi refuses the definition; as
    /// NiFi answers.
    pub async fn upload_flow(
        &self,
        parent: &str,
        name: &str,
        definition: &Value,
    ) -> Result<ProcessGroup> {
        let mut call = Call::new(
            "nifi.upload_flow",
            Method::POST,
            path(&["process-groups", parent, "process-groups", "upload"]),
        );
        call.body = Some(Body::Upload(
            name.to_owned(),
            definition.to_string().into_bytes(),
            self.inner.client_id.clone(),
        ));
        let entity: GroupEntity = self.fetch(call, "NiFi's new process group").await?;
        Ok(entity.into())
    }
}

/// NiFi's refusal of an older revision.
fn is_stale(e: &Error) -> bool {
    e.message().contains("not the most up-to-date revision")
}
