//! The cluster as PVC shows it: the API root, nodes, storage status and
//! utilisation as `ceph status` / `rados df`-style text, and OSDs, one per
//! node (each node's pool is its one storage daemon).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::reply::{PvcError, PvcResult};
use super::session::PvcRequest;
use super::values::{human_size, NameFilter};
use super::{blocking, PvcState};
use crate::control::{NodeState, NodeStatus};
use crate::domain::model::ResourceState;
use crate::domain::Service;

/// `GET /api/v1`: the API's description, with PVC's 209.
pub(super) async fn root() -> Response {
    let status = StatusCode::from_u16(209).unwrap_or(StatusCode::OK);
    (
        status,
        Json(json!({"message": "Keel storage API, PVC dialect version 1"})),
    )
        .into_response()
}

fn nodes_of(s: &Service) -> Result<Vec<NodeStatus>, PvcError> {
    s.control()
        .nodes()
        .map_err(|e| PvcError::failure(format!("ERROR: {e}")))
}

/// PVC's node document with Keel's facts: the node answering is the
/// primary coordinator (it is the one serving this API), every other node
/// a secondary one.
fn node_json(s: &Service, node: &NodeStatus) -> Value {
    let primary = s.control().node_info().uuid == node.uuid;
    json!({
        "name": node.name,
        "uuid": node.uuid,
        "daemon_state": if node.state == NodeState::Active { "run" } else { "dead" },
        "coordinator_state": if primary { "primary" } else { "secondary" },
        "domain_state": "ready",
        "nvme_endpoint": node.nvme_endpoint,
        "failure_domains": node.failure_domains,
        "storage": {"total_bytes": node.capacity_bytes, "free_bytes": node.free_bytes},
    })
}

async fn list_nodes(state: &PvcState, filter: NameFilter) -> PvcResult {
    blocking(state, move |s| {
        let nodes: Vec<Value> = nodes_of(s)?
            .iter()
            .filter(|n| filter.keeps(&n.name))
            .map(|n| node_json(s, n))
            .collect();
        if nodes.is_empty() {
            return Err(PvcError::not_found("Node"));
        }
        Ok(Json(nodes).into_response())
    })
    .await
}

/// `GET /api/v1/node`.
pub(super) async fn nodes(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let filter = NameFilter::fuzzy(req.values.text("limit"))?;
    list_nodes(&state, filter).await
}

/// `GET /api/v1/node/{node}`: the listing filtered by the exact name.
pub(super) async fn node(
    State(state): State<PvcState>,
    Path(name): Path<String>,
    _req: PvcRequest,
) -> PvcResult {
    list_nodes(&state, NameFilter::Exact(name)).await
}

/// `GET /api/v1/node/{node}/coordinator-state`.
pub(super) async fn coordinator_state(
    State(state): State<PvcState>,
    Path(name): Path<String>,
    _req: PvcRequest,
) -> PvcResult {
    blocking(&state, move |s| {
        let node = nodes_of(s)?
            .into_iter()
            .find(|n| n.name == name)
            .ok_or_else(|| PvcError::not_found("Node"))?;
        let doc = node_json(s, &node);
        Ok(
            Json(json!({"name": node.name, "coordinator_state": doc["coordinator_state"]}))
                .into_response(),
        )
    })
    .await
}

/// `POST /api/v1/node/{node}/coordinator-state`: every Keel node serves the
/// API, so there is no coordinator role to hand over.
pub(super) async fn set_coordinator_state(req: PvcRequest) -> PvcResult {
    match req.values.text("coordinator-state") {
        Some("primary" | "secondary") => Err(PvcError::not_provided("Coordinator hand-over")),
        Some(_) => Err(PvcError::failure(
            "ERROR: coordinator-state is primary or secondary.",
        )),
        None => Err(PvcError::failure("ERROR: coordinator-state is required.")),
    }
}

/// The facts the status and utilisation texts are made of.
struct Facts {
    cluster: uuid::Uuid,
    primary: String,
    nodes: Vec<NodeStatus>,
    pool: crate::control::PoolStats,
    pools: Vec<(String, u64, usize, usize)>,
    volumes: usize,
    snapshots: usize,
    damaged_blocks: u64,
    degraded_volumes: usize,
}

fn facts(s: &Service) -> Result<Facts, PvcError> {
    let nodes = nodes_of(s)?;
    let pool = s
        .control()
        .pool_stats()
        .map_err(|e| PvcError::failure(format!("ERROR: {e}")))?;
    let catalog = s.catalog_snapshot();
    let mut pools = Vec::new();
    let mut damaged_blocks = 0;
    let mut degraded_volumes = 0;
    for project in catalog.projects.keys() {
        let mut used = 0;
        let mut count = 0;
        for v in catalog
            .volumes
            .values()
            .filter(|v| &v.project == project && v.state != ResourceState::Deleting)
        {
            count += 1;
            if let Ok(view) = s.volume(v.uuid) {
                used += view.usage.physical_used_bytes;
                damaged_blocks += view.usage.damaged_blocks;
                if view.usage.damaged_blocks > 0 {
                    degraded_volumes += 1;
                }
            }
        }
        let snaps = catalog
            .snapshots
            .values()
            .filter(|x| &x.project == project && x.state != ResourceState::Deleting)
            .count();
        pools.push((project.clone(), used, count, snaps));
    }
    Ok(Facts {
        cluster: s.cluster_uuid(),
        primary: s.control().node_info().name,
        volumes: pools.iter().map(|p| p.2).sum(),
        snapshots: pools.iter().map(|p| p.3).sum(),
        nodes,
        pool,
        pools,
        damaged_blocks,
        degraded_volumes,
    })
}

/// `HEALTH_OK`, or what is wrong: down nodes, damaged blocks, a full pool.
fn health(f: &Facts) -> (String, Vec<String>) {
    let mut problems = Vec::new();
    let down = f
        .nodes
        .iter()
        .filter(|n| n.state != NodeState::Active)
        .count();
    if down > 0 {
        problems.push(format!("{down} node(s) down"));
    }
    if f.damaged_blocks > 0 {
        problems.push(format!(
            "{} damaged block(s) in {} volume(s) read as media errors",
            f.damaged_blocks, f.degraded_volumes
        ));
    }
    let capacity = f.pool.effective_bytes();
    if capacity > 0 && f.pool.used_bytes.saturating_mul(100) >= capacity.saturating_mul(90) {
        problems.push("pool is at least 90% full".to_owned());
    }
    let level = if f.damaged_blocks > 0 {
        "HEALTH_ERR"
    } else if problems.is_empty() {
        "HEALTH_OK"
    } else {
        "HEALTH_WARN"
    };
    (level.to_owned(), problems)
}

fn status_text(f: &Facts) -> String {
    let (level, problems) = health(f);
    let up = f
        .nodes
        .iter()
        .filter(|n| n.state == NodeState::Active)
        .count();
    let mut text = format!(
        "  cluster:\n    id:     {}\n    health: {level}\n",
        f.cluster
    );
    for p in &problems {
        text.push_str(&format!("            {p}\n"));
    }
    let capacity = f.pool.effective_bytes();
    text.push_str(&format!(
        "\n  services:\n    osd: {} osds: {up} up, {up} in\n\n  data:\n    pools:   {} pools, {} volumes, {} snapshots\n    usage:   {} used, {} / {} avail\n",
        f.nodes.len(),
        f.pools.len(),
        f.volumes,
        f.snapshots,
        human_size(f.pool.used_bytes),
        human_size(capacity.saturating_sub(f.pool.used_bytes)),
        human_size(capacity),
    ));
    text
}

fn df_text(f: &Facts) -> String {
    let mut text = format!(
        "{:<24} {:>10} {:>8} {:>10}\n",
        "POOL_NAME", "USED", "VOLUMES", "SNAPSHOTS"
    );
    for (name, used, volumes, snapshots) in &f.pools {
        text.push_str(&format!(
            "{name:<24} {:>10} {volumes:>8} {snapshots:>10}\n",
            human_size(*used)
        ));
    }
    let capacity = f.pool.effective_bytes();
    text.push_str(&format!(
        "\ntotal_objects    {}\ntotal_used       {}\ntotal_avail      {}\ntotal_space      {}\n",
        f.volumes + f.snapshots,
        human_size(f.pool.used_bytes),
        human_size(capacity.saturating_sub(f.pool.used_bytes)),
        human_size(capacity),
    ));
    text
}

/// `GET /api/v1/storage/ceph` and `/status`.
pub(super) async fn status(State(state): State<PvcState>, _req: PvcRequest) -> PvcResult {
    blocking(&state, |s| {
        let f = facts(s)?;
        Ok(Json(json!({
            "type": "status",
            "primary_node": f.primary,
            "health": health(&f).0,
            "ceph_data": status_text(&f),
        }))
        .into_response())
    })
    .await
}

/// `GET /api/v1/storage/ceph/df`.
pub(super) async fn utilization(State(state): State<PvcState>, _req: PvcRequest) -> PvcResult {
    blocking(&state, |s| {
        let f = facts(s)?;
        Ok(Json(json!({
            "type": "utilization",
            "primary_node": f.primary,
            "ceph_data": df_text(&f),
        }))
        .into_response())
    })
    .await
}

/// `POST /api/v1/storage/ceph/cluster-option`: Keel has no OSD flags.
pub(super) async fn cluster_option(req: PvcRequest) -> PvcResult {
    req.require_admin()?;
    match req.values.text("action") {
        Some("set" | "unset") => {}
        Some(_) => return Err(PvcError::failure("ERROR: action is set or unset.")),
        None => return Err(PvcError::failure("ERROR: action is required.")),
    }
    let option = req.values.required("option", "option is required.")?;
    Err(PvcError::not_provided(&format!(
        "The Ceph OSD option '{option}'"
    )))
}

/// An OSD: a node's pool.
fn osd_json(node: &NodeStatus) -> Value {
    let up = u8::from(node.state == NodeState::Active);
    let used = node.capacity_bytes.saturating_sub(node.free_bytes);
    json!({
        "id": node.ordinal.to_string(),
        "node": node.name,
        "stats": {
            "uuid": node.uuid,
            "up": up,
            "in": 1,
            "weight": 1.0,
            "kb": node.capacity_bytes / 1024,
            "kb_used": used / 1024,
            "kb_avail": node.free_bytes / 1024,
            "utilization": if node.capacity_bytes == 0 {
                0.0
            } else {
                used as f64 * 100.0 / node.capacity_bytes as f64
            },
            "node": node.name,
        },
    })
}

/// `GET /api/v1/storage/ceph/osd` (`limit` over ids).
pub(super) async fn osds(State(state): State<PvcState>, req: PvcRequest) -> PvcResult {
    let filter = NameFilter::fuzzy(req.values.text("limit"))?;
    blocking(&state, move |s| {
        let osds: Vec<Value> = nodes_of(s)?
            .iter()
            .filter(|n| filter.keeps(&n.ordinal.to_string()))
            .map(osd_json)
            .collect();
        if osds.is_empty() {
            return Err(PvcError::not_found("OSD"));
        }
        Ok(Json(osds).into_response())
    })
    .await
}

fn find_osd(s: &Service, id: &str) -> Result<NodeStatus, PvcError> {
    nodes_of(s)?
        .into_iter()
        .find(|n| n.ordinal.to_string() == id)
        .ok_or_else(|| PvcError::not_found("OSD"))
}

/// `GET /api/v1/storage/ceph/osd/{osd}`.
pub(super) async fn osd(
    State(state): State<PvcState>,
    Path(id): Path<String>,
    _req: PvcRequest,
) -> PvcResult {
    blocking(&state, move |s| {
        Ok(Json(vec![osd_json(&find_osd(s, &id)?)]).into_response())
    })
    .await
}

/// `GET /api/v1/storage/ceph/osd/{osd}/state`.
pub(super) async fn osd_state(
    State(state): State<PvcState>,
    Path(id): Path<String>,
    _req: PvcRequest,
) -> PvcResult {
    blocking(&state, move |s| {
        let node = find_osd(s, &id)?;
        Ok(Json(json!({
            "id": id,
            "in": 1,
            "up": u8::from(node.state == NodeState::Active),
        }))
        .into_response())
    })
    .await
}

/// `POST /api/v1/storage/ceph/osd`: a node's devices are set when it starts.
pub(super) async fn add_osd(req: PvcRequest) -> PvcResult {
    req.require_admin()?;
    req.values.required("node", "node is required.")?;
    req.values.required("device", "device is required.")?;
    req.values.required("weight", "weight is required.")?;
    Err(PvcError::not_provided(
        "Adding an OSD while running (a node's devices are set in its configuration)",
    ))
}

/// `DELETE /api/v1/storage/ceph/osd/{osd}`.
pub(super) async fn remove_osd(Path(_id): Path<String>, req: PvcRequest) -> PvcResult {
    req.require_admin()?;
    require_really_meant(&req)?;
    Err(PvcError::not_provided("Removing an OSD"))
}

/// `POST /api/v1/storage/ceph/osd/{osd}/state`.
pub(super) async fn set_osd_state(Path(_id): Path<String>, req: PvcRequest) -> PvcResult {
    req.require_admin()?;
    match req.values.text("state") {
        Some("in" | "out") => Err(PvcError::not_provided("Setting an OSD in or out")),
        Some(_) => Err(PvcError::failure("ERROR: state is in or out.")),
        None => Err(PvcError::failure("ERROR: state is required.")),
    }
}

/// Fails unless the request carries `yes_i_really_mean_it`.
pub(super) fn require_really_meant(req: &PvcRequest) -> Result<(), PvcError> {
    if req.values.flag("yes_i_really_mean_it") {
        Ok(())
    } else {
        Err(PvcError::failure(
            "ERROR: this destroys data for good; send it again with yes_i_really_mean_it to confirm.",
        ))
    }
}
