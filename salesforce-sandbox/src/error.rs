//! The error body the sandbox answers with, in Salesforce's published REST format:
//! `[{"message": "...", "errorCode": "...", "fields": [...]}]`. The sandbox has its own
//! type, not the connector's parser: a misreading of the format shared by the client and
//! the fake would keep every test green and fail against a real org.

use serde::{Deserialize, Serialize};

/// One error of a Salesforce error answer.
///
/// ```
/// use salesforce_sandbox::ApiError;
/// let e = ApiError::new("NOT_FOUND", "The requested resource does not exist");
/// assert_eq!(
///     serde_json::to_string(&e).unwrap(),
///     r#"{"message":"The requested resource does not exist","errorCode":"NOT_FOUND","fields":[]}"#
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub message: String,
    /// Salesforce's code (`INVALID_FIELD`, `DUPLICATE_VALUE` …).
    #[serde(rename = "errorCode")]
    pub error_code: String,
    /// The fields at fault.
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

    /// The same error as one record's result writes it (sObject Collections and Tree
    /// answers): Salesforce's `Error` object, whose code is `statusCode`.
    pub(crate) fn for_record(&self) -> serde_json::Value {
        serde_json::json!({
            "statusCode": self.error_code,
            "message": self.message,
            "fields": self.fields,
        })
    }
}
