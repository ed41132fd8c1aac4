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
//! from a peer's length field is bounded by configuration first. The crate has
//! no `unsafe` code: its io_uring reactor drives the workspace's `uring` crate,
//! whose operations own their buffers until the kernel reports them done.
//!
//! Starting a target with one namespace visible to one host:
//!
//! ```
//! use std::sync::Arc;
//! use nvmf_target::{BlockSize, HostAcl, MemoryNamespace, Subsystem, SubsystemConfig, Target, TargetConfig};
//!
//! let subsystem = Subsystem::new(SubsystemConfig::new("nqn.2024-01.io.keel:node1", "KEEL0001"));
//! let volume = MemoryNamespace::new(BlockSize::B4096, 1024, [0x42; 16]);
//! subsystem
//!     .add_namespace(1, volume, HostAcl::hosts(["nqn.2014-08.org.nvmexpress:uuid:host-a"]))
//!     .unwrap();
//! let mut config = TargetConfig::on("127.0.0.1".parse().unwrap());
//! config.listen_addrs[0].set_port(0); // 4420 by default
//! config.discovery_addrs[0].set_port(0); // 8009 by default
//! let target = Target::start(config, subsystem.clone()).unwrap();
//! println!("serving on {:?}", target.local_addrs());
//! target.shutdown();
//! ```
#![forbid(unsafe_code)]

pub mod address_acl;
pub mod backend;
pub mod pdu;
pub mod status;
mod wire;

pub use backend::{
    BlockSize, Completion, Lba, LbaRange, MemoryNamespace, NamespaceBackend, NamespaceError,
    ReactorPoller, ReactorPollerFactory,
};
pub use status::Status;
pub use uring::LentRing;
mod controller;
mod error_log;
pub mod nvme;
pub mod subsystem;
pub use address_acl::{AddressAcl, IpNetwork};
pub use nvme::log_page::AnaState;
pub use subsystem::{
    CntlidRange, CntlidRangeError, HostAcl, NamespaceChangeError, NamespaceOptions, Subsystem,
    SubsystemConfig,
};
pub mod connection;
pub mod reactors;
pub mod throttle;
pub use reactors::{ReactorKind, ReactorStats, StartError, Target, TargetConfig, TargetHandle};
pub use throttle::{RateLimits, ThrottleStats};
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
