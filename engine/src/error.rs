//! Error types, one enum per operation family.

use std::path::PathBuf;

use crate::format::DecodeError;
use crate::io::{DeviceError, OpenBackingError};
use crate::units::VolumeId;

/// Why a data-path operation (read, write, trim, flush) failed.
///
/// Not `#[non_exhaustive]`: adapters map every cause, so a new one must be
/// mapped where it surfaces rather than fall into a catch-all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IoError {
    /// The volume does not exist (or is being deleted).
    #[error("{0} does not exist")]
    NoSuchVolume(VolumeId),
    /// The range lies outside the volume.
    #[error("range at byte {offset} length {len} exceeds volume size {size}")]
    OutOfRange {
        /// Start of the range in bytes.
        offset: u64,
        /// Length in bytes.
        len: u64,
        /// Volume size in bytes.
        size: u64,
    },
    /// The request is malformed (unaligned or empty, or too large).
    #[error("invalid request: {0}")]
    Invalid(&'static str),
    /// The pool has no free space for the write.
    #[error("pool is out of space")]
    NoSpace,
    /// Stored data failed its checksum: the media corrupted it.
    #[error("{volume} block {lba} failed its checksum")]
    Media {
        /// The volume read.
        volume: VolumeId,
        /// The 4 KiB block whose checksum failed.
        lba: u64,
    },
    /// The device reported an error.
    #[error(transparent)]
    Device(#[from] DeviceError),
    /// An earlier write or flush failed; the engine accepts no more changes until reopened.
    #[error("engine is fenced after an earlier device failure; reopen to recover")]
    Fenced,
    /// The target is a snapshot: snapshots are read-only.
    #[error("{0} is a snapshot and cannot be written")]
    ReadOnly(VolumeId),
    /// This node may not serve the replicated volume: it is not (or no longer)
    /// its primary, or its cluster lease may have lapsed. Another node's path
    /// serves it; the write was not acknowledged.
    #[error("this node is not the volume's primary")]
    NotPrimary,
}

/// Why a volume control operation (create, delete, resize) failed.
///
/// Not `#[non_exhaustive]`, for the same reason as [`IoError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VolumeError {
    /// Another volume has this name.
    #[error("a volume named {0:?} already exists")]
    NameTaken(String),
    /// No volume with that id or name.
    #[error("no such volume: {0}")]
    NotFound(String),
    /// The name is empty, too long or has characters outside `[A-Za-z0-9._-]`.
    #[error("invalid volume name {0:?}: use 1-256 of letters, digits, '.', '_' and '-'")]
    InvalidName(String),
    /// The size is zero, not a multiple of the sector size, or too large.
    #[error("invalid size {0} bytes: must be a positive multiple of 4096 and at most 2^52")]
    InvalidSize(u64),
    /// Shrinking would discard data; it is refused.
    #[error("cannot shrink a volume from {from} to {to} bytes")]
    Shrink {
        /// Current size.
        from: u64,
        /// Requested size.
        to: u64,
    },
    /// The operation needs a volume, not a snapshot.
    #[error("{0} is a snapshot")]
    IsSnapshot(VolumeId),
    /// The operation needs a snapshot, not a volume.
    #[error("{0} is not a snapshot")]
    NotSnapshot(VolumeId),
    /// A volume can only be reverted to a snapshot of its own lineage.
    #[error("{snapshot} is not a snapshot of {volume} or of the volume it was cloned from")]
    NotRelated {
        /// The volume to revert.
        volume: VolumeId,
        /// The unrelated snapshot.
        snapshot: VolumeId,
    },
    /// The operation's log record could not be written or flushed.
    #[error(transparent)]
    Io(#[from] IoError),
}

/// Why a pool could not be formatted or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// A backing store could not be opened.
    #[error(transparent)]
    Backing(#[from] OpenBackingError),
    /// A device operation failed.
    #[error("device error while opening the pool: {0}")]
    Device(#[from] DeviceError),
    /// A device has no Keel superblock.
    #[error("{0} holds no Keel pool (no valid superblock)")]
    NotFormatted(String),
    /// On-disk state is damaged.
    #[error("pool metadata is corrupt: {what}: {source}")]
    Corrupt {
        /// Which structure.
        what: &'static str,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// Both copies of the checkpoint root slot that would hold the next
    /// generation are damaged: a newer checkpoint may have existed, and opening
    /// from the older one could silently lose what was written after it.
    #[error(
        "both copies of the checkpoint root after generation {generation} are damaged; \
         opening from generation {generation} could lose acknowledged writes, so the pool is not opened"
    )]
    RootDamaged {
        /// The newest generation found intact.
        generation: u64,
    },
    /// A log batch that later batches show had completed (and so may have been
    /// acknowledged) cannot be read back: its header is damaged, so which writes
    /// it held is unknown. Opening without it would serve stale data as current.
    #[error(
        "log batch {seq} (expected at segment {segment} block {block}) is damaged and may hold \
         acknowledged writes ({why}); which blocks it wrote cannot be recovered, so the pool \
         is not opened"
    )]
    LogDamaged {
        /// Sequence number of the lost batch.
        seq: u64,
        /// Segment where it was expected.
        segment: u32,
        /// Block within that segment.
        block: u32,
        /// Why the damage cannot be the torn tail of a crash.
        why: &'static str,
    },
    /// The devices given do not form one pool.
    #[error("devices do not form one pool: {0}")]
    Mismatch(String),
    /// A device is too small for even one segment.
    #[error("device {path} is too small ({size} bytes)")]
    TooSmall {
        /// The device.
        path: PathBuf,
        /// Its size.
        size: u64,
    },
    /// The devices hold more blocks than a pool can address (4 PiB).
    #[error("devices hold more than a pool's 2^40 blocks (4 PiB)")]
    TooLarge,
    /// Creating the I/O thread failed.
    #[error("cannot start the I/O thread: {0}")]
    Thread(#[source] std::io::Error),
    /// Writing the checkpoint that completes an open failed.
    #[error("cannot write the opening checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
}

/// Why a checkpoint could not be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not enough free segments for the body.
    #[error("no free segments for a checkpoint of {0} bytes")]
    NoSpace(u64),
    /// The body outgrew what a root can name.
    #[error("checkpoint of {0} bytes is larger than a root can name")]
    TooLarge(u64),
    /// A device write or flush failed (the engine is fenced).
    #[error(transparent)]
    Io(#[from] IoError),
}
