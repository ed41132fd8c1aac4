//! The checkpoint root: the small record, kept in two alternating slots on device 0,
//! that names the newest complete checkpoint and where log replay starts.

use super::codec::{crc_with_hole, verify_crc, DecodeError, Reader, Writer};
use super::FORMAT_VERSION;
use crate::units::BLOCK_SIZE;

const MAGIC: &[u8; 8] = b"KEELROOT";
const FIXED_LEN: usize = 8 + 4 + 4 + 16 + 8 + 8 + 8 + 4 + 4 + 8 + 4 + 4;
/// Flag: the collector head's replay position follows the body segments.
const FLAG_COLLECTOR_HEAD: u32 = 1;
/// Bytes of the collector head's replay position.
const COLLECTOR_HEAD_LEN: usize = 8;
/// Most body segments one root can name (it must fit a block).
pub const ROOT_SEGMENTS_MAX: usize = (BLOCK_SIZE - FIXED_LEN - COLLECTOR_HEAD_LEN - 4) / 4;
/// A head position naming no segment: that head had no open segment.
pub const NO_SEGMENT: u32 = u32::MAX;

/// Gives `bytes` a valid magic, version and (where its segment count leaves
/// room for one) checksum, so a fuzzer's input reaches the fields behind them.
pub(crate) fn seal_for_fuzzing(bytes: &mut [u8]) {
    if bytes.len() < FIXED_LEN + 4 {
        return;
    }
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    let mut count = [0u8; 4];
    count.copy_from_slice(&bytes[FIXED_LEN - 4..FIXED_LEN]);
    let mut flags = [0u8; 4];
    flags.copy_from_slice(&bytes[12..16]);
    let head_len = if u32::from_le_bytes(flags) & FLAG_COLLECTOR_HEAD != 0 {
        COLLECTOR_HEAD_LEN
    } else {
        0
    };
    let crc_at =
        FIXED_LEN + 4 * (u32::from_le_bytes(count) as usize).min(ROOT_SEGMENTS_MAX) + head_len;
    if crc_at + 4 <= bytes.len() {
        let crc = crc_with_hole(&bytes[..crc_at + 4], crc_at);
        bytes[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// Names the newest checkpoint. Valid roots are ordered by `generation`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckpointRoot {
    /// The pool this root belongs to.
    pub pool_uuid: [u8; 16],
    /// Monotonic; the valid slot with the highest generation wins.
    pub generation: u64,
    /// The epoch whose batches follow this checkpoint: every open of the pool
    /// starts a new epoch and writes a root naming it before any batch.
    pub epoch: u64,
    /// Sequence number of the first log batch not reflected in the body.
    pub replay_seq: u64,
    /// Segment where batch `replay_seq` starts (if it was ever written).
    pub replay_segment: u32,
    /// Block within that segment where it starts.
    pub replay_block: u32,
    /// Where the collector head's first batch at or after `replay_seq`
    /// starts, or where its next batch would have gone ([`NO_SEGMENT`]: it
    /// had no open segment). Replay follows both heads from here.
    pub collector_segment: u32,
    /// Block within `collector_segment`.
    pub collector_block: u32,
    /// Length in bytes of the checkpoint body.
    pub body_len: u64,
    /// crc32c of the body.
    pub body_crc: u32,
    /// Segments holding the body, in order.
    pub body_segments: Vec<u32>,
}

impl CheckpointRoot {
    /// Encodes into one zero-padded block.
    pub fn encode(&self) -> Vec<u8> {
        assert!(self.body_segments.len() <= ROOT_SEGMENTS_MAX);
        let mut w = Writer::with_capacity(BLOCK_SIZE);
        w.bytes(MAGIC);
        w.u32(FORMAT_VERSION);
        w.u32(FLAG_COLLECTOR_HEAD);
        w.bytes(&self.pool_uuid);
        w.u64(self.generation);
        w.u64(self.epoch);
        w.u64(self.replay_seq);
        w.u32(self.replay_segment);
        w.u32(self.replay_block);
        w.u64(self.body_len);
        w.u32(self.body_crc);
        w.u32(self.body_segments.len() as u32);
        for segment in &self.body_segments {
            w.u32(*segment);
        }
        w.u32(self.collector_segment);
        w.u32(self.collector_block);
        let crc_at = w.len();
        w.u32(0);
        let crc = crc_with_hole(w.as_slice(), crc_at);
        w.patch_u32(crc_at, crc);
        let mut block = w.into_vec();
        block.resize(BLOCK_SIZE, 0);
        block
    }

    /// Decodes one slot; any damage yields an error (the other slot is then used).
    pub fn decode(bytes: &[u8]) -> Result<CheckpointRoot, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let flags = r.u32()?;
        let pool_uuid = r.uuid()?;
        let generation = r.u64()?;
        let epoch = r.u64()?;
        let replay_seq = r.u64()?;
        let replay_segment = r.u32()?;
        let replay_block = r.u32()?;
        let body_len = r.u64()?;
        let body_crc = r.u32()?;
        let count = r.u32()? as usize;
        if count > ROOT_SEGMENTS_MAX {
            return Err(DecodeError::Invalid {
                field: "body_segments",
                value: count as u64,
            });
        }
        let mut body_segments = Vec::with_capacity(count);
        for _ in 0..count {
            body_segments.push(r.u32()?);
        }
        // Roots written before the collector had its own head have none.
        let (collector_segment, collector_block) = if flags & FLAG_COLLECTOR_HEAD != 0 {
            (r.u32()?, r.u32()?)
        } else {
            (NO_SEGMENT, 0)
        };
        let crc_at = r.position();
        let _crc = r.u32()?;
        verify_crc(&bytes[..crc_at + 4], crc_at)?;
        Ok(CheckpointRoot {
            pool_uuid,
            generation,
            epoch,
            replay_seq,
            replay_segment,
            replay_block,
            collector_segment,
            collector_block,
            body_len,
            body_crc,
            body_segments,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A valid root naming three body segments (also used by the fuzzing tests).
    pub(in crate::format) fn sample() -> CheckpointRoot {
        CheckpointRoot {
            pool_uuid: [3; 16],
            generation: 9,
            epoch: 4,
            replay_seq: 1234,
            replay_segment: 5,
            replay_block: 17,
            collector_segment: 6,
            collector_block: 40,
            body_len: 99_999,
            body_crc: 0xDEAD_BEEF,
            body_segments: vec![4, 8, 15],
        }
    }

    #[test]
    fn round_trips_and_detects_damage() {
        let root = sample();
        let block = root.encode();
        assert_eq!(CheckpointRoot::decode(&block), Ok(root));
        for byte in 0..FIXED_LEN + 12 + COLLECTOR_HEAD_LEN {
            let mut bad = block.clone();
            bad[byte] ^= 1;
            assert!(
                CheckpointRoot::decode(&bad).is_err(),
                "flip at {byte} went unnoticed"
            );
        }
    }

    #[test]
    fn a_root_without_the_collector_head_still_decodes() {
        let root = sample();
        let mut block = root.encode();
        // As written before the flag: no flag, no position, crc after the segments.
        block[12..16].copy_from_slice(&0u32.to_le_bytes());
        let crc_at = FIXED_LEN + 4 * root.body_segments.len();
        block.copy_within(
            crc_at + COLLECTOR_HEAD_LEN..crc_at + COLLECTOR_HEAD_LEN + 4,
            crc_at,
        );
        block[crc_at + 4..crc_at + 4 + COLLECTOR_HEAD_LEN].fill(0);
        let crc = crc_with_hole(&block[..crc_at + 4], crc_at);
        block[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            CheckpointRoot::decode(&block),
            Ok(CheckpointRoot {
                collector_segment: NO_SEGMENT,
                collector_block: 0,
                ..root
            })
        );
    }
}
