//! Webhook receivers: an [`axum::Router`] that takes events from platforms, checks who
//! sent them before anything else, stores them durably in the [`EventLog`](moodbridge_core::state::EventLog) (through an
//! [`EventWriter`], which group-commits concurrent requests) and only then acknowledges.
//!
//! `POST /webhooks/{source}`, one source per sender, each with its own credentials:
//!
//! - **Standard Webhooks** ([`WebhookSource::signed`]): the `webhook-id`,
//!   `webhook-timestamp` and `webhook-signature` headers, the signature `v1,<base64>` an
//!   HMAC-SHA256 of `id.timestamp.body` under a `whsec_…` secret, the timestamp within
//!   five minutes of now either way. Several secrets may be live at once (rotation: the
//!   old and the new), and the header may carry several signatures; one match is enough.
//!   Comparisons are constant-time.
//! - **Bearer** ([`WebhookSource::bearer`]): `Authorization: Bearer <token>`, for senders
//!   that cannot sign; the event id comes from `webhook-id` or `Idempotency-Key`.
//!
//! `POST /outbound/{source}`: Salesforce Outbound Messages ([`OutboundSource`]), the
//! SOAP 1.1 `notifications` call, read by [`outbound::parse`](crate::outbound::parse)
//! (no DTD, no declared entity, bounded depth, at most 100 notifications). The sending
//! organization must be on the source's allow-list (`403` otherwise). Each notification
//! becomes an event (its `Id` the event id, so Salesforce's retries are duplicates; the
//! sObject's type the event type; its `Id` the partition; the message's `SessionId` is
//! never kept), and the exact `<Ack>true</Ack>` envelope is answered only once all of
//! them are committed. Refusals are SOAP faults with the statuses below; Salesforce
//! retries anything not acknowledged.
//!
//! Answers to webhooks (a JSON body each; none repeats a secret):
//!
//! | status | when |
//! |---|---|
//! | `200` `{"status":"stored","sequence":N}` | stored durably |
//! | `200` `{"status":"duplicate","sequence":N}` | this source sent this id before: acknowledged, not stored again |
//! | `401` | no or a wrong signature or token, a timestamp more than five minutes away |
//! | `400` | a missing event id, a malformed timestamp, a body that is not JSON, a header that counts (content type, credentials, id, timestamp, signature) given twice |
//! | `404` | an unknown source |
//! | `413` | a body over the source's limit (default 1 MiB) |
//! | `415` | a content type other than `application/json` |
//! | `503` | the event log could not store it: the sender should retry |
//!
//! Nothing is stored for any answer but the first two. Each request is counted in
//! `moodbridge_webhooks_total` by `source` and `outcome`.
//!
//! ```no_run
//! use std::sync::Arc;
//! use moodbridge_core::state::{EventWriter, SqliteStateStore};
//! use moodbridge_ops::webhooks::{WebhookReceiver, WebhookSource};
//! use secrecy::SecretString;
//!
//! # async fn run() -> moodbridge_core::Result<()> {
//! let log = Arc::new(SqliteStateStore::open(std::path::Path::new("state.db")).await?);
//! let secret = SecretString::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD");
//! let app = WebhookReceiver::new(EventWriter::spawn(log, 500))
//!     .source(WebhookSource::signed("apex", [secret])?.partition_by("/data/Id"))
//!     .router();
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await
//!     .map_err(|e| moodbridge_core::Error::config("cannot listen").with_source(e))?;
//! axum::serve(listener, app).await
//!     .map_err(|e| moodbridge_core::Error::internal("server stopped").with_source(e))?;
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use moodbridge_core::credential::CredentialStore;
use moodbridge_core::state::{Appended, EventWriter, NewEvent};
use moodbridge_core::{Error, Result};

/// Counter: webhook requests, by `source` and `outcome` (`stored`, `duplicate`,
/// `unauthorized`, `bad_request`, `not_found`, `too_large`, `unsupported_media_type`,
/// `unavailable`).
pub const WEBHOOKS: &str = "moodbridge_webhooks_total";

/// How far a signed timestamp may be from now, either way.
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// A body's default limit.
pub const DEFAULT_MAX_BODY: usize = 1024 * 1024;

/// How a source proves who it is.
enum Auth {
    /// Standard Webhooks signatures under any of these keys (decoded secrets).
    Signed(Vec<SecretBytes>),
    /// Standard Webhooks signatures under the readable versions of a key in a
    /// credential store, read again as they may change.
    Watched(Arc<Watched>),
    /// A bearer token; kept as its SHA-256, compared in constant time.
    Bearer([u8; 32]),
}

/// Key bytes that never reach a `Debug` string.
struct SecretBytes(Vec<u8>);

/// The signing keys of a source, kept from a credential store: read again once they
/// are older than `refresh`, and at once (at most every `MIN_RELOAD`) when a signature
/// matches none of them — the sender may have moved to a version promoted since.
struct Watched {
    name: String,
    store: Arc<dyn CredentialStore>,
    key: String,
    refresh: Duration,
    keys: tokio::sync::RwLock<(Arc<Vec<SecretBytes>>, std::time::Instant)>,
}

/// The shortest time between two reads caused by bad signatures.
const MIN_RELOAD: Duration = Duration::from_secs(1);

impl Watched {
    /// The readable versions of the key, decoded.
    async fn read(name: &str, store: &dyn CredentialStore, key: &str) -> Result<Vec<SecretBytes>> {
        let meta = store
            .list(key)
            .await?
            .into_iter()
            .find(|m| m.key == key)
            .ok_or_else(|| {
                Error::not_found(format!("no secret {key} in the credential store"))
                    .with_hint("store the sender's signing secret under this key")
            })?;
        let mut secrets = Vec::new();
        for version in meta.readable {
            secrets.push(store.get_version(key, &version).await?.value);
        }
        decode_keys(name, secrets)
    }

    /// The keys, read again first when older than `refresh` (a failed read keeps the
    /// ones held, and says so in the log).
    async fn current(&self) -> Arc<Vec<SecretBytes>> {
        let (keys, at) = {
            let held = self.keys.read().await;
            (held.0.clone(), held.1)
        };
        if at.elapsed() < self.refresh {
            return keys;
        }
        self.reload(Duration::ZERO).await.unwrap_or(keys)
    }

    /// Reads the keys again unless they were read less than `min_age` ago; the new keys.
    async fn reload(&self, min_age: Duration) -> Option<Arc<Vec<SecretBytes>>> {
        let mut held = self.keys.write().await;
        if held.1.elapsed() < min_age {
            return None;
        }
        match Self::read(&self.name, &*self.store, &self.key).await {
            Ok(keys) => {
                *held = (Arc::new(keys), std::time::Instant::now());
                Some(held.0.clone())
            }
            Err(e) => {
                tracing::warn!(source = %self.name, error = %e, "webhook signing secrets could not be read again; keeping the ones held");
                held.1 = std::time::Instant::now();
                None
            }
        }
    }
}

/// Decodes `whsec_` secrets; an error names the source and the secret's place, never
/// the secret.
fn decode_keys(
    name: &str,
    secrets: impl IntoIterator<Item = SecretString>,
) -> Result<Vec<SecretBytes>> {
    let mut keys = Vec::new();
    for (i, secret) in secrets.into_iter().enumerate() {
        let text = secret.expose_secret();
        let text = text.strip_prefix("whsec_").unwrap_or(text);
        let key = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| {
                Error::config(format!(
                    "webhook source {name}: secret {} is not a whsec_ secret (base64 after the prefix)",
                    i + 1
                ))
                .with_hint("copy the signing secret exactly as the sender shows it")
            })?;
        keys.push(SecretBytes(key));
    }
    if keys.is_empty() {
        return Err(
            Error::config(format!("webhook source {name} has no secret"))
                .with_hint("give the sender's signing secret (whsec_…)"),
        );
    }
    Ok(keys)
}

/// One sender of webhooks: its name (the path segment and the events' source), how it
/// authenticates, and how its events are read.
pub struct WebhookSource {
    name: String,
    auth: Auth,
    max_body: usize,
    partition: Option<String>,
}

impl std::fmt::Debug for WebhookSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match &self.auth {
            Auth::Signed(keys) => format!("signed ({} secrets)", keys.len()),
            Auth::Watched(w) => {
                format!("signed (secrets of {}, read every {:?})", w.key, w.refresh)
            }
            Auth::Bearer(_) => "bearer".to_owned(),
        };
        f.debug_struct("WebhookSource")
            .field("name", &self.name)
            .field("auth", &auth)
            .field("max_body", &self.max_body)
            .field("partition", &self.partition)
            .finish()
    }
}

impl WebhookSource {
    /// A source that signs as Standard Webhooks does, with any of `secrets` (`whsec_`
    /// and the key in base64; several during a rotation). A secret that is not base64,
    /// or no secret at all, is a [`Config`](moodbridge_core::ErrorKind::Config) error
    /// that names the source, never the secret.
    ///
    /// ```
    /// use moodbridge_ops::webhooks::WebhookSource;
    /// use secrecy::SecretString;
    /// let ok = WebhookSource::signed("apex", [SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]);
    /// assert!(ok.is_ok());
    /// let err = WebhookSource::signed("apex", [SecretString::from("whsec_not base64!")]).unwrap_err();
    /// assert!(err.to_string().contains("apex") && !err.to_string().contains("not base64"));
    /// ```
    pub fn signed(
        name: impl Into<String>,
        secrets: impl IntoIterator<Item = SecretString>,
    ) -> Result<Self> {
        let name = name.into();
        check_name(&name)?;
        let keys = decode_keys(&name, secrets)?;
        Ok(Self::with_auth(name, Auth::Signed(keys)))
    }

    /// As [`signed`](Self::signed), with every readable version of `key` in `store`:
    /// during a rotation the old and the new secret are both accepted, until the old
    /// version is retired.
    pub async fn signed_from_store(
        name: impl Into<String>,
        store: &dyn CredentialStore,
        key: &str,
    ) -> Result<Self> {
        let name = name.into();
        check_name(&name)?;
        let keys = Watched::read(&name, store, key).await?;
        Ok(Self::with_auth(name, Auth::Signed(keys)))
    }

    /// As [`signed_from_store`](Self::signed_from_store), with the versions read again
    /// while the receiver runs: every `refresh`, and at once (at most every second) when
    /// a signature matches none of the keys held. A secret rotated in the store
    /// ([`moodbridge_core::rotation`]) is accepted as soon as the sender signs with it,
    /// and a retired version is refused from the next read on — no restart.
    ///
    /// # Errors
    /// The key missing from the store, or a version that is not a `whsec_` secret.
    pub async fn signed_watching(
        name: impl Into<String>,
        store: Arc<dyn CredentialStore>,
        key: &str,
        refresh: Duration,
    ) -> Result<Self> {
        let name = name.into();
        check_name(&name)?;
        let keys = Watched::read(&name, &*store, key).await?;
        let watched = Watched {
            name: name.clone(),
            store,
            key: key.to_owned(),
            refresh,
            keys: tokio::sync::RwLock::new((Arc::new(keys), std::time::Instant::now())),
        };
        Ok(Self::with_auth(name, Auth::Watched(Arc::new(watched))))
    }

    /// A source that sends `Authorization: Bearer <token>`.
    ///
    /// ```
    /// use moodbridge_ops::webhooks::WebhookSource;
    /// let s = WebhookSource::bearer("legacy-crm", "s3cr3t-token".into()).unwrap();
    /// assert!(!format!("{s:?}").contains("s3cr3t"));
    /// ```
    pub fn bearer(name: impl Into<String>, token: SecretString) -> Result<Self> {
        let name = name.into();
        check_name(&name)?;
        if token.expose_secret().is_empty() {
            return Err(
                Error::config(format!("webhook source {name} has an empty token"))
                    .with_hint("give the token the sender puts after `Bearer `"),
            );
        }
        let digest: [u8; 32] = Sha256::digest(token.expose_secret().as_bytes()).into();
        Ok(Self::with_auth(name, Auth::Bearer(digest)))
    }

    fn with_auth(name: String, auth: Auth) -> Self {
        WebhookSource {
            name,
            auth,
            max_body: DEFAULT_MAX_BODY,
            partition: None,
        }
    }

    /// Refuse bodies over `bytes` (`413`); default [`DEFAULT_MAX_BODY`].
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Order the source's events by the value at this JSON pointer (`/data/Id`): events
    /// of one record keep their order.
    pub fn partition_by(mut self, pointer: impl Into<String>) -> Self {
        self.partition = Some(pointer.into());
        self
    }

    /// The source's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::config(format!(
            "webhook source name {name:?} cannot be a path segment"
        ))
        .with_hint("use letters, digits, '-', '_' and '.'"))
    }
}

/// The receiver: its sources and the writer its events go through.
#[derive(Debug)]
pub struct WebhookReceiver {
    sources: HashMap<String, Arc<WebhookSource>>,
    outbound: HashMap<String, Arc<OutboundSource>>,
    writer: EventWriter,
}

impl WebhookReceiver {
    /// A receiver storing through `writer`, with no source yet.
    pub fn new(writer: EventWriter) -> Self {
        WebhookReceiver {
            sources: HashMap::new(),
            outbound: HashMap::new(),
            writer,
        }
    }

    /// Add (or replace) a source.
    pub fn source(mut self, source: WebhookSource) -> Self {
        self.sources.insert(source.name.clone(), Arc::new(source));
        self
    }

    /// Add (or replace) a source of Salesforce Outbound Messages.
    pub fn outbound(mut self, source: OutboundSource) -> Self {
        self.outbound.insert(source.name.clone(), Arc::new(source));
        self
    }

    /// The router: `POST /webhooks/{source}` and `POST /outbound/{source}`. Mount it, or
    /// merge it with the ops router.
    pub fn router(self) -> Router {
        Router::new()
            .route("/webhooks/{source}", post(receive))
            .route("/outbound/{source}", post(receive_outbound))
            .with_state(Arc::new(self))
    }
}

/// A refusal: its status, what the metric calls it, and what the sender is told.
struct Refusal(StatusCode, &'static str, String);

impl Refusal {
    fn new(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Self {
        Refusal(status, outcome, message.into())
    }
}

async fn receive(
    State(receiver): State<Arc<WebhookReceiver>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(src) = receiver.sources.get(&source).cloned() else {
        count("unknown", "not_found");
        return json_response(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "no webhook source of that name"}),
        );
    };
    match accept(&receiver, &src, &headers, body).await {
        Ok(appended) => {
            let (status, sequence) = match appended {
                Appended::Stored(s) => ("stored", s),
                Appended::Duplicate(s) => ("duplicate", s),
            };
            count(&src.name, status);
            json_response(
                StatusCode::OK,
                serde_json::json!({"status": status, "sequence": sequence}),
            )
        }
        Err(Refusal(status, outcome, message)) => {
            count(&src.name, outcome);
            tracing::debug!(source = %src.name, %status, reason = %message, "webhook refused");
            json_response(status, serde_json::json!({"error": message}))
        }
    }
}

fn count(source: &str, outcome: &'static str) {
    metrics::counter!(WEBHOOKS, "source" => source.to_owned(), "outcome" => outcome).increment(1);
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Check, read and store one request; the event's outcome in the log.
async fn accept(
    receiver: &WebhookReceiver,
    src: &WebhookSource,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<Appended, Refusal> {
    for name in [
        header::CONTENT_TYPE.as_str(),
        header::AUTHORIZATION.as_str(),
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "idempotency-key",
    ] {
        if headers.get_all(name).iter().nth(1).is_some() {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("the {name} header is given more than once"),
            ));
        }
    }
    let body = read_body(headers, body, "application/json", src.max_body).await?;
    let id = match &src.auth {
        Auth::Signed(keys) => verify_signed(keys, headers, &body, SystemTime::now())?,
        Auth::Watched(w) => {
            let keys = w.current().await;
            match verify_signed(&keys, headers, &body, SystemTime::now()) {
                Ok(id) => id,
                Err(refusal) => match w.reload(MIN_RELOAD).await {
                    Some(keys) => verify_signed(&keys, headers, &body, SystemTime::now())?,
                    None => return Err(refusal),
                },
            }
        }
        Auth::Bearer(digest) => verify_bearer(digest, headers)?,
    };
    let text = std::str::from_utf8(&body).map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the body is not UTF-8",
        )
    })?;
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("the body is not JSON: {e}"),
        )
    })?;
    let event_type = value
        .get("type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("webhook");
    let mut event = NewEvent::new(&src.name, id, event_type, text);
    if let Some(pointer) = &src.partition {
        match value.pointer(pointer) {
            Some(serde_json::Value::String(s)) => event = event.partition(s.clone()),
            Some(v @ (serde_json::Value::Number(_) | serde_json::Value::Bool(_))) => {
                event = event.partition(v.to_string());
            }
            _ => {}
        }
    }
    let out = receiver.writer.append(vec![event]).await.map_err(|e| {
        tracing::warn!(source = %src.name, error = %e, "a webhook could not be stored");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event could not be stored; send it again",
        )
    })?;
    out.first().copied().ok_or_else(|| {
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the event could not be stored; send it again",
        )
    })
}

/// A Salesforce org that sends Outbound Messages: its name (the path segment and the
/// events' source) and the organizations allowed to send to it.
#[derive(Debug, Clone)]
pub struct OutboundSource {
    name: String,
    /// The allowed organizations, by the 15-character form of their ids.
    orgs: Vec<String>,
    max_body: usize,
}

impl OutboundSource {
    /// A source accepting messages from the organizations `orgs` (15- or 18-character
    /// ids); none is a [`Config`](moodbridge_core::ErrorKind::Config) error.
    ///
    /// ```
    /// use moodbridge_ops::webhooks::OutboundSource;
    /// assert!(OutboundSource::new("prod-org", ["00D5e000000KQ2eEAG"]).is_ok());
    /// assert!(OutboundSource::new("prod-org", Vec::<String>::new()).is_err());
    /// ```
    pub fn new(
        name: impl Into<String>,
        orgs: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Self> {
        let name = name.into();
        check_name(&name)?;
        let mut allowed = Vec::new();
        for org in orgs {
            let org: String = org.into();
            let org = org.trim();
            if !(org.len() == 15 || org.len() == 18)
                || !org.chars().all(|c| c.is_ascii_alphanumeric())
            {
                return Err(Error::config(format!(
                    "outbound message source {name}: {org:?} is not an organization id"
                ))
                .with_hint("give the 15- or 18-character id from Setup → Company Information"));
            }
            allowed.push(org[..15].to_owned());
        }
        if allowed.is_empty() {
            return Err(Error::config(format!(
                "outbound message source {name} allows no organization"
            ))
            .with_hint("list the organization ids that may send to it"));
        }
        Ok(OutboundSource {
            name,
            orgs: allowed,
            max_body: DEFAULT_MAX_BODY,
        })
    }

    /// Refuse bodies over `bytes` (`413`); default [`DEFAULT_MAX_BODY`].
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    fn allows(&self, org: &str) -> bool {
        org.len() >= 15 && self.orgs.iter().any(|o| o.as_str() == &org[..15])
    }
}

/// A SOAP 1.1 fault from the receiver (the client's fault unless `server`).
fn soap_fault(status: StatusCode, server: bool, message: &str) -> Response {
    let code = if server {
        "soapenv:Server"
    } else {
        "soapenv:Client"
    };
    let body = format!(
        concat!(
            r#"<?xml version="1.0" encoding="UTF-8"?>"#,
            r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
            r#"<soapenv:Body><soapenv:Fault><faultcode>{}</faultcode><faultstring>{}</faultstring>"#,
            r#"</soapenv:Fault></soapenv:Body></soapenv:Envelope>"#
        ),
        code,
        quick_xml::escape::escape(message)
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn receive_outbound(
    State(receiver): State<Arc<WebhookReceiver>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(src) = receiver.outbound.get(&source).cloned() else {
        count("unknown", "not_found");
        return soap_fault(
            StatusCode::NOT_FOUND,
            false,
            "no outbound message source of that name",
        );
    };
    match accept_outbound(&receiver, &src, &headers, body).await {
        Ok(stored) => {
            count(&src.name, if stored { "stored" } else { "duplicate" });
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "text/xml; charset=utf-8")],
                crate::outbound::ACK,
            )
                .into_response()
        }
        Err(Refusal(status, outcome, message)) => {
            count(&src.name, outcome);
            tracing::debug!(source = %src.name, %status, reason = %message, "outbound message refused");
            soap_fault(status, status.is_server_error(), &message)
        }
    }
}

/// Check, read and store one outbound message; whether any notification was new.
async fn accept_outbound(
    receiver: &WebhookReceiver,
    src: &OutboundSource,
    headers: &HeaderMap,
    body: Body,
) -> std::result::Result<bool, Refusal> {
    let body = read_body(headers, body, "text/xml", src.max_body).await?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the message is not UTF-8",
        )
    })?;
    let message = crate::outbound::parse(text)
        .map_err(|e| Refusal::new(StatusCode::BAD_REQUEST, "bad_request", e.0))?;
    if !src.allows(&message.organization_id) {
        return Err(Refusal::new(
            StatusCode::FORBIDDEN,
            "unauthorized",
            "the sending organization is not allowed for this source",
        ));
    }
    let events: Vec<NewEvent> = message
        .notifications
        .iter()
        .map(|n| {
            let body = serde_json::json!({
                "organizationId": message.organization_id,
                "actionId": message.action_id,
                "sObject": n.sobject_json(),
            });
            let event = NewEvent::new(&src.name, &n.id, &n.sobject_type, body.to_string());
            match n.fields.get("Id").and_then(serde_json::Value::as_str) {
                Some(id) => event.partition(id),
                None => event,
            }
        })
        .collect();
    let out = receiver.writer.append(events).await.map_err(|e| {
        tracing::warn!(source = %src.name, error = %e, "an outbound message could not be stored");
        Refusal::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the message could not be stored; it will be sent again",
        )
    })?;
    Ok(out.iter().any(|a| matches!(a, Appended::Stored(_))))
}

/// The body, when the content type is `content_type` and the body is within `max`
/// bytes.
async fn read_body(
    headers: &HeaderMap,
    body: Body,
    content_type: &str,
    max: usize,
) -> std::result::Result<axum::body::Bytes, Refusal> {
    let fits = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|t| t.trim().eq_ignore_ascii_case(content_type));
    if !fits {
        return Err(Refusal::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send it as Content-Type: {content_type}"),
        ));
    }
    axum::body::to_bytes(body, max).await.map_err(|_| {
        Refusal::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("the body is over this source's limit of {max} bytes"),
        )
    })
}

fn unauthorized(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Check a Standard Webhooks signature at time `now`; the event id.
fn verify_signed(
    keys: &[SecretBytes],
    headers: &HeaderMap,
    body: &[u8],
    now: SystemTime,
) -> std::result::Result<String, Refusal> {
    let id = header_text(headers, "webhook-id")
        .filter(|id| !id.is_empty())
        .ok_or_else(|| unauthorized("the webhook-id header is missing"))?;
    let stamp = header_text(headers, "webhook-timestamp")
        .ok_or_else(|| unauthorized("the webhook-timestamp header is missing"))?;
    let signatures = header_text(headers, "webhook-signature")
        .ok_or_else(|| unauthorized("the webhook-signature header is missing"))?;
    let seconds: i64 = stamp.trim().parse().map_err(|_| {
        Refusal::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "webhook-timestamp is not whole seconds since 1970",
        )
    })?;
    let now_s = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let tolerance = i64::try_from(TOLERANCE.as_secs()).unwrap_or(300);
    if now_s.saturating_sub(seconds) > tolerance {
        return Err(unauthorized(
            "webhook-timestamp is more than five minutes old (a replay, or a sender's clock off)",
        ));
    }
    if seconds.saturating_sub(now_s) > tolerance {
        return Err(unauthorized(
            "webhook-timestamp is more than five minutes ahead (the sender's clock is off)",
        ));
    }
    let candidates: Vec<Vec<u8>> = signatures
        .split(' ')
        .filter_map(|s| s.split_once(','))
        .filter(|(version, _)| *version == "v1")
        .filter_map(|(_, sig)| base64::engine::general_purpose::STANDARD.decode(sig).ok())
        .collect();
    if candidates.is_empty() {
        return Err(unauthorized(
            "webhook-signature holds no v1 signature (expected `v1,<base64>`)",
        ));
    }
    for key in keys {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&key.0) else {
            continue;
        };
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(stamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        // Constant-time comparison.
        if candidates
            .iter()
            .any(|c| mac.clone().verify_slice(c).is_ok())
        {
            return Ok(id.to_owned());
        }
    }
    Err(unauthorized(
        "no signature matches (wrong secret, or an altered body)",
    ))
}

/// Check a bearer token; the event id from `webhook-id` or `Idempotency-Key`.
fn verify_bearer(digest: &[u8; 32], headers: &HeaderMap) -> std::result::Result<String, Refusal> {
    let token = header_text(headers, header::AUTHORIZATION.as_str())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("the Authorization: Bearer header is missing"))?;
    let given: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
    if !bool::from(given.ct_eq(digest)) {
        return Err(unauthorized("the bearer token is wrong"));
    }
    header_text(headers, "webhook-id")
        .or_else(|| header_text(headers, "idempotency-key"))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| {
            Refusal::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "no event id: send webhook-id or Idempotency-Key",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(id: &str, stamp: &str, signature: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("webhook-id", id),
            ("webhook-timestamp", stamp),
            ("webhook-signature", signature),
        ] {
            h.insert(k, v.parse().unwrap_or_else(|e| panic!("{e}")));
        }
        h
    }

    /// The signature example published with the Standard Webhooks reference library.
    #[test]
    fn the_published_example_verifies_at_its_time_and_not_after() {
        let source = WebhookSource::signed(
            "s",
            [SecretString::from("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD")],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let Auth::Signed(keys) = &source.auth else {
            panic!("signed")
        };
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let h = headers(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        );
        let at = UNIX_EPOCH + Duration::from_secs(1_649_367_553);
        let id = verify_signed(keys, &h, body, at).unwrap_or_else(|r| panic!("{}", r.2));
        assert_eq!(id, "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk");
        // An altered body, or the same request six minutes later, is refused.
        assert!(verify_signed(keys, &h, b"{}", at).is_err());
        assert!(verify_signed(keys, &h, body, at + Duration::from_secs(360)).is_err());
        // One good signature among others is enough.
        let h = headers(
            "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk",
            "1649367553",
            "v1,R3PTzyfHASBKHH98a7yexTwaJ4yNIcGhFQc1yuN+BPU= v2,xyz v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=",
        );
        assert!(verify_signed(keys, &h, body, at).is_ok());
    }

    fn keys() -> Vec<SecretBytes> {
        let source = WebhookSource::signed(
            "s",
            [SecretString::from("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        match source.auth {
            Auth::Signed(keys) => keys,
            Auth::Watched(_) | Auth::Bearer(_) => panic!("signed"),
        }
    }

    fn sign(key: &[u8], id: &str, stamp: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(key).unwrap_or_else(|e| panic!("{e}"));
        mac.update(format!("{id}.{stamp}.").as_bytes());
        mac.update(body);
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x7768_6b73),
            cases: 256,
            ..Default::default()
        })]

        /// Whatever the headers and body, the verifier never panics, and accepts only a
        /// signature made with the key over exactly this id, timestamp and body.
        #[test]
        fn only_a_true_signature_is_accepted(
            id in "[ -~]{0,24}",
            offset in -400i64..400,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
            noise in "[ -~]{0,80}",
            flip in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let keys = keys();
            let now = UNIX_EPOCH + Duration::from_secs(1_765_000_000);
            let stamp = (1_765_000_000 + offset).to_string();
            let Ok(h) = std::panic::catch_unwind(|| headers(&id, &stamp, &noise)) else {
                return Ok(());
            };
            // Noise as the signature: never accepted.
            proptest::prop_assert!(verify_signed(&keys, &h, &body, now).is_err());
            // The true signature: accepted when in tolerance and the id is not empty.
            let good = sign(&keys[0].0, &id, &stamp, &body);
            let h = headers(&id, &stamp, &format!("{noise} {good}"));
            let within = offset.abs() <= 300;
            proptest::prop_assert_eq!(
                verify_signed(&keys, &h, &body, now).is_ok(),
                within && !id.is_empty()
            );
            // One bit of the body flipped: refused.
            if !body.is_empty() {
                let mut forged = body.clone();
                forged[flip.index(body.len())] ^= 1;
                proptest::prop_assert!(verify_signed(&keys, &h, &forged, now).is_err());
            }
        }
    }
}
