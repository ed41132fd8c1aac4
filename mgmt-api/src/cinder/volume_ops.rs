//! The volume actions beyond attaching: revert to the latest snapshot,
//! force delete and force detach (administrators), retype (the new type's
//! settings applied in place), the read-only flag (passed to the host as
//! the connection's access mode, as Cinder does), the bootable flag and
//! image metadata (Cinder's own labels of the volume).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use uuid::Uuid;

use super::actions::{change_access, connector_nqn};
use super::error::CinderError;
use super::types::find_type;
use super::volumes::{
    image_metadata, own_labels, status_of, store_own, BOOTABLE_LABEL, IMAGE_PREFIX, UNMANAGED_LABEL,
};
use super::CinderCaller;
use crate::domain::model::{Label, ResourceState};
use crate::domain::qos::QosPolicyRef;
use crate::domain::volume_types::settings;
use crate::domain::{Service, VolumeChanges, VolumeView};

/// The metadata key of the read-only flag (Cinder shows it as metadata).
pub(super) const READONLY_KEY: &str = "readonly";

fn accepted() -> Result<Response, CinderError> {
    Ok(StatusCode::ACCEPTED.into_response())
}

fn require_admin(caller: &CinderCaller, action: &str) -> Result<(), CinderError> {
    if caller.principal.is_cluster_admin() {
        Ok(())
    } else {
        Err(CinderError::new(
            StatusCode::FORBIDDEN,
            format!("Policy doesn't allow volume:{action} to be performed."),
        ))
    }
}

/// A boolean argument, as JSON or as Cinder's strings.
fn flag(args: &Value, name: &str) -> Result<bool, CinderError> {
    match args.get(name) {
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(t)) => match t.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Ok(true),
            "false" | "no" | "off" | "0" => Ok(false),
            _ => Err(CinderError::bad_request(format!(
                "{name} must be a boolean, not {t:?}"
            ))),
        },
        _ => Err(CinderError::bad_request(format!(
            "{name} must be a boolean"
        ))),
    }
}

/// Runs action `name` on `view`; `None` if it is not one of these.
pub(super) fn dispatch(
    s: &Service,
    caller: &CinderCaller,
    project: &str,
    view: &VolumeView,
    name: &str,
    args: &Value,
) -> Option<Result<Response, CinderError>> {
    let id = view.record.uuid;
    let outcome = match name {
        "revert" => revert(s, project, view, args),
        "os-force_delete" => require_admin(caller, "force_delete").and_then(|()| {
            if !s.snapshots(Some(project), Some(id), false).is_empty() {
                return Err(CinderError::bad_request(
                    "Invalid volume: Volume still has dependent snapshots.",
                ));
            }
            s.detach(id, None)?;
            s.delete_volume(id, None)?;
            accepted()
        }),
        "os-force_detach" => require_admin(caller, "force_detach").and_then(|()| {
            let attachment = args
                .get("attachment_id")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .map(|a| {
                    a.parse::<Uuid>().map_err(|_| {
                        CinderError::bad_request(format!("attachment_id {a:?} is not a UUID"))
                    })
                })
                .transpose()?;
            if args.get("connector").is_some_and(|c| !c.is_null()) {
                let nqn = connector_nqn(args)?;
                change_access(s, id, &view.record.acl, &nqn, false)?;
            }
            s.detach(id, attachment)?;
            accepted()
        }),
        "os-retype" => retype(s, caller, project, view, args),
        "os-unmanage" => unmanage(s, project, view),
        "os-update_readonly_flag" => flag(args, "readonly").and_then(|readonly| {
            let mut labels: Vec<Label> = view
                .record
                .labels
                .iter()
                .filter(|l| l.key != READONLY_KEY)
                .cloned()
                .collect();
            labels.push(Label {
                key: READONLY_KEY.to_owned(),
                value: if readonly { "True" } else { "False" }.to_owned(),
            });
            s.update_volume(
                id,
                VolumeChanges {
                    labels: Some(labels),
                    ..VolumeChanges::default()
                },
                None,
            )?;
            accepted()
        }),
        "os-set_bootable" => flag(args, "bootable").and_then(|bootable| {
            let mut own: Vec<Label> = own_labels(&view.record)
                .into_iter()
                .filter(|l| l.key != BOOTABLE_LABEL)
                .collect();
            own.push(Label {
                key: BOOTABLE_LABEL.to_owned(),
                value: bootable.to_string(),
            });
            store_own(s, view, own)?;
            Ok(StatusCode::OK.into_response())
        }),
        "os-set_image_metadata" => set_image_metadata(s, view, args),
        "os-show_image_metadata" => {
            Ok(Json(json!({"metadata": image_metadata(&view.record)})).into_response())
        }
        "os-unset_image_metadata" => {
            let key = args
                .get("key")
                .and_then(Value::as_str)
                .ok_or_else(|| CinderError::bad_request("key is mandatory"));
            key.and_then(|key| {
                let full = format!("{IMAGE_PREFIX}{key}");
                let own = own_labels(&view.record);
                if !own.iter().any(|l| l.key == full) {
                    return Err(CinderError::not_found(format!(
                        "Glance metadata for volume {id} has no key {key}."
                    )));
                }
                store_own(s, view, own.into_iter().filter(|l| l.key != full).collect())?;
                Ok(StatusCode::OK.into_response())
            })
        }
        _ => return None,
    };
    Some(outcome)
}

/// `revert`: back to the volume's latest snapshot, as Cinder allows only.
fn revert(
    s: &Service,
    project: &str,
    view: &VolumeView,
    args: &Value,
) -> Result<Response, CinderError> {
    let id = view.record.uuid;
    let snapshot = args
        .get("snapshot_id")
        .and_then(Value::as_str)
        .ok_or_else(|| CinderError::bad_request("snapshot_id is mandatory"))?;
    let snapshot: Uuid = snapshot
        .parse()
        .map_err(|_| CinderError::not_found(format!("Snapshot {snapshot} could not be found.")))?;
    let status = status_of(&s.catalog_snapshot(), &view.record);
    if status != "available" {
        return Err(CinderError::bad_request(format!(
            "Invalid volume: Volume status must be available to revert, but current status is: {status}."
        )));
    }
    let snaps: Vec<_> = s
        .snapshots(Some(project), Some(id), false)
        .into_iter()
        .filter(|x| !x.is_clone_point() && x.state == ResourceState::Available)
        .collect();
    let Some(target) = snaps.iter().find(|x| x.uuid == snapshot) else {
        return Err(CinderError::bad_request(format!(
            "Invalid snapshot: snapshot {snapshot} is not an available snapshot of volume {id}."
        )));
    };
    if snaps.iter().any(|x| x.is_newer_than(target)) {
        return Err(CinderError::bad_request(format!(
            "Invalid snapshot: the snapshot {snapshot} is not the volume {id}'s latest snapshot."
        )));
    }
    s.rollback_volume(id, snapshot)?;
    accepted()
}

/// `os-retype`: the new type's compression and QoS policy applied to the
/// volume; a different replica count would need a migration and is refused.
fn retype(
    s: &Service,
    caller: &CinderCaller,
    project: &str,
    view: &VolumeView,
    args: &Value,
) -> Result<Response, CinderError> {
    let id = view.record.uuid;
    let wanted = args
        .get("new_type")
        .and_then(Value::as_str)
        .ok_or_else(|| CinderError::bad_request("new_type is mandatory"))?;
    let new_type = find_type(s, caller, project, wanted)?;
    let typed = new_type.as_ref().map(settings).unwrap_or_default();
    let replicas = typed.replica_count.unwrap_or(1);
    if replicas != view.record.replica_count {
        return Err(CinderError::bad_request(format!(
            "Invalid volume type: the volume has {} replicas and type {wanted} asks {replicas}; changing the replica count needs a migration, which is not provided",
            view.record.replica_count
        )));
    }
    if typed.qos_policy.is_none() && view.record.qos_policy.is_some() {
        return Err(CinderError::bad_request(format!(
            "Invalid volume type: type {wanted} names no QoS specs, and the volume's QoS policy cannot be removed by a retype"
        )));
    }
    s.update_volume(
        id,
        VolumeChanges {
            compression: Some(typed.compression.unwrap_or(false)),
            qos_policy: typed.qos_policy.map(QosPolicyRef::Uuid),
            ..VolumeChanges::default()
        },
        None,
    )?;
    s.set_volume_type(id, new_type.map(|t| t.uuid))?;
    accepted()
}

/// `os-unmanage`: Cinder lets the volume go; it stays, with its data,
/// for the other dialects and for `os-volume-manage`.
fn unmanage(s: &Service, project: &str, view: &VolumeView) -> Result<Response, CinderError> {
    let status = status_of(&s.catalog_snapshot(), &view.record);
    if status != "available" {
        return Err(CinderError::bad_request(format!(
            "Invalid volume: Volume status must be available to unmanage, but current status is: {status}."
        )));
    }
    if !s
        .snapshots(Some(project), Some(view.record.uuid), false)
        .is_empty()
    {
        return Err(CinderError::bad_request(
            "Invalid volume: a volume with snapshots cannot be unmanaged.",
        ));
    }
    let mut own = own_labels(&view.record);
    own.push(Label {
        key: UNMANAGED_LABEL.to_owned(),
        value: "true".to_owned(),
    });
    store_own(s, view, own)?;
    accepted()
}

/// `os-set_image_metadata`: adds or replaces image metadata keys.
fn set_image_metadata(
    s: &Service,
    view: &VolumeView,
    args: &Value,
) -> Result<Response, CinderError> {
    let given = args
        .get("metadata")
        .and_then(Value::as_object)
        .ok_or_else(|| CinderError::bad_request("metadata must be an object"))?;
    let mut own = own_labels(&view.record);
    for (key, value) in given {
        let value = value.as_str().ok_or_else(|| {
            CinderError::bad_request(format!("image metadata {key} must be a string"))
        })?;
        let full = format!("{IMAGE_PREFIX}{key}");
        own.retain(|l| l.key != full);
        own.push(Label {
            key: full,
            value: value.to_owned(),
        });
    }
    store_own(s, view, own)?;
    let view = s.volume(view.record.uuid)?;
    Ok(Json(json!({"metadata": image_metadata(&view.record)})).into_response())
}
