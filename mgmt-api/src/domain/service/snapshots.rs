//! Snapshots: the service's operations on snapshot records.

use uuid::Uuid;

use super::{check_etag, check_labels, invalid, now_s, require_stable, Service};
use crate::domain::error::ServiceError;
use crate::domain::model::{Label, ResourceState, SnapshotRecord};
use crate::domain::rules;

/// A request to create a snapshot.
#[derive(Debug, Clone, Default)]
pub struct NewSnapshot {
    /// Name.
    pub name: String,
    /// Project.
    pub project: String,
    /// The volume to snapshot.
    pub source_volume: Uuid,
    /// Free text.
    pub description: String,
    /// Retention period, informational.
    pub retention_time: Option<String>,
    /// The snapshot's UUID, when the caller chooses it (KumoScale); a new
    /// random one otherwise.
    pub uuid: Option<Uuid>,
    /// Labels (Cinder's snapshot metadata).
    pub labels: Vec<Label>,
}

impl Service {
    /// Takes a snapshot of a volume; returns it Available.
    pub fn create_snapshot(&self, req: NewSnapshot) -> Result<SnapshotRecord, ServiceError> {
        rules::check_name("name", &req.name).map_err(invalid)?;
        rules::check_description(&req.description).map_err(invalid)?;
        check_labels(&req.labels)?;
        if let Some(r) = &req.retention_time {
            if r.chars().count() > rules::RETENTION_LEN_MAX || r.chars().any(char::is_control) {
                return Err(invalid(format!(
                    "retentionTime must be at most {} characters without control characters",
                    rules::RETENTION_LEN_MAX
                )));
            }
        }
        self.require_project(&req.project)?;
        let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
        let record = self.inner.commit(|c| {
            if c.volumes.contains_key(&uuid) || c.snapshots.contains_key(&uuid) {
                return Err(ServiceError::AlreadyExists {
                    what: "snapshot",
                    name: uuid.to_string(),
                });
            }
            if c.snapshot_named(&req.project, &req.name).is_some() {
                return Err(ServiceError::AlreadyExists {
                    what: "snapshot",
                    name: req.name.clone(),
                });
            }
            let v = c
                .volumes
                .get(&req.source_volume)
                .ok_or(ServiceError::NotFound {
                    what: "volume",
                    id: req.source_volume.to_string(),
                })?;
            if v.project != req.project {
                return Err(invalid(format!(
                    "volume {} belongs to another project",
                    v.uuid
                )));
            }
            require_stable("volume", v.uuid, v.state)?;
            let record = SnapshotRecord {
                uuid,
                name: req.name.clone(),
                project: req.project.clone(),
                state: ResourceState::Creating,
                source_volume: v.uuid,
                source_volume_name: v.name.clone(),
                size_bytes: v.size_bytes,
                sector_size_bytes: v.sector_size_bytes,
                compression: v.compression,
                replica_count: v.replica_count,
                description: req.description.clone(),
                retention_time: req.retention_time.clone(),
                revision: 1,
                created_at_s: now_s(),
                seq: c.next_seq,
            };
            c.next_seq = c.next_seq.wrapping_add(1);
            c.snapshots.insert(uuid, record.clone());
            if !req.labels.is_empty() {
                c.snapshot_labels.insert(uuid, req.labels.clone());
            }
            Ok(record)
        })?;
        match self
            .inner
            .control
            .create_snapshot(record.source_volume, uuid)
        {
            Ok(()) => self.inner.commit(|c| {
                let s = c.snapshots.get_mut(&uuid).ok_or(ServiceError::NotFound {
                    what: "snapshot",
                    id: uuid.to_string(),
                })?;
                s.state = ResourceState::Available;
                s.revision = s.revision.wrapping_add(1);
                Ok(s.clone())
            }),
            Err(err) => {
                let _ = self.inner.commit(|c| {
                    c.remove_snapshot(&uuid);
                    Ok(())
                });
                Err(err.into())
            }
        }
    }

    /// A snapshot.
    pub fn snapshot(&self, uuid: Uuid) -> Result<SnapshotRecord, ServiceError> {
        self.inner
            .catalog()
            .snapshots
            .get(&uuid)
            .cloned()
            .ok_or(ServiceError::NotFound {
                what: "snapshot",
                id: uuid.to_string(),
            })
    }

    /// The snapshot called `name` in `project`.
    pub fn snapshot_by_name(
        &self,
        project: &str,
        name: &str,
    ) -> Result<SnapshotRecord, ServiceError> {
        self.inner
            .catalog()
            .snapshot_named(project, name)
            .cloned()
            .ok_or(ServiceError::NotFound {
                what: "snapshot",
                id: name.to_owned(),
            })
    }

    /// Snapshots of `project` (optionally of one volume), in UUID order.
    pub fn snapshots(
        &self,
        project: Option<&str>,
        source_volume: Option<Uuid>,
        show_all: bool,
    ) -> Vec<SnapshotRecord> {
        self.inner
            .catalog()
            .snapshots
            .values()
            .filter(|s| project.is_none_or(|p| s.project == p))
            .filter(|s| source_volume.is_none_or(|v| s.source_volume == v))
            .filter(|s| show_all || s.state != ResourceState::Deleting)
            .cloned()
            .collect()
    }

    /// A snapshot's labels (none for most).
    pub fn snapshot_labels(&self, uuid: Uuid) -> Vec<Label> {
        self.inner
            .catalog()
            .snapshot_labels
            .get(&uuid)
            .cloned()
            .unwrap_or_default()
    }

    /// Replaces a snapshot's labels.
    pub fn set_snapshot_labels(&self, uuid: Uuid, labels: Vec<Label>) -> Result<(), ServiceError> {
        check_labels(&labels)?;
        self.inner.commit(|c| {
            if !c.snapshots.contains_key(&uuid) {
                return Err(ServiceError::NotFound {
                    what: "snapshot",
                    id: uuid.to_string(),
                });
            }
            if labels.is_empty() {
                c.snapshot_labels.remove(&uuid);
            } else {
                c.snapshot_labels.insert(uuid, labels.clone());
            }
            Ok(())
        })
    }

    /// Marks a snapshot Deleting; the worker finishes the delete.
    pub fn delete_snapshot(&self, uuid: Uuid, etag: Option<&str>) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let busy = c
                .workflows
                .values()
                .any(|w| w.is_running() && w.source_snapshot == uuid);
            let s = c.snapshots.get_mut(&uuid).ok_or(ServiceError::NotFound {
                what: "snapshot",
                id: uuid.to_string(),
            })?;
            match s.state {
                ResourceState::Deleting => {
                    return Err(ServiceError::InvalidState {
                        what: "snapshot",
                        id: uuid,
                        state: s.state,
                    })
                }
                ResourceState::Creating | ResourceState::Updating => {
                    return Err(ServiceError::TemporaryState {
                        what: "snapshot",
                        id: uuid,
                        state: s.state,
                    })
                }
                ResourceState::Available | ResourceState::Failed => {}
            }
            check_etag(etag, s.revision)?;
            if busy {
                return Err(ServiceError::OperationInProgress(format!(
                    "snapshot {uuid} is the source of a running workflow"
                )));
            }
            s.state = ResourceState::Deleting;
            s.revision = s.revision.wrapping_add(1);
            Ok(())
        })?;
        self.inner.notify();
        Ok(())
    }
}
