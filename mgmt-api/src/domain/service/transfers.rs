//! Volume transfers: a project offers a volume, and the project that
//! presents the offer's key takes it, with its snapshots unless the offer
//! said otherwise. While offered, the volume shows the status
//! `awaiting-transfer` and cannot be attached or deleted.
//!
//! INVARIANT: a volume is offered at most once at a time; accepting moves
//! the volume (and its snapshots) in one catalog commit, after the name,
//! QoS and quota rules of the new project are checked.

use uuid::Uuid;

use super::{invalid, now_s, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::{ResourceState, TransferRecord};
use crate::domain::{qos, quota};

/// The status a volume on offer shows.
pub const AWAITING_TRANSFER: &str = "awaiting-transfer";

fn not_found(id: Uuid) -> ServiceError {
    ServiceError::NotFound {
        what: "transfer",
        id: id.to_string(),
    }
}

/// SHA-256 (hex) of `salt` followed by `key`.
fn key_hash(salt: &str, key: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, format!("{salt}{key}").as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

impl Service {
    /// Offers `volume` for transfer; returns the offer and its key (shown
    /// once: only its hash is kept).
    pub fn create_transfer(
        &self,
        volume: Uuid,
        name: &str,
        with_snapshots: bool,
    ) -> Result<(TransferRecord, String), ServiceError> {
        crate::domain::rules::check_description(name).map_err(invalid)?;
        let key = Uuid::new_v4().simple().to_string()[..16].to_owned();
        let salt = Uuid::new_v4().simple().to_string();
        let record = self.inner.commit(|c| {
            let v = c.volumes.get(&volume).ok_or(ServiceError::NotFound {
                what: "volume",
                id: volume.to_string(),
            })?;
            if v.state != ResourceState::Available
                || c.attach_status.contains_key(&volume)
                || c.attachments.values().any(|a| a.volume == volume)
            {
                return Err(invalid(format!(
                    "volume {volume} must be available, not attached or in another workflow, to be transferred"
                )));
            }
            if c.transfers.values().any(|t| t.volume == volume) {
                return Err(invalid(format!("volume {volume} is already offered for transfer")));
            }
            let record = TransferRecord {
                id: Uuid::new_v4(),
                name: name.to_owned(),
                volume,
                source_project: v.project.clone(),
                key_sha256: key_hash(&salt, &key),
                salt: salt.clone(),
                with_snapshots,
                created_at_s: now_s(),
            };
            c.transfers.insert(record.id, record.clone());
            c.attach_status.insert(volume, AWAITING_TRANSFER.to_owned());
            Ok(record)
        })?;
        Ok((record, key))
    }

    /// Every offer, in id order.
    pub fn transfers(&self) -> Vec<TransferRecord> {
        self.inner.catalog().transfers.values().cloned().collect()
    }

    /// One offer.
    pub fn transfer(&self, id: Uuid) -> Result<TransferRecord, ServiceError> {
        self.inner
            .catalog()
            .transfers
            .get(&id)
            .cloned()
            .ok_or_else(|| not_found(id))
    }

    /// Withdraws an offer; the volume is available again.
    pub fn cancel_transfer(&self, id: Uuid) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let t = c.transfers.remove(&id).ok_or_else(|| not_found(id))?;
            c.attach_status.remove(&t.volume);
            Ok(())
        })
    }

    /// Moves the offered volume (and its snapshots, if offered with them)
    /// to `project`, given the offer's key.
    pub fn accept_transfer(
        &self,
        id: Uuid,
        key: &str,
        project: &str,
    ) -> Result<TransferRecord, ServiceError> {
        self.require_project(project)?;
        self.inner.commit(|c| {
            let t = c.transfers.get(&id).cloned().ok_or_else(|| not_found(id))?;
            if key_hash(&t.salt, key) != t.key_sha256 {
                return Err(invalid(format!(
                    "the authorization key of transfer {id} is not that"
                )));
            }
            let v = c
                .volumes
                .get(&t.volume)
                .cloned()
                .ok_or(ServiceError::NotFound {
                    what: "volume",
                    id: t.volume.to_string(),
                })?;
            if c.volume_named(project, &v.name)
                .is_some_and(|o| o.uuid != v.uuid)
            {
                return Err(ServiceError::AlreadyExists {
                    what: "volume",
                    name: v.name.clone(),
                });
            }
            let policy = v.qos_policy.and_then(|p| c.qos_policies.get(&p)).cloned();
            if let Some(p) = &policy {
                if !p.available_to(project) {
                    return Err(invalid(format!(
                        "the volume's QoS policy {:?} belongs to project {:?}",
                        p.name,
                        p.project.as_deref().unwrap_or_default()
                    )));
                }
            }
            let limits = policy
                .map(|p| qos::rate_limits(&p, v.size_bytes))
                .unwrap_or_default();
            quota::check(c, project, quota::of_limits(v.size_bytes, &limits), None)?;
            let snapshots: Vec<Uuid> = c
                .snapshots
                .values()
                .filter(|s| {
                    t.with_snapshots && s.source_volume == v.uuid && s.project == t.source_project
                })
                .map(|s| s.uuid)
                .collect();
            for s in &snapshots {
                if let Some(name) = c.snapshots.get(s).map(|s| s.name.clone()) {
                    if c.snapshot_named(project, &name).is_some() {
                        return Err(ServiceError::AlreadyExists {
                            what: "snapshot",
                            name,
                        });
                    }
                }
            }
            if let Some(v) = c.volumes.get_mut(&t.volume) {
                v.project = project.to_owned();
                v.revision = v.revision.wrapping_add(1);
            }
            for s in &snapshots {
                if let Some(s) = c.snapshots.get_mut(s) {
                    s.project = project.to_owned();
                    s.revision = s.revision.wrapping_add(1);
                }
            }
            c.transfers.remove(&id);
            c.attach_status.remove(&t.volume);
            Ok(t)
        })
    }
}
