//! Contracts every operation of the document keeps, applied once here so no
//! handler can forget one: security schemes, every error answer with the
//! `ErrorBody` schema, the rule of each parameter by name, unique operation ids,
//! and links from creates to what they created.

use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::ParameterIn;
use utoipa::openapi::schema::{AnyOfBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Response, ResponseBuilder};
use utoipa::Modify;

use crate::http::schema;

/// Bearer tokens for the API, HTTP Basic for `/login`.
pub(super) struct SecuritySchemes;

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

/// Further answers of operations that create something or log in: a bounded
/// resource is used up.
const LIMIT_ERRORS: [(&str, &str); 1] = [(
    "429",
    "A limit is reached: every namespace id is in use, maxRunningWorkflows workflows run, \
     or this client failed to log in too often; retry later",
)];

/// Documents every error answer on every operation, and gives each parameter
/// the schema of the rule the server applies to it. Policy by parameter name,
/// so no operation can forget one: every `projectName` is a name, every `UUID`
/// a UUID, whatever handler declares it.
pub(super) struct Contracts;

impl Modify for Contracts {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        unique_operation_ids(openapi);
        add_links(openapi);
        for item in openapi.paths.paths.values_mut() {
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
                        LIMIT_ERRORS
                            .iter()
                            .filter(|_| matches!(method, Method::Post)),
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

pub(super) fn operations_mut(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.patch,
    ]
    .into_iter()
    .flatten()
}

/// Operation ids must be unique in a document; handlers in different modules
/// share function names (`list`, `get_one`), so each id gets its tag as a prefix
/// (`volumes_get_one`, `snapshots_get_one`).
fn unique_operation_ids(openapi: &mut utoipa::openapi::OpenApi) {
    for item in openapi.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let tag = operation
                .tags
                .as_ref()
                .and_then(|t| t.first())
                .cloned()
                .unwrap_or_default();
            if let Some(id) = operation.operation_id.as_mut() {
                if !tag.is_empty() && !id.starts_with(&format!("{tag}_")) {
                    *id = format!("{tag}_{id}");
                }
            }
        }
    }
}

/// Where a created resource's identity goes next: (creating operation, operation
/// it links to, parameters taken from the creating answer). Links let clients
/// and stateful testers (schemathesis) follow a create to the resource.
/// A link's parameters: (target parameter, runtime expression).
type LinkParameters = &'static [(&'static str, &'static str)];

const LINKS: &[(&str, &str, LinkParameters)] = &[
    ("volumes_create", "volumes_get_one", UUID_OF_BODY),
    ("volumes_create", "volumes_update", UUID_OF_BODY),
    ("volumes_create", "volumes_delete", UUID_OF_BODY),
    ("volumes_create", "volumes_rollback", UUID_OF_BODY),
    (
        "volumes_project_create",
        "volumes_project_get_one",
        PROJECT_AND_UUID_OF_BODY,
    ),
    (
        "volumes_project_create",
        "volumes_project_update",
        PROJECT_AND_UUID_OF_BODY,
    ),
    (
        "volumes_project_create",
        "volumes_project_delete",
        PROJECT_AND_UUID_OF_BODY,
    ),
    (
        "volumes_project_create",
        "volumes_project_rollback",
        PROJECT_AND_UUID_OF_BODY,
    ),
    ("snapshots_create", "snapshots_get_one", UUID_OF_BODY),
    ("snapshots_create", "snapshots_delete", UUID_OF_BODY),
    (
        "snapshots_project_create",
        "snapshots_project_get_one",
        PROJECT_AND_UUID_OF_BODY,
    ),
    (
        "snapshots_project_create",
        "snapshots_project_delete",
        PROJECT_AND_UUID_OF_BODY,
    ),
    (
        "workflows_thick_clone_volume",
        "workflows_get_one",
        WORKFLOW_OF_BODY,
    ),
    (
        "workflows_thick_clone_volume",
        "workflows_cancel",
        WORKFLOW_OF_BODY,
    ),
    (
        "workflows_thick_clone_snapshot",
        "workflows_get_one",
        WORKFLOW_OF_BODY,
    ),
    (
        "workflows_thick_clone_snapshot",
        "workflows_cancel",
        WORKFLOW_OF_BODY,
    ),
    (
        "cluster_create_project",
        "volumes_project_list",
        PROJECT_NAME_OF_BODY,
    ),
    (
        "cluster_create_project",
        "volumes_project_create",
        PROJECT_NAME_OF_BODY,
    ),
    (
        "cluster_create_project",
        "snapshots_project_list",
        PROJECT_NAME_OF_BODY,
    ),
    (
        "auth_create_credential",
        "auth_delete_credential",
        ID_OF_BODY,
    ),
];
const UUID_OF_BODY: LinkParameters = &[("UUID", "$response.body#/UUID")];
const PROJECT_AND_UUID_OF_BODY: LinkParameters = &[
    ("projectName", "$response.body#/projectName"),
    ("UUID", "$response.body#/UUID"),
];
const WORKFLOW_OF_BODY: LinkParameters = &[("workflowId", "$response.body#/workflowId")];
const PROJECT_NAME_OF_BODY: LinkParameters = &[("projectName", "$response.body#/name")];
const ID_OF_BODY: LinkParameters = &[("id", "$response.body#/id")];

fn add_links(openapi: &mut utoipa::openapi::OpenApi) {
    let known: std::collections::BTreeSet<String> = openapi
        .paths
        .paths
        .values_mut()
        .flat_map(|item| {
            operations_mut(item)
                .filter_map(|o| o.operation_id.clone())
                .collect::<Vec<_>>()
        })
        .collect();
    for item in openapi.paths.paths.values_mut() {
        for operation in operations_mut(item) {
            let Some(id) = operation.operation_id.clone() else {
                continue;
            };
            let Some(RefOr::T(ok)) = operation.responses.responses.get_mut("200") else {
                continue;
            };
            for (_, target, parameters) in LINKS.iter().filter(|(source, _, _)| *source == id) {
                assert!(
                    known.contains(*target),
                    "link to unknown operation {target}"
                );
                let link = parameters
                    .iter()
                    .fold(
                        LinkBuilder::new().operation_id(*target),
                        |l, (name, value)| l.parameter(*name, *value),
                    )
                    .build();
                ok.links.insert((*target).to_owned(), RefOr::T(link));
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

#[cfg(test)]
mod tests {
    use super::*;
    use utoipa::OpenApi;

    #[test]
    fn operation_ids_are_unique_and_every_link_joins_two_operations() {
        let mut doc = super::super::ApiDoc::openapi();
        let ids: Vec<String> = doc
            .paths
            .paths
            .values_mut()
            .flat_map(|item| {
                operations_mut(item)
                    .filter_map(|o| o.operation_id.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "duplicate operation ids in {ids:?}"
        );
        for (source, target, _) in LINKS {
            assert!(ids.iter().any(|i| i == source), "no operation {source}");
            assert!(ids.iter().any(|i| i == target), "no operation {target}");
        }
    }
}
