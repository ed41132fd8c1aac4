//! The log-structured block engine. Turns files or raw block devices into thin
//! volumes: every change is appended as a checksummed record to a log of segments,
//! an in-memory index maps each volume block to its newest record, and checkpoints
//! bound recovery time. Knows nothing of NVMe, HTTP or async runtimes; the public
//! API is completion-based so callers on reactor threads never block.
//!
//! Start reading at [`Engine`]; `engine/FORMAT.md` documents the on-disk format.
//! No `unsafe` code: rings, aligned buffers and eventfds are the workspace's
//! `uring` crate's.
#![forbid(unsafe_code)]

mod audit;
mod checkpoint;
mod compress;
mod core;
mod datapath;
mod engine;
mod error;
pub mod format;
pub mod fuzzing;
mod gc;
mod index;
pub mod io;
mod log;
mod pool;
mod recovery;
pub mod replication;
mod scrub;
#[cfg(test)]
mod testing;
mod thick_clone;
pub mod units;
mod unsettled;
mod volume;

pub use crate::audit::SpaceAudit;
pub use crate::core::{EngineConfig, GcPolicy};
pub use crate::datapath::completion::{ReadDone, WriteDone};
pub use crate::datapath::write::ATOMIC_WRITE_BLOCKS;
pub use crate::engine::{
    DeviceSpec, Engine, PoolStats, VolumeOptions, VolumeSpace, VolumeWriteStats, IO_BYTES_MAX,
    VOLUME_BYTES_MAX, VOLUME_NAME_MAX,
};
pub use crate::error::{CheckpointError, IoError, OpenError, VolumeError};
pub use crate::format::VolumeKind;
pub use crate::index::{Mapping, Packing, RefCounts, Untracked, VolumeMap, CHUNK_BLOCKS};
pub use crate::log::WritePlug;
pub use crate::recovery::{DamagedExtent, RecoveryReport};
pub use crate::scrub::{ScrubStatus, VolumeDamage};
pub use crate::thick_clone::{CloneJob, CloneProgress, CloneStage, CloneState, ThickCloneOptions};
pub use crate::units::{SectorSize, VolumeId};
pub use crate::unsettled::{UnsettledSource, CARRIED_EXTENTS_MAX};
pub use crate::volume::VolumeInfo;
