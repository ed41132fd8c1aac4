//! Snapshots: create, list, detail, show, update (name, description),
//! metadata, actions and delete. Names and descriptions a Cinder client
//! gives that Keel's rules refuse, or later changes, are kept as Cinder's
//! own labels of the snapshot beside its Keel name.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::volumes::{locate, timestamp, DESCRIPTION_LABEL, NAME_LABEL};
use super::{blocking, element, parse_id, CinderCaller, CinderJson, CinderPath, Page, GIB};
use crate::domain::model::{Label, ResourceState, SnapshotRecord};
use crate::domain::{rules, NewSnapshot, Service};
use crate::http::AppState;

fn status(s: &SnapshotRecord) -> &'static str {
    match s.state {
        ResourceState::Creating => "creating",
        ResourceState::Available | ResourceState::Updating => "available",
        ResourceState::Deleting => "deleting",
        ResourceState::Failed => "error",
    }
}

/// A snapshot in Cinder's shape: its Cinder name and description where
/// they differ from Keel's, and its metadata, from its labels.
fn detail(s: &SnapshotRecord, labels: &[Label]) -> Value {
    let own = |key: &str| {
        labels
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.value.clone())
    };
    let metadata = super::metadata::metadata_of(labels);
    json!({
        "id": s.uuid,
        "name": own(NAME_LABEL).unwrap_or_else(|| s.name.clone()),
        "description": own(DESCRIPTION_LABEL).unwrap_or_else(|| s.description.clone()),
        "volume_id": s.source_volume,
        "size": s.size_bytes.div_ceil(GIB),
        "status": status(s),
        "created_at": timestamp(s.created_at_s),
        "updated_at": null,
        "metadata": metadata,
        "progress": "100%",
        "os-extended-snapshot-attributes:project_id": s.project,
        "os-extended-snapshot-attributes:progress": "100%",
        "links": [],
    })
}

/// The snapshot's document as the service holds it now.
fn shown(s: &Service, snap: &SnapshotRecord) -> Value {
    detail(snap, &s.snapshot_labels(snap.uuid))
}

/// The name Cinder shows for a snapshot with `labels`.
fn display_name(snap: &SnapshotRecord, labels: &[Label]) -> String {
    labels
        .iter()
        .find(|l| l.key == NAME_LABEL)
        .map_or_else(|| snap.name.clone(), |l| l.value.clone())
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
        .filter(|snap| !snap.is_clone_point())
        .filter(|snap| name.is_none_or(|n| *n == display_name(snap, &s.snapshot_labels(snap.uuid))))
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
        let snapshots: Vec<Value> = listed(s, &project, &query)?
            .iter()
            .map(|snap| shown(s, snap))
            .collect();
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

pub(super) fn locate_snapshot(
    s: &Service,
    project: &str,
    id: Uuid,
) -> Result<SnapshotRecord, CinderError> {
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
        let snap = locate_snapshot(s, &project, id)?;
        Ok(Json(json!({"snapshot": shown(s, &snap)})).into_response())
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
    let mut labels: Vec<Label> = req
        .metadata
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| Label { key, value })
        .collect();
    labels.sort_by(|a, b| a.key.cmp(&b.key));
    let volume = parse_id(
        "Volume",
        req.volume_id
            .as_deref()
            .ok_or_else(|| CinderError::bad_request("volume_id is mandatory"))?,
    )?;
    let uuid = Uuid::new_v4();
    let wanted = req.name.filter(|n| !n.is_empty());
    blocking(&state, move |s| {
        // Cinder names are free text and need not be unique: one Keel's
        // rules refuse is kept as Cinder's own label.
        let fallback = format!("snapshot-{uuid}");
        let name = match wanted {
            Some(n) if rules::check_name("name", &n).is_ok() && s.snapshot_by_name(&project, &n).is_err() => n,
            Some(n) => {
                labels.push(Label {
                    key: NAME_LABEL.to_owned(),
                    value: n,
                });
                fallback
            }
            None => fallback,
        };
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
            labels,
            ..NewSnapshot::default()
        })?;
        Ok((StatusCode::ACCEPTED, Json(json!({"snapshot": shown(s, &snap)}))).into_response())
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

/// `PUT /v3/{project_id}/snapshots/{snapshot_id}`: a new name or
/// description is Cinder's (kept as its own labels); the Keel name stays.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<UpdateBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("snapshot_id", "Snapshot")?;
    let req = element(body.snapshot, "snapshot")?;
    if let Some(d) = &req.description {
        rules::check_description(d).map_err(CinderError::bad_request)?;
    }
    blocking(&state, move |s| {
        let snap = locate_snapshot(s, &project, id)?;
        let mut labels = s.snapshot_labels(id);
        let mut own = |key: &str, value: Option<String>, keel: &str| {
            if let Some(value) = value {
                labels.retain(|l| l.key != key);
                if value != keel {
                    labels.push(Label {
                        key: key.to_owned(),
                        value,
                    });
                }
            }
        };
        own(NAME_LABEL, req.name, &snap.name);
        own(DESCRIPTION_LABEL, req.description, &snap.description);
        s.set_snapshot_labels(id, labels)?;
        Ok(Json(json!({"snapshot": shown(s, &snap)})).into_response())
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
