//! The OpenStack Cinder v3 dialect (seed 004, microversions 3.0 to 3.70)
//! over the domain service: the versions document, volumes (create, also
//! from a snapshot or another volume; list, detail, show, update, delete,
//! extend), snapshots, the volume actions a compute host's attach needs
//! (reserve, initialize/terminate connection with NVMe-oF connection info
//! os-brick understands, attach, detach, begin/roll detaching, reset
//! status), revert, retype, force delete and detach, the read-only and
//! bootable flags and image metadata, the attachments API, volume types
//! with extra specs and access, and QoS specs (Keel's QoS policies).
//!
//! Routes sit beside the Lightbits ones on the main listener, under `/v3`
//! (with and without the project id, 3.67) and `/`. A project id is a
//! Keel project name. Sizes are GiB. Callers authenticate with
//! `X-Auth-Token`: a Keel token, or, when keeld runs with Cinder's noauth
//! mode (`api.cinder_noauth`), `user:project` as Cinder's noauth accepts
//! (every such caller is an administrator, as in Cinder).
//!
//! Every answer carries `OpenStack-API-Version: volume <version>`; a request
//! naming a version outside 3.0–3.70 gets 406.

mod actions;
mod attachments;
mod backend;
mod default_types;
pub mod error;
mod facts;
mod manage;
mod metadata;
mod qos_specs;
mod snapshots;
mod transfers;
mod types;
mod versions;
mod volume_ops;
mod volumes;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;

use crate::auth::{Principal, Role};
use crate::domain::model::DEFAULT_PROJECT;
use crate::domain::Service;
use crate::http::extract::Body;
use crate::http::AppState;
use error::CinderError;

/// Lowest and highest microversions served.
pub const MIN_VERSION: (u32, u32) = (3, 0);
/// See [`MIN_VERSION`].
pub const MAX_VERSION: (u32, u32) = (3, 70);

const VERSION_HEADER: &str = "openstack-api-version";

/// 2^30 bytes: Cinder sizes are GiB.
const GIB: u64 = 1 << 30;

/// The microversion a request asked for (`OpenStack-API-Version: volume
/// 3.x`, or the legacy `X-OpenStack-Volume-API-Version`), 3.0 without one.
fn requested_version(parts: &axum::http::HeaderMap) -> Result<(u32, u32), CinderError> {
    let header = parts
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.trim()
                .strip_prefix("volume")
                .map(str::trim)
                .unwrap_or(v.trim())
                .to_owned()
        })
        .or_else(|| {
            parts
                .get("x-openstack-volume-api-version")
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
        });
    let Some(text) = header else {
        return Ok(MIN_VERSION);
    };
    if text.eq_ignore_ascii_case("latest") {
        return Ok(MAX_VERSION);
    }
    let parsed = text
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse::<u32>().ok()?, minor.parse::<u32>().ok()?)));
    match parsed {
        Some(v) if v >= MIN_VERSION && v <= MAX_VERSION => Ok(v),
        Some(_) => Err(CinderError::new(
            StatusCode::NOT_ACCEPTABLE,
            format!(
                "Version {text} is not supported by the API. Minimum is {}.{} and maximum is {}.{}.",
                MIN_VERSION.0, MIN_VERSION.1, MAX_VERSION.0, MAX_VERSION.1
            ),
        )),
        None => Err(CinderError::bad_request(format!(
            "Invalid API version request string {text:?}"
        ))),
    }
}

/// The microversion a request is served at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct ApiVersion(pub (u32, u32));

/// Negotiates the microversion: 406 outside the served range; the answer
/// names the version it was served at.
async fn negotiate(req: Request, next: Next) -> Response {
    use axum::response::IntoResponse;
    let version = match requested_version(req.headers()) {
        Ok(v) => v,
        Err(err) => return err.into_response(),
    };
    let mut req = req;
    req.extensions_mut().insert(ApiVersion(version));
    let mut resp = next.run(req).await;
    let headers = resp.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&format!("volume {}.{}", version.0, version.1)) {
        headers.insert(VERSION_HEADER, value);
    }
    headers.insert("vary", HeaderValue::from_static(VERSION_HEADER));
    resp
}

/// The authenticated caller and the project its token names (noauth).
struct CinderCaller {
    principal: Principal,
    token_project: Option<String>,
}

impl FromRequestParts<AppState> for CinderCaller {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, CinderError> {
        if state.auth.disabled() {
            return Ok(CinderCaller {
                principal: Principal::anonymous_admin(),
                token_project: None,
            });
        }
        let token = parts
            .headers
            .get("x-auth-token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .or_else(|| {
                parts
                    .headers
                    .get(axum::http::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        v.strip_prefix("Bearer ")
                            .or_else(|| v.strip_prefix("bearer "))
                    })
                    .map(str::trim)
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| CinderError::new(StatusCode::UNAUTHORIZED, "no X-Auth-Token header"))?;
        if state.cinder_noauth {
            if let Some((user, project)) = token.split_once(':') {
                return Ok(CinderCaller {
                    principal: Principal {
                        subject: user.to_owned(),
                        role: Role::ClusterAdmin,
                    },
                    token_project: Some(project.to_owned()).filter(|p| !p.is_empty()),
                });
            }
        }
        let principal = state
            .auth
            .verify(token)
            .map_err(|e| CinderError::new(StatusCode::UNAUTHORIZED, e.to_string()))?;
        let token_project = principal.project().map(str::to_owned);
        Ok(CinderCaller {
            principal,
            token_project,
        })
    }
}

impl CinderCaller {
    /// Fails unless the caller administers the cluster (types, QoS specs).
    fn require_admin(&self) -> Result<(), CinderError> {
        if self.principal.is_cluster_admin() {
            Ok(())
        } else {
            Err(CinderError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Policy doesn't allow {} to administer the cluster",
                    self.principal.subject
                ),
            ))
        }
    }

    /// The project a request acts on: the path's, else the token's, else
    /// the default project; the caller must be allowed to read it (or, with
    /// `write`, change it).
    fn project(&self, path: Option<&str>, write: bool) -> Result<String, CinderError> {
        let project = path
            .map(str::to_owned)
            .or_else(|| self.token_project.clone())
            .unwrap_or_else(|| DEFAULT_PROJECT.to_owned());
        let allowed = if write {
            self.principal.can_write(&project)
        } else {
            self.principal.can_read(&project)
        };
        if allowed {
            Ok(project)
        } else {
            Err(CinderError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "Policy doesn't allow {} on project {project}",
                    self.principal.subject
                ),
            ))
        }
    }
}

/// A JSON body, refused with `badRequest`.
struct CinderJson<T>(T);

impl<T: DeserializeOwned> FromRequest<AppState> for CinderJson<T> {
    type Rejection = CinderError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, CinderError> {
        let body = Body::from_request(req, state)
            .await
            .map_err(CinderError::from)?;
        body.json().map(CinderJson).map_err(CinderError::from)
    }
}

/// Runs blocking domain work off the executor.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    work: impl FnOnce(&Service) -> Result<T, CinderError> + Send + 'static,
) -> Result<T, CinderError> {
    let service = std::sync::Arc::clone(&state.service);
    tokio::task::spawn_blocking(move || work(&service))
        .await
        .map_err(|e| {
            CinderError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("request task failed: {e}"),
            )
        })?
}

/// The body's one top-level element, as Cinder requires it.
fn element<T>(value: Option<T>, name: &str) -> Result<T, CinderError> {
    value.ok_or_else(|| {
        CinderError::bad_request(format!(
            "Missing required element '{name}' in request body."
        ))
    })
}

/// `limit` and `marker` (items after that id) of a list call.
struct Page {
    limit: Option<usize>,
    marker: Option<uuid::Uuid>,
}

impl Page {
    fn parse(query: &std::collections::HashMap<String, String>) -> Result<Page, CinderError> {
        Ok(Page {
            limit: query
                .get("limit")
                .map(|l| {
                    l.parse::<usize>().map_err(|_| {
                        CinderError::bad_request(format!("limit {l:?} is not a count"))
                    })
                })
                .transpose()?,
            marker: query
                .get("marker")
                .map(|m| parse_id("marker", m))
                .transpose()?,
        })
    }

    /// `items` in id order, from after the marker, at most `limit`.
    fn apply<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> uuid::Uuid) -> Vec<T> {
        items.sort_by_key(&id);
        if let Some(marker) = self.marker {
            items.retain(|i| id(i) > marker);
        }
        if let Some(limit) = self.limit {
            items.truncate(limit);
        }
        items
    }
}

/// Parses an id argument.
fn parse_id(what: &str, text: &str) -> Result<uuid::Uuid, CinderError> {
    text.trim()
        .parse()
        .map_err(|_| CinderError::not_found(format!("{what} {text} could not be found.")))
}

/// The answer to a path under `/v3` that names no operation.
pub fn no_route(path: &str) -> CinderError {
    CinderError::not_found(format!(
        "no such endpoint: {}",
        crate::http::extract::truncate(path)
    ))
}

/// Path parameters: the project id (absent on project-less routes) and the
/// resource id.
struct CinderPath(std::collections::HashMap<String, String>);

impl FromRequestParts<AppState> for CinderPath {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, CinderError> {
        crate::http::extract::PathParams::from_request_parts(parts, state)
            .await
            .map(|p| CinderPath(p.0))
            .map_err(CinderError::from)
    }
}

impl CinderPath {
    fn project(&self) -> Option<&str> {
        self.0.get("project_id").map(String::as_str)
    }

    fn id(&self, name: &str, what: &str) -> Result<uuid::Uuid, CinderError> {
        parse_id(what, self.0.get(name).map_or("", String::as_str))
    }
}

/// The dialect's routes, to merge into the main router.
pub fn routes() -> Router<AppState> {
    let project_routes = Router::new()
        .route("/volumes", get(volumes::list).post(volumes::create))
        .route("/volumes/detail", get(volumes::list_detail))
        .route(
            "/volumes/{volume_id}",
            get(volumes::show)
                .put(volumes::update)
                .delete(volumes::delete),
        )
        .route("/volumes/{volume_id}/action", post(actions::action))
        .route(
            "/volumes/{volume_id}/metadata",
            get(metadata::get::<metadata::VolumeLabels>)
                .post(metadata::merge::<metadata::VolumeLabels>)
                .put(metadata::replace::<metadata::VolumeLabels>),
        )
        .route(
            "/volumes/{volume_id}/metadata/{key}",
            get(metadata::get::<metadata::VolumeLabels>)
                .put(metadata::replace::<metadata::VolumeLabels>)
                .delete(metadata::delete::<metadata::VolumeLabels>),
        )
        .route(
            "/attachments",
            get(attachments::list).post(attachments::create),
        )
        .route("/attachments/detail", get(attachments::list))
        .route(
            "/attachments/{attachment_id}",
            get(attachments::show)
                .put(attachments::update)
                .delete(attachments::delete),
        )
        .route(
            "/attachments/{attachment_id}/action",
            post(attachments::complete),
        )
        .route("/types", get(types::list).post(types::create))
        .route(
            "/types/{type_id}",
            get(types::show).put(types::update).delete(types::delete),
        )
        .route(
            "/types/{type_id}/extra_specs",
            get(types::get_specs).post(types::set_specs),
        )
        .route(
            "/types/{type_id}/extra_specs/{key}",
            get(types::get_specs)
                .put(types::set_spec)
                .delete(types::delete_spec),
        )
        .route("/types/{type_id}/action", post(types::access_action))
        .route(
            "/types/{type_id}/os-volume-type-access",
            get(types::access_list),
        )
        .route("/qos-specs", get(qos_specs::list).post(qos_specs::create))
        .route(
            "/qos-specs/{qos_id}",
            get(qos_specs::show)
                .put(qos_specs::set_keys)
                .delete(qos_specs::delete),
        )
        .route(
            "/qos-specs/{qos_id}/delete_keys",
            axum::routing::put(qos_specs::delete_keys),
        )
        .route(
            "/qos-specs/{qos_id}/associations",
            get(qos_specs::associations),
        )
        .route("/qos-specs/{qos_id}/associate", get(qos_specs::associate))
        .route(
            "/qos-specs/{qos_id}/disassociate",
            get(qos_specs::disassociate),
        )
        .route(
            "/qos-specs/{qos_id}/disassociate_all",
            get(qos_specs::disassociate_all),
        )
        .route("/os-availability-zone", get(facts::zones))
        .route("/limits", get(facts::limits))
        .route(
            "/os-quota-sets/{target_project}",
            get(facts::get_quota)
                .put(facts::set_quota)
                .delete(facts::delete_quota),
        )
        .route(
            "/os-quota-sets/{target_project}/defaults",
            get(facts::default_quota),
        )
        .route("/os-services", get(facts::services))
        .route(
            "/os-services/{action}",
            axum::routing::put(facts::service_action),
        )
        .route("/extensions", get(backend::extensions))
        .route("/resource_filters", get(backend::resource_filters))
        .route("/scheduler-stats/get_pools", get(backend::pools))
        .route("/capabilities/{hostname}", get(backend::capabilities))
        .route("/os-hosts", get(backend::hosts))
        .route("/os-hosts/{host_name}", get(backend::host))
        .route("/clusters", get(backend::clusters))
        .route("/clusters/detail", get(backend::clusters))
        .route(
            "/os-quota-class-sets/{quota_class_name}",
            get(backend::quota_class).put(backend::set_quota_class),
        )
        .route("/workers/cleanup", post(backend::cleanup))
        .route("/messages", get(facts::messages))
        .route(
            "/messages/{message_id}",
            get(facts::message).delete(facts::message),
        )
        .route("/snapshots/{snapshot_id}/action", post(snapshots::action))
        .route(
            "/snapshots/{snapshot_id}/metadata",
            get(metadata::get::<metadata::SnapshotLabels>)
                .post(metadata::merge::<metadata::SnapshotLabels>)
                .put(metadata::replace::<metadata::SnapshotLabels>),
        )
        .route(
            "/snapshots/{snapshot_id}/metadata/{key}",
            get(metadata::get::<metadata::SnapshotLabels>)
                .put(metadata::replace::<metadata::SnapshotLabels>)
                .delete(metadata::delete::<metadata::SnapshotLabels>),
        )
        .route(
            "/volume-transfers",
            get(transfers::list::<false>).post(transfers::create),
        )
        .route("/volume-transfers/detail", get(transfers::list::<true>))
        .route(
            "/volume-transfers/{transfer_id}",
            get(transfers::show).delete(transfers::delete),
        )
        .route(
            "/volume-transfers/{transfer_id}/accept",
            post(transfers::accept),
        )
        .route(
            "/os-volume-transfer",
            get(transfers::list::<false>).post(transfers::create),
        )
        .route("/os-volume-transfer/detail", get(transfers::list::<true>))
        .route(
            "/os-volume-transfer/{transfer_id}",
            get(transfers::show).delete(transfers::delete),
        )
        .route(
            "/os-volume-transfer/{transfer_id}/accept",
            post(transfers::accept),
        )
        .route("/volumes/summary", get(volumes::totals))
        .route("/os-volume-manage", post(manage::manage))
        .route("/manageable_volumes", get(manage::list::<false>))
        .route("/manageable_volumes/detail", get(manage::list::<true>))
        .route("/snapshots", get(snapshots::list).post(snapshots::create))
        .route("/snapshots/detail", get(snapshots::list_detail))
        .route(
            "/snapshots/{snapshot_id}",
            get(snapshots::show)
                .put(snapshots::update)
                .delete(snapshots::delete),
        );
    Router::new()
        .route("/", get(versions::versions))
        .route("/v3", get(versions::version_v3))
        .route("/v3/", get(versions::version_v3))
        .route("/v3/default-types", get(default_types::list))
        .route(
            "/v3/default-types/{target_project}",
            get(default_types::show)
                .put(default_types::set)
                .delete(default_types::delete),
        )
        .nest("/v3/{project_id}", project_routes.clone())
        .nest("/v3", project_routes)
        .layer(axum::middleware::from_fn(negotiate))
}
