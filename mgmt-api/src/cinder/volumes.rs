//! Volumes: create (empty, from a snapshot, or from another volume through
//! a point-in-time snapshot), list, detail, show, update and delete.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::metadata::compose;
use super::{blocking, element, parse_id, CinderCaller, CinderJson, CinderPath, Page, GIB};
use crate::domain::model::{AttachmentStatus, Catalog, Label, ResourceState, VolumeRecord};
use crate::domain::volume_types::{DEFAULT_TYPE_ID, DEFAULT_TYPE_NAME};
use crate::domain::{NewVolume, Service, VolumeChanges, VolumeFilter, VolumeView};
use crate::http::AppState;

/// RFC 3339 time of `seconds` since the Unix epoch, as Cinder prints it.
pub(super) fn timestamp(seconds: u64) -> String {
    let days = seconds / 86_400;
    let rem = seconds % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000000",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The status Cinder shows: an attach workflow's, else in-use while
/// attached (attaching or reserved while an attachment is on its way),
/// else the record's state.
pub(super) fn status_of(catalog: &Catalog, record: &VolumeRecord) -> String {
    if let Some(status) = catalog.attach_status.get(&record.uuid) {
        return status.clone();
    }
    let attachments = || {
        catalog
            .attachments
            .values()
            .filter(|a| a.volume == record.uuid)
    };
    let any = |status: AttachmentStatus| attachments().any(|a| a.status == status);
    match record.state {
        ResourceState::Creating => "creating",
        ResourceState::Updating => "extending",
        ResourceState::Deleting => "deleting",
        ResourceState::Failed => "error",
        ResourceState::Available if any(AttachmentStatus::Attached) => "in-use",
        ResourceState::Available if any(AttachmentStatus::Attaching) => "attaching",
        ResourceState::Available if any(AttachmentStatus::Reserved) => "reserved",
        ResourceState::Available => "available",
    }
    .to_owned()
}

fn summary(r: &VolumeRecord) -> Value {
    json!({"id": r.uuid, "name": display_name(r), "links": []})
}

/// A volume in Cinder's detailed shape.
pub(super) fn detail(catalog: &Catalog, view: &VolumeView) -> Value {
    let r = &view.record;
    let attachments: Vec<Value> = catalog
        .attachments
        .values()
        .filter(|a| a.volume == r.uuid)
        .map(|a| {
            json!({
                "id": r.uuid,
                "attachment_id": a.id,
                "volume_id": r.uuid,
                "server_id": a.instance,
                "host_name": a.host_name,
                "device": a.mountpoint,
                "attached_at": timestamp(a.attached_at_s),
            })
        })
        .collect();
    let volume_type = catalog
        .volume_type_of
        .get(&r.uuid)
        .and_then(|t| catalog.volume_types.get(t));
    // A clone of a live volume was made through a snapshot it outlives.
    let (snapshot_id, source_volid) = match r.source_volume {
        Some(volume) => (None, Some(volume)),
        None => (r.source_snapshot, None),
    };
    json!({
        "id": r.uuid,
        "name": display_name(r),
        "description": description_of(r),
        "size": r.size_bytes.div_ceil(GIB),
        "status": status_of(catalog, r),
        "availability_zone": "nova",
        "created_at": timestamp(r.created_at_s),
        "updated_at": null,
        "volume_type": volume_type.map_or(DEFAULT_TYPE_NAME, |t| t.name.as_str()),
        "volume_type_id": volume_type.map_or(DEFAULT_TYPE_ID, |t| t.uuid),
        "snapshot_id": snapshot_id,
        "source_volid": source_volid,
        "metadata": super::metadata::metadata_of(&r.labels),
        "bootable": own_label(r, BOOTABLE_LABEL).unwrap_or_else(|| "false".to_owned()),
        "volume_image_metadata": image_metadata(r),
        "encrypted": false,
        "multiattach": false,
        "attachments": attachments,
        "replication_status": "disabled",
        "consistencygroup_id": null,
        "user_id": null,
        "os-vol-tenant-attr:tenant_id": r.project,
        "os-vol-host-attr:host": "keel@keel#pool",
        "links": [],
    })
}

/// The key prefix of Cinder's own labels: not the volume's metadata.
pub(super) const OWN_PREFIX: &str = "cinder.";
/// The label a volume's Cinder description is kept in.
pub(super) const DESCRIPTION_LABEL: &str = "cinder.description";
/// The label of the bootable flag.
pub(super) const BOOTABLE_LABEL: &str = "cinder.bootable";
/// The key prefix of a volume's image metadata.
pub(super) const IMAGE_PREFIX: &str = "cinder.image.";
/// The label of a volume Cinder has let go (`os-unmanage`): the volume
/// stays, hidden from Cinder until managed again.
pub(super) const UNMANAGED_LABEL: &str = "cinder.unmanaged";

/// The label of a Cinder name that is not the volume's Keel name (one
/// Keel's name rules refuse, or one another volume of the project has:
/// Cinder names are free text and need not be unique).
pub(super) const NAME_LABEL: &str = "cinder.name";

/// The name Cinder shows: its own when the Keel name could not be it.
pub(super) fn display_name(r: &VolumeRecord) -> String {
    own_label(r, NAME_LABEL).unwrap_or_else(|| r.name.clone())
}

/// The Keel name for a new volume Cinder calls `name`, and the label that
/// keeps `name` when the Keel name cannot be it.
fn keel_name(
    s: &Service,
    project: &str,
    uuid: Uuid,
    name: Option<String>,
) -> (String, Option<Label>) {
    let fallback = format!("volume-{uuid}");
    match name.filter(|n| !n.is_empty()) {
        None => (fallback, None),
        Some(n)
            if crate::domain::rules::check_name("name", &n).is_ok()
                && s.volume_by_name(project, &n).is_err() =>
        {
            (n, None)
        }
        Some(n) => (
            fallback,
            Some(Label {
                key: NAME_LABEL.to_owned(),
                value: n,
            }),
        ),
    }
}

/// Whether Cinder has let the volume go.
pub(super) fn is_unmanaged(r: &VolumeRecord) -> bool {
    r.labels.iter().any(|l| l.key == UNMANAGED_LABEL)
}

fn listed(
    s: &Service,
    project: &str,
    query: &HashMap<String, String>,
) -> Result<Vec<VolumeView>, CinderError> {
    s.require_project(project)?;
    let page = Page::parse(query)?;
    let name = query.get("name").cloned();
    let status = query.get("status").cloned();
    let named = move |r: &VolumeRecord| name.as_ref().is_none_or(|n| display_name(r) == *n);
    let catalog = s.catalog_snapshot();
    let views = s
        .volumes(&VolumeFilter {
            project: Some(project.to_owned()),
            limit: Some(crate::domain::service::LIST_LIMIT_MAX),
            ..VolumeFilter::default()
        })
        .into_iter()
        .filter(|v| !is_unmanaged(&v.record) && named(&v.record))
        .filter(|v| {
            status
                .as_ref()
                .is_none_or(|st| status_of(&catalog, &v.record) == *st)
        })
        .collect();
    // Paged after the status filter, so a page holds `limit` matches.
    Ok(page.apply(views, |v| v.record.uuid))
}

/// `GET /v3/{project_id}/volumes`.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    blocking(&state, move |s| {
        let views = listed(s, &project, &query)?;
        let volumes: Vec<Value> = views.iter().map(|v| summary(&v.record)).collect();
        Ok(Json(json!({"volumes": volumes})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/volumes/summary`: the project's volume count,
/// total GiB and every metadata key with its values (3.36).
pub(super) async fn totals(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    blocking(&state, move |s| {
        let catalog = s.catalog_snapshot();
        let volumes: Vec<&VolumeRecord> = catalog
            .volumes
            .values()
            .filter(|v| v.project == project && v.state != ResourceState::Deleting)
            .filter(|v| !is_unmanaged(v))
            .collect();
        let mut keys: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        for label in volumes.iter().flat_map(|v| metadata_map(v)) {
            let values = keys.entry(label.key).or_default();
            if !values.contains(&label.value) {
                values.push(label.value);
            }
        }
        for values in keys.values_mut() {
            values.sort();
        }
        Ok(Json(json!({"volume-summary": {
            "total_size": volumes.iter().map(|v| v.size_bytes.div_ceil(GIB)).sum::<u64>(),
            "total_count": volumes.len(),
            "metadata": keys,
        }}))
        .into_response())
    })
    .await
}

/// `GET /v3/{project_id}/volumes/detail`.
pub(super) async fn list_detail(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    blocking(&state, move |s| {
        let views = listed(s, &project, &query)?;
        let catalog = s.catalog_snapshot();
        let volumes: Vec<Value> = views.iter().map(|v| detail(&catalog, v)).collect();
        Ok(Json(json!({"volumes": volumes})).into_response())
    })
    .await
}

/// The volume `id` of `project`, or 404.
pub(super) fn locate(s: &Service, project: &str, id: Uuid) -> Result<VolumeView, CinderError> {
    match s.volume(id) {
        Ok(v) if v.record.project == project && !is_unmanaged(&v.record) => Ok(v),
        _ => Err(CinderError::not_found(format!(
            "Volume {id} could not be found."
        ))),
    }
}

/// `GET /v3/{project_id}/volumes/{volume_id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let id = path.id("volume_id", "Volume")?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        Ok(Json(json!({"volume": detail(&s.catalog_snapshot(), &view)})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    volume: Option<CreateVolume>,
}

#[derive(Debug, Deserialize)]
struct CreateVolume {
    size: Option<u64>,
    name: Option<String>,
    description: Option<String>,
    snapshot_id: Option<String>,
    source_volid: Option<String>,
    volume_type: Option<String>,
    availability_zone: Option<String>,
    #[serde(rename = "imageRef")]
    image_ref: Option<String>,
    multiattach: Option<bool>,
    metadata: Option<HashMap<String, String>>,
}

/// `POST /v3/{project_id}/volumes`: 202 with the volume, available once
/// answered (creates are synchronous here).
pub(super) async fn create(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<CreateBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let v = element(body.volume, "volume")?;
    if v.image_ref.is_some() {
        return Err(CinderError::bad_request(
            "creating a volume from an image needs an image service, which this cluster lacks",
        ));
    }
    if v.multiattach == Some(true) {
        return Err(CinderError::bad_request(
            "multiattach volumes are not provided",
        ));
    }
    if let Some(zone) = v.availability_zone.as_deref().filter(|z| *z != "nova") {
        return Err(CinderError::bad_request(format!(
            "Availability zone '{zone}' is invalid."
        )));
    }
    let snapshot = v
        .snapshot_id
        .as_deref()
        .map(|id| parse_id("Snapshot", id))
        .transpose()?;
    let source = v
        .source_volid
        .as_deref()
        .map(|id| parse_id("Volume", id))
        .transpose()?;
    if snapshot.is_some() && source.is_some() {
        return Err(CinderError::bad_request(
            "give at most one of snapshot_id and source_volid",
        ));
    }
    let size_gib = v.size;
    if size_gib == Some(0) || (size_gib.is_none() && snapshot.is_none() && source.is_none()) {
        return Err(CinderError::bad_request(
            "Invalid input received: size must be a positive number of GiB",
        ));
    }
    let size = size_gib
        .map(|g| {
            g.checked_mul(GIB)
                .ok_or_else(|| CinderError::bad_request("size is too large"))
        })
        .transpose()?;
    let uuid = Uuid::new_v4();
    let wanted_name = v.name;
    let mut labels = labels_of(to_labels(v.metadata.unwrap_or_default()), v.description);
    let wanted_type = v.volume_type;
    blocking(&state, move |s| {
        let (name, name_label) = keel_name(s, &project, uuid, wanted_name);
        labels.extend(name_label);
        // No type named: the project's default type, if it has one.
        let volume_type = match wanted_type {
            Some(t) => super::types::find_type(s, &caller, &project, &t)?,
            None => s
                .project_default_types()
                .into_iter()
                .find(|(p, _)| *p == project)
                .and_then(|(_, t)| s.volume_type(t).ok()),
        };
        let new = NewVolume {
            name,
            project: project.clone(),
            size_bytes: size,
            labels,
            source_snapshot: snapshot,
            uuid: Some(uuid),
            volume_type: volume_type.map(|t| t.uuid),
            ..NewVolume::default()
        };
        let created = match source {
            Some(volume) => {
                locate(s, &project, volume)?;
                s.clone_volume(volume, new)
            }
            None => s.create_volume(new),
        };
        let view = created.map_err(|e| match e {
            crate::domain::ServiceError::NotFound {
                what: "snapshot",
                id,
            } => CinderError::not_found(format!("Snapshot {id} could not be found.")),
            other => other.into(),
        })?;
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"volume": detail(&s.catalog_snapshot(), &view)})),
        )
            .into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct UpdateBody {
    volume: Option<UpdateVolume>,
}

#[derive(Debug, Deserialize)]
struct UpdateVolume {
    name: Option<String>,
    description: Option<String>,
    metadata: Option<HashMap<String, String>>,
}

/// `PUT /v3/{project_id}/volumes/{volume_id}`: name, description and
/// metadata (a new name is Cinder's; the Keel name the other dialects and
/// hosts know stays).
pub(super) async fn update(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<UpdateBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("volume_id", "Volume")?;
    let u = element(body.volume, "volume")?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        let metadata = u
            .metadata
            .map_or_else(|| metadata_map(&view.record), to_labels);
        let renamed = u.name.filter(|n| *n != display_name(&view.record));
        let mut own: Vec<Label> = own_labels(&view.record)
            .into_iter()
            .filter(|l| l.key != DESCRIPTION_LABEL)
            .filter(|l| renamed.is_none() || l.key != NAME_LABEL)
            .collect();
        // The Keel name stays (other dialects and hosts know it); a new
        // Cinder name different from it is kept beside it.
        if let Some(name) = renamed.filter(|n| *n != view.record.name) {
            own.push(Label {
                key: NAME_LABEL.to_owned(),
                value: name,
            });
        }
        if let Some(d) = u
            .description
            .or_else(|| description_of(&view.record))
            .filter(|d| !d.is_empty())
        {
            own.push(Label {
                key: DESCRIPTION_LABEL.to_owned(),
                value: d,
            });
        }
        let labels = compose(metadata, own);
        let view = s.update_volume(
            id,
            VolumeChanges {
                labels: Some(labels),
                ..VolumeChanges::default()
            },
            None,
        )?;
        Ok(Json(json!({"volume": detail(&s.catalog_snapshot(), &view)})).into_response())
    })
    .await
}

/// `DELETE /v3/{project_id}/volumes/{volume_id}`: 202; refused while
/// attached or in an attach workflow, or while it has snapshots.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("volume_id", "Volume")?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        let status = status_of(&s.catalog_snapshot(), &view.record);
        if !matches!(status.as_str(), "available" | "error" | "error_restoring" | "error_extending") {
            return Err(CinderError::bad_request(format!(
                "Invalid volume: Volume status must be available or error or error_restoring or error_extending or error_managing and must not be migrating, attached, belong to a group, have snapshots or be disassociated from snapshots after volume transfer. (status {status})"
            )));
        }
        if !s.snapshots(Some(&project), Some(id), false).is_empty() {
            return Err(CinderError::bad_request(
                "Invalid volume: Volume still has 1 dependent snapshots.",
            ));
        }
        s.delete_volume(id, None)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// A volume's Cinder description.
fn description_of(r: &VolumeRecord) -> Option<String> {
    r.labels
        .iter()
        .find(|l| l.key == DESCRIPTION_LABEL)
        .map(|l| l.value.clone())
}

/// Metadata as labels.
fn to_labels(metadata: HashMap<String, String>) -> Vec<Label> {
    metadata
        .into_iter()
        .map(|(key, value)| Label { key, value })
        .collect()
}

/// The labels a volume keeps: its metadata by key, then its description
/// (when not empty) in a label of its own.
fn labels_of(metadata: Vec<Label>, description: Option<String>) -> Vec<Label> {
    let own = description.filter(|d| !d.is_empty()).map(|value| Label {
        key: DESCRIPTION_LABEL.to_owned(),
        value,
    });
    compose(metadata, own.into_iter().collect())
}

/// A volume's image metadata (`os-set_image_metadata`).
pub(super) fn image_metadata(r: &VolumeRecord) -> Value {
    Value::Object(
        r.labels
            .iter()
            .filter_map(|l| {
                l.key
                    .strip_prefix(IMAGE_PREFIX)
                    .map(|k| (k.to_owned(), Value::String(l.value.clone())))
            })
            .collect(),
    )
}

/// A volume's metadata: every label but Cinder's own.
pub(super) fn metadata_map(r: &VolumeRecord) -> Vec<Label> {
    r.labels
        .iter()
        .filter(|l| !l.key.starts_with(OWN_PREFIX))
        .cloned()
        .collect()
}

/// Cinder's own labels of a volume.
pub(super) fn own_labels(r: &VolumeRecord) -> Vec<Label> {
    r.labels
        .iter()
        .filter(|l| l.key.starts_with(OWN_PREFIX))
        .cloned()
        .collect()
}

/// The value of Cinder's own label `key`.
pub(super) fn own_label(r: &VolumeRecord, key: &str) -> Option<String> {
    r.labels
        .iter()
        .find(|l| l.key == key)
        .map(|l| l.value.clone())
}

/// Replaces Cinder's own labels of a volume, keeping its metadata.
pub(super) fn store_own(
    s: &Service,
    view: &VolumeView,
    own: Vec<Label>,
) -> Result<(), CinderError> {
    s.update_volume(
        view.record.uuid,
        VolumeChanges {
            labels: Some(compose(metadata_map(&view.record), own)),
            ..VolumeChanges::default()
        },
        None,
    )?;
    Ok(())
}
