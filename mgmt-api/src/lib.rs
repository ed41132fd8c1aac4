//! The management REST API of Keel: the domain service (projects, volumes,
//! snapshots, clones, host ACLs, workflows) and its Lightbits-style v2 HTTP
//! dialect with login, bearer tokens, TLS and an OpenAPI document.
//!
//! The crate reaches storage only through the [`control::Control`] port, which the
//! root package implements over the engine and the NVMe/TCP target. It depends on
//! no other workspace crate.
//!
//! # Starting the server
//!
//! [`ApiServer::bind`] must be awaited inside a tokio runtime the caller owns; it
//! opens the state in the data dir (catalog, users, token secret, first admin
//! password, self-signed certificate), reconciles with the engine, binds, spawns
//! the server on that runtime and returns. Domain work runs on
//! `spawn_blocking` threads and one background worker thread, so [`Control`]
//! methods may block.
//!
//! ```no_run
//! # #[cfg(feature = "test-support")]
//! # async fn start() -> Result<(), mgmt_api::StartError> {
//! use std::sync::Arc;
//! use mgmt_api::{ApiConfig, ApiServer};
//! // The root package passes its adapter over the engine and target here.
//! let control = Arc::new(mgmt_api::control::memory::MemoryControl::default());
//! let config = ApiConfig::new("127.0.0.1:8443".parse().unwrap(), "/var/lib/keel/api".into());
//! let server = ApiServer::bind(config, control).await?;
//! println!("listening on {}", server.base_url());
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Map
//!
//! - [`control`]: the port ([`Control`]) and its error ([`ControlError`]).
//! - [`domain`]: the domain service, rules, catalog, worker and workflows.
//! - [`auth`]: users, tokens, roles, service credentials.
//! - [`http`]: routes, DTOs ([`dto`]), the one error-to-status match, OpenAPI.
//! - [`kumoscale`]: the KumoScale Provisioner dialect, on a listener of its own.
//! - [`pvc`]: the PVC storage API dialect, on a listener of its own.
//! - [`cinder`]: the OpenStack Cinder v3 dialect, under `/v3` on the main listener.
//! - [`dms`]: the DMS v1 facade's service key and cluster registry.
//! - [`server`] and [`tls`]: the entry point and certificates.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cinder;
pub mod control;
pub mod dms;
pub mod domain;
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub mod http;
pub mod kumoscale;
pub mod pvc;
pub mod server;
pub mod tls;

pub use control::{Control, ControlError};
pub use http::dto;
pub use server::{ApiConfig, ApiServer, StartError, TlsMode};
