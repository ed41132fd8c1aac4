//! Block devices: the only place the engine touches the kernel. Knows nothing of
//! volumes or the log; it moves aligned buffers to and from byte offsets.
//!
//! Every backend implements [`Device`], a completion-based interface: an operation is
//! submitted with an owned buffer and a callback, and the buffer comes back with the
//! result. Backends: [`UringDevice`] (files and block devices, O_DIRECT, io_uring),
//! [`RamDevice`] (memory, for pools that measure everything but the disk),
//! [`SimDevice`] (memory, models power loss) and [`FaultyDevice`] (injects errors).

mod fault;
mod open;
mod ram;
mod rings;
mod sim;

pub use fault::{FaultPlan, FaultyDevice};
pub use open::{open_backing, BackingKind, OpenBackingError};
pub use ram::RamDevice;
pub use rings::{
    recv_driving_local, recv_polling_local, LocalRing, LocalRingError, RingShare, UringDevice,
};
pub use sim::{CrashMode, SimDevice};
pub use uring::{AlignedBuf, BlockParts};

use std::sync::Arc;

/// One operation on a device.
#[derive(Debug)]
pub enum IoOp {
    /// Reads `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Byte offset, a multiple of the block size.
        offset: u64,
        /// Destination; its length is the transfer size.
        buf: AlignedBuf,
    },
    /// Writes all of `buf` at `offset`.
    Write {
        /// Byte offset, a multiple of the block size.
        offset: u64,
        /// Source; its length is the transfer size.
        buf: AlignedBuf,
    },
    /// Writes `parts` one after another from `offset` (one vectored write):
    /// data written from the buffers it arrived in, without a gathering copy.
    WriteParts {
        /// Byte offset, a multiple of the block size.
        offset: u64,
        /// Sources, in order; their total length is the transfer size.
        parts: BlockParts,
    },
    /// Writes all of `buf` at `offset` through the kernel's page cache: like
    /// [`IoOp::Write`] it survives process death once complete and power loss
    /// only after a later [`IoOp::Flush`], but rewriting the same block again
    /// and again costs memory copies, not device writes, until the flush (or
    /// the kernel's writeback) sends the last image to the media. For the
    /// header of the log's open batch, rewritten as records join it.
    WriteCached {
        /// Byte offset, a multiple of the block size.
        offset: u64,
        /// Source; its length is the transfer size.
        buf: AlignedBuf,
    },
    /// Makes every completed write durable (fdatasync / device cache flush).
    Flush,
}

impl IoOp {
    /// The operation's buffer, if it has one.
    pub fn into_buf(self) -> Option<AlignedBuf> {
        match self {
            IoOp::Read { buf, .. } | IoOp::Write { buf, .. } | IoOp::WriteCached { buf, .. } => {
                Some(buf)
            }
            IoOp::WriteParts { .. } | IoOp::Flush => None,
        }
    }
}

/// Why a device operation failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceError {
    /// The kernel returned an error number.
    #[error("device I/O failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Os(i32),
    /// The transfer moved fewer bytes than asked.
    #[error("short transfer: {done} of {wanted} bytes")]
    Short {
        /// Bytes moved.
        done: usize,
        /// Bytes asked for.
        wanted: usize,
    },
    /// The operation lies outside the device.
    #[error("offset {offset} + {len} beyond device size {size}")]
    OutOfBounds {
        /// Requested offset.
        offset: u64,
        /// Requested length.
        len: usize,
        /// Device size in bytes.
        size: u64,
    },
    /// The device has shut down and accepts no more operations.
    #[error("device is closed")]
    Closed,
}

/// What comes back from an operation: the buffer (for reads and writes) and the result.
#[derive(Debug)]
pub struct IoOutcome {
    /// The buffer that was submitted, returned to its owner.
    pub buf: Option<AlignedBuf>,
    /// Success or the failure cause.
    pub result: Result<(), DeviceError>,
}

/// Completion callback; runs on the device's completion thread (or the thread
/// polling the [`LocalRing`] it was submitted on) and must not block.
pub type IoDone = Box<dyn FnOnce(IoOutcome) + Send>;

/// A block device with completion-based I/O.
pub trait Device: Send + Sync {
    /// Size in bytes.
    fn size_bytes(&self) -> u64;
    /// Submits one operation; `done` runs exactly once, possibly before `submit` returns.
    fn submit(&self, op: IoOp, done: IoDone);
    /// Submits like [`Device::submit`], but on the calling thread's [`LocalRing`]
    /// when it has one: `done` then runs when that thread polls its ring. For
    /// the data path, whose callers are event loops; never for a caller that
    /// blocks on the result without polling (those use `submit`).
    fn submit_here(&self, op: IoOp, done: IoDone) {
        self.submit(op, done);
    }
    /// Hints that `[offset, offset + len)` will be written soon, so a backend whose
    /// storage is allocated lazily (a sparse file) can allocate it ahead of the
    /// writes instead of inside them. Never changes what reads return and never
    /// fails: an unallocated range is still written correctly, only more slowly.
    fn preallocate(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }
}

/// Shared handle to a device.
pub type DeviceRef = Arc<dyn Device>;

/// Checks that an operation lies inside a device of `size` bytes.
pub(crate) fn check_bounds(op: &IoOp, size: u64) -> Result<(), DeviceError> {
    let (offset, len) = match op {
        IoOp::Read { offset, buf }
        | IoOp::Write { offset, buf }
        | IoOp::WriteCached { offset, buf } => (*offset, buf.len()),
        IoOp::WriteParts { offset, parts } => (*offset, parts.len()),
        IoOp::Flush => return Ok(()),
    };
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(DeviceError::OutOfBounds { offset, len, size }),
    }
}

/// Runs `op` and blocks until it completes. For set-up and recovery paths only,
/// never for the data path.
pub fn submit_blocking(device: &dyn Device, op: IoOp) -> IoOutcome {
    let (tx, rx) = crossbeam_channel::bounded(1);
    device.submit(
        op,
        Box::new(move |outcome| {
            let _ = tx.send(outcome);
        }),
    );
    rx.recv().unwrap_or(IoOutcome {
        buf: None,
        result: Err(DeviceError::Closed),
    })
}

/// Reads `len` bytes at `offset`, blocking.
pub fn read_blocking(
    device: &dyn Device,
    offset: u64,
    len: usize,
) -> Result<AlignedBuf, DeviceError> {
    read_blocking_into(device, offset, AlignedBuf::for_overwrite(len))
}

/// Reads `buf.len()` bytes at `offset` into `buf` (or its current view),
/// blocking; gives the buffer back.
pub fn read_blocking_into(
    device: &dyn Device,
    offset: u64,
    buf: AlignedBuf,
) -> Result<AlignedBuf, DeviceError> {
    let outcome = submit_blocking(device, IoOp::Read { offset, buf });
    outcome.result?;
    outcome.buf.ok_or(DeviceError::Closed)
}

/// Writes `buf` at `offset`, blocking.
pub fn write_blocking(
    device: &dyn Device,
    offset: u64,
    buf: AlignedBuf,
) -> Result<(), DeviceError> {
    submit_blocking(device, IoOp::Write { offset, buf }).result
}

/// Flushes, blocking.
pub fn flush_blocking(device: &dyn Device) -> Result<(), DeviceError> {
    submit_blocking(device, IoOp::Flush).result
}
