//! The Provisioner's operational calls: metrics in the Prometheus text
//! format, replica management and migration (a Keel volume's replicas are
//! placed and rebuilt by the cluster, so these answer with the document's
//! refusals), tasks (none are ever created here), syslog forwarding into
//! keeld's own log.

use std::collections::HashMap;
use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{success, KsError, KsResult};
use super::volumes::locate;
use super::{blocking, parse_id, same_tenant, tenant_of, KsCaller, KsJson};
use crate::domain::VolumeFilter;
use crate::http::AppState;

/// Escapes a Prometheus label value.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// `GET /metrics`: node state and capacity, volume capacity.
pub(super) async fn metrics(State(state): State<AppState>, caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    blocking(&state, |s| {
        let nodes = s
            .control()
            .nodes()
            .map_err(|e| KsError::new("NotAvailable", e.to_string()))?;
        let mut out = String::new();
        let gauge = |out: &mut String, name: &str, help: &str| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        };
        gauge(&mut out, "ks_node_state", "ks node state per Storage Node (0: available)");
        for n in &nodes {
            let down = u8::from(n.state.as_str() != "Active");
            let _ = writeln!(
                out,
                "ks_node_state{{node=\"{}\",name=\"{}\",rack=\"null\",zone=\"null\",region=\"null\",}} {down}",
                n.uuid,
                label(&n.name)
            );
        }
        gauge(&mut out, "ks_node_used_capacity_bytes", "ks node used capacity bytes per Storage Node");
        for n in &nodes {
            let used = n.capacity_bytes.saturating_sub(n.free_bytes);
            let _ = writeln!(out, "ks_node_used_capacity_bytes{{node=\"{}\",name=\"{}\",}} {used}", n.uuid, label(&n.name));
        }
        gauge(&mut out, "ks_node_free_capacity_bytes", "ks node free capacity bytes per Storage Node");
        for n in &nodes {
            let _ = writeln!(out, "ks_node_free_capacity_bytes{{node=\"{}\",name=\"{}\",}} {}", n.uuid, label(&n.name), n.free_bytes);
        }
        gauge(&mut out, "ks_vol_capacity_bytes", "ks vol capacity bytes per volume");
        let volumes = s.volumes(&VolumeFilter {
            limit: Some(crate::domain::service::LIST_LIMIT_MAX),
            ..VolumeFilter::default()
        });
        for v in &volumes {
            let r = &v.record;
            let _ = writeln!(
                out,
                "ks_vol_capacity_bytes{{uuid=\"{}\",alias=\"{}\",tenant=\"{}\",}} {}",
                r.uuid,
                label(&r.name),
                label(&tenant_of(&r.project)),
                r.size_bytes
            );
        }
        Ok((
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            out,
        )
            .into_response())
    })
    .await
}

/// The volume a replica call names, and why it cannot be done here.
async fn refuse_replica_change(
    state: AppState,
    caller: KsCaller,
    tenant: String,
    id: String,
) -> KsResult {
    let project = caller.tenant(&tenant, true)?;
    let id = parse_id("id", &id)?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id)?;
        if view.record.replica_count < 2 {
            return Err(KsError::new("NotReplicated", format!("volume {id} has one replica")));
        }
        Err(KsError::new(
            "NotAvailable",
            format!(
                "volume {id}'s {} replicas are placed, rebuilt and replaced by the cluster; they are not changed one by one",
                view.record.replica_count
            ),
        ))
    })
    .await
}

/// `POST /{tenantId}/replica/{id}`.
pub(super) async fn add_replica(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id)): Path<(String, String)>,
) -> KsResult {
    refuse_replica_change(state, caller, tenant, id).await
}

/// `PATCH /{tenantId}/replica/{id}/{replicaID}` and
/// `DELETE /{tenantId}/replica/{volumeID}/{replicaID}`.
pub(super) async fn change_replica(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id, _replica)): Path<(String, String, String)>,
) -> KsResult {
    refuse_replica_change(state, caller, tenant, id).await
}

/// `PATCH /{tenantId}/replica/{id}/{replicaID}/{replicaState}`.
pub(super) async fn set_replica_state(
    State(state): State<AppState>,
    caller: KsCaller,
    Path((tenant, id, _replica, wanted)): Path<(String, String, String, String)>,
) -> KsResult {
    if !matches!(wanted.as_str(), "Available" | "Missing" | "Synchronizing") {
        return Err(KsError::invalid(format!(
            "replica state {wanted:?} is not Available, Missing or Synchronizing"
        )));
    }
    refuse_replica_change(state, caller, tenant, id).await
}

/// Migrate volume's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Migrate {
    rep_id: Option<String>,
    vol_id: Option<String>,
    tenant_id: Option<String>,
}

/// `POST /{tenantId}/migrate_volume`.
pub(super) async fn migrate(
    State(state): State<AppState>,
    caller: KsCaller,
    Path(tenant): Path<String>,
    KsJson(body): KsJson<Migrate>,
) -> KsResult {
    if body.rep_id.as_deref().is_none_or(str::is_empty) {
        return Err(KsError::invalid("repId is mandatory"));
    }
    let volume = body
        .vol_id
        .ok_or_else(|| KsError::invalid("volId is mandatory"))?;
    let project = caller.tenant(&tenant, true)?;
    same_tenant(&tenant, body.tenant_id.as_deref())?;
    let id = parse_id("volId", &volume)?;
    blocking(&state, move |s| {
        let view = locate(s, &project, id).map_err(|e| KsError {
            status: if e.status == "NotExists" {
                "VolumeNoFound"
            } else {
                e.status
            },
            ..e
        })?;
        if view.record.replica_count < 2 {
            return Err(KsError::new(
                "NotReplicated",
                format!("volume {id} has one replica"),
            ));
        }
        Err(KsError::new(
            "NoBackendToMigrateReplica",
            "replicas move only when the cluster replaces a failed node",
        ))
    })
    .await
}

/// `GET /tasks`: no task is ever created here (licences, inventory and
/// migrations are not run as tasks), so every query answers none.
pub(super) async fn tasks(
    caller: KsCaller,
    Query(query): Query<HashMap<String, String>>,
) -> KsResult {
    caller.require_admin()?;
    if query.contains_key("taskId") && query.contains_key("hostId") {
        return Err(KsError::invalid("give at most one of taskId and hostId"));
    }
    Ok(Json(Vec::<Value>::new()).into_response())
}

/// `PUT /tasks`: there is no task to update.
pub(super) async fn update_task(caller: KsCaller, KsJson(body): KsJson<Value>) -> KsResult {
    caller.require_admin()?;
    let id = body["taskId"].as_str().unwrap_or_default();
    if id.is_empty() || body["hostId"].as_str().unwrap_or_default().is_empty() {
        return Err(KsError::invalid("taskId and hostId are mandatory"));
    }
    Err(KsError::new(
        "TaskNotFound",
        format!("task {id} does not exist"),
    ))
}

/// `DELETE /tasks?taskId=`: there is no task to remove.
pub(super) async fn delete_task(
    caller: KsCaller,
    Query(query): Query<HashMap<String, String>>,
) -> KsResult {
    caller.require_admin()?;
    let id = query
        .get("taskId")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| KsError::invalid("taskId is mandatory"))?;
    Err(KsError::new("NoTask", format!("task {id} does not exist")))
}

/// Forward log's body.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ForwardLog {
    logging_type: Option<String>,
    level: Option<String>,
    host: Option<String>,
    app_name: Option<String>,
    message: Option<String>,
    parameters_list: Option<Value>,
}

/// `POST /forward_log`: the event or command goes to keeld's log, which
/// is this node's syslog.
pub(super) async fn forward_log(caller: KsCaller, KsJson(body): KsJson<ForwardLog>) -> KsResult {
    caller.require_admin()?;
    let need = |field: &str, value: &Option<String>| {
        value
            .clone()
            .filter(|v| !v.is_empty())
            .ok_or_else(|| KsError::invalid(format!("{field} is mandatory")))
    };
    let kind = need("loggingType", &body.logging_type)?;
    if kind != "EVENT" && kind != "COMMAND" {
        return Err(KsError::invalid(format!(
            "loggingType {kind:?} is neither EVENT nor COMMAND"
        )));
    }
    let level = need("level", &body.level)?;
    let host = need("host", &body.host)?;
    let app = need("appName", &body.app_name)?;
    let message = need("message", &body.message)?;
    let parameters = body
        .parameters_list
        .map(|p| p.to_string())
        .unwrap_or_default();
    match level.as_str() {
        "FATAL" | "ERROR" => tracing::error!(kind, host, app, parameters, "forwarded: {message}"),
        "WARN" => tracing::warn!(kind, host, app, parameters, "forwarded: {message}"),
        "INFO" => tracing::info!(kind, host, app, parameters, "forwarded: {message}"),
        other => {
            return Err(KsError::invalid(format!(
                "level {other:?} is not FATAL, ERROR, WARN or INFO"
            )))
        }
    }
    Ok(success("logged", &[]))
}

/// `GET /syslog`: keeld's log is the only destination.
pub(super) async fn syslog(caller: KsCaller) -> KsResult {
    caller.require_admin()?;
    Ok(Json(json!([{"id": "keeld", "name": "keeld", "url": "", "state": "Available", "useTls": false, "certFileName": ""}])).into_response())
}
