//! Hosts (registered by their probe), publishing volumes to them (their NQN
//! joins the volume's host ACL) and the targets they connect to.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::reply::{success, KsError, KsResult};
use super::volumes::{locate, Paging};
use super::{blocking, parse_id, same_tenant, KsCaller, KsJson};
use crate::domain::model::HostRecord;
use crate::domain::{rules, Service, VolumeChanges, VolumeFilter};
use crate::http::AppState;

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A host is available while its probes arrive: within twice its interval.
fn available(host: &HostRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(host.last_probe_ms) <= host.probe_interval_s.max(1) * 2000
}

/// Namespace ids of the volumes published to `nqn`.
fn namespaces_of(s: &Service, nqn: &str) -> Vec<u32> {
    s.volumes(&VolumeFilter {
        limit: Some(crate::domain::service::LIST_LIMIT_MAX),
        ..VolumeFilter::default()
    })
    .iter()
    .filter(|v| v.record.acl.iter().any(|a| a == nqn))
    .filter_map(|v| v.record.nsid)
    .collect()
}

fn host_json(s: &Service, h: &HostRecord, now: u64) -> Value {
    json!({
        "uuid": h.uuid,
        "name": h.name,
        "nqn": h.nqn,
        "clientType": h.client_type,
        "state": if available(h, now) { "available" } else { "unavailable" },
        "version": h.version,
        "lastProbTime": h.last_probe_ms,
        "duration": h.probe_interval_s,
        "multipath": h.multipath,
        "usedNamespacesIds": namespaces_of(s, &h.nqn),
    })
}

/// `GET /hosts`: paged like volumes; `hostName` keeps hosts of that name.
pub(super) async fn list(
    State(state): State<AppState>,
    caller: KsCaller,
    Query(query): Query<HashMap<String, String>>,
) -> KsResult {
    caller.require_admin()?;
    let page = Paging::parse(&query)?;
    let name = query.get("hostName").filter(|n| !n.is_empty()).cloned();
    blocking(&state, move |s| {
        let now = now_ms();
        let hosts: Vec<HostRecord> = s
            .hosts()
            .into_iter()
            .filter(|h| name.as_ref().is_none_or(|n| *n == h.name))
            .collect();
        let body: Vec<Value> = page
            .apply(hosts, |h| h.uuid)
            .iter()
            .map(|h| host_json(s, h, now))
            .collect();
        Ok(Json(body).into_response())
    })
    .await
}

/// Host probe's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Probe {
    host_nqn: Option<String>,
    host_id: Option<String>,
    client_type: Option<String>,
    #[serde(alias = "Name")]
    name: Option<String>,
    duration: Option<u64>,
    version: Option<String>,
    multipath: Option<bool>,
}

/// `POST /host_probe`: registers the host or refreshes it.
pub(super) async fn probe(
    State(state): State<AppState>,
    caller: KsCaller,
    KsJson(body): KsJson<Probe>,
) -> KsResult {
    caller.require_admin()?;
    let need = |field: &str, value: Option<String>| {
        value
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| KsError::invalid(format!("{field} is mandatory")))
    };
    let nqn = need("hostNqn", body.host_nqn)?;
    let id = parse_id("hostId", &need("hostId", body.host_id)?)?;
    let client_type = need("clientType", body.client_type)?;
    if client_type != "Kubernetes" && client_type != "Agent" {
        return Err(KsError::invalid(format!(
            "clientType {client_type:?} is neither Kubernetes nor Agent"
        )));
    }
    let name = need("name", body.name)?;
    let version = need("version", body.version)?;
    let duration = body
        .duration
        .filter(|d| *d > 0)
        .ok_or_else(|| KsError::invalid("duration (seconds) is mandatory and positive"))?;
    let host = HostRecord {
        uuid: id,
        nqn,
        name,
        client_type,
        version,
        probe_interval_s: duration,
        multipath: body.multipath.unwrap_or(false),
        last_probe_ms: now_ms(),
    };
    blocking(&state, move |s| {
        s.probe_host(host)
            .map_err(|e| KsError::from_service(e, "HostNotFound", "HostAvailable"))?;
        Ok(success(format!("host {id} probed"), &[]))
    })
    .await
}

/// `DELETE /hosts/{uuid}`: only a host that stopped probing.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(id): Path<String>,
) -> KsResult {
    caller.require_admin()?;
    let id = parse_id("uuid", &id)?;
    blocking(&state, move |s| {
        let host = s
            .host(id)
            .map_err(|e| KsError::from_service(e, "NotExists", "HostAvailable"))?;
        if available(&host, now_ms()) {
            return Err(KsError::new(
                "HostAvailable",
                format!("host {id} is available; it can be deleted once it stops probing"),
            ));
        }
        s.delete_host(id)
            .map_err(|e| KsError::from_service(e, "NotExists", "HostAvailable"))?;
        Ok(success(format!("host {id} deleted"), &[]))
    })
    .await
}

/// Publish and unpublish bodies.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Publish {
    host_id: Option<String>,
    vol_id: Option<String>,
    tenant_id: Option<String>,
}

impl Publish {
    fn ids(&self) -> Result<(Uuid, Uuid), KsError> {
        let host = self
            .host_id
            .as_deref()
            .ok_or_else(|| KsError::invalid("hostId is mandatory"))?;
        let volume = self
            .vol_id
            .as_deref()
            .ok_or_else(|| KsError::invalid("volId is mandatory"))?;
        Ok((parse_id("hostId", host)?, parse_id("volId", volume)?))
    }
}

/// Publishes (`add`) or unpublishes a volume to a host by changing its
/// host ACL.
async fn change_publication(
    state: AppState,
    caller: KsCaller,
    tenant: String,
    body: Publish,
    add: bool,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let (host, volume) = body.ids()?;
    blocking(&state, move |s| {
        let host = s
            .host(host)
            .map_err(|e| KsError::from_service(e, "HostNotFound", "VolumeIsInUse"))?;
        let view = locate(s, &project, volume).map_err(|e| KsError {
            status: if e.status == "NotExists" {
                "VolumeNotFound"
            } else {
                e.status
            },
            ..e
        })?;
        let mut acl: Vec<String> = view
            .record
            .acl
            .iter()
            .filter(|a| *a != rules::ALLOW_NONE)
            .cloned()
            .collect();
        let published = acl.contains(&host.nqn);
        match (add, published) {
            (true, true) => {
                return Err(KsError::new(
                    "AlreadyPublished",
                    format!("volume {volume} is already published to host {}", host.uuid),
                ))
            }
            (false, false) => {
                return Err(KsError::new(
                    "VolumeNotInHost",
                    format!("volume {volume} is not published to host {}", host.uuid),
                ))
            }
            (true, false) => acl.push(host.nqn.clone()),
            (false, true) => acl.retain(|a| *a != host.nqn),
        }
        if acl.is_empty() {
            acl.push(rules::ALLOW_NONE.to_owned());
        }
        let failure = if add {
            "PublishFailed"
        } else {
            "UnpublishFailed"
        };
        s.update_volume(
            volume,
            VolumeChanges {
                acl: Some(acl),
                ..VolumeChanges::default()
            },
            None,
        )
        .map_err(|e| KsError {
            status: failure,
            ..KsError::from_service(e, "VolumeNotFound", failure)
        })?;
        let verb = if add {
            "published to"
        } else {
            "unpublished from"
        };
        Ok(success(
            format!("volume {volume} {verb} host {}", host.uuid),
            &[],
        ))
    })
    .await
}

/// `POST /{tenantId}/publish`.
pub(super) async fn publish(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<Publish>,
) -> KsResult {
    change_publication(state, caller, tenant, body, true).await
}

/// `POST /{tenantId}/unpublish`.
pub(super) async fn unpublish(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<Publish>,
) -> KsResult {
    change_publication(state, caller, tenant, body, false).await
}

/// `GET /targets?hostId=` or `?volId=`: the subsystem a host connects to
/// (every volume is a namespace of the node's one subsystem).
pub(super) async fn targets(
    State(state): State<AppState>,
    caller: KsCaller,
    Query(query): Query<HashMap<String, String>>,
) -> KsResult {
    let host = query
        .get("hostId")
        .filter(|h| !h.trim().is_empty())
        .map(|h| parse_id("hostId", h))
        .transpose()?;
    let volume = query
        .get("volId")
        .filter(|v| !v.trim().is_empty())
        .map(|v| parse_id("volId", v))
        .transpose()?;
    if host.is_some() == volume.is_some() {
        return Err(KsError::invalid("give exactly one of hostId and volId"));
    }
    blocking(&state, move |s| {
        let nqn = s.control().subsystem_nqn();
        let node = s.control().node_info();
        let (connected_host, namespaces) = match (host, volume) {
            (Some(h), _) => {
                caller.require_admin()?;
                let host = s
                    .host(h)
                    .map_err(|e| KsError::from_service(e, "HostNotFound", "VolumeIsInUse"))?;
                (json!(host.uuid), namespaces_of(s, &host.nqn).len())
            }
            (None, Some(v)) => {
                let view = s
                    .volume(v)
                    .map_err(|e| KsError::from_service(e, "VolumeNotFound", "VolumeIsInUse"))?;
                caller.authorize(&view.record.project, false)?;
                (Value::Null, 1)
            }
            (None, None) => unreachable!("exactly one was checked above"),
        };
        Ok(Json(vec![json!({
            "name": nqn,
            "alias": node.name,
            "connectedBackends": [{"persistentID": node.uuid}],
            "hostTargetConnectedTo": connected_host,
            "numNamespaces": namespaces,
        })])
        .into_response())
    })
    .await
}
