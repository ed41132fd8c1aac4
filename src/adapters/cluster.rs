//! The cluster's part of the control port: node states and the cluster's
//! identity, read from etcd through [`Membership`].

use std::sync::Arc;

use mgmt_api::control::{NodeState, NodeStatus};
use mgmt_api::ControlError;
use uuid::Uuid;

use crate::cluster::membership::{self, Membership, NodeView};

/// A clustered node's view of the cluster for [`EngineControl`](super::EngineControl).
///
/// The control port is blocking and called from blocking threads (see
/// `mgmt_api::control`), so each call runs the async etcd read on the
/// control-plane runtime through `runtime`; it must never be called from
/// inside an async task.
#[derive(Debug, Clone)]
pub struct ClusterPort {
    membership: Arc<Membership>,
    runtime: tokio::runtime::Handle,
}

impl ClusterPort {
    /// Reads through `membership` on `runtime`.
    pub fn new(membership: Arc<Membership>, runtime: tokio::runtime::Handle) -> ClusterPort {
        ClusterPort {
            membership,
            runtime,
        }
    }

    /// The cluster's UUID.
    pub fn cluster_uuid(&self) -> Uuid {
        self.membership.cluster().uuid
    }

    /// Every node with its state, from etcd.
    pub fn nodes(&self) -> Result<Vec<NodeStatus>, ControlError> {
        self.runtime
            .block_on(self.membership.nodes())
            .map(|views| views.into_iter().map(node_status).collect())
            .map_err(|err| ControlError::Unavailable(format!("the cluster store: {err}")))
    }
}

fn node_status(view: NodeView) -> NodeStatus {
    let r = view.record;
    NodeStatus {
        uuid: r.uuid,
        name: r.name,
        state: match view.state {
            membership::NodeState::Active => NodeState::Active,
            membership::NodeState::Inactive => NodeState::Inactive,
        },
        ordinal: r.ordinal,
        nvme_endpoint: r.nvme_endpoint,
        discovery_endpoint: r.discovery_endpoint,
        failure_domains: r.failure_domains,
        capacity_bytes: r.capacity_bytes,
        free_bytes: r.free_bytes,
    }
}
