//! Default types (3.62): the volume type a project's new volumes take when
//! their request names none (administrators set them).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::CinderError;
use super::types::find_type;
use super::{blocking, element, CinderCaller, CinderJson, CinderPath};
use crate::http::AppState;

fn default_json(project: &str, volume_type: uuid::Uuid) -> Value {
    json!({"project_id": project, "volume_type_id": volume_type})
}

/// The project the path names, for an administrator.
fn target(caller: &CinderCaller, path: &CinderPath) -> Result<String, CinderError> {
    caller.require_admin()?;
    let project = path.0.get("target_project").cloned().unwrap_or_default();
    caller.project(Some(&project), true)
}

/// `GET /v3/default-types`.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: CinderCaller,
) -> Result<Response, CinderError> {
    caller.require_admin()?;
    blocking(&state, |s| {
        let all: Vec<Value> = s
            .project_default_types()
            .iter()
            .map(|(p, t)| default_json(p, *t))
            .collect();
        Ok(Json(json!({"default_types": all})).into_response())
    })
    .await
}

/// `GET /v3/default-types/{project-id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = target(&caller, &path)?;
    blocking(&state, move |s| {
        s.project_default_types()
            .into_iter()
            .find(|(p, _)| *p == project)
            .map(|(p, t)| Json(json!({"default_type": default_json(&p, t)})).into_response())
            .ok_or_else(|| {
                CinderError::not_found(format!(
                    "Default type for project {project} could not be found."
                ))
            })
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct SetBody {
    default_type: Option<SetDefault>,
}

#[derive(Debug, Deserialize)]
struct SetDefault {
    volume_type: Option<String>,
}

/// `PUT /v3/default-types/{project-id}`: `{"default_type": {"volume_type": name or id}}`.
pub(super) async fn set(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<SetBody>,
) -> Result<Response, CinderError> {
    let project = target(&caller, &path)?;
    let wanted = element(body.default_type, "default_type")?
        .volume_type
        .ok_or_else(|| {
            CinderError::bad_request("Missing required element 'volume_type' in request body.")
        })?;
    blocking(&state, move |s| {
        let t = find_type(s, &caller, &project, &wanted)?.ok_or_else(|| {
            CinderError::bad_request(
                "the built-in __DEFAULT__ type is every project's default already",
            )
        })?;
        s.set_project_default_type(&project, Some(t.uuid))
            .map_err(|e| CinderError::from_named(e, "volume type", "Volume type"))?;
        Ok(Json(json!({"default_type": default_json(&project, t.uuid)})).into_response())
    })
    .await
}

/// `DELETE /v3/default-types/{project-id}`: back to `__DEFAULT__`.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = target(&caller, &path)?;
    blocking(&state, move |s| {
        s.set_project_default_type(&project, None)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
