//! Entry point shared by the cargo-fuzz target `fuzz/fuzz_targets/format_decode.rs`
//! and its proptest twin that runs on stable: hostile bytes, given valid magics,
//! versions and checksums so they reach the fields behind them, go through every
//! on-disk decoder. Each must reject or accept them without panicking and
//! without allocating beyond what the input could describe; a decoded checkpoint
//! body's chunk instances also go through the index's own validation.

use super::{batch, checkpoint, root, superblock};
use super::{BatchHeader, CheckpointBody, CheckpointRoot, Superblock};
use crate::index::Chunk;

/// Decodes `bytes` as a superblock, a checkpoint root, a batch header and a
/// checkpoint body; returns how many of the four decoded.
pub fn decode_all(bytes: &[u8]) -> usize {
    let mut decoded = 0;
    let mut sealed = bytes.to_vec();
    superblock::seal_for_fuzzing(&mut sealed);
    decoded += usize::from(Superblock::decode(&sealed).is_ok());

    let mut sealed = bytes.to_vec();
    root::seal_for_fuzzing(&mut sealed);
    decoded += usize::from(CheckpointRoot::decode(&sealed).is_ok());

    let mut sealed = bytes.to_vec();
    batch::seal_for_fuzzing(&mut sealed);
    decoded += usize::from(BatchHeader::decode(&sealed).is_ok());

    let mut sealed = bytes.to_vec();
    checkpoint::seal_for_fuzzing(&mut sealed);
    if let Ok(body) = CheckpointBody::decode(&sealed) {
        decoded += 1;
        for entries in &body.instances {
            let _ = Chunk::from_entries(entries);
        }
    }
    decoded
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

        #[test]
        fn hostile_bytes_behind_valid_checksums_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..6000)
        ) {
            decode_all(&bytes);
        }
    }

    #[test]
    fn sealed_encodings_of_real_structures_still_decode() {
        let sb = superblock::tests::sample();
        let mut bytes = sb.encode();
        superblock::seal_for_fuzzing(&mut bytes);
        assert_eq!(Superblock::decode(&bytes), Ok(sb));

        let root = root::tests::sample();
        let mut bytes = root.encode();
        root::seal_for_fuzzing(&mut bytes);
        assert_eq!(CheckpointRoot::decode(&bytes), Ok(root));

        let header = batch::tests::sample();
        let mut bytes = header.encode();
        batch::seal_for_fuzzing(&mut bytes);
        assert_eq!(BatchHeader::decode(&bytes), Ok(header));
    }

    #[test]
    fn sealing_makes_damaged_checksums_valid_again() {
        // An all-zero block with one header block, no entries and a length of
        // just the fixed part: only magic, version and checksum are wrong, and
        // sealing fixes exactly those.
        let mut bytes = vec![0u8; 4096];
        bytes[10..12].copy_from_slice(&1u16.to_le_bytes());
        let fixed = crate::format::BATCH_HEADER_FIXED_LEN as u32;
        bytes[56..60].copy_from_slice(&fixed.to_le_bytes());
        assert!(BatchHeader::decode(&bytes).is_err());
        batch::seal_for_fuzzing(&mut bytes);
        assert!(BatchHeader::decode(&bytes).is_ok());
    }
}
