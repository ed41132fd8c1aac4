//! Snapshots (create, list, get by id, volume or alias, delete) and
//! snapshot volumes (writable clones of a snapshot).

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::reply::{success, KsError, KsResult};
use super::volumes::{check_allow_span, ks_labels, locate, Paging};
use super::{
    alias, blocking, optional_id, parse_id, required_id, reserved_percent, same_tenant, tenant_of,
    KsCaller, KsJson,
};
use crate::domain::model::{ResourceState, SnapshotRecord};
use crate::domain::{NewSnapshot, NewVolume, Service};
use crate::http::AppState;

/// How a snapshot's description records its reserved-space percentage.
const RESERVED_PREFIX: &str = "reservedSpacePercentage=";

fn recorded_percent(snapshot: &SnapshotRecord) -> u64 {
    snapshot
        .description
        .strip_prefix(RESERVED_PREFIX)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn snapshot_json(s: &SnapshotRecord) -> Value {
    let percent = recorded_percent(s);
    json!({
        "alias": s.name,
        "volumeID": s.source_volume,
        "snapshotID": s.uuid,
        "replicaID": s.source_volume,
        "reservedSpacePercentage": percent,
        "reservedSpace": s.size_bytes / 100 * percent,
        "capacity": s.size_bytes,
        "timestamp": s.created_at_s * 1000,
        "tenantId": tenant_of(&s.project),
    })
}

/// Reserved space must be free when it is asked for.
fn check_reserve(s: &Service, bytes: u64) -> Result<(), KsError> {
    let pool = s
        .control()
        .pool_stats()
        .map_err(|e| KsError::new("NotAvailable", e.to_string()))?;
    if pool.effective_bytes().saturating_sub(pool.used_bytes) < bytes {
        return Err(KsError::new(
            "TenantCapacityExceeded",
            format!("the pool has less than {bytes} bytes free for the reserved space"),
        ));
    }
    Ok(())
}

/// Create snapshot's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CreateSnapshot {
    alias: Option<String>,
    #[serde(rename = "volumeID")]
    volume_id: Option<String>,
    #[serde(rename = "snapshotID")]
    snapshot_id: Option<String>,
    reserved_space_percentage: Option<u64>,
    tenant_id: Option<String>,
}

/// `POST /{tenantId}/snapshots`: answers the snapshot's `persistentId`.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<CreateSnapshot>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let alias = alias(body.alias)?;
    let volume = required_id("volumeID", body.volume_id.as_deref())?;
    let uuid = optional_id("snapshotID", body.snapshot_id.as_deref())?;
    let percent = reserved_percent(body.reserved_space_percentage)?;
    blocking(&state, move |s| {
        let view = locate(s, &project, volume)?;
        if view.record.replica_count > 1 {
            return Err(KsError::new(
                "Replicated",
                "volume is replicated: snapshots are taken of unreplicated volumes",
            ));
        }
        check_reserve(s, view.record.size_bytes / 100 * percent)?;
        let snap = s.create_snapshot(NewSnapshot {
            name: alias,
            project,
            source_volume: volume,
            description: format!("{RESERVED_PREFIX}{percent}"),
            uuid,
            ..NewSnapshot::default()
        })?;
        Ok(success(
            format!("snapshot {} created", snap.name),
            &[("persistentId", json!(snap.uuid))],
        ))
    })
    .await
}

fn listed(
    s: &Service,
    project: &str,
    keep: impl Fn(&SnapshotRecord) -> bool,
    page: &Paging,
) -> Vec<Value> {
    let snaps: Vec<SnapshotRecord> = s
        .snapshots(Some(project), None, false)
        .into_iter()
        .filter(|snap| keep(snap))
        .collect();
    page.apply(snaps, |snap| snap.uuid)
        .iter()
        .map(snapshot_json)
        .collect()
}

/// `GET /{tenantId}/snapshots`: all, or a page (`limit` with `offset` or `marker`).
pub(super) async fn list(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    let page = Paging::parse(&query)?;
    blocking(&state, move |s| {
        s.require_project(&project)?;
        Ok(Json(listed(s, &project, |_| true, &page)).into_response())
    })
    .await
}

fn locate_snapshot(s: &Service, project: &str, id: Uuid) -> Result<SnapshotRecord, KsError> {
    match s.snapshot(id) {
        Ok(snap) if snap.project == project && snap.state != ResourceState::Deleting => Ok(snap),
        Ok(_) => Err(KsError::new(
            "NotExists",
            format!("snapshot {id} does not exist"),
        )),
        Err(e) => Err(KsError::from_service(e, "NotExists", "VolumeIsInUse")),
    }
}

/// `GET /{tenantId}/snapshots/{id}`.
pub(super) async fn get_one(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    let id = parse_id("id", &id)?;
    blocking(&state, move |s| {
        Ok(Json(vec![snapshot_json(&locate_snapshot(s, &project, id)?)]).into_response())
    })
    .await
}

/// `GET /{tenantId}/snapshots_by_vol/{volID}`.
pub(super) async fn by_volume(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, volume)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    let volume = parse_id("volID", &volume)?;
    blocking(&state, move |s| {
        locate(s, &project, volume)?;
        let all = Paging::parse(&HashMap::new())?;
        Ok(Json(listed(
            s,
            &project,
            |snap| snap.source_volume == volume,
            &all,
        ))
        .into_response())
    })
    .await
}

/// `GET /{tenantId}/snapshots_by_alias/{alias}`.
pub(super) async fn by_alias(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, alias)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, false)?;
    blocking(&state, move |s| {
        let all = Paging::parse(&HashMap::new())?;
        let found = listed(s, &project, |snap| snap.name == alias, &all);
        if found.is_empty() {
            return Err(KsError::new(
                "NotExists",
                format!("no snapshot has alias {alias:?}"),
            ));
        }
        Ok(Json(found).into_response())
    })
    .await
}

/// `DELETE /{tenantId}/snapshots/{id}`: refused (`VolumeIsInUse`) while a
/// snapshot volume of it exists.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    let id = parse_id("id", &id)?;
    blocking(&state, move |s| {
        locate_snapshot(s, &project, id)?;
        let clones = s.volumes(&crate::domain::VolumeFilter {
            source_snapshot: Some(id),
            ..Default::default()
        });
        if !clones.is_empty() {
            return Err(KsError::new(
                "VolumeIsInUse",
                format!("snapshot {id} has a snapshot volume; delete it first"),
            ));
        }
        s.delete_snapshot(id, None)?;
        Ok(success(format!("snapshot {id} deleted"), &[]))
    })
    .await
}

/// Create snapshot volume's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SnapshotVolume {
    alias: Option<String>,
    #[serde(rename = "snapshotID")]
    snapshot_id: Option<String>,
    #[serde(rename = "volumeID")]
    volume_id: Option<String>,
    reserved_space_percentage: Option<u64>,
    writable: Option<bool>,
    #[serde(rename = "maxIOPSPerGB")]
    max_iops_per_gb: Option<u64>,
    #[serde(rename = "maxBWPerGB")]
    max_bw_per_gb: Option<u64>,
    protocol: Option<String>,
    allow_span: Option<bool>,
    storage_class_name: Option<String>,
    tenant_id: Option<String>,
}

/// `POST /{tenantId}/snapshot_volume`: a writable volume over a snapshot;
/// one per snapshot (`AlreadyExists`). Read-only snapshot volumes and
/// per-GB QoS are refused, not ignored.
pub(super) async fn snapshot_volume(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<SnapshotVolume>,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let alias = alias(body.alias)?;
    let snapshot = required_id("snapshotID", body.snapshot_id.as_deref())?;
    check_allow_span(body.allow_span)?;
    let body_class = body.storage_class_name.clone();
    if body.writable != Some(true) {
        return Err(KsError::invalid(
            "read-only snapshot volumes are not provided; ask for writable: true",
        ));
    }
    if body.max_iops_per_gb.is_some() || body.max_bw_per_gb.is_some() {
        return Err(KsError::invalid(
            "maxIOPSPerGB and maxBWPerGB are not supported here; give the volume a QoS policy through the cluster API",
        ));
    }
    if body.protocol.as_deref().is_some_and(|p| p != "NVMeoF") {
        return Err(KsError::invalid("volumes are exposed over NVMeoF only"));
    }
    let percent = reserved_percent(body.reserved_space_percentage)?;
    let uuid = optional_id("volumeID", body.volume_id.as_deref())?.unwrap_or_else(Uuid::new_v4);
    blocking(&state, move |s| {
        let snap = locate_snapshot(s, &project, snapshot)?;
        let existing = s.volumes(&crate::domain::VolumeFilter {
            source_snapshot: Some(snapshot),
            ..Default::default()
        });
        if !existing.is_empty() {
            return Err(KsError::new(
                "AlreadyExists",
                format!("snapshot {snapshot} already has a snapshot volume"),
            ));
        }
        check_reserve(s, snap.size_bytes / 100 * percent)?;
        s.create_volume(NewVolume {
            name: alias.clone(),
            project,
            source_snapshot: Some(snapshot),
            labels: ks_labels(percent, body_class),
            uuid: Some(uuid),
            ..NewVolume::default()
        })?;
        Ok(success(
            format!("snapshot volume {alias} created"),
            &[("persistentId", json!(uuid))],
        ))
    })
    .await
}
