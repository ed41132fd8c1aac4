//! The OpenAPI 3 document, generated from the handlers' annotations and the DTO
//! types so it cannot drift from the code; served at `/openapi.json`.

use axum::extract::State;
use axum::Json;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{cluster, dto, schema, session, snapshots, volumes, workflows, AppState};

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

/// Answers every operation can give: malformed input, authentication, role,
/// missing resources, body size, a busy engine, bugs.
const COMMON_ERRORS: [(&str, &str); 7] = [
    (
        "400",
        "Invalid argument: malformed JSON, wrong types, or a value breaking the rules",
    ),
    ("401", "Authentication required or failed"),
    ("403", "Permission denied for the caller's role"),
    ("404", "Not found"),
    ("413", "Request body too large"),
    ("500", "Internal error"),
    (
        "503",
        "Temporary state: the resource is Creating or Updating, or the engine is busy; retry",
    ),
];

/// Further answers of operations that change something.
const WRITE_ERRORS: [(&str, &str); 3] = [
    (
        "409",
        "Name already exists, or an operation on the resource is in progress",
    ),
    ("501", "The storage engine does not support this operation"),
    ("507", "The pool has no space left"),
];

/// Further answers of operations on one existing resource (update, delete).
const CONDITIONAL_ERRORS: [(&str, &str); 1] = [(
    "412",
    "ETag mismatch: the resource changed since it was read (If-Match or ETag)",
)];

/// Further answers of operations that start a workflow.
const WORKFLOW_ERRORS: [(&str, &str); 1] =
    [("429", "Too many running workflows (maxRunningWorkflows)")];

/// Documents every error answer on every operation, and gives each parameter
/// the schema of the rule the server applies to it. Policy by parameter name,
/// so no operation can forget one: every `projectName` is a name, every `UUID`
/// a UUID, whatever handler declares it.
struct Contracts;

impl Modify for Contracts {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            let operations = [
                (&mut item.get, Method::Get),
                (&mut item.put, Method::Put),
                (&mut item.post, Method::Post),
                (&mut item.delete, Method::Delete),
                (&mut item.patch, Method::Patch),
            ];
            for (operation, method) in operations {
                let Some(operation) = operation else { continue };
                let writes = matches!(method, Method::Put | Method::Post | Method::Delete);
                let conditional = matches!(method, Method::Put | Method::Delete);
                let errors = COMMON_ERRORS
                    .iter()
                    .chain(WRITE_ERRORS.iter().filter(|_| writes))
                    .chain(CONDITIONAL_ERRORS.iter().filter(|_| conditional))
                    .chain(
                        WORKFLOW_ERRORS
                            .iter()
                            .filter(|_| path.ends_with("/thickclone")),
                    );
                for (code, description) in errors {
                    operation
                        .responses
                        .responses
                        .entry((*code).to_owned())
                        .or_insert_with(|| error_response(description));
                }
                for parameter in operation.parameters.iter_mut().flatten() {
                    let in_query = matches!(parameter.parameter_in, ParameterIn::Query);
                    if let Some(schema) = parameter_schema(&parameter.name, in_query) {
                        parameter.schema = Some(schema);
                    }
                }
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Method {
    Get,
    Put,
    Post,
    Delete,
    Patch,
}

/// The schema of a parameter, by name; `None` keeps the handler's. Query
/// parameters may also be empty, which the server reads as absent (some clients
/// send `?projectName=`).
fn parameter_schema(name: &str, in_query: bool) -> Option<RefOr<Schema>> {
    let strict: Schema = match name {
        "projectName" | "name" | "Name" | "id" => schema::name_parameter(),
        "UUID" | "offsetUUID" | "snapshotUUID" | "sourceVolumeUUID" | "workflowId" => {
            schema::uuid_parameter()
        }
        "limit" | "pageSize" => ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(0))
            .maximum(Some(u64::MAX))
            .description(Some(
                "0 or absent means the default; larger values are capped",
            ))
            .build()
            .into(),
        "nextPageToken" => ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9]{1,19}$"))
            .build()
            .into(),
        "showAll" => ObjectBuilder::new()
            .schema_type(Type::Boolean)
            .build()
            .into(),
        _ => return None,
    };
    if !in_query {
        return Some(strict.into());
    }
    let empty = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(0))
        .build();
    Some(
        AnyOfBuilder::new()
            .item(strict)
            .item(empty)
            .description(Some("Empty means absent"))
            .into(),
    )
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
    modifiers(&SecuritySchemes, &Contracts),
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

/// Serves the document (no authentication needed). Built per request from the
/// code, with this server's own limits filled in: a replica count past what the
/// cluster places is refused, so the schema says so.
pub async fn document(State(state): State<AppState>) -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    let max_replicas = state.service.config().max_replicas;
    if let Some(components) = doc.components.as_mut() {
        for (component, field) in [
            ("CreateVolumeRequest", "replicaCount"),
            ("CloneDestinationDto", "replica"),
        ] {
            if let Some(RefOr::T(Schema::Object(object))) = components.schemas.get_mut(component) {
                if let Some(property) = object.properties.get_mut(field) {
                    *property = schema::optional_replica_count_up_to(max_replicas);
                }
            }
        }
    }
    Json(doc)
}
