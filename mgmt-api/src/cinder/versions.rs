//! The versions document (`GET /`) and the v3 version (`GET /v3/`), which
//! clients read to learn the microversions served.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::{MAX_VERSION, MIN_VERSION};
use crate::http::AppState;

fn v3(base: &str) -> Value {
    json!({
        "id": "v3.0",
        "status": "CURRENT",
        "version": format!("{}.{}", MAX_VERSION.0, MAX_VERSION.1),
        "min_version": format!("{}.{}", MIN_VERSION.0, MIN_VERSION.1),
        "updated": "2023-08-31T00:00:00Z",
        "links": [{"rel": "self", "href": format!("{base}/v3/")}],
        "media-types": [{"base": "application/json", "type": "application/vnd.openstack.volume+json;version=3"}],
    })
}

/// The scheme and authority this request reached, for links.
fn base(state: &AppState, headers: &HeaderMap) -> String {
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or(&state.api_endpoint);
    format!("https://{host}")
}

/// `GET /`: 300 Multiple Choices with the one version served.
pub(super) async fn versions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    (
        StatusCode::MULTIPLE_CHOICES,
        Json(json!({"versions": [v3(&base(&state, &headers))]})),
    )
        .into_response()
}

/// `GET /v3/`.
pub(super) async fn version_v3(State(state): State<AppState>, headers: HeaderMap) -> Response {
    Json(json!({"versions": [v3(&base(&state, &headers))]})).into_response()
}
