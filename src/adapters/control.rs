//! The management API's control port over the engine and the NVMe subsystem.
//!
//! A REST volume's UUID is its engine volume's name. Its namespace id is chosen
//! by the management catalog, which persists it, and not derived from the
//! engine id: engine ids are never reused, while the target has only
//! `NSID_MAX` namespace ids. Host ACLs and nsids live in the management
//! catalog; the API's start-up reconciliation re-applies them.

use std::collections::HashMap;
use std::sync::Arc;

use engine::{
    CloneJob, CloneState, Engine, IoError, SectorSize, ThickCloneOptions, VolumeError, VolumeId,
    VolumeInfo, VolumeKind, VolumeOptions,
};
use mgmt_api::control::{
    CloneJobId, CloneJobState, CloneJobStatus, EngineSnapshot, EngineVolume, NodeInfo, NodeStatus,
    PoolStats, ScrubReport, VolumeAccess, VolumeRateLimits, VolumeSpec, VolumeUsage,
};
use mgmt_api::{Control, ControlError};
use nvmf_target::{NamespaceOptions, RateLimits, Subsystem};
use parking_lot::Mutex;
use uuid::Uuid;

use super::metrics::{IoMetricsRegistry, MeteredNamespace};
use super::scrub::scrub_report;
use super::ClusterPort;
use super::VolumeNamespace;
use super::{target_access, target_rate_limits, TargetAccess};

/// Implements [`Control`] over an [`Engine`] and the node's [`Subsystem`].
pub struct EngineControl {
    engine: Arc<Engine>,
    subsystem: Arc<Subsystem>,
    node: NodeInfo,
    /// ACLs set before a volume is exposed (the API sets the ACL, then exposes).
    acls: Mutex<HashMap<Uuid, TargetAccess>>,
    /// Rate limits set before or after a volume is exposed (absent: unlimited).
    rate_limits: Mutex<HashMap<Uuid, RateLimits>>,
    /// The nsid each exposed volume has in the subsystem (both live in memory
    /// only; reconciliation exposes every volume again after a restart).
    exposed: Mutex<HashMap<Uuid, u32>>,
    /// Pace of thick clone jobs (None: unpaced).
    clone_rate_bytes_per_s: Option<u64>,
    /// The cluster this node belongs to; `None` for a single node.
    cluster: Option<ClusterPort>,
    /// Every exposed volume's I/O as hosts issue it.
    io_metrics: Arc<IoMetricsRegistry>,
}

impl EngineControl {
    /// Wires the port to `engine` and `subsystem`; `node` describes this node.
    pub fn new(engine: Arc<Engine>, subsystem: Arc<Subsystem>, node: NodeInfo) -> EngineControl {
        EngineControl {
            engine,
            subsystem,
            node,
            acls: Mutex::new(HashMap::new()),
            rate_limits: Mutex::new(HashMap::new()),
            exposed: Mutex::new(HashMap::new()),
            clone_rate_bytes_per_s: None,
            cluster: None,
            io_metrics: Arc::new(IoMetricsRegistry::default()),
        }
    }

    /// Records volume I/O into `registry` (shared with the cluster's
    /// reconciler, which exposes clustered volumes itself).
    pub fn with_io_metrics(mut self, registry: Arc<IoMetricsRegistry>) -> EngineControl {
        self.io_metrics = registry;
        self
    }

    /// Reports the nodes and identity of the cluster `port` reads.
    pub fn with_cluster(mut self, port: ClusterPort) -> EngineControl {
        self.cluster = Some(port);
        self
    }

    /// The engine volume (not snapshot) named by `volume`.
    fn find(&self, volume: Uuid) -> Result<VolumeInfo, ControlError> {
        self.find_kind(volume, VolumeKind::Volume)
    }

    fn find_snapshot(&self, snapshot: Uuid) -> Result<VolumeInfo, ControlError> {
        self.find_kind(snapshot, VolumeKind::Snapshot)
    }

    fn find_kind(&self, uuid: Uuid, kind: VolumeKind) -> Result<VolumeInfo, ControlError> {
        self.engine
            .volume_by_name(&uuid.to_string())
            .filter(|info| info.kind == kind)
            .ok_or(ControlError::NotFound(uuid))
    }

    /// Paces every thick clone job to `bytes_per_s` (None or 0: unpaced).
    pub fn with_clone_rate(mut self, bytes_per_s: Option<u64>) -> EngineControl {
        self.clone_rate_bytes_per_s = bytes_per_s.filter(|r| *r > 0);
        self
    }

    fn job(&self, job: CloneJobId) -> Result<CloneJob, ControlError> {
        self.engine.clone_job(VolumeId(job.0)).ok_or_else(|| {
            ControlError::Internal(format!("no clone job {job} in this run of the engine"))
        })
    }

    /// The nsid `volume` is exposed under, if it is.
    fn exposed_nsid(&self, volume: Uuid) -> Option<u32> {
        self.exposed.lock().get(&volume).copied()
    }
}

/// The one place engine control errors become control-port errors.
fn control_error(volume: Uuid, err: VolumeError) -> ControlError {
    match err {
        VolumeError::NameTaken(_) => ControlError::AlreadyExists(volume),
        VolumeError::NotFound(_) => ControlError::NotFound(volume),
        VolumeError::InvalidName(_)
        | VolumeError::InvalidSize(_)
        | VolumeError::Shrink { .. }
        | VolumeError::IsSnapshot(_)
        | VolumeError::NotSnapshot(_)
        | VolumeError::NotRelated { .. } => ControlError::InvalidArgument(err.to_string()),
        VolumeError::Io(IoError::NoSpace) => ControlError::NoSpace,
        VolumeError::Io(err) => ControlError::Internal(err.to_string()),
    }
}

fn sector_size(bytes: u32) -> Result<SectorSize, ControlError> {
    SectorSize::from_bytes(bytes)
        .ok_or_else(|| ControlError::InvalidArgument(format!("sector size {bytes}")))
}

impl Control for EngineControl {
    fn create_volume(&self, spec: &VolumeSpec) -> Result<(), ControlError> {
        let sector = sector_size(spec.sector_size_bytes)?;
        let options = VolumeOptions {
            compression: spec.compression,
        };
        self.engine
            .create_volume_with_options(&spec.uuid.to_string(), spec.size_bytes, sector, options)
            .map(|_| ())
            .map_err(|e| control_error(spec.uuid, e))
    }

    fn grow_volume(&self, volume: Uuid, size_bytes: u64) -> Result<(), ControlError> {
        let info = self.find(volume)?;
        self.engine
            .resize_volume(info.id, size_bytes)
            .map_err(|e| control_error(volume, e))?;
        if let Some(nsid) = self.exposed_nsid(volume) {
            self.subsystem
                .namespace_resized(nsid)
                .map_err(|e| ControlError::Internal(e.to_string()))?;
        }
        Ok(())
    }

    fn delete_volume(&self, volume: Uuid) -> Result<(), ControlError> {
        let info = self.find(volume)?;
        if let Some(nsid) = self.exposed.lock().remove(&volume) {
            let _ = self.subsystem.remove_namespace(nsid);
        }
        self.acls.lock().remove(&volume);
        self.rate_limits.lock().remove(&volume);
        self.io_metrics.remove(volume);
        self.engine
            .delete_volume(info.id)
            .map_err(|e| control_error(volume, e))
    }

    fn set_compression(&self, volume: Uuid, enabled: bool) -> Result<(), ControlError> {
        let info = self.find(volume)?;
        self.engine
            .set_compression(info.id, enabled)
            .map(|_| ())
            .map_err(|e| control_error(volume, e))
    }

    fn list_volumes(&self) -> Result<Vec<EngineVolume>, ControlError> {
        Ok(self
            .engine
            .volumes()
            .into_iter()
            .filter_map(|v| {
                Uuid::parse_str(&v.name).ok().map(|uuid| EngineVolume {
                    uuid,
                    size_bytes: v.size_bytes,
                    engine_id: v.id.0,
                })
            })
            .collect())
    }

    fn list_snapshots(&self) -> Result<Vec<EngineSnapshot>, ControlError> {
        Ok(self
            .engine
            .snapshots()
            .into_iter()
            .filter_map(|s| {
                Uuid::parse_str(&s.name).ok().map(|uuid| EngineSnapshot {
                    uuid,
                    size_bytes: s.size_bytes,
                })
            })
            .collect())
    }

    fn volume_usage(&self, volume: Uuid) -> Result<VolumeUsage, ControlError> {
        let info = self.find(volume)?;
        let space = self
            .engine
            .volume_space(info.id)
            .ok_or(ControlError::NotFound(volume))?;
        // Physical use is what the volume alone holds on disk, after compression:
        // its stored bytes in the share of its blocks nothing else references.
        let physical = (u128::from(space.stored_bytes) * u128::from(space.exclusive_bytes))
            .checked_div(u128::from(space.mapped_bytes))
            .unwrap_or(0) as u64;
        let writes = self.engine.volume_writes(info.id).unwrap_or_default();
        let damaged_blocks = self
            .engine
            .scrub_status()
            .damaged
            .iter()
            .find(|d| d.volume == info.id)
            .map_or(0, |d| d.lbas.len() as u64);
        // Found by the namespace's UUID, not this port's own exposures: on a
        // cluster node the reconciler exposes the volume.
        let throttle = self
            .subsystem
            .throttle_stats()
            .into_iter()
            .find(|(_, uuid, _)| *uuid == *volume.as_bytes())
            .map(|(_, _, stats)| stats)
            .unwrap_or_default();
        Ok(VolumeUsage {
            logical_used_bytes: space.mapped_bytes,
            physical_used_bytes: physical,
            damaged_blocks,
            qos_delayed_commands: throttle.delayed_commands,
            qos_delay_ms: u64::try_from(throttle.delay.as_millis()).unwrap_or(u64::MAX),
            host_written_bytes: writes.host_written_bytes,
            device_written_bytes: writes.device_written_bytes,
        })
    }

    fn pool_stats(&self) -> Result<PoolStats, ControlError> {
        let stats = self.engine.pool_stats();
        Ok(PoolStats {
            capacity_bytes: stats.capacity_bytes,
            used_bytes: stats.used_bytes,
            free_bytes: stats.free_bytes,
            provisioned_bytes: stats.provisioned_bytes,
            host_written_bytes: stats.host_written_bytes,
            device_written_bytes: stats.device_written_bytes,
            data_capacity_bytes: stats.data_capacity_bytes,
        })
    }

    fn create_snapshot(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError> {
        let source = self.find(volume)?;
        self.engine
            .create_snapshot(source.id, &snapshot.to_string())
            .map(|_| ())
            .map_err(|e| control_error(snapshot, e))
    }

    fn delete_snapshot(&self, snapshot: Uuid) -> Result<(), ControlError> {
        let info = self.find_snapshot(snapshot)?;
        self.engine
            .delete_volume(info.id)
            .map_err(|e| control_error(snapshot, e))
    }

    fn create_clone(&self, snapshot: Uuid, clone: &VolumeSpec) -> Result<(), ControlError> {
        let source = self.find_snapshot(snapshot)?;
        let sector = sector_size(clone.sector_size_bytes)?;
        let name = clone.uuid.to_string();
        let info = self
            .engine
            .create_clone(source.id, &name, Some(clone.size_bytes), Some(sector))
            .map_err(|e| control_error(clone.uuid, e))?;
        if clone.compression {
            if let Err(err) = self.engine.set_compression(info.id, true) {
                // Leave nothing half-made behind: the caller sees one failure.
                let _ = self.engine.delete_volume(info.id);
                return Err(control_error(clone.uuid, err));
            }
        }
        Ok(())
    }

    fn rollback_volume(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError> {
        let target = self.find(volume)?;
        let source = self.find_snapshot(snapshot)?;
        self.engine
            .revert_volume(target.id, source.id)
            .map(|_| ())
            .map_err(|e| control_error(volume, e))
    }

    fn start_clone_job(
        &self,
        snapshot: Uuid,
        target: &VolumeSpec,
        verify: bool,
    ) -> Result<CloneJobId, ControlError> {
        let source = self.find_snapshot(snapshot)?;
        let options = ThickCloneOptions {
            size_bytes: Some(target.size_bytes),
            sector: Some(sector_size(target.sector_size_bytes)?),
            compression: target.compression,
            verify,
            max_bytes_per_s: self.clone_rate_bytes_per_s,
        };
        let job = self
            .engine
            .start_thick_clone(source.id, &target.uuid.to_string(), options)
            .map_err(|e| control_error(target.uuid, e))?;
        // The destination's engine id names the job: unique and never reused.
        Ok(CloneJobId(job.progress().destination.0))
    }

    fn clone_job_status(&self, job: CloneJobId) -> Result<CloneJobStatus, ControlError> {
        let progress = self.job(job)?.progress();
        let state = match progress.state {
            CloneState::Running => CloneJobState::Running,
            CloneState::Completed => CloneJobState::Completed,
            CloneState::Failed(why) => CloneJobState::Failed(why),
            CloneState::Cancelled => CloneJobState::Cancelled,
        };
        Ok(CloneJobStatus {
            state,
            copied_bytes: progress.done_bytes,
            total_bytes: progress.total_bytes,
        })
    }

    fn cancel_clone_job(&self, job: CloneJobId) -> Result<(), ControlError> {
        self.job(job)?.cancel();
        Ok(())
    }

    fn prometheus_metrics(&self) -> Result<String, ControlError> {
        Ok(super::metrics::render_node(
            &self.engine.pool_stats(),
            self.subsystem.controller_count(),
            &self.io_metrics,
            &super::metrics::throttle_stats(&self.subsystem),
        ))
    }

    fn start_scrub(&self) -> Result<bool, ControlError> {
        Ok(self.engine.start_scrub())
    }

    fn scrub_status(&self) -> Result<ScrubReport, ControlError> {
        let status = self.engine.scrub_status();
        Ok(scrub_report(status, |id| {
            self.engine
                .volume(id)
                .and_then(|info| Uuid::parse_str(&info.name).ok())
        }))
    }

    fn set_access(&self, volume: Uuid, access: &VolumeAccess) -> Result<(), ControlError> {
        // Only a volume the engine holds may carry an ACL.
        self.find(volume)?;
        let access = target_access(access)?;
        if let Some(nsid) = self.exposed_nsid(volume) {
            self.subsystem
                .set_namespace_access(nsid, access.hosts.clone(), access.addresses.clone())
                .map_err(|e| ControlError::Internal(e.to_string()))?;
        }
        self.acls.lock().insert(volume, access);
        Ok(())
    }

    fn set_rate_limits(&self, volume: Uuid, limits: &VolumeRateLimits) -> Result<(), ControlError> {
        self.find(volume)?;
        let limits = target_rate_limits(limits);
        // Both held across the change, in expose's order, so an expose in
        // between cannot miss it.
        let exposed = self.exposed.lock();
        let mut all = self.rate_limits.lock();
        if let Some(&nsid) = exposed.get(&volume) {
            self.subsystem
                .set_namespace_rate_limits(nsid, limits)
                .map_err(|e| ControlError::Internal(e.to_string()))?;
        }
        all.insert(volume, limits);
        Ok(())
    }

    fn expose_volume(&self, volume: Uuid, nsid: u32) -> Result<(), ControlError> {
        let info = self.find(volume)?;
        // Held across the add so two exposes cannot both claim one volume.
        let mut exposed = self.exposed.lock();
        match exposed.get(&volume) {
            Some(current) if *current == nsid => return Ok(()),
            Some(current) => {
                return Err(ControlError::Internal(format!(
                    "volume {volume} is already namespace {current}, not {nsid}"
                )))
            }
            None => {}
        }
        let access = self
            .acls
            .lock()
            .get(&volume)
            .cloned()
            .unwrap_or_else(TargetAccess::nobody);
        let namespace = VolumeNamespace::new(
            self.engine.clone(),
            info.id,
            info.sector_size,
            *volume.as_bytes(),
        );
        let metered = MeteredNamespace::new(Arc::new(namespace), self.io_metrics.volume(volume));
        let rate_limits = self.rate_limits.lock();
        let limits = rate_limits
            .get(&volume)
            .copied()
            .unwrap_or(RateLimits::UNLIMITED);
        self.subsystem
            .add_namespace(
                nsid,
                Arc::new(metered),
                NamespaceOptions::new(access.hosts)
                    .with_addresses(access.addresses)
                    .with_rate_limits(limits),
            )
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        exposed.insert(volume, nsid);
        Ok(())
    }

    fn nsid_max(&self) -> u32 {
        nvmf_target::subsystem::NSID_MAX
    }

    fn subsystem_nqn(&self) -> String {
        self.subsystem.nqn().to_owned()
    }

    fn node_info(&self) -> NodeInfo {
        self.node.clone()
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>, ControlError> {
        match &self.cluster {
            Some(cluster) => cluster.nodes(),
            None => mgmt_api::control::single_node(self),
        }
    }

    fn cluster_uuid(&self) -> Option<Uuid> {
        self.cluster.as_ref().map(ClusterPort::cluster_uuid)
    }
}
