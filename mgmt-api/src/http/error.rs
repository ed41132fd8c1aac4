//! HTTP errors: every failure becomes a status and a JSON body
//! `{"code": <gRPC code>, "message": "...", "details": []}` (the grpc-gateway shape
//! Lightbits clients parse). The status mapping is the one exhaustive match in
//! [`ApiError::status`].

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::dto::ErrorBody;
use crate::auth::AuthError;
use crate::control::ControlError;
use crate::domain::store::StoreError;
use crate::domain::ServiceError;

/// gRPC status codes used in error bodies (google.rpc.Code).
mod grpc {
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const ALREADY_EXISTS: i32 = 6;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const RESOURCE_EXHAUSTED: i32 = 8;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const ABORTED: i32 = 10;
    pub const UNIMPLEMENTED: i32 = 12;
    pub const INTERNAL: i32 = 13;
    pub const UNAVAILABLE: i32 = 14;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// Why an HTTP request failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The domain service refused or failed.
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// Authentication or auth administration failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request itself is malformed (JSON, query, path, headers).
    #[error("{0}")]
    BadRequest(String),
    /// The caller's role does not allow the operation.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// The request body exceeds the limit.
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    /// No route matches.
    #[error("no such endpoint: {0}")]
    NoRoute(String),
    /// The route exists but not with this method.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The request's method.
        method: String,
        /// The request's path (truncated).
        path: String,
    },
    /// A background task died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and gRPC code of this error. The only place errors are
    /// mapped to statuses: exhaustive, with no catch-all arm.
    pub fn status(&self) -> (StatusCode, i32) {
        use grpc::*;
        match self {
            Self::Service(e) => match e {
                ServiceError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
                ServiceError::InvalidState { .. } => (StatusCode::BAD_REQUEST, FAILED_PRECONDITION),
                ServiceError::NotFound { .. } => (StatusCode::NOT_FOUND, NOT_FOUND),
                ServiceError::AlreadyExists { .. } => (StatusCode::CONFLICT, ALREADY_EXISTS),
                ServiceError::OperationInProgress(_) => (StatusCode::CONFLICT, ABORTED),
                ServiceError::InUse(_) => (StatusCode::CONFLICT, FAILED_PRECONDITION),
                ServiceError::EtagMismatch { .. } => {
                    (StatusCode::PRECONDITION_FAILED, FAILED_PRECONDITION)
                }
                ServiceError::TemporaryState { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE)
                }
                ServiceError::Unimplemented(_) => (StatusCode::NOT_IMPLEMENTED, UNIMPLEMENTED),
                ServiceError::TooManyWorkflows { .. }
                | ServiceError::QuotaExceeded(_)
                | ServiceError::NamespaceIdsExhausted { .. } => {
                    (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED)
                }
                ServiceError::Control(c) => match c {
                    ControlError::NotFound(_) => (StatusCode::NOT_FOUND, NOT_FOUND),
                    ControlError::AlreadyExists(_) => (StatusCode::CONFLICT, ALREADY_EXISTS),
                    ControlError::NoSpace => (StatusCode::INSUFFICIENT_STORAGE, RESOURCE_EXHAUSTED),
                    ControlError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
                    ControlError::Unsupported(_) => (StatusCode::NOT_IMPLEMENTED, UNIMPLEMENTED),
                    ControlError::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                    ControlError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                    ControlError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
                },
                ServiceError::Store(s) => match s {
                    StoreError::Io { .. } | StoreError::Corrupt { .. } | StoreError::Fenced(_) => {
                        (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
                    }
                    StoreError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                },
            },
            Self::Auth(e) => match e {
                AuthError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, UNAUTHENTICATED),
                AuthError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
                AuthError::AlreadyExists(_) => (StatusCode::CONFLICT, ALREADY_EXISTS),
                AuthError::NotFound(_) => (StatusCode::NOT_FOUND, NOT_FOUND),
                AuthError::LockedOut { .. } => (StatusCode::TOO_MANY_REQUESTS, RESOURCE_EXHAUSTED),
                AuthError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, UNAVAILABLE),
                AuthError::Store(_) | AuthError::Io { .. } | AuthError::Internal(_) => {
                    (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL)
                }
            },
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, INVALID_ARGUMENT),
            Self::PermissionDenied(_) => (StatusCode::FORBIDDEN, PERMISSION_DENIED),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, INVALID_ARGUMENT),
            Self::NoRoute(_) => (StatusCode::NOT_FOUND, NOT_FOUND),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, UNIMPLEMENTED),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, INTERNAL),
        }
    }
}

impl ApiError {
    /// Seconds a client should wait before it retries, where the server knows.
    fn retry_after_s(&self) -> Option<u64> {
        match self {
            Self::Auth(AuthError::LockedOut { retry_after_s }) => Some(*retry_after_s),
            Self::Auth(AuthError::Overloaded) => Some(1),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status();
        let retry_after_s = self.retry_after_s();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut response = (
            status,
            Json(ErrorBody {
                code,
                message: self.to_string(),
                details: Vec::new(),
            }),
        )
            .into_response();
        if let Some(seconds) = retry_after_s {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}
