//! NVMe/TCP target and host (initiator) sides for Keel.
//!
//! Depends on no other workspace crate: volumes are reached through the
//! [`NamespaceBackend`] port this crate defines, and the root package adapts engine
//! volumes to it. Layers, bottom up: [`pdu`] (sans-IO wire codecs, fuzzed),
//! [`nvme`] (command/completion and admin data structures), [`Subsystem`] (the
//! registry of namespaces, ACLs and live controllers), the per-connection state
//! machine ([`connection::Connection`], sans-IO), the reactor driver ([`Target`]),
//! and the [`host`] side used by tests, benchmarks and replication.
//!
//! Invariants: no input from the network can panic this crate; every buffer grown
//! from a peer's length field is bounded by configuration first.
#![forbid(unsafe_code)]

pub mod backend;
pub mod pdu;
pub mod status;
mod wire;

pub use backend::{
    BlockSize, Completion, Lba, LbaRange, MemoryNamespace, NamespaceBackend, NamespaceError,
};
pub use status::Status;
mod controller;
pub mod nvme;
pub mod subsystem;
pub use subsystem::{HostAcl, NamespaceChangeError, Subsystem, SubsystemConfig};
pub mod connection;
pub mod target;
pub use target::{StartError, Target, TargetConfig, TargetHandle};
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
