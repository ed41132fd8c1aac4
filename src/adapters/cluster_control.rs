//! The management API's control port on a clustered node: volumes are
//! records in etcd (placement, primary, epoch, in-sync set) that every
//! node's reconciler acts on; node-local matters (scrub, pool figures, node
//! identity) go to the node's own [`EngineControl`].
//!
//! Snapshots and rollbacks are requests in etcd that the volume's primary
//! carries out at one point of the write order (see
//! [`crate::cluster::snapshots`]); this port asks and waits for the answer.
//! A clone is a volume record placed on nodes that hold the snapshot, each
//! of which makes its replica from its own copy (thin, or by a local thick
//! clone job).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use engine::Engine;
use mgmt_api::control::{
    AddressAcl, CloneJobId, CloneJobState, CloneJobStatus, EngineSnapshot, EngineVolume, HostAcl,
    NodeInfo, NodeStatus, PoolStats, ScrubReport, VolumeAccess, VolumeRateLimits,
    VolumeReplication, VolumeSpec, VolumeUsage,
};
use mgmt_api::{Control, ControlError};
use uuid::Uuid;

use super::{target_access, EngineControl};
use crate::cluster::snapshots::{RollbackRecord, SnapshotRecord, SnapshotState, SnapshotStore};
use crate::cluster::volumes::{place, CloneSource, UpdateError, VolumeRecord, VolumeStore};
use crate::cluster::{Membership, NodeState};

/// How long a create waits for every placement node to hold its replica and
/// the primary to serve; also how long a snapshot or rollback waits for the
/// primary's answer.
const CREATE_WAIT: Duration = Duration::from_secs(20);

/// [`Control`] for a node of a cluster.
pub struct ClusterControl {
    local: EngineControl,
    engine: Arc<Engine>,
    membership: Arc<Membership>,
    store: VolumeStore,
    snapshots: SnapshotStore,
    runtime: tokio::runtime::Handle,
    /// Thick clone jobs cancelled through this node.
    cancelled: Mutex<HashSet<u64>>,
}

impl ClusterControl {
    /// Volume operations through `store` and `snapshots`; the rest through `local`.
    pub fn new(
        local: EngineControl,
        engine: Arc<Engine>,
        membership: Arc<Membership>,
        store: VolumeStore,
        snapshots: SnapshotStore,
        runtime: tokio::runtime::Handle,
    ) -> ClusterControl {
        ClusterControl {
            local,
            engine,
            membership,
            store,
            snapshots,
            runtime,
            cancelled: Mutex::new(HashSet::new()),
        }
    }

    fn unavailable(err: impl std::fmt::Display) -> ControlError {
        ControlError::Unavailable(format!("the cluster store: {err}"))
    }

    fn record(&self, volume: Uuid) -> Result<VolumeRecord, ControlError> {
        match self.runtime.block_on(self.store.get(volume)) {
            Ok(Some((record, _))) => Ok(record),
            Ok(None) => Err(ControlError::NotFound(volume)),
            Err(err) => Err(Self::unavailable(err)),
        }
    }

    fn update(
        &self,
        volume: Uuid,
        change: impl FnMut(&mut VolumeRecord) -> Result<(), ControlError>,
    ) -> Result<VolumeRecord, ControlError> {
        match self.runtime.block_on(self.store.update(volume, change)) {
            Ok(record) => Ok(record),
            Err(UpdateError::Refused(err)) => Err(err),
            Err(UpdateError::Missing) => Err(ControlError::NotFound(volume)),
            Err(UpdateError::Store(err)) => Err(Self::unavailable(err)),
        }
    }

    fn snapshot_record(&self, snapshot: Uuid) -> Result<SnapshotRecord, ControlError> {
        match self.runtime.block_on(self.snapshots.get(snapshot)) {
            Ok(Some(record)) if record.state == SnapshotState::Ready => Ok(record),
            Ok(_) => Err(ControlError::NotFound(snapshot)),
            Err(err) => Err(Self::unavailable(err)),
        }
    }

    /// Marks `snapshot` for deletion by its holders (and deletes the record
    /// when no node holds a copy).
    fn retire_snapshot(&self, snapshot: Uuid) -> Result<(), ControlError> {
        let result = self.runtime.block_on(async {
            let record = self
                .snapshots
                .update(snapshot, |r| {
                    r.state = SnapshotState::Deleting;
                    Ok::<(), ()>(())
                })
                .await?;
            if record.holders.is_empty() {
                self.snapshots.delete(snapshot).await?;
            }
            Ok::<(), UpdateError<()>>(())
        });
        match result {
            Ok(()) | Err(UpdateError::Refused(())) => Ok(()),
            Err(UpdateError::Missing) => Err(ControlError::NotFound(snapshot)),
            Err(UpdateError::Store(err)) => Err(Self::unavailable(err)),
        }
    }

    /// The record of a new volume placed on `placement` (primary first).
    fn new_record(
        spec: &VolumeSpec,
        placement: Vec<Uuid>,
        clone_of: Option<CloneSource>,
    ) -> VolumeRecord {
        VolumeRecord {
            uuid: spec.uuid,
            size_bytes: spec.size_bytes,
            sector_bytes: spec.sector_size_bytes,
            compression: spec.compression,
            replica_count: spec.replica_count,
            primary: placement[0],
            in_sync: placement.clone(),
            left_in_sync_at: Default::default(),
            placement,
            epoch: 0,
            nsid: None,
            acl: Some(Vec::new()),
            ip_acl: None,
            rate_limits: None,
            clone_of,
        }
    }

    /// Stores `record`; with `wait`, answers once its nodes serve it (and
    /// takes it back if they do not).
    fn store_record(&self, record: &VolumeRecord, wait: bool) -> Result<(), ControlError> {
        let created = self
            .runtime
            .block_on(self.store.create(record))
            .map_err(Self::unavailable)?;
        if !created {
            return Err(ControlError::AlreadyExists(record.uuid));
        }
        if wait {
            if let Err(err) = self.wait_until_served(record.uuid) {
                let _ = self.runtime.block_on(self.store.delete(record.uuid));
                return Err(err);
            }
        }
        Ok(())
    }

    /// Where a clone of `snapshot` with `replicas` replicas goes: active
    /// nodes holding the snapshot, the source volume's primary first.
    fn clone_placement(
        &self,
        snapshot: &SnapshotRecord,
        replicas: u32,
    ) -> Result<Vec<Uuid>, ControlError> {
        let nodes = self
            .runtime
            .block_on(self.membership.nodes())
            .map_err(Self::unavailable)?;
        let alive: BTreeSet<Uuid> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Active)
            .map(|n| n.record.uuid)
            .collect();
        let source_primary = self
            .runtime
            .block_on(self.store.get(snapshot.volume))
            .ok()
            .flatten()
            .map(|(r, _)| r.primary);
        let mut candidates: Vec<Uuid> = snapshot
            .holders
            .iter()
            .copied()
            .filter(|n| alive.contains(n))
            .collect();
        candidates.sort_by_key(|n| Some(*n) != source_primary);
        if candidates.len() < replicas as usize {
            return Err(ControlError::InvalidArgument(format!(
                "{replicas} replicas need {replicas} active nodes holding snapshot {}; {} do",
                snapshot.uuid,
                candidates.len()
            )));
        }
        candidates.truncate(replicas as usize);
        Ok(candidates)
    }

    /// Waits for the answer to `volume`'s rollback request `request`.
    fn wait_for_rollback(&self, volume: Uuid, request: Uuid) -> Result<(), ControlError> {
        let outcome = poll(Duration::from_millis(20), || {
            let current = self
                .runtime
                .block_on(self.snapshots.rollback(volume))
                .map_err(Self::unavailable)?;
            match current {
                Some(r) if r.request == request => Ok(r.outcome),
                _ => Err(ControlError::Internal(format!(
                    "volume {volume}: the rollback request vanished"
                ))),
            }
        })?;
        match outcome {
            Some(outcome) => {
                let _ = self
                    .runtime
                    .block_on(self.snapshots.delete_rollback(volume));
                outcome.map_err(ControlError::Unavailable)
            }
            None => Err(ControlError::Unavailable(format!(
                "volume {volume}: its primary did not roll it back within {CREATE_WAIT:?}; it may still"
            ))),
        }
    }

    /// How many of `record`'s placement nodes hold their replica.
    fn replicas_made(&self, record: &VolumeRecord) -> Result<usize, ControlError> {
        let marks = self
            .runtime
            .block_on(self.store.replica_marks())
            .map_err(Self::unavailable)?;
        Ok(record
            .placement
            .iter()
            .filter(|n| marks.contains(&(record.uuid, **n)))
            .count())
    }

    /// Waits until every placement node holds its replica and the primary
    /// started its first term.
    fn wait_until_served(&self, volume: Uuid) -> Result<(), ControlError> {
        let served = poll(Duration::from_millis(50), || {
            let record = self.record(volume)?;
            let placed = self.replicas_made(&record)? == record.placement.len();
            Ok((placed && record.epoch > 0).then_some(()))
        })?;
        served.ok_or_else(|| {
            ControlError::Unavailable(format!(
                "volume {volume}: its nodes did not take it up within {CREATE_WAIT:?}"
            ))
        })
    }
}

/// Calls `check` every `interval` until it answers `Some` (or an error),
/// for at most [`CREATE_WAIT`]; `None` when the wait ran out. Another node
/// answers through etcd, so this waits on that answer, bounded.
fn poll<T>(
    interval: Duration,
    mut check: impl FnMut() -> Result<Option<T>, ControlError>,
) -> Result<Option<T>, ControlError> {
    let deadline = Instant::now() + CREATE_WAIT;
    loop {
        if let Some(answer) = check()? {
            return Ok(Some(answer));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(interval);
    }
}

/// The job id of the thick clone making volume `clone`: any node's API can
/// follow the job, since the id names the clone's record.
fn job_of(clone: Uuid) -> CloneJobId {
    CloneJobId(clone.as_u64_pair().0)
}

impl Control for ClusterControl {
    fn create_volume(&self, spec: &VolumeSpec) -> Result<(), ControlError> {
        let nodes = self
            .runtime
            .block_on(self.membership.nodes())
            .map_err(Self::unavailable)?;
        let placement = place(&nodes, spec.replica_count)
            .map_err(|err| ControlError::InvalidArgument(err.to_string()))?;
        self.store_record(&Self::new_record(spec, placement, None), true)
    }

    fn grow_volume(&self, volume: Uuid, size_bytes: u64) -> Result<(), ControlError> {
        self.update(volume, |r| {
            if size_bytes < r.size_bytes {
                return Err(ControlError::InvalidArgument(format!(
                    "cannot shrink from {} to {size_bytes} bytes",
                    r.size_bytes
                )));
            }
            r.size_bytes = size_bytes;
            Ok(())
        })
        .map(|_| ())
    }

    fn delete_volume(&self, volume: Uuid) -> Result<(), ControlError> {
        self.record(volume)?;
        self.runtime
            .block_on(self.store.delete(volume))
            .map_err(Self::unavailable)
    }

    fn set_compression(&self, volume: Uuid, enabled: bool) -> Result<(), ControlError> {
        self.update(volume, |r| {
            r.compression = enabled;
            Ok(())
        })
        .map(|_| ())
    }

    fn list_volumes(&self) -> Result<Vec<EngineVolume>, ControlError> {
        let records = self
            .runtime
            .block_on(self.store.list())
            .map_err(Self::unavailable)?;
        Ok(records
            .into_iter()
            .map(|r| EngineVolume {
                uuid: r.uuid,
                size_bytes: r.size_bytes,
                engine_id: 0,
            })
            .collect())
    }

    fn list_snapshots(&self) -> Result<Vec<EngineSnapshot>, ControlError> {
        let records = self
            .runtime
            .block_on(self.snapshots.list())
            .map_err(Self::unavailable)?;
        Ok(records
            .into_iter()
            .filter(|r| r.state == SnapshotState::Ready)
            .map(|r| EngineSnapshot {
                uuid: r.uuid,
                size_bytes: r.size_bytes,
            })
            .collect())
    }

    fn volume_usage(&self, volume: Uuid) -> Result<VolumeUsage, ControlError> {
        if self.engine.volume_by_name(&volume.to_string()).is_some() {
            return self.local.volume_usage(volume);
        }
        self.record(volume)?;
        Ok(VolumeUsage::default())
    }

    fn pool_stats(&self) -> Result<PoolStats, ControlError> {
        self.local.pool_stats()
    }

    fn create_snapshot(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError> {
        let record = self.record(volume)?;
        let asked = SnapshotRecord {
            uuid: snapshot,
            volume,
            size_bytes: record.size_bytes,
            state: SnapshotState::Creating,
            claimed_at_epoch: None,
            holders: Vec::new(),
        };
        let created = self
            .runtime
            .block_on(self.snapshots.create(&asked))
            .map_err(Self::unavailable)?;
        if !created {
            return Err(ControlError::AlreadyExists(snapshot));
        }
        let answer = poll(Duration::from_millis(20), || {
            let current = self
                .runtime
                .block_on(self.snapshots.get(snapshot))
                .map_err(Self::unavailable)?;
            match current.map(|r| r.state) {
                Some(SnapshotState::Creating) => Ok(None),
                Some(SnapshotState::Ready) => Ok(Some(None)),
                Some(SnapshotState::Failed(why)) => Ok(Some(Some(why))),
                Some(SnapshotState::Deleting) | None => Err(ControlError::Internal(format!(
                    "snapshot {snapshot} was deleted while it was taken"
                ))),
            }
        })?;
        let failure = match answer {
            Some(None) => return Ok(()),
            Some(Some(why)) => why,
            None => format!("the primary did not take it within {CREATE_WAIT:?}"),
        };
        // Whatever copies were made go with the record.
        let _ = self.retire_snapshot(snapshot);
        Err(ControlError::Unavailable(format!(
            "snapshot {snapshot} of volume {volume}: {failure}"
        )))
    }

    fn delete_snapshot(&self, snapshot: Uuid) -> Result<(), ControlError> {
        self.snapshot_record(snapshot)?;
        self.retire_snapshot(snapshot)
    }

    fn create_clone(&self, snapshot: Uuid, clone: &VolumeSpec) -> Result<(), ControlError> {
        let source = self.snapshot_record(snapshot)?;
        let placement = self.clone_placement(&source, clone.replica_count)?;
        let clone_of = CloneSource {
            snapshot,
            thick: false,
            verify: false,
        };
        self.store_record(&Self::new_record(clone, placement, Some(clone_of)), true)
    }

    fn rollback_volume(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError> {
        let record = self.record(volume)?;
        let source = self.snapshot_record(snapshot)?;
        let lineage_root = match record.clone_of {
            Some(of) => self
                .runtime
                .block_on(self.snapshots.get(of.snapshot))
                .map_err(Self::unavailable)?
                .map(|s| s.volume),
            None => None,
        };
        if source.volume != volume && Some(source.volume) != lineage_root {
            return Err(ControlError::InvalidArgument(format!(
                "snapshot {snapshot} is not of volume {volume} or of the volume it was cloned from"
            )));
        }
        let request = RollbackRecord {
            request: Uuid::new_v4(),
            snapshot,
            claimed_at_epoch: None,
            outcome: None,
        };
        let mut made = self
            .runtime
            .block_on(self.snapshots.request_rollback(volume, &request))
            .map_err(Self::unavailable)?;
        if !made {
            // An answered request its asker never collected is cleared; one
            // still open means a rollback is under way.
            let stale = self
                .runtime
                .block_on(self.snapshots.rollback(volume))
                .map_err(Self::unavailable)?
                .is_some_and(|r| r.outcome.is_some());
            if stale {
                let _ = self
                    .runtime
                    .block_on(self.snapshots.delete_rollback(volume));
                made = self
                    .runtime
                    .block_on(self.snapshots.request_rollback(volume, &request))
                    .map_err(Self::unavailable)?;
            }
        }
        if !made {
            return Err(ControlError::Busy(format!(
                "volume {volume}: another rollback is under way"
            )));
        }
        self.wait_for_rollback(volume, request.request)
    }

    fn start_clone_job(
        &self,
        snapshot: Uuid,
        clone: &VolumeSpec,
        verify: bool,
    ) -> Result<CloneJobId, ControlError> {
        let source = self.snapshot_record(snapshot)?;
        let placement = self.clone_placement(&source, clone.replica_count)?;
        let clone_of = CloneSource {
            snapshot,
            thick: true,
            verify,
        };
        self.store_record(&Self::new_record(clone, placement, Some(clone_of)), false)?;
        Ok(job_of(clone.uuid))
    }

    fn clone_job_status(&self, job: CloneJobId) -> Result<CloneJobStatus, ControlError> {
        let records = self
            .runtime
            .block_on(self.store.list())
            .map_err(Self::unavailable)?;
        let record = match records.into_iter().find(|r| job_of(r.uuid) == job) {
            Some(record) => record,
            None => {
                let state = if self.cancelled.lock().contains(&job.0) {
                    CloneJobState::Cancelled
                } else {
                    CloneJobState::Failed(format!("the clone of job {job} was deleted"))
                };
                return Ok(CloneJobStatus {
                    state,
                    copied_bytes: 0,
                    total_bytes: 0,
                });
            }
        };
        let made = self.replicas_made(&record)? as u64;
        let nodes = record.placement.len().max(1) as u64;
        let done = made == nodes && record.epoch > 0;
        Ok(CloneJobStatus {
            state: if done {
                CloneJobState::Completed
            } else {
                CloneJobState::Running
            },
            copied_bytes: record.size_bytes / nodes * made,
            total_bytes: record.size_bytes,
        })
    }

    fn cancel_clone_job(&self, job: CloneJobId) -> Result<(), ControlError> {
        let records = self
            .runtime
            .block_on(self.store.list())
            .map_err(Self::unavailable)?;
        let Some(record) = records.into_iter().find(|r| job_of(r.uuid) == job) else {
            return Err(ControlError::Internal(format!("no clone job {job}")));
        };
        self.cancelled.lock().insert(job.0);
        self.runtime
            .block_on(self.store.delete(record.uuid))
            .map_err(Self::unavailable)
    }

    fn start_scrub(&self) -> Result<bool, ControlError> {
        self.local.start_scrub()
    }

    fn prometheus_metrics(&self) -> Result<String, ControlError> {
        self.local.prometheus_metrics()
    }

    fn scrub_status(&self) -> Result<ScrubReport, ControlError> {
        self.local.scrub_status()
    }

    fn set_access(&self, volume: Uuid, access: &VolumeAccess) -> Result<(), ControlError> {
        // Checked here, so a node's reconciler never meets a list it cannot use.
        target_access(access)?;
        let hosts = match &access.hosts {
            HostAcl::AllowAny => None,
            HostAcl::Hosts(hosts) => Some(hosts.to_vec()),
        };
        let addresses = match &access.addresses {
            AddressAcl::AllowAny => None,
            AddressAcl::Networks(networks) => Some(networks.to_vec()),
        };
        self.update(volume, |r| {
            r.acl = hosts.clone();
            r.ip_acl = addresses.clone();
            Ok(())
        })
        .map(|_| ())
    }

    fn set_rate_limits(&self, volume: Uuid, limits: &VolumeRateLimits) -> Result<(), ControlError> {
        let limits = (*limits != VolumeRateLimits::UNLIMITED).then_some(*limits);
        self.update(volume, |r| {
            r.rate_limits = limits;
            Ok(())
        })
        .map(|_| ())
    }

    fn expose_volume(&self, volume: Uuid, nsid: u32) -> Result<(), ControlError> {
        let records = self
            .runtime
            .block_on(self.store.list())
            .map_err(Self::unavailable)?;
        if let Some(other) = records
            .iter()
            .find(|r| r.uuid != volume && r.nsid == Some(nsid))
        {
            return Err(ControlError::Busy(format!(
                "namespace {nsid} is volume {}'s in this cluster",
                other.uuid
            )));
        }
        if self.record(volume)?.nsid == Some(nsid) {
            // Exposed before (the API re-exposes every volume when it starts).
            return Ok(());
        }
        let record = self.update(volume, |r| match r.nsid {
            Some(current) if current != nsid => Err(ControlError::Internal(format!(
                "volume {volume} is already namespace {current}, not {nsid}"
            ))),
            _ => {
                r.nsid = Some(nsid);
                Ok(())
            }
        })?;
        // Answer once the primary serves the namespace, so a host that
        // connects right after the volume is Available finds it.
        let exposed = poll(Duration::from_millis(20), || {
            let exposed = self
                .runtime
                .block_on(self.store.exposed_as(volume, record.primary))
                .map_err(Self::unavailable)?;
            Ok((exposed == Some(nsid)).then_some(()))
        })?;
        exposed.ok_or_else(|| {
            ControlError::Unavailable(format!(
                "volume {volume}: its primary did not expose namespace {nsid} within {CREATE_WAIT:?}"
            ))
        })
    }

    fn nsid_max(&self) -> u32 {
        self.local.nsid_max()
    }

    fn subsystem_nqn(&self) -> String {
        self.local.subsystem_nqn()
    }

    fn node_info(&self) -> NodeInfo {
        self.local.node_info()
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>, ControlError> {
        self.local.nodes()
    }

    fn cluster_uuid(&self) -> Option<Uuid> {
        self.local.cluster_uuid()
    }

    fn replication(&self, volume: Uuid) -> Result<Option<VolumeReplication>, ControlError> {
        let record = self.record(volume)?;
        let (nodes, progress) = self
            .runtime
            .block_on(async {
                let nodes = self.membership.nodes().await?;
                let progress = self.store.progress(volume).await?;
                Ok::<_, crate::cluster::MembershipError>((nodes, progress))
            })
            .map_err(Self::unavailable)?;
        let alive: BTreeSet<Uuid> = nodes
            .iter()
            .filter(|n| n.state == NodeState::Active)
            .map(|n| n.record.uuid)
            .collect();
        let mut node_list = vec![record.primary];
        node_list.extend(record.placement.iter().filter(|n| **n != record.primary));
        Ok(Some(VolumeReplication {
            protection_state: record.protection(&alive).as_str().to_owned(),
            node_list,
            rebuild_progress: progress.map(|p| p.percent()),
        }))
    }
}
