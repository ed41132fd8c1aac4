//! The HTTP dialect: Lightbits cluster API v2 routes (cluster, nodes, projects,
//! volumes, snapshots), the DMS v1 routes (login, thick clones, workflows), auth
//! administration, Keel's extensions in the v2 style (the scrub), and
//! `/openapi.json`.

pub mod cluster;
pub mod convert;
pub mod dto;
pub mod error;
pub mod extract;
pub mod loose;
pub mod metrics;
pub mod openapi;
pub mod qos;
pub mod read_first;
pub mod schema;
pub mod scrub;
pub mod session;
pub mod snapshots;
pub mod volumes;
pub mod workflows;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use axum::Router;

use crate::auth::Authenticator;
use crate::domain::Service;
use error::ApiError;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The domain service.
    pub service: Arc<Service>,
    /// The authenticator.
    pub auth: Arc<Authenticator>,
    /// This server's management endpoint as `host:port`.
    pub api_endpoint: String,
    /// Largest accepted request body.
    pub body_limit_bytes: usize,
    /// The API's request counts, for `/metrics`.
    pub rest_metrics: Arc<metrics::RestMetrics>,
    /// Whether the Cinder dialect takes `X-Auth-Token: user:project` as
    /// Cinder's noauth mode does (every such caller an administrator).
    pub cinder_noauth: bool,
    /// The DMS facade's key and state.
    pub dms: Arc<crate::dms::Dms>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("api_endpoint", &self.api_endpoint)
            .finish_non_exhaustive()
    }
}

/// Runs blocking domain work off the async executor.
pub async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Service) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = Arc::clone(&state.service);
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))?
}

async fn no_route(uri: axum::http::Uri) -> axum::response::Response {
    use axum::response::IntoResponse;
    // Paths under /v3 are the Cinder dialect's: its error shape.
    if uri.path() == "/v3" || uri.path().starts_with("/v3/") {
        return crate::cinder::no_route(uri.path()).into_response();
    }
    ApiError::NoRoute(extract::truncate(uri.path())).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: extract::truncate(uri.path()),
    }
}

/// The full router.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit_bytes;
    let rest_metrics = state.rest_metrics.clone();
    Router::new()
        .route("/login", post(session::login))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi::document))
        .route("/api/v2/users", post(session::create_user))
        .route(
            "/api/v2/credentials",
            get(session::list_credentials).post(session::create_credential),
        )
        .route(
            "/api/v2/credentials/{id}",
            axum::routing::delete(session::delete_credential),
        )
        .route("/api/v2/cluster", get(cluster::cluster))
        .route(
            "/api/v2/cluster/scrub",
            get(scrub::scrub_status).post(scrub::start_scrub),
        )
        .route("/api/v2/clusterinfo", get(cluster::cluster_info))
        .route("/api/v2/nodes", get(cluster::nodes))
        .route("/api/v2/nodes/{UUID}", get(cluster::node))
        .route(
            "/api/v2/projects",
            get(cluster::list_projects).post(cluster::create_project),
        )
        .route(
            "/api/v2/projects/{projectName}",
            get(cluster::get_project).put(cluster::update_project),
        )
        .route("/api/v2/qosPolicies", get(qos::list).post(qos::create))
        .route(
            "/api/v2/qosPolicies/{UUID}",
            get(qos::get_one).put(qos::update).delete(qos::delete),
        )
        .route(
            "/api/v2/projects/{projectName}/qosPolicies",
            get(qos::list).post(qos::create),
        )
        .route(
            "/api/v2/projects/{projectName}/qosPolicies/{UUID}",
            get(qos::get_one).put(qos::update).delete(qos::delete),
        )
        .route("/api/v2/volumes", get(volumes::list).post(volumes::create))
        .route("/api/v2/volumes/", get(volumes::lookup))
        .route(
            "/api/v2/volumes/{UUID}",
            get(volumes::get_one)
                .put(volumes::update)
                .delete(volumes::delete),
        )
        .route("/api/v2/volumes/{UUID}/rollback", put(volumes::rollback))
        .route(
            "/api/v2/projects/{projectName}/volumes",
            get(volumes::list).post(volumes::create),
        )
        .route(
            "/api/v2/projects/{projectName}/volumes/",
            get(volumes::lookup),
        )
        .route(
            "/api/v2/projects/{projectName}/volumes/{UUID}",
            get(volumes::get_one)
                .put(volumes::update)
                .delete(volumes::delete),
        )
        .route(
            "/api/v2/projects/{projectName}/volumes/{UUID}/rollback",
            put(volumes::rollback),
        )
        .route(
            "/api/v2/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route("/api/v2/snapshots/", get(snapshots::lookup))
        .route(
            "/api/v2/snapshots/{UUID}",
            get(snapshots::get_one).delete(snapshots::delete),
        )
        .route(
            "/api/v2/projects/{projectName}/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/api/v2/projects/{projectName}/snapshots/",
            get(snapshots::lookup),
        )
        .route(
            "/api/v2/projects/{projectName}/snapshots/{UUID}",
            get(snapshots::get_one).delete(snapshots::delete),
        )
        .route(
            "/api/v1/volumes/thickclone",
            post(workflows::thick_clone_volume),
        )
        .route(
            "/api/v1/snapshots/thickclone",
            post(workflows::thick_clone_snapshot),
        )
        .route("/api/v1/workflows", get(workflows::list))
        .route("/api/v1/workflows/{workflowId}", get(workflows::get_one))
        .route(
            "/api/v1/workflows/{workflowId}/cancel",
            post(workflows::cancel),
        )
        .merge(crate::cinder::routes())
        .merge(crate::dms::routes())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost last: the limit wraps the reader that enforces it.
        .layer(axum::middleware::from_fn_with_state(
            limit,
            read_first::read_body_first,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            rest_metrics,
            metrics::count_requests,
        ))
        .with_state(state)
}
