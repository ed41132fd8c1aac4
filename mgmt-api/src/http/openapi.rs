//! The OpenAPI 3 document, generated from the handlers' annotations and the DTO
//! types so it cannot drift from the code; served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
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
        // Answers every operation can give, documented once here so no operation
        // forgets them: malformed input, authentication, role, body size, bugs.
        let common = [
            (
                "400",
                "Invalid argument: malformed JSON, wrong types, or a value breaking the rules",
            ),
            ("401", "Authentication required or failed"),
            ("403", "Permission denied for the caller's role"),
            ("404", "Not found"),
            ("413", "Request body too large"),
            ("500", "Internal error"),
        ];
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                for (code, description) in common {
                    operation
                        .responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| error_response(description));
                }
            }
        }
    }
}

fn error_response(description: &str) -> RefOr<Response> {
    let content = ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ErrorBody")))
        .build();
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content("application/json", content)
            .build(),
    )
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
