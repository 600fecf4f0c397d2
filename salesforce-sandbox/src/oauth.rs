//! The sandbox's OAuth 2.0 endpoints, after Salesforce's: the web-server flow's
//! `/services/oauth2/authorize` (the sandbox's one user consents at once) with PKCE,
//! `/services/oauth2/token` for the authorization-code, refresh-token,
//! client-credentials and JWT bearer grants, and `/services/oauth2/revoke`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::json;
use sha2::Digest as _;

use crate::state::Core;

/// The OAuth endpoints' state: the shared core and the codes waiting for their exchange.
pub(crate) struct OAuth {
    core: Arc<Core>,
    codes: Mutex<HashMap<String, IssuedCode>>,
}

crate::state::deref_to_core!(OAuth);

impl OAuth {
    /// A new one-time authorization code for `issued`.
    pub(crate) fn issue_code(&self, issued: IssuedCode) -> String {
        let code = format!("aPrx{}==", crate::state::secret_text());
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(code.clone(), issued);
        code
    }

    /// Redeem an authorization code: it works once.
    pub(crate) fn take_code(&self, code: &str) -> Option<IssuedCode> {
        self.codes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(code)
    }
}

/// The authorize, token and revoke endpoints.
pub(crate) fn routes(core: Arc<Core>) -> Router {
    let state = Arc::new(OAuth {
        core,
        codes: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/services/oauth2/authorize", axum::routing::get(authorize))
        .route("/services/oauth2/token", axum::routing::post(token))
        .route("/services/oauth2/revoke", axum::routing::post(revoke))
        .with_state(state)
}

/// How long an authorization code may wait for its exchange (Salesforce: 15 minutes).
const CODE_TTL: Duration = Duration::from_secs(15 * 60);

/// An authorization code waiting for its exchange.
pub(crate) struct IssuedCode {
    client_id: String,
    redirect_uri: String,
    challenge: Option<String>,
    offline: bool,
    until: Instant,
}

#[derive(Deserialize)]
pub(crate) struct AuthorizeParams {
    response_type: Option<String>,
    client_id: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
    scope: Option<String>,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

/// An error the authorization server shows on its own page: the redirect URI is not
/// trusted yet, so nothing is sent there.
fn error_page(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><title>Remote Access Error</title><h1>Remote Access Error</h1>\
             <p>error={error}</p><p>error_description={description}</p>"
        ),
    )
        .into_response()
}

fn redirect(to: &url::Url) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, to.as_str())]).into_response()
}

/// Whether `given` is one of the connected app's callback URLs. Loopback callbacks match
/// on any port (RFC 8252 §7.3: native apps listen on a port chosen at run time).
fn callback_allowed(callbacks: &[String], given: &url::Url) -> bool {
    callbacks.iter().any(|c| {
        let Ok(c) = url::Url::parse(c) else {
            return false;
        };
        if c == *given {
            return true;
        }
        let loopback = matches!(c.host_str(), Some("127.0.0.1" | "[::1]" | "localhost"));
        loopback
            && c.scheme() == given.scheme()
            && c.host_str() == given.host_str()
            && c.path() == given.path()
            && c.query() == given.query()
    })
}

/// `GET /services/oauth2/authorize`: check the client and its callback, then — the
/// sandbox's user consenting at once — redirect back with a one-time code.
async fn authorize(State(s): State<Arc<OAuth>>, Query(p): Query<AuthorizeParams>) -> Response {
    if p.client_id.as_deref() != Some(s.config.client_id.as_str()) {
        return error_page("invalid_client_id", "client identifier invalid");
    }
    let Some(callback) = p
        .redirect_uri
        .as_deref()
        .and_then(|r| url::Url::parse(r).ok())
        .filter(|r| callback_allowed(&s.config.callback_urls, r))
    else {
        return error_page(
            "redirect_uri_mismatch",
            "redirect_uri must match configuration",
        );
    };
    // From here on, errors go back to the (trusted) callback.
    let back = |pairs: &[(&str, &str)]| {
        let mut to = callback.clone();
        {
            let mut q = to.query_pairs_mut();
            for (k, v) in pairs {
                q.append_pair(k, v);
            }
            if let Some(state) = &p.state {
                q.append_pair("state", state);
            }
        }
        redirect(&to)
    };
    if p.response_type.as_deref() != Some("code") {
        return back(&[
            ("error", "unsupported_response_type"),
            ("error_description", "response type not supported"),
        ]);
    }
    let challenge = match (&p.code_challenge, p.code_challenge_method.as_deref()) {
        (Some(c), None | Some("S256")) => Some(c.clone()),
        (Some(_), Some(_)) => {
            return back(&[
                ("error", "invalid_request"),
                ("error_description", "code_challenge_method must be S256"),
            ]);
        }
        (None, _) if s.config.require_pkce => {
            return back(&[
                ("error", "invalid_request"),
                ("error_description", "missing required code challenge"),
            ]);
        }
        (None, _) => None,
    };
    let offline = p.scope.as_deref().is_none_or(|scope| {
        scope
            .split(' ')
            .any(|x| matches!(x, "refresh_token" | "offline_access" | "full"))
    });
    let code = s.issue_code(IssuedCode {
        client_id: s.config.client_id.clone(),
        redirect_uri: p.redirect_uri.clone().unwrap_or_default(),
        challenge,
        offline,
        until: Instant::now() + CODE_TTL,
    });
    back(&[("code", &code)])
}

/// The PKCE check (RFC 7636 §4.6): `BASE64URL(SHA256(verifier)) == challenge`.
///
/// RFC 7636 caps a verifier at 128 characters, but Salesforce documents it as "128 bytes
/// of random data", base64url-encoded — 171 characters, which jsforce sends — so, as
/// Salesforce does, longer verifiers are accepted (up to a sanity bound).
fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    let valid = (43..=256).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
    valid
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(verifier.as_bytes()))
            == challenge
}

#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    token: Option<String>,
}

/// `POST /services/oauth2/revoke`: end an access or refresh token.
async fn revoke(State(s): State<Arc<OAuth>>, Form(form): Form<RevokeForm>) -> Response {
    match form.token {
        Some(token) if s.revoke(&token) => StatusCode::OK.into_response(),
        _ => oauth_error("unsupported_token_type", "this token type is not supported"),
    }
}

#[derive(Deserialize)]
pub(crate) struct TokenForm {
    grant_type: String,
    code: Option<String>,
    redirect_uri: Option<String>,
    code_verifier: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    assertion: Option<String>,
}

/// The client id and secret of an `Authorization: Basic` header (each form-encoded, then
/// joined by `:` and base64-encoded, as RFC 6749 §2.3.1 says); `None` without one,
/// `Err` when it cannot be read.
fn basic_credentials(headers: &axum::http::HeaderMap) -> Option<Result<(String, String), ()>> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok());
    let Some((id, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) else {
        return Some(Err(()));
    };
    let unform = |part: &str| {
        url::form_urlencoded::parse(format!("v={part}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    Some(Ok((unform(id), unform(secret))))
}

/// Check a JWT bearer assertion as Salesforce does: RS256 signed by the connected app's
/// certificate key, `iss` the client id, `aud` the login server, `sub` an approved user,
/// `exp` not passed.
fn check_assertion(s: &OAuth, assertion: &str) -> Result<(), (&'static str, &'static str)> {
    #[derive(Deserialize)]
    struct Claims {
        sub: String,
    }
    let Some(pem) = &s.config.jwt_public_key_pem else {
        return Err((
            "invalid_client",
            "the connected app has no certificate for the JWT bearer flow",
        ));
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(pem.as_bytes()).map_err(|_| {
        (
            "invalid_client",
            "the connected app's certificate is not an RSA key",
        )
    })?;
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[s.config.client_id.as_str()]);
    validation.set_audience(&[
        s.base_url.as_str(),
        "https://login.salesforce.com",
        "https://test.salesforce.com",
    ]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(assertion, &key, &validation).map_err(|e| {
        let description = match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired assertion",
            jsonwebtoken::errors::ErrorKind::InvalidAudience => "audience is invalid",
            jsonwebtoken::errors::ErrorKind::InvalidIssuer => "client identifier invalid",
            _ => "invalid assertion",
        };
        ("invalid_grant", description)
    })?;
    if !s.config.users.contains(&data.claims.sub) {
        return Err(("invalid_grant", "user hasn't approved this consumer"));
    }
    Ok(())
}

pub(crate) fn oauth_error(error: &str, description: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// `POST /services/oauth2/token`: every grant the client uses.
async fn token(
    State(s): State<Arc<OAuth>>,
    headers: axum::http::HeaderMap,
    Form(mut form): Form<TokenForm>,
) -> Response {
    // RFC 6749 §2.3.1: a client authenticates by HTTP Basic or by the form, not both.
    match basic_credentials(&headers) {
        Some(Ok(_)) if form.client_secret.is_some() => {
            return oauth_error(
                "invalid_request",
                "client credentials in both the Authorization header and the body",
            );
        }
        Some(Ok((id, secret))) => {
            if form.client_id.as_ref().is_some_and(|given| *given != id) {
                return oauth_error("invalid_client_id", "client identifier invalid");
            }
            form.client_id = Some(id);
            form.client_secret = Some(secret);
        }
        Some(Err(())) => return oauth_error("invalid_client", "invalid client credentials"),
        None => {}
    }
    let client_ok = form.client_id.as_deref() == Some(s.config.client_id.as_str())
        && form.client_secret.as_deref() == Some(s.config.client_secret.as_str());
    let mut refresh = false;
    match form.grant_type.as_str() {
        "authorization_code" => {
            let issued = form.code.as_deref().and_then(|c| s.take_code(c));
            let Some(issued) = issued.filter(|i| i.until > Instant::now()) else {
                return oauth_error("invalid_grant", "invalid authorization code");
            };
            if form.client_id.as_deref() != Some(issued.client_id.as_str()) {
                return oauth_error("invalid_client_id", "client identifier invalid");
            }
            // A confidential client sends its secret; a PKCE client may leave it out.
            let secret_ok = match form.client_secret.as_deref() {
                Some(secret) => secret == s.config.client_secret,
                None => issued.challenge.is_some(),
            };
            if !secret_ok {
                return oauth_error("invalid_client", "invalid client credentials");
            }
            if form.redirect_uri.as_deref() != Some(issued.redirect_uri.as_str()) {
                return oauth_error(
                    "redirect_uri_mismatch",
                    "redirect_uri must match configuration",
                );
            }
            if let Some(challenge) = &issued.challenge {
                let verifier = form.code_verifier.as_deref().unwrap_or_default();
                if !verifier_matches(verifier, challenge) {
                    return oauth_error("invalid_grant", "invalid code verifier");
                }
            }
            refresh = issued.offline;
        }
        "client_credentials" if client_ok => {}
        "client_credentials" => return oauth_error("invalid_client", "invalid client credentials"),
        "refresh_token" => {
            let known = form
                .refresh_token
                .as_deref()
                .is_some_and(|t| s.refresh_token_known(t));
            if !known {
                return oauth_error("invalid_grant", "expired access/refresh token");
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            if let Err((error, description)) =
                check_assertion(&s, form.assertion.as_deref().unwrap_or_default())
            {
                return oauth_error(error, description);
            }
        }
        other => {
            return oauth_error(
                "unsupported_grant_type",
                &format!("grant type not supported: {other}"),
            );
        }
    }
    let issued_at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut body = json!({
        "access_token": s.issue_token(),
        "instance_url": s.base_url,
        "id": format!("{}/id/00D8d0000000001EAA/0058d000000001AAAA", s.base_url),
        "token_type": "Bearer",
        "issued_at": issued_at.to_string(),
        "scope": "api refresh_token",
    });
    if refresh {
        body["refresh_token"] = json!(s.issue_refresh_token());
    }
    axum::Json(body).into_response()
}
