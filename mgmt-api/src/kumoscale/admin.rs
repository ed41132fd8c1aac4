//! The Provisioner's administration of its storage nodes, licence and
//! authorization server. A Keel cluster's nodes join and leave through
//! their own configuration and the cluster store, authenticate with Keel's
//! tokens, and need no licence; so adding, changing or removing a backend,
//! a backend's probe, a licence and an OpenIDC server are refused with the
//! document's result codes (each saying why), and the inventory is read
//! live from the nodes.

use axum::extract::{Path, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{success, KsError, KsResult};
use super::{blocking, KsCaller, KsJson};
use crate::control::{NodeState, NodeStatus};
use crate::domain::Service;
use crate::http::AppState;

fn nodes(s: &Service) -> Result<Vec<NodeStatus>, KsError> {
    s.control()
        .nodes()
        .map_err(|e| KsError::new("NotAvailable", e.to_string()))
}

/// The node whose persistent id is `id`.
fn node(s: &Service, id: &str) -> Result<NodeStatus, KsError> {
    nodes(s)?
        .into_iter()
        .find(|n| n.uuid.to_string() == id)
        .ok_or_else(|| KsError::new("NotExists", format!("backend {id} does not exist")))
}

/// Add-backend body; only `mgmtIPs` decides the answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AddBackend {
    #[serde(rename = "mgmtIPs")]
    mgmt_ips: Option<Vec<String>>,
}

/// `POST /backends`: a node already in the cluster is `AlreadyExists`; any
/// other is refused, as Keel nodes join through their configuration.
pub(super) async fn add(
    State(state): State<AppState>,
    caller: KsCaller,
    KsJson(body): KsJson<AddBackend>,
) -> KsResult {
    caller.require_admin()?;
    let ips = body
        .mgmt_ips
        .filter(|ips| !ips.is_empty())
        .ok_or_else(|| KsError::invalid("mgmtIPs is mandatory"))?;
    let api = state.api_endpoint.clone();
    blocking(&state, move |s| {
        let known: Vec<String> = nodes(s)?
            .iter()
            .map(|n| host_of(&n.nvme_endpoint).to_owned())
            .chain(std::iter::once(host_of(&api).to_owned()))
            .collect();
        if ips.iter().any(|ip| known.iter().any(|k| k == ip)) {
            return Err(KsError::new(
                "AlreadyExists",
                format!("a backend with management IPs {ips:?} is part of this cluster"),
            ));
        }
        Err(KsError::new(
            "NotAvailable",
            "Keel nodes join the cluster through their own configuration (cluster.etcd_endpoints); they cannot be added here",
        ))
    })
    .await
}

/// The host part of `host:port`.
fn host_of(endpoint: &str) -> &str {
    endpoint
        .rsplit_once(':')
        .map_or(endpoint, |(host, _)| host)
        .trim_start_matches('[')
        .trim_end_matches(']')
}

/// `PUT /backends/{id}`: placement comes from a node's configuration.
pub(super) async fn update(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(id): Path<String>,
    KsJson(_body): KsJson<Value>,
) -> KsResult {
    caller.require_admin()?;
    blocking(&state, move |s| {
        let n = node(s, &id)?;
        Err(KsError::new(
            "NotAvailable",
            format!(
                "backend {} takes its rack, zone and region from its configuration (failure domains {:?})",
                n.uuid, n.failure_domains
            ),
        ))
    })
    .await
}

/// `DELETE /backends/{id}`: `BackendHasVolumes` while the cluster holds
/// volumes, else refused: a node leaves through its configuration.
pub(super) async fn remove(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(id): Path<String>,
) -> KsResult {
    caller.require_admin()?;
    blocking(&state, move |s| {
        let n = node(s, &id)?;
        let volumes = s.cluster().map(|c| c.volume_count).unwrap_or(0);
        if volumes > 0 {
            return Err(KsError::new(
                "BackendHasVolumes",
                format!("backend {} serves the cluster's {volumes} volumes", n.uuid),
            ));
        }
        Err(KsError::new(
            "NotAvailable",
            format!(
                "backend {} leaves the cluster by being stopped and removed from its configuration",
                n.uuid
            ),
        ))
    })
    .await
}

/// `POST /probe`: Keel nodes report to the cluster store, not by probes.
pub(super) async fn probe(caller: KsCaller, KsJson(_body): KsJson<Value>) -> KsResult {
    caller.require_admin()?;
    Err(KsError::new(
        "NotAvailable",
        "Keel nodes report their state through the cluster store; backend probes are not taken",
    ))
}

/// `GET /inventory`: one sample, now, of every node.
pub(super) async fn inventory(State(state): State<AppState>, caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    blocking(&state, |s| {
        let backends: Vec<Value> = nodes(s)?
            .iter()
            .map(|n| {
                json!({
                    "hardwareId": n.uuid,
                    "version": env!("CARGO_PKG_VERSION"),
                    "state": if n.state == NodeState::Active { "AVAILABLE" } else { "UNAVAILABLE" },
                    "numSSDs": 1,
                })
            })
            .collect();
        let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        Ok(
            Json(json!({"inventorySamples": [{"timestamp": now, "backends": backends}]}))
                .into_response(),
        )
    })
    .await
}

/// `DELETE /reset_inventory`: the inventory is read live, so there are no
/// samples to drop; the next read starts afresh as after a reset.
pub(super) async fn reset_inventory(caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    Ok(success(
        "the inventory is read live from the nodes; no samples were kept",
        &[("id", json!(uuid::Uuid::new_v4()))],
    ))
}

/// `POST /license`: Keel takes no licence.
pub(super) async fn set_license(caller: KsCaller, KsJson(_body): KsJson<Value>) -> KsResult {
    caller.require_admin()?;
    Err(KsError::new(
        "LicenseError",
        "Keel needs no licence and keeps none; GET /license shows it unlimited",
    ))
}

/// `GET /auth_server`: Keel authenticates with its own tokens (JWT mode).
pub(super) async fn auth_server(caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    Ok(Json(json!({
        "authenticationMode": "JWT",
        "provisionerResourceID": null,
        "provisionerClientID": null,
        "authorizationServerTokenURL": null,
        "authorizationServerJwkSetURL": null,
    }))
    .into_response())
}

/// `POST /auth_server`: OpenIDC is not provided.
pub(super) async fn set_auth_server(caller: KsCaller, KsJson(_body): KsJson<Value>) -> KsResult {
    caller.require_admin()?;
    Err(KsError::new(
        "NotAvailable",
        "an OpenIDC authorization server is not provided; Keel authenticates with its own tokens and registered service keys",
    ))
}

/// `DELETE /auth_server`: already in JWT mode.
pub(super) async fn delete_auth_server(caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    Err(KsError::new(
        "InvalidAuthMode",
        "no authorization server is set: the mode is JWT already",
    ))
}
