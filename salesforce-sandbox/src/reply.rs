//! Salesforce's error replies.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

/// An error response in Salesforce's shape.
pub(crate) struct Failure(pub(crate) StatusCode, pub(crate) Vec<ApiError>);

impl Failure {
    pub(crate) fn new(status: StatusCode, e: ApiError) -> Self {
        Failure(status, vec![e])
    }
    pub(crate) fn bad(e: ApiError) -> Self {
        let status = match e.error_code.as_str() {
            "NOT_FOUND" | "ENTITY_IS_DELETED" => StatusCode::NOT_FOUND,
            "MULTIPLE_CHOICES" => StatusCode::MULTIPLE_CHOICES,
            _ => StatusCode::BAD_REQUEST,
        };
        Failure::new(status, e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        (self.0, axum::Json(self.1)).into_response()
    }
}

pub(crate) type Reply = Result<Response, Failure>;

/// Salesforce's answer for a resource that is not there.
pub(crate) fn not_found() -> Failure {
    Failure::bad(ApiError::new(
        "NOT_FOUND",
        "The requested resource does not exist",
    ))
}
