//! The PVC storage API dialect (seed 003) over the domain service: the API
//! root, token sessions, the cluster's nodes, storage status and
//! utilisation, OSDs (each node's pool), RBD pools (Keel projects), volumes
//! (`pool/volume`, with rename and grow) and snapshots
//! (`pool/volume/snapshot`). Served on a listener of its own (`pvc_listen`),
//! as PVC's `/api/v1` paths would collide with DMS's on the main one.
//!
//! Conventions of the document kept here: values come from the query string
//! or form fields for every method, flags count by presence, sizes are bytes
//! or carry one binary prefix letter (`20G`), `limit` is a fuzzy regular
//! expression over names, a single-object GET is the listing filtered by the
//! exact name, commands answer 200 or 510 with `{"message"}` once done
//! (deletes wait for the engine), and pool and OSD removal need
//! `yes_i_really_mean_it`.
//!
//! What Keel does not provide answers 510 with a message saying so, never
//! 200: VMs, client networks, DHCP and ACLs, Ceph cluster options, adding,
//! removing or draining OSDs, and coordinator hand-over. Snapshot names are
//! unique within a pool (a Keel project), not per volume as in Ceph; a
//! second snapshot of the same name in one pool is refused.

mod cluster;
mod pools;
pub mod reply;
mod session;
mod snapshots;
pub mod values;
mod volumes;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRef;
use axum::routing::{any, get, post};
use axum::Router;

use crate::domain::Service;
use crate::http::AppState;
use reply::PvcError;
use session::Sessions;

/// How long a command waits for deleted volumes and snapshots to leave the
/// engine before answering.
const DELETE_WAIT: Duration = Duration::from_secs(60);

/// The dialect's state: the shared one and its session table.
#[derive(Clone)]
pub struct PvcState {
    app: AppState,
    sessions: Arc<Sessions>,
}

impl FromRef<PvcState> for AppState {
    fn from_ref(state: &PvcState) -> AppState {
        state.app.clone()
    }
}

/// Runs blocking domain work off the executor.
async fn blocking<T: Send + 'static>(
    state: &PvcState,
    work: impl FnOnce(&Service) -> Result<T, PvcError> + Send + 'static,
) -> Result<T, PvcError> {
    let service = Arc::clone(&state.app.service);
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|e| PvcError::failure(format!("ERROR: request task failed: {e}")))?
}

/// A section of PVC that is not block storage.
async fn not_storage(_authenticated: session::PvcRequest) -> PvcError {
    PvcError::not_provided("PVC's virtual machine and client network management")
}

async fn no_route(uri: axum::http::Uri) -> PvcError {
    PvcError {
        status: axum::http::StatusCode::NOT_FOUND,
        message: format!(
            "no such endpoint: {}",
            crate::http::extract::truncate(uri.path())
        ),
    }
}

async fn method_not_allowed(method: axum::http::Method) -> PvcError {
    PvcError {
        status: axum::http::StatusCode::METHOD_NOT_ALLOWED,
        message: format!("The method {method} is not allowed for the requested URL."),
    }
}

/// The dialect's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit_bytes;
    let sessions = Arc::new(Sessions::new(state.auth.token_ttl()));
    let state = PvcState {
        app: state,
        sessions,
    };
    Router::new()
        .route("/api/v1", get(cluster::root))
        .route(
            "/api/v1/auth/login",
            get(session::login_form).post(session::login),
        )
        .route(
            "/api/v1/auth/logout",
            get(session::logout).post(session::logout),
        )
        .route("/api/v1/node", get(cluster::nodes))
        .route("/api/v1/node/{node}", get(cluster::node))
        .route(
            "/api/v1/node/{node}/coordinator-state",
            get(cluster::coordinator_state).post(cluster::set_coordinator_state),
        )
        .route("/api/v1/storage/ceph", get(cluster::status))
        .route("/api/v1/storage/ceph/status", get(cluster::status))
        .route("/api/v1/storage/ceph/df", get(cluster::utilization))
        .route(
            "/api/v1/storage/ceph/cluster-option",
            post(cluster::cluster_option),
        )
        .route(
            "/api/v1/storage/ceph/osd",
            get(cluster::osds).post(cluster::add_osd),
        )
        .route(
            "/api/v1/storage/ceph/osd/{osd}",
            get(cluster::osd).delete(cluster::remove_osd),
        )
        .route(
            "/api/v1/storage/ceph/osd/{osd}/state",
            get(cluster::osd_state).post(cluster::set_osd_state),
        )
        .route(
            "/api/v1/storage/ceph/pool",
            get(pools::list).post(pools::create),
        )
        .route(
            "/api/v1/storage/ceph/pool/{pool}",
            get(pools::get_one).delete(pools::delete),
        )
        .route(
            "/api/v1/storage/ceph/volume",
            get(volumes::list).post(volumes::create),
        )
        .route(
            "/api/v1/storage/ceph/volume/{pool}/{volume}",
            get(volumes::get_one)
                .put(volumes::update)
                .delete(volumes::delete),
        )
        .route(
            "/api/v1/storage/ceph/volume/snapshot",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/api/v1/storage/ceph/volume/snapshot/{pool}/{volume}/{snapshot}",
            get(snapshots::get_one).delete(snapshots::delete),
        )
        .route("/api/v1/vm", any(not_storage))
        .route("/api/v1/vm/{*rest}", any(not_storage))
        .route("/api/v1/network", any(not_storage))
        .route("/api/v1/network/{*rest}", any(not_storage))
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            limit,
            crate::http::read_first::read_body_first,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
