//! The metadata endpoints of volumes and snapshots, one implementation
//! over their labels: metadata is every label but Cinder's own
//! (`cinder.*`), which a metadata write keeps and may not name.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::volumes::OWN_PREFIX;
use super::{blocking, CinderCaller, CinderJson, CinderPath};
use crate::domain::model::Label;
use crate::domain::{Service, VolumeChanges};
use crate::http::AppState;

/// A resource whose labels hold its metadata.
pub(super) trait Labelled: Send + 'static {
    /// The path parameter of its id.
    const PARAM: &'static str;
    /// Its name in messages ("Volume", "Snapshot").
    const WHAT: &'static str;
    /// Its labels, once `project` is found to hold it (404 otherwise).
    fn labels(s: &Service, project: &str, id: Uuid) -> Result<Vec<Label>, CinderError>;
    /// Replaces its labels.
    fn store(s: &Service, id: Uuid, labels: Vec<Label>) -> Result<(), CinderError>;
}

/// Volumes' metadata.
pub(super) struct VolumeLabels;

impl Labelled for VolumeLabels {
    const PARAM: &'static str = "volume_id";
    const WHAT: &'static str = "Volume";

    fn labels(s: &Service, project: &str, id: Uuid) -> Result<Vec<Label>, CinderError> {
        Ok(super::volumes::locate(s, project, id)?.record.labels)
    }

    fn store(s: &Service, id: Uuid, labels: Vec<Label>) -> Result<(), CinderError> {
        s.update_volume(
            id,
            VolumeChanges {
                labels: Some(labels),
                ..VolumeChanges::default()
            },
            None,
        )?;
        Ok(())
    }
}

/// Snapshots' metadata.
pub(super) struct SnapshotLabels;

impl Labelled for SnapshotLabels {
    const PARAM: &'static str = "snapshot_id";
    const WHAT: &'static str = "Snapshot";

    fn labels(s: &Service, project: &str, id: Uuid) -> Result<Vec<Label>, CinderError> {
        super::snapshots::locate_snapshot(s, project, id)?;
        Ok(s.snapshot_labels(id))
    }

    fn store(s: &Service, id: Uuid, labels: Vec<Label>) -> Result<(), CinderError> {
        s.set_snapshot_labels(id, labels)?;
        Ok(())
    }
}

/// Whether a label is Cinder's own rather than metadata.
fn is_own(label: &Label) -> bool {
    label.key.starts_with(OWN_PREFIX)
}

/// The metadata among `labels`.
pub(super) fn metadata_of(labels: &[Label]) -> Map<String, Value> {
    labels
        .iter()
        .filter(|l| !is_own(l))
        .map(|l| (l.key.clone(), Value::String(l.value.clone())))
        .collect()
}

/// Labels with `metadata` (sorted by key) first, then Cinder's own.
pub(super) fn compose(mut metadata: Vec<Label>, own: Vec<Label>) -> Vec<Label> {
    metadata.sort_by(|a, b| a.key.cmp(&b.key));
    metadata.extend(own);
    metadata
}

/// A metadata write's body: `{"metadata": {...}}`, or `{"meta": {k: v}}`
/// for a path naming the key.
#[derive(Debug, Deserialize)]
pub(super) struct MetadataBody {
    metadata: Option<HashMap<String, String>>,
    meta: Option<HashMap<String, String>>,
}

/// The keys a write sets.
fn given(key: Option<&str>, body: MetadataBody) -> Result<HashMap<String, String>, CinderError> {
    match (key, body.metadata, body.meta) {
        (Some(key), _, Some(meta)) if meta.len() == 1 && meta.contains_key(key) => Ok(meta),
        (Some(_), _, _) => Err(CinderError::bad_request(
            "Request body and URI mismatch: give {\"meta\": {key: value}} for the key in the path",
        )),
        (None, Some(m), _) => Ok(m),
        (None, None, _) => Err(CinderError::bad_request(
            "Malformed request body: metadata is missing",
        )),
    }
}

/// `GET .../metadata` and `.../metadata/{key}`.
pub(super) async fn get<T: Labelled>(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), false)?;
    let id = path.id(T::PARAM, T::WHAT)?;
    let key = path.0.get("key").cloned();
    blocking(&state, move |s| {
        let all = metadata_of(&T::labels(s, &project, id)?);
        match key {
            None => Ok(Json(json!({"metadata": all})).into_response()),
            Some(key) => match all.get(&key) {
                Some(value) => Ok(Json(json!({"meta": {key: value}})).into_response()),
                None => Err(CinderError::not_found(format!(
                    "{} {id} has no metadata with key {key}.",
                    T::WHAT
                ))),
            },
        }
    })
    .await
}

/// Merges (`replace`: replaces, or for a key, sets) metadata.
async fn write<T: Labelled>(
    state: AppState,
    caller: CinderCaller,
    path: CinderPath,
    body: MetadataBody,
    replace: bool,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id(T::PARAM, T::WHAT)?;
    let key = path.0.get("key").cloned();
    let given = given(key.as_deref(), body)?;
    if let Some(k) = given.keys().find(|k| k.starts_with(OWN_PREFIX)) {
        return Err(CinderError::bad_request(format!(
            "metadata key {k:?} is in Cinder's own namespace ({OWN_PREFIX})"
        )));
    }
    blocking(&state, move |s| {
        let labels = T::labels(s, &project, id)?;
        let (own, mut metadata): (Vec<Label>, Vec<Label>) = labels.into_iter().partition(is_own);
        if replace && key.is_none() {
            metadata.clear();
        }
        for (k, v) in given {
            metadata.retain(|l| l.key != k);
            metadata.push(Label { key: k, value: v });
        }
        T::store(s, id, compose(metadata, own))?;
        let stored = metadata_of(&T::labels(s, &project, id)?);
        match key {
            Some(key) => Ok(Json(json!({"meta": {&key: stored.get(&key)}})).into_response()),
            None => Ok(Json(json!({"metadata": stored})).into_response()),
        }
    })
    .await
}

/// `POST .../metadata`: merges.
pub(super) async fn merge<T: Labelled>(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<MetadataBody>,
) -> Result<Response, CinderError> {
    write::<T>(state, caller, path, body, false).await
}

/// `PUT .../metadata` replaces; `PUT .../metadata/{key}` sets one key.
pub(super) async fn replace<T: Labelled>(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<MetadataBody>,
) -> Result<Response, CinderError> {
    write::<T>(state, caller, path, body, true).await
}

/// `DELETE .../metadata/{key}`.
pub(super) async fn delete<T: Labelled>(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    let project = caller.project(path.project(), true)?;
    let id = path.id(T::PARAM, T::WHAT)?;
    let key = path.0.get("key").cloned().unwrap_or_default();
    blocking(&state, move |s| {
        let mut labels = T::labels(s, &project, id)?;
        let before = labels.len();
        labels.retain(|l| l.key != key || is_own(l));
        if labels.len() == before {
            return Err(CinderError::not_found(format!(
                "{} {id} has no metadata with key {key}.",
                T::WHAT
            )));
        }
        T::store(s, id, labels)?;
        Ok(StatusCode::OK.into_response())
    })
    .await
}
