//! Adapters: newtypes over engine types that implement the ports the other crates
//! define (`nvmf_target::NamespaceBackend`, `mgmt_api::Control`).

pub mod control;
pub mod namespace;

pub use control::EngineControl;
pub use namespace::VolumeNamespace;
