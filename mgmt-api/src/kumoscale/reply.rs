//! KumoScale's answers: HTTP 200 with `{"status": <result code>,
//! "description": <text>}` for every call that changes something, success or
//! not, plus the new resource's id where the document names one; GET calls
//! answer bare objects or arrays, and their failures the same status body.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use crate::control::ControlError;
use crate::domain::ServiceError;
use crate::http::error::ApiError;

/// A KumoScale outcome that is not `Success`: the result code as the
/// document spells it and a description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KsError {
    /// The HTTP status (200, as documented, except for authentication).
    pub http: StatusCode,
    /// The result code (`NotExists`, `TenantCapacityExceeded`, ...).
    pub status: &'static str,
    /// What went wrong, for people.
    pub description: String,
}

impl KsError {
    /// A documented result code with HTTP 200.
    pub fn new(status: &'static str, description: impl Into<String>) -> KsError {
        KsError {
            http: StatusCode::OK,
            status,
            description: description.into(),
        }
    }

    /// `InvalidInput`: the request breaks the document's rules.
    pub fn invalid(description: impl Into<String>) -> KsError {
        KsError::new("InvalidInput", description)
    }

    /// Maps a domain error, naming the result code a missing resource or a
    /// resource in use answers in this call.
    pub fn from_service(
        err: ServiceError,
        not_found: &'static str,
        in_use: &'static str,
    ) -> KsError {
        let text = err.to_string();
        let status = match &err {
            ServiceError::InvalidArgument(_) => "InvalidInput",
            ServiceError::NotFound {
                what: "project", ..
            } => "TenantNotFound",
            ServiceError::NotFound { .. } => not_found,
            ServiceError::AlreadyExists { .. } => "AlreadyExists",
            ServiceError::QuotaExceeded(_) => "TenantCapacityExceeded",
            ServiceError::InUse(_) | ServiceError::OperationInProgress(_) => in_use,
            ServiceError::Control(ControlError::NoSpace) => "NoFreeSpace",
            ServiceError::NamespaceIdsExhausted { .. } => "NoMatchingBackend",
            ServiceError::InvalidState { .. }
            | ServiceError::TemporaryState { .. }
            | ServiceError::EtagMismatch { .. }
            | ServiceError::Unimplemented(_)
            | ServiceError::TooManyWorkflows { .. }
            | ServiceError::Control(_)
            | ServiceError::Store(_) => "NotAvailable",
        };
        KsError::new(status, text)
    }
}

impl From<ServiceError> for KsError {
    /// The mapping most calls on volumes and snapshots answer with.
    fn from(err: ServiceError) -> KsError {
        KsError::from_service(err, "NotExists", "VolumeIsInUse")
    }
}

impl From<ApiError> for KsError {
    /// Transport-level failures (authentication, unreadable bodies).
    fn from(err: ApiError) -> KsError {
        let (http, _) = err.status();
        let status = match http {
            StatusCode::UNAUTHORIZED => "Unauthorized",
            StatusCode::FORBIDDEN => "Forbidden",
            _ => "InvalidInput",
        };
        let http = if matches!(http, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
            http
        } else {
            StatusCode::OK
        };
        KsError {
            http,
            status,
            description: err.to_string(),
        }
    }
}

impl IntoResponse for KsError {
    fn into_response(self) -> Response {
        (
            self.http,
            Json(json!({"description": self.description, "status": self.status})),
        )
            .into_response()
    }
}

/// `Success`, with the extra fields the call documents (`tenantId`,
/// `persistentId`, ...).
pub fn success(description: impl Into<String>, extra: &[(&str, Value)]) -> Response {
    let mut body = Map::new();
    body.insert("description".into(), Value::String(description.into()));
    body.insert("status".into(), Value::String("Success".into()));
    for (key, value) in extra {
        body.insert((*key).to_owned(), value.clone());
    }
    Json(Value::Object(body)).into_response()
}

/// What a handler returns.
pub type KsResult = Result<Response, KsError>;
