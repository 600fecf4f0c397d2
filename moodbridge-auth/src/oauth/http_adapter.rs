//! The `oauth2` crate's async HTTP client trait over the workspace's reqwest, so the tree
//! carries one reqwest (oauth2's own integration pins an older one). Non-success statuses
//! that are not OAuth error bodies (429, 5xx) become typed errors here, before `oauth2`
//! tries to parse them.

use std::future::Future;
use std::pin::Pin;

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

fn looks_like_oauth_error(body: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(body)
        .is_ok_and(|v| v.get("error").is_some_and(serde_json::Value::is_string))
}
