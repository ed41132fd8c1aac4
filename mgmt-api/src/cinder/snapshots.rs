//! Snapshots: create, list, detail, show, update (description) and delete.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::volumes::{locate, timestamp};
use super::{blocking, element, parse_id, CinderCaller, CinderJson, CinderPath, Page, GIB};
use crate::domain::model::{ResourceState, SnapshotRecord};
use crate::domain::{NewSnapshot, Service};
use crate::http::AppState;

fn status(s: &SnapshotRecord) -> &'static str {
    match s.state {
        ResourceState::Creating => "creating",
        ResourceState::Available | ResourceState::Updating => "available",
        ResourceState::Deleting => "deleting",
        ResourceState::Failed => "error",
    }
}

fn detail(s: &SnapshotRecord) -> Value {
    json!({
        "id": s.uuid,
        "name": s.name,
        "description": s.description,
        "volume_id": s.source_volume,
        "size": s.size_bytes.div_ceil(GIB),
        "status": status(s),
        "created_at": timestamp(s.created_at_s),
        "updated_at": null,
        "metadata": {},
        "progress": "100%",
        "os-extended-snapshot-attributes:project_id": s.project,
        "os-extended-snapshot-attributes:progress": "100%",
        "links": [],
    })
}

fn listed(
    s: &Service,
    project: &str,
    query: &HashMap<String, String>,
) -> Result<Vec<SnapshotRecord>, CinderError> {
    s.require_project(project)?;
    let volume = query
        .get("volume_id")
        .map(|v| parse_id("Volume", v))
        .transpose()?;
    let name = query.get("name");
    let snaps: Vec<SnapshotRecord> = s
        .snapshots(Some(project), volume, false)
        .into_iter()
        .filter(|snap| name.is_none_or(|n| *n == snap.name))
        .filter(|snap| !snap.is_clone_point())
        .collect();
    Ok(Page::parse(query)?.apply(snaps, |snap| snap.uuid))
}

/// `GET /v3/{project_id}/snapshots`.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    blocking(&state, move |s| {
        let snapshots: Vec<Value> = listed(s, &project, &query)?.iter().map(detail).collect();
        Ok(Json(json!({"snapshots": snapshots})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/snapshots/detail`.
pub(super) async fn list_detail(
    state: State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    query: Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    list(state, caller, path, query).await
}

fn locate_snapshot(s: &Service, project: &str, id: Uuid) -> Result<SnapshotRecord, CinderError> {
    match s.snapshot(id) {
        Ok(snap) if snap.project == project => Ok(snap),
        _ => Err(CinderError::not_found(format!(
            "Snapshot {id} could not be found."
        ))),
    }
}

/// `GET /v3/{project_id}/snapshots/{snapshot_id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let id = path.id("snapshot_id", "Snapshot")?;
    blocking(&state, move |s| {
        Ok(Json(json!({"snapshot": detail(&locate_snapshot(s, &project, id)?)})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    snapshot: Option<CreateSnapshot>,
}

#[derive(Debug, Deserialize)]
struct CreateSnapshot {
    volume_id: Option<String>,
    name: Option<String>,
    description: Option<String>,
    force: Option<bool>,
    metadata: Option<HashMap<String, String>>,
}

/// `POST /v3/{project_id}/snapshots`: 202 with the snapshot; a volume in
/// use needs `force` (the snapshot is crash-consistent either way).
pub(super) async fn create(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<CreateBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let req = element(body.snapshot, "snapshot")?;
    if req.metadata.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(CinderError::bad_request(
            "snapshot metadata is not kept by this cluster",
        ));
    }
    let volume = parse_id(
        "Volume",
        req.volume_id
            .as_deref()
            .ok_or_else(|| CinderError::bad_request("volume_id is mandatory"))?,
    )?;
    let uuid = Uuid::new_v4();
    let name = req
        .name
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| format!("snapshot-{uuid}"));
    blocking(&state, move |s| {
        let view = locate(s, &project, volume)?;
        let status = super::volumes::status_of(&s.catalog_snapshot(), &view.record);
        if status == "in-use" && req.force != Some(true) {
            return Err(CinderError::bad_request(format!(
                "Invalid volume: Volume {volume} status must be available, but current status is: in-use."
            )));
        }
        let snap = s.create_snapshot(NewSnapshot {
            name,
            project,
            source_volume: volume,
            description: req.description.unwrap_or_default(),
            uuid: Some(uuid),
            ..NewSnapshot::default()
        })?;
        Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": detail(&snap)}))).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct UpdateBody {
    snapshot: Option<UpdateSnapshot>,
}

#[derive(Debug, Deserialize)]
struct UpdateSnapshot {
    name: Option<String>,
    description: Option<String>,
}

/// `PUT /v3/{project_id}/snapshots/{snapshot_id}`: only what it was, as
/// snapshot names and descriptions are fixed at creation here.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<UpdateBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("snapshot_id", "Snapshot")?;
    let req = element(body.snapshot, "snapshot")?;
    blocking(&state, move |s| {
        let snap = locate_snapshot(s, &project, id)?;
        if req.name.as_ref().is_some_and(|n| *n != snap.name)
            || req
                .description
                .as_ref()
                .is_some_and(|d| *d != snap.description)
        {
            return Err(CinderError::bad_request(
                "a snapshot's name and description cannot change on this cluster",
            ));
        }
        Ok(Json(json!({"snapshot": detail(&snap)})).into_response())
    })
    .await
}

/// `POST /v3/{project_id}/snapshots/{snapshot_id}/action`: os-force_delete
/// (administrators; Keel deletes a snapshot in any state anyway). A
/// snapshot's status follows the engine, so os-reset_status and
/// os-update_snapshot_status are refused.
pub(super) async fn action(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    super::CinderJson(body): super::CinderJson<serde_json::Map<String, Value>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("snapshot_id", "Snapshot")?;
    let mut entries = body.into_iter();
    let (Some((name, _)), None) = (entries.next(), entries.next()) else {
        return Err(CinderError::bad_request(
            "the body must name exactly one action",
        ));
    };
    let admin = caller.principal.is_cluster_admin();
    blocking(&state, move |s| {
        locate_snapshot(s, &project, id)?;
        match name.as_str() {
            "os-force_delete" if !admin => Err(CinderError::new(
                StatusCode::FORBIDDEN,
                "Policy doesn't allow volume_extension:snapshot_admin_actions:force_delete to be performed.",
            )),
            "os-force_delete" => {
                s.delete_snapshot(id, None)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-reset_status" | "os-update_snapshot_status" => Err(CinderError::bad_request(format!(
                "{name} is not provided: a snapshot's status follows the storage engine"
            ))),
            other => Err(CinderError::bad_request(format!(
                "There is no such action: {}",
                crate::http::extract::truncate(other)
            ))),
        }
    })
    .await
}

/// `DELETE /v3/{project_id}/snapshots/{snapshot_id}`: 202. Volumes made
/// from it keep their data.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("snapshot_id", "Snapshot")?;
    blocking(&state, move |s| {
        locate_snapshot(s, &project, id)?;
        s.delete_snapshot(id, None)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}
