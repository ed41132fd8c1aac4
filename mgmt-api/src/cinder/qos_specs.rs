//! QoS specs: Keel's global QoS policies in Cinder's shape, so a spec made
//! here is the policy the Lightbits API shows and the target enforces.
//! Keel enforces on the target, so the consumer is `back-end`; `front-end`
//! and `both` (which ask the hypervisor to limit too) are refused. Spec
//! keys are Cinder's IOPS and bytes-per-second limits, absolute or per GB
//! (not both in one spec); byte rates are whole megabytes (10^6 bytes) per
//! second, Keel's unit, and other values are refused rather than rounded.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use uuid::Uuid;

use super::error::CinderError;
use super::{blocking, element, CinderCaller, CinderJson, CinderPath};
use crate::domain::model::{QosPolicyRecord, QosRates, QosScale};
use crate::domain::{NewQosPolicy, QosPolicyChanges, Service, ServiceError};
use crate::http::AppState;

/// Bytes in the megabyte of Keel's rates.
const MEGABYTE: u64 = 1_000_000;
/// The one consumer Keel serves.
const BACK_END: &str = "back-end";

/// Which rate a spec key sets.
#[derive(Debug, Clone, Copy)]
enum Rate {
    ReadIops,
    WriteIops,
    TotalIops,
    ReadBytes,
    WriteBytes,
    TotalBytes,
}

const KEYS: [(&str, Rate); 6] = [
    ("read_iops_sec", Rate::ReadIops),
    ("write_iops_sec", Rate::WriteIops),
    ("total_iops_sec", Rate::TotalIops),
    ("read_bytes_sec", Rate::ReadBytes),
    ("write_bytes_sec", Rate::WriteBytes),
    ("total_bytes_sec", Rate::TotalBytes),
];

const PER_GB: &str = "_per_gb";

/// The key of a rate in `scale`.
fn key_of(base: &str, scale: QosScale) -> String {
    match scale {
        QosScale::Absolute => base.to_owned(),
        QosScale::PerGib => format!("{base}{PER_GB}"),
    }
}

/// Turns spec keys and values into a scale and rates.
fn limits_of(specs: &BTreeMap<String, String>) -> Result<(QosScale, QosRates), CinderError> {
    let mut rates = QosRates::default();
    let mut scale = None;
    for (key, value) in specs {
        let (base, this_scale) = match key.strip_suffix(PER_GB) {
            Some(base) => (base, QosScale::PerGib),
            None => (key.as_str(), QosScale::Absolute),
        };
        let rate = KEYS
            .iter()
            .find(|(k, _)| *k == base)
            .map(|(_, r)| *r)
            .ok_or_else(|| {
                CinderError::bad_request(format!(
                    "QoS spec key {key:?} is not one Keel enforces: read/write/total _iops_sec and _bytes_sec, each optionally _per_gb"
                ))
            })?;
        if scale.is_some_and(|s| s != this_scale) {
            return Err(CinderError::bad_request(
                "a QoS spec's limits are all absolute or all per GB, not both",
            ));
        }
        scale = Some(this_scale);
        let n: u64 = value
            .trim()
            .parse()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                CinderError::bad_request(format!(
                    "QoS spec {key} must be a positive whole number, not {value:?}"
                ))
            })?;
        let mb = |n: u64| {
            if n.is_multiple_of(MEGABYTE) {
                Ok(n / MEGABYTE)
            } else {
                Err(CinderError::bad_request(format!(
                    "QoS spec {key} is {n} bytes/s; Keel limits in whole megabytes (10^6 bytes) per second"
                )))
            }
        };
        match rate {
            Rate::ReadIops => rates.read_iops = Some(n),
            Rate::WriteIops => rates.write_iops = Some(n),
            Rate::TotalIops => rates.total_iops = Some(n),
            Rate::ReadBytes => rates.read_mbps = Some(mb(n)?),
            Rate::WriteBytes => rates.write_mbps = Some(mb(n)?),
            Rate::TotalBytes => rates.total_mbps = Some(mb(n)?),
        }
    }
    Ok((scale.unwrap_or(QosScale::Absolute), rates))
}

/// A policy's limits as spec keys and values.
fn specs_of(p: &QosPolicyRecord) -> BTreeMap<String, String> {
    let r = &p.rates;
    let pairs = [
        ("read_iops_sec", r.read_iops),
        ("write_iops_sec", r.write_iops),
        ("total_iops_sec", r.total_iops),
        ("read_bytes_sec", r.read_mbps.map(|m| m * MEGABYTE)),
        ("write_bytes_sec", r.write_mbps.map(|m| m * MEGABYTE)),
        ("total_bytes_sec", r.total_mbps.map(|m| m * MEGABYTE)),
    ];
    pairs
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (key_of(k, p.scale), v.to_string())))
        .collect()
}

fn spec_json(p: &QosPolicyRecord) -> Value {
    json!({
        "id": p.uuid,
        "name": p.name,
        "consumer": BACK_END,
        "specs": specs_of(p),
        "links": [],
    })
}

fn spec_id(path: &CinderPath) -> Result<Uuid, CinderError> {
    path.id("qos_id", "QoS spec")
}

/// Maps a domain error of this module's calls (409 for a taken name).
fn spec_error(err: ServiceError) -> CinderError {
    CinderError::from_named(err, "QoS policy", "QoS spec")
}

/// The global policy `id`: project policies are not QoS specs.
fn global_policy(s: &Service, id: Uuid) -> Result<QosPolicyRecord, CinderError> {
    let p = s.qos_policy(id).map_err(spec_error)?;
    if p.project.is_some() {
        return Err(CinderError::not_found(format!(
            "QoS spec {id} could not be found."
        )));
    }
    Ok(p)
}

/// Splits a create or set body into the consumer and the spec keys.
fn split_body(
    mut body: Map<String, Value>,
) -> Result<(Option<String>, BTreeMap<String, String>), CinderError> {
    let consumer = match body.remove("consumer") {
        None => None,
        Some(Value::String(c)) => Some(c),
        Some(other) => {
            return Err(CinderError::bad_request(format!(
                "consumer {other} is not a string"
            )))
        }
    };
    if let Some(c) = consumer.as_deref().filter(|c| *c != BACK_END) {
        return Err(CinderError::bad_request(format!(
            "consumer {c:?} asks the hypervisor to limit I/O; Keel enforces QoS on the target, so the consumer is \"back-end\""
        )));
    }
    let mut specs = BTreeMap::new();
    for (key, value) in body {
        let text = match value {
            Value::String(s) => s,
            Value::Number(n) => n.to_string(),
            other => {
                return Err(CinderError::bad_request(format!(
                    "QoS spec {key} is {other}, not a number"
                )))
            }
        };
        specs.insert(key, text);
    }
    Ok((consumer, specs))
}

#[derive(Debug, Deserialize)]
pub(super) struct SpecsBody {
    qos_specs: Option<Map<String, Value>>,
}

/// `GET /v3/{project_id}/qos-specs` (administrators).
pub(super) async fn list(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    caller.require_admin()?;
    blocking(&state, |s| {
        let specs: Vec<Value> = s
            .qos_policies(None)
            .iter()
            .filter(|p| p.project.is_none())
            .map(spec_json)
            .collect();
        Ok(Json(json!({"qos_specs": specs})).into_response())
    })
    .await
}

/// `POST /v3/{project_id}/qos-specs`: a new global QoS policy.
pub(super) async fn create(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<SpecsBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let mut fields = element(body.qos_specs, "qos_specs")?;
    let name = match fields.remove("name") {
        Some(Value::String(n)) => n,
        _ => {
            return Err(CinderError::bad_request(
                "Missing required element 'name' in request body.",
            ))
        }
    };
    let (_, specs) = split_body(fields)?;
    let (scale, rates) = limits_of(&specs)?;
    blocking(&state, move |s| {
        let p = s
            .create_qos_policy(NewQosPolicy {
                name,
                description: String::new(),
                project: None,
                scale,
                rates,
            })
            .map_err(spec_error)?;
        Ok(Json(json!({"qos_specs": spec_json(&p)})).into_response())
    })
    .await
}

/// `GET /v3/{project_id}/qos-specs/{qos_id}`.
pub(super) async fn show(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    blocking(&state, move |s| {
        let p = global_policy(s, id)?;
        Ok(Json(json!({"qos_specs": spec_json(&p)})).into_response())
    })
    .await
}

/// Replaces a policy's limits with `specs`; every volume under it gets
/// them before this returns.
fn replace_limits(
    s: &Service,
    id: Uuid,
    specs: &BTreeMap<String, String>,
) -> Result<(), CinderError> {
    let limits = limits_of(specs)?;
    s.update_qos_policy(
        id,
        QosPolicyChanges {
            description: None,
            limits: Some(limits),
        },
        None,
    )
    .map_err(spec_error)?;
    Ok(())
}

/// `PUT /v3/{project_id}/qos-specs/{qos_id}`: sets the given keys.
pub(super) async fn set_keys(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<SpecsBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    let (_, given) = split_body(element(body.qos_specs, "qos_specs")?)?;
    blocking(&state, move |s| {
        let mut specs = specs_of(&global_policy(s, id)?);
        specs.extend(given.clone());
        replace_limits(s, id, &specs)?;
        Ok(Json(json!({"qos_specs": given})).into_response())
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct KeysBody {
    keys: Option<Vec<String>>,
}

/// `PUT /v3/{project_id}/qos-specs/{qos_id}/delete_keys`.
pub(super) async fn delete_keys(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    CinderJson(body): CinderJson<KeysBody>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    let keys = element(body.keys, "keys")?;
    blocking(&state, move |s| {
        let mut specs = specs_of(&global_policy(s, id)?);
        for key in &keys {
            if specs.remove(key).is_none() {
                return Err(CinderError::not_found(format!(
                    "QoS spec {id} has no key {key}."
                )));
            }
        }
        replace_limits(s, id, &specs)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// The types that name policy `id`.
fn associated_types(s: &Service, id: Uuid) -> Vec<crate::domain::model::VolumeTypeRecord> {
    s.volume_types()
        .into_iter()
        .filter(|t| t.qos_policy == Some(id))
        .collect()
}

/// `DELETE /v3/{project_id}/qos-specs/{qos_id}`: 400 while a type names it
/// unless `force`, which first disassociates those types; a policy volumes
/// use is never deleted.
pub(super) async fn delete(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    let force = query
        .get("force")
        .is_some_and(|f| f.eq_ignore_ascii_case("true"));
    blocking(&state, move |s| {
        global_policy(s, id)?;
        let types = associated_types(s, id);
        if !types.is_empty() && !force {
            return Err(CinderError::bad_request(format!(
                "QoS Specs {id} is still associated with entities."
            )));
        }
        for t in &types {
            s.set_type_qos_policy(t.uuid, None).map_err(spec_error)?;
        }
        s.delete_qos_policy(id, None).map_err(spec_error)?;
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// `GET /v3/{project_id}/qos-specs/{qos_id}/associations`.
pub(super) async fn associations(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), false)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    blocking(&state, move |s| {
        global_policy(s, id)?;
        let list: Vec<Value> = associated_types(s, id)
            .iter()
            .map(|t| json!({"association_type": "volume_type", "name": t.name, "id": t.uuid}))
            .collect();
        Ok(Json(json!({"qos_associations": list})).into_response())
    })
    .await
}

/// The `vol_type_id` argument.
fn type_arg(query: &HashMap<String, String>) -> Result<Uuid, CinderError> {
    let text = query
        .get("vol_type_id")
        .ok_or_else(|| CinderError::bad_request("vol_type_id is required"))?;
    text.parse()
        .map_err(|_| CinderError::not_found(format!("Volume type {text} could not be found.")))
}

/// `GET /v3/{project_id}/qos-specs/{qos_id}/associate?vol_type_id=`: new
/// volumes of the type get the policy.
pub(super) async fn associate(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    let type_id = type_arg(&query)?;
    blocking(&state, move |s| {
        global_policy(s, id)?;
        let t = s.volume_type(type_id).map_err(|_| {
            CinderError::not_found(format!("Volume type {type_id} could not be found."))
        })?;
        match t.qos_policy {
            Some(other) if other != id => Err(CinderError::bad_request(format!(
                "Volume type {type_id} is already associated with another qos specs: {other}"
            ))),
            _ => {
                s.set_type_qos_policy(type_id, Some(id))
                    .map_err(spec_error)?;
                Ok(StatusCode::ACCEPTED.into_response())
            }
        }
    })
    .await
}

/// `GET /v3/{project_id}/qos-specs/{qos_id}/disassociate?vol_type_id=`.
pub(super) async fn disassociate(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    let type_id = type_arg(&query)?;
    blocking(&state, move |s| {
        global_policy(s, id)?;
        let t = s.volume_type(type_id).map_err(|_| {
            CinderError::not_found(format!("Volume type {type_id} could not be found."))
        })?;
        if t.qos_policy == Some(id) {
            s.set_type_qos_policy(type_id, None).map_err(spec_error)?;
        }
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

/// `GET /v3/{project_id}/qos-specs/{qos_id}/disassociate_all`.
pub(super) async fn disassociate_all(
    State(state): State<AppState>,
    caller: CinderCaller,
    path: CinderPath,
) -> Result<Response, CinderError> {
    caller.project(path.project(), true)?;
    caller.require_admin()?;
    let id = spec_id(&path)?;
    blocking(&state, move |s| {
        global_policy(s, id)?;
        for t in associated_types(s, id) {
            s.set_type_qos_policy(t.uuid, None).map_err(spec_error)?;
        }
        Ok(StatusCode::ACCEPTED.into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specs(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn spec_keys_map_onto_keels_rates_and_back() {
        let (scale, rates) = limits_of(&specs(&[
            ("total_iops_sec", "1000"),
            ("read_bytes_sec", "50000000"),
        ]))
        .expect("taken");
        assert_eq!(scale, QosScale::Absolute);
        assert_eq!((rates.total_iops, rates.read_mbps), (Some(1000), Some(50)));
        let (scale, rates) = limits_of(&specs(&[("write_iops_sec_per_gb", "10")])).expect("taken");
        assert_eq!((scale, rates.write_iops), (QosScale::PerGib, Some(10)));
        let p = QosPolicyRecord {
            uuid: Uuid::nil(),
            name: "q".into(),
            description: String::new(),
            project: None,
            scale,
            rates,
            revision: 1,
            created_at_s: 0,
        };
        assert_eq!(specs_of(&p), specs(&[("write_iops_sec_per_gb", "10")]));
    }

    #[test]
    fn what_keel_cannot_enforce_exactly_is_refused() {
        for bad in [
            specs(&[("total_iops_sec_max", "100")]),
            specs(&[("read_bytes_sec", "104857600")]),
            specs(&[("total_iops_sec", "0")]),
            specs(&[("total_iops_sec", "lots")]),
            specs(&[("total_iops_sec", "10"), ("read_iops_sec_per_gb", "1")]),
            specs(&[("size_iops_sec", "4096")]),
        ] {
            assert!(limits_of(&bad).is_err(), "{bad:?} was taken");
        }
    }
}
