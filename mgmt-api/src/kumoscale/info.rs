//! The Provisioner's own facts: free space, the backends (this cluster's
//! nodes with their NVMe/TCP portals) and the licence.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde_json::{json, Value};

use super::reply::{KsError, KsResult};
use super::{blocking, KsCaller};
use crate::control::NodeStatus;
use crate::domain::Service;
use crate::http::AppState;

/// `GET /info`.
pub(super) async fn info(State(state): State<AppState>, _caller: KsCaller) -> KsResult {
    blocking(&state, |s| {
        let pool = s
            .control()
            .pool_stats()
            .map_err(|e| KsError::new("NotAvailable", e.to_string()))?;
        Ok(Json(json!({
            "totalFreeSpace": pool.effective_bytes().saturating_sub(pool.used_bytes),
            "version": env!("CARGO_PKG_VERSION"),
            "syslogsBackend": "",
            "authenticationMode": "JWT",
        }))
        .into_response())
    })
    .await
}

fn portal(endpoint: &str) -> Value {
    let (ip, port) = endpoint.rsplit_once(':').unwrap_or((endpoint, "4420"));
    json!({"ip": ip, "port": port.parse::<u16>().unwrap_or(4420), "transport": "TCP_IP"})
}

fn backend_json(api_endpoint: &str, node: &NodeStatus, volumes: usize) -> Value {
    let (ip, port) = api_endpoint
        .rsplit_once(':')
        .unwrap_or((api_endpoint, "443"));
    json!({
        "persistentID": node.uuid,
        "mgmtIPs": [ip],
        "mgmtPort": port.parse::<u16>().unwrap_or(443),
        "rack": "",
        "zone": "",
        "region": "",
        "inUse": true,
        "state": if node.state.as_str() == "Active" { "Available" } else { "Unavailable" },
        "totalCapacity": node.capacity_bytes,
        "availableCapacity": node.free_bytes,
        "numVolumes": volumes,
        "version": env!("CARGO_PKG_VERSION"),
        "numberOfSSDs": 1,
        "certified": true,
        "portals": [portal(&node.nvme_endpoint)],
        "name": node.name,
        "hostId": "",
        "authenticationMode": "LOCAL",
    })
}

fn backends_of(s: &Service, api_endpoint: &str) -> Result<Vec<Value>, KsError> {
    let nodes = s
        .control()
        .nodes()
        .map_err(|e| KsError::new("NotAvailable", e.to_string()))?;
    let volumes = s.cluster().map(|c| c.volume_count).unwrap_or(0);
    Ok(nodes
        .iter()
        .map(|n| backend_json(api_endpoint, n, volumes))
        .collect())
}

/// `GET /backends`: every node of the cluster.
pub(super) async fn backends(State(state): State<AppState>, caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    let api = state.api_endpoint.clone();
    blocking(&state, move |s| {
        Ok(Json(backends_of(s, &api)?).into_response())
    })
    .await
}

/// `GET /backends/{id}`.
pub(super) async fn backend(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(id): Path<String>,
) -> KsResult {
    caller.require_admin()?;
    let api = state.api_endpoint.clone();
    blocking(&state, move |s| {
        backends_of(s, &api)?
            .into_iter()
            .find(|b| b["persistentID"].as_str() == Some(id.as_str()))
            .map(|b| Json(b).into_response())
            .ok_or_else(|| KsError::new("NotExists", format!("backend {id} does not exist")))
    })
    .await
}

/// `GET /license`: no expiry and no limit on backends.
pub(super) async fn license(_caller: KsCaller) -> KsResult {
    Ok(
        Json(json!({"type": "PRODUCTION", "expirationDate": null, "maxBackends": null}))
            .into_response(),
    )
}
