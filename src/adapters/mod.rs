//! Adapters: newtypes over engine types that implement the ports the other crates
//! define (`nvmf_target::NamespaceBackend`, `nvmf_target::ReactorPoller`,
//! `mgmt_api::Control`, `mgmt_api::dms::copy::BlockCopier`).

mod access;
pub mod cluster;
pub mod cluster_control;
pub mod cluster_namespace;
pub mod control;
pub mod metrics;
pub mod namespace;
pub mod nvme_copier;
pub mod reactor_ring;
mod scrub;

pub use access::{address_acl, target_access, target_rate_limits, TargetAccess};
pub use cluster::ClusterPort;
pub use cluster_control::ClusterControl;
pub use cluster_namespace::ClusterNamespace;
pub use control::EngineControl;
pub use metrics::{IoMetricsRegistry, MeteredNamespace};
pub use namespace::VolumeNamespace;
pub use nvme_copier::NvmeCopier;
pub use reactor_ring::engine_ring_pollers;
