//! Finding a victim's live blocks, and for each what its relocation must name:
//! the lineage whose maps to update and the `(lba, index, crc)` of every volume
//! block stored in it.
//!
//! Which blocks are live the segment table's reference counts say; what each
//! one holds the victim's own batch headers say, and the round reads them with
//! the victim's data anyway. So a round costs O(victim size), not O(mapped
//! blocks). Where the headers cannot account for every live block (a damaged
//! header, or a write of a deleted clone whose lineage lives on in its
//! snapshots), the round walks every map instead, which always can.
//!
//! Why the headers are enough: a data block is written once per life of its
//! segment, by the one entry that names it; maps that share it (snapshots and
//! clones of one lineage) share it at the same lba; and a relocation only
//! replaces a mapping equal to the one it names, so a member that has since
//! been overwritten is passed over, never clobbered.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;

use crate::core::Core;
use crate::format::{BatchHeader, Entry};
use crate::index::{Chunk, Packing, VolumeMap};
use crate::log::segments::BatchPlace;
use crate::log::{Origin, Record};
use crate::units::{PhysBlock, SegmentId, VolumeId, BLOCK_SIZE};
use crate::volume::VolumeState;

use super::victim_read::VictimImage;

/// A raw block or a compressed unit some map references: where it is, which
/// lineage's maps to update, and the `(lba, index, crc)` of every volume
/// block found in it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct LiveBlock {
    pub lineage: u64,
    pub location: PhysBlock,
    pub packing: Packing,
    pub members: Vec<(u64, u8, u32)>,
}

impl LiveBlock {
    /// Blocks it takes on the device.
    pub fn stored_blocks(&self) -> usize {
        usize::from(self.packing.unit_blocks.max(1))
    }

    /// The collector's copy of it, holding `content`.
    pub fn record(&self, content: Bytes) -> Record {
        let entry = match self.members.as_slice() {
            [(lba, _, crc), ..] if self.packing == Packing::RAW => Entry::Relocate {
                lineage: self.lineage,
                lba: *lba,
                old: self.location.0,
                data_offset: 0,
                crc: *crc,
            },
            _ => Entry::RelocateUnit {
                lineage: self.lineage,
                old: self.location.0,
                data_offset: 0,
                stored_crcs: content.chunks(BLOCK_SIZE).map(crc32c::crc32c).collect(),
                members: self.members.clone(),
            },
        };
        Record::Data {
            entry,
            data: content,
            origin: Origin::Collector,
        }
    }
}

/// The live blocks of `segment` by its batch headers: `image` holds at least
/// every header and live block (the batches at `places` when known, else
/// found one after another from block 0 of a prefix read whole), and `live`
/// says which of its blocks some map references. None when the headers do
/// not account for every live block.
pub(super) fn from_headers(
    core: &Core,
    segment: SegmentId,
    image: &VictimImage,
    places: Option<&[BatchPlace]>,
    live: &[bool],
) -> Option<Vec<LiveBlock>> {
    let is_live = |block: u32| live.get(block as usize).copied().unwrap_or(false);
    let mut covered = vec![false; live.len()];
    let mut found = Vec::new();
    let mut lineages = LineageOf::new(core);
    for (header, data_start) in current_batches(core, segment, image, places) {
        for entry in &header.entries {
            for (offset, stored, lineage, members) in stored_units(entry, &mut lineages) {
                let block = data_start + offset;
                if !is_live(block) {
                    continue;
                }
                let lineage = lineage?;
                for at in block..block + u32::from(stored.max(1)) {
                    *covered.get_mut(at as usize)? = true;
                }
                found.push(LiveBlock {
                    lineage,
                    location: core.pool.phys(segment, block),
                    packing: Packing {
                        unit_blocks: stored,
                        index: 0,
                    },
                    members,
                });
            }
        }
    }
    let every_live_block_covered = live.iter().zip(&covered).all(|(l, c)| !l || *c);
    every_live_block_covered.then_some(found)
}

/// The batches of `segment`'s current life in `image`, each with the block
/// its data starts at: those at `places`, or else from block 0 one after
/// another; either way only while they are this pool's, this segment's and
/// their seqs rise (an older life's leftovers past the last one have lower
/// seqs).
fn current_batches<'a>(
    core: &'a Core,
    segment: SegmentId,
    image: &'a VictimImage,
    places: Option<&'a [BatchPlace]>,
) -> impl Iterator<Item = (BatchHeader, u32)> + 'a {
    let pool = &core.pool;
    let mut known = places.map(|p| p.iter().map(|place| place.block));
    let mut chained = Some(0u32);
    let mut last_seq = None;
    std::iter::from_fn(move || {
        let block = match known.as_mut() {
            Some(known) => known.next()?,
            None => chained?,
        };
        let header = BatchHeader::decode(image.tail_from(block)?).ok()?;
        let ours = header.pool_uuid == pool.uuid && header.segment == segment.0;
        if !ours || last_seq.is_some_and(|seq| seq >= header.seq) {
            return None;
        }
        last_seq = Some(header.seq);
        chained = Some(block + header.total_blocks());
        let data_start = block + u32::from(header.header_blocks);
        Some((header, data_start))
    })
}

/// Each stored unit an entry wrote: its block offset in the batch's data
/// area, its stored blocks (0 for a raw block), its lineage (None when it
/// cannot be told) and its members.
type StoredUnit = (u32, u8, Option<u64>, Vec<(u64, u8, u32)>);

fn stored_units(entry: &Entry, lineages: &mut LineageOf<'_>) -> Vec<StoredUnit> {
    match entry {
        Entry::Write {
            volume,
            lba,
            data_offset,
            crcs,
        } => {
            let lineage = lineages.of(*volume);
            crcs.iter()
                .enumerate()
                .map(|(i, &crc)| {
                    let lba = lba + i as u64;
                    (data_offset + i as u32, 0, lineage, vec![(lba, 0, crc)])
                })
                .collect()
        }
        Entry::Relocate {
            lineage,
            lba,
            data_offset,
            crc,
            ..
        } => vec![(*data_offset, 0, Some(*lineage), vec![(*lba, 0, *crc)])],
        Entry::WritePacked {
            volume,
            data_offset,
            ..
        } => {
            let lineage = lineages.of(*volume);
            let mut out = Vec::new();
            for unit in entry.packed_units() {
                let at = data_offset + unit.stored_at;
                let members = (0..)
                    .zip(unit.crcs)
                    .map(|(index, &crc)| (unit.lba + u64::from(index), index, crc));
                if unit.stored < unit.logical {
                    out.push((at, unit.stored, lineage, members.collect()));
                } else {
                    for (lba, index, crc) in members {
                        out.push((at + u32::from(index), 0, lineage, vec![(lba, 0, crc)]));
                    }
                }
            }
            out
        }
        Entry::RelocateUnit {
            lineage,
            data_offset,
            stored_crcs,
            members,
            ..
        } => vec![(
            *data_offset,
            stored_crcs.len() as u8,
            Some(*lineage),
            members.clone(),
        )],
        _ => Vec::new(),
    }
}

/// The lineage of the volume a write entry names, looked up once per volume.
struct LineageOf<'a> {
    core: &'a Core,
    known: HashMap<u64, Option<u64>>,
}

impl<'a> LineageOf<'a> {
    fn new(core: &'a Core) -> LineageOf<'a> {
        LineageOf {
            core,
            known: HashMap::new(),
        }
    }

    /// A volume still there says its lineage. A deleted one's blocks can only
    /// be live in maps of its lineage: a volume that started its own (its id)
    /// is found by that id; a deleted clone's is not known.
    fn of(&mut self, volume: u64) -> Option<u64> {
        let core = self.core;
        *self.known.entry(volume).or_insert_with(|| {
            let catalog = core.catalog.read();
            match catalog.get(VolumeId(volume)) {
                Some(found) => Some(found.lineage),
                None => (!catalog.lineage(volume).is_empty()).then_some(volume),
            }
        })
    }
}

/// Every block some map references inside `victims`, once per location, by
/// segment: a walk of every map (each shared chunk instance once), O(mapped
/// blocks).
pub(super) fn by_walking_maps(
    core: &Core,
    victims: &[SegmentId],
) -> HashMap<SegmentId, Vec<LiveBlock>> {
    let per_segment = u64::from(core.pool.blocks_per_segment);
    // Asked of every mapped block of every map: an index, not a hash lookup.
    let mut wanted = vec![false; core.pool.segment_count() as usize];
    for victim in victims {
        if let Some(slot) = wanted.get_mut(victim.0 as usize) {
            *slot = true;
        }
    }
    let maps = core.catalog.read().all();
    // Copies, so writers are not held up while the walk runs; they also keep every
    // instance alive, so instance addresses stay unique until the walk ends.
    let copies: Vec<(u64, VolumeMap)> = maps
        .iter()
        .filter(|v| v.state() != VolumeState::Creating)
        .map(|v| (v.lineage, v.map.read().clone()))
        .collect();
    let mut seen: HashSet<*const Chunk> = HashSet::new();
    let mut found: HashMap<u64, LiveBlock> = HashMap::new();
    for (lineage, map) in &copies {
        for (index, chunk) in map.instances() {
            if !seen.insert(Arc::as_ptr(&chunk)) {
                continue;
            }
            let base = u64::from(index) * crate::index::CHUNK_BLOCKS as u64;
            for (offset, mapping) in chunk.mapped() {
                let segment = (mapping.location.0 / per_segment) as usize;
                if wanted.get(segment).copied().unwrap_or(false) {
                    let member = (base + u64::from(offset), mapping.packing.index, mapping.crc);
                    let live = found.entry(mapping.location.0).or_insert(LiveBlock {
                        lineage: *lineage,
                        location: mapping.location,
                        packing: Packing {
                            unit_blocks: mapping.packing.unit_blocks,
                            index: 0,
                        },
                        members: Vec::new(),
                    });
                    if !live.members.contains(&member) {
                        live.members.push(member);
                    }
                }
            }
        }
    }
    let mut by_segment: HashMap<SegmentId, Vec<LiveBlock>> = HashMap::new();
    for live in found.into_values() {
        let segment = core.pool.split(live.location).0;
        by_segment.entry(segment).or_default().push(live);
    }
    by_segment
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::format::HEAD_COLLECTOR;
    use crate::gc::victim_read::{plan_pieces, read_pieces, read_whole};
    use crate::log::segments::SegmentState;
    use crate::testing::sim_pool;
    use crate::{Engine, SectorSize, VolumeOptions};

    fn small_pool() -> Engine {
        sim_pool(64 << 20).1
    }

    /// A block of `seed` bytes that compresses well when `compressible`.
    fn block(seed: u8, compressible: bool) -> Bytes {
        if compressible {
            Bytes::from(vec![seed; BLOCK_SIZE])
        } else {
            Bytes::from(
                (0..BLOCK_SIZE)
                    .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3] ^ seed)
                    .collect::<Vec<u8>>(),
            )
        }
    }

    /// What a sealed segment's headers say and what a walk of every map says.
    fn both_ways(engine: &Engine, segment: SegmentId) -> (Option<Vec<LiveBlock>>, Vec<LiveBlock>) {
        let core = &engine.core;
        let live = core.log.lock().segments.live_in(segment);
        let last = live.iter().rposition(|&l| l).expect("a live block");
        let (device, offset) = core.pool.locate(segment, 0);
        let whole = read_whole(device, offset, last as u32 + 1).expect("read");
        let headers = from_headers(core, segment, &whole, None, &live);
        // Read as a round reads it, only headers and live blocks, the
        // headers say the same.
        let places = core.log.lock().segments.batch_places(segment);
        let places = places.expect("every batch was placed by this process");
        let partial = read_pieces(device, offset, &plan_pieces(&live, &places)).expect("read");
        let by_places = from_headers(core, segment, &partial, Some(&places), &live);
        assert_eq!(by_places, headers, "segment {segment:?}");
        let walked = by_walking_maps(core, &[segment])
            .remove(&segment)
            .unwrap_or_default();
        (headers, walked)
    }

    /// Segments holding live blocks (the open ones too: at rest, their
    /// headers are as complete as a sealed segment's).
    fn with_live_blocks(engine: &Engine) -> Vec<SegmentId> {
        let log = engine.core.log.lock();
        (0..log.segments.info.len() as u32)
            .map(SegmentId)
            .filter(|s| {
                let info = log.segments.get(*s);
                matches!(info.state, SegmentState::Sealed | SegmentState::Open)
                    && info.live_blocks > 0
            })
            .collect()
    }

    #[test]
    fn the_headers_find_what_a_walk_of_every_map_finds() {
        let engine = small_pool();
        let plain = engine
            .create_volume("plain", 8 << 20, SectorSize::B4096)
            .expect("create")
            .id;
        let packed = engine
            .create_volume_with_options(
                "packed",
                8 << 20,
                SectorSize::B4096,
                VolumeOptions { compression: true },
            )
            .expect("create")
            .id;
        for lba in 0..1024u64 {
            engine
                .write_wait(plain, lba, block(1, false))
                .expect("fill");
        }
        // Runs of compressible blocks, so units of several blocks form.
        for first in (0..1024u64).step_by(8) {
            let run: Vec<u8> = (0..8).flat_map(|_| vec![first as u8; BLOCK_SIZE]).collect();
            engine
                .write_wait(packed, first, Bytes::from(run))
                .expect("fill packed");
        }
        // Half of the first fills die: their segments are worth cleaning.
        for lba in (0..1024u64).step_by(2) {
            engine
                .write_wait(plain, lba, block(6, false))
                .expect("overwrite");
        }
        for first in (0..1024u64).step_by(16) {
            let run: Vec<u8> = (0..8).flat_map(|_| vec![7; BLOCK_SIZE]).collect();
            engine
                .write_wait(packed, first, Bytes::from(run))
                .expect("overwrite packed");
        }
        let snapshot = engine.create_snapshot(plain, "snap").expect("snap").id;
        let clone = engine
            .create_clone(snapshot, "clone", None, None)
            .expect("clone")
            .id;
        for lba in (0..1024u64).step_by(3) {
            engine
                .write_wait(plain, lba, block(2, false))
                .expect("overwrite");
            engine
                .write_wait(clone, lba + 1, block(3, false))
                .expect("clone write");
        }
        for first in (0..1024u64).step_by(32) {
            engine
                .write_wait(packed, first, block(4, true))
                .expect("overwrite packed");
        }
        // Relocate and RelocateUnit entries join the headers.
        assert!(engine.collect_garbage().expect("collect"));
        for lba in (0..1024u64).step_by(5) {
            engine
                .write_wait(plain, lba, block(5, false))
                .expect("overwrite");
        }

        let segments = with_live_blocks(&engine);
        assert!(segments.len() > 4, "{segments:?}");
        let (mut units, mut relocated) = (0, 0);
        for segment in segments {
            let (headers, walked) = both_ways(&engine, segment);
            let mut headers = headers.expect("the headers account for every live block");
            let mut walked = walked;
            headers.sort_by_key(|b| b.location);
            walked.sort_by_key(|b| b.location);
            assert_eq!(headers.len(), walked.len(), "segment {segment:?}");
            for (found, truth) in headers.iter().zip(&walked) {
                assert_eq!(
                    (found.location, found.lineage, found.packing),
                    (truth.location, truth.lineage, truth.packing)
                );
                // The headers may name members since overwritten (their
                // relocation passes them over), never miss one.
                for member in &truth.members {
                    assert!(found.members.contains(member), "{found:?} {truth:?}");
                }
                units += usize::from(found.packing.unit_blocks > 0);
            }
            let log = engine.core.log.lock();
            relocated +=
                usize::from(log.open[usize::from(HEAD_COLLECTOR)].map(|(s, _)| s) == Some(segment));
        }
        assert!(units > 0, "no compressed unit was compared");
        assert!(
            relocated > 0,
            "no segment of the collector's copies was compared"
        );
    }

    #[test]
    fn a_deleted_clones_blocks_that_its_snapshot_keeps_are_found_by_walking_every_map() {
        let engine = small_pool();
        let base = engine
            .create_volume("base", 8 << 20, SectorSize::B4096)
            .expect("create")
            .id;
        engine.write_wait(base, 0, block(1, false)).expect("write");
        let snapshot = engine.create_snapshot(base, "snap").expect("snap").id;
        let clone = engine
            .create_clone(snapshot, "clone", None, None)
            .expect("clone")
            .id;
        // Half of what the clone writes is overwritten: its segments are worth cleaning.
        for seed in [2u8, 3] {
            for lba in 0..600u64 {
                engine
                    .write_wait(clone, lba, block(seed, false))
                    .expect("clone write");
            }
        }
        let kept = engine
            .create_snapshot(clone, "clone-snap")
            .expect("snap")
            .id;
        engine.delete_volume(clone).expect("delete");
        let unresolved = with_live_blocks(&engine)
            .into_iter()
            .filter(|s| both_ways(&engine, *s).0.is_none())
            .count();
        assert!(unresolved > 0, "the deleted clone's writes were resolved");

        while engine.collect_garbage().expect("collect") {}
        assert!(engine.pool_stats().gc_map_walks > 0);
        assert!(engine.pool_stats().gc_relocated_bytes > 0);
        for lba in 0..600u64 {
            assert_eq!(
                engine.read_wait(kept, lba, 1).expect("read"),
                block(3, false),
                "block {lba}"
            );
        }
        let audit = engine.audit_space();
        assert!(audit.is_clean(), "{:?}", audit.mismatches);
    }
}
