//! The per-volume index: which physical block holds the newest copy of each
//! volume block, with its checksum. Pure data structure: no I/O, no locking.

mod chunk;
mod map;

pub(crate) use chunk::Chunk;
pub use chunk::{CHUNK_BLOCKS, MAX_POOL_BLOCKS};
pub(crate) use map::set_owners;
pub use map::{Mapping, Packing, RefCounts, RelocationMemo, Untracked, VolumeMap};
