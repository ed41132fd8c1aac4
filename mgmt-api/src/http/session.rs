//! Login, users and service credentials.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::Json;
use base64::Engine as _;

use super::dto::{
    CreateCredentialRequest, CreateUserRequest, CredentialDto, CredentialListDto, EmptyDto,
    ErrorBody, LoginResponse, UserDto,
};
use super::error::ApiError;
use super::extract::{Body, Caller, ClientAddr, PathParams};
use super::AppState;
use crate::auth::{AuthError, Principal, Role};

pub(crate) fn require_cluster_admin(caller: &Principal) -> Result<(), ApiError> {
    if caller.is_cluster_admin() {
        Ok(())
    } else {
        Err(ApiError::PermissionDenied(
            "only a cluster admin may do this".to_owned(),
        ))
    }
}

/// Runs auth work that may hash a password in a bounded hash slot
/// (`auth::gate`).
async fn auth_hashing<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&crate::auth::Authenticator) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    state
        .auth
        .with_hash_slot(work)
        .await
        .map_err(ApiError::from)
}

async fn auth_blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&crate::auth::Authenticator) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, ApiError> {
    let auth = Arc::clone(&state.auth);
    tokio::task::spawn_blocking(move || work(&auth))
        .await
        .map_err(|e| ApiError::Internal(format!("auth task failed: {e}")))?
        .map_err(ApiError::from)
}

/// Log in with HTTP Basic credentials; returns a bearer token. A client that
/// failed too often in a row gets 429 until its lockout ends (Retry-After), and
/// when too many logins wait for a password check the excess gets 503.
#[utoipa::path(post, path = "/login", tag = "auth",
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("basic" = [])))]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(client): ClientAddr,
    headers: HeaderMap,
) -> Result<Json<LoginResponse>, ApiError> {
    let unauthenticated = |m: &str| ApiError::Auth(AuthError::Unauthenticated(m.to_owned()));
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| {
            unauthenticated("missing Authorization: Basic <base64(user:password)> header")
        })?
        .to_str()
        .map_err(|_| unauthenticated("the Authorization header is not ASCII"))?;
    let encoded = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("basic") => rest.trim(),
        _ => {
            return Err(unauthenticated(
                "expected Authorization: Basic <base64(user:password)>",
            ))
        }
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| unauthenticated("the Basic credentials are not valid base64 UTF-8"))?;
    let (user, password) = decoded
        .split_once(':')
        .ok_or_else(|| unauthenticated("the Basic credentials lack a ':'"))?;
    let (user, password) = (user.to_owned(), password.to_owned());
    let ttl = state.auth.token_ttl().as_secs();
    let token = state.auth.login_from(client, user, password).await?;
    Ok(Json(LoginResponse {
        token_type: "Bearer".to_owned(),
        expires_in: ttl.to_string(),
        id_token: token,
    }))
}

/// Create a user (cluster admin only).
#[utoipa::path(post, path = "/api/v2/users", tag = "auth", request_body = CreateUserRequest,
    responses((status = 200, body = UserDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_user(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Body,
) -> Result<Json<UserDto>, ApiError> {
    require_cluster_admin(&caller)?;
    let req: CreateUserRequest = body.json()?;
    if let Some(p) = req.project_name.as_deref() {
        crate::domain::rules::check_name("projectName", p).map_err(ApiError::BadRequest)?;
    }
    let role = Role::from_name(&req.role, req.project_name.as_deref()).ok_or_else(|| {
        ApiError::BadRequest(
            "role must be ClusterAdmin, or ProjectAdmin/ProjectViewer with projectName".to_owned(),
        )
    })?;
    if let Some(p) = role_project(&role) {
        let p = p.to_owned();
        super::blocking(&state, move |s| {
            s.require_project(&p).map_err(ApiError::from)
        })
        .await?;
    }
    let claim = role.claim();
    let name = req.name.clone();
    auth_hashing(&state, move |a| {
        a.create_user(&req.name, &req.password, role)
    })
    .await?;
    Ok(Json(UserDto { name, role: claim }))
}

fn role_project(role: &Role) -> Option<&str> {
    match role {
        Role::ClusterAdmin => None,
        Role::ProjectAdmin(p) | Role::ProjectViewer(p) => Some(p),
    }
}

/// List registered service credentials (cluster admin only).
#[utoipa::path(get, path = "/api/v2/credentials", tag = "auth",
    responses((status = 200, body = CredentialListDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_credentials(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<CredentialListDto>, ApiError> {
    require_cluster_admin(&caller)?;
    let credentials = state
        .auth
        .credentials()
        .into_iter()
        .map(|c| CredentialDto {
            id: c.id,
            project_name: c.project,
            kind: c.kind,
        })
        .collect();
    Ok(Json(CredentialListDto { credentials }))
}

/// Register another service's public key; its tokens (with `kid` = id) are accepted.
#[utoipa::path(post, path = "/api/v2/credentials", tag = "auth", request_body = CreateCredentialRequest,
    responses((status = 200, body = CredentialDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Body,
) -> Result<Json<CredentialDto>, ApiError> {
    require_cluster_admin(&caller)?;
    let req: CreateCredentialRequest = body.json()?;
    let info = auth_blocking(&state, move |a| {
        a.create_credential(&req.id, &req.project_name, &req.kind, &req.key)
    })
    .await?;
    Ok(Json(CredentialDto {
        id: info.id,
        project_name: info.project,
        kind: info.kind,
    }))
}

/// Remove a service credential.
#[utoipa::path(delete, path = "/api/v2/credentials/{id}", tag = "auth",
    params(("id" = String, Path, description = "Credential id")),
    responses((status = 200, body = EmptyDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn delete_credential(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
) -> Result<Json<EmptyDto>, ApiError> {
    require_cluster_admin(&caller)?;
    let id = path.get("id")?.to_owned();
    auth_blocking(&state, move |a| a.delete_credential(&id)).await?;
    Ok(Json(EmptyDto {}))
}
