//! Volumes: create (thin), list and get (by id, alias, extended), expand,
//! delete and clone.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::reply::{success, KsError, KsResult};
use super::{
    alias, blocking, optional_id, parse_id, required_id, reserved_percent, same_tenant, tenant_of,
    KsCaller, KsJson, GB, GIB,
};
use crate::domain::model::{Label, ResourceState};
use crate::domain::{NewVolume, Service, VolumeChanges, VolumeFilter, VolumeView};
use crate::http::AppState;

/// The label that keeps a thin volume's reserved-space percentage.
const RESERVED_LABEL: &str = "kumoscale.reservedSpacePercentage";
/// The label that keeps the storage class a volume was made with.
const CLASS_LABEL: &str = "kumoscale.storageClassName";

/// The labels that keep what a KumoScale create asked for.
pub(super) fn ks_labels(reserved_percent: u64, class_name: Option<String>) -> Vec<Label> {
    let mut labels = vec![Label {
        key: RESERVED_LABEL.to_owned(),
        value: reserved_percent.to_string(),
    }];
    if let Some(name) = class_name.filter(|n| !n.is_empty()) {
        labels.push(Label {
            key: CLASS_LABEL.to_owned(),
            value: name,
        });
    }
    labels
}

/// Refuses `allowSpan: false`: a volume's data is spread over every device
/// of the pool.
pub(super) fn check_allow_span(allow_span: Option<bool>) -> Result<(), KsError> {
    if allow_span == Some(false) {
        return Err(KsError::new(
            "NoMatchingBackend",
            "a volume's data spreads over every device of the pool; allowSpan false cannot be met",
        ));
    }
    Ok(())
}

/// Create volume's `storageClass`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
// `sameRackAllowed` is not read: nodes have no racks here and the cluster
// always puts a volume's replicas on different nodes, which satisfies it
// either way.
struct StorageClass {
    num_replicas: Option<u32>,
    racks: Option<Vec<String>>,
    zones: Option<Vec<String>>,
    regions: Option<Vec<String>>,
    #[serde(rename = "maxIOPSPerGB")]
    max_iops_per_gb: Option<u64>,
    #[serde(rename = "desiredIOPSPerGB")]
    desired_iops_per_gb: Option<u64>,
    #[serde(rename = "maxBWPerGB")]
    max_bw_per_gb: Option<u64>,
    #[serde(rename = "desiredBWPerGB")]
    desired_bw_per_gb: Option<u64>,
    block_size: Option<u32>,
    name: Option<String>,
    #[serde(rename = "shareSSDBetweenVolumes")]
    share_ssd_between_volumes: Option<bool>,
    host_id: Option<String>,
    allow_span: Option<bool>,
}

/// Create volume's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateVolume {
    /// GiB.
    capacity: Option<u64>,
    alias: Option<String>,
    uuid: Option<String>,
    provisioning_type: Option<String>,
    reserved_space_percentage: Option<u64>,
    protocol: Option<String>,
    storage_class: Option<StorageClass>,
    tenant_id: Option<String>,
}

/// Refuses what this node cannot honour rather than storing it unused.
fn check_storage_class(class: &StorageClass) -> Result<(), KsError> {
    if class.max_iops_per_gb.is_some()
        || class.desired_iops_per_gb.is_some()
        || class.max_bw_per_gb.is_some()
        || class.desired_bw_per_gb.is_some()
    {
        return Err(KsError::invalid(
            "storageClass IOPS and bandwidth per GB are not supported here; give the volume a QoS policy through the cluster API",
        ));
    }
    let placed = |v: &Option<Vec<String>>| v.as_ref().is_some_and(|l| !l.is_empty());
    if placed(&class.racks) || placed(&class.zones) || placed(&class.regions) {
        return Err(KsError::new(
            "NoMatchingBackend",
            "no backend has a rack, zone or region: placement constraints cannot be met",
        ));
    }
    if class.host_id.as_deref().is_some_and(|h| !h.is_empty()) {
        return Err(KsError::new(
            "NoBackendWithHostIdExists",
            "no backend runs inside an initiator host",
        ));
    }
    if class.share_ssd_between_volumes == Some(false) {
        return Err(KsError::new(
            "NoMatchingBackend",
            "every volume shares the pool's devices; shareSSDBetweenVolumes false cannot be met",
        ));
    }
    check_allow_span(class.allow_span)
}

/// Lists volumes; `limit` with `offset` or `marker` pages, `hostID` keeps
/// those published to a host (`backendId`: those with a replica there).
pub(super) async fn list(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    let page = Paging::parse(&query)?;
    let host = query
        .get("hostID")
        .or_else(|| query.get("hostId"))
        .filter(|h| !h.is_empty())
        .map(|h| parse_id("hostID", h))
        .transpose()?;
    let backend = query.get("backendId").filter(|b| !b.is_empty()).cloned();
    blocking(&state, move |s| {
        s.require_project(&project)?;
        let host_nqn = match host {
            Some(h) => Some(
                s.host(h)
                    .map_err(|e| KsError::from_service(e, "HostNotFound", "VolumeIsInUse"))?
                    .nqn,
            ),
            None => None,
        };
        let node = s.control().node_info().uuid;
        let views: Vec<VolumeView> = s
            .volumes(&VolumeFilter {
                project: Some(project.clone()),
                limit: Some(crate::domain::service::LIST_LIMIT_MAX),
                ..VolumeFilter::default()
            })
            .into_iter()
            .filter(|v| host_nqn.as_ref().is_none_or(|n| v.record.acl.contains(n)))
            .filter(|v| {
                backend.as_ref().is_none_or(|b| {
                    let holders = v
                        .replication
                        .as_ref()
                        .map_or(vec![node], |r| r.node_list.clone());
                    holders.iter().any(|n| n.to_string() == *b)
                })
            })
            .collect();
        let page = page.apply(views, |v| v.record.uuid);
        let body: Vec<Value> = page.iter().map(|v| volume_json(s, v, false)).collect();
        Ok(Json(body).into_response())
    })
    .await
}

/// `limit` + `offset`, or `limit` + `marker` (items after that UUID).
pub(super) struct Paging {
    limit: Option<usize>,
    offset: usize,
    marker: Option<Uuid>,
}

impl Paging {
    pub(super) fn parse(query: &HashMap<String, String>) -> Result<Paging, KsError> {
        let number = |name: &str| -> Result<Option<usize>, KsError> {
            query
                .get(name)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.parse::<usize>()
                        .map_err(|_| KsError::invalid(format!("{name} {v:?} is not a count")))
                })
                .transpose()
        };
        Ok(Paging {
            limit: number("limit")?,
            offset: number("offset")?.unwrap_or(0),
            marker: query
                .get("marker")
                .filter(|m| !m.is_empty())
                .map(|m| parse_id("marker", m))
                .transpose()?,
        })
    }

    pub(super) fn apply<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> Uuid) -> Vec<T> {
        items.sort_by_key(&id);
        let start = match self.marker {
            Some(marker) => items
                .iter()
                .position(|i| id(i) > marker)
                .unwrap_or(items.len()),
            None => self.offset.min(items.len()),
        };
        let end = self
            .limit
            .map_or(items.len(), |l| (start + l).min(items.len()));
        items.drain(start..end).collect()
    }
}

/// A volume as the document lists it (`extended`: with sub-volumes and
/// host sessions).
pub(super) fn volume_json(s: &Service, view: &VolumeView, extended: bool) -> Value {
    let r = &view.record;
    let label = |key: &str| {
        r.labels
            .iter()
            .find(|l| l.key == key)
            .map(|l| l.value.as_str())
    };
    let reserved_percent = label(RESERVED_LABEL)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let limits = s.volume_rate_limits(r.uuid);
    let published_to: Vec<Value> = s
        .hosts()
        .iter()
        .filter(|h| r.acl.contains(&h.nqn))
        .map(|h| json!({"hostID": h.uuid}))
        .collect();
    let nodes: Vec<Uuid> = match &view.replication {
        Some(rep) => rep.node_list.clone(),
        None => vec![s.control().node_info().uuid],
    };
    let state_time = r.created_at_s * 1000;
    // A snapshot volume shows its snapshot; a clone of a live volume was
    // made through a snapshot it outlives, and is THIN.
    let snapshot_volume_of = r.source_snapshot.filter(|_| r.source_volume.is_none());
    let location: Vec<Value> = nodes
        .iter()
        .map(|node| {
            let mut replica = json!({
                "uuid": r.uuid,
                "backend": {"persistentID": node},
                "replicaState": match r.state {
                    ResourceState::Available => "Available",
                    ResourceState::Creating | ResourceState::Updating => "Synchronizing",
                    ResourceState::Deleting => "Terminating",
                    ResourceState::Failed => "Missing",
                },
                "currentStateTime": state_time,
                "inUse": !published_to.is_empty(),
            });
            if extended {
                replica["subVolumes"] = json!([{
                    "capacity": r.size_bytes,
                    "ssdID": node,
                    "ssdName": "keel-pool",
                }]);
                replica["sessions"] = Value::Array(published_to.clone());
            }
            replica
        })
        .collect();
    json!({
        "uuid": r.uuid,
        "alias": r.name,
        "capacity": r.size_bytes,
        "provisioningType": if snapshot_volume_of.is_some() { "OTHER" } else { "THIN" },
        "reservedSpace": r.size_bytes / 100 * reserved_percent,
        "numReplicas": r.replica_count,
        "maxIOPS": limits.total_iops.unwrap_or(0),
        "desiredIOPS": 0,
        "maxBW": limits.total_bytes_per_second.unwrap_or(0),
        "desiredBW": 0,
        "blockSize": if r.sector_size_bytes == 512 { "512B" } else { "4KB" },
        "maxReplicaDownTime": 0,
        "snapshotID": snapshot_volume_of.map(|u| u.to_string()).unwrap_or_default(),
        "writable": true,
        "inUse": !published_to.is_empty(),
        "location": location,
        "tenantId": tenant_of(&r.project),
        "protocol": "NVMeoF",
        "allowSpan": false,
        "storageClassName": label(CLASS_LABEL).unwrap_or_default(),
        "shareSSDBetweenVolumes": true,
    })
}

/// `POST /{tenantId}/volumes`: a thin volume of `capacity` GiB named by
/// its alias; answers no id (the caller gave `uuid` or looks it up by alias).
pub(super) async fn create(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<CreateVolume>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let alias = alias(body.alias)?;
    let capacity = body
        .capacity
        .filter(|c| *c > 0)
        .ok_or_else(|| KsError::invalid("capacity (GiB) is mandatory and positive"))?;
    let size = capacity
        .checked_mul(GIB)
        .ok_or_else(|| KsError::invalid("capacity is too large"))?;
    match body.provisioning_type.as_deref().map(str::to_ascii_uppercase).as_deref() {
        Some("THIN") => {}
        None | Some("THICK") => {
            return Err(KsError::new(
                "NoMatchingBackend",
                "no backend provides THICK volumes: Keel volumes are thin; ask for provisioningType THIN",
            ))
        }
        Some(other) => {
            return Err(KsError::invalid(format!(
                "provisioningType {other:?} is neither THICK nor THIN"
            )))
        }
    }
    match body.protocol.as_deref() {
        None | Some("NVMeoF") => {}
        Some(other) => {
            return Err(KsError::invalid(format!(
                "protocol {other:?} is not served; volumes are exposed over NVMeoF"
            )))
        }
    }
    let reserved = reserved_percent(body.reserved_space_percentage)?;
    let class = body.storage_class.unwrap_or_default();
    check_storage_class(&class)?;
    let sector = match class.block_size {
        None | Some(4096) => 4096,
        Some(512) => 512,
        Some(other) => {
            return Err(KsError::invalid(format!(
                "blockSize {other} is neither 512 nor 4096"
            )))
        }
    };
    let uuid = optional_id("uuid", body.uuid.as_deref())?;
    let replicas = class.num_replicas.unwrap_or(1);
    blocking(&state, move |s| {
        if replicas == 0 || replicas > s.config().max_replicas {
            return Err(KsError::new(
                if replicas == 0 {
                    "InvalidReplicas"
                } else {
                    "NotEnoughMatchingBackends"
                },
                format!(
                    "numReplicas {replicas}: this cluster places 1 to {} replicas",
                    s.config().max_replicas
                ),
            ));
        }
        // A thin volume's reserved space must be free now.
        let reserved_bytes = size / 100 * reserved;
        let pool = s
            .control()
            .pool_stats()
            .map_err(|e| KsError::new("NotAvailable", e.to_string()))?;
        if pool.effective_bytes().saturating_sub(pool.used_bytes) < reserved_bytes {
            return Err(KsError::new(
                "NoMatchingBackend",
                format!("no backend has {reserved_bytes} bytes free for the reserved space"),
            ));
        }
        s.create_volume(NewVolume {
            name: alias.clone(),
            project,
            size_bytes: Some(size),
            sector_size_bytes: Some(sector),
            replica_count: Some(replicas),
            labels: ks_labels(reserved, class.name.clone()),
            uuid,
            ..NewVolume::default()
        })?;
        Ok(success(format!("volume {alias} created"), &[]))
    })
    .await
}

/// The volume `id` of `project`, or `NotExists`.
pub(super) fn locate(s: &Service, project: &str, id: Uuid) -> Result<VolumeView, KsError> {
    match s.volume(id) {
        Ok(v) if v.record.project == project && v.record.state != ResourceState::Deleting => Ok(v),
        Ok(_) => Err(KsError::new(
            "NotExists",
            format!("volume {id} does not exist"),
        )),
        Err(e) => Err(KsError::from_service(e, "NotExists", "VolumeIsInUse")),
    }
}

/// `GET /{tenantId}/volumes/{id}`: the volume, in an array as the example.
pub(super) async fn get_one(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    let id = parse_id("id", &id)?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        Ok(Json(vec![volume_json(s, &view, false)]).into_response())
    })
    .await
}

/// `GET /{tenantId}/volumes_by_alias/{alias}`.
pub(super) async fn by_alias(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, alias)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    blocking(&state, move |s| {
        let view = s.volume_by_name(&project, &alias)?;
        Ok(Json(vec![volume_json(s, &view, false)]).into_response())
    })
    .await
}

/// `GET /{tenantId}/volume_extended/{uuid}`: with sub-volumes and sessions.
pub(super) async fn extended(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    let id = parse_id("uuid", &id)?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        Ok(Json(volume_json(s, &view, true)).into_response())
    })
    .await
}

/// Expand's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Expand {
    /// GB.
    new_capacity: Option<u64>,
    tenant_id: Option<String>,
}

/// `PATCH /{tenantId}/volumes/{id}`: grows to `newCapacity` GB (rounded up
/// to the volume's block size); `InvalidSize` unless larger than now.
pub(super) async fn expand(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
    KsJson(body): KsJson<Expand>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let id = parse_id("id", &id)?;
    let gb = body
        .new_capacity
        .ok_or_else(|| KsError::invalid("newCapacity (GB) is mandatory"))?;
    let bytes = gb
        .checked_mul(GB)
        .ok_or_else(|| KsError::new("InvalidSize", "newCapacity is too large"))?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        let sector = u64::from(view.record.sector_size_bytes);
        let size = bytes.div_ceil(sector) * sector;
        if size <= view.record.size_bytes {
            return Err(KsError::new(
                "InvalidSize",
                format!(
                    "newCapacity {gb} GB is not larger than the volume's {} bytes",
                    view.record.size_bytes
                ),
            ));
        }
        s.update_volume(
            id,
            VolumeChanges {
                size_bytes: Some(size),
                ..VolumeChanges::default()
            },
            None,
        )?;
        Ok(success(
            format!("volume {id} expanded to {size} bytes"),
            &[],
        ))
    })
    .await
}

/// `DELETE /{tenantId}/volumes/{id}`: refused (`VolumeIsInUse`) while
/// snapshots of it exist.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    let id = parse_id("id", &id)?;
    blocking(&state, move |s| {
        locate(s, &project, id)?;
        if !s.snapshots(Some(&project), Some(id), false).is_empty() {
            return Err(KsError::new(
                "VolumeIsInUse",
                format!("volume {id} has snapshots; delete them first"),
            ));
        }
        s.delete_volume(id, None)?;
        Ok(success(format!("volume {id} deleted"), &[]))
    })
    .await
}

/// Clone volume's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CloneVolume {
    source_volume_id: Option<String>,
    alias: Option<String>,
    volume_id: Option<String>,
    reserved_space_percentage: Option<u64>,
    /// GB, at least the source's size.
    capacity: Option<u64>,
    tenant_id: Option<String>,
}

/// `POST /{tenantId}/clone_volume`: a writable point-in-time clone of a
/// live volume (through a snapshot the clone outlives).
pub(super) async fn clone_volume(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<CloneVolume>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let source = required_id("sourceVolumeId", body.source_volume_id.as_deref())?;
    let alias = alias(body.alias)?;
    let uuid = optional_id("volumeId", body.volume_id.as_deref())?.unwrap_or_else(Uuid::new_v4);
    let reserved = reserved_percent(body.reserved_space_percentage)?;
    let capacity = body
        .capacity
        .map(|gb| {
            gb.checked_mul(GB)
                .ok_or_else(|| KsError::invalid("capacity is too large"))
        })
        .transpose()?;
    blocking(&state, move |s| {
        let view = locate(s, &project, source)?;
        let sector = u64::from(view.record.sector_size_bytes);
        let size = match capacity {
            Some(bytes) => {
                let size = bytes.div_ceil(sector) * sector;
                if size < view.record.size_bytes {
                    return Err(KsError::invalid(format!(
                        "capacity {bytes} bytes is smaller than the source's {} bytes",
                        view.record.size_bytes
                    )));
                }
                size
            }
            None => view.record.size_bytes,
        };
        s.clone_volume(
            source,
            NewVolume {
                name: alias.clone(),
                project: project.clone(),
                size_bytes: Some(size),
                labels: ks_labels(reserved, None),
                uuid: Some(uuid),
                ..NewVolume::default()
            },
        )?;
        Ok(success(
            format!("volume {alias} cloned from {source}"),
            &[("persistentId", json!(uuid))],
        ))
    })
    .await
}
