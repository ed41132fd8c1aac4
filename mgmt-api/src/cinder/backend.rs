//! What an operator's tooling reads about the one Cinder backend Keel is:
//! its pool and capabilities, the hosts and the cluster of volume
//! services (one per node), the filters lists take, the quota class (no
//! limits but the per-project gigabytes), and cleanup (Keel's worker
//! finishes interrupted work itself, so there is nothing to clean).

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::CinderError;
use super::{blocking, CinderCaller, CinderPath, GIB};
use crate::control::{NodeState, NodeStatus};
use crate::domain::volume_types::BACKEND_NAME;
use crate::domain::Service;
use crate::http::AppState;

/// The backend's pool, as volumes' `os-vol-host-attr:host` names it.
const POOL: &str = "keel@keel#pool";

fn nodes(s: &Service) -> Result<Vec<NodeStatus>, CinderError> {
    s.control()
        .nodes()
        .map_err(|e| CinderError::from(crate::domain::ServiceError::from(e)))
}

fn admin_only(caller: &CinderCaller, path: &CinderPath, rule: &str) -> Result<(), CinderError> {
    caller.project(path.project(), false)?;
    if caller.principal.is_cluster_admin() {
        Ok(())
    } else {
        Err(CinderError::new(
            StatusCode::FORBIDDEN,
            format!("Policy doesn't allow {rule} to be performed."),
        ))
    }
}

/// `GET /v3/{project_id}/extensions`: none beyond the core API.
pub(super) async fn extensions(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    Ok(Json(json!({"extensions": []})).into_response())
}

/// `GET /v3/{project_id}/resource_filters` (3.33): the filters the lists
/// here take.
pub(super) async fn resource_filters(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    Ok(Json(json!({"resource_filters": [
        {"resource": "volume", "filters": ["name", "status", "limit", "marker"]},
        {"resource": "snapshot", "filters": ["limit", "marker"]},
        {"resource": "transfer", "filters": ["all_tenants", "limit", "marker"]},
    ]}))
    .into_response())
}

/// `GET /v3/{project_id}/scheduler-stats/get_pools` (`detail=True` adds
/// the capabilities).
pub(super) async fn pools(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    admin_only(
        &caller,
        &path,
        "scheduler_extension:scheduler_stats:get_pools",
    )?;
    let detailed = query
        .get("detail")
        .is_some_and(|d| d.eq_ignore_ascii_case("true"));
    blocking(&state, move |s| {
        let pool = s
            .control()
            .pool_stats()
            .map_err(crate::domain::ServiceError::from)?;
        let mut entry = json!({"name": POOL});
        if detailed {
            let capacity = pool.effective_bytes();
            entry["capabilities"] = json!({
                "volume_backend_name": BACKEND_NAME,
                "vendor_name": "Keel",
                "driver_version": env!("CARGO_PKG_VERSION"),
                "storage_protocol": "NVMe-oF",
                "total_capacity_gb": capacity / GIB,
                "free_capacity_gb": capacity.saturating_sub(pool.used_bytes) / GIB,
                "provisioned_capacity_gb": pool.provisioned_bytes / GIB,
                "thin_provisioning_support": true,
                "thick_provisioning_support": false,
                "compression": [true, false],
                "multiattach": false,
                "QoS_support": true,
                "reserved_percentage": 0,
                "timestamp": null,
            });
        }
        Ok(Json(json!({"pools": [entry]})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/capabilities/{hostname}`: the backend's and the
/// extra specs a volume type may set.
pub(super) async fn capabilities(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    admin_only(&caller, &path, "volume_extension:capabilities")?;
    Ok(Json(json!({
        "namespace": "OS::Storage::Capabilities::keel@keel",
        "vendor_name": "Keel",
        "volume_backend_name": BACKEND_NAME,
        "pool_name": null,
        "driver_version": env!("CARGO_PKG_VERSION"),
        "storage_protocol": "NVMe-oF",
        "display_name": "Keel NVMe/TCP block storage",
        "description": "Thin volumes with snapshots, clones, compression and QoS",
        "visibility": "public",
        "replication_targets": [],
        "properties": {
            "compression": {"title": "Compression", "description": "Whether new data is compressed", "type": "boolean"},
            "lightos:num_replicas": {"title": "Replicas", "description": "Copies of each block", "type": "integer"},
            "qos": {"title": "QoS", "description": "Back-end QoS specs are enforced on the target", "type": "boolean"},
        },
    }))
    .into_response())
}

fn host_json(n: &NodeStatus) -> Value {
    json!({
        "service-status": if n.state == NodeState::Active { "available" } else { "unavailable" },
        "service": "cinder-volume",
        "zone": "nova",
        "service-state": "enabled",
        "host_name": format!("{}@keel", n.name),
        "last-update": null,
    })
}

/// `GET /v3/{project_id}/os-hosts`: a volume service per node.
pub(super) async fn hosts(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    admin_only(&caller, &path, "volume_extension:hosts")?;
    blocking(&state, |s| {
        let hosts: Vec<Value> = nodes(s)?.iter().map(host_json).collect();
        Ok(Json(json!({"hosts": hosts})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/os-hosts/{host_name}`: the host's volumes.
pub(super) async fn host(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    admin_only(&caller, &path, "volume_extension:hosts")?;
    let wanted = path.0.get("host_name").cloned().unwrap_or_default();
    blocking(&state, move |s| {
        let node = nodes(s)?
            .into_iter()
            .find(|n| format!("{}@keel", n.name) == wanted || n.name == wanted)
            .ok_or_else(|| CinderError::not_found(format!("Host {wanted} could not be found.")))?;
        let catalog = s.catalog_snapshot();
        let mut by_project: std::collections::BTreeMap<&str, (u64, u64)> = Default::default();
        for v in catalog.volumes.values() {
            let entry = by_project.entry(v.project.as_str()).or_default();
            entry.0 += 1;
            entry.1 += v.size_bytes.div_ceil(GIB);
        }
        let resources: Vec<Value> = by_project
            .iter()
            .map(|(project, (count, gib))| {
                json!({"resource": {"project": project, "volume_count": count.to_string(),
                                    "total_volume_gb": gib.to_string(), "host": format!("{}@keel", node.name),
                                    "snapshot_count": "0", "total_snapshot_gb": "0"}})
            })
            .collect();
        Ok(Json(json!({"host": resources})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/clusters[/detail]` (3.7): the volume services of
/// the nodes form one cluster.
pub(super) async fn clusters(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    admin_only(&caller, &path, "clusters:get_all")?;
    blocking(&state, |s| {
        let nodes = nodes(s)?;
        let down = nodes
            .iter()
            .filter(|n| n.state != NodeState::Active)
            .count();
        Ok(Json(json!({"clusters": [{
            "name": "keel@keel",
            "binary": "cinder-volume",
            "state": if down == nodes.len() { "down" } else { "up" },
            "status": "enabled",
            "num_hosts": nodes.len(),
            "num_down_hosts": down,
            "disabled_reason": null,
        }]}))
        .into_response())
    })
    .await
}

/// `GET /v3/{project_id}/os-quota-class-sets/{quota_class_name}`: the
/// defaults every project starts from (no limits).
pub(super) async fn quota_class(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    let name = path.0.get("quota_class_name").cloned().unwrap_or_default();
    Ok(Json(json!({"quota_class_set": {
        "id": name,
        "volumes": -1, "snapshots": -1, "gigabytes": -1, "backups": -1,
        "backup_gigabytes": -1, "per_volume_gigabytes": -1, "groups": -1,
    }}))
    .into_response())
}

/// `PUT /v3/{project_id}/os-quota-class-sets/{quota_class_name}`: limits
/// are set per project (os-quota-sets), so class defaults are refused.
pub(super) async fn set_quota_class(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    admin_only(&caller, &path, "volume_extension:quota_classes")?;
    Err(CinderError::bad_request(
        "quota class defaults are not kept: set a project's gigabytes with os-quota-sets",
    ))
}

/// `POST /v3/{project_id}/workers/cleanup` (3.24): Keel's worker finishes
/// or fails interrupted work on its own; nothing waits for cleanup.
pub(super) async fn cleanup(
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    admin_only(&caller, &path, "workers:cleanup")?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"cleaning": [], "unavailable": []})),
    )
        .into_response())
}
