//! Volumes, thin clones and their ACLs, QoS and rollback: the service's
//! operations on volume records.

use uuid::Uuid;

use super::{
    check_etag, check_labels, invalid, named_policy, now_s, require_stable, volume_access, Service,
    LIST_LIMIT_MAX,
};
use crate::control::{ControlError, VolumeReplication, VolumeSpec, VolumeUsage};
use crate::domain::error::ServiceError;
use crate::domain::model::{Label, ResourceState, VolumeRecord};
use crate::domain::qos::{self, QosPolicyRef};
use crate::domain::quota;
use crate::domain::rules;

/// A request to create a volume (validated by the service).
#[derive(Debug, Clone, Default)]
pub struct NewVolume {
    /// Name.
    pub name: String,
    /// Project.
    pub project: String,
    /// Size in bytes; defaults to the source snapshot's for clones.
    pub size_bytes: Option<u64>,
    /// 512 or 4096; defaults to 4096 (or the snapshot's).
    pub sector_size_bytes: Option<u32>,
    /// Replica count; defaults to 1.
    pub replica_count: Option<u32>,
    /// Compression; defaults to off (or the snapshot's).
    pub compression: Option<bool>,
    /// Host ACL values; defaults to `ALLOW_NONE`.
    pub acl: Option<Vec<String>>,
    /// IP ACL values; defaults to `ALLOW_ANY`.
    pub ip_acl: Option<Vec<String>>,
    /// QoS policy; `None`: the project's default policy, if it has one.
    pub qos_policy: Option<QosPolicyRef>,
    /// Labels.
    pub labels: Vec<Label>,
    /// The volume's UUID, when the caller chooses it (KumoScale); a new
    /// random one otherwise.
    pub uuid: Option<Uuid>,
    /// Recorded as the live volume this one clones (see
    /// [`Service::clone_volume`]).
    pub source_volume: Option<Uuid>,
    /// Create a thin clone of this snapshot.
    pub source_snapshot: Option<Uuid>,
    /// Create a thin clone of the snapshot of this name in the volume's
    /// project (with `source_snapshot` too, both must name one snapshot).
    pub source_snapshot_name: Option<String>,
    /// The volume type whose settings fill what the request leaves open
    /// (`None`: the built-in default type, which sets nothing).
    pub volume_type: Option<Uuid>,
}

/// Changes to a volume; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct VolumeChanges {
    /// New size in bytes (must not shrink).
    pub size_bytes: Option<u64>,
    /// New compression setting.
    pub compression: Option<bool>,
    /// New host ACL.
    pub acl: Option<Vec<String>>,
    /// New IP ACL.
    pub ip_acl: Option<Vec<String>>,
    /// New QoS policy.
    pub qos_policy: Option<QosPolicyRef>,
    /// New labels (replace all).
    pub labels: Option<Vec<Label>>,
}

/// Filters and paging of a volume list.
#[derive(Debug, Clone, Default)]
pub struct VolumeFilter {
    /// Only this project (None: every project).
    pub project: Option<String>,
    /// Only this UUID.
    pub uuid: Option<Uuid>,
    /// Only this name.
    pub name: Option<String>,
    /// Start after this UUID.
    pub offset: Option<Uuid>,
    /// At most this many (capped at [`LIST_LIMIT_MAX`]).
    pub limit: Option<usize>,
    /// Only clones of this snapshot.
    pub source_snapshot: Option<Uuid>,
    /// Include Deleting volumes.
    pub show_all: bool,
}

/// A volume with its live usage.
#[derive(Debug, Clone)]
pub struct VolumeView {
    /// The catalog record.
    pub record: VolumeRecord,
    /// Usage reported by the engine (zero if it could not be read).
    pub usage: VolumeUsage,
    /// Replica placement and protection on a cluster (`None` on one node).
    pub replication: Option<VolumeReplication>,
    /// The name of the volume's QoS policy.
    pub qos_policy_name: Option<String>,
}

impl Service {
    /// Creates a volume (or a thin clone when `source_snapshot` is set) and
    /// exposes it; returns it Available.
    pub fn create_volume(&self, req: NewVolume) -> Result<VolumeView, ServiceError> {
        rules::check_name("name", &req.name).map_err(invalid)?;
        self.require_project(&req.project)?;
        let typed = req
            .volume_type
            .map(|t| self.type_settings(t, &req.project))
            .transpose()?
            .unwrap_or_default();
        let replica_count = req.replica_count.or(typed.replica_count).unwrap_or(1);
        rules::check_replica_count(replica_count, self.inner.config.max_replicas)
            .map_err(invalid)?;
        let acl = req
            .acl
            .clone()
            .unwrap_or_else(|| vec![rules::ALLOW_NONE.to_owned()]);
        rules::check_host_acl(&acl).map_err(invalid)?;
        let ip_acl = req
            .ip_acl
            .clone()
            .unwrap_or_else(|| vec![rules::ALLOW_ANY.to_owned()]);
        rules::check_ip_acl(&ip_acl).map_err(invalid)?;
        check_labels(&req.labels)?;
        let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
        let record = self.inner.commit(|c| {
            if c.volumes.contains_key(&uuid) || c.snapshots.contains_key(&uuid) {
                return Err(ServiceError::AlreadyExists {
                    what: "volume",
                    name: uuid.to_string(),
                });
            }
            if c.volume_named(&req.project, &req.name).is_some() {
                return Err(ServiceError::AlreadyExists {
                    what: "volume",
                    name: req.name.clone(),
                });
            }
            let source_id = match (req.source_snapshot, &req.source_snapshot_name) {
                (None, Some(name)) => Some(
                    c.snapshot_named(&req.project, name)
                        .ok_or(ServiceError::NotFound {
                            what: "snapshot",
                            id: name.clone(),
                        })?
                        .uuid,
                ),
                (id, _) => id,
            };
            let source = match source_id {
                Some(id) => {
                    let s = c.snapshots.get(&id).ok_or(ServiceError::NotFound {
                        what: "snapshot",
                        id: id.to_string(),
                    })?;
                    if let Some(name) = req.source_snapshot_name.as_ref().filter(|n| **n != s.name) {
                        return Err(invalid(format!(
                            "sourceSnapshotUUID {id} and sourceSnapshotName {name:?} name different snapshots"
                        )));
                    }
                    if s.project != req.project {
                        return Err(invalid(format!("snapshot {id} belongs to another project")));
                    }
                    match s.state {
                        ResourceState::Available => Some(s.clone()),
                        ResourceState::Creating | ResourceState::Updating => {
                            return Err(ServiceError::TemporaryState {
                                what: "snapshot",
                                id,
                                state: s.state,
                            })
                        }
                        ResourceState::Deleting | ResourceState::Failed => {
                            return Err(ServiceError::InvalidState {
                                what: "snapshot",
                                id,
                                state: s.state,
                            })
                        }
                    }
                }
                None => None,
            };
            let sector = req
                .sector_size_bytes
                .or(source.as_ref().map(|s| s.sector_size_bytes))
                .unwrap_or(4096);
            rules::check_sector_size(sector).map_err(invalid)?;
            let size = match (req.size_bytes, &source) {
                (Some(size), Some(s)) if size < s.size_bytes => {
                    return Err(invalid(format!(
                        "size {size} is smaller than the source snapshot's size {}",
                        s.size_bytes
                    )))
                }
                (Some(size), _) => size,
                (None, Some(s)) => s.size_bytes,
                (None, None) => return Err(invalid("size is mandatory".to_owned())),
            };
            if size == 0 || !rules::is_multiple(size, u64::from(sector)) {
                return Err(invalid(format!(
                    "size {size} must be a positive multiple of the sector size {sector}"
                )));
            }
            if let Some(t) = req.volume_type {
                if !c.volume_types.contains_key(&t) {
                    return Err(ServiceError::NotFound {
                        what: "volume type",
                        id: t.to_string(),
                    });
                }
            }
            let qos_policy = match &req.qos_policy {
                Some(reference) => Some(qos::resolve(c, &req.project, "qosPolicy", reference)?),
                None => typed.qos_policy.or_else(|| {
                    c.projects
                        .get(&req.project)
                        .and_then(|p| p.default_qos_policy)
                }),
            };
            let limits = qos_policy
                .and_then(|p| c.qos_policies.get(&p))
                .map(|p| qos::rate_limits(p, size))
                .unwrap_or_default();
            quota::check(c, &req.project, quota::of_limits(size, &limits), None)?;
            let nsid = self.inner.reserve_nsid(c)?;
            let record = VolumeRecord {
                uuid,
                name: req.name.clone(),
                project: req.project.clone(),
                state: ResourceState::Creating,
                size_bytes: size,
                sector_size_bytes: sector,
                replica_count,
                compression: req
                    .compression
                    .or(typed.compression)
                    .or(source.as_ref().map(|s| s.compression))
                    .unwrap_or(false),
                acl: acl.clone(),
                ip_acl: ip_acl.clone(),
                qos_policy,
                labels: req.labels.clone(),
                source_snapshot: source.as_ref().map(|s| s.uuid),
                source_volume: req.source_volume,
                nsid: Some(nsid),
                revision: 1,
                created_at_s: now_s(),
                workflow: None,
                failure: None,
            };
            c.volumes.insert(uuid, record.clone());
            if let Some(t) = req.volume_type {
                c.volume_type_of.insert(uuid, t);
            }
            Ok(record)
        })?;
        let spec = VolumeSpec {
            uuid,
            size_bytes: record.size_bytes,
            sector_size_bytes: record.sector_size_bytes,
            compression: record.compression,
            replica_count: record.replica_count,
        };
        let created = match record.source_snapshot {
            Some(snapshot) => self.inner.control.create_clone(snapshot, &spec),
            None => self.inner.control.create_volume(&spec),
        };
        let exposed = created.and_then(|()| {
            self.inner
                .control
                .set_access(uuid, &volume_access(&record.acl, &record.ip_acl))?;
            self.inner.apply_rate_limits(uuid)?;
            let nsid = record.nsid.ok_or_else(|| {
                ControlError::Internal("the new record holds no namespace id".to_owned())
            })?;
            self.inner.control.expose_volume(uuid, nsid)
        });
        match exposed {
            Ok(()) => {
                self.inner.commit(|c| {
                    if let Some(v) = c.volumes.get_mut(&uuid) {
                        v.state = ResourceState::Available;
                        v.revision = v.revision.wrapping_add(1);
                    }
                    Ok(())
                })?;
                self.volume(uuid)
            }
            Err(err) => {
                self.inner.abandon_volume(uuid, &err);
                Err(err.into())
            }
        }
    }

    /// Creates a point-in-time clone of the live volume `source`: a
    /// snapshot of it, a thin clone of that, then the snapshot's deletion
    /// (the clone holds its own references to the data). `req` names the
    /// new volume as for [`Service::create_volume`]; its size defaults to
    /// the source's.
    pub fn clone_volume(&self, source: Uuid, req: NewVolume) -> Result<VolumeView, ServiceError> {
        let uuid = req.uuid.unwrap_or_else(Uuid::new_v4);
        let point = self.create_snapshot(crate::domain::NewSnapshot {
            name: format!("{}{uuid}", crate::domain::model::CLONE_POINT_PREFIX),
            project: req.project.clone(),
            source_volume: source,
            description: format!("point in time of clone {}", req.name),
            ..crate::domain::NewSnapshot::default()
        })?;
        let created = self.create_volume(NewVolume {
            source_snapshot: Some(point.uuid),
            source_snapshot_name: None,
            source_volume: Some(source),
            uuid: Some(uuid),
            ..req
        });
        if let Err(e) = self.delete_snapshot(point.uuid, None) {
            tracing::warn!(snapshot = %point.uuid, error = %e, "a clone's point-in-time snapshot was not deleted");
        }
        created
    }

    /// The rates a volume's QoS policy holds it to (unlimited without one,
    /// or for an unknown volume).
    pub fn volume_rate_limits(&self, uuid: Uuid) -> crate::control::VolumeRateLimits {
        let catalog = self.inner.catalog();
        catalog
            .volumes
            .get(&uuid)
            .map(|v| qos::volume_rate_limits(&catalog, v))
            .unwrap_or_default()
    }

    /// A volume with its usage.
    pub fn volume(&self, uuid: Uuid) -> Result<VolumeView, ServiceError> {
        let found = {
            let c = self.inner.catalog();
            c.volumes.get(&uuid).map(|r| named_policy(&c, r))
        };
        let (record, policy) = found.ok_or(ServiceError::NotFound {
            what: "volume",
            id: uuid.to_string(),
        })?;
        Ok(self.view(record, policy))
    }

    /// The volume called `name` in `project`.
    pub fn volume_by_name(&self, project: &str, name: &str) -> Result<VolumeView, ServiceError> {
        let found = {
            let c = self.inner.catalog();
            c.volume_named(project, name).map(|r| named_policy(&c, r))
        };
        let (record, policy) = found.ok_or(ServiceError::NotFound {
            what: "volume",
            id: name.to_owned(),
        })?;
        Ok(self.view(record, policy))
    }

    /// `record` with its live usage and replication; `qos_policy_name` is
    /// its policy's name, read from the same catalog as the record.
    fn view(&self, record: VolumeRecord, qos_policy_name: Option<String>) -> VolumeView {
        let usage = match record.state {
            ResourceState::Available | ResourceState::Updating => self
                .inner
                .control
                .volume_usage(record.uuid)
                .unwrap_or_default(),
            ResourceState::Creating | ResourceState::Deleting | ResourceState::Failed => {
                VolumeUsage::default()
            }
        };
        let replication = match record.state {
            ResourceState::Available | ResourceState::Updating => self
                .inner
                .control
                .replication(record.uuid)
                .unwrap_or_default(),
            ResourceState::Creating | ResourceState::Deleting | ResourceState::Failed => None,
        };
        VolumeView {
            record,
            usage,
            replication,
            qos_policy_name,
        }
    }

    /// Volumes matching `filter`, in UUID order, at most `limit` (≤ 1000).
    pub fn volumes(&self, filter: &VolumeFilter) -> Vec<VolumeView> {
        let limit = filter.limit.unwrap_or(LIST_LIMIT_MAX).min(LIST_LIMIT_MAX);
        let records: Vec<(VolumeRecord, Option<String>)> = {
            let catalog = self.inner.catalog();
            let start = match filter.offset {
                Some(o) => std::ops::Bound::Excluded(o),
                None => std::ops::Bound::Unbounded,
            };
            catalog
                .volumes
                .range((start, std::ops::Bound::Unbounded))
                .map(|(_, v)| v)
                .filter(|v| filter.project.as_ref().is_none_or(|p| &v.project == p))
                .filter(|v| filter.uuid.is_none_or(|u| v.uuid == u))
                .filter(|v| filter.name.as_ref().is_none_or(|n| &v.name == n))
                .filter(|v| {
                    filter
                        .source_snapshot
                        .is_none_or(|s| v.source_snapshot == Some(s))
                })
                .filter(|v| filter.show_all || v.state != ResourceState::Deleting)
                .take(limit)
                .map(|v| named_policy(&catalog, v))
                .collect()
        };
        records
            .into_iter()
            .map(|(r, policy)| self.view(r, policy))
            .collect()
    }

    /// Applies `changes` to a volume after checking its state and ETag.
    pub fn update_volume(
        &self,
        uuid: Uuid,
        changes: VolumeChanges,
        etag: Option<&str>,
    ) -> Result<VolumeView, ServiceError> {
        if let Some(acl) = &changes.acl {
            rules::check_host_acl(acl).map_err(invalid)?;
        }
        if let Some(acl) = &changes.ip_acl {
            rules::check_ip_acl(acl).map_err(invalid)?;
        }
        if let Some(labels) = &changes.labels {
            check_labels(labels)?;
        }
        // Phase 1: validate against the current record and mark it Updating if the
        // engine has work to do.
        let (before, engine_work, new_limits) = self.inner.commit(|c| {
            let project = c.volumes.get(&uuid).map(|v| v.project.clone());
            let new_policy = match (&changes.qos_policy, project) {
                (Some(reference), Some(project)) => {
                    Some(Some(qos::resolve(c, &project, "qosPolicy", reference)?))
                }
                _ => None,
            };
            let policies = c.qos_policies.clone();
            let v = c.volumes.get_mut(&uuid).ok_or(ServiceError::NotFound {
                what: "volume",
                id: uuid.to_string(),
            })?;
            require_stable("volume", uuid, v.state)?;
            check_etag(etag, v.revision)?;
            if let Some(size) = changes.size_bytes {
                if size < v.size_bytes {
                    return Err(invalid(format!(
                        "size {size} is smaller than the current size {}; volumes only grow",
                        v.size_bytes
                    )));
                }
                if !rules::is_multiple(size, u64::from(v.sector_size_bytes)) {
                    return Err(invalid(format!(
                        "size {size} is not a multiple of the sector size {}",
                        v.sector_size_bytes
                    )));
                }
            }
            let before = v.clone();
            // The limits the volume gets if every change goes through: a new
            // policy, or a per-GiB policy's rates at a new size.
            let mut target = v.clone();
            if let Some(policy) = new_policy {
                target.qos_policy = policy;
            }
            if let Some(size) = changes.size_bytes {
                target.size_bytes = size;
            }
            let limits_of = |r: &VolumeRecord| {
                r.qos_policy
                    .and_then(|p| policies.get(&p))
                    .map(|p| qos::rate_limits(p, r.size_bytes))
            };
            let grown =
                quota::of_limits(target.size_bytes, &limits_of(&target).unwrap_or_default());
            let new_limits = (target.qos_policy != v.qos_policy
                || limits_of(&target) != limits_of(v))
            .then(|| (target.qos_policy, limits_of(&target).unwrap_or_default()));
            let engine_work = changes.size_bytes.is_some_and(|s| s != v.size_bytes)
                || changes.compression.is_some_and(|c| c != v.compression)
                || changes.acl.as_ref().is_some_and(|a| *a != v.acl)
                || changes.ip_acl.as_ref().is_some_and(|a| *a != v.ip_acl)
                || new_limits.is_some();
            // INVARIANT: the revision (the ETag) moves only in phase 3 and only if
            // a field changed, so a refused or failed update leaves it as it was
            // and a successful one raises it exactly once. `Updating` alone already
            // fences concurrent writers: they get 503 before their ETag is checked.
            let project = v.project.clone();
            if target.size_bytes > v.size_bytes || new_limits.is_some() {
                quota::check(c, &project, grown, Some(uuid))?;
            }
            if engine_work {
                if let Some(v) = c.volumes.get_mut(&uuid) {
                    v.state = ResourceState::Updating;
                }
            }
            Ok((before, engine_work, new_limits))
        })?;
        // Phase 2: the engine work, without the lock; each step that succeeds is kept.
        let mut after = before.clone();
        let mut failure: Option<ControlError> = None;
        if engine_work {
            let control = &self.inner.control;
            if let Some(size) = changes.size_bytes.filter(|s| *s != before.size_bytes) {
                match control.grow_volume(uuid, size) {
                    Ok(()) => after.size_bytes = size,
                    Err(e) => failure = Some(e),
                }
            }
            if let (None, Some(enabled)) = (
                &failure,
                changes.compression.filter(|c| *c != before.compression),
            ) {
                match control.set_compression(uuid, enabled) {
                    Ok(()) => after.compression = enabled,
                    Err(e) => failure = Some(e),
                }
            }
            let acl = changes.acl.as_ref().unwrap_or(&before.acl);
            let ip_acl = changes.ip_acl.as_ref().unwrap_or(&before.ip_acl);
            if failure.is_none() && (*acl != before.acl || *ip_acl != before.ip_acl) {
                match control.set_access(uuid, &volume_access(acl, ip_acl)) {
                    Ok(()) => {
                        after.acl = acl.clone();
                        after.ip_acl = ip_acl.clone();
                    }
                    Err(e) => failure = Some(e),
                }
            }
            if let (None, Some((policy, limits))) = (&failure, new_limits) {
                match control.set_rate_limits(uuid, &limits) {
                    Ok(()) => after.qos_policy = policy,
                    Err(e) => failure = Some(e),
                }
            }
        }
        if failure.is_none() {
            if let Some(labels) = changes.labels {
                after.labels = labels;
            }
        }
        // Phase 3: record the outcome; the revision moves once, and only if a
        // field changed (a partly failed update keeps the steps that succeeded).
        self.inner.commit(|c| {
            if let Some(v) = c.volumes.get_mut(&uuid) {
                let changed = v.size_bytes != after.size_bytes
                    || v.compression != after.compression
                    || v.acl != after.acl
                    || v.ip_acl != after.ip_acl
                    || v.qos_policy != after.qos_policy
                    || v.labels != after.labels;
                if changed {
                    v.size_bytes = after.size_bytes;
                    v.compression = after.compression;
                    v.acl = after.acl.clone();
                    v.ip_acl = after.ip_acl.clone();
                    v.qos_policy = after.qos_policy;
                    v.labels = after.labels.clone();
                    v.revision = v.revision.wrapping_add(1);
                }
                v.state = ResourceState::Available;
            }
            Ok(())
        })?;
        match failure {
            Some(e) => Err(e.into()),
            None => self.volume(uuid),
        }
    }

    /// Renames a volume within its project. The name is catalog-only (hosts
    /// see the volume by its UUID and namespace id), so nothing changes on
    /// the engine; refused while the volume is changing or the name is taken.
    pub fn rename_volume(&self, uuid: Uuid, name: &str) -> Result<VolumeView, ServiceError> {
        rules::check_name("name", name).map_err(invalid)?;
        self.inner.commit(|c| {
            let v = c.volumes.get(&uuid).ok_or(ServiceError::NotFound {
                what: "volume",
                id: uuid.to_string(),
            })?;
            require_stable("volume", uuid, v.state)?;
            if v.name == name {
                return Ok(());
            }
            if c.volume_named(&v.project, name).is_some() {
                return Err(ServiceError::AlreadyExists {
                    what: "volume",
                    name: name.to_owned(),
                });
            }
            if let Some(v) = c.volumes.get_mut(&uuid) {
                v.name = name.to_owned();
                v.revision = v.revision.wrapping_add(1);
            }
            Ok(())
        })?;
        self.volume(uuid)
    }

    /// Marks a volume Deleting; the worker deletes it from the engine and then
    /// from the catalog (GET answers 404 from then on).
    pub fn delete_volume(&self, uuid: Uuid, etag: Option<&str>) -> Result<(), ServiceError> {
        self.inner.commit(|c| {
            let v = c.volumes.get_mut(&uuid).ok_or(ServiceError::NotFound {
                what: "volume",
                id: uuid.to_string(),
            })?;
            match v.state {
                ResourceState::Deleting => {
                    return Err(ServiceError::InvalidState {
                        what: "volume",
                        id: uuid,
                        state: v.state,
                    })
                }
                ResourceState::Creating | ResourceState::Updating => {
                    return Err(ServiceError::TemporaryState {
                        what: "volume",
                        id: uuid,
                        state: v.state,
                    })
                }
                ResourceState::Available | ResourceState::Failed => {}
            }
            check_etag(etag, v.revision)?;
            if v.workflow.is_some() {
                return Err(ServiceError::OperationInProgress(format!(
                    "volume {uuid} is the destination of a running workflow; cancel it first"
                )));
            }
            v.state = ResourceState::Deleting;
            v.revision = v.revision.wrapping_add(1);
            Ok(())
        })?;
        self.inner.notify();
        Ok(())
    }

    /// Rolls a volume back to one of its snapshots.
    pub fn rollback_volume(&self, uuid: Uuid, snapshot: Uuid) -> Result<VolumeView, ServiceError> {
        self.inner.commit(|c| {
            let s = c.snapshots.get(&snapshot).ok_or(ServiceError::NotFound {
                what: "snapshot",
                id: snapshot.to_string(),
            })?;
            if s.source_volume != uuid {
                return Err(invalid(format!(
                    "snapshot {snapshot} was not taken of volume {uuid}"
                )));
            }
            require_stable("snapshot", snapshot, s.state)?;
            let v = c.volumes.get_mut(&uuid).ok_or(ServiceError::NotFound {
                what: "volume",
                id: uuid.to_string(),
            })?;
            require_stable("volume", uuid, v.state)?;
            // As in `update_volume`: the revision moves once, after the engine
            // rolled back, and not at all if it refused.
            v.state = ResourceState::Updating;
            Ok(())
        })?;
        let result = self.inner.control.rollback_volume(uuid, snapshot);
        self.inner.commit(|c| {
            if let Some(v) = c.volumes.get_mut(&uuid) {
                v.state = ResourceState::Available;
                if result.is_ok() {
                    v.revision = v.revision.wrapping_add(1);
                }
            }
            Ok(())
        })?;
        result?;
        self.volume(uuid)
    }
}
