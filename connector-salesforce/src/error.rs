//! Salesforce's errors, mapped into the SDK's [`Error`] at the edge.
//!
//! Salesforce answers a failed REST call with an HTTP status and a JSON array of
//! `{message, errorCode, fields}`. [`map_error`] turns that into one [`Error`] whose
//! [`ErrorKind`] drives the resilience policy, keeping the error code and the fields in
//! the context (`error_code`, `fields`) so callers and logs can act on them:
//!
//! | Salesforce | kind |
//! |---|---|
//! | `REQUEST_LIMIT_EXCEEDED` (HTTP 403) | `RateLimited` (retry-after from the header, else none: not hammered) |
//! | `INVALID_SESSION_ID` (401) | `AuthExpired` |
//! | `ENTITY_IS_DELETED`, `NOT_FOUND`, 404 | `NotFound` |
//! | `DUPLICATE_VALUE`, `DUPLICATES_DETECTED`, 409, 412 | `Conflict` |
//! | `REQUIRED_FIELD_MISSING`, `INVALID_FIELD`, `MALFORMED_QUERY`, `INVALID_TYPE`, `FIELD_CUSTOM_VALIDATION_EXCEPTION`, other 400 | `InvalidInput` (naming the fields) |
//! | `INSUFFICIENT_ACCESS*`, other 403 | `Forbidden` |
//! | 420 / 429 | `RateLimited` |
//! | 500, 502, 503, 504, `SERVER_UNAVAILABLE`, `UNABLE_TO_LOCK_ROW` | `Unavailable` (temporary) |

use std::time::Duration;

use moodbridge_core::{Error, ErrorKind, ErrorStatus};
use serde::{Deserialize, Serialize};

/// The platform name errors carry.
pub const PLATFORM: &str = "salesforce";

/// One entry of Salesforce's error array.
///
/// ```
/// use connector_salesforce::error::ApiError;
/// let errors: Vec<ApiError> = serde_json::from_str(
///     r#"[{"message":"Required fields are missing: [LastName]","errorCode":"REQUIRED_FIELD_MISSING","fields":["LastName"]}]"#,
/// ).unwrap();
/// assert_eq!(errors[0].error_code, "REQUIRED_FIELD_MISSING");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong, in Salesforce's words.
    pub message: String,
    /// Salesforce's code (`INVALID_FIELD`, `DUPLICATE_VALUE` …).
    #[serde(rename = "errorCode")]
    pub error_code: String,
    /// The fields at fault, when Salesforce names them.
    #[serde(default)]
    pub fields: Vec<String>,
}

impl ApiError {
    /// An error with no fields.
    pub fn new(error_code: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            message: message.into(),
            error_code: error_code.into(),
            fields: Vec::new(),
        }
    }
}

/// One error of one record's result — in sObject Collections answers (`SaveResult`,
/// `UpsertResult`, `DeleteResult`) and sObject Tree answers. Salesforce's `Error` object
/// names its code `statusCode`, where the REST error array ([`ApiError`]) says
/// `errorCode`.
///
/// ```
/// use connector_salesforce::error::RecordError;
/// let e: RecordError = serde_json::from_str(
///     r#"{"statusCode":"MALFORMED_ID","message":"malformed id 001RM000003oLrB000","fields":[]}"#,
/// ).unwrap();
/// assert_eq!(e.status_code, "MALFORMED_ID");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// Salesforce's code (`REQUIRED_FIELD_MISSING`, `DUPLICATE_VALUE` …).
    #[serde(rename = "statusCode")]
    pub status_code: String,
    /// What went wrong, in Salesforce's words.
    #[serde(default)]
    pub message: String,
    /// The fields at fault, when Salesforce names them.
    #[serde(default)]
    pub fields: Vec<String>,
}

/// An sObject Tree answer: `hasErrors` and, on failure, the records at fault.
#[derive(Deserialize)]
struct TreeAnswer {
    #[serde(rename = "hasErrors")]
    has_errors: bool,
    results: Vec<TreeResult>,
}

#[derive(Deserialize)]
struct TreeResult {
    #[serde(rename = "referenceId", default)]
    reference_id: String,
    #[serde(default)]
    errors: Vec<RecordError>,
}

/// The errors of a failed answer: Salesforce's REST error array (or one such object),
/// or the per-record errors of a failed sObject Tree request.
fn errors_of(body: &[u8]) -> Vec<ApiError> {
    if let Ok(errors) = serde_json::from_slice::<Vec<ApiError>>(body) {
        return errors;
    }
    if let Ok(e) = serde_json::from_slice::<ApiError>(body) {
        return vec![e];
    }
    match serde_json::from_slice::<TreeAnswer>(body) {
        Ok(tree) if tree.has_errors => tree
            .results
            .into_iter()
            .flat_map(|r| {
                let reference = r.reference_id;
                r.errors.into_iter().map(move |e| ApiError {
                    message: format!("record {reference}: {}", e.message),
                    error_code: e.status_code,
                    fields: e.fields,
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The kind of an error code, regardless of the HTTP status (`None` for codes that do not
/// decide the kind by themselves).
pub fn kind_of_code(code: &str) -> Option<ErrorKind> {
    Some(match code {
        "REQUEST_LIMIT_EXCEEDED" | "TXN_SECURITY_METERING_ERROR" => {
            ErrorKind::RateLimited { retry_after: None }
        }
        "INVALID_SESSION_ID" => ErrorKind::AuthExpired,
        "INVALID_AUTH_HEADER" | "INVALID_CLIENT" | "INVALID_GRANT" => ErrorKind::Auth,
        "ENTITY_IS_DELETED" | "NOT_FOUND" | "INVALID_CROSS_REFERENCE_KEY" => ErrorKind::NotFound,
        "DUPLICATE_VALUE" | "DUPLICATES_DETECTED" | "DUPLICATE_EXTERNAL_ID" => ErrorKind::Conflict,
        "REQUIRED_FIELD_MISSING"
        | "INVALID_FIELD"
        | "INVALID_FIELD_FOR_INSERT_UPDATE"
        | "MALFORMED_QUERY"
        | "MALFORMED_ID"
        | "INVALID_TYPE"
        | "INVALID_QUERY_FILTER_OPERATOR"
        | "FIELD_CUSTOM_VALIDATION_EXCEPTION"
        | "STRING_TOO_LONG"
        | "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
        | "JSON_PARSER_ERROR"
        | "INVALID_EMAIL_ADDRESS" => ErrorKind::InvalidInput,
        "INSUFFICIENT_ACCESS"
        | "INSUFFICIENT_ACCESS_OR_READONLY"
        | "INSUFFICIENT_ACCESS_ON_CROSS_REFERENCE_ENTITY"
        | "API_DISABLED_FOR_ORG"
        | "API_CURRENTLY_DISABLED" => ErrorKind::Forbidden,
        "SERVER_UNAVAILABLE" | "UNABLE_TO_LOCK_ROW" => ErrorKind::Unavailable,
        _ => return None,
    })
}

/// Salesforce's statuses where they differ from the common fallback
/// ([`moodbridge_core::raw::kind_of_status`]): a 401 is an expired or revoked session (the
/// token manager refreshes it), 420 is Salesforce's throttling.
fn kind_of_status(status: u16) -> ErrorKind {
    match status {
        401 => ErrorKind::AuthExpired,
        420 => ErrorKind::RateLimited { retry_after: None },
        other => moodbridge_core::raw::kind_of_status(other),
    }
}

/// Map a failed response — its status, its `Retry-After` (seconds) if any, and its body —
/// into an [`Error`] for `operation`. A body that is not Salesforce's error array is kept
/// (shortened) in the message; nothing in it is a secret (Salesforce never echoes
/// credentials), but it is still cut to 500 characters.
///
/// ```
/// use connector_salesforce::error::map_error;
/// use moodbridge_core::ErrorKind;
///
/// let body = r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
/// let err = map_error(401, None, body.as_bytes(), "salesforce.query");
/// assert_eq!(err.kind(), ErrorKind::AuthExpired);
/// assert_eq!(err.context_value("error_code"), Some("INVALID_SESSION_ID"));
/// ```
pub fn map_error(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    operation: &str,
) -> Error {
    let errors = errors_of(body);
    let first = errors.first();
    let mut kind = first
        .and_then(|e| kind_of_code(&e.error_code))
        .unwrap_or_else(|| kind_of_status(status));
    if let ErrorKind::RateLimited { .. } = kind {
        kind = ErrorKind::RateLimited { retry_after };
    }
    let message = match first {
        Some(e) => {
            let mut m = format!("{operation} failed: {} ({})", e.message, e.error_code);
            if errors.len() > 1 {
                m.push_str(&format!(" and {} more error(s)", errors.len() - 1));
            }
            m
        }
        None => {
            let text = String::from_utf8_lossy(body);
            let text: String = text.chars().take(500).collect();
            format!("{operation} failed with HTTP {status}: {text}")
        }
    };
    let mut err = Error::new(kind, message)
        .with_connector(PLATFORM)
        .with_operation(operation.to_owned())
        .with_context("http_status", status);
    if let Some(e) = first {
        err = err.with_context("error_code", &e.error_code);
        let fields: Vec<&str> = errors
            .iter()
            .flat_map(|e| e.fields.iter().map(String::as_str))
            .collect();
        if !fields.is_empty() {
            err = err.with_context("fields", fields.join(","));
        }
    }
    // REQUEST_LIMIT_EXCEEDED is both the daily allowance ("TotalRequests Limit exceeded")
    // and the concurrent long-request limit ("ConcurrentPerOrgLongTxn Limit exceeded");
    // only the second clears by itself within seconds.
    let daily_limit = first.is_some_and(|e| {
        e.error_code == "REQUEST_LIMIT_EXCEEDED" && !e.message.contains("Concurrent")
    });
    match kind {
        ErrorKind::RateLimited { .. } if daily_limit => err
            // The org's daily API allowance is spent: retrying now only burns what is left.
            .with_status(ErrorStatus::Permanent)
            .with_hint("the org's API request limit is reached: wait for the 24-hour window to free requests, or raise the limit"),
        ErrorKind::InvalidInput if first.is_some_and(|e| !e.fields.is_empty()) => {
            err.with_hint("correct the fields named above")
        }
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failed sObject Tree request (Salesforce's published example) names the record
    /// and its error code, as a REST error array does.
    #[test]
    fn a_documented_tree_failure_names_the_record_and_its_code() {
        let body = include_bytes!("../tests/fixtures/tree-failure.json");
        let err = map_error(400, None, body, op::COMPOSITE_TREE);
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(
            err.context_value("error_code"),
            Some("INVALID_EMAIL_ADDRESS")
        );
        assert_eq!(err.context_value("fields"), Some("Email"));
        assert!(
            err.to_string()
                .contains("record ref2: Email: invalid email address"),
            "{err}"
        );
    }
    use moodbridge_core::observe::op::salesforce as op;

    fn body(code: &str, fields: &[&str]) -> Vec<u8> {
        serde_json::to_vec(&[ApiError {
            message: format!("{code} happened"),
            error_code: code.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }])
        .unwrap_or_default()
    }

    #[test]
    fn error_codes_decide_the_kind() {
        let cases: [(u16, &str, ErrorKind); 9] = [
            (
                403,
                "REQUEST_LIMIT_EXCEEDED",
                ErrorKind::RateLimited { retry_after: None },
            ),
            (401, "INVALID_SESSION_ID", ErrorKind::AuthExpired),
            (404, "ENTITY_IS_DELETED", ErrorKind::NotFound),
            (404, "NOT_FOUND", ErrorKind::NotFound),
            (400, "DUPLICATE_VALUE", ErrorKind::Conflict),
            (400, "REQUIRED_FIELD_MISSING", ErrorKind::InvalidInput),
            (400, "INVALID_FIELD", ErrorKind::InvalidInput),
            (403, "INSUFFICIENT_ACCESS_OR_READONLY", ErrorKind::Forbidden),
            (503, "SERVER_UNAVAILABLE", ErrorKind::Unavailable),
        ];
        for (status, code, kind) in cases {
            let err = map_error(status, None, &body(code, &[]), op::SOBJECT_CREATE);
            assert_eq!(err.kind(), kind, "{code}");
            assert_eq!(err.context_value("error_code"), Some(code));
            assert_eq!(err.connector(), Some("salesforce"));
            assert_eq!(err.operation(), Some(op::SOBJECT_CREATE));
        }
    }

    #[test]
    fn invalid_input_names_the_fields() {
        let err = map_error(
            400,
            None,
            &body("REQUIRED_FIELD_MISSING", &["LastName", "Email"]),
            op::SOBJECT_CREATE,
        );
        assert_eq!(err.context_value("fields"), Some("LastName,Email"));
        assert!(err.hint().contains("fields"), "{}", err.hint());
    }

    #[test]
    fn the_request_limit_is_rate_limited_but_not_retried() {
        let err = map_error(403, None, &body("REQUEST_LIMIT_EXCEEDED", &[]), op::QUERY);
        assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }));
        assert!(
            !err.is_temporary(),
            "a spent daily allowance must not be hammered"
        );
        // A plain 429 with Retry-After is temporary and carries the wait.
        let err = map_error(429, Some(Duration::from_secs(3)), b"", op::QUERY);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(3)));
        assert!(err.is_temporary());
    }

    #[test]
    fn the_concurrent_request_limit_is_temporary() {
        let body = serde_json::to_vec(&[ApiError::new(
            "REQUEST_LIMIT_EXCEEDED",
            "ConcurrentPerOrgLongTxn Limit exceeded",
        )])
        .unwrap_or_default();
        let err = map_error(403, None, &body, op::QUERY);
        assert!(matches!(err.kind(), ErrorKind::RateLimited { .. }));
        assert!(err.is_temporary());
    }

    #[test]
    fn statuses_decide_when_the_body_does_not() {
        assert_eq!(
            map_error(502, None, b"<html>bad gateway</html>", "q").kind(),
            ErrorKind::Unavailable
        );
        assert!(map_error(503, None, b"", "q").is_temporary());
        assert_eq!(map_error(404, None, b"", "q").kind(), ErrorKind::NotFound);
        assert_eq!(map_error(412, None, b"", "q").kind(), ErrorKind::Conflict);
        let err = map_error(500, None, "x".repeat(2_000).as_bytes(), "q");
        assert!(err.message().len() < 700, "long bodies are cut");
    }

    #[test]
    fn a_single_error_object_is_understood_too() {
        let err = map_error(
            400,
            None,
            br#"{"message":"bad","errorCode":"MALFORMED_QUERY"}"#,
            op::QUERY,
        );
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert_eq!(err.context_value("error_code"), Some("MALFORMED_QUERY"));
    }
}
