//! PVC's answers: `{"message": ...}` with 200 for a success and 510 for a
//! failure of any call that changes something; GETs answer the JSON
//! document, or 404 `{"message": "<Thing> not found."}` when nothing
//! matches; 401 `{"message": "Authentication required"}` without a session
//! or token.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::control::ControlError;
use crate::domain::ServiceError;
use crate::http::error::ApiError;

/// 510: PVC's status for every failed command.
pub const FAILURE: StatusCode = StatusCode::NOT_EXTENDED;

/// A PVC failure: its status and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PvcError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The `message` member.
    pub message: String,
}

impl PvcError {
    /// A failed command (510).
    pub fn failure(message: impl Into<String>) -> PvcError {
        PvcError {
            status: FAILURE,
            message: message.into(),
        }
    }

    /// Nothing matched a GET (404), `what` capitalised as PVC words it.
    pub fn not_found(what: &str) -> PvcError {
        PvcError {
            status: StatusCode::NOT_FOUND,
            message: format!("{what} not found."),
        }
    }

    /// A listing that cannot be answered as asked (400, as PVC answers a bad
    /// regular expression or an unknown pool).
    pub fn bad_request(message: impl Into<String>) -> PvcError {
        PvcError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// 401 with `message`.
    pub fn unauthorized(message: impl Into<String>) -> PvcError {
        PvcError {
            status: StatusCode::UNAUTHORIZED,
            message: message.into(),
        }
    }

    /// What PVC has and Keel does not: a failure naming it.
    pub fn not_provided(what: &str) -> PvcError {
        PvcError::failure(format!(
            "ERROR: {what} is not provided by Keel, which serves PVC's storage endpoints only."
        ))
    }
}

impl From<ServiceError> for PvcError {
    fn from(err: ServiceError) -> PvcError {
        let text = match &err {
            ServiceError::Control(ControlError::NoSpace) => {
                "the pool has no free space left".to_owned()
            }
            other => other.to_string(),
        };
        PvcError::failure(format!("ERROR: {text}"))
    }
}

impl From<ApiError> for PvcError {
    /// Transport-level failures: authentication keeps its status, anything
    /// else (an unreadable body, a refused role) is a failed command.
    fn from(err: ApiError) -> PvcError {
        let (status, _) = err.status();
        let status = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::PAYLOAD_TOO_LARGE => {
                status
            }
            _ => FAILURE,
        };
        PvcError {
            status,
            message: err.to_string(),
        }
    }
}

impl IntoResponse for PvcError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({"message": self.message}))).into_response()
    }
}

/// A successful command: 200 `{"message": text}`.
pub fn done(text: impl Into<String>) -> Response {
    (StatusCode::OK, Json(json!({"message": text.into()}))).into_response()
}

/// What a handler returns.
pub type PvcResult = Result<Response, PvcError>;
