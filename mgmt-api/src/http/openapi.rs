//! The OpenAPI 3 document, generated from the handlers' annotations and the DTO
//! types so it cannot drift from the code; served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{cluster, dto, session, snapshots, volumes, workflows};

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "Keel management API", description = "Lightbits-style cluster API v2 with DMS v1 login and workflows"),
    modifiers(&SecuritySchemes),
    paths(
        session::login, session::create_user, session::list_credentials, session::create_credential, session::delete_credential,
        cluster::cluster, cluster::cluster_info, cluster::nodes, cluster::list_projects, cluster::create_project,
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
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
