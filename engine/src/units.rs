//! Units and identifiers shared by every engine module. Imports nothing else from the crate.

/// The engine's internal block size: the unit of mapping, checksumming and device I/O.
pub const BLOCK_SIZE: usize = 4096;
/// [`BLOCK_SIZE`] as a `u64`, for offset arithmetic.
pub const BLOCK_SIZE_U64: u64 = BLOCK_SIZE as u64;

/// Identifies a volume inside one pool. Assigned by the engine, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VolumeId(pub u64);

impl std::fmt::Display for VolumeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vol-{}", self.0)
    }
}

/// Identifies a segment of the pool (pool-global, across devices).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId(pub u32);

/// A pool-global physical block address: `segment * blocks_per_segment + block_in_segment`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PhysBlock(pub u64);

/// Logical block sizes a volume may expose to hosts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SectorSize {
    /// 512-byte logical blocks (writes smaller than 4 KiB are read-modify-write).
    B512,
    /// 4096-byte logical blocks, the engine's native size.
    B4096,
}

impl SectorSize {
    /// The size in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            SectorSize::B512 => 512,
            SectorSize::B4096 => 4096,
        }
    }

    /// Parses a byte count; only 512 and 4096 are valid.
    pub fn from_bytes(bytes: u32) -> Option<SectorSize> {
        match bytes {
            512 => Some(SectorSize::B512),
            4096 => Some(SectorSize::B4096),
            _ => None,
        }
    }
}

/// Rounds `value` up to a multiple of `align` (a power of two).
pub fn round_up(value: u64, align: u64) -> u64 {
    assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}
