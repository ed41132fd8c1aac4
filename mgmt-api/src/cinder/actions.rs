//! `POST /v3/{project_id}/volumes/{volume_id}/action`: the body's one key
//! names the action. Connecting a host (os-initialize_connection) grants
//! its NQN the volume and answers the NVMe-oF connection info os-brick's
//! NVMe-oF connector reads (read-only volumes as access mode `ro`); the
//! attach statuses are bookkeeping. The other actions are `volume_ops`'.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::volumes::{locate, status_of};
use super::{blocking, CinderCaller, CinderJson, CinderPath, GIB};
use crate::domain::{rules, Service, VolumeChanges};
use crate::http::AppState;

/// Statuses os-reset_status may set.
const STATUSES: &[&str] = &[
    "available",
    "in-use",
    "attaching",
    "detaching",
    "error",
    "error_deleting",
    "error_extending",
    "error_restoring",
    "maintenance",
    "reserved",
];

fn field<'a>(args: &'a Value, name: &str) -> Option<&'a str> {
    args.get(name)
        .and_then(Value::as_str)
        .filter(|v| !v.is_empty())
}

/// The connector's NVMe qualified name: only NVMe-oF hosts connect here.
/// `args` holds the `connector`.
pub(super) fn connector_nqn(args: &Value) -> Result<String, CinderError> {
    let nqn = args
        .get("connector")
        .and_then(|c| c.get("nqn"))
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            CinderError::bad_request(
                "the connector has no nqn: volumes are exported over NVMe-oF only",
            )
        })?;
    rules::check_host_acl(&[nqn.to_owned()]).map_err(CinderError::bad_request)?;
    Ok(nqn.to_owned())
}

/// Adds (`grant`) or removes `nqn` from the volume's host ACL.
pub(super) fn change_access(
    s: &Service,
    volume: Uuid,
    acl: &[String],
    nqn: &str,
    grant: bool,
) -> Result<(), CinderError> {
    let mut hosts: Vec<String> = acl
        .iter()
        .filter(|a| *a != rules::ALLOW_NONE)
        .cloned()
        .collect();
    let has = hosts.iter().any(|h| h == nqn);
    if grant == has {
        return Ok(());
    }
    if grant {
        hosts.push(nqn.to_owned());
    } else {
        hosts.retain(|h| h != nqn);
    }
    if hosts.is_empty() {
        hosts.push(rules::ALLOW_NONE.to_owned());
    }
    s.update_volume(
        volume,
        VolumeChanges {
            acl: Some(hosts),
            ..VolumeChanges::default()
        },
        None,
    )?;
    Ok(())
}

/// What os-brick's NVMe-oF connector needs to attach `volume` as `nqn`:
/// the subsystem, its portal, and the namespace's UUID and id.
pub(super) fn connection_info(
    s: &Service,
    volume: &crate::domain::model::VolumeRecord,
    nqn: &str,
) -> Value {
    let node = s.control().node_info();
    let (ip, port) = node
        .nvme_endpoint
        .rsplit_once(':')
        .map(|(ip, port)| (ip.to_owned(), port.parse::<u16>().unwrap_or(4420)))
        .unwrap_or((node.nvme_endpoint.clone(), 4420));
    let readonly = volume
        .labels
        .iter()
        .any(|l| l.key == super::volume_ops::READONLY_KEY && l.value.eq_ignore_ascii_case("true"));
    let access_mode = if readonly { "ro" } else { "rw" };
    json!({
        "driver_volume_type": "nvmeof",
        "data": {
            "target_nqn": s.control().subsystem_nqn(),
            "vol_uuid": volume.uuid,
            "volume_nguid": volume.uuid.simple().to_string(),
            "ns_id": volume.nsid,
            "portals": [[ip, port, "tcp"]],
            "host_nqn": nqn,
            "discard": true,
            "access_mode": access_mode,
        },
    })
}

/// The volume action endpoint.
pub(super) async fn action(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<Map<String, Value>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("volume_id", "Volume")?;
    let mut entries = body.into_iter();
    let (Some((name, args)), None) = (entries.next(), entries.next()) else {
        return Err(CinderError::bad_request(
            "the body must name exactly one action",
        ));
    };
    let admin = caller.principal.is_cluster_admin();
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        let status = status_of(&s.catalog_snapshot(), &view.record);
        let current = move |c: &crate::domain::model::Catalog| {
            c.volumes.get(&id).map(|r| status_of(c, r)).unwrap_or_default()
        };
        match name.as_str() {
            "os-extend" => {
                let new_size = args
                    .get("new_size")
                    .and_then(|v| v.as_u64().or_else(|| v.as_str().and_then(|t| t.parse().ok())))
                    .ok_or_else(|| CinderError::bad_request("new_size must be a whole number of GiB"))?;
                let old = view.record.size_bytes.div_ceil(GIB);
                if new_size <= old {
                    return Err(CinderError::bad_request(format!(
                        "Invalid input received: New size for extend must be greater than current size. (current: {old}, extended: {new_size})."
                    )));
                }
                if status != "available" && status != "in-use" {
                    return Err(CinderError::bad_request(format!(
                        "Invalid volume: Volume status must be available or in-use to extend, but current status is: {status}."
                    )));
                }
                let bytes = new_size
                    .checked_mul(GIB)
                    .ok_or_else(|| CinderError::bad_request("new_size is too large"))?;
                s.update_volume(
                    id,
                    VolumeChanges {
                        size_bytes: Some(bytes),
                        ..VolumeChanges::default()
                    },
                    None,
                )?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-reserve" => {
                s.set_attach_status(id, Some(&["available"]), current, Some("attaching"))?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-unreserve" => {
                s.set_attach_status(id, Some(&["attaching"]), current, None)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-begin_detaching" => {
                s.set_attach_status(id, Some(&["in-use"]), current, Some("detaching"))?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-roll_detaching" => {
                s.set_attach_status(id, Some(&["detaching"]), current, None)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-attach" => {
                let instance = field(&args, "instance_uuid")
                    .map(|i| i.parse::<Uuid>().map_err(|_| CinderError::bad_request(format!("instance_uuid {i:?} is not a UUID"))))
                    .transpose()?;
                let host = field(&args, "host_name").map(str::to_owned);
                if instance.is_none() && host.is_none() {
                    return Err(CinderError::bad_request("give instance_uuid or host_name"));
                }
                let mode = field(&args, "mode").unwrap_or("rw");
                s.attach(id, instance, host, field(&args, "mountpoint").map(str::to_owned), mode)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-detach" => {
                let attachment = field(&args, "attachment_id")
                    .map(|a| a.parse::<Uuid>().map_err(|_| CinderError::bad_request(format!("attachment_id {a:?} is not a UUID"))))
                    .transpose()?;
                s.detach(id, attachment)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-initialize_connection" => {
                let nqn = connector_nqn(&args)?;
                change_access(s, id, &view.record.acl, &nqn, true)?;
                Ok(Json(json!({"connection_info": connection_info(s, &view.record, &nqn)})).into_response())
            }
            "os-terminate_connection" => {
                let nqn = connector_nqn(&args)?;
                change_access(s, id, &view.record.acl, &nqn, false)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            "os-reset_status" => {
                if !admin {
                    return Err(CinderError::new(StatusCode::FORBIDDEN, "Policy doesn't allow volume:reset_status to be performed."));
                }
                let wanted = field(&args, "status")
                    .ok_or_else(|| CinderError::bad_request("status is mandatory"))?;
                if !STATUSES.contains(&wanted) {
                    return Err(CinderError::bad_request(format!("Must specify a valid status (not {wanted:?})")));
                }
                s.set_attach_status(id, None, current, Some(wanted))?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
            other => super::volume_ops::dispatch(s, &caller, &project, &view, other, &args)
                .unwrap_or_else(|| {
                    Err(CinderError::bad_request(format!(
                        "There is no such action: {}",
                        crate::http::extract::truncate(other)
                    )))
                }),
        }
    })
    .await
}
