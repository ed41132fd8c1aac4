//! QoS policies: named rates that volumes are held to on the data path.
//!
//! A policy is global (any project's volumes may use it) or belongs to one
//! project. A volume names its policy on create or update; a volume created
//! without one gets its project's default policy, if the project has one.
//! The domain turns a policy into absolute [`VolumeRateLimits`] for the
//! volume's size and hands them to the port: on create and expose, when the
//! volume's policy changes, when a per-GiB volume is resized, and for every
//! volume under a policy when the policy's rates change.
//!
//! INVARIANT: every Available volume whose record names a policy has had
//! that policy's limits for its size applied by the port since the record or
//! the policy last changed (reconciliation re-applies them after a restart).
//! A policy named by a volume or a project is never deleted.

use uuid::Uuid;

use super::error::ServiceError;
use super::model::{Catalog, QosPolicyRecord, QosRates, QosScale, ResourceState, VolumeRecord};
use super::rules;
use super::service::{check_etag, now_s, Inner, Service};
use crate::control::{ControlError, VolumeRateLimits};

/// Bytes in the megabyte of a policy's `MBps` rates (decimal, as the size
/// units' `MB`).
const MEGABYTE: u64 = 1_000_000;
/// Bytes in the GiB of a per-GiB policy.
const GIB: u128 = 1 << 30;

/// A request to create a QoS policy.
#[derive(Debug, Clone)]
pub struct NewQosPolicy {
    /// Name, unique in the cluster.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The one project that may use it; `None` for every project.
    pub project: Option<String>,
    /// How the rates scale.
    pub scale: QosScale,
    /// The rates.
    pub rates: QosRates,
}

/// Changes to a QoS policy; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct QosPolicyChanges {
    /// New free text.
    pub description: Option<String>,
    /// New scale and rates (replacing all of them).
    pub limits: Option<(QosScale, QosRates)>,
}

/// How a request names a QoS policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QosPolicyRef {
    /// By name.
    Name(String),
    /// By UUID.
    Uuid(Uuid),
    /// By both, which must name the same policy.
    Both(String, Uuid),
}

/// The limits `policy` gives a volume of `size_bytes`.
pub fn rate_limits(policy: &QosPolicyRecord, size_bytes: u64) -> VolumeRateLimits {
    let scale = |rate: Option<u64>, unit: u64| -> Option<u64> {
        let rate = u128::from(rate?) * u128::from(unit);
        let scaled = match policy.scale {
            QosScale::Absolute => rate,
            // At least one unit: a tiny volume is slowed, never stopped.
            QosScale::PerGib => (rate * u128::from(size_bytes) / GIB).max(1),
        };
        Some(u64::try_from(scaled).unwrap_or(u64::MAX))
    };
    let r = &policy.rates;
    VolumeRateLimits {
        read_iops: scale(r.read_iops, 1),
        write_iops: scale(r.write_iops, 1),
        total_iops: scale(r.total_iops, 1),
        read_bytes_per_second: scale(r.read_mbps, MEGABYTE),
        write_bytes_per_second: scale(r.write_mbps, MEGABYTE),
        total_bytes_per_second: scale(r.total_mbps, MEGABYTE),
    }
}

/// The limits the catalog gives `volume` (unlimited without a policy).
pub(crate) fn volume_rate_limits(catalog: &Catalog, volume: &VolumeRecord) -> VolumeRateLimits {
    volume
        .qos_policy
        .and_then(|p| catalog.qos_policies.get(&p))
        .map_or(VolumeRateLimits::UNLIMITED, |p| {
            rate_limits(p, volume.size_bytes)
        })
}

/// The largest rate a policy takes (15 digits, exact in any JSON number).
pub const RATE_MAX: u64 = 999_999_999_999_999;

/// Rates of 0 mean "no limit" (the documents' unset integers); the stored
/// form keeps only real limits. A rate above [`RATE_MAX`] is refused.
fn normalized(rates: QosRates) -> Result<QosRates, ServiceError> {
    let keep = |r: Option<u64>| -> Result<Option<u64>, ServiceError> {
        match r {
            Some(v) if v > RATE_MAX => Err(invalid(format!(
                "a QoS rate of {v} is above the largest, {RATE_MAX}"
            ))),
            other => Ok(other.filter(|v| *v > 0)),
        }
    };
    Ok(QosRates {
        read_iops: keep(rates.read_iops)?,
        write_iops: keep(rates.write_iops)?,
        total_iops: keep(rates.total_iops)?,
        read_mbps: keep(rates.read_mbps)?,
        write_mbps: keep(rates.write_mbps)?,
        total_mbps: keep(rates.total_mbps)?,
    })
}

fn invalid(msg: String) -> ServiceError {
    ServiceError::InvalidArgument(msg)
}

fn not_found(id: impl ToString) -> ServiceError {
    ServiceError::NotFound {
        what: "QoS policy",
        id: id.to_string(),
    }
}

/// The policy `reference` names for a volume of `project`; `field` is the
/// request's field less its `Name`/`UUID` ending, for messages. An unknown
/// policy, or one of another project, is an invalid argument (the request is
/// wrong, not the path).
pub(super) fn resolve(
    catalog: &Catalog,
    project: &str,
    field: &str,
    reference: &QosPolicyRef,
) -> Result<Uuid, ServiceError> {
    let (policy, shown) = match reference {
        QosPolicyRef::Name(name) => (
            catalog.qos_policies.values().find(|p| p.name == *name),
            format!("{field}Name {name:?}"),
        ),
        QosPolicyRef::Uuid(uuid) | QosPolicyRef::Both(_, uuid) => (
            catalog.qos_policies.get(uuid),
            format!("{field}UUID {uuid}"),
        ),
    };
    match policy {
        None => Err(invalid(format!("{shown} names no QoS policy"))),
        Some(p) if !p.available_to(project) => Err(invalid(format!(
            "{shown} belongs to project {:?}, not {project:?}",
            p.project.as_deref().unwrap_or_default()
        ))),
        Some(p) => match reference {
            QosPolicyRef::Both(name, uuid) if *name != p.name => Err(invalid(format!(
                "{field}Name {name:?} and {field}UUID {uuid} name different QoS policies"
            ))),
            _ => Ok(p.uuid),
        },
    }
}

impl Service {
    /// Creates a QoS policy.
    pub fn create_qos_policy(&self, req: NewQosPolicy) -> Result<QosPolicyRecord, ServiceError> {
        rules::check_name("name", &req.name).map_err(invalid)?;
        rules::check_description(&req.description).map_err(invalid)?;
        if let Some(p) = &req.project {
            self.require_project(p)?;
        }
        let rates = normalized(req.rates)?;
        self.inner.commit(|c| {
            if c.qos_policies.values().any(|p| p.name == req.name) {
                return Err(ServiceError::AlreadyExists {
                    what: "QoS policy",
                    name: req.name.clone(),
                });
            }
            let policy = QosPolicyRecord {
                uuid: Uuid::new_v4(),
                name: req.name.clone(),
                description: req.description.clone(),
                project: req.project.clone(),
                scale: req.scale,
                rates,
                revision: 1,
                created_at_s: now_s(),
            };
            c.qos_policies.insert(policy.uuid, policy.clone());
            Ok(policy)
        })
    }

    /// QoS policies, in UUID order: every one, or those `project`'s volumes
    /// may use (its own and the global ones).
    pub fn qos_policies(&self, project: Option<&str>) -> Vec<QosPolicyRecord> {
        self.inner
            .catalog()
            .qos_policies
            .values()
            .filter(|p| project.is_none_or(|name| p.available_to(name)))
            .cloned()
            .collect()
    }

    /// One QoS policy.
    pub fn qos_policy(&self, uuid: Uuid) -> Result<QosPolicyRecord, ServiceError> {
        self.inner
            .catalog()
            .qos_policies
            .get(&uuid)
            .cloned()
            .ok_or_else(|| not_found(uuid))
    }

    /// The QoS policy called `name`.
    pub fn qos_policy_by_name(&self, name: &str) -> Result<QosPolicyRecord, ServiceError> {
        self.inner
            .catalog()
            .qos_policies
            .values()
            .find(|p| p.name == name)
            .cloned()
            .ok_or_else(|| not_found(name))
    }

    /// Changes a QoS policy; new rates reach every volume under it before
    /// this returns.
    pub fn update_qos_policy(
        &self,
        uuid: Uuid,
        changes: QosPolicyChanges,
        etag: Option<&str>,
    ) -> Result<QosPolicyRecord, ServiceError> {
        if let Some(d) = &changes.description {
            rules::check_description(d).map_err(invalid)?;
        }
        let limits = changes
            .limits
            .map(|(scale, rates)| normalized(rates).map(|r| (scale, r)))
            .transpose()?;
        let (policy, volumes) = self.inner.commit(|c| {
            let p = c
                .qos_policies
                .get_mut(&uuid)
                .ok_or_else(|| not_found(uuid))?;
            check_etag(etag, p.revision)?;
            let mut changed = false;
            if let Some(d) = changes
                .description
                .as_ref()
                .filter(|d| **d != p.description)
            {
                p.description = d.clone();
                changed = true;
            }
            if let Some((scale, rates)) = limits {
                if (scale, rates) != (p.scale, p.rates) {
                    p.scale = scale;
                    p.rates = rates;
                    changed = true;
                }
            }
            if changed {
                p.revision = p.revision.wrapping_add(1);
            }
            let policy = p.clone();
            let volumes: Vec<VolumeRecord> = c
                .volumes
                .values()
                .filter(|v| v.qos_policy == Some(uuid))
                .cloned()
                .collect();
            Ok((policy, volumes))
        })?;
        for v in volumes.iter().filter(|v| serves_io(v.state)) {
            self.inner
                .control
                .set_rate_limits(v.uuid, &rate_limits(&policy, v.size_bytes))?;
        }
        Ok(policy)
    }

    /// Deletes a QoS policy no volume or project names.
    pub fn delete_qos_policy(&self, uuid: Uuid, etag: Option<&str>) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let p = c.qos_policies.get(&uuid).ok_or_else(|| not_found(uuid))?;
            check_etag(etag, p.revision)?;
            let volumes: Vec<&str> = c
                .volumes
                .values()
                .filter(|v| v.qos_policy == Some(uuid))
                .map(|v| v.name.as_str())
                .collect();
            let projects: Vec<&str> = c
                .projects
                .values()
                .filter(|pr| pr.default_qos_policy == Some(uuid))
                .map(|pr| pr.name.as_str())
                .collect();
            if !volumes.is_empty() || !projects.is_empty() {
                return Err(ServiceError::InUse(format!(
                    "QoS policy {:?} is used by volumes {volumes:?} and is the default of projects {projects:?}",
                    p.name
                )));
            }
            if let Some(t) = c.volume_types.values().find(|t| t.qos_policy == Some(uuid)) {
                return Err(ServiceError::InUse(format!(
                    "QoS policy {:?} is the policy of volume type {:?}",
                    p.name, t.name
                )));
            }
            c.qos_policies.remove(&uuid);
            Ok(())
        })
    }

    /// Sets the QoS policy new volumes of `project` get when their request
    /// names none.
    pub fn set_project_default_qos_policy(
        &self,
        project: &str,
        reference: &QosPolicyRef,
    ) -> Result<(), ServiceError> {
        self.require_project(project)?;
        self.inner.commit(|c| {
            let policy = resolve(c, project, "defaultQosPolicy", reference)?;
            if let Some(p) = c.projects.get_mut(project) {
                p.default_qos_policy = Some(policy);
            }
            Ok(())
        })
    }
}

/// Whether a volume in `state` is exposed and so holds limits on the target.
pub(super) fn serves_io(state: ResourceState) -> bool {
    matches!(state, ResourceState::Available | ResourceState::Updating)
}

impl Inner {
    /// Applies the limits the catalog gives `volume` (unlimited without a
    /// policy) through the port.
    pub(super) fn apply_rate_limits(&self, volume: Uuid) -> Result<(), ControlError> {
        let limits = {
            let c = self.catalog();
            match c.volumes.get(&volume) {
                Some(v) => volume_rate_limits(&c, v),
                None => return Err(ControlError::NotFound(volume)),
            }
        };
        self.control.set_rate_limits(volume, &limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scale: QosScale, rates: QosRates) -> QosPolicyRecord {
        QosPolicyRecord {
            uuid: Uuid::nil(),
            name: "p".into(),
            description: String::new(),
            project: None,
            scale,
            rates,
            revision: 1,
            created_at_s: 0,
        }
    }

    #[test]
    fn absolute_rates_ignore_the_size_and_megabytes_are_decimal() {
        let p = policy(
            QosScale::Absolute,
            QosRates {
                read_iops: Some(1000),
                write_mbps: Some(50),
                ..QosRates::default()
            },
        );
        let l = rate_limits(&p, 100 << 30);
        assert_eq!(l.read_iops, Some(1000));
        assert_eq!(l.write_bytes_per_second, Some(50_000_000));
        assert_eq!(l.write_iops, None);
        assert_eq!(l.total_bytes_per_second, None);
    }

    #[test]
    fn per_gib_rates_scale_with_the_size_and_never_reach_zero() {
        let p = policy(
            QosScale::PerGib,
            QosRates {
                total_iops: Some(100),
                read_mbps: Some(2),
                ..QosRates::default()
            },
        );
        let l = rate_limits(&p, 10 << 30);
        assert_eq!(l.total_iops, Some(1000));
        assert_eq!(l.read_bytes_per_second, Some(20_000_000));
        let tiny = rate_limits(&p, 4096);
        assert_eq!(tiny.total_iops, Some(1));
    }

    #[test]
    fn zero_rates_are_no_limit_and_huge_ones_are_refused() {
        let r = normalized(QosRates {
            read_iops: Some(0),
            write_iops: Some(5),
            ..QosRates::default()
        })
        .expect("valid rates");
        assert_eq!(r.read_iops, None);
        assert_eq!(r.write_iops, Some(5));
        assert!(normalized(QosRates {
            write_mbps: Some(RATE_MAX + 1),
            ..QosRates::default()
        })
        .is_err());
    }
}
