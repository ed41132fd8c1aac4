//! The composition root of Keel: configuration, the daemon's wiring, and the
//! adapters that implement each crate's port over engine types. Only this package
//! sees every crate; `engine`, `nvmf-target` and `mgmt-api` never see each other.
#![forbid(unsafe_code)]

pub mod adapters;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod data_dir;
pub mod units;
