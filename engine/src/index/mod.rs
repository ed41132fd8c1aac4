//! The per-volume index: which physical block holds the newest copy of each
//! volume block, with its checksum. Pure data structure: no I/O, no locking.

mod map;

pub use map::{Mapping, VolumeMap, CHUNK_BLOCKS};
