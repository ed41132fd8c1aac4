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
    /// QoS policy name, if any.
    pub qos_policy_name: Option<String>,
    /// Labels in the order given.
    pub labels: Vec<Label>,
    /// Snapshot this volume was cloned from.
    pub source_snapshot: Option<Uuid>,
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
}

/// Kind of a workflow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkflowKind {
    /// Thick clone of a snapshot into a new volume.
    ThickCloneVolume,
    /// Thick clone of a snapshot into a new snapshot (through a new volume).
    ThickCloneSnapshot,
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
            },
        );
        Self {
            version: CATALOG_VERSION,
            cluster_uuid: Uuid::new_v4(),
            projects,
            volumes: BTreeMap::new(),
            snapshots: BTreeMap::new(),
            workflows: BTreeMap::new(),
            next_seq: 1,
        }
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
