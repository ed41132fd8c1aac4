//! Volume types: named settings new volumes take, as Cinder's volume types
//! carry them. A type's extra specs are settings Keel acts on when a volume
//! of the type is created — compression, replica count — or facts about
//! this backend that must hold — its backend name, no multiattach, the one
//! availability zone; any other spec is refused, never kept and ignored. A
//! type may name a QoS policy its volumes get when their request names
//! none. A private type serves only the projects it is shared with.
//!
//! INVARIANT: a type some volume was created with is never deleted, and a
//! QoS policy a type names is never deleted (see `qos`).

use std::collections::BTreeMap;

use uuid::Uuid;

use super::error::ServiceError;
use super::model::VolumeTypeRecord;
use super::rules;
use super::service::{now_s, Service};

/// The backend name Keel reports (`volume_backend_name`).
pub const BACKEND_NAME: &str = "keel";
/// The name of the built-in type volumes have when created without one.
pub const DEFAULT_TYPE_NAME: &str = "__DEFAULT__";
/// The built-in type's id: fixed, so every node and restart shows the same.
pub const DEFAULT_TYPE_ID: Uuid = Uuid::from_u128(0x6b65656c_0000_4000_8000_64656661756c);
/// Longest type name (Cinder's bound).
const TYPE_NAME_LEN_MAX: usize = 255;
/// Most extra specs one type holds.
const SPECS_MAX: usize = 64;

/// Extra spec: whether new volumes compress their data.
pub const SPEC_COMPRESSION: &str = "compression";
/// Extra spec: new volumes' replica count (the Lightbits driver's key).
pub const SPEC_REPLICAS: &str = "lightos:num_replicas";
/// Extra spec: the backend a type's volumes must land on.
pub const SPEC_BACKEND: &str = "volume_backend_name";
/// Extra spec: whether volumes may attach to several hosts at once.
pub const SPEC_MULTIATTACH: &str = "multiattach";
/// Extra spec: the availability zones a type's volumes may be in.
pub const SPEC_ZONES: &str = "RESKEY:availability_zones";

/// A request to create a volume type.
#[derive(Debug, Clone, Default)]
pub struct NewVolumeType {
    /// Name, unique in the cluster.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Whether every project may use it.
    pub is_public: bool,
    /// Extra specs.
    pub extra_specs: BTreeMap<String, String>,
}

/// Changes to a volume type; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct VolumeTypeChanges {
    /// New name.
    pub name: Option<String>,
    /// New free text.
    pub description: Option<String>,
    /// New visibility.
    pub is_public: Option<bool>,
}

/// What a type sets on a new volume whose request leaves it open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TypeSettings {
    /// Compression.
    pub compression: Option<bool>,
    /// Replica count.
    pub replica_count: Option<u32>,
    /// QoS policy.
    pub qos_policy: Option<Uuid>,
}

fn invalid(msg: String) -> ServiceError {
    ServiceError::InvalidArgument(msg)
}

fn not_found(id: impl ToString) -> ServiceError {
    ServiceError::NotFound {
        what: "volume type",
        id: id.to_string(),
    }
}

/// A boolean spec value: `True`/`False`, optionally behind Cinder's `<is>`.
fn spec_bool(key: &str, value: &str) -> Result<bool, String> {
    let bare = value.trim();
    let bare = bare.strip_prefix("<is>").map_or(bare, str::trim);
    match bare.to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!(
            "extra spec {key} takes '<is> True' or '<is> False', not {value:?}"
        )),
    }
}

/// Checks one extra spec: a key Keel acts on with a value it can honour.
pub fn check_spec(key: &str, value: &str) -> Result<(), String> {
    match key {
        SPEC_COMPRESSION => spec_bool(key, value).map(|_| ()),
        SPEC_REPLICAS => match value.trim().parse::<u32>() {
            Ok(1..=3) => Ok(()),
            _ => Err(format!("extra spec {key} takes 1, 2 or 3, not {value:?}")),
        },
        SPEC_BACKEND if value.trim() == BACKEND_NAME => Ok(()),
        SPEC_BACKEND => Err(format!(
            "extra spec {key} is {value:?}, but this backend is {BACKEND_NAME:?}"
        )),
        SPEC_MULTIATTACH => match spec_bool(key, value)? {
            false => Ok(()),
            true => Err("multiattach volumes are not provided".to_owned()),
        },
        SPEC_ZONES if value.split(',').all(|z| z.trim() == "nova") => Ok(()),
        SPEC_ZONES => Err(format!(
            "extra spec {key} is {value:?}, but the only availability zone is \"nova\""
        )),
        other => Err(format!(
            "extra spec {other:?} is not one Keel acts on ({SPEC_COMPRESSION}, {SPEC_REPLICAS}, {SPEC_BACKEND}, {SPEC_MULTIATTACH}, {SPEC_ZONES})"
        )),
    }
}

fn check_specs<'a>(
    specs: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), ServiceError> {
    for (key, value) in specs {
        check_spec(key, value).map_err(invalid)?;
    }
    Ok(())
}

fn check_type_name(name: &str) -> Result<(), ServiceError> {
    let trimmed = name.trim();
    if trimmed.is_empty() {
        return Err(invalid("a volume type's name must not be empty".to_owned()));
    }
    if name.chars().count() > TYPE_NAME_LEN_MAX {
        return Err(invalid(format!(
            "a volume type's name is at most {TYPE_NAME_LEN_MAX} characters"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "a volume type's name must not hold control characters".to_owned(),
        ));
    }
    if trimmed == DEFAULT_TYPE_NAME {
        return Err(ServiceError::AlreadyExists {
            what: "volume type",
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// What `t`'s specs and policy set on a new volume.
pub fn settings(t: &VolumeTypeRecord) -> TypeSettings {
    let spec = |key: &str| t.extra_specs.get(key);
    TypeSettings {
        compression: spec(SPEC_COMPRESSION).and_then(|v| spec_bool(SPEC_COMPRESSION, v).ok()),
        replica_count: spec(SPEC_REPLICAS).and_then(|v| v.trim().parse().ok()),
        qos_policy: t.qos_policy,
    }
}

impl Service {
    /// Creates a volume type.
    pub fn create_volume_type(&self, req: NewVolumeType) -> Result<VolumeTypeRecord, ServiceError> {
        check_type_name(&req.name)?;
        rules::check_description(&req.description).map_err(invalid)?;
        if req.extra_specs.len() > SPECS_MAX {
            return Err(invalid(format!(
                "a type holds at most {SPECS_MAX} extra specs"
            )));
        }
        check_specs(&req.extra_specs)?;
        self.inner.commit(|c| {
            if c.volume_types.values().any(|t| t.name == req.name) {
                return Err(ServiceError::AlreadyExists {
                    what: "volume type",
                    name: req.name.clone(),
                });
            }
            let record = VolumeTypeRecord {
                uuid: Uuid::new_v4(),
                name: req.name.clone(),
                description: req.description.clone(),
                is_public: req.is_public,
                projects: Vec::new(),
                extra_specs: req.extra_specs.clone(),
                qos_policy: None,
                created_at_s: now_s(),
            };
            c.volume_types.insert(record.uuid, record.clone());
            Ok(record)
        })
    }

    /// Every volume type, in UUID order.
    pub fn volume_types(&self) -> Vec<VolumeTypeRecord> {
        self.inner
            .catalog()
            .volume_types
            .values()
            .cloned()
            .collect()
    }

    /// One volume type.
    pub fn volume_type(&self, uuid: Uuid) -> Result<VolumeTypeRecord, ServiceError> {
        self.inner
            .catalog()
            .volume_types
            .get(&uuid)
            .cloned()
            .ok_or_else(|| not_found(uuid))
    }

    /// The type volume `volume` was created with (`None`: the default).
    pub fn volume_type_of(&self, volume: Uuid) -> Option<VolumeTypeRecord> {
        let c = self.inner.catalog();
        c.volume_type_of
            .get(&volume)
            .and_then(|t| c.volume_types.get(t))
            .cloned()
    }

    /// Changes a type's name, description or visibility.
    pub fn update_volume_type(
        &self,
        uuid: Uuid,
        changes: VolumeTypeChanges,
    ) -> Result<VolumeTypeRecord, ServiceError> {
        if let Some(name) = &changes.name {
            check_type_name(name)?;
        }
        if let Some(d) = &changes.description {
            rules::check_description(d).map_err(invalid)?;
        }
        self.inner.commit(|c| {
            if let Some(name) = &changes.name {
                if c.volume_types
                    .values()
                    .any(|t| t.name == *name && t.uuid != uuid)
                {
                    return Err(ServiceError::AlreadyExists {
                        what: "volume type",
                        name: name.clone(),
                    });
                }
            }
            let t = c
                .volume_types
                .get_mut(&uuid)
                .ok_or_else(|| not_found(uuid))?;
            if let Some(name) = &changes.name {
                t.name = name.clone();
            }
            if let Some(d) = &changes.description {
                t.description = d.clone();
            }
            if let Some(public) = changes.is_public {
                t.is_public = public;
            }
            Ok(t.clone())
        })
    }

    /// Deletes a type no volume was created with.
    pub fn delete_volume_type(&self, uuid: Uuid) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let t = c.volume_types.get(&uuid).ok_or_else(|| not_found(uuid))?;
            let users = c.volume_type_of.values().filter(|t| **t == uuid).count();
            if users > 0 {
                return Err(ServiceError::InUse(format!(
                    "volume type {:?} is the type of {users} volumes",
                    t.name
                )));
            }
            if let Some(project) = c
                .project_default_types
                .iter()
                .find(|(_, t)| **t == uuid)
                .map(|(p, _)| p.clone())
            {
                return Err(ServiceError::InUse(format!(
                    "volume type {:?} is the default type of project {project:?}",
                    t.name
                )));
            }
            c.volume_types.remove(&uuid);
            Ok(())
        })
    }

    /// Sets (adds or replaces) extra specs of a type; volumes made since
    /// keep what they were made with.
    pub fn set_type_specs(
        &self,
        uuid: Uuid,
        specs: BTreeMap<String, String>,
    ) -> Result<VolumeTypeRecord, ServiceError> {
        check_specs(&specs)?;
        self.inner.commit(|c| {
            let t = c
                .volume_types
                .get_mut(&uuid)
                .ok_or_else(|| not_found(uuid))?;
            let mut merged = t.extra_specs.clone();
            merged.extend(specs.clone());
            if merged.len() > SPECS_MAX {
                return Err(invalid(format!(
                    "a type holds at most {SPECS_MAX} extra specs"
                )));
            }
            t.extra_specs = merged;
            Ok(t.clone())
        })
    }

    /// Removes one extra spec of a type.
    pub fn unset_type_spec(&self, uuid: Uuid, key: &str) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let t = c
                .volume_types
                .get_mut(&uuid)
                .ok_or_else(|| not_found(uuid))?;
            t.extra_specs
                .remove(key)
                .map(|_| ())
                .ok_or_else(|| ServiceError::NotFound {
                    what: "extra spec",
                    id: key.to_owned(),
                })
        })
    }

    /// Shares a private type with `project` (`grant`) or stops sharing it.
    pub fn set_type_access(
        &self,
        uuid: Uuid,
        project: &str,
        grant: bool,
    ) -> Result<(), ServiceError> {
        self.require_project(project)?;
        self.inner.commit(|c| {
            let t = c
                .volume_types
                .get_mut(&uuid)
                .ok_or_else(|| not_found(uuid))?;
            if t.is_public {
                return Err(invalid(format!(
                    "volume type {:?} is public: every project has it",
                    t.name
                )));
            }
            let has = t.projects.iter().any(|p| p == project);
            match (grant, has) {
                (true, false) => t.projects.push(project.to_owned()),
                (false, true) => t.projects.retain(|p| p != project),
                (true, true) => {
                    return Err(ServiceError::AlreadyExists {
                        what: "volume type access",
                        name: project.to_owned(),
                    })
                }
                (false, false) => {
                    return Err(ServiceError::NotFound {
                        what: "volume type access",
                        id: project.to_owned(),
                    })
                }
            }
            Ok(())
        })
    }

    /// Names the QoS policy volumes of the type get (`None`: none).
    pub fn set_type_qos_policy(
        &self,
        uuid: Uuid,
        policy: Option<Uuid>,
    ) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            if let Some(p) = policy {
                let record = c.qos_policies.get(&p).ok_or(ServiceError::NotFound {
                    what: "QoS policy",
                    id: p.to_string(),
                })?;
                if record.project.is_some() {
                    return Err(invalid(format!(
                        "QoS policy {:?} belongs to one project; a type takes a global one",
                        record.name
                    )));
                }
            }
            let t = c
                .volume_types
                .get_mut(&uuid)
                .ok_or_else(|| not_found(uuid))?;
            t.qos_policy = policy;
            Ok(())
        })
    }

    /// Sets (`None`: clears) the type `project`'s new volumes take when
    /// their request names none; the project must be able to use it.
    pub fn set_project_default_type(
        &self,
        project: &str,
        volume_type: Option<Uuid>,
    ) -> Result<(), ServiceError> {
        self.require_project(project)?;
        self.inner.commit(|c| {
            match volume_type {
                Some(t) => {
                    let record = c.volume_types.get(&t).ok_or_else(|| not_found(t))?;
                    if !record.available_to(project) {
                        return Err(not_found(t));
                    }
                    c.project_default_types.insert(project.to_owned(), t);
                }
                None => {
                    c.project_default_types.remove(project);
                }
            }
            Ok(())
        })
    }

    /// Every project's default type, by project.
    pub fn project_default_types(&self) -> Vec<(String, Uuid)> {
        self.inner
            .catalog()
            .project_default_types
            .iter()
            .map(|(p, t)| (p.clone(), *t))
            .collect()
    }

    /// Records `volume`'s type as `volume_type` (`None`: the default)
    /// after a retype has applied the type's settings.
    pub fn set_volume_type(
        &self,
        volume: Uuid,
        volume_type: Option<Uuid>,
    ) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            if !c.volumes.contains_key(&volume) {
                return Err(ServiceError::NotFound {
                    what: "volume",
                    id: volume.to_string(),
                });
            }
            match volume_type {
                Some(t) if !c.volume_types.contains_key(&t) => return Err(not_found(t)),
                Some(t) => {
                    c.volume_type_of.insert(volume, t);
                }
                None => {
                    c.volume_type_of.remove(&volume);
                }
            }
            Ok(())
        })
    }

    /// The settings type `uuid` gives a new volume of `project`, if the
    /// project may use it.
    pub(super) fn type_settings(
        &self,
        uuid: Uuid,
        project: &str,
    ) -> Result<TypeSettings, ServiceError> {
        let t = self.volume_type(uuid)?;
        if !t.available_to(project) {
            return Err(not_found(uuid));
        }
        Ok(settings(&t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_specs_keel_acts_on_with_values_it_honours_are_taken() {
        for (key, value) in [
            (SPEC_COMPRESSION, "<is> True"),
            (SPEC_COMPRESSION, "false"),
            (SPEC_REPLICAS, "3"),
            (SPEC_BACKEND, "keel"),
            (SPEC_MULTIATTACH, "<is> False"),
            (SPEC_ZONES, "nova"),
        ] {
            assert_eq!(check_spec(key, value), Ok(()), "{key}={value}");
        }
        for (key, value) in [
            (SPEC_COMPRESSION, "yes"),
            (SPEC_REPLICAS, "4"),
            (SPEC_REPLICAS, "0"),
            (SPEC_BACKEND, "lvm"),
            (SPEC_MULTIATTACH, "<is> True"),
            (SPEC_ZONES, "nova,az2"),
            ("thin_provisioning_support", "<is> True"),
            ("capabilities:dedup", "<is> True"),
        ] {
            assert!(check_spec(key, value).is_err(), "{key}={value} was taken");
        }
    }

    #[test]
    fn a_types_settings_come_from_its_specs_and_policy() {
        let policy = Uuid::new_v4();
        let t = VolumeTypeRecord {
            uuid: Uuid::new_v4(),
            name: "fast".into(),
            description: String::new(),
            is_public: false,
            projects: vec!["p1".into()],
            extra_specs: [
                (SPEC_COMPRESSION.to_owned(), "<is> True".to_owned()),
                (SPEC_REPLICAS.to_owned(), "2".to_owned()),
            ]
            .into(),
            qos_policy: Some(policy),
            created_at_s: 0,
        };
        assert_eq!(
            settings(&t),
            TypeSettings {
                compression: Some(true),
                replica_count: Some(2),
                qos_policy: Some(policy),
            }
        );
        assert!(t.available_to("p1") && !t.available_to("p2"));
    }
}
