//! The data path beneath the [`Engine`](crate::Engine) facade: reads, writes
//! and flushes of volumes the facade has already looked up and checked.
//!
//! Architecture Invariant: nothing here depends on the facade, so background
//! threads (the collector) can flush without going through `Engine`.

pub(crate) mod completion;
pub(crate) mod flush;
pub(crate) mod read;
pub(crate) mod write;
