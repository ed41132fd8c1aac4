//! Volume types: the built-in `__DEFAULT__` (no specs) and the types an
//! administrator makes, with their extra specs and project access. The
//! specs are the domain's (`domain::volume_types`): the ones Keel acts on
//! are taken, any other is refused with 400.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::{blocking, element, CinderCaller, CinderJson, CinderPath};
use crate::domain::model::VolumeTypeRecord;
use crate::domain::volume_types::{DEFAULT_TYPE_ID, DEFAULT_TYPE_NAME};
use crate::domain::{NewVolumeType, Service, ServiceError, VolumeTypeChanges};
use crate::http::AppState;

/// The built-in type's document.
pub(super) fn default_type() -> Value {
    json!({
        "id": DEFAULT_TYPE_ID,
        "name": DEFAULT_TYPE_NAME,
        "description": "Default Volume Type",
        "is_public": true,
        "os-volume-type-access:is_public": true,
        "extra_specs": {},
        "qos_specs_id": null,
    })
}

/// A made type's document.
pub(super) fn type_json(t: &VolumeTypeRecord) -> Value {
    json!({
        "id": t.uuid,
        "name": t.name,
        "description": t.description,
        "is_public": t.is_public,
        "os-volume-type-access:is_public": t.is_public,
        "extra_specs": t.extra_specs,
        "qos_specs_id": t.qos_policy,
    })
}

/// A type's id, or 404 in Cinder's words.
fn type_id(path: &CinderPath) -> Result<Uuid, CinderError> {
    path.id("type_id", "Volume type")
}

/// Maps a domain error of this module's calls (409 for a taken name).
fn type_error(err: ServiceError) -> CinderError {
    CinderError::from_named(err, "volume type", "Volume type")
}

/// The type `wanted` names (an id, a name, or `default`) as `caller` in
/// `project` may see it: `None` is the built-in default.
pub(super) fn find_type(
    s: &Service,
    caller: &CinderCaller,
    project: &str,
    wanted: &str,
) -> Result<Option<VolumeTypeRecord>, CinderError> {
    if wanted == "default" || wanted == DEFAULT_TYPE_NAME || wanted == DEFAULT_TYPE_ID.to_string() {
        return Ok(None);
    }
    let by_id = wanted.parse::<Uuid>().ok();
    s.volume_types()
        .into_iter()
        .find(|t| Some(t.uuid) == by_id || t.name == wanted)
        .filter(|t| caller.principal.is_cluster_admin() || t.available_to(project))
        .map(Some)
        .ok_or_else(|| CinderError::not_found(format!("Volume type {wanted} could not be found.")))
}

/// `GET /v3/{project_id}/types`: the default and every type the project
/// may use (administrators see all; `is_public` narrows to public or
/// private ones).
pub(super) async fn list(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let public_filter = match query.get("is_public").map(|v| v.to_ascii_lowercase()) {
        None => None,
        Some(v) if v == "none" => None,
        Some(v) if v == "true" => Some(true),
        Some(v) if v == "false" => Some(false),
        Some(v) => {
            return Err(CinderError::bad_request(format!(
                "Invalid is_public filter [{v}]"
            )))
        }
    };
    let admin = caller.principal.is_cluster_admin();
    blocking(&state, move |s| {
        let mut types = Vec::new();
        if public_filter != Some(false) {
            types.push(default_type());
        }
        types.extend(
            s.volume_types()
                .iter()
                .filter(|t| admin || t.available_to(&project))
                .filter(|t| public_filter.is_none_or(|p| p == t.is_public))
                .map(type_json),
        );
        Ok(Json(json!({"volume_types": types})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/types/{type_id}` (also `default`).
pub(super) async fn show(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let wanted = path.0.get("type_id").cloned().unwrap_or_default();
    blocking(&state, move |s| {
        let t = match find_type(s, &caller, &project, &wanted)? {
            Some(t) => type_json(&t),
            None => default_type(),
        };
        Ok(Json(json!({"volume_type": t})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct TypeBody {
    volume_type: Option<TypeFields>,
}

#[derive(Debug, Deserialize)]
struct TypeFields {
    name: Option<String>,
    description: Option<String>,
    #[serde(rename = "os-volume-type-access:is_public")]
    access_is_public: Option<bool>,
    is_public: Option<bool>,
    extra_specs: Option<BTreeMap<String, String>>,
}

/// `POST /v3/{project_id}/types` (administrators).
pub(super) async fn create(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<TypeBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let f = element(body.volume_type, "volume_type")?;
    let name = f.name.ok_or_else(|| {
        CinderError::bad_request("Missing required element 'name' in request body.")
    })?;
    let req = NewVolumeType {
        name,
        description: f.description.unwrap_or_default(),
        is_public: f.access_is_public.or(f.is_public).unwrap_or(true),
        extra_specs: f.extra_specs.unwrap_or_default(),
    };
    blocking(&state, move |s| {
        let t = s.create_volume_type(req).map_err(type_error)?;
        Ok(Json(json!({"volume_type": type_json(&t)})).into_response())
    })
    .await
}

/// `PUT /v3/{project_id}/types/{type_id}`: name, description, visibility.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<TypeBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    let f = element(body.volume_type, "volume_type")?;
    if f.extra_specs.is_some() {
        return Err(CinderError::bad_request(
            "extra specs change through /types/{type_id}/extra_specs",
        ));
    }
    let changes = VolumeTypeChanges {
        name: f.name,
        description: f.description,
        is_public: f.is_public.or(f.access_is_public),
    };
    blocking(&state, move |s| {
        let t = s.update_volume_type(id, changes).map_err(type_error)?;
        Ok(Json(json!({"volume_type": type_json(&t)})).into_response())
    })
    .await
}

/// `DELETE /v3/{project_id}/types/{type_id}`: 400 while volumes have it.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    blocking(&state, move |s| {
        s.delete_volume_type(id).map_err(type_error)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// `GET /v3/{project_id}/types/{type_id}/extra_specs[/{key}]`.
pub(super) async fn get_specs(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let wanted = path.0.get("type_id").cloned().unwrap_or_default();
    let key = path.0.get("key").cloned();
    blocking(&state, move |s| {
        let specs = find_type(s, &caller, &project, &wanted)?
            .map(|t| t.extra_specs)
            .unwrap_or_default();
        match key {
            None => Ok(Json(json!({"extra_specs": specs})).into_response()),
            Some(key) => match specs.get(&key) {
                Some(value) => Ok(Json(json!({ key: value })).into_response()),
                None => Err(CinderError::not_found(format!(
                    "Volume Type {wanted} has no extra specs with key {key}."
                ))),
            },
        }
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct SpecsBody {
    extra_specs: Option<BTreeMap<String, String>>,
}

/// `POST /v3/{project_id}/types/{type_id}/extra_specs`: adds or replaces.
pub(super) async fn set_specs(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<SpecsBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    let specs = element(body.extra_specs, "extra_specs")?;
    blocking(&state, move |s| {
        s.set_type_specs(id, specs.clone()).map_err(type_error)?;
        Ok(Json(json!({"extra_specs": specs})).into_response())
    })
    .await
}

/// `PUT /v3/{project_id}/types/{type_id}/extra_specs/{key}`: `{key: value}`.
pub(super) async fn set_spec(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<BTreeMap<String, String>>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    let key = path.0.get("key").cloned().unwrap_or_default();
    let value = match (body.len(), body.get(&key)) {
        (1, Some(value)) => value.clone(),
        _ => {
            return Err(CinderError::bad_request(format!(
                "the body must be {{\"{key}\": <value>}}, naming the path's key only"
            )))
        }
    };
    blocking(&state, move |s| {
        s.set_type_specs(id, [(key.clone(), value.clone())].into())
            .map_err(type_error)?;
        Ok(Json(json!({ key: value })).into_response())
    })
    .await
}

/// `DELETE /v3/{project_id}/types/{type_id}/extra_specs/{key}`.
pub(super) async fn delete_spec(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    let key = path.0.get("key").cloned().unwrap_or_default();
    blocking(&state, move |s| {
        s.unset_type_spec(id, &key).map_err(type_error)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct AccessBody {
    #[serde(rename = "addProjectAccess")]
    add: Option<AccessProject>,
    #[serde(rename = "removeProjectAccess")]
    remove: Option<AccessProject>,
}

#[derive(Debug, Deserialize)]
struct AccessProject {
    project: String,
}

/// `POST /v3/{project_id}/types/{type_id}/action`: add or remove a
/// project's access to a private type.
pub(super) async fn access_action(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<AccessBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    let (project, grant) = match (body.add, body.remove) {
        (Some(a), None) => (a.project, true),
        (None, Some(r)) => (r.project, false),
        _ => {
            return Err(CinderError::bad_request(
                "give exactly one of addProjectAccess and removeProjectAccess",
            ))
        }
    };
    blocking(&state, move |s| {
        s.set_type_access(id, &project, grant).map_err(type_error)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// `GET /v3/{project_id}/types/{type_id}/os-volume-type-access`.
pub(super) async fn access_list(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    caller.require_admin()?;
    let id = type_id(&path)?;
    blocking(&state, move |s| {
        let t = s.volume_type(id).map_err(type_error)?;
        if t.is_public {
            return Err(CinderError::not_found(format!(
                "Access list not available for public volume type {id}."
            )));
        }
        let access: Vec<Value> = t
            .projects
            .iter()
            .map(|p| json!({"volume_type_id": id, "project_id": p}))
            .collect();
        Ok(Json(json!({"volume_type_access": access})).into_response())
    })
    .await
}
