//! Keel as a cluster: several keeld processes whose shared metadata lives in
//! etcd. [`etcd`] wraps the etcd v3 API (the only module that sees protobuf
//! types), [`keys`] is the key layout, and [`membership`] registers this node
//! and reports every node's state.
//!
//! **Invariant:** a keeld without `[cluster]` configuration never loads any of
//! this: it runs as today's embedded single node and needs no etcd.

pub mod authority;
pub mod catalog;
pub mod etcd;
pub mod keys;
pub mod membership;
pub mod reconciler;
pub mod snapshots;
pub mod volumes;

pub use etcd::{Etcd, EtcdError, KeepAlive, Lease, LeaseClock, LeaseId, Revision, WatchEvent};
pub use membership::{
    ClusterRecord, Membership, MembershipError, NodeEvent, NodeRecord, NodeSpec, NodeState,
    NodeView,
};
