//! A logged-in Snowflake session: login, session and master tokens (renewed ahead of
//! expiry and on 390112, a new login when the master token is gone), statements with
//! binds, "in progress" answers polled to the end, results streamed chunk by chunk,
//! asynchronous queries, multi-statement requests, cancel, heartbeat and logout.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy};
use moodbridge_core::{Error, ErrorKind, Result};
use reqwest::Method;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use tokio::sync::{Mutex, RwLock};

use crate::PLATFORM;
use crate::bind::{BIND_STAGE_KEY, Bind};
use crate::config::{Credential, SnowflakeConfig, default_policy_config};
use crate::error;
use crate::keypair;
use crate::result::{QueryResult, Rowset};
use crate::stream::{Download, ResultStream};

/// Codes of an answer that is not the result yet: still running, or detached (async).
const IN_PROGRESS: &str = "333333";
const IN_PROGRESS_ASYNC: &str = "333334";

/// Renew the session token when it has less than this left.
const RENEW_AHEAD: Duration = Duration::from_secs(60);

/// Where an asynchronous query is, as `/monitoring/queries/<id>` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueryStatus {
    /// Queued or running (or resuming its warehouse).
    Running,
    /// Finished: its result can be read.
    Success,
    /// Failed with Snowflake's code and message.
    Failed {
        /// Snowflake's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// Cancelled.
    Aborted,
    /// Snowflake does not know the query (yet, or any more).
    NoData,
    /// Another state, by Snowflake's name.
    Other(String),
}

impl QueryStatus {
    /// Whether the query may still change state.
    pub fn is_running(&self) -> bool {
        matches!(self, QueryStatus::Running | QueryStatus::NoData)
    }
}

/// A Snowflake session. See the [crate docs](crate). Cheap to clone: clones share the
/// session; [`tagged`](SnowflakeClient::tagged) clones label their statements.
#[derive(Clone)]
pub struct SnowflakeClient {
    inner: Arc<Inner>,
    tag: Option<Arc<str>>,
}

struct Tokens {
    session: SecretString,
    master: Option<SecretString>,
    expires: Option<Instant>,
    /// Bumped at every new token: a renewal that finds it moved was done by another task.
    generation: u64,
}

struct Inner {
    config: SnowflakeConfig,
    http: reqwest::Client,
    base: String,
    policy: Policy,
    secrets: Secrets,
    tokens: RwLock<Tokens>,
    renewing: Mutex<()>,
    sequence: AtomicU64,
    /// Array binds of at least this many values go through a stage
    /// (`CLIENT_STAGE_ARRAY_BINDING_THRESHOLD` from the login; 0: never).
    bind_threshold: AtomicU64,
    /// Set once a statement changed the session's state (`USE`, `ALTER SESSION`, `SET`,
    /// a transaction left open): a pool does not hand such a session out again.
    changed: AtomicBool,
}

/// Whether `sql` changes what later statements of the session see: `USE …`, `ALTER
/// SESSION`, `SET` / `UNSET` of a variable, or a transaction begun and not ended.
fn changes_session(sql: &str) -> bool {
    let mut open = false;
    let mut statements = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in sql.chars() {
        match c {
            '\'' => {
                quoted = !quoted;
                current.push(c);
            }
            ';' if !quoted => statements.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    statements.push(current);
    for statement in &statements {
        let words: Vec<String> = statement
            .split_whitespace()
            .take(2)
            .map(str::to_ascii_lowercase)
            .collect();
        match words.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            ["use", ..] | ["set", ..] | ["unset", ..] | ["alter", "session"] => return true,
            ["begin", ..] | ["start", "transaction"] => open = true,
            ["commit", ..] | ["rollback", ..] => open = false,
            _ => {}
        }
    }
    open
}

impl fmt::Debug for SnowflakeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeClient")
            .field("config", &self.inner.config)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The `Authorization` header of a token (marked sensitive: never logged).
fn authorization(token: &SecretString) -> Result<HeaderValue> {
    let mut value =
        HeaderValue::from_str(&format!("Snowflake Token=\"{}\"", token.expose_secret())).map_err(
            |_| {
                Error::new(
                    ErrorKind::Protocol,
                    "Snowflake sent a session token that is not a header value",
                )
                .with_connector(PLATFORM)
            },
        )?;
    value.set_sensitive(true);
    Ok(value)
}

/// A successful answer: its `code` (set on "in progress") and `data`.
pub(crate) struct Reply {
    code: Option<String>,
    pub(crate) data: Value,
}

/// The `data` of a Snowflake answer, or its error.
async fn answer(secrets: &Secrets, what: &str, response: reqwest::Response) -> Result<Reply> {
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| error::transport(secrets, what, &e))?;
    if !status.is_success() {
        return Err(error::http(secrets, what, status.as_u16(), &body));
    }
    let parsed: Value = serde_json::from_str(&body).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("Snowflake {what}: the answer is not JSON: {e}"),
        )
        .with_connector(PLATFORM)
    })?;
    let code = parsed["code"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| parsed["data"]["errorCode"].as_str().map(str::to_owned));
    if parsed["success"].as_bool() == Some(true) {
        return Ok(Reply {
            code,
            data: parsed["data"].clone(),
        });
    }
    let state = parsed["data"]["sqlState"].as_str().unwrap_or_default();
    let message = parsed["message"].as_str().unwrap_or("no message");
    Err(error::answered(
        secrets,
        what,
        code.as_deref().unwrap_or_default(),
        state,
        message,
    ))
}

/// A query id as a URL path segment: Snowflake's ids are UUIDs.
fn query_path(query_id: &str) -> Result<&str> {
    if query_id.is_empty()
        || !query_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(
            Error::invalid_input(format!("{query_id:?} is not a Snowflake query id"))
                .with_connector(PLATFORM)
                .with_hint("pass the id a statement returned (a UUID such as 01b2c3d4-…)"),
        );
    }
    Ok(query_id)
}

/// Cancels the statement of `request_id` when dropped armed: the caller gave up on it
/// (a timeout, or its future dropped).
struct CancelOnDrop {
    client: SnowflakeClient,
    sql: String,
    request_id: uuid::Uuid,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let sql = std::mem::take(&mut self.sql);
            let request_id = self.request_id;
            runtime.spawn(async move {
                if let Err(e) = client.abort_request(&sql, request_id).await {
                    tracing::debug!(error = %e, "cancelling an abandoned Snowflake statement");
                }
            });
        }
    }
}

impl SnowflakeClient {
    /// Log in with `config`.
    ///
    /// # Errors
    /// A bad config ([`Config`](ErrorKind::Config)), a refused login
    /// ([`Auth`](ErrorKind::Auth)), and the platform's errors.
    pub async fn login(config: SnowflakeConfig) -> Result<SnowflakeClient> {
        config.check()?;
        let policy = match &config.shared_policy {
            Some(policy) => policy.clone(),
            None => Policy::from_config(
                format!("{PLATFORM}:{}", config.account),
                config.policy.as_ref().unwrap_or(&default_policy_config()),
            )?,
        };
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .map_err(|e| Error::internal(format!("the HTTP client: {e}")))?;
        let secrets = Secrets::new();
        secrets.remember(config.credential.secrets());
        let client = SnowflakeClient {
            inner: Arc::new(Inner {
                base: config.base_url(),
                config,
                http,
                policy,
                secrets,
                tokens: RwLock::new(Tokens {
                    session: SecretString::from(String::new()),
                    master: None,
                    expires: None,
                    generation: 0,
                }),
                renewing: Mutex::new(()),
                sequence: AtomicU64::new(1),
                changed: AtomicBool::new(false),
                bind_threshold: AtomicU64::new(0),
            }),
            tag: None,
        };
        client.authenticate().await?;
        Ok(client)
    }

    /// A handle on the same session whose statements carry `tag` as their `QUERY_TAG`
    /// (the run or job that issued them), for cost and lineage by tag.
    ///
    /// Without one, a statement issued inside a sync run carries the run's tag
    /// ([`RunScope::tag`](moodbridge_core::observe::RunScope::tag),
    /// `moodbridge:<pipeline>:run-<id>`), and any other the session's `QUERY_TAG`.
    ///
    /// ```no_run
    /// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
    /// let run = client.tagged("moodbridge:sync:accounts:run-42");
    /// run.execute("select 1", &[]).await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn tagged(&self, tag: impl Into<String>) -> SnowflakeClient {
        SnowflakeClient {
            inner: self.inner.clone(),
            tag: Some(Arc::from(tag.into())),
        }
    }

    /// Log in (again): new session and master tokens. A managed OAuth token the login
    /// refuses is rejected to its manager, and the login tried once more with a fresh one.
    async fn authenticate(&self) -> Result<()> {
        let Credential::Managed {
            manager,
            provider,
            principal,
        } = &self.inner.config.credential
        else {
            let credential = self.inner.config.credential.current().await?;
            return self.log_in(&credential).await;
        };
        let oauth = |tokens: &moodbridge_auth::oauth::TokenSet| Credential::Token {
            authenticator: "OAUTH".to_owned(),
            token: tokens.access_token.clone(),
        };
        let tokens = manager.token(provider, principal).await?;
        match self.log_in(&oauth(&tokens)).await {
            Err(e) if matches!(e.kind(), ErrorKind::Auth | ErrorKind::AuthExpired) => {
                tracing::info!(provider = %provider, error = %e, "Snowflake refused the OAuth token; fetching a fresh one");
                manager.reject(provider, principal, &tokens);
                let fresh = manager.token(provider, principal).await?;
                self.log_in(&oauth(&fresh)).await
            }
            other => other,
        }
    }

    /// Log in with `credential`.
    async fn log_in(&self, credential: &Credential) -> Result<()> {
        let inner = &self.inner;
        let config = &inner.config;
        let mut url = url::Url::parse(&format!("{}/session/v1/login-request", inner.base))
            .map_err(|e| {
                Error::config(format!("the Snowflake URL: {e}")).with_connector(PLATFORM)
            })?;
        {
            let mut query = url.query_pairs_mut();
            for (name, value) in [
                ("databaseName", &config.database),
                ("schemaName", &config.schema),
                ("warehouse", &config.warehouse),
                ("roleName", &config.role),
            ] {
                if let Some(value) = value {
                    query.append_pair(name, value);
                }
            }
            query.append_pair("requestId", &uuid::Uuid::new_v4().to_string());
        }
        let mut session_parameters = json!({"CLIENT_SESSION_KEEP_ALIVE": false});
        if let Some(tag) = &config.query_tag {
            session_parameters["QUERY_TAG"] = Value::String(tag.clone());
        }
        let mut body = json!({"data": {
            "CLIENT_APP_ID": "MoodBridge",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": config.account,
            "LOGIN_NAME": config.user,
            "CLIENT_ENVIRONMENT": {"APPLICATION": "MoodBridge", "OS": std::env::consts::OS},
            // Some servers (fakesnow) fail a login without session parameters.
            "SESSION_PARAMETERS": session_parameters,
        }});
        inner.secrets.remember(credential.secrets());
        match credential {
            Credential::Stored { .. } | Credential::Managed { .. } => {
                return Err(Error::internal("a stored credential was not read"));
            }
            Credential::Password(password) => {
                body["data"]["PASSWORD"] = Value::String(password.expose_secret().to_owned());
            }
            Credential::KeyPair { pem, passphrase } => {
                let jwt = keypair::token(&config.account, &config.user, pem, passphrase.as_ref())?;
                inner.secrets.remember([jwt.as_str()]);
                body["data"]["AUTHENTICATOR"] = Value::String("SNOWFLAKE_JWT".to_owned());
                body["data"]["TOKEN"] = Value::String(jwt);
            }
            Credential::Token {
                authenticator,
                token,
            } => {
                body["data"]["AUTHENTICATOR"] = Value::String(authenticator.clone());
                body["data"]["TOKEN"] = Value::String(token.expose_secret().to_owned());
            }
        }
        let reply = inner
            .policy
            .call_as(Operation::new("snowflake.login"), || async {
                let response = inner
                    .http
                    .post(url.clone())
                    .header(ACCEPT, "application/json")
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| error::transport(&inner.secrets, "login", &e))?;
                answer(&inner.secrets, "login", response).await
            })
            .await?;
        let data = reply.data;
        let threshold = data["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["name"] == "CLIENT_STAGE_ARRAY_BINDING_THRESHOLD")
            .and_then(|p| {
                p["value"]
                    .as_u64()
                    .or_else(|| p["value"].as_str()?.parse().ok())
            })
            .unwrap_or(0);
        inner.bind_threshold.store(threshold, Ordering::Relaxed);
        let token = data["token"].as_str().ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Snowflake answered the login without a session token",
            )
            .with_connector(PLATFORM)
        })?;
        inner.secrets.remember([token]);
        let master = data["masterToken"].as_str().map(|m| {
            inner.secrets.remember([m]);
            SecretString::from(m.to_owned())
        });
        let mut tokens = inner.tokens.write().await;
        tokens.session = SecretString::from(token.to_owned());
        tokens.master = master;
        tokens.expires = data["validityInSeconds"]
            .as_u64()
            .map(|s| Instant::now() + Duration::from_secs(s));
        tokens.generation += 1;
        Ok(())
    }

    /// New tokens after generation `seen`: renewed by the master token, or a new login
    /// when that is refused (expired, gone) or there is none. Concurrent callers renew
    /// once.
    async fn refresh(&self, seen: u64) -> Result<()> {
        let inner = &self.inner;
        let _one = inner.renewing.lock().await;
        let (master, old) = {
            let tokens = inner.tokens.read().await;
            if tokens.generation != seen {
                return Ok(());
            }
            (tokens.master.clone(), tokens.session.clone())
        };
        let Some(master) = master else {
            return self.authenticate().await;
        };
        match self.renew(&master, &old).await {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::debug!(error = %e, "Snowflake refused to renew the session; logging in again");
                self.authenticate().await
            }
        }
    }

    /// `/session/token-request`: a new session token for the master token.
    async fn renew(&self, master: &SecretString, old: &SecretString) -> Result<()> {
        let inner = &self.inner;
        let url = format!(
            "{}/session/token-request?requestId={}",
            inner.base,
            uuid::Uuid::new_v4()
        );
        let body = json!({"oldSessionToken": old.expose_secret(), "requestType": "RENEW"});
        let header = authorization(master)?;
        let reply = inner
            .policy
            .call_as(Operation::new("snowflake.renew"), || async {
                let response = inner
                    .http
                    .post(&url)
                    .header(AUTHORIZATION, header.clone())
                    .header(ACCEPT, "application/json")
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| error::transport(&inner.secrets, "session renewal", &e))?;
                answer(&inner.secrets, "session renewal", response).await
            })
            .await?;
        let token = reply.data["sessionToken"].as_str().ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Snowflake renewed the session without a session token",
            )
            .with_connector(PLATFORM)
        })?;
        inner.secrets.remember([token]);
        let mut tokens = inner.tokens.write().await;
        tokens.session = SecretString::from(token.to_owned());
        if let Some(master) = reply.data["masterToken"].as_str() {
            inner.secrets.remember([master]);
            tokens.master = Some(SecretString::from(master.to_owned()));
        }
        tokens.expires = reply.data["validityInSecondsST"]
            .as_u64()
            .or_else(|| reply.data["validityInSeconds"].as_u64())
            .map(|s| Instant::now() + Duration::from_secs(s));
        tokens.generation += 1;
        Ok(())
    }

    /// The session token's header and generation, renewed first when about to expire.
    async fn session_token(&self) -> Result<(HeaderValue, u64)> {
        let (expiring, generation) = {
            let tokens = self.inner.tokens.read().await;
            let expiring = tokens
                .expires
                .is_some_and(|at| at.saturating_duration_since(Instant::now()) < RENEW_AHEAD);
            (expiring, tokens.generation)
        };
        if expiring {
            self.refresh(generation).await?;
        }
        let tokens = self.inner.tokens.read().await;
        Ok((authorization(&tokens.session)?, tokens.generation))
    }

    /// A request with the session token, through the policy; renewed and sent once more
    /// when the session expired. `url(retry)` is the URL of attempt `retry` (from 0),
    /// counted across the renewal so a statement keeps one request id.
    async fn authorized(
        &self,
        what: &'static str,
        method: Method,
        url: impl Fn(u32) -> String,
        body: Option<&Value>,
    ) -> Result<Reply> {
        let inner = &self.inner;
        let attempts = AtomicU32::new(0);
        let mut renewed = false;
        loop {
            let (token, generation) = self.session_token().await?;
            let result = inner
                .policy
                .call_as(Operation::new(format!("snowflake.{what}")), || async {
                    let retry = attempts.fetch_add(1, Ordering::Relaxed);
                    let mut request = inner
                        .http
                        .request(method.clone(), url(retry))
                        .header(AUTHORIZATION, token.clone())
                        .header(ACCEPT, "application/snowflake");
                    if let Some(body) = body {
                        request = request.json(body);
                    }
                    let response = request
                        .send()
                        .await
                        .map_err(|e| error::transport(&inner.secrets, what, &e))?;
                    answer(&inner.secrets, what, response).await
                })
                .await;
            match result {
                Err(e) if e.kind() == ErrorKind::AuthExpired && !renewed => {
                    renewed = true;
                    self.refresh(generation).await?;
                }
                other => return other,
            }
        }
    }

    /// Send a statement; the first answer (perhaps "in progress").
    async fn submit_statement(
        &self,
        sql: &str,
        binds: &[Bind],
        async_exec: bool,
        request_id: uuid::Uuid,
        mut parameters: Map<String, Value>,
    ) -> Result<Reply> {
        let lengths: Vec<usize> = binds.iter().filter_map(Bind::rows).collect();
        if lengths.windows(2).any(|w| w[0] != w[1])
            || (!lengths.is_empty() && lengths.len() != binds.len())
        {
            return Err(Error::invalid_input(
                "array binds of different lengths (or mixed with single values)",
            )
            .with_connector(PLATFORM)
            .with_hint("give every placeholder an array of the same length, one element per row"));
        }
        let inner = &self.inner;
        if changes_session(sql) {
            inner.changed.store(true, Ordering::Relaxed);
        }
        let mut bindings = Map::new();
        for (i, bind) in binds.iter().enumerate() {
            bindings.insert((i + 1).to_string(), bind.to_json());
        }
        if let Some(tag) = &self.tag {
            parameters.insert("QUERY_TAG".to_owned(), Value::String(tag.to_string()));
        } else if let Some(scope) = moodbridge_core::observe::RunScope::current() {
            parameters.insert("QUERY_TAG".to_owned(), Value::String(scope.tag()));
        }
        let mut body = json!({
            "sqlText": sql,
            "asyncExec": async_exec,
            "sequenceId": inner.sequence.fetch_add(1, Ordering::Relaxed),
            "querySubmissionTime": now_millis(),
        });
        if !bindings.is_empty() {
            body["bindings"] = Value::Object(bindings);
        }
        if let Some(stage) = parameters.remove(BIND_STAGE_KEY) {
            body["bindStage"] = stage;
        }
        if !parameters.is_empty() {
            body["parameters"] = Value::Object(parameters);
        }
        let base = &inner.base;
        self.authorized(
            "query",
            Method::POST,
            |retry| {
                let mut url = format!("{base}/queries/v1/query-request?requestId={request_id}");
                if retry > 0 {
                    url.push_str(&format!("&retryCount={retry}"));
                }
                url
            },
            Some(&body),
        )
        .await
    }

    /// Poll an "in progress" answer at its result URL until the result (or error) comes.
    async fn follow(&self, mut reply: Reply) -> Result<Reply> {
        let mut pause = Duration::from_millis(50);
        while matches!(reply.code.as_deref(), Some(IN_PROGRESS | IN_PROGRESS_ASYNC)) {
            let path = reply.data["getResultUrl"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| {
                    reply.data["queryId"]
                        .as_str()
                        .map(|id| format!("/queries/{id}/result"))
                })
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::Protocol,
                        "Snowflake said the statement is running but not where to poll",
                    )
                    .with_connector(PLATFORM)
                })?;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
            let url = format!("{}{path}", self.inner.base);
            reply = self
                .authorized("result", Method::GET, |_| url.clone(), None)
                .await?;
        }
        Ok(reply)
    }

    /// A finished answer as a stream, the chunk headers' secrets remembered.
    fn result_stream(&self, data: Value) -> Result<ResultStream> {
        let rowset = Rowset::from_data(data)?;
        Ok(self.stream_of(rowset))
    }

    /// A rowset as a stream whose chunks this client downloads (the chunk headers'
    /// secrets remembered, to be scrubbed from errors).
    fn stream_of(&self, rowset: Rowset) -> ResultStream {
        self.inner
            .secrets
            .remember(rowset.chunk_headers.iter().map(|(_, v)| v.as_str()));
        let client = self.clone();
        let download: Download = Arc::new(move |rowset, index| {
            let client = client.clone();
            Box::pin(async move { client.download_chunk(&rowset, index).await })
        });
        ResultStream::new(download, rowset, self.inner.config.prefetch)
    }

    /// Run `sql` with `binds` for its `?` placeholders, in order, and read the whole
    /// result. With array binds (all of the same length) the statement runs once per
    /// element, in one request. A large result is better read with
    /// [`stream`](SnowflakeClient::stream).
    ///
    /// A request that fails for a temporary reason is sent again with the same
    /// `requestId` and a `retryCount`, so Snowflake runs the statement once; an expired
    /// session is renewed and the statement sent once more; a statement still running
    /// is polled to its end. With a [statement
    /// timeout](crate::SnowflakeConfig::statement_timeout), or when the returned future
    /// is dropped before the answer, the statement is cancelled on the server.
    ///
    /// # Errors
    /// Snowflake's error for the statement, mapped to a kind with the fix (an unknown
    /// table is [`NotFound`](ErrorKind::NotFound), a compile error
    /// [`InvalidInput`](ErrorKind::InvalidInput), a cancelled or timed-out statement
    /// [`Timeout`](ErrorKind::Timeout)); array binds of different lengths
    /// ([`InvalidInput`](ErrorKind::InvalidInput)).
    pub async fn execute(&self, sql: &str, binds: &[Bind]) -> Result<QueryResult> {
        self.stream(sql, binds).await?.collect().await
    }

    /// [`execute`](Self::execute) with named binds: `:name` in the text, the values by
    /// name ([`named`](crate::named) says what counts as a bind; a name used twice is
    /// bound twice).
    ///
    /// ```no_run
    /// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
    /// use connector_snowflake::Bind;
    /// let open = client
    ///     .execute_named(
    ///         "select ID from CASES where OWNER = :owner and (STATUS = :status or REOPENED_BY = :owner)",
    ///         &[("owner", Bind::text("005A")), ("status", Bind::text("Open"))],
    ///     )
    ///     .await?;
    /// # let _ = open; Ok(()) }
    /// ```
    ///
    /// # Errors
    /// A name used but not given, or given but not used
    /// ([`InvalidInput`](moodbridge_core::ErrorKind::InvalidInput), nothing sent); then
    /// as [`execute`](Self::execute).
    pub async fn execute_named(&self, sql: &str, binds: &[(&str, Bind)]) -> Result<QueryResult> {
        let (sql, binds) = crate::named::positional(sql, binds)?;
        self.execute(&sql, &binds).await
    }

    /// Run `sql` like [`execute`](SnowflakeClient::execute) and stream its rows: the
    /// inline rows first, then each chunk, fetched ahead in parallel with bounded memory.
    ///
    /// # Errors
    /// As [`execute`](SnowflakeClient::execute); a chunk's own failure comes from the
    /// stream.
    pub async fn stream(&self, sql: &str, binds: &[Bind]) -> Result<ResultStream> {
        let reply = self.run(sql, binds, Map::new()).await?;
        self.result_stream(reply.data)
    }

    /// The HTTP client (stage transfers use it too).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The secrets to scrub from errors: tokens, and the stage credentials seen.
    pub(crate) fn secrets(&self) -> &Secrets {
        &self.inner.secrets
    }

    /// Array binds of at least this many values are staged (0: never).
    pub(crate) fn bind_threshold(&self) -> u64 {
        self.inner.bind_threshold.load(Ordering::Relaxed)
    }

    /// The account identifier logged in to.
    pub(crate) fn account(&self) -> &str {
        &self.inner.config.account
    }

    /// The policy every request goes through.
    pub(crate) fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// Send a statement and wait for its answer, cancelling it if abandoned.
    pub(crate) async fn run(
        &self,
        sql: &str,
        binds: &[Bind],
        parameters: Map<String, Value>,
    ) -> Result<Reply> {
        let request_id = uuid::Uuid::new_v4();
        let mut guard = CancelOnDrop {
            client: self.clone(),
            sql: sql.to_owned(),
            request_id,
            armed: true,
        };
        let work = async {
            let reply = match self.staged_binds(binds).await {
                Some(stage) => {
                    let mut parameters = parameters;
                    parameters.insert(BIND_STAGE_KEY.to_owned(), Value::String(stage));
                    self.submit_statement(sql, &[], false, request_id, parameters)
                        .await?
                }
                None => {
                    self.submit_statement(sql, binds, false, request_id, parameters)
                        .await?
                }
            };
            self.follow(reply).await
        };
        let outcome = match self.inner.config.statement_timeout {
            Some(limit) => match tokio::time::timeout(limit, work).await {
                Ok(outcome) => outcome,
                Err(_) => {
                    return Err(Error::new(
                        ErrorKind::Timeout,
                        format!("the Snowflake statement ran longer than {limit:?} and was cancelled"),
                    )
                    .with_connector(PLATFORM)
                    .with_hint("raise the statement timeout, or make the statement cheaper (filters, a bigger warehouse)"));
                }
            },
            None => work.await,
        };
        guard.armed = false;
        outcome
    }

    /// Run several `;`-separated statements in one request (Snowflake's multi-statement
    /// execution) and read each one's result, in order. `statements` is how many there
    /// must be (Snowflake refuses another count), 0 for any number.
    ///
    /// ```no_run
    /// # async fn run(client: connector_snowflake::SnowflakeClient) -> moodbridge_core::Result<()> {
    /// let results = client
    ///     .execute_multi("begin; delete from STAGE_ACCOUNT; commit", 3)
    ///     .await?;
    /// assert_eq!(results.len(), 3);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// The first failing statement's error (the ones after it do not run); a statement
    /// count other than `statements` ([`InvalidInput`](ErrorKind::InvalidInput)).
    pub async fn execute_multi(&self, sql: &str, statements: usize) -> Result<Vec<QueryResult>> {
        let mut parameters = Map::new();
        parameters.insert("MULTI_STATEMENT_COUNT".to_owned(), json!(statements));
        let reply = self.run(sql, &[], parameters).await?;
        let rowset = Rowset::from_data(reply.data)?;
        if rowset.result_ids.is_empty() {
            return Ok(vec![self.stream_of(rowset).collect().await?]);
        }
        let mut results = Vec::with_capacity(rowset.result_ids.len());
        for id in &rowset.result_ids {
            results.push(self.query_result(id).await?);
        }
        Ok(results)
    }

    /// Submit `sql` to run in the background (asynchronous execution) and return its
    /// query id at once. Keep the id (in the state store, say): any session of the same
    /// user can read the result later with [`query_result`](SnowflakeClient::query_result),
    /// after a restart too, while Snowflake keeps it (24 hours).
    ///
    /// # Errors
    /// As [`execute`](SnowflakeClient::execute), for errors found before the statement
    /// starts.
    pub async fn submit(&self, sql: &str, binds: &[Bind]) -> Result<String> {
        let reply = self
            .submit_statement(sql, binds, true, uuid::Uuid::new_v4(), Map::new())
            .await?;
        reply.data["queryId"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    "Snowflake accepted an asynchronous statement without a query id",
                )
                .with_connector(PLATFORM)
            })
    }

    /// Where query `query_id` is.
    ///
    /// # Errors
    /// A malformed id ([`InvalidInput`](ErrorKind::InvalidInput)); the platform's
    /// errors.
    pub async fn query_status(&self, query_id: &str) -> Result<QueryStatus> {
        let url = format!(
            "{}/monitoring/queries/{}",
            self.inner.base,
            query_path(query_id)?
        );
        let reply = self
            .authorized("status", Method::GET, |_| url.clone(), None)
            .await?;
        let Some(query) = reply.data["queries"].as_array().and_then(|q| q.first()) else {
            return Ok(QueryStatus::NoData);
        };
        let status = query["status"].as_str().unwrap_or_default();
        Ok(match status {
            "RUNNING"
            | "QUEUED"
            | "RESUMING_WAREHOUSE"
            | "QUEUED_REPAIRING_WAREHOUSE"
            | "BLOCKED"
            | "RESTARTED" => QueryStatus::Running,
            "SUCCESS" => QueryStatus::Success,
            "ABORTED" | "ABORTING" => QueryStatus::Aborted,
            "FAILED_WITH_ERROR" | "FAILED_WITH_INCIDENT" => QueryStatus::Failed {
                code: query["errorCode"]
                    .as_str()
                    .map(str::to_owned)
                    .or_else(|| query["errorCode"].as_i64().map(|c| format!("{c:06}")))
                    .unwrap_or_default(),
                message: self
                    .inner
                    .secrets
                    .scrub(query["errorMessage"].as_str().unwrap_or_default()),
            },
            other => QueryStatus::Other(other.to_owned()),
        })
    }

    /// The result of query `query_id`, waiting for it to finish.
    ///
    /// # Errors
    /// The query's own error; a cancelled query ([`Timeout`](ErrorKind::Timeout)); an
    /// unknown id.
    pub async fn query_result(&self, query_id: &str) -> Result<QueryResult> {
        self.query_stream(query_id).await?.collect().await
    }

    /// The result of query `query_id` as a stream, once it finished.
    ///
    /// # Errors
    /// As [`query_result`](SnowflakeClient::query_result).
    pub async fn query_stream(&self, query_id: &str) -> Result<ResultStream> {
        let url = format!(
            "{}/queries/{}/result",
            self.inner.base,
            query_path(query_id)?
        );
        let reply = self
            .authorized("result", Method::GET, |_| url.clone(), None)
            .await?;
        let reply = self.follow(reply).await?;
        self.result_stream(reply.data)
    }

    /// Cancel query `query_id`; whether it was running.
    ///
    /// # Errors
    /// A malformed id; the platform's errors.
    pub async fn cancel(&self, query_id: &str) -> Result<bool> {
        let url = format!(
            "{}/queries/{}/abort-request",
            self.inner.base,
            query_path(query_id)?
        );
        match self
            .authorized("cancel", Method::POST, |_| url.clone(), None)
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::Timeout => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Cancel the statement sent with `request_id` (`/queries/v1/abort-request`).
    async fn abort_request(&self, sql: &str, request_id: uuid::Uuid) -> Result<()> {
        let url = format!(
            "{}/queries/v1/abort-request?requestId={}",
            self.inner.base,
            uuid::Uuid::new_v4()
        );
        let body = json!({"sqlText": sql, "requestId": request_id.to_string()});
        self.authorized("cancel", Method::POST, |_| url.clone(), Some(&body))
            .await
            .map(|_| ())
    }

    /// Download chunk `index` of `rowset` (an idempotent GET, retried by the policy).
    pub(crate) async fn download_chunk(
        &self,
        rowset: &Rowset,
        index: usize,
    ) -> Result<Vec<arrow_array::RecordBatch>> {
        let inner = &self.inner;
        let chunk = rowset.chunks.get(index).ok_or_else(|| {
            Error::internal(format!(
                "chunk {index} of a result with {}",
                rowset.chunks.len()
            ))
        })?;
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &rowset.chunk_headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                Error::new(
                    ErrorKind::Protocol,
                    "Snowflake sent a chunk header that is not a header name",
                )
                .with_connector(PLATFORM)
            })?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                Error::new(
                    ErrorKind::Protocol,
                    "Snowflake sent a chunk header value that is not a header value",
                )
                .with_connector(PLATFORM)
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        inner
            .policy
            .call_as(Operation::new("snowflake.chunk"), || async {
                let response = inner
                    .http
                    .get(&chunk.url)
                    .headers(headers.clone())
                    .send()
                    .await
                    .map_err(|e| error::transport(&inner.secrets, "result chunk", &e))?;
                let status = response.status();
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| error::transport(&inner.secrets, "result chunk", &e))?;
                if !status.is_success() {
                    return Err(error::http(
                        &inner.secrets,
                        "result chunk",
                        status.as_u16(),
                        &String::from_utf8_lossy(&body),
                    ));
                }
                rowset.decode_chunk(&body, chunk.rows)
            })
            .await
    }

    /// Whether a statement changed this session's state (`USE`, `ALTER SESSION`, `SET`,
    /// or a transaction left open), so that later statements would not see the context
    /// it was opened with. A [`SessionPool`](crate::SessionPool) retires such a session
    /// instead of handing it out again.
    pub fn session_changed(&self) -> bool {
        self.inner.changed.load(Ordering::Relaxed)
    }

    /// Keep the session alive (`/session/heartbeat`).
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn heartbeat(&self) -> Result<()> {
        let url = format!("{}/session/heartbeat", self.inner.base);
        self.authorized("heartbeat", Method::POST, |_| url.clone(), None)
            .await
            .map(|_| ())
    }

    /// Close the session on the server.
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn logout(&self) -> Result<()> {
        let url = format!("{}/session?delete=true", self.inner.base);
        self.authorized("logout", Method::POST, |_| url.clone(), None)
            .await
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::changes_session;

    #[test]
    fn statements_that_change_the_session_are_told_apart() {
        assert!(changes_session("use schema STAGING"));
        assert!(changes_session(
            "select 1; ALTER SESSION SET QUERY_TAG = 'x'"
        ));
        assert!(changes_session("set run = 7"));
        assert!(changes_session("begin; insert into T values (1)"));
        assert!(!changes_session(
            "begin; merge into T using S on T.ID = S.ID when matched then delete; commit"
        ));
        assert!(!changes_session("select 'use; alter session' from T"));
        assert!(!changes_session("alter table T add column C int"));
    }
}
