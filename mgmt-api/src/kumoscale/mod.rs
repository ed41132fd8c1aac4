//! The KumoScale Provisioner dialect (seed 002) over the domain service:
//! tenants with capacity budgets (projects with quotas), thin volumes,
//! snapshots, clones, hosts and publishing, targets and the node as its
//! only backend. Served on a listener of its own (`kumoscale_listen`), as
//! the Provisioner listens on port 30100 at the root of its paths.
//!
//! Conventions of the document kept here: every changing call answers HTTP
//! 200 with `{"status", "description"}` (see [`reply`]); create volume
//! takes GiB, expand and tenant budgets take GB (10^9 bytes), listings give
//! bytes; tenant `0` is the default project and any other tenant the
//! project named by its tenant id; a volume's alias is its name.
//!
//! What this node does not provide is refused with the document's own
//! result code, never accepted and ignored: thick provisioning, storage
//! class QoS and placement, read-only snapshot volumes, and adding,
//! changing or removing backends, licences and OpenIDC servers (`admin`).

mod admin;
mod hosts;
mod info;
mod ops;
pub mod reply;
mod snapshots;
mod tenants;
mod volumes;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::auth::Principal;
use crate::domain::model::DEFAULT_PROJECT;
use crate::domain::Service;
use crate::http::extract::{Body, Caller};
use crate::http::AppState;
use reply::KsError;

/// The tenant id that names the default project.
pub const DEFAULT_TENANT: &str = "0";

/// 10^9 bytes: the document's "GB".
const GB: u64 = 1_000_000_000;
/// 2^30 bytes: create volume's GiB.
const GIB: u64 = 1 << 30;

/// The project a tenant id names.
fn project_of(tenant: &str) -> String {
    if tenant == DEFAULT_TENANT {
        DEFAULT_PROJECT.to_owned()
    } else {
        tenant.to_owned()
    }
}

/// The tenant id of a project.
fn tenant_of(project: &str) -> String {
    if project == DEFAULT_PROJECT {
        DEFAULT_TENANT.to_owned()
    } else {
        project.to_owned()
    }
}

/// The authenticated caller, refused in KumoScale's shape.
struct KsCaller(Principal);

impl FromRequestParts<AppState> for KsCaller {
    type Rejection = KsError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, KsError> {
        Caller::from_request_parts(parts, state)
            .await
            .map(|Caller(p)| KsCaller(p))
            .map_err(KsError::from)
    }
}

impl KsCaller {
    /// The project `tenant` names, if the caller may read it (or, with
    /// `write`, change it).
    fn tenant(&self, tenant: &str, write: bool) -> Result<String, KsError> {
        let project = project_of(tenant);
        self.authorize(&project, write)?;
        Ok(project)
    }

    /// Fails unless the caller may act on `project` (`write`: change it).
    fn authorize(&self, project: &str, write: bool) -> Result<(), KsError> {
        crate::http::volumes::authorize(&self.0, project, write).map_err(KsError::from)
    }

    /// Fails unless the caller administers the cluster (tenants, hosts).
    fn require_admin(&self) -> Result<(), KsError> {
        if self.0.is_cluster_admin() {
            Ok(())
        } else {
            Err(KsError {
                http: axum::http::StatusCode::FORBIDDEN,
                status: "Forbidden",
                description: "this call needs a cluster administrator".to_owned(),
            })
        }
    }
}

/// A JSON request body, refused as `InvalidInput`.
struct KsJson<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for KsJson<T> {
    type Rejection = KsError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, KsError> {
        let body = Body::from_request(req, state)
            .await
            .map_err(KsError::from)?;
        body.json().map(KsJson).map_err(KsError::from)
    }
}

/// Runs blocking domain work off the executor.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Service) -> Result<T, KsError> + Send + 'static,
) -> Result<T, KsError> {
    let service = std::sync::Arc::clone(&state.service);
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|e| KsError::new("NotAvailable", format!("request task failed: {e}")))?
}

/// Parses a UUID argument, naming it when it is not one.
fn parse_id(what: &str, text: &str) -> Result<uuid::Uuid, KsError> {
    text.trim()
        .parse()
        .map_err(|_| KsError::invalid(format!("{what} {text:?} is not a UUID")))
}

/// Fails unless a body's `tenantId`, when given, names the path's tenant.
fn same_tenant(path: &str, body: Option<&str>) -> Result<(), KsError> {
    match body.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if project_of(t) != project_of(path) => Err(KsError::invalid(format!(
            "tenantId {t:?} in the body differs from {path:?} in the path"
        ))),
        _ => Ok(()),
    }
}

/// A mandatory alias, held to the name rules.
fn alias(value: Option<String>) -> Result<String, KsError> {
    let alias = value
        .filter(|a| !a.is_empty())
        .ok_or_else(|| KsError::invalid("alias is mandatory"))?;
    crate::domain::rules::check_name("alias", &alias).map_err(KsError::invalid)?;
    Ok(alias)
}

/// A mandatory UUID field.
fn required_id(field: &str, value: Option<&str>) -> Result<uuid::Uuid, KsError> {
    parse_id(
        field,
        value.ok_or_else(|| KsError::invalid(format!("{field} is mandatory")))?,
    )
}

/// An optional UUID field; empty counts as absent.
fn optional_id(field: &str, value: Option<&str>) -> Result<Option<uuid::Uuid>, KsError> {
    value
        .filter(|v| !v.trim().is_empty())
        .map(|v| parse_id(field, v))
        .transpose()
}

/// `reservedSpacePercentage`: 10 unless given, at most 100.
fn reserved_percent(value: Option<u64>) -> Result<u64, KsError> {
    match value.unwrap_or(10) {
        percent @ 0..=100 => Ok(percent),
        _ => Err(KsError::invalid(
            "reservedSpacePercentage must be at most 100",
        )),
    }
}

async fn no_route(uri: axum::http::Uri) -> KsError {
    KsError {
        http: axum::http::StatusCode::NOT_FOUND,
        status: "NotExists",
        description: format!(
            "no such endpoint: {}",
            crate::http::extract::truncate(uri.path())
        ),
    }
}

/// The dialect's routes.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit_bytes;
    Router::new()
        .route("/info", get(info::info))
        .route("/backends", get(info::backends).post(admin::add))
        .route(
            "/backends/{id}",
            get(info::backend).put(admin::update).delete(admin::remove),
        )
        .route("/probe", post(admin::probe))
        .route("/inventory", get(admin::inventory))
        .route(
            "/reset_inventory",
            axum::routing::delete(admin::reset_inventory),
        )
        .route("/license", get(info::license).post(admin::set_license))
        .route("/LICENSE", post(admin::set_license))
        .route(
            "/auth_server",
            get(admin::auth_server)
                .post(admin::set_auth_server)
                .delete(admin::delete_auth_server),
        )
        .route("/tenants", get(tenants::list).post(tenants::create))
        // The document's create-tenant example posts to `/tenants/`.
        .route("/tenants/", get(tenants::list).post(tenants::create))
        .route(
            "/tenants/{tenantId}",
            axum::routing::put(tenants::update).delete(tenants::delete),
        )
        .route(
            "/{tenantId}/volumes",
            get(volumes::list).post(volumes::create),
        )
        .route(
            "/{tenantId}/volumes/{id}",
            get(volumes::get_one)
                .patch(volumes::expand)
                .delete(volumes::delete),
        )
        .route(
            "/{tenantId}/volumes_by_alias/{alias}",
            get(volumes::by_alias),
        )
        .route("/{tenantId}/volume_extended/{uuid}", get(volumes::extended))
        .route("/{tenantId}/clone_volume", post(volumes::clone_volume))
        .route(
            "/{tenantId}/snapshots",
            get(snapshots::list).post(snapshots::create),
        )
        .route(
            "/{tenantId}/snapshots/{id}",
            get(snapshots::get_one).delete(snapshots::delete),
        )
        .route(
            "/{tenantId}/snapshots_by_vol/{volID}",
            get(snapshots::by_volume),
        )
        .route(
            "/{tenantId}/snapshots_by_alias/{alias}",
            get(snapshots::by_alias),
        )
        .route(
            "/{tenantId}/snapshot_volume",
            post(snapshots::snapshot_volume),
        )
        .route(
            "/{tenantId}/snapshot_volumes",
            post(snapshots::snapshot_volume),
        )
        .route("/hosts", get(hosts::list))
        .route("/hosts/{uuid}", axum::routing::delete(hosts::delete))
        .route("/host_probe", post(hosts::probe))
        .route("/targets", get(hosts::targets))
        .route("/{tenantId}/publish", post(hosts::publish))
        .route("/{tenantId}/unpublish", post(hosts::unpublish))
        .route("/{tenantId}/replica/{id}", post(ops::add_replica))
        .route(
            "/{tenantId}/replica/{id}/{replicaID}",
            axum::routing::patch(ops::change_replica).delete(ops::change_replica),
        )
        .route(
            "/{tenantId}/replica/{id}/{replicaID}/{replicaState}",
            axum::routing::patch(ops::set_replica_state),
        )
        .route("/{tenantId}/migrate_volume", post(ops::migrate))
        .route(
            "/tasks",
            get(ops::tasks)
                .put(ops::update_task)
                .delete(ops::delete_task),
        )
        .route("/metrics", get(ops::metrics))
        .route("/forward_log", post(ops::forward_log))
        .route("/syslog", get(ops::syslog))
        .fallback(no_route)
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .with_state(state)
}
