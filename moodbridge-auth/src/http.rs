//! The HTTP client the auth crate talks to identity providers with, and the rules it
//! follows: https only (plain http is allowed to loopback addresses, for local providers
//! and tests), bounded response sizes, JSON bodies parsed into typed values, and errors
//! that say which endpoint failed without echoing bodies that may hold tokens.

use std::time::Duration;

use moodbridge_core::{Error, ErrorKind, Result};
use serde::de::DeserializeOwned;
use url::Url;

/// Default timeout of one request to an identity provider.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest discovery document or JWKS accepted.
pub const MAX_METADATA_BYTES: usize = 1024 * 1024;

/// A client with the SDK's defaults: rustls, timeouts, no redirects (a redirect could
/// carry a bearer token or client secret somewhere unexpected).
pub fn client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(DEFAULT_TIMEOUT)
        .connect_timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("moodbridge-auth/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::internal("cannot build the HTTP client").with_source(e))
}

/// Parse `url` and require https, unless the host is a loopback address.
///
/// ```
/// use moodbridge_auth::http::secure_url;
/// assert!(secure_url("https://login.salesforce.com/services/oauth2/token").is_ok());
/// assert!(secure_url("http://127.0.0.1:8080/token").is_ok());
/// assert!(secure_url("http://login.example.com/token").is_err());
/// ```
pub fn secure_url(url: &str) -> Result<Url> {
    let parsed = Url::parse(url)
        .map_err(|e| Error::config(format!("{url:?} is not a valid URL")).with_source(e))?;
    let loopback = match parsed.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(parsed),
        "http" if loopback => Ok(parsed),
        scheme => Err(Error::config(format!(
            "{url} uses {scheme}; identity provider endpoints must use https"
        ))
        .with_hint("use the https URL of the provider (plain http is accepted only on loopback)")),
    }
}

/// Map a transport error of a request to `what`.
pub(crate) fn transport_error(what: &str, err: reqwest::Error) -> Error {
    let kind = if err.is_timeout() {
        ErrorKind::Timeout
    } else {
        ErrorKind::Unavailable
    };
    // reqwest's Display may include the URL; ours are provider endpoints, not secrets.
    let err = err.without_url();
    Error::new(kind, format!("{what} failed: {err}")).with_source(err)
}

/// GET `url` and parse its JSON body as `T`, reading at most `max_bytes`.
pub(crate) async fn get_json<T: DeserializeOwned>(
    client: &reqwest::Client,
    url: &Url,
    what: &str,
    max_bytes: usize,
) -> Result<T> {
    let response = client
        .get(url.clone())
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(|e| transport_error(what, e))?;
    let status = response.status();
    let body = read_limited(response, what, max_bytes).await?;
    if !status.is_success() {
        let kind = match status.as_u16() {
            404 => ErrorKind::NotFound,
            429 => ErrorKind::RateLimited { retry_after: None },
            500..=599 => ErrorKind::Unavailable,
            _ => ErrorKind::Protocol,
        };
        return Err(Error::new(kind, format!("{what} answered HTTP {status}"))
            .with_context("url", url.as_str()));
    }
    serde_json::from_slice(&body).map_err(|e| {
        Error::new(
            ErrorKind::Protocol,
            format!("{what} answered invalid JSON: {e}"),
        )
        .with_context("url", url.as_str())
    })
}

/// Read a response body, refusing more than `max_bytes`.
pub(crate) async fn read_limited(
    mut response: reqwest::Response,
    what: &str,
    max_bytes: usize,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(what, e))?
    {
        if body.len() + chunk.len() > max_bytes {
            return Err(Error::new(
                ErrorKind::Protocol,
                format!("{what} answered more than {max_bytes} bytes"),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
