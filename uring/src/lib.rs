//! Keel's one io_uring layer, under both the engine and the NVMe/TCP target.
//!
//! - [`AlignedBuf`]: block-aligned heap buffers (recycled) that O_DIRECT needs,
//!   and [`HugeRegion`]s of huge pages.
//! - [`BlockParts`]: block-aligned pieces written side by side in one
//!   vectored write.
//! - [`EventFd`]: the eventfd one thread signals to wake another's ring.
//! - [`FileRing`]: an io_uring for file and block-device I/O whose in-flight
//!   table owns every operation's buffer and its submitter's payload until the
//!   operation's own completion is reaped.
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

mod aligned_buf;
mod block_parts;
mod eventfd;
mod file_ring;
mod lend;
mod ring;
mod table;

pub use aligned_buf::{AlignedBuf, HugeRegion, BLOCK_SIZE, HUGE_PAGE_BYTES};
pub use block_parts::{BlockParts, BLOCK_PARTS_MAX};
pub use eventfd::EventFd;
pub use file_ring::{FileOp, FileRing, Reaped};
pub use lend::{is_lent, LentQueue, LentRing, LENT_MARK};
pub use ring::{Completion, Held, OpId, Ring, SendBatch};

/// Whether an entry into the kernel failed only for now, so the next one
/// simply retries: interrupted by a signal, refused while completions wait to
/// be reaped, or short of resources for the moment.
fn is_transient(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::EAGAIN)
    )
}

/// The outcome of an entry into the kernel with what means only "not now"
/// (a transient failure, a timed wait's ETIME) counted as success: queued
/// entries stay queued and completions stay posted for the next entry.
fn settled(result: std::io::Result<()>) -> std::io::Result<()> {
    match result {
        Err(err) if is_transient(&err) || err.raw_os_error() == Some(libc::ETIME) => Ok(()),
        other => other,
    }
}
