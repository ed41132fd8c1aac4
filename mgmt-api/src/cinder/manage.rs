//! Managing existing volumes: `manageable_volumes` lists the project's
//! Keel volumes (those Cinder already shows are not safe to manage), and
//! `os-volume-manage` takes one Cinder let go (`os-unmanage`) back, by
//! `source-name` or `source-id`, with a new name, description and
//! metadata if given.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::CinderError;
use super::volumes::{
    detail, is_unmanaged, own_labels, store_own, DESCRIPTION_LABEL, NAME_LABEL, UNMANAGED_LABEL,
};
use super::{blocking, element, CinderCaller, CinderJson, CinderPath, Page, GIB};
use crate::domain::model::{Label, ResourceState, VolumeRecord};
use crate::domain::VolumeChanges;
use crate::http::AppState;

fn reason_not_safe(r: &VolumeRecord) -> Option<&'static str> {
    if !is_unmanaged(r) {
        Some("already managed")
    } else if r.state != ResourceState::Available {
        Some("volume not available")
    } else {
        None
    }
}

fn manageable(r: &VolumeRecord, detailed: bool) -> Value {
    let reason = reason_not_safe(r);
    let mut v = json!({
        "reference": {"source-name": r.name, "source-id": r.uuid},
        "size": r.size_bytes.div_ceil(GIB),
        "safe_to_manage": reason.is_none(),
    });
    if detailed {
        v["reason_not_safe"] = json!(reason);
        v["cinder_id"] = json!((!is_unmanaged(r)).then_some(r.uuid));
        v["extra_info"] = Value::Null;
    }
    v
}

/// `GET /v3/{project_id}/manageable_volumes` and, with `DETAILED`, its
/// `/detail` (administrators).
pub(super) async fn list<const DETAILED: bool>(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    caller.require_admin()?;
    let project = caller.project(path.project(), false)?;
    let page = Page::parse(&query)?;
    blocking(&state, move |s| {
        let catalog = s.catalog_snapshot();
        let volumes: Vec<&VolumeRecord> = catalog
            .volumes
            .values()
            .filter(|v| v.project == project && v.state != ResourceState::Deleting)
            .collect();
        let list: Vec<Value> = page
            .apply(volumes, |v| v.uuid)
            .iter()
            .map(|v| manageable(v, DETAILED))
            .collect();
        Ok(Json(json!({"manageable-volumes": list})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct ManageBody {
    volume: Option<ManageVolume>,
}

#[derive(Debug, Deserialize)]
struct ManageVolume {
    #[serde(rename = "ref")]
    reference: Option<HashMap<String, Value>>,
    name: Option<String>,
    description: Option<String>,
    volume_type: Option<String>,
    metadata: Option<HashMap<String, String>>,
}

/// `POST /v3/{project_id}/os-volume-manage` (administrators): 202 with the
/// volume Cinder shows again.
pub(super) async fn manage(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<ManageBody>,
) -> Result<Response, CinderError> {
    caller.require_admin()?;
    let project = caller.project(path.project(), true)?;
    let v = element(body.volume, "volume")?;
    let reference = v.reference.ok_or_else(|| {
        CinderError::bad_request("Missing required element 'ref' in request body.")
    })?;
    if v.volume_type.as_deref().is_some_and(|t| t != "__DEFAULT__") {
        return Err(CinderError::bad_request(
            "a managed volume keeps its settings; give it a type with os-retype once managed",
        ));
    }
    let by_name = reference
        .get("source-name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let by_id = reference
        .get("source-id")
        .and_then(Value::as_str)
        .map(str::to_owned);
    blocking(&state, move |s| {
        let catalog = s.catalog_snapshot();
        let found = match (&by_name, &by_id) {
            (Some(name), _) => catalog.volume_named(&project, name).cloned(),
            (None, Some(id)) => id
                .parse::<uuid::Uuid>()
                .ok()
                .and_then(|id| catalog.volumes.get(&id))
                .filter(|r| r.project == project)
                .cloned(),
            (None, None) => {
                return Err(CinderError::bad_request(
                    "ref must name source-name or source-id",
                ))
            }
        };
        let record = found.ok_or_else(|| {
            CinderError::not_found(format!(
                "Manage existing volume failed due to invalid backend reference {reference:?}: no such volume"
            ))
        })?;
        if let Some(reason) = reason_not_safe(&record) {
            return Err(CinderError::bad_request(format!(
                "volume {} cannot be managed: {reason}",
                record.uuid
            )));
        }
        // A Cinder name Keel's rules take becomes the Keel name; another is
        // kept as Cinder's own.
        let mut cinder_name = None;
        if let Some(name) = v.name.filter(|n| *n != record.name) {
            if s.rename_volume(record.uuid, &name).is_err() {
                cinder_name = Some(name);
            }
        }
        let view = s.volume(record.uuid)?;
        let mut own: Vec<Label> = own_labels(&view.record)
            .into_iter()
            .filter(|l| l.key != UNMANAGED_LABEL && l.key != NAME_LABEL)
            .collect();
        if let Some(name) = cinder_name {
            own.push(Label {
                key: NAME_LABEL.to_owned(),
                value: name,
            });
        }
        if let Some(d) = v.description.filter(|d| !d.is_empty()) {
            own.retain(|l| l.key != DESCRIPTION_LABEL);
            own.push(Label {
                key: DESCRIPTION_LABEL.to_owned(),
                value: d,
            });
        }
        match v.metadata {
            Some(metadata) => {
                let mut labels: Vec<Label> = metadata
                    .into_iter()
                    .map(|(key, value)| Label { key, value })
                    .collect();
                labels.sort_by(|a, b| a.key.cmp(&b.key));
                labels.extend(own);
                s.update_volume(
                    record.uuid,
                    VolumeChanges {
                        labels: Some(labels),
                        ..VolumeChanges::default()
                    },
                    None,
                )?;
            }
            None => store_own(s, &view, own)?,
        }
        let view = s.volume(record.uuid)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({"volume": detail(&s.catalog_snapshot(), &view)})),
        )
            .into_response())
    })
    .await
}
