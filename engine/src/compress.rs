//! Per-volume compression: a write to a compressed volume is cut into units of up
//! to [`UNIT_BLOCKS`] blocks; each unit is lz4-compressed and kept compressed only
//! if that saves at least one block, otherwise stored raw. A compressed unit on
//! disk is a header (`compressed length u32 | logical blocks u16 | 0 u16`), the
//! lz4 block, and zero padding to whole blocks.
//!
//! A unit is the read granule of compressed data: reading one block of it reads
//! and decompresses the whole unit, so units are kept small.

use bytes::{Bytes, BytesMut};

use crate::format::Entry;
use crate::units::BLOCK_SIZE;

/// Largest compression unit in blocks (32 KiB of volume data).
pub(crate) const UNIT_BLOCKS: usize = 8;
const HEADER_LEN: usize = 8;

/// Packs `data` (whole blocks written at `lba` of `volume`) into a
/// [`Entry::WritePacked`] record and the blocks it stores.
pub(crate) fn pack(volume: u64, lba: u64, data: &[u8]) -> (Entry, Bytes) {
    let mut stored = BytesMut::with_capacity(data.len());
    let mut units = Vec::new();
    let mut crcs = Vec::with_capacity(data.len() / BLOCK_SIZE);
    for unit in data.chunks(UNIT_BLOCKS * BLOCK_SIZE) {
        let logical = unit.len() / BLOCK_SIZE;
        crcs.extend(unit.chunks(BLOCK_SIZE).map(crc32c::crc32c));
        let compressed = lz4_flex::block::compress(unit);
        let packed_blocks = (HEADER_LEN + compressed.len()).div_ceil(BLOCK_SIZE);
        if packed_blocks < logical {
            let start = stored.len();
            stored.extend_from_slice(&(compressed.len() as u32).to_le_bytes());
            stored.extend_from_slice(&(logical as u16).to_le_bytes());
            stored.extend_from_slice(&0u16.to_le_bytes());
            stored.extend_from_slice(&compressed);
            stored.resize(start + packed_blocks * BLOCK_SIZE, 0);
            units.push((logical as u8, packed_blocks as u8));
        } else {
            stored.extend_from_slice(unit);
            units.push((logical as u8, logical as u8));
        }
    }
    let stored = stored.freeze();
    let stored_crcs = stored.chunks(BLOCK_SIZE).map(crc32c::crc32c).collect();
    let entry = Entry::WritePacked {
        volume,
        lba,
        data_offset: 0,
        units,
        crcs,
        stored_crcs,
    };
    (entry, stored)
}

/// Why a stored unit could not be unpacked.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Corrupt;

/// The uncompressed content of a compressed unit read from disk.
pub(crate) fn unpack(unit: &[u8]) -> Result<Vec<u8>, Corrupt> {
    let header = unit.get(..HEADER_LEN).ok_or(Corrupt)?;
    let compressed_len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let logical = usize::from(u16::from_le_bytes([header[4], header[5]]));
    if logical == 0 || logical > UNIT_BLOCKS {
        return Err(Corrupt);
    }
    let body = unit
        .get(HEADER_LEN..HEADER_LEN + compressed_len)
        .ok_or(Corrupt)?;
    let content = lz4_flex::block::decompress(body, logical * BLOCK_SIZE).map_err(|_| Corrupt)?;
    if content.len() != logical * BLOCK_SIZE {
        return Err(Corrupt);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn unit_bytes(entry: &Entry) -> Vec<(u8, u8)> {
        match entry {
            Entry::WritePacked { units, .. } => units.clone(),
            other => panic!("not packed: {other:?}"),
        }
    }

    #[test]
    fn compressible_units_shrink_and_incompressible_ones_stay_raw() {
        let zeros = vec![0u8; 20 * BLOCK_SIZE];
        let (entry, stored) = pack(1, 0, &zeros);
        assert_eq!(unit_bytes(&entry), vec![(8, 1), (8, 1), (4, 1)]);
        assert_eq!(stored.len(), 3 * BLOCK_SIZE);
        let mut noise = vec![0u8; 8 * BLOCK_SIZE];
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for byte in &mut noise {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *byte = x as u8;
        }
        let (entry, stored) = pack(1, 0, &noise);
        assert_eq!(unit_bytes(&entry), vec![(8, 8)]);
        assert_eq!(&stored[..], &noise[..], "raw units are stored as they are");
    }

    proptest! {
        #[test]
        fn packed_units_unpack_to_what_was_written(
            blocks in 1usize..20,
            seed in any::<u8>(),
            period in 1usize..64,
        ) {
            let data: Vec<u8> = (0..blocks * BLOCK_SIZE).map(|i| seed.wrapping_add((i % period) as u8)).collect();
            let (entry, stored) = pack(3, 10, &data);
            let Entry::WritePacked { units, crcs, stored_crcs, .. } = entry else { unreachable!() };
            prop_assert_eq!(crcs.len(), blocks);
            prop_assert_eq!(stored_crcs.len() * BLOCK_SIZE, stored.len());
            let (mut at, mut logical_at) = (0usize, 0usize);
            for (logical, kept) in units {
                let (logical, kept) = (usize::from(logical), usize::from(kept));
                let unit = &stored[at * BLOCK_SIZE..(at + kept) * BLOCK_SIZE];
                let content = if kept < logical { unpack(unit).expect("unpack") } else { unit.to_vec() };
                prop_assert_eq!(&content[..], &data[logical_at * BLOCK_SIZE..(logical_at + logical) * BLOCK_SIZE]);
                at += kept;
                logical_at += logical;
            }
        }

        #[test]
        fn unpacking_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = unpack(&bytes);
        }
    }
}
