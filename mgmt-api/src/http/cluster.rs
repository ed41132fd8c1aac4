//! Cluster, node and project routes.

use axum::extract::State;
use axum::Json;

use super::dto::{
    ClusterDto, ClusterInfoDto, ClusterStatisticsDto, ErrorBody, NodeDto, NodeListDto,
    NodeStatisticsDto, ProjectDto, ProjectListDto, UpdateProjectRequest,
};
use super::error::ApiError;
use super::extract::{parse_uuid, Body, Caller, PathParams};
use super::qos::qos_reference;
use super::volumes::authorize;
use super::{blocking, AppState};
use crate::control::{NodeState, NodeStatus, PoolStats};
use crate::domain::model::ProjectRecord;
use crate::domain::{Service, ServiceError};

/// Cluster information: identity, subsystem NQN, endpoints, replicas, statistics.
#[utoipa::path(get, path = "/api/v2/cluster", tag = "cluster",
    responses((status = 200, body = ClusterDto), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cluster(
    State(state): State<AppState>,
    Caller(_caller): Caller,
) -> Result<Json<ClusterDto>, ApiError> {
    let api = state.api_endpoint.clone();
    blocking(&state, move |s| {
        let c = s.cluster()?;
        let node = s.control().node_info();
        // An engine without a scrub has found no damage it could report.
        let damaged_blocks = match s.control().scrub_status() {
            Ok(report) => report.damaged_blocks(),
            Err(crate::control::ControlError::Unsupported(_)) => 0,
            Err(err) => return Err(crate::domain::ServiceError::from(err).into()),
        };
        let nodes = s
            .control()
            .nodes()
            .map_err(crate::domain::ServiceError::from)?;
        let p = if s.control().cluster_uuid().is_some() {
            cluster_pool(c.pool, &nodes)
        } else {
            c.pool
        };
        let active = nodes.iter().filter(|n| n.state == NodeState::Active);
        let mut discovery_endpoints: Vec<String> =
            active.map(|n| n.discovery_endpoint.clone()).collect();
        if discovery_endpoints.is_empty() {
            discovery_endpoints.push(node.discovery_endpoint);
        }
        let (logical_used, physical_used) = s
            .volumes(&crate::domain::VolumeFilter {
                show_all: true,
                ..Default::default()
            })
            .iter()
            .fold((0u64, 0u64), |(l, ph), v| {
                (
                    l.saturating_add(v.usage.logical_used_bytes),
                    ph.saturating_add(v.usage.physical_used_bytes),
                )
            });
        let ratio = if physical_used == 0 {
            1.0
        } else {
            logical_used as f64 / physical_used as f64
        };
        let estimate = |bytes: u64| format!("{:.0}", bytes as f64 * ratio);
        let effective = p.effective_bytes();
        let provisioned_ratio = if effective == 0 {
            0.0
        } else {
            p.provisioned_bytes as f64 / effective as f64
        };
        Ok(Json(ClusterDto {
            uuid: c.uuid.to_string(),
            subsystem_nqn: c.subsystem_nqn,
            current_max_replicas: c.max_replicas,
            max_replicas: c.max_replicas,
            api_endpoints: vec![api],
            discovery_endpoints,
            num_volumes: c.volume_count as u64,
            num_snapshots: c.snapshot_count as u64,
            statistics: ClusterStatisticsDto {
                installed_physical_storage: p.capacity_bytes.to_string(),
                managed_physical_storage: p.capacity_bytes.to_string(),
                effective_physical_storage: effective.to_string(),
                logical_used_storage: logical_used.to_string(),
                physical_used_storage: p.used_bytes.to_string(),
                free_physical_storage: p.free_bytes.to_string(),
                estimated_logical_storage: estimate(effective),
                estimated_free_logical_storage: estimate(p.free_bytes),
                provisioned_storage: p.provisioned_bytes.to_string(),
                provisioned_to_effective_storage_ratio: format!("{provisioned_ratio:.2}"),
                compression_ratio: ratio,
                damaged_blocks,
                host_written_storage: p.host_written_bytes.to_string(),
                device_written_storage: p.device_written_bytes.to_string(),
                write_amplification: super::convert::write_amplification(
                    p.host_written_bytes,
                    p.device_written_bytes,
                ),
            },
        }))
    })
    .await
}

/// Short cluster information (what CSI and Cinder drivers read).
#[utoipa::path(get, path = "/api/v2/clusterinfo", tag = "cluster",
    responses((status = 200, body = ClusterInfoDto), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn cluster_info(
    State(state): State<AppState>,
    Caller(_caller): Caller,
) -> Result<Json<ClusterInfoDto>, ApiError> {
    let api = state.api_endpoint.clone();
    blocking(&state, move |s| {
        let node = s.control().node_info();
        Ok(Json(ClusterInfoDto {
            uuid: s.cluster_uuid().to_string(),
            subsystem_nqn: s.control().subsystem_nqn(),
            api_endpoints: vec![api],
            discovery_endpoints: vec![node.discovery_endpoint],
        }))
    })
    .await
}

/// Pool figures of a cluster: capacity and free space summed over the Active
/// nodes (an Inactive node's space cannot be used); provisioned bytes stay
/// this node's, as volumes live on the node that made them, and so do the
/// bytes written (this node's device and write amplification).
fn cluster_pool(local: PoolStats, nodes: &[NodeStatus]) -> PoolStats {
    let (capacity_bytes, free_bytes) =
        nodes
            .iter()
            .filter(|n| n.state == NodeState::Active)
            .fold((0u64, 0u64), |(c, f), n| {
                (
                    c.saturating_add(n.capacity_bytes),
                    f.saturating_add(n.free_bytes),
                )
            });
    // Every node keeps the same shares for checkpoints, cleaning and spare
    // area: scale this node's data capacity to the cluster's.
    let data_capacity_bytes = (u128::from(capacity_bytes) * u128::from(local.effective_bytes()))
        .checked_div(u128::from(local.capacity_bytes))
        .unwrap_or(0) as u64;
    PoolStats {
        capacity_bytes,
        data_capacity_bytes,
        free_bytes,
        used_bytes: capacity_bytes.saturating_sub(free_bytes),
        provisioned_bytes: local.provisioned_bytes,
        ..local
    }
}

fn node_dto(n: NodeStatus) -> NodeDto {
    let used = n.capacity_bytes.saturating_sub(n.free_bytes);
    NodeDto {
        uuid: n.uuid.to_string(),
        name: n.name,
        state: n.state.as_str().to_owned(),
        nvme_endpoint: n.nvme_endpoint,
        discovery_endpoint: n.discovery_endpoint,
        failure_domains: n.failure_domains,
        ordinal: n.ordinal,
        statistics: NodeStatisticsDto {
            installed_physical_storage: n.capacity_bytes.to_string(),
            managed_physical_storage: n.capacity_bytes.to_string(),
            effective_physical_storage: n.capacity_bytes.to_string(),
            physical_used_storage: used.to_string(),
            free_physical_storage: n.free_bytes.to_string(),
        },
    }
}

/// The cluster's nodes: state, endpoints, failure domains and capacity.
#[utoipa::path(get, path = "/api/v2/nodes", tag = "cluster",
    responses((status = 200, body = NodeListDto), (status = 401, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn nodes(
    State(state): State<AppState>,
    Caller(_caller): Caller,
) -> Result<Json<NodeListDto>, ApiError> {
    blocking(&state, |s| {
        let nodes = s
            .control()
            .nodes()
            .map_err(crate::domain::ServiceError::from)?;
        Ok(Json(NodeListDto {
            nodes: nodes.into_iter().map(node_dto).collect(),
        }))
    })
    .await
}

/// One node of the cluster.
#[utoipa::path(get, path = "/api/v2/nodes/{UUID}", tag = "cluster",
    params(("UUID" = String, Path, description = "Node UUID")),
    responses((status = 200, body = NodeDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn node(
    State(state): State<AppState>,
    Caller(_caller): Caller,
    path: PathParams,
) -> Result<Json<NodeDto>, ApiError> {
    let uuid = parse_uuid("node UUID", path.get("UUID")?)?;
    blocking(&state, move |s| {
        let nodes = s
            .control()
            .nodes()
            .map_err(crate::domain::ServiceError::from)?;
        nodes
            .into_iter()
            .find(|n| n.uuid == uuid)
            .map(|n| Json(node_dto(n)))
            .ok_or_else(|| {
                crate::domain::ServiceError::NotFound {
                    what: "node",
                    id: uuid.to_string(),
                }
                .into()
            })
    })
    .await
}

/// A project for the wire, with its default QoS policy's name.
fn project_dto(s: &Service, p: ProjectRecord) -> ProjectDto {
    ProjectDto {
        default_qos_policy_name: p
            .default_qos_policy
            .and_then(|uuid| s.qos_policy(uuid).ok())
            .map(|policy| policy.name),
        name: p.name,
        description: p.description,
    }
}

/// The project called `name`, for the wire.
fn project_named(s: &Service, name: &str) -> Result<ProjectDto, ServiceError> {
    s.projects()
        .into_iter()
        .find(|p| p.name == name)
        .map(|p| project_dto(s, p))
        .ok_or_else(|| ServiceError::NotFound {
            what: "project",
            id: name.to_owned(),
        })
}

/// Projects visible to the caller.
#[utoipa::path(get, path = "/api/v2/projects", tag = "cluster",
    responses((status = 200, body = ProjectListDto), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list_projects(
    State(state): State<AppState>,
    Caller(caller): Caller,
) -> Result<Json<ProjectListDto>, ApiError> {
    blocking(&state, move |s| {
        let projects = s
            .projects()
            .into_iter()
            .filter(|p| caller.can_read(&p.name))
            .map(|p| project_dto(s, p))
            .collect();
        Ok(Json(ProjectListDto { projects }))
    })
    .await
}

/// One project.
#[utoipa::path(get, path = "/api/v2/projects/{projectName}", tag = "cluster",
    params(("projectName" = String, Path, description = "Project")),
    responses((status = 200, body = ProjectDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
) -> Result<Json<ProjectDto>, ApiError> {
    let name = path.get("projectName")?.to_owned();
    blocking(&state, move |s| {
        s.require_project(&name)?;
        authorize(&caller, &name, false)?;
        Ok(Json(project_named(s, &name)?))
    })
    .await
}

/// Change a project's default QoS policy (cluster admin only): what its new
/// volumes get when they name none; existing volumes keep theirs.
#[utoipa::path(put, path = "/api/v2/projects/{projectName}", tag = "cluster", request_body = UpdateProjectRequest,
    params(("projectName" = String, Path, description = "Project")),
    responses((status = 200, body = ProjectDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn update_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    path: PathParams,
    body: Body,
) -> Result<Json<ProjectDto>, ApiError> {
    if !caller.is_cluster_admin() {
        return Err(ApiError::PermissionDenied(
            "only a cluster admin may change projects".to_owned(),
        ));
    }
    let name = path.get("projectName")?.to_owned();
    let req: UpdateProjectRequest = body.json()?;
    if req
        .name
        .as_deref()
        .is_some_and(|n| !n.is_empty() && n != name)
    {
        return Err(ApiError::BadRequest(
            "the body's name differs from the path's project".to_owned(),
        ));
    }
    let policy = qos_reference(
        "defaultQosPolicyName",
        req.default_qos_policy_name,
        "defaultQosPolicyUUID",
        req.default_qos_policy_uuid,
    )?;
    blocking(&state, move |s| {
        s.require_project(&name)?;
        if let Some(policy) = &policy {
            s.set_project_default_qos_policy(&name, policy)?;
        }
        Ok(Json(project_named(s, &name)?))
    })
    .await
}

/// Create a project (cluster admin only).
#[utoipa::path(post, path = "/api/v2/projects", tag = "cluster", request_body = ProjectDto,
    responses((status = 200, body = ProjectDto), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn create_project(
    State(state): State<AppState>,
    Caller(caller): Caller,
    body: Body,
) -> Result<Json<ProjectDto>, ApiError> {
    if !caller.is_cluster_admin() {
        return Err(ApiError::PermissionDenied(
            "only a cluster admin may create projects".to_owned(),
        ));
    }
    let req: ProjectDto = body.json()?;
    let policy = qos_reference(
        "defaultQosPolicyName",
        req.default_qos_policy_name,
        "defaultQosPolicyUUID",
        None,
    )?;
    blocking(&state, move |s| {
        let p = s.create_project(&req.name, &req.description, policy.as_ref())?;
        Ok(Json(project_dto(s, p)))
    })
    .await
}
