//! QoS policy routes: flat (`/api/v2/qosPolicies...`, a project in the query
//! or body) and project-scoped (`/api/v2/projects/{projectName}/qosPolicies...`),
//! plus the one place a request's `qosPolicyName`/`qosPolicyUUID` pair
//! becomes a [`QosPolicyRef`].
//!
//! Only a cluster admin creates, changes or deletes policies (as in
//! Lightbits); a project's readers see its own policies and the global ones.

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use uuid::Uuid;

use super::convert;
use super::dto::{
    CreateQosPolicyRequest, EmptyDto, ErrorBody, QosPolicyDto, QosPolicyListDto,
    UpdateQosPolicyRequest,
};
use super::error::ApiError;
use super::extract::{expected_etag, if_match, parse_uuid, Body, Caller, PathParams, QueryParams};
use super::volumes::{authorize, resolve_project};
use super::{blocking, AppState};
use crate::auth::Principal;
use crate::domain::model::QosPolicyRecord;
use crate::domain::{rules, NewQosPolicy, QosPolicyChanges, QosPolicyRef, Service, ServiceError};

/// The QoS policy a request's name and UUID fields name, if any (nulls,
/// which clients send when unused, and an empty UUID count as absent; an
/// empty name is an illegal name).
pub fn qos_reference(
    name_field: &str,
    name: Option<String>,
    uuid_field: &str,
    uuid: Option<String>,
) -> Result<Option<QosPolicyRef>, ApiError> {
    if let Some(n) = &name {
        rules::check_name(name_field, n).map_err(ApiError::BadRequest)?;
    }
    let uuid = uuid
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| parse_uuid(uuid_field, u))
        .transpose()?;
    Ok(match (name, uuid) {
        (None, None) => None,
        (Some(n), None) => Some(QosPolicyRef::Name(n)),
        (None, Some(u)) => Some(QosPolicyRef::Uuid(u)),
        (Some(n), Some(u)) => Some(QosPolicyRef::Both(n, u)),
    })
}

fn admin_only(caller: &Principal, verb: &str) -> Result<(), ApiError> {
    if caller.is_cluster_admin() {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(format!(
            "only a cluster admin may {verb} QoS policies"
        )))
    }
}

/// The policy `id` names, as `caller` may see it under `project` (a policy
/// outside the path's project is not found there).
fn locate(
    s: &Service,
    caller: &Principal,
    project: Option<&str>,
    id: &str,
) -> Result<QosPolicyRecord, ApiError> {
    let policy = match Uuid::parse_str(id) {
        Ok(uuid) => s.qos_policy(uuid)?,
        Err(_) => {
            rules::check_name("QoS policy", id).map_err(ApiError::BadRequest)?;
            s.qos_policy_by_name(id)?
        }
    };
    let visible = match (project, &policy.project) {
        (Some(path), Some(own)) => path == own,
        (Some(_), None) | (None, _) => true,
    };
    if !visible {
        return Err(ServiceError::NotFound {
            what: "QoS policy",
            id: id.to_owned(),
        }
        .into());
    }
    if let Some(own) = &policy.project {
        authorize(caller, own, false)?;
    }
    Ok(policy)
}

async fn list_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    q: QueryParams,
) -> Result<Json<QosPolicyListDto>, ApiError> {
    let project = resolve_project(path.as_deref(), q.text("projectName"))?;
    blocking(&state, move |s| {
        if let Some(p) = &project {
            authorize(&caller, p, false)?;
            s.require_project(p)?;
        }
        let qos_policies = s
            .qos_policies(project.as_deref())
            .iter()
            .filter(|p| p.project.as_deref().is_none_or(|own| caller.can_read(own)))
            .map(convert::qos_policy)
            .collect();
        Ok(Json(QosPolicyListDto { qos_policies }))
    })
    .await
}

async fn create_core(
    state: AppState,
    caller: Principal,
    path: Option<String>,
    body: Body,
) -> Result<Json<QosPolicyDto>, ApiError> {
    admin_only(&caller, "create")?;
    let req: CreateQosPolicyRequest = body.json()?;
    let project = resolve_project(path.as_deref(), req.project_name.as_deref())?;
    let name = rules::required("name", req.name).map_err(ApiError::BadRequest)?;
    let limit = rules::required("limit", req.limit).map_err(ApiError::BadRequest)?;
    let (scale, rates) = convert::qos_limit_in(&limit).map_err(ApiError::BadRequest)?;
    blocking(&state, move |s| {
        let policy = s.create_qos_policy(NewQosPolicy {
            name,
            description: req.description.unwrap_or_default(),
            project,
            scale,
            rates,
        })?;
        Ok(Json(convert::qos_policy(&policy)))
    })
    .await
}

async fn get_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
) -> Result<Json<QosPolicyDto>, ApiError> {
    let id = path.get("UUID")?.to_owned();
    blocking(&state, move |s| {
        let policy = locate(s, &caller, path_project.as_deref(), &id)?;
        Ok(Json(convert::qos_policy(&policy)))
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
) -> Result<Json<QosPolicyDto>, ApiError> {
    admin_only(&caller, "change")?;
    let req: UpdateQosPolicyRequest = body.json()?;
    let id = path.get("UUID")?.to_owned();
    let limits = req
        .limit
        .as_ref()
        .map(convert::qos_limit_in)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let etag = expected_etag(&headers, req.etag.as_deref())?;
    let body_uuid = req
        .uuid
        .as_deref()
        .filter(|u| !u.is_empty())
        .map(|u| parse_uuid("UUID", u))
        .transpose()?;
    let body_project = req.project_name.clone().filter(|p| !p.is_empty());
    blocking(&state, move |s| {
        let policy = locate(s, &caller, path_project.as_deref(), &id)?;
        if body_uuid.is_some_and(|u| u != policy.uuid) {
            return Err(ApiError::BadRequest(
                "the body's UUID differs from the path's".to_owned(),
            ));
        }
        if body_project.is_some() && body_project != policy.project {
            return Err(ApiError::BadRequest(
                "a QoS policy's project cannot change".to_owned(),
            ));
        }
        let updated = s.update_qos_policy(
            policy.uuid,
            QosPolicyChanges {
                description: req.description,
                limits,
            },
            etag.as_deref(),
        )?;
        Ok(Json(convert::qos_policy(&updated)))
    })
    .await
}

async fn delete_core(
    state: AppState,
    caller: Principal,
    path_project: Option<String>,
    path: PathParams,
    headers: HeaderMap,
) -> Result<Json<EmptyDto>, ApiError> {
    admin_only(&caller, "delete")?;
    let id = path.get("UUID")?.to_owned();
    let etag = if_match(&headers)?;
    blocking(&state, move |s| {
        let policy = locate(s, &caller, path_project.as_deref(), &id)?;
        s.delete_qos_policy(policy.uuid, etag.as_deref())?;
        Ok(Json(EmptyDto {}))
    })
    .await
}

/// List QoS policies: every one, or those a project's volumes may use
/// (`projectName`: its own and the global ones).
#[utoipa::path(get, path = "/api/v2/qosPolicies", tag = "qos",
    params(("projectName" = Option<String>, Query, description = "Only policies this project may use")),
    responses((status = 200, body = QosPolicyListDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    q: QueryParams,
) -> Result<Json<QosPolicyListDto>, ApiError> {
    list_core(state, caller, path.project(), q).await
}

/// Create a QoS policy (cluster admin only); global unless `projectName` is given.
#[utoipa::path(post, path = "/api/v2/qosPolicies", tag = "qos", request_body = CreateQosPolicyRequest,
    responses((status = 200, body = QosPolicyDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    body: Body,
) -> Result<Json<QosPolicyDto>, ApiError> {
    create_core(state, caller, path.project(), body).await
}

/// Get a QoS policy by UUID (or by name in place of the UUID).
#[utoipa::path(get, path = "/api/v2/qosPolicies/{UUID}", tag = "qos",
    params(("UUID" = String, Path, description = "Policy UUID or name")),
    responses((status = 200, body = QosPolicyDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
) -> Result<Json<QosPolicyDto>, ApiError> {
    get_core(state, caller, path.project(), path).await
}

/// Change a QoS policy (cluster admin only); new rates reach every volume
/// under it before the answer.
#[utoipa::path(put, path = "/api/v2/qosPolicies/{UUID}", tag = "qos", request_body = UpdateQosPolicyRequest,
    params(("UUID" = String, Path, description = "Policy UUID or name")),
    responses((status = 200, body = QosPolicyDto), (status = 400, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<QosPolicyDto>, ApiError> {
    update_core(state, caller, path.project(), path, headers, body).await
}

/// Delete a QoS policy no volume or project uses (cluster admin only; 409
/// while in use).
#[utoipa::path(delete, path = "/api/v2/qosPolicies/{UUID}", tag = "qos",
    params(("UUID" = String, Path, description = "Policy UUID or name")),
    responses((status = 200, body = EmptyDto), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 412, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    headers: HeaderMap,
) -> Result<Json<EmptyDto>, ApiError> {
    delete_core(state, caller, path.project(), path, headers).await
}
