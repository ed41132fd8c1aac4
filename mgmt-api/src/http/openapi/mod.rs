//! The OpenAPI 3 document, generated from the handlers' annotations and the DTO
//! types so it cannot drift from the code; served at `/openapi.json`.
//!
//! Three layers: the `utoipa` derive (`ApiDoc`: paths and schemas from the
//! code, each project-owned one twinned in its project-scoped form by
//! `project_paths`), document-wide contracts applied to every operation (`contracts`:
//! error answers, parameter rules, operation ids, links), and what only the
//! serving process knows or utoipa cannot spell (`served`: this cluster's
//! limits and identity, JSON Schema keywords the derive lacks).

mod contracts;
mod project_paths;
mod served;

use axum::extract::State;
use axum::Json;
use utoipa::OpenApi;

use super::{cluster, dto, qos, scrub, session, snapshots, volumes, workflows, AppState};
use contracts::{Contracts, SecuritySchemes};
use project_paths::ProjectScopedPaths;
pub use served::served_document;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Keel management API", description = "Lightbits-style cluster API v2 with DMS v1 login and workflows, and Keel extensions in the v2 style (the scrub)"),
    modifiers(&ProjectScopedPaths, &SecuritySchemes, &Contracts),
    paths(
        session::login, session::create_user, session::list_credentials, session::create_credential, session::delete_credential,
        cluster::cluster, cluster::cluster_info, cluster::nodes, cluster::node, cluster::list_projects, cluster::create_project,
        cluster::get_project, cluster::update_project,
        qos::list, qos::create, qos::get_one, qos::update, qos::delete,
        scrub::start_scrub, scrub::scrub_status,
        volumes::list, volumes::lookup, volumes::create, volumes::get_one, volumes::update, volumes::delete, volumes::rollback,
        snapshots::list, snapshots::lookup, snapshots::create, snapshots::get_one, snapshots::delete,
        workflows::thick_clone_volume, workflows::thick_clone_snapshot, workflows::list, workflows::get_one, workflows::cancel,
    ),
    components(schemas(dto::ErrorBody, dto::AclDto, dto::LabelDto))
)]
pub struct ApiDoc;

/// Serves the document (no authentication needed).
/// Serves the document (no authentication needed).
pub async fn document(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(served_document(
        state.service.config().max_replicas,
        state.service.cluster_uuid(),
    ))
}
