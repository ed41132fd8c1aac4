//! The pool's geometry: which device and byte offset each segment lives at, and
//! the reserved blocks (superblock and its copy, checkpoint root slots and their
//! mirrors) at the start of devices.

use crate::error::OpenError;
use crate::format::Superblock;
use crate::index::MAX_POOL_BLOCKS;
use crate::io::{read_blocking, write_blocking, AlignedBuf, Device, DeviceRef};
use crate::units::{PhysBlock, SegmentId, BLOCK_SIZE, BLOCK_SIZE_U64};

/// Bytes reserved at the start of every device: block 0 superblock, blocks 1-2 the
/// checkpoint root slots (used on device 0 only), the rest alignment padding.
pub(crate) const DATA_OFFSET: u64 = 1 << 20;
/// Byte offsets of the two checkpoint root slots on device 0.
pub(crate) const ROOT_SLOTS: [u64; 2] = [BLOCK_SIZE_U64, 2 * BLOCK_SIZE_U64];
/// Byte offsets of the mirrors of the two root slots on device 0: generation *g*
/// is written to `ROOT_SLOTS[g % 2]` and `ROOT_MIRRORS[g % 2]` before one flush.
pub(crate) const ROOT_MIRRORS: [u64; 2] = [3 * BLOCK_SIZE_U64, 4 * BLOCK_SIZE_U64];
/// Byte offset of each device's copy of its superblock.
pub(crate) const SUPERBLOCK_COPY: u64 = 5 * BLOCK_SIZE_U64;

/// Devices of one pool and where its segments are.
pub(crate) struct Pool {
    pub uuid: [u8; 16],
    pub blocks_per_segment: u32,
    pub devices: Vec<DeviceRef>,
    /// `(device index, byte offset)` of each segment, indexed by segment id.
    segments: Vec<(usize, u64)>,
}

impl Pool {
    /// Writes superblocks to `devices`, making them one new pool.
    pub fn format(
        devices: Vec<DeviceRef>,
        blocks_per_segment: u32,
        uuid: [u8; 16],
    ) -> Result<Pool, OpenError> {
        let segment_bytes = u64::from(blocks_per_segment) * BLOCK_SIZE_U64;
        let created_unix_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut first_segment = 0u32;
        let mut superblocks = Vec::new();
        for (index, device) in devices.iter().enumerate() {
            let size = device.size_bytes();
            let segment_count = (size.saturating_sub(DATA_OFFSET) / segment_bytes) as u32;
            if segment_count == 0 {
                return Err(OpenError::TooSmall {
                    path: format!("device {index}").into(),
                    size,
                });
            }
            superblocks.push(Superblock {
                pool_uuid: uuid,
                device_index: index as u32,
                device_count: devices.len() as u32,
                blocks_per_segment,
                data_offset: DATA_OFFSET,
                segment_count,
                first_segment,
                created_unix_s,
            });
            first_segment = first_segment
                .checked_add(segment_count)
                .ok_or(OpenError::TooLarge)?;
        }
        check_capacity(first_segment, blocks_per_segment)?;
        for (device, superblock) in devices.iter().zip(&superblocks) {
            for offset in [0, SUPERBLOCK_COPY] {
                write_blocking(
                    device.as_ref(),
                    offset,
                    AlignedBuf::copy_from(&superblock.encode()),
                )?;
            }
        }
        Ok(Pool::from_superblocks(devices, &superblocks))
    }

    /// Reads the superblocks of `devices` (in any order) and checks they form one pool.
    pub fn load(devices: Vec<DeviceRef>) -> Result<Pool, OpenError> {
        let mut found = Vec::new();
        for (position, device) in devices.into_iter().enumerate() {
            let superblock = load_superblock(device.as_ref(), position)?;
            found.push((superblock, device));
        }
        found.sort_by_key(|(sb, _)| sb.device_index);
        let Some((first, _)) = found.first() else {
            return Err(OpenError::Mismatch("no devices given".into()));
        };
        let uuid = first.pool_uuid;
        let count = first.device_count as usize;
        if found.len() != count {
            return Err(OpenError::Mismatch(format!(
                "pool has {count} devices, {} given",
                found.len()
            )));
        }
        let mut next_segment = 0;
        for (index, (sb, _)) in found.iter().enumerate() {
            if sb.pool_uuid != uuid
                || sb.device_index as usize != index
                || sb.first_segment != next_segment
            {
                return Err(OpenError::Mismatch(format!(
                    "device {index} belongs to another pool or position"
                )));
            }
            if sb.blocks_per_segment != first.blocks_per_segment {
                return Err(OpenError::Mismatch(
                    "segment sizes differ between devices".into(),
                ));
            }
            next_segment = next_segment
                .checked_add(sb.segment_count)
                .ok_or(OpenError::TooLarge)?;
        }
        check_capacity(next_segment, first.blocks_per_segment)?;
        let (superblocks, devices): (Vec<Superblock>, Vec<DeviceRef>) = found.into_iter().unzip();
        Ok(Pool::from_superblocks(devices, &superblocks))
    }

    fn from_superblocks(devices: Vec<DeviceRef>, superblocks: &[Superblock]) -> Pool {
        let blocks_per_segment = superblocks[0].blocks_per_segment;
        let segment_bytes = u64::from(blocks_per_segment) * BLOCK_SIZE_U64;
        let mut segments = Vec::new();
        for (index, sb) in superblocks.iter().enumerate() {
            for i in 0..u64::from(sb.segment_count) {
                segments.push((index, sb.data_offset + i * segment_bytes));
            }
        }
        Pool {
            uuid: superblocks[0].pool_uuid,
            blocks_per_segment,
            devices,
            segments,
        }
    }

    /// Number of segments across all devices.
    pub fn segment_count(&self) -> u32 {
        self.segments.len() as u32
    }

    /// Segment size in bytes.
    pub fn segment_bytes(&self) -> u64 {
        u64::from(self.blocks_per_segment) * BLOCK_SIZE_U64
    }

    /// The device and byte offset of `block` within `segment`.
    pub fn locate(&self, segment: SegmentId, block: u32) -> (&dyn Device, u64) {
        let (device, offset) = self.segments[segment.0 as usize];
        (
            self.devices[device].as_ref(),
            offset + u64::from(block) * BLOCK_SIZE_U64,
        )
    }

    /// The pool-global address of `block` within `segment`.
    pub fn phys(&self, segment: SegmentId, block: u32) -> PhysBlock {
        PhysBlock(u64::from(segment.0) * u64::from(self.blocks_per_segment) + u64::from(block))
    }

    /// The segment and block-in-segment of a physical block.
    pub fn split(&self, phys: PhysBlock) -> (SegmentId, u32) {
        let per = u64::from(self.blocks_per_segment);
        (SegmentId((phys.0 / per) as u32), (phys.0 % per) as u32)
    }

    /// Whether a physical block lies inside the pool (disk bytes are untrusted).
    pub fn contains(&self, phys: PhysBlock) -> bool {
        phys.0 / u64::from(self.blocks_per_segment) < self.segments.len() as u64
    }

    /// Device 0, which holds the checkpoint roots.
    pub fn root_device(&self) -> &dyn Device {
        self.devices[0].as_ref()
    }
}

/// A pool addresses at most [`MAX_POOL_BLOCKS`] blocks: the index keeps
/// locations in 40 bits.
fn check_capacity(segments: u32, blocks_per_segment: u32) -> Result<(), OpenError> {
    if u64::from(segments) * u64::from(blocks_per_segment) > MAX_POOL_BLOCKS {
        return Err(OpenError::TooLarge);
    }
    Ok(())
}

/// Reads a device's superblock from block 0 or, if that is damaged, from its
/// copy, and rewrites whichever of the two is damaged or missing (pools written
/// before the copy existed get one here). The rewrite is flushed by the opening
/// checkpoint, which flushes every device.
fn load_superblock(device: &dyn Device, position: usize) -> Result<Superblock, OpenError> {
    let primary = read_blocking(device, 0, BLOCK_SIZE)?;
    let copy = read_blocking(device, SUPERBLOCK_COPY, BLOCK_SIZE)?;
    let (superblock, repair) = match (
        Superblock::decode(primary.as_slice()),
        Superblock::decode(copy.as_slice()),
    ) {
        (Ok(sb), Ok(copy_sb)) if copy_sb == sb => return Ok(sb),
        (Ok(sb), _) => (sb, SUPERBLOCK_COPY),
        (Err(err), Ok(sb)) => {
            tracing::error!(
                device = position,
                %err,
                "superblock damaged; using its copy and rewriting it"
            );
            (sb, 0)
        }
        (Err(err), Err(_)) => {
            return Err(
                if Superblock::has_magic(primary.as_slice())
                    || Superblock::has_magic(copy.as_slice())
                {
                    OpenError::Corrupt {
                        what: "superblock and its copy",
                        source: err,
                    }
                } else {
                    OpenError::NotFormatted(format!("device {position}"))
                },
            )
        }
    };
    write_blocking(device, repair, AlignedBuf::copy_from(&superblock.encode()))?;
    Ok(superblock)
}
