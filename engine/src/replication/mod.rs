//! Synchronous replication: the engine's own protocol between a volume's
//! primary and its replicas on other nodes.
//!
//! The primary ([`ReplicatedVolume`]) orders every change of a volume, applies
//! it locally and sends it to each member over TCP ([`wire`]); it is
//! acknowledged once every in-sync member applied it. Replicas
//! ([`ReplicaServer`]) apply admitted streams to their own engine volume.
//! Cluster metadata (who is primary at which epoch, the in-sync set) is not
//! the engine's: the primary asks a [`ReplicaSetAuthority`] and the replica a
//! [`PrimaryAdmission`], ports the composition root implements over etcd.

mod dirty;
mod primary;
mod replica;
mod stream;
pub mod wire;

pub use dirty::BlockSet;
pub use primary::{
    Deposed, MemberSpec, MemberState, MemberStatus, PrimaryConfig, ReplicaSetAuthority,
    ReplicatedVolume, ReplicationStatus, MEMBERS_MAX,
};
pub use replica::{PrimaryAdmission, ReplicaServer, ReplicaStats};
pub use wire::{Extent, NodeId};
