//! The Key Vault secrets API, as Microsoft's REST reference describes it (api-version
//! 7.x): `PUT /secrets/{name}`, `GET /secrets/{name}/{version}` (an empty version is the
//! latest), `PATCH` of a version's attributes, tags and content type, `GET /secrets` and
//! `GET /secrets/{name}/versions` in pages with `nextLink`, `DELETE /secrets/{name}` (a
//! soft delete), `GET /deletedsecrets[/{name}]`, `POST /deletedsecrets/{name}/recover`
//! and `DELETE /deletedsecrets/{name}` (purge).
//!
//! - An unauthenticated request gets `401` with the challenge
//!   `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/<tenant>",
//!   resource="https://vault.azure.net"`, before its body is read (the SDKs send their
//!   first request without a body); a bearer token not among the configured ones gets
//!   `401` too.
//! - Names: 1–127 letters, digits and dashes, case-insensitive (the name as first set is
//!   kept). Version ids are 32 lower-case hex digits.
//! - A disabled version, or one outside its not-before / expiry window, cannot be read
//!   (`403 Forbidden`, inner code `SecretDisabled`).
//! - A deleted name cannot be set again until recovered or purged (`409 Conflict`,
//!   inner code `ObjectIsDeletedButRecoverable`); with purge protection, purge is refused.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

/// How a fake vault behaves.
#[derive(Debug, Clone)]
pub struct KeyVaultConfig {
    /// Bearer tokens the vault accepts (default: `["sandbox-token"]`).
    pub tokens: Vec<String>,
    /// The tenant named in the challenge.
    pub tenant: String,
    /// Days a deleted secret stays recoverable (default 90).
    pub recoverable_days: u32,
    /// Refuse purges (default false).
    pub purge_protection: bool,
    /// App registrations the token endpoint knows: (client id, client secret). The
    /// client credentials grant of one of them gets the first of `tokens`.
    pub clients: Vec<(String, String)>,
}

impl Default for KeyVaultConfig {
    fn default() -> Self {
        KeyVaultConfig {
            tokens: vec!["sandbox-token".to_owned()],
            tenant: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
            recoverable_days: 90,
            purge_protection: false,
            clients: vec![(
                "sandbox-client".to_owned(),
                "sandbox-client-secret".to_owned(),
            )],
        }
    }
}

/// A running fake vault on `https://127.0.0.1:<port>`; stopped by [`stop`](Self::stop)
/// or when dropped.
pub struct KeyVault {
    url: String,
    authority: String,
    ca_pem: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    authority_task: Option<tokio::task::JoinHandle<()>>,
    state: Arc<Shared>,
}

impl std::fmt::Debug for KeyVault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyVault")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

struct Shared {
    config: KeyVaultConfig,
    url: String,
    vault: Mutex<Vault>,
    requests: Mutex<Vec<String>>,
}

#[derive(Default)]
struct Vault {
    /// By lower-case name.
    secrets: BTreeMap<String, Secret>,
    deleted: BTreeMap<String, Deleted>,
}

#[derive(Clone)]
struct Secret {
    name: String,
    versions: Vec<Version>,
}

#[derive(Clone)]
struct Version {
    id: String,
    value: String,
    content_type: Option<String>,
    enabled: bool,
    nbf: Option<i64>,
    exp: Option<i64>,
    created: i64,
    updated: i64,
    tags: BTreeMap<String, String>,
}

#[derive(Clone)]
struct Deleted {
    secret: Secret,
    deleted_date: i64,
    purge_date: i64,
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn error(status: StatusCode, code: &str, message: String, inner: Option<&str>) -> Response {
    let mut body = json!({"error": {"code": code, "message": message}});
    if let Some(inner) = inner {
        body["error"]["innererror"] = json!({"code": inner});
    }
    (status, Json(body)).into_response()
}

/// A lock a panicking handler left behind.
fn poisoned() -> Response {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalError",
        "The vault's state is poisoned.".to_owned(),
        None,
    )
}

fn not_found(what: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!(
            "A secret with (name/id) {what} was not found in this key vault. If you recently deleted this secret you may be able to recover it using the correct recovery command. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125182"
        ),
        None,
    )
}

fn bad(message: String) -> Response {
    error(StatusCode::BAD_REQUEST, "BadParameter", message, None)
}

fn valid_name(name: &str) -> bool {
    (1..=127).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl KeyVault {
    /// Starts a vault on a free loopback port.
    ///
    /// # Errors
    /// No port or no certificate could be had.
    pub async fn start(config: KeyVaultConfig) -> io::Result<KeyVault> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("https://127.0.0.1:{}", listener.local_addr()?.port());
        let (acceptor, ca_pem) = crate::tls::self_signed()?;
        let state = Arc::new(Shared {
            config,
            url: url.clone(),
            vault: Mutex::new(Vault::default()),
            requests: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/secrets", get(list_secrets))
            .route(
                "/secrets/{name}",
                get(get_latest)
                    .put(set_secret)
                    .delete(delete_secret)
                    .patch(update_latest),
            )
            .route("/secrets/{name}/", get(get_latest).patch(update_latest))
            .route("/secrets/{name}/versions", get(list_versions))
            .route(
                "/secrets/{name}/{version}",
                get(get_version).patch(update_version),
            )
            .route("/deletedsecrets", get(list_deleted))
            .route("/deletedsecrets/{name}", get(get_deleted).delete(purge))
            .route("/deletedsecrets/{name}/recover", post(recover))
            .fallback(|| async {
                error(
                    StatusCode::NOT_FOUND,
                    "NotFound",
                    "No such operation.".to_owned(),
                    None,
                )
            })
            .layer(middleware::from_fn_with_state(state.clone(), authenticate))
            .with_state(state.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(crate::tls::serve(listener, acceptor, app, stopped));
        // The token endpoint, on plain http (loopback) as identity clients accept it.
        let token_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let authority = format!("http://127.0.0.1:{}", token_listener.local_addr()?.port());
        let tokens = Router::new()
            .route("/{tenant}/oauth2/v2.0/token", post(token))
            .with_state(state.clone());
        let authority_task = tokio::spawn(async move {
            let _ = axum::serve(token_listener, tokens).await;
        });
        Ok(KeyVault {
            url,
            authority,
            ca_pem,
            stop: Some(stop),
            task: Some(task),
            authority_task: Some(authority_task),
            state,
        })
    }

    /// The vault URL (`https://127.0.0.1:<port>`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The authority host of the vault's token endpoint
    /// (`<authority>/<tenant>/oauth2/v2.0/token`, the client credentials grant of the
    /// configured clients), on plain http.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// The vault's certificate (PEM), for a client's trusted roots.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Every request so far as `METHOD /path auth` (`auth` is `bearer` or `none`).
    pub fn requests(&self) -> Vec<String> {
        self.state
            .requests
            .lock()
            .map(|r| r.clone())
            .unwrap_or_default()
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        if let Some(task) = self.authority_task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for KeyVault {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.authority_task.take() {
            task.abort();
        }
    }
}

/// The client credentials grant (RFC 6749 section 4.4) as Entra ID's v2.0 endpoint
/// answers it: the client id and secret in the form, the scope
/// `https://vault.azure.net/.default`.
async fn token(State(s): State<Arc<Shared>>, Path(tenant): Path<String>, body: Bytes) -> Response {
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let oauth_error = |status: StatusCode, code: &str, description: String| {
        (
            status,
            Json(json!({"error": code, "error_description": description})),
        )
            .into_response()
    };
    if tenant != s.config.tenant {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            format!("AADSTS90002: Tenant '{tenant}' not found."),
        );
    }
    if form.get("grant_type").map(String::as_str) != Some("client_credentials") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "AADSTS70003: The app requested an unsupported grant type.".to_owned(),
        );
    }
    let client = (
        form.get("client_id").cloned().unwrap_or_default(),
        form.get("client_secret").cloned().unwrap_or_default(),
    );
    if !s.config.clients.contains(&client) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "AADSTS7000215: Invalid client secret provided.".to_owned(),
        );
    }
    if form.get("scope").map(String::as_str) != Some("https://vault.azure.net/.default") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "AADSTS1002012: The provided value for scope is not valid.".to_owned(),
        );
    }
    let Some(access) = s.config.tokens.first() else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_client",
            "No token is configured.".to_owned(),
        );
    };
    Json(json!({
        "token_type": "Bearer",
        "expires_in": 3599,
        "ext_expires_in": 3599,
        "access_token": access,
    }))
    .into_response()
}

/// The challenge for requests without a valid token, and the `api-version` check.
async fn authenticate(State(state): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let bearer = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    if let Ok(mut log) = state.requests.lock() {
        log.push(format!(
            "{} {} {}",
            request.method(),
            request.uri().path(),
            if bearer.is_some() { "bearer" } else { "none" }
        ));
    }
    let challenge = || {
        HeaderValue::from_str(&format!(
            "Bearer authorization=\"https://login.microsoftonline.com/{}\", resource=\"https://vault.azure.net\"",
            state.config.tenant
        ))
        .unwrap_or(HeaderValue::from_static("Bearer"))
    };
    let refused = |message: &str| {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            message.to_owned(),
            None,
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, challenge());
        response
    };
    match bearer {
        None => return refused("AKV10000: Request is missing a Bearer or PoP token."),
        Some(token) if !state.config.tokens.contains(&token) => {
            return refused("The bearer token is not valid for this vault.");
        }
        Some(_) => {}
    }
    let has_version = request.uri().query().is_some_and(|q| {
        url::form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == "api-version" && !v.is_empty())
    });
    if !has_version {
        return bad("The request is missing the api-version query parameter.".to_owned());
    }
    next.run(request).await
}

impl Shared {
    fn attributes(&self, v: &Version) -> Value {
        let mut a = json!({
            "enabled": v.enabled,
            "created": v.created,
            "updated": v.updated,
            "recoveryLevel": if self.config.purge_protection { "Recoverable" } else { "Recoverable+Purgeable" },
            "recoverableDays": self.config.recoverable_days,
        });
        if let Some(nbf) = v.nbf {
            a["nbf"] = json!(nbf);
        }
        if let Some(exp) = v.exp {
            a["exp"] = json!(exp);
        }
        a
    }

    /// A secret bundle (with its value when `value`).
    fn bundle(&self, name: &str, v: &Version, value: bool) -> Value {
        let mut b = json!({
            "id": format!("{}/secrets/{name}/{}", self.url, v.id),
            "attributes": self.attributes(v),
        });
        if value {
            b["value"] = json!(v.value);
        }
        if let Some(ct) = &v.content_type {
            b["contentType"] = json!(ct);
        }
        if !v.tags.is_empty() {
            b["tags"] = json!(v.tags);
        }
        b
    }

    /// A list item: the secret (`versioned` false: its id has no version) with the
    /// latest version's attributes.
    fn item(&self, name: &str, v: &Version, versioned: bool) -> Value {
        let mut b = self.bundle(name, v, false);
        if !versioned {
            b["id"] = json!(format!("{}/secrets/{name}", self.url));
        }
        b
    }

    fn deleted_bundle(&self, d: &Deleted, item: bool) -> Value {
        let name = &d.secret.name;
        let latest = d.secret.versions.last();
        let mut b = match latest {
            Some(v) if item => self.item(name, v, false),
            Some(v) => self.bundle(name, v, false),
            None => json!({}),
        };
        b["recoveryId"] = json!(format!("{}/deletedsecrets/{name}", self.url));
        b["deletedDate"] = json!(d.deleted_date);
        b["scheduledPurgeDate"] = json!(d.purge_date);
        b
    }

    /// A page of `items` from `skip`, with the link to the next one.
    fn page(&self, path: &str, items: Vec<Value>, q: &BTreeMap<String, String>) -> Response {
        let max = q
            .get("maxresults")
            .and_then(|m| m.parse::<usize>().ok())
            .unwrap_or(25)
            .clamp(1, 25);
        let skip = q
            .get("$skiptoken")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(0);
        let version = q.get("api-version").cloned().unwrap_or_default();
        let next = (skip + max < items.len()).then(|| {
            format!(
                "{}{path}?api-version={version}&$skiptoken={}&maxresults={max}",
                self.url,
                skip + max
            )
        });
        let page: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
        Json(json!({"value": page, "nextLink": next})).into_response()
    }
}

/// Whether a version can be read now.
fn readable(v: &Version) -> bool {
    let t = now();
    v.enabled && v.nbf.is_none_or(|nbf| nbf <= t) && v.exp.is_none_or(|exp| exp > t)
}

fn disabled() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "Forbidden",
        "Operation get is not allowed on a disabled secret.".to_owned(),
        Some("SecretDisabled"),
    )
}

type Q = Query<BTreeMap<String, String>>;

async fn set_secret(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    if !valid_name(&name) {
        return bad(format!("The request URI contains an invalid name: {name}"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return bad("The request body is not valid JSON.".to_owned());
    };
    let Some(value) = body["value"].as_str() else {
        return bad("Property value is required.".to_owned());
    };
    let tags: BTreeMap<String, String> = match body.get("tags") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(t) => match serde_json::from_value(t.clone()) {
            Ok(t) => t,
            Err(_) => return bad("Tags must be a map of strings.".to_owned()),
        },
    };
    if tags.len() > 15 {
        return bad("A secret can have at most 15 tags.".to_owned());
    }
    let attributes = &body["attributes"];
    let t = now();
    let version = Version {
        id: format!("{:032x}", rand::random::<u128>()),
        value: value.to_owned(),
        content_type: body["contentType"].as_str().map(str::to_owned),
        enabled: attributes["enabled"].as_bool().unwrap_or(true),
        nbf: attributes["nbf"].as_i64(),
        exp: attributes["exp"].as_i64(),
        created: t,
        updated: t,
        tags,
    };
    let mut vault = match s.vault.lock() {
        Ok(v) => v,
        Err(_) => {
            return poisoned();
        }
    };
    let key = name.to_ascii_lowercase();
    if vault.deleted.contains_key(&key) {
        return error(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Secret {name} is currently in a deleted but recoverable state, and its name cannot be reused; in this state, the secret can only be recovered or purged."
            ),
            Some("ObjectIsDeletedButRecoverable"),
        );
    }
    let secret = vault.secrets.entry(key).or_insert_with(|| Secret {
        name: name.clone(),
        versions: Vec::new(),
    });
    secret.versions.push(version.clone());
    let name = secret.name.clone();
    Json(s.bundle(&name, &version, true)).into_response()
}

fn read(s: &Shared, name: &str, version: Option<&str>) -> Response {
    let Ok(vault) = s.vault.lock() else {
        return poisoned();
    };
    let Some(secret) = vault.secrets.get(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let found = match version.filter(|v| !v.is_empty()) {
        Some(id) => secret.versions.iter().find(|v| v.id == id),
        None => secret.versions.last(),
    };
    match found {
        None => not_found(&format!("{name}/{}", version.unwrap_or_default())),
        Some(v) if !readable(v) => disabled(),
        Some(v) => Json(s.bundle(&secret.name, v, true)).into_response(),
    }
}

async fn get_latest(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    read(&s, &name, None)
}

async fn get_version(
    State(s): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
) -> Response {
    read(&s, &name, Some(&version))
}

fn update(s: &Shared, name: &str, version: Option<&str>, body: &Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return bad("The request body is not valid JSON.".to_owned());
    };
    let Ok(mut vault) = s.vault.lock() else {
        return poisoned();
    };
    let Some(secret) = vault.secrets.get_mut(&name.to_ascii_lowercase()) else {
        return not_found(name);
    };
    let display = secret.name.clone();
    let found = match version.filter(|v| !v.is_empty()) {
        Some(id) => secret.versions.iter_mut().find(|v| v.id == id),
        None => secret.versions.last_mut(),
    };
    let Some(v) = found else {
        return not_found(&format!("{name}/{}", version.unwrap_or_default()));
    };
    if let Some(ct) = body.get("contentType") {
        v.content_type = ct.as_str().map(str::to_owned);
    }
    if let Some(tags) = body.get("tags") {
        match serde_json::from_value::<BTreeMap<String, String>>(tags.clone()) {
            Ok(t) if t.len() <= 15 => v.tags = t,
            _ => return bad("Tags must be a map of at most 15 strings.".to_owned()),
        }
    }
    let a = &body["attributes"];
    if let Some(enabled) = a["enabled"].as_bool() {
        v.enabled = enabled;
    }
    if a.get("nbf").is_some() {
        v.nbf = a["nbf"].as_i64();
    }
    if a.get("exp").is_some() {
        v.exp = a["exp"].as_i64();
    }
    v.updated = now();
    let v = v.clone();
    Json(s.bundle(&display, &v, false)).into_response()
}

async fn update_latest(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Response {
    update(&s, &name, None, &body)
}

async fn update_version(
    State(s): State<Arc<Shared>>,
    Path((name, version)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    update(&s, &name, Some(&version), &body)
}

async fn list_secrets(State(s): State<Arc<Shared>>, Query(q): Q) -> Response {
    let items: Vec<Value> = match s.vault.lock() {
        Ok(vault) => vault
            .secrets
            .values()
            .filter_map(|secret| Some(s.item(&secret.name, secret.versions.last()?, false)))
            .collect(),
        Err(_) => Vec::new(),
    };
    s.page("/secrets", items, &q)
}

async fn list_versions(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    Query(q): Q,
) -> Response {
    let items: Option<Vec<Value>> = s.vault.lock().ok().and_then(|vault| {
        let secret = vault.secrets.get(&name.to_ascii_lowercase())?;
        Some(
            secret
                .versions
                .iter()
                .map(|v| s.item(&secret.name, v, true))
                .collect(),
        )
    });
    match items {
        Some(items) => s.page(&format!("/secrets/{name}/versions"), items, &q),
        None => not_found(&name),
    }
}

async fn delete_secret(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Ok(mut vault) = s.vault.lock() else {
        return poisoned();
    };
    let key = name.to_ascii_lowercase();
    let Some(secret) = vault.secrets.remove(&key) else {
        return not_found(&name);
    };
    let t = now();
    let deleted = Deleted {
        secret,
        deleted_date: t,
        purge_date: t + i64::from(s.config.recoverable_days) * 86_400,
    };
    let body = s.deleted_bundle(&deleted, false);
    vault.deleted.insert(key, deleted);
    Json(body).into_response()
}

fn deleted_not_found(name: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "SecretNotFound",
        format!("Deleted Secret not found: {name}"),
        None,
    )
}

async fn get_deleted(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let found = s
        .vault
        .lock()
        .ok()
        .and_then(|v| v.deleted.get(&name.to_ascii_lowercase()).cloned());
    match found {
        Some(d) => Json(s.deleted_bundle(&d, false)).into_response(),
        None => deleted_not_found(&name),
    }
}

async fn list_deleted(State(s): State<Arc<Shared>>, Query(q): Q) -> Response {
    let items: Vec<Value> = match s.vault.lock() {
        Ok(vault) => vault
            .deleted
            .values()
            .map(|d| s.deleted_bundle(d, true))
            .collect(),
        Err(_) => Vec::new(),
    };
    s.page("/deletedsecrets", items, &q)
}

async fn recover(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let Ok(mut vault) = s.vault.lock() else {
        return poisoned();
    };
    let key = name.to_ascii_lowercase();
    let Some(d) = vault.deleted.remove(&key) else {
        return deleted_not_found(&name);
    };
    let body = match d.secret.versions.last() {
        Some(v) => s.bundle(&d.secret.name, v, false),
        None => json!({}),
    };
    vault.secrets.insert(key, d.secret);
    Json(body).into_response()
}

async fn purge(State(s): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    if s.config.purge_protection {
        return error(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed. Secret: {name}"
            ),
            None,
        );
    }
    let removed = s
        .vault
        .lock()
        .ok()
        .and_then(|mut v| v.deleted.remove(&name.to_ascii_lowercase()));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => deleted_not_found(&name),
    }
}
