//! Cinder's error answers: `{"<kind>": {"message": ..., "code": <status>}}`
//! with the kind the status names (`badRequest`, `itemNotFound`, ...).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::control::ControlError;
use crate::domain::ServiceError;
use crate::http::error::ApiError;

/// A Cinder error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CinderError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl CinderError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> CinderError {
        CinderError {
            status,
            message: message.into(),
        }
    }

    /// 400 `badRequest`.
    pub fn bad_request(message: impl Into<String>) -> CinderError {
        CinderError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404 `itemNotFound`.
    pub fn not_found(message: impl Into<String>) -> CinderError {
        CinderError::new(StatusCode::NOT_FOUND, message)
    }

    /// The body's key for this status, as Cinder's fault wrapper names it.
    fn kind(&self) -> &'static str {
        match self.status {
            StatusCode::BAD_REQUEST => "badRequest",
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::NOT_FOUND => "itemNotFound",
            StatusCode::METHOD_NOT_ALLOWED => "badMethod",
            StatusCode::NOT_ACCEPTABLE => "notAcceptable",
            StatusCode::CONFLICT => "conflictingRequest",
            StatusCode::PAYLOAD_TOO_LARGE => "overLimit",
            StatusCode::NOT_IMPLEMENTED => "notImplemented",
            StatusCode::SERVICE_UNAVAILABLE => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

impl CinderError {
    /// Maps a domain error of a call on named things: a taken name is
    /// Cinder's 409, and a missing `what` reads "<shown> <id> could not be
    /// found."; the rest maps as always.
    pub fn from_named(err: ServiceError, what: &str, shown: &str) -> CinderError {
        match err {
            ServiceError::AlreadyExists { .. } => {
                CinderError::new(StatusCode::CONFLICT, err.to_string())
            }
            ServiceError::NotFound { what: w, id } if w == what => {
                CinderError::not_found(format!("{shown} {id} could not be found."))
            }
            other => other.into(),
        }
    }
}

impl From<ServiceError> for CinderError {
    fn from(err: ServiceError) -> CinderError {
        let status = match &err {
            ServiceError::InvalidArgument(_)
            | ServiceError::InvalidState { .. }
            | ServiceError::InUse(_)
            | ServiceError::OperationInProgress(_)
            | ServiceError::AlreadyExists { .. }
            | ServiceError::EtagMismatch { .. } => StatusCode::BAD_REQUEST,
            ServiceError::NotFound { .. } => StatusCode::NOT_FOUND,
            ServiceError::QuotaExceeded(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::TemporaryState { .. } => StatusCode::BAD_REQUEST,
            ServiceError::Unimplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ServiceError::TooManyWorkflows { .. } | ServiceError::NamespaceIdsExhausted { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ServiceError::Control(ControlError::NotFound(_)) => StatusCode::NOT_FOUND,
            ServiceError::Control(ControlError::NoSpace) => StatusCode::PAYLOAD_TOO_LARGE,
            ServiceError::Control(ControlError::InvalidArgument(_)) => StatusCode::BAD_REQUEST,
            ServiceError::Control(_) | ServiceError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        CinderError::new(status, err.to_string())
    }
}

impl From<ApiError> for CinderError {
    fn from(err: ApiError) -> CinderError {
        let (status, _) = err.status();
        CinderError::new(status, err.to_string())
    }
}

impl IntoResponse for CinderError {
    fn into_response(self) -> Response {
        let body = json!({ self.kind(): {"message": self.message, "code": self.status.as_u16()} });
        (self.status, Json(body)).into_response()
    }
}
