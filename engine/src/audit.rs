//! A full recount of the pool's space accounting: every physical block's
//! references counted again from the maps (each shared chunk instance once,
//! as recovery counts them) and compared with the segment table's reference
//! counts, per-segment live counts and total. The collector frees and reuses
//! segments on these counts alone, so a drift is either a leak (space never
//! reclaimed) or worse, a live block in a segment about to be overwritten.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::core::Core;
use crate::log::segments::SegmentState;
use crate::units::SegmentId;

/// What a recount found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpaceAudit {
    /// Physical blocks the maps reference.
    pub live_blocks: u64,
    /// Every disagreement found, in words (empty when the accounting is right).
    pub mismatches: Vec<String>,
}

impl SpaceAudit {
    /// True when the segment table agrees with the maps everywhere.
    pub fn is_clean(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Most disagreements listed one by one; the rest are counted.
const MISMATCHES_LISTED: usize = 16;

/// Recounts under the log lock, so no batch applies (and no map changes)
/// while the maps are walked.
pub(crate) fn audit_space(core: &Core) -> SpaceAudit {
    let log = core.log.lock();
    let per_segment = u64::from(core.pool.blocks_per_segment);
    let maps = core.catalog.read().all();
    let mut seen = HashSet::new();
    let mut counted: BTreeMap<u64, u64> = BTreeMap::new();
    for volume in &maps {
        let map = volume.map.read();
        for (_, chunk) in map.instances() {
            if !seen.insert(Arc::as_ptr(&chunk)) {
                continue;
            }
            for (_, mapping) in chunk.mapped() {
                for block in mapping.blocks() {
                    *counted.entry(block.0).or_default() += 1;
                }
            }
        }
    }
    let mut mismatches = Vec::new();
    let mut note = |what: String| {
        if mismatches.len() < MISMATCHES_LISTED {
            mismatches.push(what);
        } else if mismatches.len() == MISMATCHES_LISTED {
            mismatches.push("further disagreements not listed".to_owned());
        }
    };
    let table_refs = log.segments.referenced_blocks();
    for (&block, &count) in &counted {
        let stored = table_refs.get(&block).copied().unwrap_or(0);
        if u64::from(stored) != count {
            note(format!(
                "block {block}: the maps hold {count} references, the table {stored}"
            ));
        }
    }
    for (&block, &stored) in &table_refs {
        if !counted.contains_key(&block) {
            note(format!(
                "block {block}: the table holds {stored} references no map has"
            ));
        }
    }
    let mut live_per_segment: BTreeMap<u64, u32> = BTreeMap::new();
    for &block in counted.keys() {
        *live_per_segment.entry(block / per_segment).or_default() += 1;
    }
    for (at, info) in log.segments.info.iter().enumerate() {
        let live = live_per_segment.get(&(at as u64)).copied().unwrap_or(0);
        if info.live_blocks != live {
            note(format!(
                "segment {at}: {live} live blocks, the table says {}",
                info.live_blocks
            ));
        }
        let holds_data = matches!(info.state, SegmentState::Open | SegmentState::Sealed);
        if live > 0 && !holds_data {
            note(format!(
                "segment {at} is {:?} with {live} live blocks",
                log.segments.get(SegmentId(at as u32)).state
            ));
        }
    }
    let live_blocks = counted.len() as u64;
    if log.segments.live_blocks() != live_blocks {
        note(format!(
            "{live_blocks} live blocks, the running total says {}",
            log.segments.live_blocks()
        ));
    }
    SpaceAudit {
        live_blocks,
        mismatches,
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::index::RefCounts;
    use crate::testing::sim_pool;
    use crate::units::PhysBlock;
    use crate::SectorSize;

    #[test]
    fn a_reference_the_maps_do_not_hold_is_reported() {
        let (_, engine) = sim_pool(24 << 20);
        let vol = engine
            .create_volume("v", 1 << 20, SectorSize::B4096)
            .expect("create")
            .id;
        engine
            .write_wait(vol, 3, Bytes::from(vec![7u8; 8192]))
            .expect("write");
        let clean = engine.audit_space();
        assert!(clean.is_clean(), "{:?}", clean.mismatches);
        assert_eq!(clean.live_blocks, 2);

        // A leaked reference: the table holds a block no map points to.
        let free_block = {
            let mut log = engine.core.log.lock();
            let block = PhysBlock(9 * 512 + 5);
            log.segments.refs_for(0).acquire(block);
            block
        };
        let leaked = engine.audit_space();
        assert!(!leaked.is_clean());
        assert!(
            leaked.mismatches[0].contains(&format!("block {}", free_block.0)),
            "{:?}",
            leaked.mismatches
        );
    }
}
