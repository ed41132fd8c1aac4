//! The document as served: what only the serving process knows (its replica
//! limit, its cluster identity) and JSON Schema keywords utoipa's derive cannot
//! spell, applied to the JSON of [`ApiDoc`](super::ApiDoc).

use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::http::schema;

/// The document as served: built from the code, with this server's own limits
/// filled in, as JSON. A replica count past what the cluster places is refused,
/// and so is a thick clone naming another cluster, so the schemas say so.
pub fn served_document(max_replicas: u32, cluster: uuid::Uuid) -> serde_json::Value {
    let mut doc = ApiDoc::openapi();
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
    // INVARIANT: the document is plain data with string keys; serializing it
    // cannot fail.
    let mut json = serde_json::to_value(&doc).expect("the OpenAPI document serializes");
    fix_link_field_names(&mut json);
    for component in ["CloneSourceDto", "CloneDestinationDto"] {
        if let Some(property) = json.pointer_mut(&format!(
            "/components/schemas/{component}/properties/clusterId"
        )) {
            *property = serde_json::json!({
                "description": "This cluster's UUID (cross-cluster clones are not supported); \
                                null or an empty string mean this cluster",
                "oneOf": [
                    {"type": "string", "enum": [cluster.to_string()]},
                    {"type": "string", "maxLength": 0},
                    {"type": "null"}
                ]
            });
        }
    }
    split_volume_thick_clone(&mut json);
    require_one_of(
        &mut json,
        "CreateVolumeRequest",
        &[("size", None), ("sourceSnapshotUUID", Some("uuid"))],
    );
    require_one_of(
        &mut json,
        "CreateSnapshotRequest",
        &[
            ("sourceVolumeUUID", Some("uuid")),
            ("sourceVolumeName", None),
        ],
    );
    json
}

/// A volume thick clone takes the same body as a snapshot one without
/// `dst.description` (refused with 400: volumes have none). The served document
/// gives it its own two schemas, derived from the shared ones, so that it says
/// so.
fn split_volume_thick_clone(doc: &mut serde_json::Value) {
    let schemas = doc.pointer("/components/schemas").cloned();
    let (Some(request), Some(destination)) = (
        schemas
            .as_ref()
            .and_then(|s| s.get("ThickCloneRequest"))
            .cloned(),
        schemas
            .as_ref()
            .and_then(|s| s.get("CloneDestinationDto"))
            .cloned(),
    ) else {
        return;
    };
    let mut destination = destination;
    if let Some(properties) = destination
        .get_mut("properties")
        .and_then(|p| p.as_object_mut())
    {
        properties.remove("description");
    }
    let mut request = request;
    if let Some(dst) = request.pointer_mut("/properties/dst/$ref") {
        *dst = serde_json::Value::from("#/components/schemas/CloneVolumeDestinationDto");
    }
    if let Some(text) = request.get_mut("description") {
        *text = serde_json::Value::from("Body of `POST /api/v1/volumes/thickclone`.");
    }
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(|s| s.as_object_mut())
    {
        schemas.insert("CloneVolumeDestinationDto".to_owned(), destination);
        schemas.insert("ThickCloneVolumeRequest".to_owned(), request);
    }
    if let Some(body) = doc.pointer_mut(
        "/paths/~1api~1v1~1volumes~1thickclone/post/requestBody/content/application~1json/schema/$ref",
    ) {
        *body = serde_json::Value::from("#/components/schemas/ThickCloneVolumeRequest");
    }
}

/// States "at least one of these fields, not null (and for a UUID, a UUID)"
/// on a request schema: the server needs a size unless cloning, and a source
/// volume by UUID or by name. Written on the JSON because utoipa's derive has no
/// attribute for it.
fn require_one_of(doc: &mut serde_json::Value, component: &str, fields: &[(&str, Option<&str>)]) {
    let Some(schema) = doc
        .pointer_mut(&format!("/components/schemas/{component}"))
        .and_then(|s| s.as_object_mut())
    else {
        return;
    };
    let alternatives: Vec<serde_json::Value> = fields
        .iter()
        .map(|(field, format)| {
            let present = match format {
                Some(f) => serde_json::json!({"type": "string", "format": f}),
                None => serde_json::json!({"not": {"type": "null"}}),
            };
            serde_json::json!({"required": [field], "properties": {*field: present}})
        })
        .collect();
    schema.insert("anyOf".to_owned(), serde_json::Value::Array(alternatives));
}

/// utoipa 5 serializes Link Objects with snake_case keys (`operation_id`);
/// OpenAPI spells them `operationId`, `operationRef`, `requestBody`, and tools
/// reject the rest. Renames them in every response's `links`.
fn fix_link_field_names(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|response| response.get_mut("links").and_then(|l| l.as_object_mut()))
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (snake, camel) in [
            ("operation_id", "operationId"),
            ("operation_ref", "operationRef"),
            ("request_body", "requestBody"),
        ] {
            if let Some(value) = link.remove(snake) {
                link.insert(camel.to_owned(), value);
            }
        }
    }
}
