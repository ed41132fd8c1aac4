//! Pure encoding and decoding of every on-disk structure, with checksums. Does no
//! I/O and imports nothing from the crate but `units`. Integers are fixed-width
//! little-endian; every structure starts with a magic and a format version.
//! `engine/FORMAT.md` documents the layout byte by byte.

mod batch;
mod checkpoint;
mod codec;
pub mod fuzzing;
mod repair;
mod root;
mod superblock;

pub use batch::{
    BatchBuilder, BatchHeader, Entry, PackedUnit, UnverifiedIdentity, BATCH_HEADER_FIXED_LEN,
    HEADER_BLOCKS_MAX, HEAD_COLLECTOR, HEAD_FOREGROUND, VOLUME_FLAG_COMPRESS,
    VOLUME_FLAG_INCOMPLETE,
};
pub use checkpoint::{CheckpointBody, ChunkEntries, UnsettledImage, VolumeImage, VolumeKind};
pub use codec::{DecodeError, Reader, Writer};
pub use repair::{repair_one_bit, repair_one_bit_against};
pub use root::{CheckpointRoot, NO_SEGMENT, ROOT_SEGMENTS_MAX};
pub use superblock::Superblock;

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 3;
