//! What a Cinder client reads about the deployment: the one availability
//! zone (`nova`), limits and quota
//! sets (a project's gigabytes quota is its Keel capacity quota; the
//! counts Keel does not limit are -1), the services (a volume service per
//! node) and user messages (none are made).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::error::CinderError;
use super::{blocking, CinderCaller, CinderJson, CinderPath, GIB};
use crate::domain::model::{ProjectQuota, ResourceState};
use crate::domain::Service;
use crate::http::AppState;

/// `GET /v3/{project_id}/os-availability-zone`.
pub(super) async fn zones(caller: CinderCaller, path: CinderPath) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    Ok(Json(
        json!({"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": true}}]}),
    )
    .into_response())
}

/// What `project` uses: volumes, GiB and snapshots.
fn usage(s: &Service, project: &str) -> (u64, u64, u64) {
    let catalog = s.catalog_snapshot();
    let volumes: Vec<_> = catalog
        .volumes
        .values()
        .filter(|v| v.project == project && v.state != ResourceState::Deleting)
        .collect();
    let gib = volumes.iter().map(|v| v.size_bytes.div_ceil(GIB)).sum();
    let snapshots = catalog
        .snapshots
        .values()
        .filter(|s| s.project == project && s.state != ResourceState::Deleting)
        .count() as u64;
    (volumes.len() as u64, gib, snapshots)
}

/// The project's gigabytes quota, -1 without one.
fn gigabytes_quota(s: &Service, project: &str) -> i64 {
    s.projects()
        .iter()
        .find(|p| p.name == project)
        .and_then(|p| p.quota)
        .map_or(-1, |q| {
            i64::try_from(q.capacity_bytes / GIB).unwrap_or(i64::MAX)
        })
}

/// `GET /v3/{project_id}/limits`.
pub(super) async fn limits(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    blocking(&state, move |s| {
        s.require_project(&project)?;
        let (volumes, gib, snapshots) = usage(s, &project);
        Ok(Json(json!({"limits": {"rate": [], "absolute": {
            "maxTotalVolumes": -1,
            "maxTotalSnapshots": -1,
            "maxTotalVolumeGigabytes": gigabytes_quota(s, &project),
            "maxTotalBackups": -1,
            "maxTotalBackupGigabytes": -1,
            "totalVolumesUsed": volumes,
            "totalGigabytesUsed": gib,
            "totalSnapshotsUsed": snapshots,
            "totalBackupsUsed": 0,
            "totalBackupGigabytesUsed": 0,
        }}}))
        .into_response())
    })
    .await
}

const UNLIMITED_KEYS: &[&str] = &[
    "volumes",
    "snapshots",
    "backups",
    "backup_gigabytes",
    "per_volume_gigabytes",
    "groups",
    "volumes___DEFAULT__",
    "snapshots___DEFAULT__",
    "gigabytes___DEFAULT__",
];

fn quota_set(s: &Service, project: &str, with_usage: bool) -> Value {
    let (volumes, gib, snapshots) = usage(s, project);
    let gigabytes = gigabytes_quota(s, project);
    let mut set = Map::new();
    set.insert("id".into(), json!(project));
    let used = |key: &str| match key {
        "volumes" | "volumes___DEFAULT__" => volumes,
        "snapshots" | "snapshots___DEFAULT__" => snapshots,
        "gigabytes___DEFAULT__" => gib,
        _ => 0,
    };
    for key in UNLIMITED_KEYS {
        let value = if with_usage {
            json!({"limit": -1, "in_use": used(key), "reserved": 0, "allocated": 0})
        } else {
            json!(-1)
        };
        set.insert((*key).to_owned(), value);
    }
    let value = if with_usage {
        json!({"limit": gigabytes, "in_use": gib, "reserved": 0, "allocated": 0})
    } else {
        json!(gigabytes)
    };
    set.insert("gigabytes".into(), value);
    json!({"quota_set": set})
}

/// The project a quota-set path names; only administrators touch others'.
fn target_project(
    caller: &CinderCaller,
    path: &CinderPath,
    write: bool,
) -> Result<String, CinderError> {
    let target = path.0.get("target_project").cloned().unwrap_or_default();
    caller.project(Some(&target), write)
}

/// `GET /v3/{project_id}/os-quota-sets/{target_project}` (`?usage=True`).
pub(super) async fn get_quota(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    let project = target_project(&caller, &path, false)?;
    let with_usage = query
        .get("usage")
        .is_some_and(|u| u.eq_ignore_ascii_case("true"));
    blocking(&state, move |s| {
        s.require_project(&project)?;
        Ok(Json(quota_set(s, &project, with_usage)).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/os-quota-sets/{target_project}/defaults`.
pub(super) async fn default_quota(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = target_project(&caller, &path, false)?;
    let mut set = Map::new();
    set.insert("id".into(), json!(project));
    for key in UNLIMITED_KEYS.iter().chain(&["gigabytes"]) {
        set.insert((*key).to_owned(), json!(-1));
    }
    Ok(Json(json!({"quota_set": set})).into_response())
}

/// `PUT /v3/{project_id}/os-quota-sets/{target_project}`: `gigabytes` sets
/// the project's capacity quota (-1 removes it); the other quotas are not
/// kept by Keel and take only -1.
pub(super) async fn set_quota(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<Map<String, Value>>,
) -> Result<Response, CinderError> {
    if !caller.principal.is_cluster_admin() {
        return Err(CinderError::new(
            StatusCode::FORBIDDEN,
            "Policy doesn't allow volume_extension:quotas:update to be performed.",
        ));
    }
    let project = target_project(&caller, &path, true)?;
    let set = body
        .get("quota_set")
        .and_then(Value::as_object)
        .cloned()
        .ok_or_else(|| {
            CinderError::bad_request("Missing required element 'quota_set' in request body.")
        })?;
    let mut gigabytes = None;
    for (key, value) in &set {
        // cinderclient names the project again, and may ask to skip checks.
        if key == "tenant_id" || key == "skip_validation" {
            if key == "tenant_id" && value.as_str() != Some(project.as_str()) {
                return Err(CinderError::bad_request(format!(
                    "tenant_id {value} differs from the project {project} in the path"
                )));
            }
            continue;
        }
        let n = value
            .as_i64()
            .or_else(|| value.as_str().and_then(|t| t.parse().ok()))
            .ok_or_else(|| CinderError::bad_request(format!("Quota {key} must be an integer")))?;
        match key.as_str() {
            "gigabytes" if n >= -1 => gigabytes = Some(n),
            "gigabytes" => {
                return Err(CinderError::bad_request(
                    "Quota gigabytes must be -1 or more",
                ))
            }
            k if UNLIMITED_KEYS.contains(&k) && n == -1 => {}
            k if UNLIMITED_KEYS.contains(&k) => {
                return Err(CinderError::bad_request(format!(
                    "Quota {k} is not enforced by this cluster; only -1 is accepted"
                )))
            }
            other => {
                return Err(CinderError::bad_request(format!(
                    "Bad key(s) in quota set: {other}"
                )))
            }
        }
    }
    blocking(&state, move |s| {
        s.require_project(&project)?;
        if let Some(gb) = gigabytes {
            let current = s
                .projects()
                .into_iter()
                .find(|p| p.name == project)
                .and_then(|p| p.quota);
            let quota = u64::try_from(gb).ok().map(|gb| ProjectQuota {
                capacity_bytes: gb.saturating_mul(GIB),
                iops: current.map_or(u64::MAX, |q| q.iops),
                bandwidth_bytes_per_s: current.map_or(u64::MAX, |q| q.bandwidth_bytes_per_s),
            });
            s.set_project_quota(&project, None, quota)?;
        }
        Ok(Json(quota_set(s, &project, false)).into_response())
    })
    .await
}

/// `DELETE /v3/{project_id}/os-quota-sets/{target_project}`: back to the
/// defaults, no capacity quota (administrators).
pub(super) async fn delete_quota(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = target_project(&caller, &path, true)?;
    if !caller.principal.is_cluster_admin() {
        return Err(CinderError::new(
            StatusCode::FORBIDDEN,
            "Policy doesn't allow volume_extension:quotas:delete to be performed.",
        ));
    }
    blocking(&state, move |s| {
        s.require_project(&project)?;
        s.set_project_quota(&project, None, None)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}

/// `GET /v3/{project_id}/os-services`: a volume service per node.
pub(super) async fn services(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    if !caller.principal.is_cluster_admin() {
        return Err(CinderError::new(
            StatusCode::FORBIDDEN,
            "Policy doesn't allow volume_extension:services:index to be performed.",
        ));
    }
    blocking(&state, |s| {
        let nodes = s
            .control()
            .nodes()
            .map_err(crate::domain::ServiceError::from)?;
        let services: Vec<Value> = nodes
            .iter()
            .map(|n| {
                json!({
                    "binary": "cinder-volume",
                    "host": format!("{}@keel", n.name),
                    "zone": "nova",
                    "status": "enabled",
                    "state": if n.state.as_str() == "Active" { "up" } else { "down" },
                    "updated_at": null,
                    "disabled_reason": null,
                })
            })
            .collect();
        Ok(Json(json!({"services": services})).into_response())
    })
    .await
}

/// `PUT /v3/{project_id}/os-services/{action}`: `enable` answers the
/// service enabled (it always is); disabling it, and reading or setting
/// its log levels, are refused: a node's volume service runs while the
/// node does, and keeld's log level is its configuration's.
pub(super) async fn service_action(
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<serde_json::Map<String, Value>>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    if !caller.principal.is_cluster_admin() {
        return Err(CinderError::new(
            StatusCode::FORBIDDEN,
            "Policy doesn't allow volume_extension:services:update to be performed.",
        ));
    }
    let action = path.0.get("action").cloned().unwrap_or_default();
    let field = |name: &str| {
        body.get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    match action.as_str() {
        "enable" => Ok(Json(json!({
            "host": field("host"),
            "binary": field("binary"),
            "status": "enabled",
            "disabled": false,
            "disabled_reason": null,
        }))
        .into_response()),
        "disable" | "disable-log-reason" => Err(CinderError::bad_request(
            "a Keel volume service runs while its node does and cannot be disabled",
        )),
        "get-log" | "set-log" => Err(CinderError::bad_request(
            "log levels are keeld's configuration (RUST_LOG), not set over the API",
        )),
        other => Err(CinderError::not_found(format!(
            "Unknown action {}",
            crate::http::extract::truncate(other)
        ))),
    }
}

/// `GET /v3/{project_id}/messages` (3.3+): no user messages are made.
pub(super) async fn messages(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    Ok(Json(json!({"messages": []})).into_response())
}

/// `GET|DELETE /v3/{project_id}/messages/{message_id}`: there are none.
pub(super) async fn message(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    let id = path.0.get("message_id").cloned().unwrap_or_default();
    Err(CinderError::not_found(format!(
        "Message {} could not be found.",
        crate::http::extract::truncate(&id)
    )))
}
