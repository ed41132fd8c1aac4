//! The superblock: block 0 of every device of a pool, written once at format time.

use super::codec::{crc_with_hole, verify_crc, DecodeError, Reader, Writer};
use super::FORMAT_VERSION;
use crate::units::BLOCK_SIZE;

const MAGIC: &[u8; 8] = b"KEELPOOL";
/// Offset of the checksum field.
const CRC_AT: usize = 72;
const ENCODED_LEN: usize = 76;

/// Identity and geometry of one device of a pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Superblock {
    /// The pool this device belongs to.
    pub pool_uuid: [u8; 16],
    /// This device's position in the pool (0-based).
    pub device_index: u32,
    /// How many devices the pool has.
    pub device_count: u32,
    /// Segment size in 4 KiB blocks (same on every device).
    pub blocks_per_segment: u32,
    /// Byte offset of the first segment on this device.
    pub data_offset: u64,
    /// Segments on this device.
    pub segment_count: u32,
    /// Pool-global id of this device's first segment.
    pub first_segment: u32,
    /// Unix time (seconds) the pool was formatted.
    pub created_unix_s: u64,
}

/// Gives `bytes` (at least 76 long) a valid magic, version and checksum, so a
/// fuzzer's input reaches the fields behind them.
pub(crate) fn seal_for_fuzzing(bytes: &mut [u8]) {
    if bytes.len() < ENCODED_LEN {
        return;
    }
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let crc = crc_with_hole(&bytes[..ENCODED_LEN], CRC_AT);
    bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
}

impl Superblock {
    /// Encodes into one zero-padded block.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(BLOCK_SIZE);
        w.bytes(MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(0);
        w.bytes(&self.pool_uuid);
        w.u32(self.device_index);
        w.u32(self.device_count);
        w.u32(self.blocks_per_segment);
        w.u32(0);
        w.u64(self.data_offset);
        w.u32(self.segment_count);
        w.u32(self.first_segment);
        w.u64(self.created_unix_s);
        w.u32(0);
        debug_assert_eq!(w.len(), ENCODED_LEN);
        let crc = crc_with_hole(w.as_slice(), CRC_AT);
        w.patch_u32(CRC_AT, crc);
        let mut block = w.into_vec();
        block.resize(BLOCK_SIZE, 0);
        block
    }

    /// Whether `bytes` start with the superblock magic, whatever their version or
    /// checksum: such a device must never be taken for blank.
    pub fn has_magic(bytes: &[u8]) -> bool {
        bytes.starts_with(MAGIC)
    }

    /// Decodes from the start of `bytes`, checking magic, version and checksum.
    pub fn decode(bytes: &[u8]) -> Result<Superblock, DecodeError> {
        let head = bytes.get(..ENCODED_LEN).ok_or(DecodeError::Truncated {
            offset: 0,
            needed: ENCODED_LEN,
        })?;
        let mut r = Reader::new(head);
        r.magic(MAGIC)?;
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        verify_crc(head, CRC_AT)?;
        let _flags = r.u32()?;
        let pool_uuid = r.uuid()?;
        let device_index = r.u32()?;
        let device_count = r.u32()?;
        let blocks_per_segment = r.u32()?;
        let _reserved = r.u32()?;
        let data_offset = r.u64()?;
        let segment_count = r.u32()?;
        let first_segment = r.u32()?;
        let created_unix_s = r.u64()?;
        let _crc = r.u32()?;
        r.finish()?;
        if blocks_per_segment == 0 {
            return Err(DecodeError::Invalid {
                field: "blocks_per_segment",
                value: 0,
            });
        }
        if device_index >= device_count {
            return Err(DecodeError::Invalid {
                field: "device_index",
                value: device_index.into(),
            });
        }
        Ok(Superblock {
            pool_uuid,
            device_index,
            device_count,
            blocks_per_segment,
            data_offset,
            segment_count,
            first_segment,
            created_unix_s,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid superblock (also used by the fuzzing tests).
    pub(in crate::format) fn sample() -> Superblock {
        Superblock {
            pool_uuid: [7; 16],
            device_index: 1,
            device_count: 2,
            blocks_per_segment: 2048,
            data_offset: 1 << 20,
            segment_count: 100,
            first_segment: 50,
            created_unix_s: 1_700_000_000,
        }
    }

    #[test]
    fn round_trips() {
        let block = sample().encode();
        assert_eq!(block.len(), BLOCK_SIZE);
        assert_eq!(Superblock::decode(&block), Ok(sample()));
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let block = sample().encode();
        for byte in 0..ENCODED_LEN {
            let mut bad = block.clone();
            bad[byte] ^= 0x10;
            assert!(
                Superblock::decode(&bad).is_err(),
                "flip at {byte} went unnoticed"
            );
        }
    }
}
