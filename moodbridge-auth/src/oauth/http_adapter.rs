//! The `oauth2` crate's async HTTP client trait over the workspace's reqwest, so the tree
//! carries one reqwest (oauth2's own integration pins an older one). Non-success statuses
//! that are not OAuth error bodies (429, 5xx) become typed errors here, before `oauth2`
//! tries to parse them.

use std::future::Future;
use std::pin::Pin;

use moodbridge_core::redact::Scrubber;
use moodbridge_core::{Error, ErrorKind};
use oauth2::{HttpRequest, HttpResponse};

use crate::http::{read_limited, transport_error};

/// Largest token endpoint response accepted.
const MAX_TOKEN_RESPONSE: usize = 256 * 1024;

/// An `oauth2` HTTP client over a `reqwest::Client`.
#[derive(Debug, Clone)]
pub(crate) struct OAuthHttp(pub(crate) reqwest::Client);

/// The error `oauth2` sees from our client: a core error, passed through unchanged.
#[derive(Debug)]
pub(crate) struct HttpError(pub(crate) Error);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for HttpError {}

impl<'c> oauth2::AsyncHttpClient<'c> for OAuthHttp {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            // What the request carried, kept to scrub an error answer (rare: the
            // scrubber itself is built only then).
            let sent = (
                request.body().clone(),
                request.headers().get(http::header::AUTHORIZATION).cloned(),
            );
            let request = reqwest::Request::try_from(request)
                .map_err(|e| HttpError(Error::internal("invalid token request").with_source(e)))?;
            let response = self
                .0
                .execute(request)
                .await
                .map_err(|e| HttpError(transport_error("token endpoint request", e)))?;
            let status = response.status();
            let headers = response.headers().clone();
            let retry_after = headers
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
                .map(std::time::Duration::from_secs);
            let body = read_limited(response, "token endpoint", MAX_TOKEN_RESPONSE)
                .await
                .map_err(HttpError)?;
            // An error answer that echoes the request (its form, its Authorization header)
            // would carry the client secret, the refresh token or the code into the error
            // and the logs: they are scrubbed before anything reads the answer. A success
            // is left whole (it may rightly hand the same refresh token back).
            let body = if status.is_success() {
                body
            } else {
                secrets_of(&sent.0, sent.1.as_ref()).scrub_bytes(&body)
            };
            if status.as_u16() == 429 {
                return Err(HttpError(Error::new(
                    ErrorKind::RateLimited { retry_after },
                    "the token endpoint is rate limiting (HTTP 429)",
                )));
            }
            if status.is_server_error() && !looks_like_oauth_error(&body) {
                return Err(HttpError(Error::unavailable(format!(
                    "the token endpoint answered HTTP {status}"
                ))));
            }
            let mut builder = http::Response::builder().status(status.as_u16());
            for (name, value) in &headers {
                builder = builder.header(name, value);
            }
            builder.body(body).map_err(|e| {
                HttpError(Error::internal("cannot rebuild the response").with_source(e))
            })
        })
    }
}

/// Form fields of a token or revocation request whose values are secrets.
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "refresh_token",
    "code",
    "code_verifier",
    "assertion",
    "client_assertion",
    "password",
    "token",
];

/// The secrets a token endpoint request carries: the secret form fields, and the
/// `Authorization` header (whole, and a Basic header's decoded secret).
fn secrets_of(form: &[u8], authorization: Option<&http::HeaderValue>) -> Scrubber {
    use base64::Engine as _;
    let mut secrets: Vec<String> = url::form_urlencoded::parse(form)
        .filter(|(k, _)| SECRET_FIELDS.contains(&k.as_ref()))
        .map(|(_, v)| v.into_owned())
        .collect();
    if let Some(auth) = authorization.and_then(|v| v.to_str().ok()) {
        secrets.push(auth.to_owned());
        if let Some((_, credentials)) = auth.split_once(' ') {
            secrets.push(credentials.to_owned());
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((_, secret)) = decoded.as_deref().and_then(|d| d.split_once(':')) {
                secrets.push(secret.to_owned());
                let unform = url::form_urlencoded::parse(format!("s={secret}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned());
                secrets.extend(unform);
            }
        }
    }
    Scrubber::new(secrets)
}

fn looks_like_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("error").is_some_and(serde_json::Value::is_string))
}
