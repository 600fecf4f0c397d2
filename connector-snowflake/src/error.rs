//! Snowflake's errors as the SDK's: its error codes and SQL states mapped to kinds, with
//! the fix.

use std::time::Duration;

use moodbridge_core::redact::Secrets;
use moodbridge_core::{Error, ErrorKind};

use crate::PLATFORM;

/// An error Snowflake answered with (`success: false`): its code, SQL state and message.
pub(crate) fn answered(
    secrets: &Secrets,
    what: &str,
    code: &str,
    sql_state: &str,
    message: &str,
) -> Error {
    let message = secrets.scrub(message);
    let (kind, hint) = match (code, sql_state) {
        // Session or master token expired.
        ("390112" | "390114", _) => (
            ErrorKind::AuthExpired,
            "the session token expired: the client logs in again",
        ),
        // The OAuth access token expired.
        ("390318", _) => (
            ErrorKind::AuthExpired,
            "the OAuth access token expired: log in with a fresh one (a token manager does this)",
        ),
        ("390100" | "390144" | "390302" | "390303", _) => (
            ErrorKind::Auth,
            "check the user and password (or key pair) of the Snowflake login",
        ),
        ("000008", _) | (_, "0A000") => (
            ErrorKind::InvalidInput,
            "send as many statements as declared (execute_multi's count), or 0 for any number",
        ),
        ("390111" | "390113" | "390115", _) => (
            ErrorKind::AuthExpired,
            "the session is gone: the client logs in again",
        ),
        (_, "42S02" | "02000") | ("002003" | "002043", _) => (
            ErrorKind::NotFound,
            "create the object, or check the database, schema and role of the session (names are upper-case unless quoted)",
        ),
        (_, "42501") | ("003001", _) => (
            ErrorKind::Forbidden,
            "grant the role the privilege the statement needs",
        ),
        (_, state) if state.starts_with("42") || state.starts_with("22") => (
            ErrorKind::InvalidInput,
            "fix the statement or its binds; the message names the problem",
        ),
        ("000604" | "000605" | "000630", _) => (
            ErrorKind::Timeout,
            "the statement was cancelled or ran out of time",
        ),
        _ => (
            ErrorKind::Unavailable,
            "Snowflake failed the request; it is retried",
        ),
    };
    Error::new(
        kind,
        format!("Snowflake {what}: {message} (code {code}, SQL state {sql_state})"),
    )
    .with_connector(PLATFORM)
    .with_hint(hint)
}

/// An HTTP status without a Snowflake answer.
pub(crate) fn http(secrets: &Secrets, what: &str, status: u16, body: &str) -> Error {
    let body = moodbridge_core::redact::cap(&secrets.scrub(body), 300);
    let text = format!("Snowflake {what}: HTTP {status}: {body}");
    match status {
        429 => Error::rate_limited(text, Some(Duration::from_secs(1)))
            .with_connector(PLATFORM)
            .with_hint("Snowflake is throttling; the request is retried after a pause"),
        401 | 403 => Error::new(ErrorKind::Auth, text)
            .with_connector(PLATFORM)
            .with_hint("check the Snowflake login and the account identifier"),
        404 => Error::new(ErrorKind::NotFound, text)
            .with_connector(PLATFORM)
            .with_hint("check the account identifier (the URL is https://<account>.snowflakecomputing.com)"),
        s if s >= 500 => Error::unavailable(text)
            .with_connector(PLATFORM)
            .with_hint("Snowflake failed the request; it is retried"),
        _ => Error::new(ErrorKind::Protocol, text).with_connector(PLATFORM),
    }
}

/// A request that got no answer (connection refused, dropped, timed out).
pub(crate) fn transport(secrets: &Secrets, what: &str, e: &reqwest::Error) -> Error {
    let text = format!("Snowflake {what}: {}", secrets.scrub(&e.to_string()));
    let err = if e.is_timeout() {
        Error::new(ErrorKind::Timeout, text)
    } else {
        Error::unavailable(text)
    };
    err.with_connector(PLATFORM)
        .with_hint("the request did not get an answer; it is retried")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(code: &str, state: &str) -> ErrorKind {
        answered(&Secrets::new(), "query", code, state, "message").kind()
    }

    #[test]
    fn snowflake_codes_and_sql_states_map_to_kinds() {
        for (code, state, expected) in [
            ("390112", "", ErrorKind::AuthExpired),
            ("390114", "", ErrorKind::AuthExpired),
            ("390111", "", ErrorKind::AuthExpired),
            ("390100", "08004", ErrorKind::Auth),
            ("390144", "", ErrorKind::Auth),
            ("390303", "", ErrorKind::Auth),
            ("000008", "0A000", ErrorKind::InvalidInput),
            ("002003", "42S02", ErrorKind::NotFound),
            ("002043", "02000", ErrorKind::NotFound),
            ("003001", "42501", ErrorKind::Forbidden),
            ("001003", "42000", ErrorKind::InvalidInput),
            ("100038", "22018", ErrorKind::InvalidInput),
            ("000604", "57014", ErrorKind::Timeout),
            ("000605", "", ErrorKind::Timeout),
            ("000603", "XX000", ErrorKind::Unavailable),
        ] {
            assert_eq!(kind(code, state), expected, "code {code}, state {state}");
        }
    }

    #[test]
    fn http_statuses_map_to_kinds_and_echoed_secrets_are_scrubbed() {
        let secrets = Secrets::new();
        secrets.remember(["token-abc-123"]);
        let throttled = http(&secrets, "query", 429, "slow down");
        assert!(matches!(throttled.kind(), ErrorKind::RateLimited { .. }));
        assert_eq!(http(&secrets, "query", 401, "").kind(), ErrorKind::Auth);
        assert_eq!(http(&secrets, "query", 404, "").kind(), ErrorKind::NotFound);
        let echoed = http(&secrets, "chunk", 503, "bad key token-abc-123");
        assert_eq!(echoed.kind(), ErrorKind::Unavailable);
        assert!(!echoed.to_string().contains("token-abc-123"), "{echoed}");
        let answered = answered(
            &secrets,
            "query",
            "390100",
            "",
            "user token-abc-123 refused",
        );
        assert!(
            !answered.to_string().contains("token-abc-123"),
            "{answered}"
        );
    }
}
