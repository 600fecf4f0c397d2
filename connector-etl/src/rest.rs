//! What the orchestrators' REST clients share: a bearer token fetched on first need and
//! renewed once when refused, path segments percent-encoded, and errors made from an
//! answer without the secrets the request carried.

use std::future::Future;
use std::time::Duration;

use moodbridge_core::redact::Secrets;
use moodbridge_core::resilience::{Policy, PolicyBuilder, PolicyConfig, RetryConfig};
use moodbridge_core::{Error, ErrorKind, Result};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::{ExposeSecret, SecretString};

/// What stays as it is in a path segment: RFC 3986's unreserved characters.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The orchestrators' default policy: up to 4 attempts with backoff from 250 ms, 30 s
/// per attempt.
pub(crate) fn default_policy_config() -> PolicyConfig {
    PolicyConfig {
        retry: Some(RetryConfig {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Duration::from_secs(60),
            budget: None,
        }),
        attempt_timeout: Some(Duration::from_secs(30)),
        ..Default::default()
    }
}

/// A client's HTTP client (with `timeout` per request) and policy: the host's, or the
/// default one for integration `id`.
pub(crate) fn transport(
    connector: &'static str,
    id: &str,
    policy: Option<Policy>,
    timeout: Duration,
) -> Result<(reqwest::Client, Policy)> {
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| Error::internal(format!("building the HTTP client: {e}")))?;
    let policy = match policy {
        Some(p) => p,
        None => PolicyBuilder::from_config(id.to_owned(), &default_policy_config())?
            .connector(connector)
            .build(),
    };
    Ok((http, policy))
}

/// `/`-joined, each segment percent-encoded.
pub(crate) fn path(segments: &[&str]) -> String {
    segments
        .iter()
        .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
        .collect::<Vec<_>>()
        .join("/")
}

/// The bearer token of a client: one the host gave (never renewed), or one fetched with
/// the client's credentials when first needed and again when the server refuses it.
pub(crate) struct Bearer {
    held: tokio::sync::Mutex<Option<SecretString>>,
    renewable: bool,
}

impl Bearer {
    /// A token fetched when first needed.
    pub(crate) fn fetched() -> Self {
        Bearer {
            held: tokio::sync::Mutex::new(None),
            renewable: true,
        }
    }

    /// The host's own token.
    pub(crate) fn fixed(token: SecretString) -> Self {
        Bearer {
            held: tokio::sync::Mutex::new(Some(token)),
            renewable: false,
        }
    }

    /// The token in use; `fetch` gets one when there is none (callers waiting meanwhile
    /// share it).
    pub(crate) async fn get<F, Fut>(&self, fetch: F) -> Result<SecretString>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<SecretString>>,
    {
        let mut held = self.held.lock().await;
        if let Some(token) = held.as_ref() {
            return Ok(token.clone());
        }
        let token = fetch().await?;
        *held = Some(token.clone());
        Ok(token)
    }

    /// The server refused `used`: forget it (unless a newer one replaced it already).
    /// `false` for the host's own token, which cannot be renewed.
    pub(crate) async fn refused(&self, used: &SecretString) -> bool {
        if !self.renewable {
            return false;
        }
        let mut held = self.held.lock().await;
        if held
            .as_ref()
            .is_some_and(|t| t.expose_secret() == used.expose_secret())
        {
            *held = None;
        }
        true
    }
}

/// The wait a `Retry-After` header in seconds asks for.
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// Who a client speaks to, for its errors: the connector's name, the product's name in
/// messages, and the hint for each kind of failure.
pub(crate) struct Product {
    /// The connector in errors (`airflow`).
    pub(crate) connector: &'static str,
    /// The product in messages (`Airflow`).
    pub(crate) name: &'static str,
    /// What a kind of failure means for a caller.
    pub(crate) hint: fn(ErrorKind) -> &'static str,
}

impl Product {
    /// A request that got no answer.
    pub(crate) fn transport_error(
        &self,
        secrets: &Secrets,
        what: &str,
        e: &reqwest::Error,
    ) -> Error {
        let kind = if e.is_timeout() {
            ErrorKind::Timeout
        } else {
            ErrorKind::Unavailable
        };
        Error::new(
            kind,
            format!(
                "{} did not answer {what}: {}",
                self.name,
                secrets.scrubbed_source(e)
            ),
        )
        .with_connector(self.connector)
        .with_hint("check the server's address and that it is running")
    }

    /// An error answer to `what`: the kind from the status, the server's `detail`
    /// scrubbed of `secrets`, the hint for its kind.
    pub(crate) fn status_error(
        &self,
        secrets: &Secrets,
        status: reqwest::StatusCode,
        retry: Option<Duration>,
        what: &str,
        detail: &str,
    ) -> Error {
        let kind = match status.as_u16() {
            429 => ErrorKind::RateLimited { retry_after: retry },
            s => moodbridge_core::raw::kind_of_status(s),
        };
        let err = Error::new(
            kind,
            format!(
                "{} answered {status} to {what}: {}",
                self.name,
                secrets.clean(detail)
            ),
        )
        .with_connector(self.connector)
        .with_context("status", status.as_u16());
        match (self.hint)(kind) {
            "" => err,
            h => err.with_hint(h),
        }
    }

    /// A token endpoint's refusal: `Auth` for 400, 401 and 403 (a wrong user or
    /// password), the status's kind otherwise; the server's text scrubbed.
    pub(crate) fn login_error(
        &self,
        secrets: &Secrets,
        user: &str,
        status: reqwest::StatusCode,
        detail: &str,
    ) -> Error {
        let kind = match status.as_u16() {
            400 | 401 | 403 => ErrorKind::Auth,
            s => moodbridge_core::raw::kind_of_status(s),
        };
        Error::new(
            kind,
            format!(
                "{} refused a token to user {user:?} ({status}): {}",
                self.name,
                secrets.clean(detail)
            ),
        )
        .with_connector(self.connector)
        .with_hint(
            "check the username and the password's secret; the server's login provider must know the user",
        )
    }

    /// A `T` from `value`, or a [`Protocol`](ErrorKind::Protocol) error naming `what`.
    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        value: serde_json::Value,
        what: &str,
    ) -> Result<T> {
        serde_json::from_value(value).map_err(|e| {
            Error::new(
                ErrorKind::Protocol,
                format!("{what} is not what {}'s API documents: {e}", self.name),
            )
            .with_connector(self.connector)
        })
    }

    /// An answer that is not JSON.
    pub(crate) fn not_json(&self, what: &str, e: &serde_json::Error) -> Error {
        Error::new(
            ErrorKind::Protocol,
            format!("{}'s answer to {what} is not JSON: {e}", self.name),
        )
        .with_connector(self.connector)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_percent_encoded_in_paths() {
        assert_eq!(
            path(&[
                "dags",
                "hello",
                "dagRuns",
                "manual__2026-12-07T23:28:52.166554+00:00"
            ]),
            "dags/hello/dagRuns/manual__2026-12-07T23%3A28%3A52.166554%2B00%3A00"
        );
        assert_eq!(path(&["variables", "a/b c"]), "variables/a%2Fb%20c");
    }

    #[tokio::test]
    async fn a_refused_token_is_fetched_again_and_a_fixed_one_is_not() {
        let bearer = Bearer::fetched();
        let first = bearer
            .get(|| async { Ok(SecretString::from("one")) })
            .await
            .unwrap();
        // Held: no second fetch.
        let again = bearer
            .get(|| async { Err(Error::internal("not called")) })
            .await
            .unwrap();
        assert_eq!(again.expose_secret(), "one");
        assert!(bearer.refused(&first).await);
        let renewed = bearer
            .get(|| async { Ok(SecretString::from("two")) })
            .await
            .unwrap();
        assert_eq!(renewed.expose_secret(), "two");
        // A refusal of an older token keeps the newer one.
        assert!(bearer.refused(&first).await);
        let kept = bearer
            .get(|| async { Err(Error::internal("not called")) })
            .await
            .unwrap();
        assert_eq!(kept.expose_secret(), "two");

        let fixed = Bearer::fixed(SecretString::from("host"));
        assert!(!fixed.refused(&SecretString::from("host")).await);
    }
}
