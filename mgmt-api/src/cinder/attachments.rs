//! The attachments API (microversion 3.27 and later): reserve a volume for
//! an instance, connect a host (its NQN is granted the volume and the
//! answer carries the NVMe-oF connection info), complete, and delete
//! (access revoked unless another attachment of the volume still uses it).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::actions::{change_access, connection_info, connector_nqn};
use super::error::CinderError;
use super::volumes::{locate, timestamp};
use super::{blocking, element, ApiVersion, CinderCaller, CinderJson, CinderPath};
use crate::domain::model::{AttachmentRecord, AttachmentStatus};
use crate::domain::Service;
use crate::http::AppState;

/// The first microversion with the attachments API.
const SINCE: (u32, u32) = (3, 27);

fn require_version(version: ApiVersion) -> Result<(), CinderError> {
    if version.0 >= SINCE {
        Ok(())
    } else {
        Err(CinderError::not_found(
            "the attachments API needs microversion 3.27 or later",
        ))
    }
}

fn view(s: &Service, a: &AttachmentRecord) -> Value {
    let info = match (&a.host_nqn, s.volume(a.volume)) {
        (Some(nqn), Ok(v)) => Some(connection_info(s, &v.record, nqn)["data"].clone()),
        _ => None,
    };
    json!({
        "id": a.id,
        "volume_id": a.volume,
        "instance": a.instance,
        "status": a.status.as_str(),
        "attach_mode": a.mode,
        "attached_at": (a.status == AttachmentStatus::Attached).then(|| timestamp(a.attached_at_s)),
        "detached_at": null,
        "connection_info": info,
    })
}

/// The attachment `id` of a volume of `project`, or 404.
fn locate_attachment(
    s: &Service,
    project: &str,
    id: Uuid,
) -> Result<AttachmentRecord, CinderError> {
    let a = s
        .attachment(id)
        .map_err(|_| CinderError::not_found(format!("Attachment {id} could not be found.")))?;
    locate(s, project, a.volume)
        .map_err(|_| CinderError::not_found(format!("Attachment {id} could not be found.")))?;
    Ok(a)
}

/// Connects attachment `id` of `volume` to the host `nqn`: the host is
/// granted the volume, and a reserved attachment becomes attaching.
fn connect(
    s: &Service,
    volume: &crate::domain::model::VolumeRecord,
    id: Uuid,
    nqn: String,
) -> Result<AttachmentRecord, CinderError> {
    change_access(s, volume.uuid, &volume.acl, &nqn, true)?;
    Ok(s.change_attachment(id, |a| {
        a.host_nqn = Some(nqn);
        if a.status == AttachmentStatus::Reserved {
            a.status = AttachmentStatus::Attaching;
        }
    })?)
}

/// `GET /v3/{project_id}/attachments` (and `/detail`).
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    require_version(version)?;
    let project = caller.project(path.project(), false)?;
    blocking(&state, move |s| {
        s.require_project(&project)?;
        let catalog = s.catalog_snapshot();
        let listed: Vec<Value> = catalog
            .attachments
            .values()
            .filter(|a| {
                catalog
                    .volumes
                    .get(&a.volume)
                    .is_some_and(|v| v.project == project)
            })
            .map(|a| view(s, a))
            .collect();
        Ok(Json(json!({"attachments": listed})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/attachments/{attachment_id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    require_version(version)?;
    let project = caller.project(path.project(), false)?;
    let id = path.id("attachment_id", "Attachment")?;
    blocking(&state, move |s| {
        Ok(
            Json(json!({"attachment": view(s, &locate_attachment(s, &project, id)?)}))
                .into_response(),
        )
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    attachment: Option<Value>,
}

/// `POST /v3/{project_id}/attachments`: reserved, or with a `connector`
/// connected at once.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<CreateBody>,
) -> Result<Response, CinderError> {
    require_version(version)?;
    let project = caller.project(path.project(), true)?;
    let args = element(body.attachment, "attachment")?;
    let volume = args
        .get("volume_uuid")
        .and_then(Value::as_str)
        .ok_or_else(|| CinderError::bad_request("volume_uuid is mandatory"))?
        .parse::<Uuid>()
        .map_err(|_| CinderError::bad_request("volume_uuid is not a UUID"))?;
    let instance = args
        .get("instance_uuid")
        .and_then(Value::as_str)
        .map(|i| {
            i.parse::<Uuid>()
                .map_err(|_| CinderError::bad_request("instance_uuid is not a UUID"))
        })
        .transpose()?;
    let mode = args
        .get("mode")
        .and_then(Value::as_str)
        .unwrap_or("rw")
        .to_owned();
    let nqn = args
        .get("connector")
        .map(|_| connector_nqn(&args))
        .transpose()?;
    blocking(&state, move |s| {
        let v = locate(s, &project, volume)?;
        let status = super::volumes::status_of(&s.catalog_snapshot(), &v.record);
        if status != "available" && status != "in-use" && status != "reserved" {
            return Err(CinderError::bad_request(format!(
                "Invalid volume: Volume {volume} status must be available or in-use or downloading to reserve, but the current status is {status}."
            )));
        }
        let mut a = s.reserve_attachment(volume, instance, &mode)?;
        if let Some(nqn) = nqn {
            a = connect(s, &v.record, a.id, nqn)?;
        }
        Ok(Json(json!({"attachment": view(s, &a)})).into_response())
    })
    .await
}

/// `PUT /v3/{project_id}/attachments/{attachment_id}`: connects a host.
pub(super) async fn update(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<CreateBody>,
) -> Result<Response, CinderError> {
    require_version(version)?;
    let project = caller.project(path.project(), true)?;
    let id = path.id("attachment_id", "Attachment")?;
    let args = element(body.attachment, "attachment")?;
    let nqn = connector_nqn(&args)?;
    blocking(&state, move |s| {
        let a = locate_attachment(s, &project, id)?;
        let v = locate(s, &project, a.volume)?;
        let a = connect(s, &v.record, id, nqn)?;
        Ok(Json(json!({"attachment": view(s, &a)})).into_response())
    })
    .await
}

/// `POST /v3/{project_id}/attachments/{attachment_id}/action` with
/// `os-complete` (3.44): the attach is done.
pub(super) async fn complete(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<serde_json::Map<String, Value>>,
) -> Result<Response, CinderError> {
    if version.0 < (3, 44) {
        return Err(CinderError::not_found(
            "os-complete needs microversion 3.44 or later",
        ));
    }
    let project = caller.project(path.project(), true)?;
    let id = path.id("attachment_id", "Attachment")?;
    if body.len() != 1 || !body.contains_key("os-complete") {
        return Err(CinderError::bad_request(
            "the only attachment action is os-complete",
        ));
    }
    blocking(&state, move |s| {
        let a = locate_attachment(s, &project, id)?;
        if a.host_nqn.is_none() {
            return Err(CinderError::bad_request(format!(
                "Invalid attachment: attachment {id} has no connector yet"
            )));
        }
        s.change_attachment(id, |a| a.status = AttachmentStatus::Attached)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `DELETE /v3/{project_id}/attachments/{attachment_id}`: the host's
/// access goes unless another attachment of the volume still uses it.
pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(version): Extension<ApiVersion>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    require_version(version)?;
    let project = caller.project(path.project(), true)?;
    let id = path.id("attachment_id", "Attachment")?;
    blocking(&state, move |s| {
        locate_attachment(s, &project, id)?;
        let a = s.remove_attachment(id)?;
        if let Some(nqn) = &a.host_nqn {
            let still_used = s
                .attachments_of(a.volume)
                .iter()
                .any(|other| other.host_nqn.as_ref() == Some(nqn));
            if !still_used {
                let v = locate(s, &project, a.volume)?;
                change_access(s, a.volume, &v.record.acl, nqn, false)?;
            }
        }
        Ok(Json(json!({"attachments": []})).into_response())
    })
    .await
}
