//! Volume transfers (`/os-volume-transfer`, and `/volume-transfers` of
//! 3.55): a project offers a volume, another takes it with the key the
//! offer answered once. The domain's transfers (`service::transfers`) move
//! the volume and its snapshots between Keel projects.

use std::collections::HashMap;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::CinderError;
use super::volumes::{locate, timestamp};
use super::{blocking, element, CinderCaller, CinderJson, CinderPath, Page};
use crate::domain::model::TransferRecord;
use crate::domain::ServiceError;
use crate::http::AppState;

fn summary(t: &TransferRecord) -> Value {
    json!({"id": t.id, "name": t.name, "volume_id": t.volume, "links": []})
}

fn detail(t: &TransferRecord) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "volume_id": t.volume,
        "created_at": timestamp(t.created_at_s),
        "source_project_id": t.source_project,
        "destination_project_id": null,
        "accepted": false,
        "no_snapshots": !t.with_snapshots,
        "links": [],
    })
}

fn transfer_error(err: ServiceError) -> CinderError {
    CinderError::from_named(err, "transfer", "Transfer")
}

/// The offer `id` as the caller may see it: its own project's, or any for
/// an administrator.
fn visible(
    s: &crate::domain::Service,
    caller: &CinderCaller,
    project: &str,
    id: uuid::Uuid,
) -> Result<TransferRecord, CinderError> {
    let t = s.transfer(id).map_err(transfer_error)?;
    if t.source_project == project || caller.principal.is_cluster_admin() {
        Ok(t)
    } else {
        Err(CinderError::not_found(format!(
            "Transfer {id} could not be found."
        )))
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateBody {
    transfer: Option<CreateTransfer>,
}

#[derive(Debug, Deserialize)]
struct CreateTransfer {
    volume_id: Option<String>,
    name: Option<String>,
    #[serde(default)]
    no_snapshots: bool,
}

/// `POST .../volume-transfers`: offers a volume; the key is in this answer
/// only.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<CreateBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let t = element(body.transfer, "transfer")?;
    let volume = t.volume_id.ok_or_else(|| {
        CinderError::bad_request("Missing required element 'volume_id' in request body.")
    })?;
    let volume = super::parse_id("Volume", &volume)?;
    blocking(&state, move |s| {
        locate(s, &project, volume)?;
        let (record, key) = s
            .create_transfer(
                volume,
                t.name.as_deref().unwrap_or_default(),
                !t.no_snapshots,
            )
            .map_err(transfer_error)?;
        let mut body = detail(&record);
        body["auth_key"] = json!(key);
        Ok((StatusCode::ACCEPTED, Json(json!({"transfer": body}))).into_response())
    })
    .await
}

/// `GET .../volume-transfers` and, with `DETAILED`, its `/detail`.
pub(super) async fn list<const DETAILED: bool>(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let page = Page::parse(&query)?;
    let all = caller.principal.is_cluster_admin()
        && query
            .get("all_tenants")
            .is_some_and(|v| v != "0" && !v.eq_ignore_ascii_case("false"));
    blocking(&state, move |s| {
        let mine: Vec<TransferRecord> = s
            .transfers()
            .into_iter()
            .filter(|t| all || t.source_project == project)
            .collect();
        let shown: Vec<Value> = page
            .apply(mine, |t| t.id)
            .iter()
            .map(|t| if DETAILED { detail(t) } else { summary(t) })
            .collect();
        Ok(Json(json!({"transfers": shown})).into_response())
    })
    .await
}

/// `GET .../volume-transfers/{transfer_id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let id = path.id("transfer_id", "Transfer")?;
    blocking(&state, move |s| {
        let t = visible(s, &caller, &project, id)?;
        Ok(Json(json!({"transfer": detail(&t)})).into_response())
    })
    .await
}

/// `DELETE .../volume-transfers/{transfer_id}`: withdraws the offer.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("transfer_id", "Transfer")?;
    blocking(&state, move |s| {
        visible(s, &caller, &project, id)?;
        s.cancel_transfer(id).map_err(transfer_error)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct AcceptBody {
    accept: Option<Accept>,
}

#[derive(Debug, Deserialize)]
struct Accept {
    auth_key: Option<String>,
}

/// `POST .../volume-transfers/{transfer_id}/accept`: the caller's project
/// takes the volume.
pub(super) async fn accept(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<AcceptBody>,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id("transfer_id", "Transfer")?;
    let key = element(body.accept, "accept")?.auth_key.ok_or_else(|| {
        CinderError::bad_request("Missing required element 'auth_key' in request body.")
    })?;
    blocking(&state, move |s| {
        let t = s.accept_transfer(id, &key, &project).map_err(|e| match e {
            ServiceError::InvalidArgument(m) if m.contains("authorization key") => {
                CinderError::bad_request(format!("Invalid auth key: {m}"))
            }
            other => transfer_error(other),
        })?;
        Ok((StatusCode::ACCEPTED, Json(json!({"transfer": summary(&t)}))).into_response())
    })
    .await
}
