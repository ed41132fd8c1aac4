//! Request and response bodies of the API, with the real API's field names. Public
//! and serde-(de)serializable both ways so clients such as `keelctl` reuse them.
//! Requests decode loosely (see `loose`), and reject unknown fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{loose, schema};

/// Error body: gRPC code (google.rpc.Code), message, details.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// gRPC status code: 3 invalid argument, 5 not found, 6 already exists, 7 permission
    /// denied, 8 resource exhausted, 9 failed precondition, 10 aborted, 12 unimplemented,
    /// 13 internal, 14 unavailable, 16 unauthenticated.
    pub code: i32,
    /// Human-readable reason.
    pub message: String,
    /// Always empty; kept for grpc-gateway compatibility.
    #[serde(default)]
    #[schema(value_type = Vec<Object>)]
    pub details: Vec<serde_json::Value>,
}

/// An access-control list: `{"values": [...]}` with host NQNs (or IP/CIDR for
/// IP ACLs), or `ALLOW_ANY` / `ALLOW_NONE` alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclDto {
    /// The entries.
    #[serde(default, deserialize_with = "loose::null_vec")]
    #[schema(schema_with = schema::acl_values)]
    pub values: Vec<String>,
}

/// A label.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LabelDto {
    /// Key.
    #[schema(schema_with = schema::label_key)]
    pub key: String,
    /// Value.
    #[serde(default)]
    #[schema(schema_with = schema::label_value)]
    pub value: String,
}

/// Body of `POST .../volumes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateVolumeRequest {
    /// Name (letters, digits, `-`, `_`, `.`; 1–256).
    #[serde(default)]
    #[schema(schema_with = schema::name, required = true)]
    pub name: Option<String>,
    /// Size: a string of bytes, or with a unit ("1 gib"). Mandatory unless cloning.
    #[serde(
        default,
        deserialize_with = "loose::opt_size",
        serialize_with = "loose::ser_opt_size"
    )]
    #[schema(schema_with = schema::optional_size)]
    pub size: Option<u64>,
    /// Replica count 1–3 (at most the cluster's maximum); number or string.
    #[serde(default, deserialize_with = "loose::opt_u32")]
    #[schema(schema_with = schema::optional_replica_count)]
    pub replica_count: Option<u32>,
    /// Project (default `default` for cluster admins).
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
    /// Host ACL; default `ALLOW_NONE`.
    #[serde(default)]
    #[schema(schema_with = schema::optional_host_acl)]
    pub acl: Option<AclDto>,
    /// IP ACL, enforced on the data path by the source address of the host's
    /// connection; default `ALLOW_ANY`. Also accepted as `IPAcl`.
    #[serde(default, alias = "IPAcl")]
    #[schema(schema_with = schema::optional_ip_acl)]
    pub ip_acl: Option<AclDto>,
    /// Compression: boolean or "True"/"False".
    #[serde(default, deserialize_with = "loose::opt_bool")]
    #[schema(schema_with = schema::optional_bool)]
    pub compression: Option<bool>,
    /// Sector size, 512 or 4096 (default 4096).
    #[serde(default, deserialize_with = "loose::opt_u32")]
    #[schema(schema_with = schema::optional_sector_size)]
    pub sector_size: Option<u32>,
    /// QoS policy the volume's I/O is held to (global or of the volume's
    /// project); null or absent: the project's default policy, if any. An
    /// unknown name is a 400.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub qos_policy_name: Option<String>,
    /// The QoS policy by UUID (with `qosPolicyName`, both must name it).
    #[serde(default, rename = "qosPolicyUUID")]
    pub qos_policy_uuid: Option<String>,
    /// Labels, round-tripped exactly.
    #[serde(default)]
    pub labels: Option<Vec<LabelDto>>,
    /// Create a thin clone of this snapshot.
    #[serde(default, rename = "sourceSnapshotUUID")]
    #[schema(schema_with = schema::optional_uuid)]
    pub source_snapshot_uuid: Option<String>,
    /// Create a thin clone of the snapshot of this name in the volume's
    /// project (Lightbits clients send it, `null` when unused).
    #[serde(default, rename = "sourceSnapshotName")]
    #[schema(schema_with = schema::optional_name)]
    pub source_snapshot_name: Option<String>,
}

/// Body of `PUT .../volumes/{UUID}`; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateVolumeRequest {
    /// Identifies the volume (must match the path if both are given).
    #[serde(default, rename = "UUID")]
    #[schema(schema_with = schema::optional_uuid)]
    pub uuid: Option<String>,
    /// Identifies the volume by name (when the path is not a UUID).
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub name: Option<String>,
    /// Project of the volume.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
    /// New size (grow only).
    #[serde(
        default,
        deserialize_with = "loose::opt_size",
        serialize_with = "loose::ser_opt_size"
    )]
    #[schema(schema_with = schema::optional_size)]
    pub size: Option<u64>,
    /// New compression setting.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    #[schema(schema_with = schema::optional_bool)]
    pub compression: Option<bool>,
    /// New host ACL.
    #[serde(default)]
    #[schema(schema_with = schema::optional_host_acl)]
    pub acl: Option<AclDto>,
    /// New IP ACL (also `IPAcl`); takes effect on live connections.
    #[serde(default, alias = "IPAcl")]
    #[schema(schema_with = schema::optional_ip_acl)]
    pub ip_acl: Option<AclDto>,
    /// New QoS policy; its limits apply from the volume's next command.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub qos_policy_name: Option<String>,
    /// New QoS policy by UUID (with `qosPolicyName`, both must name it).
    #[serde(default, rename = "qosPolicyUUID")]
    pub qos_policy_uuid: Option<String>,
    /// New labels (replace all).
    #[serde(default)]
    pub labels: Option<Vec<LabelDto>>,
    /// Expected ETag (alternative to `If-Match`).
    #[serde(default, rename = "ETag")]
    pub etag: Option<String>,
}

/// Space used by a volume, in bytes (as strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeStatisticsDto {
    /// Bytes of the address space holding data.
    pub logical_used_storage: String,
    /// Bytes of the pool the data occupies.
    pub physical_used_storage: String,
    /// 4 KiB blocks the last scrub pass found damaged (Keel extension): they
    /// read as NVMe Unrecovered Read Errors until rewritten.
    pub damaged_blocks: u64,
    /// Commands the volume's QoS policy held back since it was last exposed
    /// (Keel extension).
    pub qos_delayed_commands: u64,
    /// Total time they were held back, in milliseconds (Keel extension).
    pub qos_delay_ms: u64,
    /// Bytes hosts wrote to the volume since its node's pool opened (Keel
    /// extension).
    pub host_written_storage: String,
    /// Device bytes those writes took: stored data, the garbage collector's
    /// copies and a share of the log's headers and checkpoints (Keel
    /// extension).
    pub device_written_storage: String,
    /// Device bytes per host byte, as a decimal string ("1.000" before any
    /// write; Keel extension).
    pub write_amplification: String,
}

/// A volume.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct VolumeDto {
    /// Identity; equals the namespace's NVMe UUID.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Project.
    pub project_name: String,
    /// Creating, Available, Updating, Deleting or Failed.
    pub state: String,
    /// Replica protection state.
    pub protection_state: String,
    /// Size in bytes.
    pub size: String,
    /// Replica count.
    pub replica_count: u32,
    /// Sector size in bytes.
    pub sector_size: u32,
    /// "true" or "false".
    pub compression: String,
    /// Host ACL.
    pub acl: AclDto,
    /// IP ACL.
    #[serde(rename = "IPAcl")]
    pub ip_acl: AclDto,
    /// Namespace id (0 until exposed).
    pub nsid: u32,
    /// Current ETag; send it back as `If-Match` or `ETag`.
    #[serde(rename = "ETag")]
    pub etag: String,
    /// Labels.
    pub labels: Vec<LabelDto>,
    /// Snapshot this volume was cloned from.
    #[serde(rename = "sourceSnapshotUUID", skip_serializing_if = "Option::is_none")]
    pub source_snapshot_uuid: Option<String>,
    /// QoS policy name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_policy_name: Option<String>,
    /// QoS policy UUID.
    #[serde(rename = "qosPolicyUUID", skip_serializing_if = "Option::is_none")]
    pub qos_policy_uuid: Option<String>,
    /// Usage.
    pub statistics: VolumeStatisticsDto,
    /// Nodes holding replicas.
    pub node_list: Vec<String>,
    /// Percent done of a running rebuild or resync of a replica, or "None".
    pub rebuild_progress: String,
    /// Creation time (RFC 3339).
    pub creation_time: String,
    /// Why the volume is Failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
}

/// Body of a volume list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct VolumeListDto {
    /// The volumes, in UUID order.
    pub volumes: Vec<VolumeDto>,
}

/// Body of `POST .../snapshots`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateSnapshotRequest {
    /// Name.
    #[serde(default)]
    #[schema(schema_with = schema::name, required = true)]
    pub name: Option<String>,
    /// The volume to snapshot (this or `sourceVolumeName` is mandatory).
    #[serde(default, rename = "sourceVolumeUUID")]
    #[schema(schema_with = schema::optional_uuid)]
    pub source_volume_uuid: Option<String>,
    /// Or the volume's name.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub source_volume_name: Option<String>,
    /// Free text (≤ 256).
    #[serde(default)]
    #[schema(schema_with = schema::optional_description)]
    pub description: Option<String>,
    /// Retention period (recorded, informational; at most 64 characters).
    #[serde(default)]
    #[schema(schema_with = schema::optional_retention)]
    pub retention_time: Option<String>,
    /// Project (for `/api/v2/snapshots`).
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
}

/// A snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct SnapshotDto {
    /// Identity.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Project.
    pub project_name: String,
    /// State.
    pub state: String,
    /// Source volume.
    #[serde(rename = "sourceVolumeUUID")]
    pub source_volume_uuid: String,
    /// Source volume's name.
    pub source_volume_name: String,
    /// Size in bytes.
    pub size: String,
    /// Sector size.
    pub sector_size: u32,
    /// Replica count.
    pub replica_count: u32,
    /// Free text.
    pub description: String,
    /// Retention period as given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_time: Option<String>,
    /// Creation time (RFC 3339).
    pub creation_time: String,
    /// ETag.
    #[serde(rename = "ETag")]
    pub etag: String,
}

/// Body of a snapshot list.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct SnapshotListDto {
    /// The snapshots.
    pub snapshots: Vec<SnapshotDto>,
}

/// Body of `PUT .../volumes/{UUID}/rollback`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RollbackRequest {
    /// Snapshot to roll back to.
    #[serde(default, rename = "srcSnapshotUUID")]
    #[schema(schema_with = schema::uuid, required = true)]
    pub src_snapshot_uuid: Option<String>,
    /// Volume (must match the path if given).
    #[serde(default, rename = "UUID")]
    #[schema(schema_with = schema::optional_uuid)]
    pub uuid: Option<String>,
    /// Project.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
}

/// Cluster statistics, byte counts as strings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterStatisticsDto {
    /// Raw capacity of the devices.
    pub installed_physical_storage: String,
    /// Capacity managed by the engine.
    pub managed_physical_storage: String,
    /// Capacity usable for data.
    pub effective_physical_storage: String,
    /// Bytes of data stored (before compression).
    pub logical_used_storage: String,
    /// Bytes of pool used.
    pub physical_used_storage: String,
    /// Bytes of pool free.
    pub free_physical_storage: String,
    /// Estimated logical capacity at the current compression ratio.
    pub estimated_logical_storage: String,
    /// Estimated free logical capacity at the current compression ratio.
    pub estimated_free_logical_storage: String,
    /// Sum of volume sizes.
    pub provisioned_storage: String,
    /// Provisioned bytes divided by effective capacity.
    pub provisioned_to_effective_storage_ratio: String,
    /// Logical used divided by physical used (1 when empty).
    pub compression_ratio: f64,
    /// Keel extension: data blocks the last scrub pass found damaged (they
    /// read as media errors until rewritten); see `GET /api/v2/cluster/scrub`.
    pub damaged_blocks: u64,
    /// Keel extension: bytes hosts wrote since the pool opened.
    pub host_written_storage: String,
    /// Keel extension: every byte written to the devices since the pool
    /// opened (batch headers, data, the collector's copies, checkpoints).
    pub device_written_storage: String,
    /// Keel extension: device bytes per host byte since the pool opened
    /// (1 before any write).
    pub write_amplification: f64,
}

/// Body of `GET /api/v2/cluster`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterDto {
    /// Cluster identity.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Subsystem NQN.
    #[serde(rename = "subsystemNQN")]
    pub subsystem_nqn: String,
    /// Replicas the cluster can place now.
    pub current_max_replicas: u32,
    /// Replicas the cluster supports.
    pub max_replicas: u32,
    /// Management endpoints (`host:port`).
    pub api_endpoints: Vec<String>,
    /// NVMe/TCP discovery endpoints (`ip:port`).
    pub discovery_endpoints: Vec<String>,
    /// Number of volumes.
    pub num_volumes: u64,
    /// Number of snapshots.
    pub num_snapshots: u64,
    /// Capacity accounting.
    pub statistics: ClusterStatisticsDto,
}

/// Whether a scrub pass runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ScrubStateDto {
    /// A pass is reading and verifying the pool.
    Running,
    /// No pass runs; the findings are the last completed pass's.
    #[default]
    Idle,
}

/// Body of `GET` and `POST /api/v2/cluster/scrub`, a Keel extension (the
/// Lightbits API has no scrub): the background pass that reads every live
/// block and checkpoint and verifies its checksum.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ScrubDto {
    /// Running or Idle.
    pub state: ScrubStateDto,
    /// Passes completed since keeld started.
    pub passes_completed: u64,
    /// 4 KiB blocks checked by the running pass, or by the last one when idle.
    pub blocks_checked: u64,
    /// 4 KiB blocks the running (or last) pass set out to check.
    pub blocks_total: u64,
    /// When the running or last pass started (RFC 3339); null before the first.
    pub last_started: Option<String>,
    /// When the last pass finished (RFC 3339); null before the first.
    pub last_finished: Option<String>,
    /// The pace of a pass (0: unpaced).
    pub bytes_per_second: u64,
    /// Damaged data blocks in the whole pool, found by the last completed pass
    /// (before it, by recovery). Counts every volume, also those `volumes`
    /// leaves out because the caller may not read them.
    pub damaged_blocks: u64,
    /// Damaged metadata copies (superblock, checkpoint root, checkpoint body)
    /// the last pass found; each is stored twice, so one damaged copy loses nothing.
    pub metadata_damaged: u32,
    /// Volumes and snapshots with damaged blocks that the caller may read, in
    /// the engine's order.
    pub volumes: Vec<ScrubVolumeDto>,
}

/// The damaged blocks of one volume or snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ScrubVolumeDto {
    /// The volume's or snapshot's UUID; null if the engine's map is not named by one.
    #[serde(rename = "UUID")]
    pub uuid: Option<String>,
    /// Name; null if the catalog does not know the map (deleted since the pass).
    pub name: Option<String>,
    /// Project; null if the catalog does not know the map.
    pub project_name: Option<String>,
    /// `Volume`, `Snapshot`, or `Unknown` (not in the catalog).
    pub kind: String,
    /// The engine's id of the map (never reused): names maps the catalog does not know.
    pub engine_id: u64,
    /// Damaged 4 KiB blocks in all.
    pub damaged_blocks: u64,
    /// The damaged blocks as 4 KiB block numbers, ascending: the first 1024.
    pub damaged_lbas: Vec<u64>,
}

/// Body of `GET /api/v2/clusterinfo`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct ClusterInfoDto {
    /// Cluster identity.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Subsystem NQN.
    #[serde(rename = "subsystemNQN")]
    pub subsystem_nqn: String,
    /// Management endpoints.
    pub api_endpoints: Vec<String>,
    /// Discovery endpoints.
    pub discovery_endpoints: Vec<String>,
}

/// A node (`GET /api/v2/nodes`, `GET /api/v2/nodes/{UUID}`), in the shape of
/// the Lightbits node object; `ordinal` and `discoveryEndpoint` are Keel
/// extensions.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeDto {
    /// Node identity.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Node name.
    pub name: String,
    /// `Active` while the node holds its cluster lease, else `Inactive`.
    pub state: String,
    /// NVMe/TCP I/O endpoint `ip:port`.
    pub nvme_endpoint: String,
    /// NVMe/TCP discovery endpoint `ip:port`.
    pub discovery_endpoint: String,
    /// Failure domains the node belongs to.
    pub failure_domains: Vec<String>,
    /// The node's small integer, unique in the cluster and stable for its life.
    pub ordinal: u32,
    /// Capacity of the node's pool.
    pub statistics: NodeStatisticsDto,
}

/// Capacity of one node's pool, byte counts as decimal strings (as the
/// Lightbits API writes them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct NodeStatisticsDto {
    /// Usable bytes of the node's devices.
    pub installed_physical_storage: String,
    /// Bytes the node manages (all of its pool).
    pub managed_physical_storage: String,
    /// Bytes available for data.
    pub effective_physical_storage: String,
    /// Bytes occupied.
    pub physical_used_storage: String,
    /// Bytes free.
    pub free_physical_storage: String,
}

/// Body of `GET /api/v2/nodes`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct NodeListDto {
    /// The nodes.
    pub nodes: Vec<NodeDto>,
}

/// A project.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectDto {
    /// Name.
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// Free text.
    #[serde(default)]
    #[schema(schema_with = schema::description)]
    pub description: String,
    /// The QoS policy new volumes of the project get when they name none
    /// (shown; set with `PUT /api/v2/projects/{projectName}`).
    #[serde(
        default,
        rename = "defaultQosPolicyName",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(schema_with = schema::optional_name)]
    pub default_qos_policy_name: Option<String>,
}

/// Body of `PUT /api/v2/projects/{projectName}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateProjectRequest {
    /// The project (optional; must match the path).
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub name: Option<String>,
    /// The QoS policy new volumes of the project get when they name none
    /// (global or of this project); existing volumes keep theirs.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub default_qos_policy_name: Option<String>,
    /// The same policy by UUID.
    #[serde(default, rename = "defaultQosPolicyUUID")]
    pub default_qos_policy_uuid: Option<String>,
}

/// Rates of a QoS policy: absolute, or per GiB of a volume's size. 0, null
/// or absent leave a quantity unlimited; numbers or numeric strings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QosRatesDto {
    /// Read commands per second.
    #[serde(rename = "readIOPS", default, deserialize_with = "loose::opt_u64")]
    #[schema(schema_with = schema::optional_rate)]
    pub read_iops: Option<u64>,
    /// Write commands (Write, Write Zeroes, Dataset Management) per second.
    #[serde(rename = "writeIOPS", default, deserialize_with = "loose::opt_u64")]
    #[schema(schema_with = schema::optional_rate)]
    pub write_iops: Option<u64>,
    /// Read and write commands together per second.
    #[serde(rename = "totalIOPS", default, deserialize_with = "loose::opt_u64")]
    #[schema(schema_with = schema::optional_rate)]
    pub total_iops: Option<u64>,
    /// Megabytes (10^6 bytes) read per second.
    #[serde(rename = "readMBps", default, deserialize_with = "loose::opt_u64")]
    #[schema(schema_with = schema::optional_rate)]
    pub read_mbps: Option<u64>,
    /// Megabytes written per second.
    #[serde(rename = "writeMBps", default, deserialize_with = "loose::opt_u64")]
    #[schema(schema_with = schema::optional_rate)]
    pub write_mbps: Option<u64>,
    /// Megabytes read and written together per second.
    #[serde(rename = "totalMBps", default, deserialize_with = "loose::opt_u64")]
    #[schema(schema_with = schema::optional_rate)]
    pub total_mbps: Option<u64>,
}

/// A QoS policy's limit: exactly one of the two kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct QosLimitDto {
    /// Rates of the volume as a whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_absolute: Option<QosRatesDto>,
    /// Rates per GiB of the volume's size (they follow its resizes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit_per_gb: Option<QosRatesDto>,
}

/// Body of `POST /api/v2/qosPolicies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateQosPolicyRequest {
    /// Name, unique in the cluster.
    #[schema(schema_with = schema::name, required = true)]
    pub name: Option<String>,
    /// Free text.
    #[serde(default)]
    #[schema(schema_with = schema::optional_description)]
    pub description: Option<String>,
    /// The one project whose volumes may use it; absent: every project's.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
    /// The rates.
    pub limit: Option<QosLimitDto>,
}

/// Body of `PUT /api/v2/qosPolicies/{UUID}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateQosPolicyRequest {
    /// The policy (optional; must match the path).
    #[serde(default, rename = "UUID")]
    pub uuid: Option<String>,
    /// The policy's project (optional; must match the policy's).
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
    /// New free text.
    #[serde(default)]
    #[schema(schema_with = schema::optional_description)]
    pub description: Option<String>,
    /// New rates, replacing all of them; they reach every volume under the
    /// policy before the answer.
    #[serde(default)]
    pub limit: Option<QosLimitDto>,
    /// Expected ETag (alternative to `If-Match`).
    #[serde(default, rename = "ETag")]
    pub etag: Option<String>,
}

/// A QoS policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct QosPolicyDto {
    /// Identity.
    #[serde(rename = "UUID")]
    pub uuid: String,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The project whose volumes may use it; empty for every project.
    pub project_name: String,
    /// Always "Active".
    pub state: String,
    /// The rates.
    pub limit: QosLimitDto,
    /// Current ETag.
    #[serde(rename = "ETag")]
    pub etag: String,
}

/// Body of `GET /api/v2/qosPolicies`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct QosPolicyListDto {
    /// The policies.
    pub qos_policies: Vec<QosPolicyDto>,
}

/// Body of `GET /api/v2/projects`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProjectListDto {
    /// The projects.
    pub projects: Vec<ProjectDto>,
}

/// Body of `POST /login`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// Always "Bearer".
    pub token_type: String,
    /// Lifetime in seconds.
    pub expires_in: String,
    /// The token for `Authorization: Bearer`.
    pub id_token: String,
}

/// Body of `POST /api/v2/users`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUserRequest {
    /// User name.
    #[schema(schema_with = schema::name)]
    pub name: String,
    /// Password (8–1024 bytes; the schema's 256 characters always fit).
    #[schema(min_length = 8, max_length = 256)]
    pub password: String,
    /// ClusterAdmin, ProjectAdmin or ProjectViewer (the project roles need `projectName`).
    #[schema(schema_with = schema::role)]
    pub role: String,
    /// Project of a project role.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
}

/// A user (without secrets).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDto {
    /// User name.
    pub name: String,
    /// Role claim, e.g. `system:cluster-admin` or `p1:viewer`.
    pub role: String,
}

/// Body of `POST /api/v2/credentials`: another service's public key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateCredentialRequest {
    /// Key id; tokens must carry it as `kid`.
    #[schema(schema_with = schema::name)]
    pub id: String,
    /// Project whose admin role tokens get (`system` = cluster admin).
    #[schema(schema_with = schema::name)]
    pub project_name: String,
    /// `rsa256pubkey` or `ec256pubkey`.
    #[serde(rename = "type")]
    #[schema(schema_with = schema::key_type)]
    pub kind: String,
    /// The PEM public key, or its base64 encoding.
    pub key: String,
}

/// A registered credential.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialDto {
    /// Key id.
    pub id: String,
    /// Project.
    pub project_name: String,
    /// Key type.
    #[serde(rename = "type")]
    pub kind: String,
}

/// Body of `GET /api/v2/credentials`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct CredentialListDto {
    /// The credentials.
    pub credentials: Vec<CredentialDto>,
}

/// Source of a thick clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneSourceDto {
    /// Source snapshot UUID.
    #[serde(default)]
    #[schema(schema_with = schema::uuid, required = true)]
    pub snap_id: String,
    /// Project of the snapshot.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
    /// Cluster of the snapshot (must be this cluster if given).
    #[serde(default)]
    #[schema(schema_with = schema::optional_uuid)]
    pub cluster_id: Option<String>,
}

/// Destination of a thick clone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneDestinationDto {
    /// Destination name.
    #[serde(default)]
    #[schema(schema_with = schema::name, required = true)]
    pub name: String,
    /// Destination project (default: the source's).
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub project_name: Option<String>,
    /// Destination cluster (must be this cluster if given).
    #[serde(default)]
    #[schema(schema_with = schema::optional_uuid)]
    pub cluster_id: Option<String>,
    /// Size in bytes (≥ the source's).
    #[serde(
        default,
        deserialize_with = "loose::opt_size",
        serialize_with = "loose::ser_opt_size"
    )]
    #[schema(schema_with = schema::optional_size)]
    pub size: Option<u64>,
    /// Replica count 1–3.
    #[serde(default, deserialize_with = "loose::opt_u32")]
    #[schema(schema_with = schema::optional_replica_count)]
    pub replica: Option<u32>,
    /// Description (snapshot destinations only).
    #[serde(default)]
    #[schema(schema_with = schema::optional_description)]
    pub description: Option<String>,
    /// QoS policy name.
    #[serde(default)]
    #[schema(schema_with = schema::optional_name)]
    pub qos_policy_name: Option<String>,
    /// 512 or 4096.
    #[serde(default, deserialize_with = "loose::opt_u32")]
    #[schema(schema_with = schema::optional_sector_size)]
    pub sector_size: Option<u32>,
    /// Compression.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    #[schema(schema_with = schema::optional_bool)]
    pub compression: Option<bool>,
    /// Read source and destination back after copying and compare them before
    /// the workflow completes.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    #[schema(schema_with = schema::optional_bool)]
    pub verify_clone: Option<bool>,
}

/// Body of `POST /api/v1/volumes/thickclone` and `/api/v1/snapshots/thickclone`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThickCloneRequest {
    /// Source snapshot.
    pub src: CloneSourceDto,
    /// Destination.
    pub dst: CloneDestinationDto,
}

/// Answer of an operation that started a workflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkflowIdDto {
    /// Track it with `GET /api/v1/workflows/{workflowId}`.
    pub workflow_id: String,
}

/// Progress of a workflow.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct ProgressDto {
    /// Percent done.
    pub percent: u32,
    /// Current stage (Starting, Copying, Canceling, Done).
    pub stage: String,
}

/// A workflow.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkflowDto {
    /// Workflow id.
    pub id: String,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Started (RFC 3339), once started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// Ended (RFC 3339), once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<String>,
    /// `thick clone volume` or `thick clone snapshot`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Running, Completed, Failed or Canceled.
    pub state: String,
    /// Detail.
    pub msg: String,
    /// Progress.
    pub progress: ProgressDto,
    /// The originating volume request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub thick_clone_volume_request: Option<serde_json::Value>,
    /// The originating snapshot request.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub snapshot_clone_request: Option<serde_json::Value>,
    /// The originating attach request, for attach cluster workflows.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub attach_cluster_request: Option<serde_json::Value>,
}

/// Body of `GET /api/v1/workflows`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkflowListDto {
    /// Newest first.
    pub workflows: Vec<WorkflowDto>,
    /// Pass as `nextPageToken` for the next page; empty on the last page.
    pub next_page_token: String,
}

/// Body of `GET /api/v1/workflows/{workflowId}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default)]
pub struct WorkflowEnvelopeDto {
    /// The workflow.
    pub workflow: WorkflowDto,
}

/// An empty JSON object, the answer of deletes and cancels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EmptyDto {}
