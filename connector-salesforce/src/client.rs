//! The Salesforce REST client: tokens from the auth crate's token manager (refreshed and
//! retried once on `INVALID_SESSION_ID`), the instance checked against the allow-list,
//! the API version discovered, every call through a core `Policy`, every error mapped.
//!
//! ```no_run
//! use std::sync::Arc;
//! use futures::TryStreamExt;
//! use connector_salesforce::client::{ApiVersion, SalesforceClient};
//! use connector_salesforce::soql::{Soql, field};
//! use moodbridge_auth::token_manager::TokenManager;
//!
//! # async fn run(tokens: TokenManager) -> moodbridge_core::Result<()> {
//! let sf = SalesforceClient::builder("salesforce:prod", tokens, "salesforce-prod", "integration-user")
//!     .api_version(ApiVersion::newest_up_to("62.0"))
//!     .connect()
//!     .await?;
//! let q = Soql::select(["Id", "Subject"]).from("Case").filter(field("Status").eq("New")).build()?;
//! let cases: Vec<serde_json::Value> = sf.query(&q).try_collect().await?;
//! # Ok(()) }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::Stream;
use moodbridge_auth::oauth::TokenSet;
use moodbridge_auth::token_manager::TokenManager;
use moodbridge_core::observe::op::salesforce as op;
use moodbridge_core::{Error, ErrorKind, Operation, Policy, Result, RetryConfig};
use reqwest::Method;
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

use crate::error::map_error;
use crate::instance::{InstanceAllowList, join};
use crate::soql::Soql;

/// Which REST API version to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiVersion {
    /// The newest the org offers, not above `max` (if set).
    Newest {
        /// The highest version the host was tested with.
        max: Option<String>,
    },
    /// Exactly this one; connecting fails clearly if the org no longer offers it.
    Pinned(String),
}

impl ApiVersion {
    /// The newest the org offers up to `max`.
    pub fn newest_up_to(max: &str) -> Self {
        ApiVersion::Newest {
            max: Some(max.to_owned()),
        }
    }
}

fn version_number(v: &str) -> Option<(u32, u32)> {
    let (a, b) = v.trim_start_matches('v').split_once('.')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

/// Pick the version to use from those the org offers.
fn choose_version(offered: &[String], wanted: &ApiVersion) -> Result<String> {
    match wanted {
        ApiVersion::Pinned(v) => offered.iter().find(|o| *o == v).cloned().ok_or_else(|| {
            Error::config(format!(
                "API version {v} is pinned, but this org no longer offers it (it offers {} to {})",
                offered.first().map_or("none", String::as_str),
                offered.last().map_or("none", String::as_str)
            ))
            .with_hint("pin a version the org offers, or use ApiVersion::newest_up_to")
        }),
        ApiVersion::Newest { max } => {
            let cap = max.as_deref().and_then(version_number);
            offered
                .iter()
                .filter_map(|o| version_number(o).map(|n| (n, o)))
                .filter(|(n, _)| cap.is_none_or(|c| *n <= c))
                .max_by_key(|(n, _)| *n)
                .map(|(_, o)| o.clone())
                .ok_or_else(|| {
                    Error::config(format!(
                        "the org offers no API version at or below {}",
                        max.as_deref().unwrap_or("any")
                    ))
                })
        }
    }
}

/// The default policy of Salesforce calls: up to 4 attempts with backoff from 250 ms
/// within 60 s (temporary errors only: 5xx, 429, `UNABLE_TO_LOCK_ROW`; never the daily
/// `REQUEST_LIMIT_EXCEEDED`), 2 minutes per attempt.
pub fn default_policy(id: &str) -> Policy {
    Policy::from_config(id.to_owned(), &default_policy_config())
        .unwrap_or_else(|_| Policy::builder(id.to_owned()).build())
}

/// [`default_policy`] as config: what a `salesforce` integration's `policy` table
/// overrides part by part.
pub fn default_policy_config() -> moodbridge_core::PolicyConfig {
    moodbridge_core::PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            max_elapsed: Duration::from_secs(60),
            budget: None,
        }),
        attempt_timeout: Some(Duration::from_secs(120)),
        ..Default::default()
    }
}

/// Builds a [`SalesforceClient`].
pub struct ClientBuilder {
    id: String,
    tokens: TokenManager,
    provider: String,
    principal: String,
    version: ApiVersion,
    allow: InstanceAllowList,
    policy: Option<Policy>,
    roots: Vec<reqwest::Certificate>,
}

impl ClientBuilder {
    /// Also trust the certificate authorities in `pem` (one or more PEM certificates) for
    /// the org's TLS — a TLS-inspecting corporate proxy's CA, or a local test org's
    /// self-signed one. The usual roots stay trusted.
    ///
    /// ```
    /// use connector_salesforce::client::SalesforceClient;
    /// use moodbridge_auth::token_manager::TokenManager;
    ///
    /// let builder = SalesforceClient::builder("salesforce:prod", TokenManager::new(), "salesforce", "ops");
    /// let err = builder.trust_ca_pem(b"not a certificate").err().unwrap();
    /// assert!(err.to_string().contains("PEM"), "{err}");
    /// ```
    pub fn trust_ca_pem(mut self, pem: &[u8]) -> Result<Self> {
        let refused = || {
            Error::invalid_input("the CA to trust holds no PEM certificate")
                .with_hint("pass the CA's certificate as PEM text (-----BEGIN CERTIFICATE-----)")
        };
        let certs =
            reqwest::Certificate::from_pem_bundle(pem).map_err(|e| refused().with_source(e))?;
        if certs.is_empty() {
            return Err(refused());
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// Which API version to use (default: the newest the org offers).
    #[must_use]
    pub fn api_version(mut self, version: ApiVersion) -> Self {
        self.version = version;
        self
    }

    /// Where instances may be (default: Salesforce's domains, https only).
    #[must_use]
    pub fn allow_instances(mut self, allow: InstanceAllowList) -> Self {
        self.allow = allow;
        self
    }

    /// The policy of every call (default: [`default_policy`]).
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }

    /// Get a token, check its instance, and discover the API version.
    pub async fn connect(self) -> Result<SalesforceClient> {
        let usage_gauge =
            metrics::gauge!("moodbridge_salesforce_api_usage_ratio", "platform" => self.id.clone());
        let policy = self.policy.unwrap_or_else(|| default_policy(&self.id));
        let http = http_client(&policy, self.roots)?;
        let base_quota = policy.rate_limiter().map(|l| (l.clone(), l.quota()));
        let mut client = SalesforceClient {
            inner: Arc::new(Inner {
                policy,
                base_quota,
                throttle_tier: std::sync::atomic::AtomicU8::new(0),
                id: self.id,
                http,
                tokens: self.tokens,
                provider: self.provider,
                principal: self.principal,
                allow: self.allow,
                version: String::new(),
                api_used: AtomicU64::new(0),
                api_max: AtomicU64::new(0),
                describes: std::sync::Mutex::new(std::collections::HashMap::new()),
                instance_cache: std::sync::Mutex::new(None),
                usage_gauge,
            }),
        };
        let (_, body) = client
            .send_raw(op::VERSIONS, Method::GET, "/services/data", None, true)
            .await?;
        let offered: Vec<String> = serde_json::from_slice::<Vec<Value>>(&body)
            .map_err(|e| protocol("the version list", e))?
            .iter()
            .filter_map(|v| v["version"].as_str().map(str::to_owned))
            .collect();
        let version = choose_version(&offered, &self.version)?;
        tracing::info!(integration = %client.inner.id, version = %version, "Salesforce API version chosen");
        Arc::get_mut(&mut client.inner)
            .ok_or_else(|| Error::internal("the client was shared before it was connected"))?
            .version = version;
        Ok(client)
    }
}

/// What a call sends.
#[derive(Clone, Copy)]
pub(crate) enum RequestBody<'a> {
    /// Nothing.
    None,
    /// A JSON document.
    Json(&'a Value),
    /// A CSV file, streamed from disk (re-opened for every attempt).
    CsvFile(&'a std::path::Path),
}

impl RequestBody<'_> {
    fn accept(self) -> &'static str {
        "application/json"
    }

    async fn attach(self, request: reqwest::RequestBuilder) -> Result<reqwest::RequestBuilder> {
        Ok(match self {
            RequestBody::None => request,
            RequestBody::Json(v) => request.json(v),
            RequestBody::CsvFile(path) => {
                let file = tokio::fs::File::open(path).await.map_err(|e| {
                    Error::internal("the bulk upload's spool file cannot be read").with_source(e)
                })?;
                let len = file.metadata().await.map(|m| m.len()).ok();
                let mut request = request
                    .header(reqwest::header::CONTENT_TYPE, "text/csv")
                    .body(reqwest::Body::wrap_stream(
                        tokio_util::io::ReaderStream::new(file),
                    ));
                if let Some(len) = len {
                    request = request.header(reqwest::header::CONTENT_LENGTH, len);
                }
                request
            }
        })
    }
}

/// What a call got back: status, the headers the connector reads, and the body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) last_modified: Option<String>,
    /// `Sforce-Locator` (Bulk API 2.0 query results).
    pub(crate) locator: Option<String>,
    pub(crate) body: Bytes,
}

/// The HTTP client: rustls, no redirects (one could carry the bearer token elsewhere),
/// a connect timeout, HTTP/2 flow-control windows sized to the connection (adaptive):
/// with the default fixed windows a page of query results waited on window updates and
/// REST paging ran a third slower than over HTTP/1.1. A call's time limit is the
/// policy's per-attempt timeout — one timer per call; only a policy without one gets a
/// client-level limit instead.
fn http_client(policy: &Policy, roots: Vec<reqwest::Certificate>) -> Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .tls_certs_merge(roots)
        .http2_adaptive_window(true)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("moodbridge-salesforce/", env!("CARGO_PKG_VERSION")));
    if policy.attempt_timeout().is_none() {
        builder = builder.timeout(Duration::from_secs(120));
    }
    builder
        .build()
        .map_err(|e| Error::internal("cannot build the HTTP client").with_source(e))
}

struct Inner {
    id: String,
    http: reqwest::Client,
    tokens: TokenManager,
    provider: String,
    principal: String,
    allow: InstanceAllowList,
    policy: Policy,
    version: String,
    api_used: AtomicU64,
    api_max: AtomicU64,
    /// Describe results by object, with their `Last-Modified`.
    describes: std::sync::Mutex<std::collections::HashMap<String, (String, Arc<Value>)>>,
    /// The policy's rate limiter and its configured quota (the throttle's base).
    base_quota: Option<(
        moodbridge_core::resilience::RateLimiter,
        moodbridge_core::resilience::RateQuota,
    )>,
    /// 0 normal, 1 half rate, 2 quarter rate.
    throttle_tier: std::sync::atomic::AtomicU8,
    /// The last instance URL seen, its checked, parsed form, and its origin as text
    /// (`https://host[:port]`, what paths are appended to).
    instance_cache: std::sync::Mutex<Option<(String, Url, Arc<str>)>>,
    /// The org's API usage share (handle taken at connect: install the metrics recorder
    /// before connecting).
    usage_gauge: metrics::Gauge,
}

/// A Salesforce org's REST API. Cheap to clone.
#[derive(Clone)]
pub struct SalesforceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SalesforceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SalesforceClient")
            .field("id", &self.inner.id)
            .field("version", &self.inner.version)
            .finish_non_exhaustive()
    }
}

fn protocol(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::new(
        ErrorKind::Protocol,
        format!("Salesforce sent {what} in an unexpected shape"),
    )
    .with_connector(crate::error::PLATFORM)
    .with_source(e)
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

impl SalesforceClient {
    /// Start building a client of integration `id` ("salesforce:prod"), whose tokens the
    /// token manager keeps under (`provider`, `principal`).
    pub fn builder(
        id: &str,
        tokens: TokenManager,
        provider: &str,
        principal: &str,
    ) -> ClientBuilder {
        ClientBuilder {
            id: id.to_owned(),
            tokens,
            provider: provider.to_owned(),
            principal: principal.to_owned(),
            version: ApiVersion::Newest { max: None },
            allow: InstanceAllowList::default(),
            policy: None,
            roots: Vec::new(),
        }
    }

    /// The API version in use (`62.0`).
    pub fn api_version(&self) -> &str {
        &self.inner.version
    }

    /// The org's API usage from the last response's `Sforce-Limit-Info`: (used, max).
    pub fn api_usage(&self) -> Option<(u64, u64)> {
        let max = self.inner.api_max.load(Ordering::Relaxed);
        (max > 0).then(|| (self.inner.api_used.load(Ordering::Relaxed), max))
    }

    fn record_limits(&self, header: Option<&reqwest::header::HeaderValue>) {
        // `Sforce-Limit-Info: api-usage=25/15000`
        let Some((used, max)) = header
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(',')
                    .find_map(|p| p.trim().strip_prefix("api-usage="))
            })
            .and_then(|v| v.split_once('/'))
            .and_then(|(u, m)| {
                Some((u.trim().parse::<u64>().ok()?, m.trim().parse::<u64>().ok()?))
            })
        else {
            return;
        };
        self.inner.api_used.store(used, Ordering::Relaxed);
        self.inner.api_max.store(max, Ordering::Relaxed);
        self.inner.usage_gauge.set(used as f64 / max.max(1) as f64);
        self.throttle(used, max);
    }

    /// Slow down before the org runs out: with less than a quarter of the daily API
    /// requests left, the policy's rate limiter runs at half its configured rate; with
    /// less than a tenth, at a quarter. The quota changes only when the tier does.
    fn throttle(&self, used: u64, max: u64) {
        let Some((limiter, base)) = &self.inner.base_quota else {
            return;
        };
        let left = max.saturating_sub(used);
        let tier: u8 = if left * 10 < max {
            2
        } else if left * 4 < max {
            1
        } else {
            0
        };
        if self.inner.throttle_tier.swap(tier, Ordering::Relaxed) == tier {
            return;
        }
        let mut quota = *base;
        quota.rate = (base.rate >> tier).max(1);
        quota.burst = base.burst.map(|b| (b >> tier).max(1));
        if let Err(e) = limiter.set_quota(quota) {
            tracing::warn!(integration = %self.inner.id, error = %e, "could not change the rate limit");
        } else {
            tracing::warn!(integration = %self.inner.id, left, max, rate = quota.rate, "Salesforce API allowance running low: rate limit lowered");
        }
    }

    /// The org's instance origin (`https://acme.my.salesforce.com`), from the current
    /// token (fetched when there is none yet).
    ///
    /// # Errors
    /// The token's.
    pub async fn instance_origin(&self) -> Result<String> {
        let inner = &self.inner;
        let token = inner
            .tokens
            .token(&inner.provider, &inner.principal)
            .await?;
        Ok(self.instance(&token)?.1.to_string())
    }

    /// The policy every call goes through.
    pub fn policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The URL of `target` (a path, or an absolute URL that must stay on the instance)
    /// on the token's instance. A path is appended to the checked origin as text — it
    /// cannot change the host, and reqwest parses the result once.
    fn target_url(&self, token: &TokenSet, target: &str) -> Result<String> {
        let (instance, origin) = self.instance(token)?;
        if target.starts_with('/') && !target.starts_with("//") {
            let mut url = String::with_capacity(origin.len() + target.len());
            url.push_str(&origin);
            url.push_str(target);
            Ok(url)
        } else {
            Ok(join(&instance, target)?.into())
        }
    }

    fn instance(&self, token: &TokenSet) -> Result<(Url, Arc<str>)> {
        let url = token.instance_url.as_deref().ok_or_else(|| {
            Error::new(ErrorKind::Auth, "the token has no instance_url")
                .with_connector(crate::error::PLATFORM)
                .with_hint("use a Salesforce token endpoint, which returns the org's instance_url")
        })?;
        // Parsed and checked once per instance URL, not per call.
        let mut cache = self
            .inner
            .instance_cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((text, parsed, origin)) = cache.as_ref()
            && text == url
        {
            return Ok((parsed.clone(), origin.clone()));
        }
        let parsed = self.inner.allow.check(url)?;
        let origin: Arc<str> = parsed.origin().ascii_serialization().into();
        *cache = Some((url.to_owned(), parsed.clone(), origin.clone()));
        Ok((parsed, origin))
    }

    /// One call: policy outside, token (refreshed and retried once on an expired session)
    /// inside. `target` is a path or a same-instance URL.
    async fn send_raw(
        &self,
        op: &'static str,
        method: Method,
        target: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<(u16, Bytes)> {
        self.send_full(op, method, target, body, idempotent, None)
            .await
            .map(|(status, _, bytes)| (status, bytes))
    }

    /// [`send_raw`](Self::send_raw) with an `If-Modified-Since`, returning the response's
    /// `Last-Modified`.
    async fn send_full(
        &self,
        op: &'static str,
        method: Method,
        target: &str,
        body: Option<&Value>,
        idempotent: bool,
        if_modified_since: Option<&str>,
    ) -> Result<(u16, Option<String>, Bytes)> {
        let body = body.map_or(RequestBody::None, RequestBody::Json);
        self.send(op, method, target, body, idempotent, if_modified_since)
            .await
            .map(|r| (r.status, r.last_modified, r.body))
    }

    /// One call: policy outside, token (refreshed and retried once on an expired
    /// session) inside; the body is rebuilt for every attempt.
    pub(crate) async fn send(
        &self,
        op: &'static str,
        method: Method,
        target: &str,
        body: RequestBody<'_>,
        idempotent: bool,
        if_modified_since: Option<&str>,
    ) -> Result<Reply> {
        self.send_with(
            op,
            method,
            target,
            body,
            idempotent,
            if_modified_since,
            |response: reqwest::Response| async move {
                let status = response.status().as_u16();
                let text = |name: &str| {
                    response
                        .headers()
                        .get(name)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                };
                let (last_modified, locator) = (text("last-modified"), text("sforce-locator"));
                let body = response.bytes().await.map_err(|e| transport(op, &e))?;
                Ok(Reply {
                    status,
                    last_modified,
                    locator,
                    body,
                })
            },
        )
        .await
    }

    /// A `GET` whose answer is written to `path` as it arrives (created or emptied at
    /// every attempt), never held whole in memory.
    pub(crate) async fn download(
        &self,
        op: &'static str,
        target: &str,
        path: &std::path::Path,
    ) -> Result<()> {
        self.send_with(
            op,
            Method::GET,
            target,
            RequestBody::None,
            true,
            None,
            |mut response: reqwest::Response| async move {
                use tokio::io::AsyncWriteExt as _;
                let local = |e: std::io::Error| {
                    Error::unavailable("cannot write a downloaded result to its spool file")
                        .with_hint("check that the temporary directory has space")
                        .with_source(e)
                };
                let mut file = tokio::fs::File::create(path).await.map_err(local)?;
                while let Some(chunk) = response.chunk().await.map_err(|e| transport(op, &e))? {
                    file.write_all(&chunk).await.map_err(local)?;
                }
                file.flush().await.map_err(local)
            },
        )
        .await
    }

    /// One call whose successful (2xx, 304) answer `handle` reads; any other answer is
    /// read here and mapped to an error, scrubbed of the token.
    #[allow(
        clippy::too_many_arguments,
        reason = "the one place every call goes through"
    )]
    async fn send_with<T, H, Fut>(
        &self,
        op: &'static str,
        method: Method,
        target: &str,
        body: RequestBody<'_>,
        idempotent: bool,
        if_modified_since: Option<&str>,
        handle: H,
    ) -> Result<T>
    where
        H: Fn(reqwest::Response) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let inner = &self.inner;
        let mut operation = Operation::new(op);
        if !idempotent {
            operation = operation.non_idempotent();
        }
        let handle = &handle;
        inner
            .policy
            .call_as(operation, || {
                inner
                    .tokens
                    .with_token(&inner.provider, &inner.principal, |token| {
                        let method = method.clone();
                        async move {
                            let url = self.target_url(&token, target)?;
                            let mut request = inner
                                .http
                                .request(method, url)
                                .header(
                                    reqwest::header::AUTHORIZATION,
                                    format!("Bearer {}", token.access_token.expose_secret()),
                                )
                                .header(reqwest::header::ACCEPT, body.accept());
                            request = body.attach(request).await?;
                            if let Some(since) = if_modified_since {
                                request = request.header(reqwest::header::IF_MODIFIED_SINCE, since);
                            }
                            let response = request.send().await.map_err(|e| transport(op, &e))?;
                            let status = response.status().as_u16();
                            self.record_limits(response.headers().get("sforce-limit-info"));
                            if (200..300).contains(&status) || status == 304 {
                                return handle(response).await;
                            }
                            let wait = retry_after(response.headers());
                            let bytes = response.bytes().await.map_err(|e| transport(op, &e))?;
                            // A server echoing the request must not carry the token into
                            // the error (and from there into logs).
                            let secret = token.access_token.expose_secret();
                            let scrubbed = moodbridge_core::redact::Scrubber::new([
                                secret.to_owned(),
                                format!("Bearer {secret}"),
                            ])
                            .scrub_bytes(&bytes);
                            Err(map_error(status, wait, &scrubbed, op))
                        }
                    })
            })
            .await
    }

    fn path(&self, rest: &str) -> String {
        format!("/services/data/v{}{rest}", self.inner.version)
    }

    /// `/{resource}?q=<text>`, or `InvalidInput` — before any request — when the URI
    /// would pass Salesforce's limit on a request's URI and headers (the request would be
    /// refused with HTTP 414 or 431, or cut off on the way).
    fn query_target(&self, resource: &str, op: &'static str, text: &str) -> Result<String> {
        let mut url = Url::parse("http://x/").unwrap_or_else(|_| unreachable!("constant URL"));
        url.query_pairs_mut().append_pair("q", text);
        let target = format!(
            "{}?{}",
            self.path(&format!("/{resource}")),
            url.query().unwrap_or_default()
        );
        let uri = target.len();
        if uri > MAX_URI_BYTES - HEADER_ALLOWANCE {
            return Err(Error::invalid_input(format!(
                "this {resource} request would have a {uri}-byte URI: Salesforce takes at most {MAX_URI_BYTES} bytes of URI and headers together (HTTP 414 or 431 beyond)"
            ))
            .with_hint("split a long IN list into several queries, or run the query as a Bulk API 2.0 query job (bulk_query), whose SOQL travels in the request body")
            .with_connector(crate::error::PLATFORM)
            .with_operation(op));
        }
        Ok(target)
    }

    async fn json(
        &self,
        op: &'static str,
        method: Method,
        target: &str,
        body: Option<&Value>,
        idempotent: bool,
    ) -> Result<Value> {
        let (_, bytes) = self.send_raw(op, method, target, body, idempotent).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&bytes).map_err(|e| protocol(op, e))
    }

    /// Run a SOQL query; records arrive as a stream that fetches the next page
    /// (`nextRecordsUrl`) only when the previous one is consumed, so memory stays flat
    /// however large the result.
    pub fn query(&self, soql: &str) -> impl Stream<Item = Result<Value>> + Send + 'static {
        self.pages("query", soql)
    }

    /// As [`query`](Self::query), including deleted and archived records (`queryAll`).
    pub fn query_all(&self, soql: &str) -> impl Stream<Item = Result<Value>> + Send + 'static {
        self.pages("queryAll", soql)
    }

    /// As [`query`](Self::query), each record deserialized into `T`.
    pub fn query_as<T: DeserializeOwned + Send + 'static>(
        &self,
        soql: &str,
    ) -> impl Stream<Item = Result<T>> + Send + 'static {
        use futures::StreamExt;
        self.query(soql).map(|r| {
            r.and_then(|v| {
                serde_json::from_value(v).map_err(|e| {
                    Error::invalid_input(format!("a queried record does not match the type: {e}"))
                })
            })
        })
    }

    fn pages(
        &self,
        resource: &'static str,
        soql: &str,
    ) -> impl Stream<Item = Result<Value>> + Send + 'static {
        use futures::StreamExt as _;
        let (first, refused) = match self.query_target(resource, op::QUERY, soql) {
            Ok(target) => (Some(target), None),
            Err(e) => (None, Some(Err(e))),
        };
        let client = self.clone();
        futures::stream::iter(refused).chain(futures::stream::try_unfold(
            (VecDeque::<Value>::new(), first),
            move |(mut buffer, mut next)| {
                let client = client.clone();
                async move {
                    loop {
                        if let Some(record) = buffer.pop_front() {
                            return Ok(Some((record, (buffer, next))));
                        }
                        let Some(target) = next.take() else {
                            return Ok(None);
                        };
                        let mut page = client
                            .json(op::QUERY, Method::GET, &target, None, true)
                            .await?;
                        // Taken out of the page, not copied.
                        let Some(Value::Array(records)) = page.get_mut("records").map(Value::take)
                        else {
                            return Err(Error::new(
                                ErrorKind::Protocol,
                                "a query page without records",
                            ));
                        };
                        buffer.extend(records);
                        next = match (&page["done"], page["nextRecordsUrl"].as_str()) {
                            (Value::Bool(false), Some(url)) => Some(url.to_owned()),
                            _ => None,
                        };
                    }
                }
            },
        ))
    }

    /// How many records a `SELECT COUNT() …` query ([`Soql::count`]) matches.
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use connector_salesforce::soql::{Soql, field};
    /// let open = sf.count(&Soql::count().from("Case").filter(field("IsClosed").eq(false)).build()?).await?;
    /// # let _ = open; Ok(()) }
    /// ```
    pub async fn count(&self, soql: &str) -> Result<u64> {
        let target = self.query_target("query", op::QUERY, soql)?;
        let answer = self
            .json(op::QUERY, Method::GET, &target, None, true)
            .await?;
        answer["totalSize"].as_u64().ok_or_else(|| {
            Error::new(ErrorKind::Protocol, "a COUNT() answer without totalSize")
                .with_connector(crate::error::PLATFORM)
        })
    }

    /// Run a SOSL search (see [`Sosl`](crate::soql::Sosl)); the records found, each with
    /// its `attributes.type`.
    pub async fn search(&self, sosl: &str) -> Result<Vec<Value>> {
        let path = self.query_target("search", op::SEARCH, sosl)?;
        let answer = self
            .json(op::SEARCH, Method::GET, &path, None, true)
            .await?;
        Ok(answer["searchRecords"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// Retrieve a record by id (`fields` empty: all fields).
    pub async fn retrieve(&self, object: &str, id: &str, fields: &[&str]) -> Result<Value> {
        check_name(object)?;
        check_id(id)?;
        let mut path = self.path(&format!("/sobjects/{object}/{id}"));
        if !fields.is_empty() {
            path.push_str(&format!("?fields={}", fields.join(",")));
        }
        self.json(op::SOBJECT_RETRIEVE, Method::GET, &path, None, true)
            .await
    }

    /// Retrieve a record by an external id field.
    pub async fn retrieve_by_external_id(
        &self,
        object: &str,
        field: &str,
        value: &str,
    ) -> Result<Value> {
        check_name(object)?;
        check_name(field)?;
        let path = self.path(&format!(
            "/sobjects/{object}/{field}/{}",
            encode_segment(value)
        ));
        self.json(op::SOBJECT_RETRIEVE, Method::GET, &path, None, true)
            .await
    }

    /// Create a record; its id.
    pub async fn create(&self, object: &str, fields: &Value) -> Result<String> {
        check_name(object)?;
        let answer = self
            .json(
                op::SOBJECT_CREATE,
                Method::POST,
                &self.path(&format!("/sobjects/{object}")),
                Some(fields),
                false,
            )
            .await?;
        answer["id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| Error::new(ErrorKind::Protocol, "a create answer without an id"))
    }

    /// Update fields of a record.
    pub async fn update(&self, object: &str, id: &str, fields: &Value) -> Result<()> {
        check_name(object)?;
        check_id(id)?;
        self.send_raw(
            op::SOBJECT_UPDATE,
            Method::PATCH,
            &self.path(&format!("/sobjects/{object}/{id}")),
            Some(fields),
            true,
        )
        .await
        .map(|_| ())
    }

    /// Insert or update by an external id: `(id, created)`.
    pub async fn upsert(
        &self,
        object: &str,
        field: &str,
        value: &str,
        fields: &Value,
    ) -> Result<(String, bool)> {
        check_name(object)?;
        check_name(field)?;
        let path = self.path(&format!(
            "/sobjects/{object}/{field}/{}",
            encode_segment(value)
        ));
        let answer = self
            .json(op::SOBJECT_UPSERT, Method::PATCH, &path, Some(fields), true)
            .await?;
        Ok((
            answer["id"].as_str().unwrap_or_default().to_owned(),
            answer["created"].as_bool().unwrap_or(false),
        ))
    }

    /// Delete a record.
    pub async fn delete(&self, object: &str, id: &str) -> Result<()> {
        check_name(object)?;
        check_id(id)?;
        self.send_raw(
            op::SOBJECT_DELETE,
            Method::DELETE,
            &self.path(&format!("/sobjects/{object}/{id}")),
            None,
            true,
        )
        .await
        .map(|_| ())
    }

    /// Create many records of `object` with sObject Collections, 200 per request (the
    /// platform's limit); one result per record, in order. `all_or_none` applies to
    /// each request of 200.
    pub async fn create_many(
        &self,
        object: &str,
        records: &[Value],
        all_or_none: bool,
    ) -> Result<Vec<RecordResult>> {
        check_name(object)?;
        self.collection(
            object,
            records,
            all_or_none,
            op::COLLECTIONS_CREATE,
            Method::POST,
            self.path("/composite/sobjects"),
            |r| {
                r.remove("Id");
            },
        )
        .await
    }

    /// Update many records (each with its `Id`) of `object`; one result per record.
    pub async fn update_many(
        &self,
        object: &str,
        records: &[Value],
        all_or_none: bool,
    ) -> Result<Vec<RecordResult>> {
        check_name(object)?;
        self.collection(
            object,
            records,
            all_or_none,
            op::COLLECTIONS_UPDATE,
            Method::PATCH,
            self.path("/composite/sobjects"),
            |_| {},
        )
        .await
    }

    /// Upsert many records of `object` by external id `field`; one result per record
    /// (`created` says which were new).
    pub async fn upsert_many(
        &self,
        object: &str,
        field: &str,
        records: &[Value],
        all_or_none: bool,
    ) -> Result<Vec<RecordResult>> {
        check_name(object)?;
        check_name(field)?;
        let path = self.path(&format!("/composite/sobjects/{object}/{field}"));
        self.collection(
            object,
            records,
            all_or_none,
            op::COLLECTIONS_UPSERT,
            Method::PATCH,
            path,
            |_| {},
        )
        .await
    }

    /// Delete many records by id; one result per id.
    pub async fn delete_many(&self, ids: &[&str], all_or_none: bool) -> Result<Vec<RecordResult>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(COLLECTION_LIMIT) {
            for id in chunk {
                check_id(id)?;
            }
            let path = self.path(&format!(
                "/composite/sobjects?ids={}&allOrNone={all_or_none}",
                chunk.join(",")
            ));
            let answer = self
                .json(op::COLLECTIONS_DELETE, Method::DELETE, &path, None, true)
                .await?;
            out.extend(results(answer, chunk.len())?);
        }
        Ok(out)
    }

    /// Retrieve many records of `object` by id, `fields` of each; `None` for ids that do
    /// not exist.
    pub async fn retrieve_many(
        &self,
        object: &str,
        ids: &[&str],
        fields: &[&str],
    ) -> Result<Vec<Option<Value>>> {
        check_name(object)?;
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(COLLECTION_LIMIT) {
            let body = serde_json::json!({"ids": chunk, "fields": fields});
            let path = self.path(&format!("/composite/sobjects/{object}"));
            // A POST that only reads: safe to retry.
            let answer = self
                .json(
                    op::COLLECTIONS_RETRIEVE,
                    Method::POST,
                    &path,
                    Some(&body),
                    true,
                )
                .await?;
            let list = answer.as_array().ok_or_else(|| {
                Error::new(
                    ErrorKind::Protocol,
                    "a collections retrieve answer is not a list",
                )
            })?;
            out.extend(list.iter().map(|v| (!v.is_null()).then(|| v.clone())));
        }
        Ok(out)
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one private step shared by the collection calls"
    )]
    async fn collection(
        &self,
        object: &str,
        records: &[Value],
        all_or_none: bool,
        op: &'static str,
        method: Method,
        path: String,
        prepare: impl Fn(&mut serde_json::Map<String, Value>),
    ) -> Result<Vec<RecordResult>> {
        let mut out = Vec::with_capacity(records.len());
        for chunk in records.chunks(COLLECTION_LIMIT) {
            let typed: Vec<Value> = chunk
                .iter()
                .map(|r| {
                    let mut m = r.as_object().cloned().unwrap_or_default();
                    prepare(&mut m);
                    m.insert("attributes".into(), serde_json::json!({"type": object}));
                    Value::Object(m)
                })
                .collect();
            let body = serde_json::json!({"allOrNone": all_or_none, "records": typed});
            // Creates are not idempotent: a timeout is not retried (the records may exist).
            let idempotent = method != Method::POST;
            let answer = self
                .json(op, method.clone(), &path, Some(&body), idempotent)
                .await?;
            out.extend(results(answer, chunk.len())?);
        }
        Ok(out)
    }

    /// `/composite`: up to 25 subrequests in one call, later ones referring to earlier
    /// results as `@{referenceId.field}`; with `all_or_none`, one failure rolls all back.
    /// One response per subrequest, in order.
    pub async fn composite(
        &self,
        requests: &[Subrequest],
        all_or_none: bool,
    ) -> Result<Vec<SubResponse>> {
        if requests.len() > SUBREQUEST_LIMIT {
            return Err(Error::invalid_input(format!(
                "{} subrequests: a composite request takes at most {SUBREQUEST_LIMIT}",
                requests.len()
            ))
            .with_hint("split the work into several composite requests"));
        }
        let version = self.path("");
        let subs: Vec<Value> = requests
            .iter()
            .map(|r| serde_json::json!({"method": r.method, "url": format!("{version}{}", r.path), "referenceId": r.reference_id, "body": r.body}))
            .collect();
        let body = serde_json::json!({"allOrNone": all_or_none, "compositeRequest": subs});
        let answer = self
            .json(
                op::COMPOSITE,
                Method::POST,
                &self.path("/composite"),
                Some(&body),
                false,
            )
            .await?;
        composite_responses(&answer)
    }

    /// `/composite/batch`: up to 25 independent subrequests in one call (reference ids
    /// are ignored); `halt_on_error` stops at the first failure. `(status, body)` each.
    pub async fn batch(
        &self,
        requests: &[Subrequest],
        halt_on_error: bool,
    ) -> Result<Vec<(u16, Value)>> {
        if requests.len() > SUBREQUEST_LIMIT {
            return Err(Error::invalid_input(format!(
                "{} subrequests: a batch takes at most {SUBREQUEST_LIMIT}",
                requests.len()
            )));
        }
        let version = format!("v{}", self.inner.version);
        let subs: Vec<Value> = requests
            .iter()
            .map(|r| serde_json::json!({"method": r.method, "url": format!("{version}{}", r.path), "richInput": r.body}))
            .collect();
        let body = serde_json::json!({"haltOnError": halt_on_error, "batchRequests": subs});
        let answer = self
            .json(
                op::COMPOSITE_BATCH,
                Method::POST,
                &self.path("/composite/batch"),
                Some(&body),
                false,
            )
            .await?;
        Ok(batch_results(&answer))
    }

    /// `/composite/tree/{object}`: a tree of records (children under their relationship
    /// name, e.g. `"Contacts": {"records": [...]}`, each record with
    /// `attributes.referenceId`) created at once, or — on any error — not at all.
    /// `(referenceId, id)` of each created record.
    pub async fn tree(&self, object: &str, records: &[Value]) -> Result<Vec<(String, String)>> {
        check_name(object)?;
        let body = serde_json::json!({"records": records});
        let answer = self
            .json(
                op::COMPOSITE_TREE,
                Method::POST,
                &self.path(&format!("/composite/tree/{object}")),
                Some(&body),
                false,
            )
            .await?;
        Ok(tree_results(&answer))
    }

    /// `describeGlobal`: every object of the org.
    pub async fn describe_global(&self) -> Result<Value> {
        self.json(
            op::DESCRIBE_GLOBAL,
            Method::GET,
            &self.path("/sobjects"),
            None,
            true,
        )
        .await
    }

    /// Describe `object` (fields, types, keys). Cached: later calls send
    /// `If-Modified-Since` and reuse the cached answer on `304 Not Modified`.
    pub async fn describe(&self, object: &str) -> Result<Arc<Value>> {
        check_name(object)?;
        let cached = self
            .inner
            .describes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(object)
            .cloned();
        let path = self.path(&format!("/sobjects/{object}/describe"));
        let (status, last_modified, bytes) = self
            .send_full(
                op::DESCRIBE,
                Method::GET,
                &path,
                None,
                true,
                cached.as_ref().map(|(lm, _)| lm.as_str()),
            )
            .await?;
        if status == 304
            && let Some((_, value)) = cached
        {
            return Ok(value);
        }
        let value: Arc<Value> =
            Arc::new(serde_json::from_slice(&bytes).map_err(|e| protocol("a describe", e))?);
        if let Some(lm) = last_modified {
            self.inner
                .describes
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(object.to_owned(), (lm, value.clone()));
        }
        Ok(value)
    }

    /// Build `soql` after checking every field it names — selected, filtered, sorted,
    /// through relationship paths — against the org's describes (fetched as needed, and
    /// cached like [`describe`](Self::describe)). Unknown names come back as one
    /// `InvalidInput` error naming each, with the closest existing name as a suggestion;
    /// an unknown object as `InvalidInput` too. Costs one (conditional) describe call per
    /// object the query reaches; [`Soql::build`] alone costs none.
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use connector_salesforce::soql::Soql;
    /// let q = sf.check_query(&Soql::select(["Id", "Account.Name"]).from("Contact")).await?;
    /// # let _ = q; Ok(()) }
    /// ```
    pub async fn check_query(&self, soql: &Soql) -> Result<String> {
        use crate::soql::check::{Outcome, unknown_fields};
        let text = soql.build()?;
        let mut describes: HashMap<String, Arc<Value>> = HashMap::new();
        loop {
            let outcome =
                soql.check_with(&|o: &str| describes.get(&o.to_ascii_lowercase()).map(|d| &**d));
            match outcome {
                Outcome::Valid => return Ok(text),
                Outcome::Unknown(problems) => {
                    return Err(unknown_fields(soql.object(), &problems)
                        .with_platform(self.inner.id.clone()));
                }
                Outcome::NeedDescribe(object) => {
                    let describe = self.describe(&object).await.map_err(|e| {
                        if e.kind() == ErrorKind::NotFound {
                            Error::invalid_input(format!("the org has no sObject {object:?}"))
                                .with_hint("check the object's API name (custom objects end in __c) and that the user may see it")
                                .with_source(e)
                        } else {
                            e
                        }
                    })?;
                    describes.insert(object.to_ascii_lowercase(), describe);
                }
            }
        }
    }

    /// The core catalog of `objects`, from their describes: fields with their types,
    /// primary key `Id`, cursor `SystemModstamp` (incremental reads) when the object has it.
    pub async fn catalog(&self, objects: &[&str]) -> Result<moodbridge_core::Catalog> {
        let mut streams = Vec::with_capacity(objects.len());
        for object in objects {
            streams.push(stream_of(&*self.describe(object).await?)?);
        }
        Ok(moodbridge_core::Catalog::new(streams))
    }

    /// The records of `object` deleted (to the Recycle Bin or for good) from `start` to
    /// `end` (`sObject Get Deleted`): Salesforce ignores seconds, wants `start` more than
    /// a minute before `end` and keeps its delete log 15 days — an older `start` is an
    /// `InvalidInput` error with `error_code` `INVALID_REPLICATION_DATE`. The next
    /// window should start at [`DeletedRecords::latest_covered`].
    ///
    /// ```no_run
    /// # async fn run(sf: connector_salesforce::client::SalesforceClient) -> moodbridge_core::Result<()> {
    /// use std::time::{Duration, SystemTime};
    /// let now = SystemTime::now();
    /// let gone = sf.deleted("Account", now - Duration::from_secs(3_600), now).await?;
    /// for (id, when) in &gone.records {
    ///     println!("{id} deleted at {when:?}");
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn deleted(
        &self,
        object: &str,
        start: std::time::SystemTime,
        end: std::time::SystemTime,
    ) -> Result<DeletedRecords> {
        check_name(object)?;
        let at = |t: std::time::SystemTime| {
            humantime::format_rfc3339_seconds(t)
                .to_string()
                .replace('Z', "+00:00")
                .replace(':', "%3A")
                .replace('+', "%2B")
        };
        let target = self.path(&format!(
            "/sobjects/{object}/deleted/?start={}&end={}",
            at(start),
            at(end)
        ));
        let answer = self
            .json(op::GET_DELETED, Method::GET, &target, None, true)
            .await?;
        deleted_records(&answer)
    }

    /// `GET /limits`.
    pub async fn limits(&self) -> Result<Value> {
        self.json(op::LIMITS, Method::GET, &self.path("/limits"), None, true)
            .await
    }
}

/// A `sObject Get Deleted` answer.
fn deleted_records(answer: &Value) -> Result<DeletedRecords> {
    let time = |v: &Value| v.as_str().and_then(parse_datetime);
    let records = answer["deletedRecords"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| Some((r["id"].as_str()?.to_owned(), time(&r["deletedDate"])?)))
        .collect();
    Ok(DeletedRecords {
        records,
        earliest_available: time(&answer["earliestDateAvailable"]),
        latest_covered: time(&answer["latestDateCovered"]).ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                "Salesforce's getDeleted answer has no latestDateCovered",
            )
            .with_connector(crate::error::PLATFORM)
        })?,
    })
}

/// What [`SalesforceClient::deleted`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeletedRecords {
    /// Each deleted record's id and when it was deleted.
    pub records: Vec<(String, std::time::SystemTime)>,
    /// The oldest time the org's delete log still covers.
    pub earliest_available: Option<std::time::SystemTime>,
    /// The end of the window the answer covers (`end` cut to the minute): where the next
    /// window starts.
    pub latest_covered: std::time::SystemTime,
}

/// Bytes of URI and headers Salesforce takes in one request, together.
pub const MAX_URI_BYTES: usize = 16_384;

/// What the instance's host and the client's own headers may take of
/// [`MAX_URI_BYTES`] (a My Domain host, a bearer token and a few short headers need well
/// under this).
const HEADER_ALLOWANCE: usize = 2_048;

/// Subrequests per composite or batch request (Salesforce's limit).
pub const SUBREQUEST_LIMIT: usize = 25;

/// One subrequest of [`SalesforceClient::composite`] or [`SalesforceClient::batch`]:
/// a method, a path below the API version (`/sobjects/Account`), and a body.
///
/// ```
/// use connector_salesforce::client::Subrequest;
/// let account = Subrequest::post("acct", "/sobjects/Account", serde_json::json!({"Name": "Acme"}));
/// let contact = Subrequest::post("ct", "/sobjects/Contact",
///     serde_json::json!({"LastName": "Doe", "AccountId": "@{acct.id}"}));
/// assert_eq!(contact.reference_id, "ct");
/// # let _ = account;
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Subrequest {
    /// `GET`, `POST`, `PATCH` or `DELETE`.
    pub method: String,
    /// The path below `/services/data/vXX.X`.
    pub path: String,
    /// The name later subrequests use in `@{reference_id.field}`.
    pub reference_id: String,
    /// The body, if any.
    pub body: Option<Value>,
}

impl Subrequest {
    fn new(method: &str, reference_id: &str, path: &str, body: Option<Value>) -> Self {
        Subrequest {
            method: method.to_owned(),
            path: path.to_owned(),
            reference_id: reference_id.to_owned(),
            body,
        }
    }
    /// A `GET`.
    pub fn get(reference_id: &str, path: &str) -> Self {
        Self::new("GET", reference_id, path, None)
    }
    /// A `POST` with `body`.
    pub fn post(reference_id: &str, path: &str, body: Value) -> Self {
        Self::new("POST", reference_id, path, Some(body))
    }
    /// A `PATCH` with `body`.
    pub fn patch(reference_id: &str, path: &str, body: Value) -> Self {
        Self::new("PATCH", reference_id, path, Some(body))
    }
    /// A `DELETE`.
    pub fn delete(reference_id: &str, path: &str) -> Self {
        Self::new("DELETE", reference_id, path, None)
    }
}

/// The response to one composite subrequest.
#[derive(Debug, Clone, PartialEq)]
pub struct SubResponse {
    /// The subrequest's reference id.
    pub reference_id: String,
    /// Its HTTP status.
    pub status: u16,
    /// Its body (Salesforce's error array when it failed).
    pub body: Value,
}

/// `(Remaining, Max)` of the daily API requests in a `/limits` answer (numbers; the
/// answers of early API versions write them as strings).
fn daily_requests(limits: &Value) -> Option<(u64, u64)> {
    let number = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    };
    let daily = &limits["DailyApiRequests"];
    Some((number(&daily["Remaining"])?, number(&daily["Max"])?))
}

/// The subrequest results of a Composite answer (`compositeResponse`), in order.
fn composite_responses(answer: &Value) -> Result<Vec<SubResponse>> {
    let list = answer["compositeResponse"].as_array().ok_or_else(|| {
        Error::new(
            ErrorKind::Protocol,
            "a composite answer without compositeResponse",
        )
        .with_connector(crate::error::PLATFORM)
    })?;
    Ok(list
        .iter()
        .map(|r| SubResponse {
            reference_id: r["referenceId"].as_str().unwrap_or_default().to_owned(),
            status: r["httpStatusCode"]
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .unwrap_or(0),
            body: r["body"].clone(),
        })
        .collect())
}

/// `(statusCode, result)` of each subrequest of a Composite Batch answer.
fn batch_results(answer: &Value) -> Vec<(u16, Value)> {
    answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["statusCode"]
                    .as_u64()
                    .and_then(|c| u16::try_from(c).ok())
                    .unwrap_or(0),
                r["result"].clone(),
            )
        })
        .collect()
}

/// `(referenceId, id)` of each record a successful sObject Tree request created (a
/// failed one is an error answer: see [`crate::error::map_error`]).
fn tree_results(answer: &Value) -> Vec<(String, String)> {
    answer["results"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["referenceId"].as_str().unwrap_or_default().to_owned(),
                r["id"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Records per sObject Collections request (Salesforce's limit).
pub const COLLECTION_LIMIT: usize = 200;

/// The outcome for one record of a collections call.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct RecordResult {
    /// The record's id, when it was written.
    pub id: Option<String>,
    /// Whether it was written.
    pub success: bool,
    /// For upserts: whether it was created (else updated).
    #[serde(default)]
    pub created: Option<bool>,
    /// Why it was not.
    #[serde(default)]
    pub errors: Vec<crate::error::RecordError>,
}

fn results(answer: Value, expected: usize) -> Result<Vec<RecordResult>> {
    let list: Vec<RecordResult> =
        serde_json::from_value(answer).map_err(|e| protocol("a collections answer", e))?;
    if list.len() != expected {
        return Err(Error::new(
            ErrorKind::Protocol,
            format!(
                "Salesforce answered {} results for {expected} records",
                list.len()
            ),
        ));
    }
    Ok(list)
}

/// A describe turned into a stream descriptor.
pub(crate) fn stream_of(describe: &Value) -> Result<moodbridge_core::StreamDescriptor> {
    use moodbridge_core::{FieldDescriptor, FieldType, StreamDescriptor};
    let name = describe["name"]
        .as_str()
        .ok_or_else(|| Error::new(ErrorKind::Protocol, "a describe without a name"))?;
    let mut stream = StreamDescriptor::new(name).primary_key(["Id"]);
    let mut has_modstamp = false;
    for f in describe["fields"].as_array().into_iter().flatten() {
        let Some(field) = f["name"].as_str() else {
            continue;
        };
        has_modstamp |= field == "SystemModstamp";
        let t = match f["type"].as_str().unwrap_or_default() {
            "boolean" => FieldType::Boolean,
            "int" | "long" => FieldType::Integer,
            "double" | "percent" => FieldType::Number,
            "currency" => FieldType::Decimal {
                scale: f["scale"]
                    .as_u64()
                    .and_then(|s| u32::try_from(s).ok())
                    .unwrap_or(2),
            },
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "time" => FieldType::Time,
            "base64" => FieldType::Binary,
            "address" | "location" | "complexvalue" => FieldType::Json,
            "reference" => FieldType::Reference {
                to: f["referenceTo"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect(),
            },
            "id" | "string" | "textarea" | "email" | "phone" | "url" | "picklist"
            | "multipicklist" | "combobox" | "encryptedstring" => FieldType::String,
            other => FieldType::Other {
                name: other.to_owned(),
            },
        };
        let mut d = FieldDescriptor::new(field, t);
        if f["nillable"] == Value::Bool(false) {
            d = d.required();
        }
        stream = stream.field(d);
    }
    if has_modstamp {
        stream = stream.cursor("SystemModstamp");
    }
    Ok(stream)
}

#[async_trait::async_trait]
impl moodbridge_core::PlatformIntegration for SalesforceClient {
    fn id(&self) -> &str {
        &self.inner.id
    }

    fn kind(&self) -> &str {
        "salesforce"
    }

    /// Read, write, incremental (by `SystemModstamp`), SOQL, bulk (Bulk API 2.0) and
    /// change streams (Change Data Capture, PushTopics).
    async fn capabilities(&self) -> Result<moodbridge_core::Capabilities> {
        use moodbridge_core::Capability;
        Ok([
            Capability::Read,
            Capability::Write,
            Capability::Incremental,
            Capability::Query,
            Capability::Bulk,
            Capability::ChangeStream,
        ]
        .into_iter()
        .collect())
    }

    /// `GET /limits`: up when it answers, degraded when 90 % of the daily API requests
    /// are spent, down when it fails.
    async fn health_check(&self) -> moodbridge_core::HealthReport {
        use moodbridge_core::{HealthReport, HealthStatus};
        let started = std::time::Instant::now();
        match self.limits().await {
            Ok(limits) => {
                let (left, max) = daily_requests(&limits).unwrap_or((0, 0));
                let status = if max > 0 && left * 10 < max {
                    HealthStatus::Degraded
                } else {
                    HealthStatus::Up
                };
                HealthReport::new(
                    status,
                    started.elapsed(),
                    format!(
                        "API v{}; {left} of {max} daily API requests left",
                        self.inner.version
                    ),
                )
            }
            Err(e) => HealthReport::from_result::<()>(started.elapsed(), Err(e)),
        }
    }
}

fn transport(op: &str, e: &reqwest::Error) -> Error {
    let kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    // reqwest's Display can include the URL, never the Authorization header.
    Error::new(kind, format!("{op} did not complete: {e}")).with_connector(crate::error::PLATFORM)
}

pub(crate) fn check_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    if matches!(chars.next(), Some(c) if c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{name:?} is not a valid Salesforce API name"
        )))
    }
}

pub(crate) fn check_id(id: &str) -> Result<()> {
    if (id.len() == 15 || id.len() == 18) && id.chars().all(|c| c.is_ascii_alphanumeric()) {
        Ok(())
    } else {
        Err(Error::invalid_input(format!(
            "{id:?} is not a Salesforce id (15 or 18 letters and digits)"
        )))
    }
}

/// A path segment with everything but unreserved characters percent-encoded.
fn encode_segment(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Salesforce's datetimes: `2026-11-20T10:00:00.000+0000` (REST) or `…Z` (bulk CSV).
pub(crate) fn parse_datetime(text: &str) -> Option<std::time::SystemTime> {
    let normal = match text.strip_suffix("+0000") {
        Some(head) => format!("{head}Z"),
        None => text.replace("+00:00", "Z"),
    };
    humantime::parse_rfc3339_weak(&normal).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered() -> Vec<String> {
        ["58.0", "59.0", "60.0", "61.0", "62.0"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn the_newest_version_not_above_the_cap_is_chosen() {
        assert_eq!(
            choose_version(&offered(), &ApiVersion::Newest { max: None }).ok(),
            Some("62.0".into())
        );
        assert_eq!(
            choose_version(&offered(), &ApiVersion::newest_up_to("60.0")).ok(),
            Some("60.0".into())
        );
        assert_eq!(
            choose_version(&offered(), &ApiVersion::Pinned("59.0".into())).ok(),
            Some("59.0".into())
        );
    }

    #[test]
    fn a_pinned_version_that_is_gone_says_so() {
        let err = choose_version(&offered(), &ApiVersion::Pinned("44.0".into())).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(
            err.to_string()
                .contains("no longer offers it (it offers 58.0 to 62.0)"),
            "{err}"
        );
        assert!(choose_version(&offered(), &ApiVersion::newest_up_to("40.0")).is_err());
    }

    #[test]
    fn names_ids_and_segments_cannot_change_the_path() {
        assert!(check_name("Account/../limits").is_err());
        assert!(check_id("001000000000000AAA").is_ok());
        assert!(check_id("../../x").is_err());
        assert_eq!(encode_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }

    /// Salesforce's published example: one record deleted, one refused with `statusCode`
    /// (not `errorCode`) in its error. Every outcome survives, the refused one's code too.
    #[test]
    fn documented_collections_results_parse_with_their_errors() {
        let answer: Value = serde_json::from_str(include_str!(
            "../tests/fixtures/collections-delete-partial.json"
        ))
        .unwrap();
        let list = results(answer, 2).unwrap();
        assert!(list[0].success);
        assert_eq!(list[0].id.as_deref(), Some("001RM000003oLrHYAU"));
        assert!(!list[1].success);
        assert_eq!(list[1].id, None);
        assert_eq!(list[1].errors[0].status_code, "MALFORMED_ID");
        assert_eq!(list[1].errors[0].message, "malformed id 001RM000003oLrB000");
    }

    fn fixture(name: &str) -> Value {
        let dir = std::env::var("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").to_owned());
        let path = format!("{dir}/tests/fixtures/{name}");
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    /// Salesforce's published Composite example: each subrequest's status, reference and
    /// body (an error array when it failed).
    #[test]
    fn documented_composite_answers_parse() {
        let subs = composite_responses(&fixture("composite-response.json")).unwrap();
        assert_eq!(subs.len(), 2);
        assert_eq!(
            (subs[0].reference_id.as_str(), subs[0].status),
            ("refAccount", 201)
        );
        assert_eq!(subs[0].body["id"], "001R00000033I6AIAU");
        assert_eq!(subs[1].status, 400);
        assert_eq!(subs[1].body[0]["errorCode"], "INVALID_EMAIL_ADDRESS");
    }

    #[test]
    fn documented_batch_and_tree_answers_parse() {
        let results = batch_results(&fixture("batch-response.json"));
        assert_eq!(results.len(), 2);
        assert_eq!(results[0], (204, Value::Null));
        assert_eq!(results[1].0, 200);
        assert_eq!(results[1].1["BillingPostalCode"], "94105");
        let created = tree_results(&fixture("tree-success.json"));
        assert_eq!(
            created[..2],
            [
                ("ref1".to_owned(), "001D000000K0fXOIAZ".to_owned()),
                ("ref4".to_owned(), "001D000000K0fXPIAZ".to_owned())
            ]
        );
        assert_eq!(created.len(), 4);
    }

    #[test]
    fn documented_limits_give_the_daily_requests_left() {
        assert_eq!(daily_requests(&fixture("limits.json")), Some((4937, 5000)));
        assert_eq!(
            daily_requests(&fixture("limits-v29.json")),
            Some((4980, 5000))
        );
        assert_eq!(daily_requests(&serde_json::json!({})), None);
    }

    /// Salesforce's published `sObject Get Deleted` example: the record, when it was
    /// deleted, and the window covered.
    #[test]
    fn a_documented_get_deleted_answer_parses() {
        let at = |s| parse_datetime(s).unwrap();
        let found = deleted_records(&fixture("get-deleted.json")).unwrap();
        assert_eq!(
            found.records,
            [(
                "a00D0000008pQRAIA2".to_owned(),
                at("2013-05-07T22:07:19.000+0000")
            )]
        );
        assert_eq!(
            found.earliest_available,
            Some(at("2013-05-03T15:57:00.000+0000"))
        );
        assert_eq!(found.latest_covered, at("2013-05-08T21:20:00.000+0000"));
        assert!(deleted_records(&serde_json::json!({"deletedRecords": []})).is_err());
    }

    /// Salesforce's published describe (its elisions left out): the stream's name, key
    /// and fields; no `SystemModstamp`, so no cursor.
    #[test]
    fn a_documented_describe_becomes_a_stream() {
        let stream = stream_of(&fixture("describe-account.json")).unwrap();
        assert_eq!(stream.name, "Account");
        assert_eq!(stream.primary_key, ["Id"]);
        assert_eq!(stream.fields.len(), 1);
        assert_eq!(stream.fields[0].name, "Id");
        assert_eq!(
            stream.fields[0].field_type,
            moodbridge_core::FieldType::String
        );
        assert_eq!(stream.cursor_field, None);
    }
}
