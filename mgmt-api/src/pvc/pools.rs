//! RBD pools: Keel projects. A pool's volumes and snapshots are the
//! project's; removing a pool removes them all, once confirmed.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::cluster::require_really_meant;
use super::reply::{done, PvcError, PvcResult};
use super::session::PvcRequest;
use super::values::NameFilter;
use super::{blocking, PvcState, DELETE_WAIT};
use crate::auth::Principal;
use crate::domain::model::{Catalog, ResourceState};
use crate::domain::Service;

/// Most placement groups a pool may name (Ceph's own bound).
const PGS_MAX: u64 = 32_768;

fn pool_json(s: &Service, catalog: &Catalog, index: usize, name: &str, free: u64) -> Value {
    let live = |state: ResourceState| state != ResourceState::Deleting;
    let volumes: Vec<_> = catalog
        .volumes
        .values()
        .filter(|v| v.project == name && live(v.state))
        .collect();
    let snapshots = catalog
        .snapshots
        .values()
        .filter(|x| x.project == name && live(x.state))
        .count();
    let (mut stored, mut used) = (0u64, 0u64);
    for v in &volumes {
        if let Ok(view) = s.volume(v.uuid) {
            stored += view.usage.logical_used_bytes;
            used += view.usage.physical_used_bytes;
        }
    }
    let provisioned: u64 = volumes.iter().map(|v| v.size_bytes).sum();
    let quota = catalog.projects.get(name).and_then(|p| p.quota);
    json!({
        "name": name,
        "volume_count": volumes.len(),
        "snapshot_count": snapshots,
        "tier": "default",
        "stats": {
            "id": index,
            "stored_bytes": stored,
            "used_bytes": used,
            "free_bytes": free,
            "provisioned_bytes": provisioned,
            "quota_max_bytes": quota.map_or(0, |q| q.capacity_bytes),
            "num_objects": volumes.len() + snapshots,
        },
    })
}

fn list_pools(
    s: &Service,
    caller: &Principal,
    filter: &NameFilter,
) -> Result<Vec<Value>, PvcError> {
    let pool = s
        .control()
        .pool_stats()
        .map_err(|e| PvcError::failure(format!("ERROR: {e}")))?;
    let free = pool.effective_bytes().saturating_sub(pool.used_bytes);
    let catalog = s.catalog_snapshot();
    Ok(catalog
        .projects
        .keys()
        .enumerate()
        .filter(|(_, name)| caller.can_read(name) && filter.keeps(name))
        .map(|(index, name)| pool_json(s, &catalog, index, name, free))
        .collect())
}

async fn answer(state: &PvcState, req: PvcRequest, filter: NameFilter) -> PvcResult {
    blocking(state, move |s| {
        let pools = list_pools(s, &req.caller, &filter)?;
        if pools.is_empty() {
            return Err(PvcError::not_found("Pool"));
        }
        Ok(Json(pools).into_response())
    })
    .await
}

/// `GET /api/v1/storage/ceph/pool`.
pub(super) async fn list(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let filter = NameFilter::fuzzy(req.values.text("limit"))?;
    answer(&state, req, filter).await
}

/// `GET /api/v1/storage/ceph/pool/{pool}`.
pub(super) async fn get_one(
    State(state): State<PvcState>,
    Path(pool): Path<String>,
    req: PvcRequest,
) -> PvcResult {
    answer(&state, req, NameFilter::Exact(pool)).await
}

/// `POST /api/v1/storage/ceph/pool`: a new project. `pgs` is checked as
/// Ceph would and not kept: Keel's pool has no placement groups.
pub(super) async fn create(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    req.require_admin()?;
    let pool = req.values.required("pool", "pool is required.")?.to_owned();
    let pgs = req.values.required("pgs", "pgs is required.")?;
    match pgs.trim().parse::<u64>() {
        Ok(n) if (1..=PGS_MAX).contains(&n) => {}
        _ => {
            return Err(PvcError::failure(format!(
                "ERROR: pgs must be a whole number from 1 to {PGS_MAX}, not '{pgs}'."
            )))
        }
    }
    blocking(&state, move |s| {
        s.create_project(&pool, "", None)?;
        Ok(done(format!(
            "Created pool '{pool}' (placement groups do not apply to Keel and were not kept)."
        )))
    })
    .await
}

/// `DELETE /api/v1/storage/ceph/pool/{pool}`: removes every snapshot and
/// volume of the pool, waits until the engine has let them go, then the
/// pool.
pub(super) async fn delete(
    State(state): State<PvcState>,
    Path(pool): Path<String>,
    req: PvcRequest,
) -> PvcResult {
    req.require_admin()?;
    require_really_meant(&req)?;
    blocking(&state, move |s| {
        if !s.project_exists(&pool) {
            return Err(PvcError::failure(format!("ERROR: no pool named '{pool}'.")));
        }
        let catalog = s.catalog_snapshot();
        let mut gone = Vec::new();
        for snap in catalog.snapshots.values().filter(|x| x.project == pool) {
            if snap.state != ResourceState::Deleting {
                s.delete_snapshot(snap.uuid, None)?;
            }
            gone.push(snap.uuid);
        }
        for volume in catalog.volumes.values().filter(|v| v.project == pool) {
            if volume.state != ResourceState::Deleting {
                s.delete_volume(volume.uuid, None)?;
            }
            gone.push(volume.uuid);
        }
        if !s.await_removal(&gone, DELETE_WAIT) {
            return Err(PvcError::failure(format!(
                "ERROR: the volumes of pool '{pool}' are still being removed; try again later."
            )));
        }
        s.delete_project(&pool)?;
        Ok(done(format!(
            "Removed pool '{pool}' with its {} volumes and snapshots.",
            gone.len()
        )))
    })
    .await
}
