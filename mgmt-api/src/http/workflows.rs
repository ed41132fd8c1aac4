//! DMS v1 workflow routes: thick clones into a volume or a snapshot, and the
//! workflow list, get and cancel.

use axum::extract::State;
use axum::Json;

use super::convert;
use super::dto::{
    EmptyDto, ErrorBody, ThickCloneRequest, WorkflowEnvelopeDto, WorkflowIdDto, WorkflowListDto,
};
use super::error::ApiError;
use super::extract::{parse_uuid, Body, Caller, PathParams, QueryParams};
use super::qos::qos_reference;
use super::volumes::{authorize, required_project};
use super::{blocking, AppState};
use crate::auth::Principal;
use crate::dms::transfer::CrossClone;
use crate::domain::model::AttachedClusterRecord;
use crate::domain::model::WorkflowRecord;
use crate::domain::{rules, QosPolicyRef, Service, ServiceError, ThickClone};

fn visible(caller: &Principal, w: &WorkflowRecord) -> bool {
    caller.is_cluster_admin() || w.projects.iter().any(|p| caller.can_read(p))
}

/// The cluster `id` names: `None` for this one (or none given), else an
/// attached cluster.
fn resolve_cluster(
    s: &Service,
    what: &str,
    id: Option<&str>,
) -> Result<Option<AttachedClusterRecord>, ApiError> {
    let Some(text) = id.filter(|i| !i.is_empty()) else {
        return Ok(None);
    };
    let id = parse_uuid(what, text)?;
    if id == s.cluster_uuid() {
        return Ok(None);
    }
    s.attached_clusters()
        .into_iter()
        .find(|c| c.id == id)
        .map(Some)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{what} {id} is neither this cluster ({}) nor one attached to its DMS",
                s.cluster_uuid()
            ))
        })
}

async fn start(
    state: AppState,
    caller: Principal,
    body: Body,
    into_snapshot: bool,
) -> Result<Json<WorkflowIdDto>, ApiError> {
    let req: ThickCloneRequest = body.json()?;
    let echo = serde_json::to_value(&req).map_err(|e| ApiError::Internal(e.to_string()))?;
    let source_snapshot = parse_uuid("src.snapId", &req.src.snap_id)?;
    let source_project = required_project(
        &caller,
        req.src.project_name.clone().filter(|p| !p.is_empty()),
    )?;
    let project = req.dst.project_name.clone().filter(|p| !p.is_empty());
    authorize(&caller, &source_project, false)?;
    authorize(&caller, project.as_deref().unwrap_or(&source_project), true)?;
    if req.dst.name.is_empty() {
        return Err(ApiError::BadRequest(rules::mandatory("dst.name")));
    }
    if !into_snapshot && req.dst.description.is_some() {
        return Err(ApiError::BadRequest(
            "dst.description applies only to snapshot thick clones".to_owned(),
        ));
    }
    let clone = ThickClone {
        source_snapshot,
        source_project,
        name: req.dst.name.clone(),
        project,
        size_bytes: req.dst.size,
        replica_count: req.dst.replica,
        sector_size_bytes: req.dst.sector_size,
        compression: req.dst.compression,
        qos_policy: qos_reference(
            "dst.qosPolicyName",
            req.dst.qos_policy_name.clone(),
            "dst.qosPolicyUUID",
            None,
        )?,
        description: req.dst.description.clone(),
        into_snapshot,
        verify: req.dst.verify_clone.unwrap_or(false),
        request: echo,
    };
    let dms = state.dms.clone();
    let service = std::sync::Arc::clone(&state.service);
    let src_cluster = req.src.cluster_id.clone();
    let dst_cluster = req.dst.cluster_id.clone();
    blocking(&state, move |s| {
        let source = resolve_cluster(s, "src.clusterId", src_cluster.as_deref())?;
        let destination = resolve_cluster(s, "dst.clusterId", dst_cluster.as_deref())?;
        let id = if source.is_none() && destination.is_none() {
            s.start_thick_clone(clone)?
        } else {
            let copier = dms.copier().ok_or_else(|| {
                ApiError::Service(ServiceError::Unimplemented(
                    "this node has no NVMe/TCP host to copy between clusters".to_owned(),
                ))
            })?;
            let qos_policy_name =
                match &clone.qos_policy {
                    None => None,
                    Some(QosPolicyRef::Name(name)) => Some(name.clone()),
                    Some(_) => return Err(ApiError::BadRequest(
                        "a thick clone between clusters names its QoS policy by dst.qosPolicyName"
                            .to_owned(),
                    )),
                };
            let order = CrossClone {
                into_snapshot: clone.into_snapshot,
                source_cluster: source,
                destination_project: clone
                    .project
                    .clone()
                    .unwrap_or_else(|| clone.source_project.clone()),
                source_project: clone.source_project,
                snapshot: clone.source_snapshot,
                destination_cluster: destination,
                name: clone.name,
                size_bytes: clone.size_bytes,
                replica_count: clone.replica_count,
                sector_size_bytes: clone.sector_size_bytes,
                compression: clone.compression,
                qos_policy_name,
                description: clone.description,
                verify: clone.verify,
                request: clone.request,
            };
            rules::check_name("dst.name", &order.name).map_err(ApiError::BadRequest)?;
            crate::dms::transfer::start(&service, &dms, copier, order)?
        };
        Ok(Json(WorkflowIdDto {
            workflow_id: id.to_string(),
        }))
    })
    .await
}

/// Thick-clone a snapshot into a new volume; returns the workflow id (429 past
/// `maxRunningWorkflows`, 501 if the engine has no thick clone).
#[utoipa::path(post, path = "/api/v1/volumes/thickclone", tag = "workflows", request_body = ThickCloneRequest,
    responses((status = 200, body = WorkflowIdDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 501, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn thick_clone_volume(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Body,
) -> Result<Json<WorkflowIdDto>, ApiError> {
    start(state, caller, body, false).await
}

/// Thick-clone a snapshot into a new snapshot (through a new volume named
/// `thickclone-<workflowId>`); returns the workflow id.
#[utoipa::path(post, path = "/api/v1/snapshots/thickclone", tag = "workflows", request_body = ThickCloneRequest,
    responses((status = 200, body = WorkflowIdDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 501, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn thick_clone_snapshot(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Body,
) -> Result<Json<WorkflowIdDto>, ApiError> {
    start(state, caller, body, true).await
}

/// List workflows newest first (`pageSize` ≤ 100, `nextPageToken`).
#[utoipa::path(get, path = "/api/v1/workflows", tag = "workflows",
    params(("pageSize" = Option<u32>, Query, description = "Page size (default and maximum 100)"),
        ("nextPageToken" = Option<String>, Query, description = "Token from the previous page")),
    responses((status = 200, body = WorkflowListDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    q: QueryParams,
) -> Result<Json<WorkflowListDto>, ApiError> {
    let page_size = q.count("pageSize")?;
    let token = q
        .text("nextPageToken")
        .map(|t| {
            t.parse::<u64>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "nextPageToken {t:?} is not a token this server issued"
                ))
            })
        })
        .transpose()?;
    blocking(&state, move |s| {
        let (page, next) = s.workflows(|w| visible(&caller, w), page_size, token);
        Ok(Json(WorkflowListDto {
            workflows: page.iter().map(convert::workflow).collect(),
            next_page_token: next.map(|n| n.to_string()).unwrap_or_default(),
        }))
    })
    .await
}

/// Get one workflow with state, progress percent and stage.
#[utoipa::path(get, path = "/api/v1/workflows/{workflowId}", tag = "workflows",
    params(("workflowId" = String, Path, description = "Workflow id")),
    responses((status = 200, body = WorkflowEnvelopeDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
) -> Result<Json<WorkflowEnvelopeDto>, ApiError> {
    let id = parse_uuid("workflowId", path.get("workflowId")?)?;
    blocking(&state, move |s| {
        let w = s.workflow(id)?;
        if !visible(&caller, &w) {
            return Err(ApiError::PermissionDenied(format!(
                "{} may not read workflow {id}",
                caller.subject
            )));
        }
        Ok(Json(WorkflowEnvelopeDto {
            workflow: convert::workflow(&w),
        }))
    })
    .await
}

/// Cancel a running workflow; its partial destination is removed.
#[utoipa::path(post, path = "/api/v1/workflows/{workflowId}/cancel", tag = "workflows",
    params(("workflowId" = String, Path, description = "Workflow id")),
    responses((status = 200, body = EmptyDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
) -> Result<Json<EmptyDto>, ApiError> {
    let id = parse_uuid("workflowId", path.get("workflowId")?)?;
    blocking(&state, move |s| {
        let w = s.workflow(id)?;
        for p in &w.projects {
            authorize(&caller, p, true)?;
        }
        s.cancel_workflow(id)?;
        Ok(Json(EmptyDto {}))
    })
    .await
}
