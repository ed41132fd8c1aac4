//! Keel's one io_uring layer, under both the engine and the NVMe/TCP target.
//!
//! - [`EventFd`]: the eventfd one thread signals to wake another's ring.
//! - [`Ring`]: an io_uring whose every operation owns the memory the kernel
//!   uses until its completion is reaped (socket receives and sends, eventfd
//!   reads, cancellations), on a ring of its own or on one lent to it.
//! - [`LentRing`] and [`LentQueue`]: the contract between a component that
//!   owns a ring (the engine's per-thread ring) and one that borrows it (a
//!   reactor), stated as types: a borrower queues only through a
//!   [`LentQueue`], which marks every entry with [`LENT_MARK`], and the owner
//!   hands back every completion [`is_lent`] says is the borrower's.
//!
//! The `unsafe` of pushing submission entries lives in this crate's modules
//! that say so, each block with its `// SAFETY:` argument.
#![deny(unsafe_code)]

mod eventfd;
mod lend;
mod ring;

pub use eventfd::EventFd;
pub use lend::{is_lent, LentQueue, LentRing, LENT_MARK};
pub use ring::{Completion, Held, OpId, Ring, SendBatch};
