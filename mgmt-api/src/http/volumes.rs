//! Volume routes, both as the seed writes them (`/api/v2/volumes...` with
//! `projectName` in the query or body) and project-scoped
//! (`/api/v2/projects/{projectName}/volumes...`).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use uuid::Uuid;

use super::convert;
use super::dto::{
    CreateVolumeRequest, EmptyDto, ErrorBody, RollbackRequest, UpdateVolumeRequest, VolumeDto,
    VolumeListDto,
};
use super::error::ApiError;
use super::extract::{
    expected_etag, if_match, parse_uuid, truncate, Body, Caller, PathParams, QueryParams,
};
use super::qos::qos_reference;
use super::{blocking, AppState};
use crate::auth::Principal;
use crate::domain::{
    rules, NewVolume, Service, ServiceError, VolumeChanges, VolumeFilter, VolumeView,
};

/// The effective project of a request: the path's, else the query's or body's;
/// both given and different is a 400.
pub fn resolve_project(
    path: Option<&str>,
    other: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let other = other.filter(|s| !s.is_empty());
    let chosen = match (path, other) {
        (Some(p), Some(o)) if p != o => {
            return Err(ApiError::BadRequest(format!(
                "projectName {:?} contradicts the path's project {:?}",
                truncate(o),
                truncate(p)
            )))
        }
        (Some(p), _) => Some(p),
        (None, o) => o,
    };
    if let Some(p) = chosen {
        rules::check_name("projectName", p).map_err(ApiError::BadRequest)?;
    }
    Ok(chosen.map(str::to_owned))
}

/// The project to create in or list: explicit, or `default` for cluster admins.
pub fn required_project(caller: &Principal, project: Option<String>) -> Result<String, ApiError> {
    rules::project_or_default(project, caller.is_cluster_admin()).map_err(ApiError::BadRequest)
}

/// 403 unless the caller may read (or, with `write`, change) `project`.
pub fn authorize(caller: &Principal, project: &str, write: bool) -> Result<(), ApiError> {
    let allowed = if write {
        caller.can_write(project)
    } else {
        caller.can_read(project)
    };
    if allowed {
        Ok(())
    } else {
        let verb = if write { "change" } else { "read" };
        Err(ApiError::PermissionDenied(format!(
            "{} may not {verb} resources of project {project:?}",
            caller.subject
        )))
    }
}

fn dto(s: &Service, view: &VolumeView) -> VolumeDto {
    convert::volume(view, &s.control().node_info().uuid.to_string())
}

/// Finds the volume a request names (UUID in the path, or `name` when the path is
/// not a UUID) and checks the caller's access.
fn locate(
    s: &Service,
    caller: &Principal,
    project: Option<&str>,
    id: &str,
    name: Option<&str>,
    write: bool,
) -> Result<VolumeView, ApiError> {
    let view = match (Uuid::parse_str(id), name) {
        (Ok(uuid), _) => s.volume(uuid)?,
        (Err(_), Some(name)) => {
            rules::check_name("name", name).map_err(ApiError::BadRequest)?;
            let p = required_project(caller, project.map(str::to_owned))?;
            s.volume_by_name(&p, name)?
        }
        (Err(_), None) => {
            return Err(ApiError::BadRequest(format!(
                "volume UUID {:?} is not a valid UUID",
                truncate(id)
            )))
        }
    };
    if project.is_some_and(|p| p != view.record.project) {
        return Err(ServiceError::NotFound {
            what: "volume",
            id: id.to_owned(),
        }
        .into());
    }
    authorize(caller, &view.record.project, write)?;
    Ok(view)
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
    let filter = VolumeFilter {
        project: project.clone(),
        uuid: q.uuid("UUID")?,
        name: q.name(&["name"])?,
        offset: q.uuid("offsetUUID")?,
        limit: q.count("limit")?.filter(|l| *l > 0),
        source_snapshot: q.uuid("snapshotUUID")?,
        show_all: q.flag("showAll")?.unwrap_or(false),
    };
    blocking(&state, move |s| {
        if let Some(p) = &project {
            authorize(&caller, p, false)?;
            s.require_project(p)?;
        }
        let volumes = s.volumes(&filter).iter().map(|v| dto(s, v)).collect();
        Ok(Json(VolumeListDto { volumes }).into_response())
    })
    .await
}

async fn lookup_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    q: QueryParams,
) -> Result<Response, ApiError> {
    let Some(name) = q.name(&["name", "Name"])? else {
        return list_core(state, caller, path, q).await;
    };
    let project = required_project(
        &caller,
        resolve_project(path.as_deref(), q.text("projectName"))?,
    )?;
    blocking(&state, move |s| {
        authorize(&caller, &project, false)?;
        let view = s.volume_by_name(&project, &name)?;
        Ok(Json(dto(s, &view)).into_response())
    })
    .await
}

async fn create_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    body: Body,
) -> Result<Json<VolumeDto>, ApiError> {
    let req: CreateVolumeRequest = body.json()?;
    let project = required_project(
        &caller,
        resolve_project(path.as_deref(), req.project_name.as_deref())?,
    )?;
    authorize(&caller, &project, true)?;
    let name = rules::required("name", req.name).map_err(ApiError::BadRequest)?;
    let source_snapshot = match req
        .source_snapshot_uuid
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(s) => Some(parse_uuid("sourceSnapshotUUID", s)?),
        None => None,
    };
    let qos_policy = qos_reference(
        "qosPolicyName",
        req.qos_policy_name,
        "qosPolicyUUID",
        req.qos_policy_uuid,
    )?;
    let source_snapshot_name = req.source_snapshot_name.filter(|s| !s.is_empty());
    if let Some(name) = &source_snapshot_name {
        crate::domain::rules::check_name("sourceSnapshotName", name)
            .map_err(ApiError::BadRequest)?;
    }
    if req.size.is_none() && source_snapshot.is_none() && source_snapshot_name.is_none() {
        return Err(ApiError::BadRequest(rules::mandatory("size")));
    }
    let new = NewVolume {
        name,
        project,
        size_bytes: req.size,
        sector_size_bytes: req.sector_size,
        replica_count: req.replica_count,
        compression: req.compression,
        acl: req.acl.map(|a| a.values),
        ip_acl: req.ip_acl.map(|a| a.values),
        qos_policy,
        labels: req.labels.map(convert::labels_in).unwrap_or_default(),
        source_snapshot,
        source_snapshot_name,
        source_volume: None,
        uuid: None,
        volume_type: None,
    };
    blocking(&state, move |s| {
        let view = s.create_volume(new)?;
        Ok(Json(dto(s, &view)))
    })
    .await
}

async fn get_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
    q: QueryParams,
) -> Result<Json<VolumeDto>, ApiError> {
    let project = resolve_project(path_project.as_deref(), q.text("projectName"))?;
    let id = path.get("UUID")?.to_owned();
    let name = q.name(&["name"])?;
    blocking(&state, move |s| {
        let view = locate(s, &caller, project.as_deref(), &id, name.as_deref(), false)?;
        Ok(Json(dto(s, &view)))
    })
    .await
}

async fn update_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<VolumeDto>, ApiError> {
    let req: UpdateVolumeRequest = body.json()?;
    let project = resolve_project(path_project.as_deref(), req.project_name.as_deref())?;
    let id = path.get("UUID")?.to_owned();
    if let (Some(body_uuid), Ok(path_uuid)) = (
        req.uuid.as_deref().filter(|s| !s.is_empty()),
        Uuid::parse_str(&id),
    ) {
        if parse_uuid("UUID", body_uuid)? != path_uuid {
            return Err(ApiError::BadRequest(
                "the body's UUID differs from the path's".to_owned(),
            ));
        }
    }
    let etag = expected_etag(&headers, req.etag.as_deref())?;
    let qos_policy = qos_reference(
        "qosPolicyName",
        req.qos_policy_name,
        "qosPolicyUUID",
        req.qos_policy_uuid,
    )?;
    let changes = VolumeChanges {
        size_bytes: req.size,
        compression: req.compression,
        acl: req.acl.map(|a| a.values),
        ip_acl: req.ip_acl.map(|a| a.values),
        qos_policy,
        labels: req.labels.map(convert::labels_in),
    };
    let name = req.name;
    blocking(&state, move |s| {
        let view = locate(s, &caller, project.as_deref(), &id, name.as_deref(), true)?;
        let updated = s.update_volume(view.record.uuid, changes, etag.as_deref())?;
        Ok(Json(dto(s, &updated)))
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
    let name = q.name(&["name"])?;
    let etag = if_match(&headers)?;
    blocking(&state, move |s| {
        let view = locate(s, &caller, project.as_deref(), &id, name.as_deref(), true)?;
        s.delete_volume(view.record.uuid, etag.as_deref())?;
        Ok(Json(EmptyDto {}))
    })
    .await
}

async fn rollback_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
    body: Body,
) -> Result<Json<VolumeDto>, ApiError> {
    let req: RollbackRequest = body.json()?;
    let project = resolve_project(path_project.as_deref(), req.project_name.as_deref())?;
    let id = path.get("UUID")?.to_owned();
    let snapshot = parse_uuid(
        "srcSnapshotUUID",
        req.src_snapshot_uuid
            .as_deref()
            .ok_or_else(|| ApiError::BadRequest(rules::mandatory("srcSnapshotUUID")))?,
    )?;
    blocking(&state, move |s| {
        let view = locate(s, &caller, project.as_deref(), &id, None, true)?;
        let rolled = s.rollback_volume(view.record.uuid, snapshot)?;
        Ok(Json(dto(s, &rolled)))
    })
    .await
}

/// List volumes (filters `UUID`, `name`, `offsetUUID`, `limit`, `projectName`,
/// `snapshotUUID`, `showAll`).
#[utoipa::path(get, path = "/api/v2/volumes", tag = "volumes",
    params(
        ("UUID" = Option<String>, Query, description = "Only the volume with this UUID"),
        ("name" = Option<String>, Query, description = "Only volumes with this name"),
        ("offsetUUID" = Option<String>, Query, description = "Start after this UUID"),
        ("limit" = Option<u32>, Query, description = "At most this many (default and maximum 1000)"),
        ("projectName" = Option<String>, Query, description = "Only this project (mandatory unless cluster admin)"),
        ("snapshotUUID" = Option<String>, Query, description = "Only clones of this snapshot"),
        ("showAll" = Option<bool>, Query, description = "Include Deleting volumes"),
    ),
    responses((status = 200, body = VolumeListDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Response, ApiError> {
    list_core(state, caller, path.project(), q).await
}

/// Look a volume up by name (`?name=`): one object or 404; without a name, the list.
#[utoipa::path(get, path = "/api/v2/volumes/", tag = "volumes",
    params(("name" = Option<String>, Query, description = "Volume name"), ("projectName" = Option<String>, Query, description = "Project")),
    responses((status = 200, body = VolumeDto), (status = 404, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn lookup(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Response, ApiError> {
    lookup_core(state, caller, path.project(), q).await
}

/// Create a volume (or a thin clone with `sourceSnapshotUUID`).
#[utoipa::path(post, path = "/api/v2/volumes", tag = "volumes", request_body = CreateVolumeRequest,
    responses((status = 200, body = VolumeDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 507, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    body: Body,
) -> Result<Json<VolumeDto>, ApiError> {
    create_core(state, caller, path.project(), body).await
}

/// Get a volume by UUID (or by `name` when the path is not a UUID).
#[utoipa::path(get, path = "/api/v2/volumes/{UUID}", tag = "volumes",
    params(("UUID" = String, Path, description = "Volume UUID"), ("name" = Option<String>, Query, description = "Volume name"),
        ("projectName" = Option<String>, Query, description = "Project")),
    responses((status = 200, body = VolumeDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Json<VolumeDto>, ApiError> {
    get_core(state, caller, path.project(), path, q).await
}

/// Update a volume: size (grow), compression, ACL, IP ACL, QoS policy, labels.
/// `If-Match` or the body's `ETag` must match when given.
#[utoipa::path(put, path = "/api/v2/volumes/{UUID}", tag = "volumes", request_body = UpdateVolumeRequest,
    params(("UUID" = String, Path, description = "Volume UUID")),
    responses((status = 200, body = VolumeDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<VolumeDto>, ApiError> {
    update_core(state, caller, path.project(), path, headers, body).await
}

/// Delete a volume: state Deleting until done, then 404.
#[utoipa::path(delete, path = "/api/v2/volumes/{UUID}", tag = "volumes",
    params(("UUID" = String, Path, description = "Volume UUID"), ("projectName" = Option<String>, Query, description = "Project")),
    responses((status = 200, body = EmptyDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 412, body = ErrorBody), (status = 503, body = ErrorBody)),
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

/// Roll a volume back to one of its snapshots.
#[utoipa::path(put, path = "/api/v2/volumes/{UUID}/rollback", tag = "volumes", request_body = RollbackRequest,
    params(("UUID" = String, Path, description = "Volume UUID")),
    responses((status = 200, body = VolumeDto), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn rollback(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    body: Body,
) -> Result<Json<VolumeDto>, ApiError> {
    rollback_core(state, caller, path.project(), path, body).await
}
