//! The one error type of the SDK.
//!
//! Every connector maps what its platform says (HTTP status, vendor error codes, SDK errors)
//! into an [`Error`] at its edge, so nothing above the edge ever looks at raw HTTP. The
//! resilience layer decides what to do from [`Error::kind`] and [`Error::status`] alone.
//!
//! An error carries:
//! - a [`ErrorKind`] — what class of failure this is;
//! - an [`ErrorStatus`] — temporary (worth retrying), permanent (not), or persistent
//!   (was temporary, but still failing after the retries the policy allowed);
//! - the platform — the integration id (`"salesforce:prod"`), so a host with two orgs
//!   knows which one failed — the connector kind (`"salesforce"`) and the operation
//!   (`"salesforce.query"`) it came from;
//! - key-value context (the input that failed: object name, record id, field names …);
//! - a hint saying what to do about it;
//! - the source chain.
//!
//! Secrets never belong in an error. As a second line of defence, context values whose key
//! looks like it names a secret (`token`, `password`, `secret`, `authorization`, `key` …)
//! are replaced with `[REDACTED]` when they are added.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// The result type used throughout the SDK.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What class of failure an [`Error`] is.
///
/// The kind decides the default [`ErrorStatus`] (see [`ErrorKind::default_status`]), which
/// decides whether the retry policy tries again.
///
/// ```
/// use moodbridge_core::ErrorKind;
/// use std::time::Duration;
///
/// let kind = ErrorKind::RateLimited { retry_after: Some(Duration::from_secs(2)) };
/// assert!(kind.default_status().is_temporary());
/// assert!(ErrorKind::NotFound.default_status().is_permanent());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The configuration is invalid or incomplete.
    Config,
    /// The credentials were refused (wrong secret, unknown client, revoked grant).
    Auth,
    /// The access token expired or the platform invalidated the session; refreshing the
    /// token and trying again once is the remedy (the token manager does this).
    AuthExpired,
    /// The principal is authenticated but not allowed to do this.
    Forbidden,
    /// The object, record or resource does not exist.
    NotFound,
    /// The write conflicts with the current state (duplicate value, precondition failed,
    /// version mismatch).
    Conflict,
    /// The request itself is invalid (missing required field, bad value, bad query).
    InvalidInput,
    /// The platform asked us to slow down. `retry_after` is the wait the platform asked
    /// for, when it said.
    RateLimited {
        /// How long the platform asked us to wait before the next call.
        retry_after: Option<Duration>,
    },
    /// The platform is down, overloaded or answered with a server error.
    Unavailable,
    /// The call did not complete in the time allowed.
    Timeout,
    /// The SDK refused to send the call: the circuit breaker is open, the rate limiter is
    /// set to fail fast, or the concurrency limit is full. Nothing reached the platform.
    Rejected,
    /// The platform answered something we could not understand (malformed body, missing
    /// field, unexpected status).
    Protocol,
    /// Data failed an integrity check: a checksum or authentication tag did not match
    /// (corrupted ciphertext, a wrong decryption key, a corrupted upload).
    Integrity,
    /// The platform or connector does not support this operation.
    Unsupported,
    /// A bug or broken invariant inside the SDK.
    Internal,
}

impl ErrorKind {
    /// The status an error of this kind gets unless the connector says otherwise.
    ///
    /// Rate limits, unavailability, timeouts and rejections are temporary; everything else
    /// is permanent. [`ErrorKind::AuthExpired`] is permanent for the generic retry policy:
    /// retrying with the same token cannot help, and the token manager owns the
    /// refresh-and-retry-once rule.
    pub fn default_status(self) -> ErrorStatus {
        match self {
            ErrorKind::RateLimited { .. }
            | ErrorKind::Unavailable
            | ErrorKind::Timeout
            | ErrorKind::Rejected => ErrorStatus::Temporary,
            _ => ErrorStatus::Permanent,
        }
    }

    /// A short, stable, snake_case name of the kind, used in metric labels and logs.
    ///
    /// ```
    /// use moodbridge_core::ErrorKind;
    /// assert_eq!(ErrorKind::RateLimited { retry_after: None }.as_str(), "rate_limited");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Config => "config",
            ErrorKind::Auth => "auth",
            ErrorKind::AuthExpired => "auth_expired",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::RateLimited { .. } => "rate_limited",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Integrity => "integrity",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::Internal => "internal",
        }
    }

    fn default_hint(self) -> &'static str {
        match self {
            ErrorKind::Config => "fix the configuration value named above",
            ErrorKind::Auth => {
                "check the client id, secret or key and that the grant is still valid"
            }
            ErrorKind::AuthExpired => "refresh the access token and try again",
            ErrorKind::Forbidden => {
                "grant the integration user the permission this operation needs"
            }
            ErrorKind::NotFound => "check the name or id; it may have been deleted",
            ErrorKind::Conflict => "re-read the current state and retry the change against it",
            ErrorKind::InvalidInput => "correct the input named above",
            ErrorKind::RateLimited { .. } => {
                "slow down: lower the rate limit or wait for the quota to recover"
            }
            ErrorKind::Unavailable => "the platform is unavailable; retry later",
            ErrorKind::Timeout => "retry later or raise the timeout",
            ErrorKind::Rejected => "the SDK is protecting the platform; retry later",
            ErrorKind::Protocol => {
                "the platform answered unexpectedly; check the API version and report it"
            }
            ErrorKind::Integrity => {
                "the data was altered or the wrong key is in use; restore it from a backup or use the right key"
            }
            ErrorKind::Unsupported => "use an operation this platform supports",
            ErrorKind::Internal => "this is a bug in the SDK; please report it",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether trying again may help.
///
/// ```
/// use moodbridge_core::{Error, ErrorKind, ErrorStatus};
///
/// let err = Error::new(ErrorKind::Unavailable, "503 from the platform");
/// assert_eq!(err.status(), ErrorStatus::Temporary);
/// let err = err.persist();
/// assert_eq!(err.status(), ErrorStatus::Persistent);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorStatus {
    /// Trying again will not help.
    Permanent,
    /// Trying again may succeed.
    Temporary,
    /// The error was temporary but was still failing after the retries the policy allowed.
    Persistent,
}

impl ErrorStatus {
    /// `true` for [`ErrorStatus::Temporary`].
    pub fn is_temporary(self) -> bool {
        self == ErrorStatus::Temporary
    }

    /// `true` for [`ErrorStatus::Permanent`].
    pub fn is_permanent(self) -> bool {
        self == ErrorStatus::Permanent
    }

    fn as_str(self) -> &'static str {
        match self {
            ErrorStatus::Permanent => "permanent",
            ErrorStatus::Temporary => "temporary",
            ErrorStatus::Persistent => "persistent",
        }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type SharedError = std::sync::Arc<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible SDK operation.
///
/// Build one with [`Error::new`] and the `with_*` methods at the edge where the failure is
/// understood; it then travels unchanged.
///
/// ```
/// use moodbridge_core::{Error, ErrorKind};
///
/// let err = Error::new(ErrorKind::InvalidInput, "required field missing")
///     .with_platform("salesforce:prod")
///     .with_operation("salesforce.sobject_create")
///     .with_context("object", "Case")
///     .with_context("fields", "Subject")
///     .with_hint("set Case.Subject before creating the record");
///
/// assert_eq!(err.kind(), ErrorKind::InvalidInput);
/// assert!(!err.is_temporary());
/// assert_eq!(err.context_value("object"), Some("Case"));
/// let text = err.to_string();
/// assert!(text.contains("salesforce:prod"));
/// assert!(text.contains("set Case.Subject"));
/// ```
#[derive(Clone)]
pub struct Error {
    // Boxed so that `Result<T, Error>` stays small: errors are rare, results are everywhere
    // (and live inside every async state machine that holds one across an await).
    inner: Box<ErrorInner>,
}

#[derive(Clone)]
struct ErrorInner {
    kind: ErrorKind,
    status: ErrorStatus,
    message: Cow<'static, str>,
    hint: Option<Cow<'static, str>>,
    platform: Option<Cow<'static, str>>,
    connector: Option<&'static str>,
    operation: Option<Cow<'static, str>>,
    context: Vec<(&'static str, String)>,
    // Shared, so that an error can be cloned: one failed token refresh is reported to
    // every task that waited for it.
    source: Option<SharedError>,
}

/// Context keys whose values are never stored, because they usually hold secrets.
const SECRET_LIKE_KEYS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "authorization",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "cookie",
    "signature",
];

const REDACTED: &str = "[REDACTED]";

fn looks_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_LIKE_KEYS.iter().any(|s| key.contains(s))
}

impl Error {
    /// A new error of `kind` with a message saying what failed. The status is the kind's
    /// [`ErrorKind::default_status`].
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        Error {
            inner: Box::new(ErrorInner {
                kind,
                status: kind.default_status(),
                message: message.into(),
                hint: None,
                platform: None,
                connector: None,
                operation: None,
                context: Vec::new(),
                source: None,
            }),
        }
    }

    /// Shorthand for a [`ErrorKind::Config`] error.
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Config, message)
    }

    /// Shorthand for a [`ErrorKind::InvalidInput`] error.
    pub fn invalid_input(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::InvalidInput, message)
    }

    /// Shorthand for a [`ErrorKind::NotFound`] error.
    pub fn not_found(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// Shorthand for a [`ErrorKind::Unavailable`] error.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// Shorthand for a [`ErrorKind::Internal`] error.
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Shorthand for a [`ErrorKind::RateLimited`] error.
    pub fn rate_limited(
        message: impl Into<Cow<'static, str>>,
        retry_after: Option<Duration>,
    ) -> Self {
        Self::new(ErrorKind::RateLimited { retry_after }, message)
    }

    /// What class of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.inner.kind
    }

    /// Whether trying again may help.
    pub fn status(&self) -> ErrorStatus {
        self.inner.status
    }

    /// `true` when the status is [`ErrorStatus::Temporary`].
    pub fn is_temporary(&self) -> bool {
        self.inner.status.is_temporary()
    }

    /// The wait the platform asked for, for [`ErrorKind::RateLimited`] errors.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.inner.kind {
            ErrorKind::RateLimited { retry_after } => retry_after,
            _ => None,
        }
    }

    /// What failed, without platform, operation, context or hint.
    pub fn message(&self) -> &str {
        &self.inner.message
    }

    /// What to do about it: the connector's hint, or the kind's default.
    pub fn hint(&self) -> &str {
        self.inner
            .hint
            .as_deref()
            .unwrap_or_else(|| self.inner.kind.default_hint())
    }

    /// The platform (integration id) the error came from, if known.
    pub fn platform(&self) -> Option<&str> {
        self.inner.platform.as_deref()
    }

    /// The connector kind the error came from (`"salesforce"`, `"s3"`), if known.
    pub fn connector(&self) -> Option<&'static str> {
        self.inner.connector
    }

    /// The operation that failed, if known.
    pub fn operation(&self) -> Option<&str> {
        self.inner.operation.as_deref()
    }

    /// All key-value context, in the order it was added.
    pub fn context(&self) -> &[(&'static str, String)] {
        &self.inner.context
    }

    /// The value of one context key, the last one added if there are several.
    pub fn context_value(&self, key: &str) -> Option<&str> {
        self.inner
            .context
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Set the connector kind (`"s3"`) if not already set. Connectors tag their errors
    /// with it at the edge; the platform (the integration id) is the policy's to set.
    ///
    /// ```
    /// use moodbridge_core::{Error, Policy};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let policy = Policy::builder("s3:documents").build();
    /// let err = policy
    ///     .call_as("s3.get_object", || async { Err::<(), _>(Error::not_found("no such key").with_connector("s3")) })
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.platform(), Some("s3:documents"));
    /// assert_eq!(err.connector(), Some("s3"));
    /// # });
    /// ```
    pub fn with_connector(mut self, connector: &'static str) -> Self {
        if self.inner.connector.is_none() {
            self.inner.connector = Some(connector);
        }
        self
    }

    /// Set the platform (integration id) if not already set. The first edge to name the
    /// platform wins, so wrappers never overwrite a more precise value.
    pub fn with_platform(mut self, platform: impl Into<Cow<'static, str>>) -> Self {
        if self.inner.platform.is_none() {
            self.inner.platform = Some(platform.into());
        }
        self
    }

    /// Set the operation if not already set (the innermost operation wins).
    pub fn with_operation(mut self, operation: impl Into<Cow<'static, str>>) -> Self {
        if self.inner.operation.is_none() {
            self.inner.operation = Some(operation.into());
        }
        self
    }

    /// Add a key-value pair of context. Values under secret-looking keys are redacted.
    pub fn with_context(mut self, key: &'static str, value: impl fmt::Display) -> Self {
        let value = if looks_secret(key) {
            REDACTED.to_owned()
        } else {
            value.to_string()
        };
        self.inner.context.push((key, value));
        self
    }

    /// Say what the caller should do about this error.
    pub fn with_hint(mut self, hint: impl Into<Cow<'static, str>>) -> Self {
        self.inner.hint = Some(hint.into());
        self
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.inner.source = Some(SharedError::from(source.into()));
        self
    }

    /// Override the status.
    pub fn with_status(mut self, status: ErrorStatus) -> Self {
        self.inner.status = status;
        self
    }

    /// Mark the error temporary (worth retrying).
    pub fn temporary(self) -> Self {
        self.with_status(ErrorStatus::Temporary)
    }

    /// Mark the error permanent (not worth retrying).
    pub fn permanent(self) -> Self {
        self.with_status(ErrorStatus::Permanent)
    }

    /// Mark a temporary error persistent: the retries allowed have been spent. Permanent
    /// errors stay permanent.
    pub fn persist(mut self) -> Self {
        if self.inner.status == ErrorStatus::Temporary {
            self.inner.status = ErrorStatus::Persistent;
        }
        self
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.inner.platform, &self.inner.operation) {
            (Some(p), Some(o)) => write!(f, "{p} {o}: ")?,
            (Some(p), None) => write!(f, "{p}: ")?,
            (None, Some(o)) => write!(f, "{o}: ")?,
            (None, None) => {}
        }
        write!(
            f,
            "{} ({}, {}",
            self.inner.message,
            self.inner.kind,
            self.inner.status.as_str()
        )?;
        if let Some(after) = self.retry_after() {
            write!(f, ", retry after {}ms", after.as_millis())?;
        }
        f.write_str(")")?;
        if !self.inner.context.is_empty() {
            f.write_str(" [")?;
            for (i, (k, v)) in self.inner.context.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{k}={v}")?;
            }
            f.write_str("]")?;
        }
        write!(f, "; {}", self.hint())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.inner.kind)
            .field("status", &self.inner.status)
            .field("message", &self.inner.message);
        if let Some(p) = &self.inner.platform {
            d.field("platform", p);
        }
        if let Some(c) = &self.inner.connector {
            d.field("connector", c);
        }
        if let Some(o) = &self.inner.operation {
            d.field("operation", o);
        }
        if !self.inner.context.is_empty() {
            d.field("context", &self.inner.context);
        }
        if let Some(h) = &self.inner.hint {
            d.field("hint", h);
        }
        if let Some(s) = &self.inner.source {
            d.field("source", &s.to_string());
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.inner
            .source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<serde_json::Error> for Error {
    fn from(err: serde_json::Error) -> Self {
        Error::new(ErrorKind::Protocol, "invalid JSON").with_source(err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn kinds_that_may_recover_are_temporary_by_default() {
        for kind in [
            ErrorKind::RateLimited { retry_after: None },
            ErrorKind::Unavailable,
            ErrorKind::Timeout,
            ErrorKind::Rejected,
        ] {
            assert!(Error::new(kind, "x").is_temporary(), "{kind}");
        }
        for kind in [
            ErrorKind::Config,
            ErrorKind::Auth,
            ErrorKind::AuthExpired,
            ErrorKind::Forbidden,
            ErrorKind::NotFound,
            ErrorKind::Conflict,
            ErrorKind::InvalidInput,
            ErrorKind::Protocol,
            ErrorKind::Unsupported,
            ErrorKind::Internal,
        ] {
            assert_eq!(
                Error::new(kind, "x").status(),
                ErrorStatus::Permanent,
                "{kind}"
            );
        }
    }

    #[test]
    fn persist_only_changes_temporary_errors() {
        assert_eq!(
            Error::unavailable("x").persist().status(),
            ErrorStatus::Persistent
        );
        assert_eq!(
            Error::not_found("x").persist().status(),
            ErrorStatus::Permanent
        );
    }

    #[test]
    fn display_names_platform_operation_context_and_hint() {
        let err = Error::rate_limited("REQUEST_LIMIT_EXCEEDED", Some(Duration::from_secs(3)))
            .with_platform("salesforce:prod")
            .with_operation("query")
            .with_context("object", "Case");
        assert_eq!(
            err.to_string(),
            "salesforce:prod query: REQUEST_LIMIT_EXCEEDED (rate_limited, temporary, retry after 3000ms) \
             [object=Case]; slow down: lower the rate limit or wait for the quota to recover"
        );
    }

    #[test]
    fn secret_looking_context_values_are_redacted_everywhere() {
        let err = Error::new(ErrorKind::Auth, "login refused")
            .with_context("access_token", "00Dxx!AQ4AQFake")
            .with_context("client_secret", "s3cr3t")
            .with_context("Authorization", "Bearer abc");
        let shown = format!("{err} {err:?}");
        for secret in ["00Dxx!AQ4AQFake", "s3cr3t", "Bearer abc"] {
            assert!(!shown.contains(secret), "{secret} leaked in {shown}");
        }
        assert_eq!(err.context_value("access_token"), Some(REDACTED));
    }

    #[test]
    fn first_platform_and_operation_win() {
        let err = Error::unavailable("x")
            .with_platform("inner")
            .with_operation("inner_op")
            .with_platform("outer")
            .with_operation("outer_op");
        assert_eq!(err.platform(), Some("inner"));
        assert_eq!(err.operation(), Some("inner_op"));
    }

    #[test]
    fn source_chain_is_kept() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = Error::unavailable("connection lost").with_source(io);
        assert_eq!(
            err.source().map(|s| s.to_string()),
            Some("reset by peer".to_owned())
        );
    }
}
