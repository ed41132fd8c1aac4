//! The management REST API of Keel: the domain service (projects, volumes,
//! snapshots, clones, host ACLs, workflows) and its Lightbits-style v2 HTTP
//! dialect with login, bearer tokens, TLS and an OpenAPI document.
//!
//! The crate reaches storage only through the [`control::Control`] port, which the
//! root package implements over the engine and the NVMe/TCP target. It depends on
//! no other workspace crate.
#![forbid(unsafe_code)]

pub mod auth;
pub mod control;
pub mod domain;
pub mod http;
pub mod server;
pub mod tls;

pub use control::{Control, ControlError};
pub use server::{ApiConfig, ApiServer, StartError, TlsMode};
