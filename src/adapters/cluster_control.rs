//! The management API's control port on a clustered node: volumes are
//! records in etcd (placement, primary, epoch, in-sync set) that every
//! node's reconciler acts on; node-local matters (scrub, pool figures, node
//! identity) go to the node's own [`EngineControl`].
//!
//! Snapshots, clones and rollback of clustered volumes are refused with
//! `Unsupported` until they run through the primary's write order on every
//! replica (the engine can; the control path cannot reach the primary yet).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use engine::Engine;
use mgmt_api::control::{
    CloneJobId, CloneJobStatus, EngineSnapshot, EngineVolume, HostAcl, NodeInfo, NodeStatus,
    PoolStats, ScrubReport, VolumeReplication, VolumeSpec, VolumeUsage,
};
use mgmt_api::{Control, ControlError};
use uuid::Uuid;

use super::EngineControl;
use crate::cluster::volumes::{place, UpdateError, VolumeRecord, VolumeStore};
use crate::cluster::{Membership, NodeState};

/// How long a create waits for every placement node to hold its replica and
/// the primary to serve.
const CREATE_WAIT: Duration = Duration::from_secs(20);

/// [`Control`] for a node of a cluster.
pub struct ClusterControl {
    local: EngineControl,
    engine: Arc<Engine>,
    membership: Arc<Membership>,
    store: VolumeStore,
    runtime: tokio::runtime::Handle,
}

impl ClusterControl {
    /// Volume operations through `store`; the rest through `local`.
    pub fn new(
        local: EngineControl,
        engine: Arc<Engine>,
        membership: Arc<Membership>,
        store: VolumeStore,
        runtime: tokio::runtime::Handle,
    ) -> ClusterControl {
        ClusterControl {
            local,
            engine,
            membership,
            store,
            runtime,
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

    fn unsupported() -> ControlError {
        ControlError::Unsupported(
            "snapshots, clones and rollback of volumes on a clustered node".into(),
        )
    }

    /// Waits until every placement node holds its replica and the primary
    /// started its first term.
    fn wait_until_served(&self, volume: Uuid) -> Result<(), ControlError> {
        let deadline = Instant::now() + CREATE_WAIT;
        loop {
            let record = self.record(volume)?;
            let marks = self
                .runtime
                .block_on(self.store.replica_marks())
                .map_err(Self::unavailable)?;
            let placed = record
                .placement
                .iter()
                .all(|n| marks.contains(&(volume, *n)));
            if placed && record.epoch > 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ControlError::Unavailable(format!(
                    "volume {volume}: its nodes did not take it up within {CREATE_WAIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Control for ClusterControl {
    fn create_volume(&self, spec: &VolumeSpec) -> Result<(), ControlError> {
        let nodes = self
            .runtime
            .block_on(self.membership.nodes())
            .map_err(Self::unavailable)?;
        let placement = place(&nodes, spec.replica_count)
            .map_err(|err| ControlError::InvalidArgument(err.to_string()))?;
        let record = VolumeRecord {
            uuid: spec.uuid,
            size_bytes: spec.size_bytes,
            sector_bytes: spec.sector_size_bytes,
            compression: spec.compression,
            replica_count: spec.replica_count,
            primary: placement[0],
            in_sync: placement.clone(),
            placement,
            epoch: 0,
            nsid: None,
            acl: Some(Vec::new()),
        };
        let created = self
            .runtime
            .block_on(self.store.create(&record))
            .map_err(Self::unavailable)?;
        if !created {
            return Err(ControlError::AlreadyExists(spec.uuid));
        }
        if let Err(err) = self.wait_until_served(spec.uuid) {
            let _ = self.runtime.block_on(self.store.delete(spec.uuid));
            return Err(err);
        }
        Ok(())
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
        Ok(Vec::new())
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

    fn create_snapshot(&self, _volume: Uuid, _snapshot: Uuid) -> Result<(), ControlError> {
        Err(Self::unsupported())
    }

    fn delete_snapshot(&self, _snapshot: Uuid) -> Result<(), ControlError> {
        Err(Self::unsupported())
    }

    fn create_clone(&self, _snapshot: Uuid, _clone: &VolumeSpec) -> Result<(), ControlError> {
        Err(Self::unsupported())
    }

    fn rollback_volume(&self, _volume: Uuid, _snapshot: Uuid) -> Result<(), ControlError> {
        Err(Self::unsupported())
    }

    fn start_clone_job(
        &self,
        _snapshot: Uuid,
        _clone: &VolumeSpec,
        _verify: bool,
    ) -> Result<CloneJobId, ControlError> {
        Err(Self::unsupported())
    }

    fn clone_job_status(&self, _job: CloneJobId) -> Result<CloneJobStatus, ControlError> {
        Err(Self::unsupported())
    }

    fn cancel_clone_job(&self, _job: CloneJobId) -> Result<(), ControlError> {
        Err(Self::unsupported())
    }

    fn start_scrub(&self) -> Result<bool, ControlError> {
        self.local.start_scrub()
    }

    fn scrub_status(&self) -> Result<ScrubReport, ControlError> {
        self.local.scrub_status()
    }

    fn set_host_acl(&self, volume: Uuid, acl: &HostAcl) -> Result<(), ControlError> {
        let hosts = match acl {
            HostAcl::AllowAny => None,
            HostAcl::Hosts(hosts) => Some(hosts.to_vec()),
        };
        self.update(volume, |r| {
            r.acl = hosts.clone();
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
        let deadline = Instant::now() + CREATE_WAIT;
        loop {
            let exposed = self
                .runtime
                .block_on(self.store.exposed_as(volume, record.primary))
                .map_err(Self::unavailable)?;
            if exposed == Some(nsid) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(ControlError::Unavailable(format!(
                    "volume {volume}: its primary did not expose namespace {nsid} within {CREATE_WAIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
