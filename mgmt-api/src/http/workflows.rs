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
use crate::domain::model::WorkflowRecord;
use crate::domain::{rules, Service, ThickClone};

fn visible(caller: &Principal, w: &WorkflowRecord) -> bool {
    caller.is_cluster_admin() || w.projects.iter().any(|p| caller.can_read(p))
}

fn check_cluster(s: &Service, what: &str, id: Option<&str>) -> Result<(), ApiError> {
    match id.filter(|i| !i.is_empty()) {
        None => Ok(()),
        Some(i) if parse_uuid(what, i)? == s.cluster_uuid() => Ok(()),
        Some(i) => Err(ApiError::BadRequest(format!(
            "{what} {i} is not this cluster ({}); cross-cluster thick clones are not supported",
            s.cluster_uuid()
        ))),
    }
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
    blocking(&state, move |s| {
        check_cluster(s, "src.clusterId", req.src.cluster_id.as_deref())?;
        check_cluster(s, "dst.clusterId", req.dst.cluster_id.as_deref())?;
        let id = s.start_thick_clone(clone)?;
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
