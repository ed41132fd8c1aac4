//! `VolumeMap`: a hash of fixed-size chunks (see [`super::chunk`] for their
//! sparse and dense layouts). Lookups and updates touch one chunk; a mapped
//! 4 KiB block costs 10-13.5 bytes.
//!
//! Chunks are shared two ways. A checkpoint takes a plain copy of a map (Arc
//! clones, O(chunks)) so it can encode a consistent image while writers go on;
//! a writer then copies a chunk on first touch. Snapshots and clones *own* shared
//! chunks: [`VolumeMap::share`] gives a second map the same chunk instances and
//! raises each instance's `owners`. An owned instance is never changed in place;
//! the first writer copies it and takes its own references to every block in it.
//!
//! Physical blocks are reference-counted per chunk instance: an instance holding a
//! location is one reference, however many maps own the instance. Every edit
//! reports the references it takes and drops to a [`RefCounts`], so the segment
//! table knows exactly which blocks are live.
//!
//! INVARIANT: maps are edited only under the engine's log lock, so `owners` never
//! changes between a check and the copy that depends on it.
//! INVARIANT: chunk instances are shared only between maps of one lineage (a
//! volume, its snapshots and their thin clones), and always at the same chunk index.

use std::collections::HashMap;
use std::sync::Arc;

use super::chunk::{Chunk, CHUNK_BLOCKS};
use crate::units::PhysBlock;

/// Where a volume block lives and the crc32c of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Physical block holding the data (the first block of its unit if packed).
    pub location: PhysBlock,
    /// crc32c of the 4 KiB block (uncompressed content).
    pub crc: u32,
    /// Raw, or one block of a compressed unit.
    pub packing: Packing,
}

/// How a volume block is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Packing {
    /// Blocks the compressed unit occupies on disk (0: the block is stored raw).
    pub unit_blocks: u8,
    /// Which block of the unit's uncompressed content this is.
    pub index: u8,
}

impl Packing {
    /// Stored as it is, in one block.
    pub const RAW: Packing = Packing {
        unit_blocks: 0,
        index: 0,
    };
}

/// Locations are below 2^56; the packing lives in the top byte of the word.
const LOCATION_BITS: u32 = 56;

impl Mapping {
    /// A block stored raw at `location`.
    pub fn raw(location: PhysBlock, crc: u32) -> Mapping {
        Mapping {
            location,
            crc,
            packing: Packing::RAW,
        }
    }

    /// Physical blocks the mapping references: one, or its whole unit.
    pub fn stored_blocks(&self) -> u64 {
        u64::from(self.packing.unit_blocks.max(1))
    }

    /// The location word of checkpoints and relocation records: the location in
    /// the low 56 bits, the unit's block count in bits 56-59, the index in 60-63.
    pub fn encode(&self) -> u64 {
        debug_assert!(self.location.0 < 1 << LOCATION_BITS);
        self.location.0
            | u64::from(self.packing.unit_blocks & 0xF) << LOCATION_BITS
            | u64::from(self.packing.index & 0xF) << (LOCATION_BITS + 4)
    }

    /// The inverse of [`Mapping::encode`].
    pub fn decode(word: u64, crc: u32) -> Mapping {
        Mapping {
            location: PhysBlock(word & ((1 << LOCATION_BITS) - 1)),
            crc,
            packing: Packing {
                unit_blocks: ((word >> LOCATION_BITS) & 0xF) as u8,
                index: (word >> (LOCATION_BITS + 4)) as u8,
            },
        }
    }

    /// Every physical block the mapping references.
    pub fn blocks(&self) -> impl Iterator<Item = PhysBlock> {
        let start = self.location.0;
        (0..self.stored_blocks()).map(move |i| PhysBlock(start + i))
    }
}

fn take_refs(refs: &mut impl RefCounts, mapping: &Mapping) {
    for block in mapping.blocks() {
        refs.acquire(block);
    }
}

fn drop_refs(refs: &mut impl RefCounts, mapping: &Mapping) {
    for block in mapping.blocks() {
        refs.release(block);
    }
}

/// Receives the block references a map edit takes and drops.
pub trait RefCounts {
    /// A chunk instance now holds `at`.
    fn acquire(&mut self, at: PhysBlock);
    /// A chunk instance no longer holds `at`.
    fn release(&mut self, at: PhysBlock);
}

/// Ignores reference changes: for maps whose blocks nobody accounts (benchmarks,
/// tools, tests of the map alone).
pub struct Untracked;

impl RefCounts for Untracked {
    fn acquire(&mut self, _: PhysBlock) {}
    fn release(&mut self, _: PhysBlock) {}
}

/// Remembers, during one relocation, which shared chunk instances were already
/// replaced, so every map owning an instance gets the same replacement.
#[derive(Default)]
pub struct RelocationMemo {
    replaced: Vec<(Arc<Chunk>, Arc<Chunk>)>,
}

/// The block map of one volume, snapshot or clone.
#[derive(Clone, Default)]
pub struct VolumeMap {
    chunks: HashMap<u32, Arc<Chunk>>,
    mapped_blocks: u64,
}

fn split(lba: u64) -> (u32, usize) {
    (
        (lba / CHUNK_BLOCKS as u64) as u32,
        (lba % CHUNK_BLOCKS as u64) as usize,
    )
}

impl VolumeMap {
    /// An empty map: every block reads as zeros.
    pub fn new() -> VolumeMap {
        VolumeMap::default()
    }

    /// Blocks currently mapped.
    pub fn mapped_blocks(&self) -> u64 {
        self.mapped_blocks
    }

    /// Bytes of heap this map holds (chunks plus hash table entries), counting
    /// shared chunks in full.
    pub fn memory_bytes(&self) -> u64 {
        let slot = std::mem::size_of::<(u32, Arc<Chunk>)>() + 1;
        // An Arc allocation carries two counters beside the chunk.
        let per_chunk = std::mem::size_of::<Chunk>() + 16;
        let chunks: usize = self
            .chunks
            .values()
            .map(|c| per_chunk + c.heap_bytes())
            .sum();
        (self.chunks.capacity() * slot + chunks) as u64
    }

    /// The mapping of one block, if any.
    pub fn lookup(&self, lba: u64) -> Option<Mapping> {
        let (chunk, offset) = split(lba);
        self.chunks.get(&chunk)?.get(offset)
    }

    /// The chunk at `index`, ready to be changed: a chunk other maps own is copied
    /// first, and the copy takes its own reference to every block in it.
    fn writable_chunk(&mut self, index: u32, refs: &mut impl RefCounts) -> &mut Chunk {
        let entry = self
            .chunks
            .entry(index)
            .or_insert_with(|| Arc::new(Chunk::empty()));
        if entry.owners() > 1 {
            let copy = Chunk::clone(entry);
            entry.remove_owner();
            for (_, mapping) in copy.mapped() {
                take_refs(refs, &mapping);
            }
            *entry = Arc::new(copy);
        }
        Arc::make_mut(entry)
    }

    /// Maps `lba` to `mapping`, returning the location it replaces.
    pub fn insert(
        &mut self,
        lba: u64,
        mapping: Mapping,
        refs: &mut impl RefCounts,
    ) -> Option<PhysBlock> {
        let (index, offset) = split(lba);
        let chunk = self.writable_chunk(index, refs);
        let old = chunk.set(offset, &mapping);
        take_refs(refs, &mapping);
        match old {
            None => {
                self.mapped_blocks += 1;
                None
            }
            Some(old) => {
                drop_refs(refs, &old);
                Some(old.location)
            }
        }
    }

    /// Unmaps `blocks` blocks from `lba`.
    pub fn remove_range(&mut self, lba: u64, blocks: u64, refs: &mut impl RefCounts) {
        let end = lba.saturating_add(blocks);
        let first_chunk = lba / CHUNK_BLOCKS as u64;
        let last_chunk = end.div_ceil(CHUNK_BLOCKS as u64);
        let mut candidates: Vec<u32> = if last_chunk - first_chunk > self.chunks.len() as u64 {
            self.chunks
                .keys()
                .copied()
                .filter(|&c| u64::from(c) >= first_chunk && u64::from(c) < last_chunk)
                .collect()
        } else {
            (first_chunk..last_chunk)
                .map(|c| c as u32)
                .filter(|c| self.chunks.contains_key(c))
                .collect()
        };
        candidates.sort_unstable();
        for index in candidates {
            let chunk_start = u64::from(index) * CHUNK_BLOCKS as u64;
            let from = (lba.max(chunk_start) - chunk_start) as usize;
            let to = (end.min(chunk_start + CHUNK_BLOCKS as u64) - chunk_start) as usize;
            if from == 0 && to == CHUNK_BLOCKS {
                if let Some(chunk) = self.chunks.remove(&index) {
                    self.mapped_blocks -= chunk.len() as u64;
                    disown(&chunk, refs);
                }
                continue;
            }
            let chunk = self.writable_chunk(index, refs);
            let mut removed = 0u64;
            chunk.take_range(from..to, |old| {
                removed += 1;
                drop_refs(refs, &old);
            });
            let empty = chunk.len() == 0;
            self.mapped_blocks -= removed;
            if empty {
                self.chunks.remove(&index);
            }
        }
    }

    /// A new map owning the same chunk instances: a snapshot or thin clone.
    /// Takes no block references (the instances already hold them).
    pub fn share(&self) -> VolumeMap {
        for chunk in self.chunks.values() {
            chunk.add_owner();
        }
        self.clone()
    }

    /// Empties the map, dropping the references of every instance it alone owned.
    pub fn release_all(&mut self, refs: &mut impl RefCounts) {
        for (_, chunk) in self.chunks.drain() {
            disown(&chunk, refs);
        }
        self.mapped_blocks = 0;
    }

    /// If `lba` still maps to `old`, points it at `new` instead (same content,
    /// moved by garbage collection). Every map of the lineage must be offered the
    /// same relocation with the same `memo`. Returns whether this map changed.
    pub fn relocate(
        &mut self,
        lba: u64,
        old: Mapping,
        new: Mapping,
        memo: &mut RelocationMemo,
        refs: &mut impl RefCounts,
    ) -> bool {
        let (index, offset) = split(lba);
        let Some(entry) = self.chunks.get_mut(&index) else {
            return false;
        };
        let current = entry.get(offset);
        if current.map(|m| (m.location, m.packing)) != Some((old.location, old.packing)) {
            return false;
        }
        if let Some((_, replacement)) = memo
            .replaced
            .iter()
            .find(|(original, _)| Arc::ptr_eq(original, entry))
        {
            *entry = replacement.clone();
            return true;
        }
        let mut copy = Chunk::clone(entry);
        copy.set_owners(entry.owners());
        copy.set(offset, &new);
        drop_refs(refs, &old);
        take_refs(refs, &new);
        let replacement = Arc::new(copy);
        memo.replaced.push((entry.clone(), replacement.clone()));
        *entry = replacement;
        true
    }

    /// Calls `visit(lba, mapping)` for every mapped block whose location `wanted`
    /// accepts.
    pub fn scan(&self, wanted: impl Fn(PhysBlock) -> bool, mut visit: impl FnMut(u64, Mapping)) {
        for (&index, chunk) in &self.chunks {
            let base = u64::from(index) * CHUNK_BLOCKS as u64;
            for (offset, mapping) in chunk.mapped() {
                if wanted(mapping.location) {
                    visit(base + u64::from(offset), mapping);
                }
            }
        }
    }

    /// Chunks the map holds (what a checkpoint spends 8 bytes each on).
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// `(exclusive, shared)` block counts: a block is exclusive when this map alone
    /// owns the instance holding it and every reference to its stored block(s)
    /// comes from that instance (`refs_of` gives a block's reference count).
    pub fn exclusive_and_shared(&self, refs_of: impl Fn(PhysBlock) -> u16) -> (u64, u64) {
        let (mut exclusive, mut shared) = (0, 0);
        for chunk in self.chunks.values() {
            let owned_alone = chunk.owners() == 1;
            let mut holders: HashMap<u64, u16> = HashMap::new();
            for (_, mapping) in chunk.mapped() {
                *holders.entry(mapping.location.0).or_default() += 1;
            }
            for (_, mapping) in chunk.mapped() {
                if owned_alone && refs_of(mapping.location) == holders[&mapping.location.0] {
                    exclusive += 1;
                } else {
                    shared += 1;
                }
            }
        }
        (exclusive, shared)
    }

    /// Physical blocks the map's data occupies: one per raw block plus each
    /// compressed unit once (what the compression ratio divides by).
    pub fn stored_blocks(&self) -> u64 {
        let mut units: std::collections::HashSet<u64> = std::collections::HashSet::new();
        let mut raw = 0;
        for chunk in self.chunks.values() {
            for (_, mapping) in chunk.mapped() {
                if mapping.packing == Packing::RAW {
                    raw += 1;
                } else if units.insert(mapping.location.0) {
                    raw += mapping.stored_blocks();
                }
            }
        }
        raw
    }

    /// Runs `(first block, count)`, in block order, of the blocks whose
    /// mapping differs between `self` and `base` (mapped in one only, or to
    /// other data): what must be copied to a replica holding `base` so it
    /// holds `self`. Chunk instances the maps share are skipped unread.
    pub fn differing_runs(&self, base: &VolumeMap) -> Vec<(u64, u64)> {
        let mut indexes: Vec<u32> = self
            .chunks
            .keys()
            .chain(base.chunks.keys())
            .copied()
            .collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for index in indexes {
            let ours = self.chunks.get(&index);
            let theirs = base.chunks.get(&index);
            if let (Some(a), Some(b)) = (ours, theirs) {
                if Arc::ptr_eq(a, b) {
                    continue;
                }
            }
            let slots = |chunk: Option<&Arc<Chunk>>| {
                let mut slots = [None; CHUNK_BLOCKS];
                for (offset, mapping) in chunk.into_iter().flat_map(|c| c.mapped()) {
                    slots[offset as usize] = Some(mapping);
                }
                slots
            };
            let (ours, theirs) = (slots(ours), slots(theirs));
            let first = u64::from(index) * CHUNK_BLOCKS as u64;
            for offset in (0..CHUNK_BLOCKS).filter(|o| ours[*o] != theirs[*o]) {
                let lba = first + offset as u64;
                match runs.last_mut() {
                    Some((start, count)) if *start + *count == lba => *count += 1,
                    _ => runs.push((lba, 1)),
                }
            }
        }
        runs
    }

    /// Every `(chunk index, instance)`, in chunk order: what a checkpoint encodes.
    pub(crate) fn instances(&self) -> Vec<(u32, Arc<Chunk>)> {
        let mut all: Vec<_> = self.chunks.iter().map(|(&i, c)| (i, c.clone())).collect();
        all.sort_unstable_by_key(|(i, _)| *i);
        all
    }

    /// Adds an instance while rebuilding from a checkpoint; the caller counts
    /// owners and references.
    pub(crate) fn attach(&mut self, index: u32, chunk: Arc<Chunk>) {
        self.mapped_blocks += chunk.len() as u64;
        if let Some(previous) = self.chunks.insert(index, chunk) {
            self.mapped_blocks -= previous.len() as u64;
        }
    }
}

/// Sets how many maps own `chunk` (rebuilding from a checkpoint).
pub(crate) fn set_owners(chunk: &Chunk, owners: u32) {
    chunk.set_owners(owners);
}

/// Drops one owner of `chunk`; the last owner drops the instance's references.
fn disown(chunk: &Chunk, refs: &mut impl RefCounts) {
    if chunk.remove_owner() == 1 {
        for (_, mapping) in chunk.mapped() {
            drop_refs(refs, &mapping);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    /// Per-block reference counts, checked against the maps' contents.
    #[derive(Default)]
    struct Counted(HashMap<u64, i64>);

    impl RefCounts for Counted {
        fn acquire(&mut self, at: PhysBlock) {
            *self.0.entry(at.0).or_default() += 1;
        }
        fn release(&mut self, at: PhysBlock) {
            let count = self.0.entry(at.0).or_default();
            *count -= 1;
            assert!(
                *count >= 0,
                "block {} released more often than acquired",
                at.0
            );
            if *count == 0 {
                self.0.remove(&at.0);
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u64, u64),
        Remove(usize, u64, u64),
        Share(usize),
        Drop(usize),
        Relocate(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0usize..4, 0u64..1600, 0u64..1_000_000).prop_map(|(m, l, p)| Op::Insert(m, l, p)),
            2 => (0usize..4, 0u64..1600, 0u64..1200).prop_map(|(m, l, n)| Op::Remove(m, l, n)),
            1 => (0usize..4).prop_map(Op::Share),
            1 => (0usize..4).prop_map(Op::Drop),
            2 => (0u64..1600, 1_000_000u64..2_000_000).prop_map(|(l, p)| Op::Relocate(l, p)),
        ]
    }

    proptest! {
        /// Several maps sharing instances behave like independent BTreeMaps, and the
        /// reference counts always equal the number of distinct instances holding
        /// each block.
        #[test]
        fn shared_maps_behave_like_independent_btreemaps(ops in proptest::collection::vec(op(), 1..120)) {
            let mut refs = Counted::default();
            let mut maps: Vec<VolumeMap> = vec![VolumeMap::new()];
            let mut models: Vec<BTreeMap<u64, u64>> = vec![BTreeMap::new()];
            for op in ops {
                match op {
                    Op::Insert(m, lba, phys) => {
                        let m = m % maps.len();
                        let old = maps[m].insert(lba, Mapping::raw(PhysBlock(phys), phys as u32), &mut refs);
                        prop_assert_eq!(old.map(|p| p.0), models[m].insert(lba, phys));
                    }
                    Op::Remove(m, lba, blocks) => {
                        let m = m % maps.len();
                        maps[m].remove_range(lba, blocks, &mut refs);
                        models[m].retain(|&k, _| k < lba || k >= lba + blocks);
                    }
                    Op::Share(m) => {
                        let m = m % maps.len();
                        maps.push(maps[m].share());
                        models.push(models[m].clone());
                    }
                    Op::Drop(m) => {
                        if maps.len() > 1 {
                            let m = m % maps.len();
                            let mut gone = maps.remove(m);
                            gone.release_all(&mut refs);
                            models.remove(m);
                        }
                    }
                    Op::Relocate(lba, new) => {
                        // Relocate whatever map 0 holds at lba, across every map.
                        if let Some(old) = maps[0].lookup(lba) {
                            let mut memo = RelocationMemo::default();
                            for (map, model) in maps.iter_mut().zip(models.iter_mut()) {
                                let moved = map.relocate(lba, old, Mapping::raw(PhysBlock(new), old.crc), &mut memo, &mut refs);
                                prop_assert_eq!(moved, model.get(&lba) == Some(&old.location.0));
                                if moved {
                                    model.insert(lba, new);
                                }
                            }
                        }
                    }
                }
                for (map, model) in maps.iter().zip(&models) {
                    prop_assert_eq!(map.mapped_blocks(), model.len() as u64);
                }
            }
            for (map, model) in maps.iter().zip(&models) {
                for lba in 0..1600u64 {
                    prop_assert_eq!(map.lookup(lba).map(|m| m.location.0), model.get(&lba).copied());
                }
            }
            // Expected counts: each distinct instance counts once per block it holds.
            let mut expected: HashMap<u64, i64> = HashMap::new();
            let mut seen: Vec<*const Chunk> = Vec::new();
            for map in &maps {
                for (_, chunk) in map.instances() {
                    if seen.contains(&Arc::as_ptr(&chunk)) {
                        continue;
                    }
                    seen.push(Arc::as_ptr(&chunk));
                    for (_, mapping) in chunk.mapped() {
                        *expected.entry(mapping.location.0).or_default() += 1;
                    }
                }
            }
            prop_assert_eq!(&refs.0, &expected);
            for mut map in maps {
                map.release_all(&mut refs);
            }
            prop_assert!(refs.0.is_empty(), "references leaked: {:?}", refs.0.len());
        }
    }

    #[test]
    fn a_checkpoint_copy_is_unaffected_by_later_writes() {
        let mut map = VolumeMap::new();
        map.insert(5, Mapping::raw(PhysBlock(50), 1), &mut Untracked);
        let copy = map.clone();
        map.insert(5, Mapping::raw(PhysBlock(60), 2), &mut Untracked);
        assert_eq!(copy.lookup(5).map(|m| m.location), Some(PhysBlock(50)));
        assert_eq!(map.lookup(5).map(|m| m.location), Some(PhysBlock(60)));
    }

    #[test]
    fn a_shared_map_keeps_its_content_and_the_writer_takes_references_to_the_copy() {
        let mut refs = Counted::default();
        let mut volume = VolumeMap::new();
        for lba in 0..4 {
            volume.insert(lba, Mapping::raw(PhysBlock(100 + lba), 0), &mut refs);
        }
        let snapshot = volume.share();
        volume.insert(1, Mapping::raw(PhysBlock(200), 0), &mut refs);
        assert_eq!(snapshot.lookup(1).map(|m| m.location), Some(PhysBlock(101)));
        assert_eq!(volume.lookup(1).map(|m| m.location), Some(PhysBlock(200)));
        // Blocks 100, 102, 103 are now held by two instances, 101 by the snapshot's only.
        assert_eq!(refs.0[&100], 2);
        assert_eq!(refs.0[&101], 1);
        assert_eq!(refs.0[&200], 1);
    }

    #[test]
    fn dense_maps_cost_under_eleven_bytes_per_block() {
        let mut map = VolumeMap::new();
        for lba in 0..(CHUNK_BLOCKS as u64 * 64) {
            map.insert(lba, Mapping::raw(PhysBlock(lba), 0), &mut Untracked);
        }
        let per_block = map.memory_bytes() as f64 / map.mapped_blocks() as f64;
        // 10 bytes per slot plus each chunk's share of its Arc, hash entry and
        // slot allocation.
        assert!(per_block < 11.0, "{per_block} bytes per block");
    }

    #[test]
    fn random_fills_cost_at_most_sixteen_bytes_per_mapped_block() {
        let blocks = CHUNK_BLOCKS as u64 * 256;
        let mut map = VolumeMap::new();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for i in 0..blocks {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            map.insert(x % blocks, Mapping::raw(PhysBlock(i), 0), &mut Untracked);
        }
        let per_block = map.memory_bytes() as f64 / map.mapped_blocks() as f64;
        assert!(per_block <= 16.0, "{per_block} bytes per mapped block");
    }

    proptest! {
        /// The runs are exactly the blocks whose lookups differ, in order,
        /// whether the maps share chunk instances or not.
        #[test]
        fn differing_runs_are_the_blocks_whose_lookups_differ(
            base_writes in proptest::collection::vec((0u64..600, 0u64..4), 0..40),
            later_writes in proptest::collection::vec((0u64..600, 0u64..4), 0..40),
            trims in proptest::collection::vec((0u64..600, 1u64..50), 0..3),
        ) {
            let mut base = VolumeMap::new();
            for (lba, at) in &base_writes {
                base.insert(*lba, Mapping::raw(PhysBlock(*at), 0), &mut Untracked);
            }
            let mut later = base.share();
            for (lba, at) in &later_writes {
                later.insert(*lba, Mapping::raw(PhysBlock(*at), 0), &mut Untracked);
            }
            for (lba, blocks) in &trims {
                later.remove_range(*lba, *blocks, &mut Untracked);
            }
            let expected: Vec<u64> = (0..700).filter(|l| later.lookup(*l) != base.lookup(*l)).collect();
            let listed: Vec<u64> = later
                .differing_runs(&base)
                .into_iter()
                .flat_map(|(first, count)| first..first + count)
                .collect();
            prop_assert_eq!(&listed, &expected);
            let from_nothing: Vec<u64> = later
                .differing_runs(&VolumeMap::new())
                .into_iter()
                .flat_map(|(first, count)| first..first + count)
                .collect();
            let mapped: Vec<u64> = (0..700).filter(|l| later.lookup(*l).is_some()).collect();
            prop_assert_eq!(from_nothing, mapped);
        }
    }
}
