//! `GET /metrics`: the Prometheus text exposition of this node — storage
//! metrics from the control port (volumes' I/O, the pool, connections) and
//! the REST API's own request counts by method and status. Not part of the
//! Lightbits documents (and so not in the OpenAPI document); cluster admins
//! only, so a scraper uses a bearer token (`bearer_token_file`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;

use super::error::ApiError;
use super::extract::Caller;
use super::{blocking, AppState};
use crate::control::ControlError;

/// Requests the API answered, by method and status code.
#[derive(Debug, Default)]
pub struct RestMetrics {
    answered: Mutex<BTreeMap<(String, u16), u64>>,
}

impl RestMetrics {
    fn count(&self, method: &Method, status: StatusCode) {
        *self
            .answered
            .lock()
            .entry((method.as_str().to_owned(), status.as_u16()))
            .or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "# HELP keel_api_requests_total REST requests answered, by method and status.\n# TYPE keel_api_requests_total counter"
        );
        for ((method, status), count) in self.answered.lock().iter() {
            let _ = writeln!(
                out,
                "keel_api_requests_total{{method=\"{method}\",status=\"{status}\"}} {count}"
            );
        }
    }
}

/// Counts every answer, whatever route or error produced it.
pub async fn count_requests(
    State(metrics): State<Arc<RestMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let response = next.run(request).await;
    metrics.count(&method, response.status());
    response
}

/// The Prometheus exposition of this node (cluster admin only).
pub async fn metrics(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Response, ApiError> {
    if !caller.is_cluster_admin() {
        return Err(ApiError::PermissionDenied(
            "only a cluster admin may read the metrics".to_owned(),
        ));
    }
    let rest = state.rest_metrics.clone();
    let mut text = blocking(&state, move |s| match s.control().prometheus_metrics() {
        Ok(text) => Ok(text),
        Err(ControlError::Unsupported(_)) => Ok(String::new()),
        Err(err) => Err(crate::domain::ServiceError::from(err).into()),
    })
    .await?;
    rest.render(&mut text);
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
