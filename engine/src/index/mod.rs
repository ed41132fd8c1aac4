//! The per-volume index: which physical block holds the newest copy of each
//! volume block, with its checksum. Pure data structure: no I/O, no locking.

mod map;

pub(crate) use map::{set_owners, Chunk};
pub use map::{Mapping, Packing, RefCounts, RelocationMemo, Untracked, VolumeMap, CHUNK_BLOCKS};
