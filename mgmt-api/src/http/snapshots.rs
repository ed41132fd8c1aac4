//! Snapshot routes: project-scoped (`/api/v2/projects/{projectName}/snapshots...`)
//! and flat (`/api/v2/snapshots...` with `projectName` in the query or body).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::convert;
use super::dto::{CreateSnapshotRequest, EmptyDto, ErrorBody, SnapshotDto, SnapshotListDto};
use super::error::ApiError;
use super::extract::{if_match, parse_uuid, Body, Caller, PathParams, QueryParams};
use super::volumes::{authorize, required_project, resolve_project};
use super::{blocking, AppState};
use crate::auth::Principal;
use crate::domain::model::SnapshotRecord;
use crate::domain::{rules, NewSnapshot, Service, ServiceError};

fn locate(
    s: &Service,
    caller: &Principal,
    project: Option<&str>,
    id: &str,
    write: bool,
) -> Result<SnapshotRecord, ApiError> {
    let uuid: Uuid = parse_uuid("snapshot UUID", id)?;
    let snap = s.snapshot(uuid)?;
    if project.is_some_and(|p| p != snap.project) {
        return Err(ServiceError::NotFound {
            what: "snapshot",
            id: id.to_owned(),
        }
        .into());
    }
    authorize(caller, &snap.project, write)?;
    Ok(snap)
}

async fn list_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let project = resolve_project(path.as_deref(), q.text("projectName"))?;
    if project.is_none() && !caller.is_cluster_admin() {
        return Err(ApiError::BadRequest(rules::PROJECT_MANDATORY.to_owned()));
    }
    let volume = q.uuid("sourceVolumeUUID")?;
    let show_all = q.flag("showAll")?.unwrap_or(false);
    blocking(&state, move |s| {
        if let Some(p) = &project {
            authorize(&caller, p, false)?;
            s.require_project(p)?;
        }
        let snapshots = s
            .snapshots(project.as_deref(), volume, show_all)
            .iter()
            .map(convert::snapshot)
            .collect();
        Ok(Json(SnapshotListDto { snapshots }).into_response())
    })
    .await
}

async fn lookup_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let Some(name) = q.name(&["Name", "name"])? else {
        return list_core(state, caller, path, q).await;
    };
    let project = required_project(
        &caller,
        resolve_project(path.as_deref(), q.text("projectName"))?,
    )?;
    blocking(&state, move |s| {
        authorize(&caller, &project, false)?;
        Ok(Json(convert::snapshot(&s.snapshot_by_name(&project, &name)?)).into_response())
    })
    .await
}

async fn create_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    body: Body,
) -> Result<Json<SnapshotDto>, ApiError> {
    let req: CreateSnapshotRequest = body.json()?;
    let project = required_project(
        &caller,
        resolve_project(path.as_deref(), req.project_name.as_deref())?,
    )?;
    authorize(&caller, &project, true)?;
    let name = rules::required("name", req.name).map_err(ApiError::BadRequest)?;
    let volume_uuid = req
        .source_volume_uuid
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_uuid("sourceVolumeUUID", s))
        .transpose()?;
    let volume_name = req.source_volume_name.filter(|s| !s.is_empty());
    if let Some(n) = &volume_name {
        rules::check_name("sourceVolumeName", n).map_err(ApiError::BadRequest)?;
    }
    if volume_uuid.is_none() && volume_name.is_none() {
        return Err(ApiError::BadRequest(rules::mandatory("sourceVolumeUUID")));
    }
    blocking(&state, move |s| {
        let source_volume = match (volume_uuid, volume_name) {
            (Some(u), _) => u,
            (None, Some(n)) => s.volume_by_name(&project, &n)?.record.uuid,
            (None, None) => return Err(ApiError::BadRequest(rules::mandatory("sourceVolumeUUID"))),
        };
        let snap = s.create_snapshot(NewSnapshot {
            name,
            project,
            source_volume,
            description: req.description.unwrap_or_default(),
            retention_time: req.retention_time,
            ..NewSnapshot::default()
        })?;
        Ok(Json(convert::snapshot(&snap)))
    })
    .await
}

async fn get_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
    q: QueryParams,
) -> Result<Json<SnapshotDto>, ApiError> {
    let project = resolve_project(path_project.as_deref(), q.text("projectName"))?;
    let id = path.get("UUID")?.to_owned();
    blocking(&state, move |s| {
        Ok(Json(convert::snapshot(&locate(
            s,
            &caller,
            project.as_deref(),
            &id,
            false,
        )?)))
    })
    .await
}

async fn delete_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
    q: QueryParams,
    headers: HeaderMap,
) -> Result<Json<EmptyDto>, ApiError> {
    let project = resolve_project(path_project.as_deref(), q.text("projectName"))?;
    let id = path.get("UUID")?.to_owned();
    let etag = if_match(&headers)?;
    blocking(&state, move |s| {
        let snap = locate(s, &caller, project.as_deref(), &id, true)?;
        s.delete_snapshot(snap.uuid, etag.as_deref())?;
        Ok(Json(EmptyDto {}))
    })
    .await
}

/// List snapshots (`projectName` in the query).
#[utoipa::path(get, path = "/api/v2/snapshots", tag = "snapshots",
    params(("projectName" = Option<String>, Query, description = "Project"),
        ("sourceVolumeUUID" = Option<String>, Query, description = "Only snapshots of this volume")),
    responses((status = 200, body = SnapshotListDto), (status = 400, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Response, ApiError> {
    list_core(state, caller, path.project(), q).await
}

/// Look a snapshot up by name.
#[utoipa::path(get, path = "/api/v2/snapshots/", tag = "snapshots",
    params(("Name" = Option<String>, Query, description = "Snapshot name"), ("projectName" = Option<String>, Query, description = "Project")),
    responses((status = 200, body = SnapshotDto), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lookup(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Response, ApiError> {
    lookup_core(state, caller, path.project(), q).await
}

/// Take a snapshot (`projectName` in the body).
#[utoipa::path(post, path = "/api/v2/snapshots", tag = "snapshots", request_body = CreateSnapshotRequest,
    responses((status = 200, body = SnapshotDto), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    body: Body,
) -> Result<Json<SnapshotDto>, ApiError> {
    create_core(state, caller, path.project(), body).await
}

/// Get a snapshot.
#[utoipa::path(get, path = "/api/v2/snapshots/{UUID}", tag = "snapshots",
    params(("UUID" = String, Path, description = "Snapshot UUID")),
    responses((status = 200, body = SnapshotDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Json<SnapshotDto>, ApiError> {
    get_core(state, caller, path.project(), path, q).await
}

/// Delete a snapshot.
#[utoipa::path(delete, path = "/api/v2/snapshots/{UUID}", tag = "snapshots",
    params(("UUID" = String, Path, description = "Snapshot UUID")),
    responses((status = 200, body = EmptyDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
    headers: HeaderMap,
) -> Result<Json<EmptyDto>, ApiError> {
    delete_core(state, caller, path.project(), path, q, headers).await
}
