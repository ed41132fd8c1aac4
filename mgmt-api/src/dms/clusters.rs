//! `/api/v1/service-credentials` and `/api/v1/clusters`: the clusters this
//! node's DMS manages, itself first.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::key::KEY_TYPE;
use super::peer::{self, PeerError};
use crate::domain::model::{AttachedClusterRecord, PeerConnection, WorkflowKind, WorkflowState};
use crate::http::error::ApiError;
use crate::http::extract::{parse_uuid, Body, Caller, PathParams};
use crate::http::session::require_cluster_admin;
use crate::http::{blocking, AppState};

/// `GET /api/v1/service-credentials`: the public key a cluster imports
/// (`pubKey`, base64 PEM) under `pubKeyId`, as type `pubKeyType`.
pub async fn credentials(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    require_cluster_admin(&caller)?;
    let dms = state.dms.clone();
    let key = tokio::task::spawn_blocking(move || dms.key())
        .await
        .map_err(|e| ApiError::Internal(format!("request task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(json!({
        "pubKeyId": key.id(),
        "pubKey": key.public_key_base64(),
        "pubKeyType": KEY_TYPE,
    })))
}

/// A cluster in the document's shape; `version` is empty for another
/// cluster, whose API does not say which it runs.
#[allow(clippy::too_many_arguments)]
fn cluster_json(
    id: Uuid,
    name: &str,
    version: &str,
    subsystem_nqn: &str,
    api: &[String],
    discovery: &[String],
    access: PeerConnection,
    data: PeerConnection,
) -> Value {
    json!({
        "id": id,
        "name": name,
        "version": version,
        "subsystemNqn": subsystem_nqn,
        "apiEndpoints": api,
        "discoveryEndpoints": discovery,
        "clusterConnectionStatus": {
            "accessConnectionStatus": access.as_str(),
            "dataConnectionStatus": data.as_str(),
        },
    })
}

/// A name for a cluster, which Keel's API does not carry.
fn cluster_name(id: Uuid) -> String {
    let text = id.to_string();
    format!("keel-{}", &text[..8])
}

/// `GET /api/v1/clusters`: this cluster, then every attached one as last
/// read.
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    require_cluster_admin(&caller)?;
    let api = state.api_endpoint.clone();
    blocking(&state, move |s| {
        let own = s.cluster_uuid();
        let node = s.control().node_info();
        let mut clusters = vec![cluster_json(
            own,
            &cluster_name(own),
            env!("CARGO_PKG_VERSION"),
            &s.control().subsystem_nqn(),
            &[api],
            &[node.discovery_endpoint],
            PeerConnection::Connected,
            PeerConnection::Connected,
        )];
        clusters.extend(s.attached_clusters().iter().map(|c| {
            cluster_json(
                c.id,
                &c.name,
                "",
                &c.subsystem_nqn,
                &c.api_endpoints,
                &c.discovery_endpoints,
                c.access,
                c.data,
            )
        }));
        Ok(Json(json!({"clusters": clusters})))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AttachRequest {
    api_endpoint: Option<String>,
}

/// Checks `host:port`: a host of letters, digits, `.`, `-` or a bracketed
/// IPv6 address, and a port.
fn check_endpoint(endpoint: &str) -> Result<(), ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "apiEndpoint {endpoint:?} must be <host>:<port>, e.g. 10.0.0.1:443"
        ))
    };
    let (host, port) = endpoint.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    };
    if host_ok && port.parse::<u16>().is_ok_and(|p| p > 0) {
        Ok(())
    } else {
        Err(bad())
    }
}

/// Reads a cluster through `endpoint` and makes its registry record.
async fn read_record(
    dms: &super::Dms,
    endpoint: &str,
    pin: Option<String>,
) -> Result<AttachedClusterRecord, PeerError> {
    let token = dms.key().and_then(|k| k.token()).map_err(|e| PeerError {
        connection: PeerConnection::Disconnected,
        message: e.to_string(),
    })?;
    let (cluster, certificate) = peer::read_cluster(endpoint, &token, pin).await?;
    let id = cluster.uuid.parse::<Uuid>().unwrap_or_default();
    let data = peer::probe_data(&cluster.discovery_endpoints).await;
    Ok(AttachedClusterRecord {
        id,
        name: cluster_name(id),
        subsystem_nqn: cluster.subsystem_nqn,
        api_endpoints: cluster.api_endpoints,
        discovery_endpoints: cluster.discovery_endpoints,
        attached_via: endpoint.to_owned(),
        certificate_sha256: certificate,
        access: PeerConnection::Connected,
        data,
        refreshed_at_ms: 0,
    })
}

/// Ends a cluster workflow: Completed with `Ok(message)`, else Failed.
fn end(service: &crate::domain::Service, id: Uuid, outcome: Result<String, String>) {
    match outcome {
        Ok(msg) => service.end_background_workflow(id, WorkflowState::Completed, &msg),
        Err(msg) => service.end_background_workflow(id, WorkflowState::Failed, &msg),
    }
}

/// `POST /api/v1/clusters`: starts an attach workflow; its id is the answer.
pub async fn attach(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    require_cluster_admin(&caller)?;
    let req: AttachRequest = body.json()?;
    let endpoint = req
        .api_endpoint
        .map(|e| e.trim().to_owned())
        .filter(|e| !e.is_empty())
        .ok_or_else(|| ApiError::BadRequest(crate::domain::rules::mandatory("apiEndpoint")))?;
    check_endpoint(&endpoint)?;
    let echo = json!({"apiEndpoint": endpoint});
    let id = blocking(&state, move |s| {
        Ok(s.begin_cluster_workflow(WorkflowKind::AttachCluster, echo)?)
    })
    .await?;
    let service = Arc::clone(&state.service);
    let dms = state.dms.clone();
    tokio::spawn(async move {
        let outcome = match read_record(&dms, &endpoint, None).await {
            Err(e) => Err(e.message),
            Ok(record) => {
                let cluster = record.id;
                let svc = Arc::clone(&service);
                tokio::task::spawn_blocking(move || svc.record_attached_cluster(record, false))
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                    .map(|()| format!("cluster {cluster} attached through {endpoint}"))
            }
        };
        tokio::task::spawn_blocking(move || end(&service, id, outcome))
            .await
            .ok();
    });
    Ok(Json(json!({"workflowId": id})))
}

/// `POST /api/v1/clusters/refresh`: starts a workflow that re-reads every
/// attached cluster through the endpoint it was attached by, with its
/// pinned certificate, and records how each answered.
pub async fn refresh(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<Value>, ApiError> {
    require_cluster_admin(&caller)?;
    let (id, known) = blocking(&state, move |s| {
        let id = s.begin_cluster_workflow(WorkflowKind::RefreshClusters, json!({}))?;
        Ok((id, s.attached_clusters()))
    })
    .await?;
    let service = Arc::clone(&state.service);
    let dms = state.dms.clone();
    tokio::spawn(async move {
        let mut reached = 0;
        let mut records = Vec::new();
        for old in &known {
            let pin = Some(old.certificate_sha256.clone());
            let record = match read_record(&dms, &old.attached_via, pin).await {
                Ok(fresh) if fresh.id == old.id => {
                    reached += 1;
                    AttachedClusterRecord {
                        certificate_sha256: old.certificate_sha256.clone(),
                        ..fresh
                    }
                }
                // Another cluster answers at the endpoint now.
                Ok(_) => AttachedClusterRecord {
                    access: PeerConnection::Disconnected,
                    ..old.clone()
                },
                Err(e) => {
                    tracing::warn!(cluster = %old.id, error = %e.message, "refresh could not read a cluster");
                    AttachedClusterRecord {
                        access: e.connection,
                        data: peer::probe_data(&old.discovery_endpoints).await,
                        ..old.clone()
                    }
                }
            };
            records.push(record);
        }
        let total = known.len();
        tokio::task::spawn_blocking(move || {
            let mut failure = None;
            for record in records {
                if let Err(e) = service.record_attached_cluster(record, true) {
                    failure = Some(e.to_string());
                }
            }
            let outcome = match failure {
                Some(e) => Err(e),
                None => Ok(format!("{reached} of {total} clusters answered")),
            };
            end(&service, id, outcome);
        })
        .await
        .ok();
    });
    Ok(Json(json!({"workflowId": id})))
}

/// `DELETE /api/v1/clusters/{cid}`.
pub async fn detach(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
) -> Result<Json<Value>, ApiError> {
    require_cluster_admin(&caller)?;
    let id = parse_uuid("cid", path.get("cid")?)?;
    blocking(&state, move |s| {
        if id == s.cluster_uuid() {
            return Err(ApiError::BadRequest(format!(
                "{id} is this cluster, which its DMS cannot detach"
            )));
        }
        s.detach_cluster(id)?;
        Ok(Json(json!({})))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_host_and_port() {
        for good in [
            "10.0.0.1:443",
            "foo.bar.com:443",
            "[::1]:8443",
            "localhost:1",
        ] {
            assert!(check_endpoint(good).is_ok(), "{good}");
        }
        for bad in [
            "10.0.0.1",
            ":443",
            "host:0",
            "host:99999",
            "a b:1",
            "[zz]:1",
            "h/x:1",
            "https://h:1",
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
