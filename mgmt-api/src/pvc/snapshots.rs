//! Volume snapshots, addressed `pool/volume/snapshot`. Keel names a
//! snapshot uniquely within its project, so a pool cannot hold two
//! snapshots of one name even of different volumes.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::reply::{done, PvcError, PvcResult};
use super::session::PvcRequest;
use super::values::{human_size, NameFilter};
use super::{blocking, PvcState, DELETE_WAIT};
use crate::domain::model::{Catalog, ResourceState, SnapshotRecord};
use crate::domain::{NewSnapshot, Service};
use crate::http::convert::time_s;

/// The name of a snapshot's volume now (its name when the snapshot was
/// taken once the volume is gone).
fn volume_name<'a>(catalog: &'a Catalog, snap: &'a SnapshotRecord) -> &'a str {
    catalog
        .volumes
        .get(&snap.source_volume)
        .map_or(snap.source_volume_name.as_str(), |v| v.name.as_str())
}

fn snapshot_json(catalog: &Catalog, snap: &SnapshotRecord) -> Value {
    json!({
        "pool": snap.project,
        "volume": volume_name(catalog, snap),
        "snapshot": snap.name,
        "stats": {
            "id": snap.uuid,
            "size": human_size(snap.size_bytes),
            "size_bytes": snap.size_bytes,
            "create_timestamp": time_s(snap.created_at_s),
            "state": snap.state.as_str(),
        },
    })
}

/// Which snapshots a listing keeps; the filters combine freely.
struct Selection {
    pool: Option<String>,
    volume: Option<String>,
    name: NameFilter,
}

async fn answer(state: &PvcState, req: PvcRequest, pick: Selection) -> PvcResult {
    blocking(state, move |s| {
        let catalog = s.catalog_snapshot();
        if let Some(pool) = &pick.pool {
            if !catalog.projects.contains_key(pool) {
                return Err(PvcError::bad_request(format!(
                    "ERROR: no pool named '{pool}'."
                )));
            }
        }
        let mut snaps: Vec<&SnapshotRecord> = catalog
            .snapshots
            .values()
            .filter(|x| x.state != ResourceState::Deleting && !x.is_clone_point())
            .filter(|x| pick.pool.as_ref().is_none_or(|p| &x.project == p))
            .filter(|x| {
                pick.volume
                    .as_deref()
                    .is_none_or(|v| volume_name(&catalog, x) == v)
            })
            .filter(|x| req.caller.can_read(&x.project) && pick.name.keeps(&x.name))
            .collect();
        if snaps.is_empty() {
            return Err(PvcError::not_found("Snapshot"));
        }
        snaps.sort_by(|a, b| (&a.name, &a.project).cmp(&(&b.name, &b.project)));
        let list: Vec<Value> = snaps.iter().map(|x| snapshot_json(&catalog, x)).collect();
        Ok(Json(list).into_response())
    })
    .await
}

/// `GET /api/v1/storage/ceph/volume/snapshot` (`pool`, `volume`, `limit`).
pub(super) async fn list(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let pick = Selection {
        pool: req.values.text("pool").map(str::to_owned),
        volume: req.values.text("volume").map(str::to_owned),
        name: NameFilter::fuzzy(req.values.text("limit"))?,
    };
    answer(&state, req, pick).await
}

/// `GET /api/v1/storage/ceph/volume/snapshot/{pool}/{volume}/{snapshot}`.
pub(super) async fn get_one(
    State(state): State<PvcState>,
    Path((pool, volume, snapshot)): Path<(String, String, String)>,
    req: PvcRequest,
) -> PvcResult {
    req.authorize(&pool, false)?;
    let pick = Selection {
        pool: Some(pool),
        volume: Some(volume),
        name: NameFilter::Exact(snapshot),
    };
    answer(&state, req, pick).await
}

/// `POST /api/v1/storage/ceph/volume/snapshot`.
pub(super) async fn create(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let name = req
        .values
        .required("snapshot", "snapshot is required.")?
        .to_owned();
    let volume = req
        .values
        .required("volume", "volume is required.")?
        .to_owned();
    let pool = req.values.required("pool", "pool is required.")?.to_owned();
    req.authorize(&pool, true)?;
    blocking(&state, move |s| {
        let source = s
            .catalog_snapshot()
            .volume_named(&pool, &volume)
            .map(|v| v.uuid)
            .ok_or_else(|| {
                PvcError::failure(format!("ERROR: no volume '{volume}' in pool '{pool}'."))
            })?;
        s.create_snapshot(NewSnapshot {
            name: name.clone(),
            project: pool.clone(),
            source_volume: source,
            ..NewSnapshot::default()
        })?;
        Ok(done(format!(
            "Created snapshot '{name}' of volume '{volume}' in pool '{pool}'."
        )))
    })
    .await
}

/// The live snapshot `pool/volume/name`, or a failure.
fn locate(s: &Service, pool: &str, volume: &str, name: &str) -> Result<SnapshotRecord, PvcError> {
    let catalog = s.catalog_snapshot();
    catalog
        .snapshot_named(pool, name)
        .filter(|x| !x.is_clone_point() && volume_name(&catalog, x) == volume)
        .cloned()
        .ok_or_else(|| {
            PvcError::failure(format!(
                "ERROR: no snapshot '{name}' of volume '{volume}' in pool '{pool}'."
            ))
        })
}

/// `DELETE /api/v1/storage/ceph/volume/snapshot/{pool}/{volume}/{snapshot}`:
/// answers once the engine has let the snapshot go.
pub(super) async fn delete(
    State(state): State<PvcState>,
    Path((pool, volume, snapshot)): Path<(String, String, String)>,
    req: PvcRequest,
) -> PvcResult {
    req.authorize(&pool, true)?;
    blocking(&state, move |s| {
        let record = locate(s, &pool, &volume, &snapshot)?;
        s.delete_snapshot(record.uuid, None)?;
        if !s.await_removal(&[record.uuid], DELETE_WAIT) {
            return Err(PvcError::failure(format!(
                "ERROR: snapshot '{snapshot}' is still being removed; it will be gone shortly."
            )));
        }
        Ok(done(format!(
            "Removed snapshot '{snapshot}' of volume '{volume}' in pool '{pool}'."
        )))
    })
    .await
}
