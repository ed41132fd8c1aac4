//! Project quotas: what a project's volumes provision together (their sizes
//! and their QoS limits), held against the project's budget when a volume is
//! created, cloned or grown, or its QoS policy changes.

use uuid::Uuid;

use super::error::ServiceError;
use super::model::{Catalog, ProjectQuota, ResourceState, VolumeRecord};
use super::qos;
use crate::control::VolumeRateLimits;

/// What volumes provision: bytes, IOPS and bytes per second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Provisioned {
    /// Sum of the volumes' sizes.
    pub capacity_bytes: u64,
    /// Sum of the volumes' IOPS limits (an unlimited volume counts 0).
    pub iops: u64,
    /// Sum of the volumes' bandwidth limits (an unlimited volume counts 0).
    pub bandwidth_bytes_per_s: u64,
}

impl Provisioned {
    fn add(self, other: Provisioned) -> Provisioned {
        Provisioned {
            capacity_bytes: self.capacity_bytes.saturating_add(other.capacity_bytes),
            iops: self.iops.saturating_add(other.iops),
            bandwidth_bytes_per_s: self
                .bandwidth_bytes_per_s
                .saturating_add(other.bandwidth_bytes_per_s),
        }
    }
}

/// What one volume of `size_bytes` under `limits` provisions: its total
/// limits, or its read and write limits together.
pub fn of_limits(size_bytes: u64, limits: &VolumeRateLimits) -> Provisioned {
    let either = |total: Option<u64>, read: Option<u64>, write: Option<u64>| {
        total.unwrap_or_else(|| read.unwrap_or(0).saturating_add(write.unwrap_or(0)))
    };
    Provisioned {
        capacity_bytes: size_bytes,
        iops: either(limits.total_iops, limits.read_iops, limits.write_iops),
        bandwidth_bytes_per_s: either(
            limits.total_bytes_per_second,
            limits.read_bytes_per_second,
            limits.write_bytes_per_second,
        ),
    }
}

fn of_volume(catalog: &Catalog, volume: &VolumeRecord) -> Provisioned {
    of_limits(volume.size_bytes, &qos::volume_rate_limits(catalog, volume))
}

/// What `project`'s volumes (not being deleted) provision together, leaving
/// out `except`.
pub fn provisioned(catalog: &Catalog, project: &str, except: Option<Uuid>) -> Provisioned {
    catalog
        .volumes
        .values()
        .filter(|v| v.project == project && v.state != ResourceState::Deleting)
        .filter(|v| Some(v.uuid) != except)
        .fold(Provisioned::default(), |sum, v| {
            sum.add(of_volume(catalog, v))
        })
}

/// Fails with [`ServiceError::QuotaExceeded`] if `project` provisioning
/// `change` more (in place of volume `replacing`, when given) would pass its
/// quota.
pub fn check(
    catalog: &Catalog,
    project: &str,
    change: Provisioned,
    replacing: Option<Uuid>,
) -> Result<(), ServiceError> {
    let Some(quota) = catalog.projects.get(project).and_then(|p| p.quota) else {
        return Ok(());
    };
    let total = provisioned(catalog, project, replacing).add(change);
    let over = |what: &str, have: u64, most: u64| {
        (have > most).then(|| {
            ServiceError::QuotaExceeded(format!(
                "project {project:?} would provision {have} {what}, more than its quota of {most}"
            ))
        })
    };
    match over("bytes", total.capacity_bytes, quota.capacity_bytes)
        .or_else(|| over("IOPS", total.iops, quota.iops))
        .or_else(|| {
            over(
                "bytes per second",
                total.bandwidth_bytes_per_s,
                quota.bandwidth_bytes_per_s,
            )
        }) {
        Some(err) => Err(err),
        None => Ok(()),
    }
}

/// Fails unless `quota` holds what `project` already provisions (a quota
/// is never set below what exists).
pub fn check_fits(
    catalog: &Catalog,
    project: &str,
    quota: &ProjectQuota,
) -> Result<(), ServiceError> {
    let have = provisioned(catalog, project, None);
    if have.capacity_bytes > quota.capacity_bytes
        || have.iops > quota.iops
        || have.bandwidth_bytes_per_s > quota.bandwidth_bytes_per_s
    {
        return Err(ServiceError::QuotaExceeded(format!(
            "project {project:?} already provisions {} bytes, {} IOPS and {} bytes per second",
            have.capacity_bytes, have.iops, have.bandwidth_bytes_per_s
        )));
    }
    Ok(())
}
