//! What the engine's rings attach to each operation they hand the `uring`
//! crate's [`FileRing`] (the callback, and the device kept open meanwhile),
//! how a request becomes a [`FileOp`], and how a completion becomes an
//! [`IoOutcome`].

use std::os::fd::AsRawFd;
use std::sync::Arc;

use uring::{FileOp, FileRing};

use super::Shared;
use crate::io::{AlignedBuf, DeviceError, IoDone, IoOp, IoOutcome};

/// What a ring is asked to do.
pub(super) enum Request {
    /// A caller's operation, completed through its callback.
    Io(IoOp, IoDone),
    /// An allocation hint: its outcome only matters for performance.
    Preallocate { offset: u64, len: u64 },
}

/// What the engine keeps with an operation in flight.
pub(super) enum Pending {
    /// A caller's operation.
    Io {
        done: IoDone,
        /// Bytes it moves when it succeeds in full.
        wanted: usize,
        /// Keeps the device's file open while the operation runs on a ring
        /// other than the device's own.
        _device: Option<Arc<Shared>>,
    },
    /// A preallocation, whose failure only costs speed.
    Preallocate,
    /// The read of the device ring thread's wake-up eventfd.
    Wake,
}

/// An engine ring: a [`FileRing`] whose operations carry [`Pending`].
pub(super) type EngineRing = FileRing<Pending>;

/// A completion ready to run outside the ring's borrow.
pub(super) struct Finished {
    done: IoDone,
    outcome: IoOutcome,
}

impl Finished {
    pub fn run(self) {
        (self.done)(self.outcome);
    }

    /// `done` with `err` (the operation never ran, or its ring failed).
    pub fn failed(done: IoDone, buf: Option<AlignedBuf>, err: DeviceError) -> Finished {
        Finished {
            done,
            outcome: IoOutcome {
                buf,
                result: Err(err),
            },
        }
    }
}

/// Queues `request` on `ring` for `shared`'s file, or gives it back (no room
/// in the ring). `keep_device` holds the file open until completion (for
/// rings the device does not own).
pub(super) fn push(
    ring: &mut EngineRing,
    shared: &Arc<Shared>,
    request: Request,
    keep_device: bool,
) -> Result<(), Request> {
    let fd = shared.file.as_raw_fd();
    match request {
        Request::Io(op, done) => {
            // UringDevice copies cached writes into the page cache itself and
            // never queues one; written directly, one would promise the same.
            let op = match op {
                IoOp::Read { offset, buf } => FileOp::Read { offset, buf },
                IoOp::Write { offset, buf } | IoOp::WriteCached { offset, buf } => {
                    FileOp::Write { offset, buf }
                }
                IoOp::WriteParts { offset, parts } => FileOp::WriteParts { offset, parts },
                IoOp::Flush => FileOp::Sync,
            };
            let pending = Pending::Io {
                wanted: op.wanted(),
                done,
                _device: keep_device.then(|| shared.clone()),
            };
            ring.push(fd, op, pending).map_err(|(op, pending)| {
                let Pending::Io { done, .. } = pending else {
                    unreachable!("an I/O request comes back as one")
                };
                Request::Io(io_op(op), done)
            })
        }
        Request::Preallocate { offset, len } => ring
            .push(fd, FileOp::Allocate { offset, len }, Pending::Preallocate)
            .map_err(|_| Request::Preallocate { offset, len }),
    }
}

/// The request a file operation came from.
fn io_op(op: FileOp) -> IoOp {
    match op {
        FileOp::Read { offset, buf } => IoOp::Read { offset, buf },
        FileOp::Write { offset, buf } => IoOp::Write { offset, buf },
        FileOp::WriteParts { offset, parts } => IoOp::WriteParts { offset, parts },
        FileOp::Sync => IoOp::Flush,
        FileOp::Allocate { .. } => unreachable!("only preallocations allocate"),
    }
}

/// The callback to run for an operation that completed with the kernel's
/// `result`; `None` for a preallocation or a wake-up.
pub(super) fn finished(buf: Option<AlignedBuf>, pending: Pending, result: i32) -> Option<Finished> {
    let (done, wanted) = match pending {
        Pending::Io { done, wanted, .. } => (done, wanted),
        Pending::Preallocate => {
            if result < 0 {
                tracing::debug!(
                    errno = -result,
                    "preallocation failed; writes will allocate instead"
                );
            }
            return None;
        }
        Pending::Wake => return None,
    };
    let outcome = if result < 0 {
        Err(DeviceError::Os(-result))
    } else if (result as usize) < wanted {
        Err(DeviceError::Short {
            done: result as usize,
            wanted,
        })
    } else {
        Ok(())
    };
    Some(Finished {
        done,
        outcome: IoOutcome {
            buf,
            result: outcome,
        },
    })
}
