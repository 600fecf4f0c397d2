//! A logged-in Snowflake session: login, statements with binds, heartbeat, logout.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Operation, Policy};
use moodbridge_core::{Error, ErrorKind, Result};
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::sync::RwLock;

use crate::PLATFORM;
use crate::config::{Credential, SnowflakeConfig, default_policy_config};
use crate::error;
use crate::keypair;
use crate::result::QueryResult;

/// A bind value of a statement's `?` placeholder, typed as Snowflake binds are. An
/// array bind (`texts`, `fixeds`) runs the statement once per element, in one request.
///
/// ```
/// use connector_snowflake::Bind;
/// assert_eq!(Bind::fixed(42).to_json(), serde_json::json!({"type": "FIXED", "value": "42"}));
/// assert_eq!(
///     Bind::texts(["a", "b"]).to_json(),
///     serde_json::json!({"type": "TEXT", "value": ["a", "b"]})
/// );
/// assert_eq!(Bind::null().to_json(), serde_json::json!({"type": "ANY", "value": null}));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Bind {
    kind: &'static str,
    value: Value,
}

impl Bind {
    /// Text (`VARCHAR`).
    pub fn text(value: impl Into<String>) -> Self {
        Bind {
            kind: "TEXT",
            value: Value::String(value.into()),
        }
    }

    /// An integer (`NUMBER(38, 0)`).
    pub fn fixed(value: i64) -> Self {
        Bind {
            kind: "FIXED",
            value: Value::String(value.to_string()),
        }
    }

    /// An exact decimal (`"12.50"`) for a `NUMBER(p, s)`: sent as text, which Snowflake
    /// converts to the column's type without rounding through a float.
    pub fn decimal(value: impl Into<String>) -> Self {
        Bind {
            kind: "TEXT",
            value: Value::String(value.into()),
        }
    }

    /// A float (`FLOAT`).
    pub fn real(value: f64) -> Self {
        Bind {
            kind: "REAL",
            value: Value::String(value.to_string()),
        }
    }

    /// A boolean.
    pub fn boolean(value: bool) -> Self {
        Bind {
            kind: "BOOLEAN",
            value: Value::String(value.to_string()),
        }
    }

    /// A `TIMESTAMP_NTZ`: `at` in UTC, to the nanosecond.
    pub fn timestamp_ntz(at: SystemTime) -> Self {
        let nanos = at
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Bind {
            kind: "TIMESTAMP_NTZ",
            value: Value::String(nanos.to_string()),
        }
    }

    /// SQL NULL.
    pub fn null() -> Self {
        Bind {
            kind: "ANY",
            value: Value::Null,
        }
    }

    /// An array bind of text, `None` for NULL.
    pub fn texts<S: Into<String>>(values: impl IntoIterator<Item = S>) -> Self {
        Self::array("TEXT", values.into_iter().map(|v| Some(v.into())))
    }

    /// An array bind of optional text.
    pub fn optional_texts(values: impl IntoIterator<Item = Option<String>>) -> Self {
        Self::array("TEXT", values)
    }

    /// An array bind of integers.
    pub fn fixeds(values: impl IntoIterator<Item = i64>) -> Self {
        Self::array("FIXED", values.into_iter().map(|v| Some(v.to_string())))
    }

    fn array(kind: &'static str, values: impl IntoIterator<Item = Option<String>>) -> Self {
        Bind {
            kind,
            value: Value::Array(
                values
                    .into_iter()
                    .map(|v| v.map_or(Value::Null, Value::String))
                    .collect(),
            ),
        }
    }

    /// The bind as the query request carries it.
    pub fn to_json(&self) -> Value {
        json!({"type": self.kind, "value": self.value})
    }

    fn rows(&self) -> Option<usize> {
        match &self.value {
            Value::Array(values) => Some(values.len()),
            _ => None,
        }
    }
}

/// A Snowflake session. See the [crate docs](crate). Cheap to clone: clones share the
/// session.
#[derive(Clone)]
pub struct SnowflakeClient {
    inner: Arc<Inner>,
}

struct Inner {
    config: SnowflakeConfig,
    http: reqwest::Client,
    base: String,
    policy: Policy,
    secrets: Secrets,
    token: RwLock<SecretString>,
    sequence: AtomicU64,
}

impl fmt::Debug for SnowflakeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnowflakeClient")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// The `Authorization` header of a session token (marked sensitive: never logged).
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

/// The `data` of a Snowflake answer, or its error.
async fn answer(secrets: &Secrets, what: &str, response: reqwest::Response) -> Result<Value> {
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
    if parsed["success"].as_bool() == Some(true) {
        return Ok(parsed["data"].clone());
    }
    let code = parsed["code"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| parsed["data"]["errorCode"].as_str().map(str::to_owned))
        .unwrap_or_default();
    let state = parsed["data"]["sqlState"].as_str().unwrap_or_default();
    let message = parsed["message"].as_str().unwrap_or("no message");
    Err(error::answered(secrets, what, &code, state, message))
}

impl SnowflakeClient {
    /// Log in with `config`.
    ///
    /// # Errors
    /// A bad config ([`Config`](ErrorKind::Config)), a refused login
    /// ([`Auth`](ErrorKind::Auth)), and the platform's errors.
    pub async fn login(config: SnowflakeConfig) -> Result<SnowflakeClient> {
        config.check()?;
        let policy = Policy::from_config(
            format!("{PLATFORM}:{}", config.account),
            config.policy.as_ref().unwrap_or(&default_policy_config()),
        )?;
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
                token: RwLock::new(SecretString::from(String::new())),
                sequence: AtomicU64::new(1),
            }),
        };
        client.authenticate().await?;
        Ok(client)
    }

    /// Log in (again): a new session token.
    async fn authenticate(&self) -> Result<()> {
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
        let mut body = json!({"data": {
            "CLIENT_APP_ID": "MoodBridge",
            "CLIENT_APP_VERSION": env!("CARGO_PKG_VERSION"),
            "ACCOUNT_NAME": config.account,
            "LOGIN_NAME": config.user,
            "CLIENT_ENVIRONMENT": {"APPLICATION": "MoodBridge", "OS": std::env::consts::OS},
            // Some servers (fakesnow) fail a login without session parameters.
            "SESSION_PARAMETERS": {"CLIENT_SESSION_KEEP_ALIVE": false},
        }});
        match &config.credential {
            Credential::Password(password) => {
                body["data"]["PASSWORD"] = Value::String(password.expose_secret().to_owned());
            }
            Credential::KeyPair { pem, passphrase } => {
                let jwt = keypair::token(&config.account, &config.user, pem, passphrase.as_ref())?;
                inner.secrets.remember([jwt.as_str()]);
                body["data"]["AUTHENTICATOR"] = Value::String("SNOWFLAKE_JWT".to_owned());
                body["data"]["TOKEN"] = Value::String(jwt);
            }
        }
        let data = inner
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
        let token = data["token"].as_str().ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Snowflake answered the login without a session token",
            )
            .with_connector(PLATFORM)
        })?;
        inner.secrets.remember([token]);
        if let Some(master) = data["masterToken"].as_str() {
            inner.secrets.remember([master]);
        }
        *inner.token.write().await = SecretString::from(token.to_owned());
        Ok(())
    }

    /// Run `sql` with `binds` for its `?` placeholders, in order. With array binds (all of
    /// the same length) the statement runs once per element, in one request.
    ///
    /// A request that fails for a temporary reason is sent again with the same
    /// `requestId` and a `retryCount`, so Snowflake runs the statement once; a session
    /// that expired is logged in again and the statement sent once more.
    ///
    /// # Errors
    /// Snowflake's error for the statement, mapped to a kind with the fix (an unknown
    /// table is [`NotFound`](ErrorKind::NotFound), a compile error
    /// [`InvalidInput`](ErrorKind::InvalidInput)); array binds of different lengths
    /// ([`InvalidInput`](ErrorKind::InvalidInput)).
    pub async fn execute(&self, sql: &str, binds: &[Bind]) -> Result<QueryResult> {
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
        match self.query(sql, binds).await {
            Err(e) if e.kind() == ErrorKind::AuthExpired => {
                self.authenticate().await?;
                self.query(sql, binds).await
            }
            other => other,
        }
    }

    async fn query(&self, sql: &str, binds: &[Bind]) -> Result<QueryResult> {
        let inner = &self.inner;
        let request_id = uuid::Uuid::new_v4();
        let retries = AtomicU32::new(0);
        let mut bindings = serde_json::Map::new();
        for (i, bind) in binds.iter().enumerate() {
            bindings.insert((i + 1).to_string(), bind.to_json());
        }
        let mut body = json!({
            "sqlText": sql,
            "asyncExec": false,
            "sequenceId": inner.sequence.fetch_add(1, Ordering::Relaxed),
            "querySubmissionTime": now_millis(),
        });
        if !bindings.is_empty() {
            body["bindings"] = Value::Object(bindings);
        }
        let data = inner
            .policy
            .call_as(Operation::new("snowflake.query"), || async {
                let retry = retries.fetch_add(1, Ordering::Relaxed);
                let mut url = format!(
                    "{}/queries/v1/query-request?requestId={request_id}",
                    inner.base
                );
                if retry > 0 {
                    url.push_str(&format!("&retryCount={retry}"));
                }
                let token = authorization(&*inner.token.read().await)?;
                let response = inner
                    .http
                    .post(url)
                    .header(AUTHORIZATION, token)
                    .header(ACCEPT, "application/snowflake")
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| error::transport(&inner.secrets, "query", &e))?;
                answer(&inner.secrets, "query", response).await
            })
            .await?;
        QueryResult::from_data(data)
    }

    /// Keep the session alive (`/session/heartbeat`).
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn heartbeat(&self) -> Result<()> {
        self.session_call("heartbeat", "/session/heartbeat").await
    }

    /// Close the session on the server.
    ///
    /// # Errors
    /// The platform's errors.
    pub async fn logout(&self) -> Result<()> {
        self.session_call("logout", "/session?delete=true").await
    }

    async fn session_call(&self, what: &'static str, path: &str) -> Result<()> {
        let inner = &self.inner;
        let token = authorization(&*inner.token.read().await)?;
        let response = inner
            .http
            .post(format!("{}{path}", inner.base))
            .header(AUTHORIZATION, token)
            .header(ACCEPT, "application/snowflake")
            .send()
            .await
            .map_err(|e| error::transport(&inner.secrets, what, &e))?;
        answer(&inner.secrets, what, response).await.map(|_| ())
    }
}
