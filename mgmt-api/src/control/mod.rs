//! The control port: the one trait through which the domain service reaches the
//! storage engine and the NVMe/TCP target.
//!
//! The root package implements [`Control`] over the real engine and target; this
//! crate never sees engine types. Every method is **blocking**: the HTTP layer
//! always calls the domain service (and so the port) from
//! `tokio::task::spawn_blocking`, and background work (deletes, clone jobs) runs on
//! plain threads, so an implementation may block on I/O freely but must not assume
//! it runs inside a tokio runtime.

#[cfg(any(test, feature = "test-support"))]
pub mod memory;
pub mod scrub;

use std::fmt;

use uuid::Uuid;

pub use scrub::{ScrubDamage, ScrubReport, SCRUB_LBAS_REPORTED_MAX};

/// What the engine needs to create a volume (a plain volume, a thin clone or the
/// destination of a thick clone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// The volume's identity; the same UUID is the namespace's NVMe UUID/NGUID.
    pub uuid: Uuid,
    /// Logical size in bytes; a multiple of `sector_size_bytes`.
    pub size_bytes: u64,
    /// Logical block size exposed to hosts: 512 or 4096.
    pub sector_size_bytes: u32,
    /// Whether data written to the volume is compressed.
    pub compression: bool,
    /// How many nodes keep a replica (1 on a single node).
    pub replica_count: u32,
}

/// A replicated volume's placement and protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeReplication {
    /// FullyProtected, Degraded or NotAvailable (the documents' words).
    pub protection_state: String,
    /// The nodes holding a replica, the primary first.
    pub node_list: Vec<Uuid>,
    /// Percent of a running rebuild or resync, `None` when none runs.
    pub rebuild_progress: Option<u8>,
}

/// A volume the engine holds, as reported for reconciliation at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineVolume {
    /// The volume's identity.
    pub uuid: Uuid,
    /// Logical size in bytes.
    pub size_bytes: u64,
    /// The engine's own id of the volume (never reused). Builds before the
    /// catalog allocated namespace ids exposed each volume with this as its
    /// nsid, so reconciliation keeps it for a record that names none.
    pub engine_id: u64,
}

/// A snapshot the engine holds, as reported for reconciliation at startup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineSnapshot {
    /// The snapshot's identity.
    pub uuid: Uuid,
    /// Logical size in bytes (that of its volume when it was taken).
    pub size_bytes: u64,
}

/// Space accounting of one volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeUsage {
    /// Bytes of the volume's address space that hold written data.
    pub logical_used_bytes: u64,
    /// Bytes of the pool the volume's data occupies after compression.
    pub physical_used_bytes: u64,
    /// 4 KiB blocks the last scrub pass (or recovery, before the first pass)
    /// found damaged: they read as media errors until rewritten.
    pub damaged_blocks: u64,
    /// Commands the volume's QoS limits held back since it was last exposed
    /// on the node serving it.
    pub qos_delayed_commands: u64,
    /// Total time those commands were held back, in milliseconds.
    pub qos_delay_ms: u64,
    /// Bytes hosts wrote to the volume since its pool opened.
    pub host_written_bytes: u64,
    /// Device bytes those writes took (stored data, the collector's copies
    /// and a share of the log's headers and checkpoints).
    pub device_written_bytes: u64,
}

/// Space accounting of the whole pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Usable bytes of the pool's devices.
    pub capacity_bytes: u64,
    /// Bytes occupied by live data.
    pub used_bytes: u64,
    /// Bytes still free for new data.
    pub free_bytes: u64,
    /// Sum of the logical sizes of every volume (thin provisioning can exceed capacity).
    pub provisioned_bytes: u64,
    /// Bytes hosts wrote since the pool opened.
    pub host_written_bytes: u64,
    /// Every byte written to the devices since the pool opened.
    pub device_written_bytes: u64,
    /// Bytes of live data the pool takes before it refuses new data: the
    /// capacity less what it keeps for checkpoints, cleaning and spare area
    /// (0 when the backend has no such limit: then `capacity_bytes`).
    pub data_capacity_bytes: u64,
}

impl PoolStats {
    /// The capacity usable for data.
    pub fn effective_bytes(&self) -> u64 {
        if self.data_capacity_bytes == 0 {
            self.capacity_bytes
        } else {
            self.data_capacity_bytes.min(self.capacity_bytes)
        }
    }
}

/// Which hosts may see a volume's namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostAcl {
    /// Every host that connects to the subsystem.
    AllowAny,
    /// Only these host NQNs; an empty list hides the namespace from every host.
    Hosts(Vec<String>),
}

/// Which host addresses may see a volume's namespace (judged by the source
/// address of the host's connection).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressAcl {
    /// Every address.
    AllowAny,
    /// Only these IP addresses and CIDR blocks (checked by the domain's
    /// rules); an empty list hides the namespace from every address.
    Networks(Vec<String>),
}

/// Who may see a volume's namespace: a host must be admitted by both lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeAccess {
    /// By host NQN (the API's `acl`).
    pub hosts: HostAcl,
    /// By host address (the API's `ipAcl`).
    pub addresses: AddressAcl,
}

/// The rates a volume's I/O is held to on the node serving it; `None`
/// leaves a quantity unlimited. Absolute: the domain resolves a per-GiB
/// policy against the volume's size before it gets here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct VolumeRateLimits {
    /// Read commands per second.
    pub read_iops: Option<u64>,
    /// Write commands per second.
    pub write_iops: Option<u64>,
    /// Read and write commands together per second.
    pub total_iops: Option<u64>,
    /// Bytes read per second.
    pub read_bytes_per_second: Option<u64>,
    /// Bytes written per second.
    pub write_bytes_per_second: Option<u64>,
    /// Bytes read and written together per second.
    pub total_bytes_per_second: Option<u64>,
}

impl VolumeRateLimits {
    /// No limit.
    pub const UNLIMITED: VolumeRateLimits = VolumeRateLimits {
        read_iops: None,
        write_iops: None,
        total_iops: None,
        read_bytes_per_second: None,
        write_bytes_per_second: None,
        total_bytes_per_second: None,
    };
}

/// How this node is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's stable identity.
    pub uuid: Uuid,
    /// A human-readable node name (hostname).
    pub name: String,
    /// NVMe/TCP I/O endpoint as `ip:port`.
    pub nvme_endpoint: String,
    /// NVMe/TCP discovery endpoint as `ip:port`.
    pub discovery_endpoint: String,
}

/// A node's state, as the Lightbits API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NodeState {
    /// The node is up and holds its cluster lease.
    Active,
    /// The node is down: stopped, crashed or cut off from the cluster store.
    Inactive,
}

impl NodeState {
    /// The name the API reports (`Active`, `Inactive`).
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Active => "Active",
            NodeState::Inactive => "Inactive",
        }
    }
}

/// One node of the cluster as [`Control::nodes`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    /// The node's stable identity.
    pub uuid: Uuid,
    /// A human-readable name.
    pub name: String,
    /// Active or Inactive.
    pub state: NodeState,
    /// The node's small integer, unique in the cluster and stable for its life.
    pub ordinal: u32,
    /// NVMe/TCP I/O endpoint `ip:port`.
    pub nvme_endpoint: String,
    /// NVMe/TCP discovery endpoint `ip:port`.
    pub discovery_endpoint: String,
    /// Failure domains the node belongs to.
    pub failure_domains: Vec<String>,
    /// Usable bytes of the node's pool.
    pub capacity_bytes: u64,
    /// Free bytes of the node's pool, as last reported.
    pub free_bytes: u64,
}

/// What [`Control::nodes`] answers for a node that is not part of a cluster:
/// itself, Active, ordinal 0, with its pool's capacity. For implementations
/// that override `nodes` and still need the single-node answer.
pub fn single_node<C: Control + ?Sized>(control: &C) -> Result<Vec<NodeStatus>, ControlError> {
    let node = control.node_info();
    let pool = control.pool_stats()?;
    Ok(vec![NodeStatus {
        uuid: node.uuid,
        name: node.name,
        state: NodeState::Active,
        ordinal: 0,
        nvme_endpoint: node.nvme_endpoint,
        discovery_endpoint: node.discovery_endpoint,
        failure_domains: Vec::new(),
        capacity_bytes: pool.capacity_bytes,
        free_bytes: pool.free_bytes,
    }])
}

/// Identity of a thick-clone job inside the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct CloneJobId(pub u64);

impl fmt::Display for CloneJobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Where a thick-clone job stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloneJobState {
    /// Still copying.
    Running,
    /// Every byte is copied; the destination volume is complete.
    Completed,
    /// Stopped on an error; the destination is incomplete.
    Failed(String),
    /// Stopped by [`Control::cancel_clone_job`]; the destination is incomplete.
    Cancelled,
}

/// Progress of a thick-clone job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneJobStatus {
    /// The job's state.
    pub state: CloneJobState,
    /// Bytes copied so far.
    pub copied_bytes: u64,
    /// Bytes to copy in all.
    pub total_bytes: u64,
}

/// Why a control operation failed. The HTTP layer maps each variant to a status in
/// one exhaustive match (`http::error`).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlError {
    /// The named volume, snapshot or job does not exist in the engine.
    #[error("not found in the engine: {0}")]
    NotFound(Uuid),
    /// An object with this identity already exists in the engine.
    #[error("already exists in the engine: {0}")]
    AlreadyExists(Uuid),
    /// The pool has no room for the operation.
    #[error("the storage pool has no space left")]
    NoSpace,
    /// The engine rejected an argument.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The engine or target does not implement this operation yet.
    #[error("not supported by this node: {0}")]
    Unsupported(String),
    /// The object is busy with another operation; retry later.
    #[error("busy: {0}")]
    Busy(String),
    /// A service the node depends on (the cluster store) cannot be reached;
    /// retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// Anything else: an I/O error, a fenced device, a broken invariant.
    #[error("internal engine error: {0}")]
    Internal(String),
}

/// The port through which the domain service reaches storage and the NVMe target.
///
/// Implementations must be cheap to share (`Arc<dyn Control>`) and thread-safe.
/// Every method blocks until the operation is durable in the engine (or has
/// failed); see the module docs for the threading contract. Creating operations
/// must be idempotent-friendly: `create_*` on an identity that already exists
/// answers [`ControlError::AlreadyExists`], and `delete_*` of a missing identity
/// answers [`ControlError::NotFound`], which reconciliation treats as "done".
pub trait Control: Send + Sync {
    /// Creates an empty thin volume.
    fn create_volume(&self, spec: &VolumeSpec) -> Result<(), ControlError>;
    /// Grows a volume to `size_bytes` (never shrinks).
    fn grow_volume(&self, volume: Uuid, size_bytes: u64) -> Result<(), ControlError>;
    /// Deletes a volume, first removing its namespace from the target.
    fn delete_volume(&self, volume: Uuid) -> Result<(), ControlError>;
    /// Turns compression of newly written data on or off.
    fn set_compression(&self, volume: Uuid, enabled: bool) -> Result<(), ControlError>;
    /// Lists every volume the engine holds (used to reconcile at startup).
    fn list_volumes(&self) -> Result<Vec<EngineVolume>, ControlError>;
    /// Every snapshot the engine holds (for startup reconciliation).
    ///
    /// The default answers [`ControlError::Unsupported`]: reconciliation then
    /// leaves snapshot records as they are.
    fn list_snapshots(&self) -> Result<Vec<EngineSnapshot>, ControlError> {
        Err(ControlError::Unsupported("listing snapshots".to_owned()))
    }
    /// Space used by one volume.
    fn volume_usage(&self, volume: Uuid) -> Result<VolumeUsage, ControlError>;
    /// Space accounting of the pool.
    fn pool_stats(&self) -> Result<PoolStats, ControlError>;
    /// Takes a crash-consistent snapshot of `volume` identified by `snapshot`.
    fn create_snapshot(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError>;
    /// Deletes a snapshot.
    fn delete_snapshot(&self, snapshot: Uuid) -> Result<(), ControlError>;
    /// Creates a writable thin clone of `snapshot` as a new volume.
    fn create_clone(&self, snapshot: Uuid, clone: &VolumeSpec) -> Result<(), ControlError>;
    /// Rolls `volume` back to the content of `snapshot` (one of its own snapshots).
    fn rollback_volume(&self, volume: Uuid, snapshot: Uuid) -> Result<(), ControlError>;
    /// Starts copying `snapshot` into a new, fully allocated volume `target`;
    /// with `verify`, both sides are read back and compared before the job
    /// completes.
    ///
    /// The default answers [`ControlError::Unsupported`], which the HTTP layer
    /// reports as 501 with a message.
    fn start_clone_job(
        &self,
        snapshot: Uuid,
        target: &VolumeSpec,
        verify: bool,
    ) -> Result<CloneJobId, ControlError> {
        let _ = (snapshot, target, verify);
        Err(ControlError::Unsupported("thick clone".to_owned()))
    }
    /// Progress of a clone job started by [`Control::start_clone_job`].
    fn clone_job_status(&self, job: CloneJobId) -> Result<CloneJobStatus, ControlError> {
        let _ = job;
        Err(ControlError::Unsupported("thick clone".to_owned()))
    }
    /// Stops a clone job; the partial destination volume stays for the caller to delete.
    fn cancel_clone_job(&self, job: CloneJobId) -> Result<(), ControlError> {
        let _ = job;
        Err(ControlError::Unsupported("thick clone".to_owned()))
    }
    /// Starts a scrub pass now: every live block and checkpoint is read and its
    /// checksum verified, in the background. `Ok(true)` if this call started
    /// a pass, `Ok(false)` if one was already running (it goes on).
    ///
    /// The default answers [`ControlError::Unsupported`] (501).
    fn start_scrub(&self) -> Result<bool, ControlError> {
        Err(ControlError::Unsupported("scrub".to_owned()))
    }
    /// This node's storage metrics in the Prometheus text exposition format
    /// (volumes' I/O, the pool, connections), for `/metrics`.
    ///
    /// The default answers [`ControlError::Unsupported`]: `/metrics` then
    /// shows the API's own counts only.
    fn prometheus_metrics(&self) -> Result<String, ControlError> {
        Err(ControlError::Unsupported("storage metrics".to_owned()))
    }
    /// The scrub's state and what its last completed pass found.
    ///
    /// The default answers [`ControlError::Unsupported`] (501).
    fn scrub_status(&self) -> Result<ScrubReport, ControlError> {
        Err(ControlError::Unsupported("scrub".to_owned()))
    }
    /// Replaces who may see the volume's namespace, by host NQN and by host
    /// address; takes effect on live connections (a host that loses the
    /// namespace gets a namespace attribute changed event and its I/O fails).
    fn set_access(&self, volume: Uuid, access: &VolumeAccess) -> Result<(), ControlError>;
    /// Holds the volume's I/O to `limits` on the node serving it, from its
    /// next command (commands over a limit wait; none fails); kept for the
    /// namespace when the volume is exposed later.
    fn set_rate_limits(&self, volume: Uuid, limits: &VolumeRateLimits) -> Result<(), ControlError>;
    /// Exposes the volume as namespace `nsid` of the subsystem. The caller
    /// chooses the nsid (in `1..=nsid_max()`, distinct per volume, stable across
    /// restarts); exposing a volume again under the same nsid does nothing.
    fn expose_volume(&self, volume: Uuid, nsid: u32) -> Result<(), ControlError>;
    /// The largest namespace id the target accepts; namespace ids are
    /// `1..=nsid_max()`, so at most this many volumes can be exposed at once.
    fn nsid_max(&self) -> u32;
    /// The NQN of the subsystem that holds every volume's namespace.
    fn subsystem_nqn(&self) -> String;
    /// How this node is reached.
    fn node_info(&self) -> NodeInfo;
    /// Every node of the cluster, with its state and capacity.
    ///
    /// The default is the single local node, Active, with the pool's capacity:
    /// what an unclustered node is.
    fn nodes(&self) -> Result<Vec<NodeStatus>, ControlError> {
        single_node(self)
    }
    /// Where a replicated volume's replicas are and how well it is
    /// protected; `None` (the default) on a single node, where a volume has
    /// one copy on this node.
    fn replication(&self, volume: Uuid) -> Result<Option<VolumeReplication>, ControlError> {
        let _ = volume;
        Ok(None)
    }

    /// The cluster's identity when this node belongs to a cluster of several;
    /// `None` (the default) for a single node, whose identity is the
    /// management catalog's own.
    fn cluster_uuid(&self) -> Option<Uuid> {
        None
    }
}
