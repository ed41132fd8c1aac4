//! The catalog: every project, volume, snapshot and workflow the API knows, in the
//! shape it is persisted (`catalog.json`). The engine holds the data; the catalog
//! holds names, labels, ACLs, states and ETags.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::control::CloneJobId;

/// Version of the persisted catalog format; bumped on incompatible changes.
pub const CATALOG_VERSION: u32 = 1;
/// The project every cluster starts with.
pub const DEFAULT_PROJECT: &str = "default";

/// A volume's or snapshot's lifecycle state, spelled as the documents spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum ResourceState {
    /// Being created in the engine.
    Creating,
    /// Ready for use.
    Available,
    /// An update (grow, ACL, compression, rollback) is being applied.
    Updating,
    /// Being deleted; disappears (404) when done.
    Deleting,
    /// An engine operation failed; only delete is allowed.
    Failed,
}

impl ResourceState {
    /// The state's wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Available => "Available",
            Self::Updating => "Updating",
            Self::Deleting => "Deleting",
            Self::Failed => "Failed",
        }
    }
}

/// A key/value label; order and spelling round-trip exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The label's key.
    pub key: String,
    /// The label's value.
    pub value: String,
}

/// A project: the unit of naming and of project-scoped roles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectRecord {
    /// Unique project name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The QoS policy a new volume of the project gets when its request names
    /// none (`None`: such volumes are unlimited). Changing it leaves existing
    /// volumes as they are.
    #[serde(default)]
    pub default_qos_policy: Option<Uuid>,
    /// What the project's volumes may provision together (`None`: no limit).
    #[serde(default)]
    pub quota: Option<ProjectQuota>,
}

/// A project's budget: volume creates and grows that would take the
/// project's provisioned capacity above it are refused (KumoScale tenants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProjectQuota {
    /// Most bytes the project's volumes may add up to.
    pub capacity_bytes: u64,
    /// Most IOPS the project's volumes' QoS limits may add up to.
    pub iops: u64,
    /// Most bytes per second the project's volumes' QoS limits may add up to.
    pub bandwidth_bytes_per_s: u64,
}

/// A volume attached to an instance: bookkeeping only (access is the
/// volume's host ACL, which connecting a host changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    /// Identity.
    pub id: Uuid,
    /// The attached volume.
    pub volume: Uuid,
    /// The instance (server) it is attached to, if any.
    pub instance: Option<Uuid>,
    /// The host it is attached on, if given.
    pub host_name: Option<String>,
    /// Where it appears on the instance (`/dev/vdb`), if given.
    pub mountpoint: Option<String>,
    /// `rw` or `ro`.
    pub mode: String,
    /// When it was attached, seconds since the Unix epoch.
    pub attached_at_s: u64,
    /// The NVMe qualified name the attachment's connector was granted.
    #[serde(default)]
    pub host_nqn: Option<String>,
    /// How far the attachment got.
    #[serde(default)]
    pub status: AttachmentStatus,
}

/// An attachment's progress (Cinder's attachments API: reserved without a
/// connector, attaching once connected, attached once completed).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AttachmentStatus {
    /// The volume is held for an instance; no host connected yet.
    Reserved,
    /// A host's connector was given access; the attach is not confirmed.
    Attaching,
    /// Attached.
    #[default]
    Attached,
}

impl AttachmentStatus {
    /// Cinder's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Attaching => "attaching",
            Self::Attached => "attached",
        }
    }
}

/// An initiator host that registered itself (KumoScale's host probe):
/// publishing a volume to it grants its NQN access.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// Identity the host chose.
    pub uuid: Uuid,
    /// The host's NVMe qualified name.
    pub nqn: String,
    /// Host name.
    pub name: String,
    /// `Kubernetes` or `Agent`.
    pub client_type: String,
    /// The agent's version.
    pub version: String,
    /// Seconds between probes; the host counts as unavailable after twice that.
    pub probe_interval_s: u64,
    /// Whether the host uses NVMe multipath.
    pub multipath: bool,
    /// When it last probed, milliseconds since the Unix epoch.
    pub last_probe_ms: u64,
}

/// What a QoS policy limits; `None` leaves a quantity unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosRates {
    /// Read commands per second.
    pub read_iops: Option<u64>,
    /// Write commands per second.
    pub write_iops: Option<u64>,
    /// Read and write commands together per second.
    pub total_iops: Option<u64>,
    /// Megabytes (10^6 bytes) read per second.
    pub read_mbps: Option<u64>,
    /// Megabytes written per second.
    pub write_mbps: Option<u64>,
    /// Megabytes read and written together per second.
    pub total_mbps: Option<u64>,
}

/// Whether a policy's rates hold for the volume as a whole or per GiB of
/// its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QosScale {
    /// The rates are the volume's limits.
    Absolute,
    /// The rates are per GiB of the volume's size (a 10 GiB volume under
    /// 100 IOPS per GiB gets 1000 IOPS); a volume's limits follow its resizes.
    PerGib,
}

/// A QoS policy: rates volumes are held to on the data path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QosPolicyRecord {
    /// Identity.
    pub uuid: Uuid,
    /// Name, unique in the cluster.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The project whose volumes may use it; `None`: every project's.
    pub project: Option<String>,
    /// How the rates scale.
    pub scale: QosScale,
    /// The rates.
    pub rates: QosRates,
    /// Revision; the ETag is its decimal form.
    pub revision: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_s: u64,
}

impl QosPolicyRecord {
    /// Whether volumes of `project` may use the policy.
    pub fn available_to(&self, project: &str) -> bool {
        self.project.as_deref().is_none_or(|p| p == project)
    }
}

/// A volume as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// Identity; also the namespace's NVMe UUID.
    pub uuid: Uuid,
    /// Name, unique within the project.
    pub name: String,
    /// Owning project.
    pub project: String,
    /// Lifecycle state.
    pub state: ResourceState,
    /// Logical size in bytes.
    pub size_bytes: u64,
    /// Logical block size (512 or 4096).
    pub sector_size_bytes: u32,
    /// Number of replicas.
    pub replica_count: u32,
    /// Whether new data is compressed.
    pub compression: bool,
    /// Host ACL values exactly as accepted.
    pub acl: Vec<String>,
    /// IP ACL values exactly as accepted.
    pub ip_acl: Vec<String>,
    /// The QoS policy the volume's I/O is held to (`None`: unlimited).
    #[serde(default)]
    pub qos_policy: Option<Uuid>,
    /// Labels in the order given.
    pub labels: Vec<Label>,
    /// Snapshot this volume was cloned from.
    pub source_snapshot: Option<Uuid>,
    /// The volume this one is a point-in-time clone of, when it was cloned
    /// from a live volume (through a snapshot it outlives).
    #[serde(default)]
    pub source_volume: Option<Uuid>,
    /// Namespace id, taken when the record is made and kept until it is removed
    /// (see `domain::nsids`); the volume is exposed under it once Available.
    pub nsid: Option<u32>,
    /// Revision; the ETag is its decimal form and changes on every change.
    pub revision: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_s: u64,
    /// The workflow filling this volume (thick clone), while it runs.
    pub workflow: Option<Uuid>,
    /// Why the volume is Failed.
    pub failure: Option<String>,
}

/// A snapshot as the catalog keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRecord {
    /// Identity.
    pub uuid: Uuid,
    /// Name, unique within the project.
    pub name: String,
    /// Owning project.
    pub project: String,
    /// Lifecycle state.
    pub state: ResourceState,
    /// The volume the snapshot was taken of.
    pub source_volume: Uuid,
    /// That volume's name when the snapshot was taken.
    pub source_volume_name: String,
    /// Size of the source volume at snapshot time.
    pub size_bytes: u64,
    /// Sector size of the source volume.
    pub sector_size_bytes: u32,
    /// Compression of the source volume.
    pub compression: bool,
    /// Replica count of the source volume.
    pub replica_count: u32,
    /// Free text.
    pub description: String,
    /// Retention period as given (informational).
    pub retention_time: Option<String>,
    /// Revision, as for volumes.
    pub revision: u64,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_s: u64,
    /// Creation order within the catalog (`Catalog::next_seq`; 0 for
    /// snapshots recorded before it was kept): orders snapshots taken in
    /// the same second.
    #[serde(default)]
    pub seq: u64,
}

impl SnapshotRecord {
    /// Whether this snapshot was taken after `other`.
    pub fn is_newer_than(&self, other: &SnapshotRecord) -> bool {
        (self.created_at_s, self.seq) > (other.created_at_s, other.seq)
    }
}

/// Kind of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowKind {
    /// Thick clone of a snapshot into a new volume.
    ThickCloneVolume,
    /// Thick clone of a snapshot into a new snapshot (through a new volume).
    ThickCloneSnapshot,
    /// Attaching another cluster to this one's DMS registry.
    AttachCluster,
    /// Re-reading every attached cluster's information.
    RefreshClusters,
}

impl WorkflowKind {
    /// Whether the workflow copies data (and so has a destination volume
    /// and can be canceled).
    pub fn is_thick_clone(self) -> bool {
        matches!(self, Self::ThickCloneVolume | Self::ThickCloneSnapshot)
    }
}

/// How the DMS last reached an attached cluster (the document's
/// `Connected`, `Disconnected`, `Unauthorized`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PeerConnection {
    /// It answered.
    Connected,
    /// It could not be reached.
    Disconnected,
    /// It refused the DMS's token.
    Unauthorized,
}

impl PeerConnection {
    /// The document's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connected => "Connected",
            Self::Disconnected => "Disconnected",
            Self::Unauthorized => "Unauthorized",
        }
    }
}

/// Another cluster this one's DMS manages, as last read from its API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedClusterRecord {
    /// The cluster's identity.
    pub id: Uuid,
    /// A name for people.
    pub name: String,
    /// The subsystem NQN its volumes are served under.
    pub subsystem_nqn: String,
    /// Its management endpoints (`host:port`).
    pub api_endpoints: Vec<String>,
    /// Its NVMe/TCP discovery endpoints (`host:port`).
    pub discovery_endpoints: Vec<String>,
    /// The endpoint it was attached through.
    pub attached_via: String,
    /// SHA-256 of the certificate it presented when attached (hex): later
    /// calls require the same one.
    pub certificate_sha256: String,
    /// Whether its API answered the last call.
    pub access: PeerConnection,
    /// Whether its NVMe/TCP discovery endpoint took a connection.
    pub data: PeerConnection,
    /// When it was last read, milliseconds since the Unix epoch (set by
    /// `Service::record_attached_cluster`).
    pub refreshed_at_ms: u64,
}

/// A workflow's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowState {
    /// Still working.
    Running,
    /// Finished successfully.
    Completed,
    /// Finished with an error (see the message).
    Failed,
    /// Stopped by a cancel request.
    Canceled,
}

/// A long operation tracked across restarts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// Identity (the `workflowId`).
    pub id: Uuid,
    /// What it does.
    pub kind: WorkflowKind,
    /// Where it stands.
    pub state: WorkflowState,
    /// Detail, mostly on failure.
    pub msg: String,
    /// Percent done (0–100).
    pub percent: u32,
    /// Current stage name.
    pub stage: String,
    /// Creation time in milliseconds since the Unix epoch.
    pub created_at_ms: u64,
    /// Start time in milliseconds.
    pub started_at_ms: Option<u64>,
    /// End time in milliseconds.
    pub ended_at_ms: Option<u64>,
    /// Projects the workflow touches (for authorization).
    pub projects: Vec<String>,
    /// The destination volume.
    pub target_volume: Uuid,
    /// Source snapshot.
    pub source_snapshot: Uuid,
    /// For snapshot clones: the destination snapshot's identity and name.
    pub target_snapshot: Option<(Uuid, String, String)>,
    /// The engine job, once started.
    pub job: Option<CloneJobId>,
    /// A cancel was requested.
    pub cancel_requested: bool,
    /// The originating request as received (echoed back).
    pub request: serde_json::Value,
    /// Monotonic creation sequence, for newest-first listing.
    pub seq: u64,
}

impl WorkflowRecord {
    /// Whether the workflow still runs.
    pub fn is_running(&self) -> bool {
        self.state == WorkflowState::Running
    }
}

/// An offer to move a volume (with its snapshots, unless told otherwise)
/// to whichever project presents the authorization key (Cinder's volume
/// transfer). Only a salted hash of the key is kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// Identity.
    pub id: Uuid,
    /// Name for people.
    pub name: String,
    /// The volume offered.
    pub volume: Uuid,
    /// The project offering it.
    pub source_project: String,
    /// The salt the key is hashed with.
    pub salt: String,
    /// SHA-256 (hex) of the salt followed by the key.
    pub key_sha256: String,
    /// Whether the volume's snapshots move with it.
    pub with_snapshots: bool,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_s: u64,
}

/// A volume type: named settings new volumes take (Cinder's volume types;
/// see `domain::volume_types` for which extra specs Keel acts on).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeTypeRecord {
    /// Identity.
    pub uuid: Uuid,
    /// Name, unique in the cluster.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Whether every project may use it (else only `projects`).
    pub is_public: bool,
    /// The projects a private type is shared with.
    pub projects: Vec<String>,
    /// Extra specs as given; each is one Keel acts on.
    pub extra_specs: BTreeMap<String, String>,
    /// The QoS policy its volumes get when their request names none.
    pub qos_policy: Option<Uuid>,
    /// Creation time, seconds since the Unix epoch.
    pub created_at_s: u64,
}

impl VolumeTypeRecord {
    /// Whether volumes of `project` may be created with this type.
    pub fn available_to(&self, project: &str) -> bool {
        self.is_public || self.projects.iter().any(|p| p == project)
    }
}

/// The name prefix of the snapshot a clone of a live volume is made
/// through (see `Service::clone_volume`).
pub const CLONE_POINT_PREFIX: &str = "clone-source-";

impl SnapshotRecord {
    /// Whether this is the point-in-time snapshot a clone of a live volume
    /// is made through: internal, deleted once the clone exists.
    pub fn is_clone_point(&self) -> bool {
        self.name.starts_with(CLONE_POINT_PREFIX)
    }
}

/// Everything the catalog persists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    /// Format version ([`CATALOG_VERSION`]).
    pub version: u32,
    /// The cluster's identity, made on first start.
    pub cluster_uuid: Uuid,
    /// Projects by name.
    pub projects: BTreeMap<String, ProjectRecord>,
    /// Volumes by UUID (the list order and the paging order).
    pub volumes: BTreeMap<Uuid, VolumeRecord>,
    /// Snapshots by UUID.
    pub snapshots: BTreeMap<Uuid, SnapshotRecord>,
    /// Workflows by id.
    pub workflows: BTreeMap<Uuid, WorkflowRecord>,
    /// QoS policies by UUID.
    #[serde(default)]
    pub qos_policies: BTreeMap<Uuid, QosPolicyRecord>,
    /// Registered initiator hosts by UUID.
    #[serde(default)]
    pub hosts: BTreeMap<Uuid, HostRecord>,
    /// Attachments of volumes to instances, by id (Cinder's bookkeeping).
    #[serde(default)]
    pub attachments: BTreeMap<Uuid, AttachmentRecord>,
    /// A status an attach workflow set on a volume (Cinder's reserve,
    /// begin_detaching, reset_status), shown instead of the one its state
    /// and attachments give.
    #[serde(default)]
    pub attach_status: BTreeMap<Uuid, String>,
    /// Volume types by UUID (see `domain::volume_types`).
    #[serde(default)]
    pub volume_types: BTreeMap<Uuid, VolumeTypeRecord>,
    /// The type each volume was created with, by volume UUID (volumes of
    /// the built-in default type have no entry).
    #[serde(default)]
    pub volume_type_of: BTreeMap<Uuid, Uuid>,
    /// Other clusters this one's DMS manages, by cluster id.
    #[serde(default)]
    pub attached_clusters: BTreeMap<Uuid, AttachedClusterRecord>,
    /// Offers to move a volume to another project, by id.
    #[serde(default)]
    pub transfers: BTreeMap<Uuid, TransferRecord>,
    /// Labels of snapshots that have any, by snapshot UUID (Cinder's
    /// snapshot metadata and names).
    #[serde(default)]
    pub snapshot_labels: BTreeMap<Uuid, Vec<Label>>,
    /// The volume type a project's new volumes take when their request
    /// names none, by project.
    #[serde(default)]
    pub project_default_types: BTreeMap<String, Uuid>,
    /// Next workflow sequence number.
    pub next_seq: u64,
}

impl Catalog {
    /// A new cluster's catalog with only the default project.
    pub fn new() -> Self {
        let mut projects = BTreeMap::new();
        projects.insert(
            DEFAULT_PROJECT.to_owned(),
            ProjectRecord {
                name: DEFAULT_PROJECT.to_owned(),
                description: "The default project".to_owned(),
                default_qos_policy: None,
                quota: None,
            },
        );
        Self {
            version: CATALOG_VERSION,
            cluster_uuid: Uuid::new_v4(),
            projects,
            volumes: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            workflows: BTreeMap::new(),
            qos_policies: BTreeMap::new(),
            hosts: BTreeMap::new(),
            attachments: BTreeMap::new(),
            attach_status: BTreeMap::new(),
            volume_types: BTreeMap::new(),
            volume_type_of: BTreeMap::new(),
            attached_clusters: BTreeMap::new(),
            transfers: BTreeMap::new(),
            snapshot_labels: BTreeMap::new(),
            project_default_types: BTreeMap::new(),
            next_seq: 1,
        }
    }

    /// Removes a volume's record with what only it had (attachments, an
    /// attach status).
    pub fn remove_volume(&mut self, uuid: &Uuid) -> Option<VolumeRecord> {
        self.attachments.retain(|_, a| a.volume != *uuid);
        self.attach_status.remove(uuid);
        self.volume_type_of.remove(uuid);
        self.transfers.retain(|_, t| t.volume != *uuid);
        self.volumes.remove(uuid)
    }

    /// Removes a snapshot's record with its labels.
    pub fn remove_snapshot(&mut self, uuid: &Uuid) -> Option<SnapshotRecord> {
        self.snapshot_labels.remove(uuid);
        self.snapshots.remove(uuid)
    }

    /// The live (not Deleting) volume called `name` in `project`.
    pub fn volume_named(&self, project: &str, name: &str) -> Option<&VolumeRecord> {
        self.volumes
            .values()
            .find(|v| v.project == project && v.name == name && v.state != ResourceState::Deleting)
    }

    /// The live (not Deleting) snapshot called `name` in `project`.
    pub fn snapshot_named(&self, project: &str, name: &str) -> Option<&SnapshotRecord> {
        self.snapshots
            .values()
            .find(|s| s.project == project && s.name == name && s.state != ResourceState::Deleting)
    }
}

impl Default for Catalog {
    fn default() -> Self {
        Self::new()
    }
}
