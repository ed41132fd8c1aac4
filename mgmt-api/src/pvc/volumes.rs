//! RBD volumes, addressed `pool/volume`: Keel volumes of the pool's
//! project, named as in every other dialect.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::reply::{done, PvcError, PvcResult};
use super::session::PvcRequest;
use super::values::{human_size, parse_size, NameFilter};
use super::{blocking, PvcState, DELETE_WAIT};
use crate::domain::model::{Catalog, ResourceState, VolumeRecord};
use crate::domain::{NewVolume, Service, VolumeChanges};
use crate::http::convert::time_s;

/// A volume as PVC lists it: name, pool and `rbd info`-like stats with
/// Keel's usage.
fn volume_json(s: &Service, catalog: &Catalog, v: &VolumeRecord) -> Value {
    let usage = s.volume(v.uuid).map(|view| view.usage).unwrap_or_default();
    let snapshots = catalog
        .snapshots
        .values()
        .filter(|x| x.source_volume == v.uuid && x.state != ResourceState::Deleting)
        .count();
    json!({
        "name": v.name,
        "pool": v.project,
        "stats": {
            "name": v.name,
            "id": v.uuid,
            "size": human_size(v.size_bytes),
            "size_bytes": v.size_bytes,
            "block_size": v.sector_size_bytes,
            "snapshot_count": snapshots,
            "format": 2,
            "features": [],
            "flags": [],
            "create_timestamp": time_s(v.created_at_s),
            "state": v.state.as_str(),
            "nsid": v.nsid,
            "replicas": v.replica_count,
            "compression": v.compression,
            "used_bytes": usage.logical_used_bytes,
            "physical_used_bytes": usage.physical_used_bytes,
            "damaged_blocks": usage.damaged_blocks,
        },
    })
}

/// The listing: volumes of `pool` (every readable pool when `None`) whose
/// names pass `filter`, sorted by name.
async fn answer(
    state: &PvcState,
    req: PvcRequest,
    pool: Option<String>,
    filter: NameFilter,
) -> PvcResult {
    blocking(state, move |s| {
        let catalog = s.catalog_snapshot();
        if let Some(pool) = &pool {
            if !catalog.projects.contains_key(pool) {
                return Err(PvcError::bad_request(format!(
                    "ERROR: no pool named '{pool}'."
                )));
            }
        }
        let mut volumes: Vec<&VolumeRecord> = catalog
            .volumes
            .values()
            .filter(|v| v.state != ResourceState::Deleting)
            .filter(|v| pool.as_ref().is_none_or(|p| &v.project == p))
            .filter(|v| req.caller.can_read(&v.project) && filter.keeps(&v.name))
            .collect();
        if volumes.is_empty() {
            return Err(PvcError::not_found("Volume"));
        }
        volumes.sort_by(|a, b| (&a.name, &a.project).cmp(&(&b.name, &b.project)));
        let list: Vec<Value> = volumes
            .iter()
            .map(|v| volume_json(s, &catalog, v))
            .collect();
        Ok(Json(list).into_response())
    })
    .await
}

/// `GET /api/v1/storage/ceph/volume` (`pool`, `limit`).
pub(super) async fn list(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let filter = NameFilter::fuzzy(req.values.text("limit"))?;
    let pool = req.values.text("pool").map(str::to_owned);
    answer(&state, req, pool, filter).await
}

/// `GET /api/v1/storage/ceph/volume/{pool}/{volume}`.
pub(super) async fn get_one(
    State(state): State<PvcState>,
    Path((pool, volume)): Path<(String, String)>,
    req: PvcRequest,
) -> PvcResult {
    req.authorize(&pool, false)?;
    answer(&state, req, Some(pool), NameFilter::Exact(volume)).await
}

/// A size value, or a failure naming it.
fn size_of(text: &str) -> Result<u64, PvcError> {
    parse_size(text).map_err(|e| PvcError::failure(format!("ERROR: {e}")))
}

/// `POST /api/v1/storage/ceph/volume`: a thin volume; answers once it is
/// created and exposed.
pub(super) async fn create(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let name = req
        .values
        .required("volume", "volume is required.")?
        .to_owned();
    let pool = req.values.required("pool", "pool is required.")?.to_owned();
    let size_text = req
        .values
        .required(
            "size",
            "size is required (bytes, or with a K, M, G, T or P suffix).",
        )?
        .to_owned();
    let size = size_of(&size_text)?;
    req.authorize(&pool, true)?;
    blocking(&state, move |s| {
        if !s.project_exists(&pool) {
            return Err(PvcError::failure(format!("ERROR: no pool named '{pool}'.")));
        }
        s.create_volume(NewVolume {
            name: name.clone(),
            project: pool.clone(),
            size_bytes: Some(size),
            ..NewVolume::default()
        })?;
        Ok(done(format!(
            "Created volume '{name}' of size {} in pool '{pool}'.",
            human_size(size)
        )))
    })
    .await
}

/// The live volume `pool/name`, or a failure.
fn locate(s: &Service, pool: &str, name: &str) -> Result<VolumeRecord, PvcError> {
    s.catalog_snapshot()
        .volume_named(pool, name)
        .cloned()
        .ok_or_else(|| PvcError::failure(format!("ERROR: no volume '{name}' in pool '{pool}'.")))
}

/// `PUT /api/v1/storage/ceph/volume/{pool}/{volume}`: grows the volume to
/// `size` and/or renames it to `name`.
pub(super) async fn update(
    State(state): State<PvcState>,
    Path((pool, volume)): Path<(String, String)>,
    req: PvcRequest,
) -> PvcResult {
    req.authorize(&pool, true)?;
    let size = req.values.text("size").map(size_of).transpose()?;
    let name = req.values.text("name").map(str::to_owned);
    if size.is_none() && name.is_none() {
        return Err(PvcError::failure(
            "ERROR: give a new name, a new size or both; nothing was changed.",
        ));
    }
    blocking(&state, move |s| {
        let record = locate(s, &pool, &volume)?;
        let mut said = Vec::new();
        if let Some(size) = size {
            s.update_volume(
                record.uuid,
                VolumeChanges {
                    size_bytes: Some(size),
                    ..VolumeChanges::default()
                },
                None,
            )?;
            said.push(format!("resized to {}", human_size(size)));
        }
        if let Some(name) = name {
            s.rename_volume(record.uuid, &name)?;
            said.push(format!("renamed to '{name}'"));
        }
        Ok(done(format!(
            "Volume '{volume}' in pool '{pool}' {}.",
            said.join(" and ")
        )))
    })
    .await
}

/// `DELETE /api/v1/storage/ceph/volume/{pool}/{volume}`: answers once the
/// engine has let the volume go.
pub(super) async fn delete(
    State(state): State<PvcState>,
    Path((pool, volume)): Path<(String, String)>,
    req: PvcRequest,
) -> PvcResult {
    req.authorize(&pool, true)?;
    blocking(&state, move |s| {
        let record = locate(s, &pool, &volume)?;
        s.delete_volume(record.uuid, None)?;
        if !s.await_removal(&[record.uuid], DELETE_WAIT) {
            return Err(PvcError::failure(format!(
                "ERROR: volume '{volume}' is still being removed; it will be gone shortly."
            )));
        }
        Ok(done(format!(
            "Removed volume '{volume}' from pool '{pool}'."
        )))
    })
    .await
}
