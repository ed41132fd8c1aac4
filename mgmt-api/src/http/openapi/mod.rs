//! The OpenAPI 3 document, generated from the handlers' annotations and the DTO
//! types so it cannot drift from the code; served at `/openapi.json`.
//!
//! Three layers: the `utoipa` derive (`ApiDoc`: paths and schemas from the
//! code), document-wide contracts applied to every operation (`contracts`:
//! error answers, parameter rules, operation ids, links), and what only the
//! serving process knows or utoipa cannot spell (`served`: this cluster's
//! limits and identity, JSON Schema keywords the derive lacks).

mod contracts;
mod served;

use axum::extract::State;
use axum::Json;
use utoipa::OpenApi;

use super::{cluster, dto, qos, scrub, session, snapshots, volumes, workflows, AppState};
use contracts::{Contracts, SecuritySchemes};
pub use served::served_document;

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Keel management API", description = "Lightbits-style cluster API v2 with DMS v1 login and workflows, and Keel extensions in the v2 style (the scrub)"),
    modifiers(&SecuritySchemes, &Contracts),
    paths(
        session::login, session::create_user, session::list_credentials, session::create_credential, session::delete_credential,
        cluster::cluster, cluster::cluster_info, cluster::nodes, cluster::node, cluster::list_projects, cluster::create_project,
        cluster::get_project, cluster::update_project,
        qos::list, qos::create, qos::get_one, qos::update, qos::delete,
        qos::project_list, qos::project_create, qos::project_get, qos::project_update, qos::project_delete,
        scrub::start_scrub, scrub::scrub_status,
        volumes::list, volumes::lookup, volumes::create, volumes::get_one, volumes::update, volumes::delete, volumes::rollback,
        volumes::project_list, volumes::project_lookup, volumes::project_create, volumes::project_get, volumes::project_update,
        volumes::project_delete, volumes::project_rollback,
        snapshots::list, snapshots::lookup, snapshots::create, snapshots::get_one, snapshots::delete,
        snapshots::project_list, snapshots::project_lookup, snapshots::project_create, snapshots::project_get,
        snapshots::project_delete,
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
