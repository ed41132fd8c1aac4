//! One chunk instance of a volume map: where each of [`CHUNK_BLOCKS`] consecutive
//! volume blocks lives, and the crc of its content.
//!
//! Two layouts, picked by how full the chunk is, so memory follows mapped blocks
//! rather than address space:
//! - *sparse*: entries sorted by offset, 12 bytes each (offset, 48-bit packed
//!   mapping, crc). Random writes leave most chunks partly mapped (a random fill
//!   of a volume's size maps 63% of it), and there a slot per block would cost
//!   the unmapped ones too.
//! - *dense*: a 10-byte slot per block (48-bit packed mapping, crc) and O(1)
//!   access, once the chunk is so full that entries would cost more.
//!
//! A chunk switches to dense when an insert would make entries dearer than slots,
//! and back to sparse when removals leave it under [`SPARSE_BELOW`] mapped blocks
//! (the gap keeps a chunk near the boundary from converting on every edit).

use std::sync::atomic::{AtomicU32, Ordering};

use super::map::{Mapping, Packing};
use crate::units::PhysBlock;

/// Volume blocks per chunk (512 KiB of volume space). Also the granularity of
/// copy-on-write after a snapshot: the first write to a shared chunk copies its
/// mapping (at most this many entries, never data), so smaller chunks make
/// diverging snapshots cheaper, at a per-chunk overhead of about 100 bytes.
pub const CHUNK_BLOCKS: usize = 128;

/// Physical blocks a map can address: locations are kept in 40 bits in memory,
/// so a pool holds at most 2^40 blocks (4 PiB).
pub const MAX_POOL_BLOCKS: u64 = 1 << LOCATION_BITS;

const LOCATION_BITS: u32 = 40;
const UNIT_SHIFT: u32 = LOCATION_BITS;
const INDEX_SHIFT: u32 = LOCATION_BITS + 4;
/// Set in every packed mapping, so an all-zero dense slot means "unmapped".
const PRESENT: u64 = 1 << 47;

/// Bytes of a sparse entry and of a dense slot.
const ENTRY_BYTES: usize = 12;
const SLOT_BYTES: usize = 10;
/// A sparse chunk with this many entries would cost more than a dense one.
const DENSE_AT: usize = CHUNK_BLOCKS * SLOT_BYTES / ENTRY_BYTES + 1;
/// A dense chunk with fewer mapped blocks than this becomes sparse again.
const SPARSE_BELOW: usize = DENSE_AT * 5 / 6;

/// A mapping in 48 bits: location in bits 0-39, the unit's block count in 40-43,
/// the block's index in its unit in 44-46, and [`PRESENT`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Packed(u64);

impl Packed {
    /// `None` if the mapping does not fit: a location beyond [`MAX_POOL_BLOCKS`],
    /// a unit of more than 8 blocks or an index beyond 7 (the compression format's
    /// limits).
    fn new(mapping: &Mapping) -> Option<Packed> {
        let Packing { unit_blocks, index } = mapping.packing;
        if mapping.location.0 >= MAX_POOL_BLOCKS || unit_blocks > 8 || index > 7 {
            return None;
        }
        Some(Packed(
            mapping.location.0
                | u64::from(unit_blocks) << UNIT_SHIFT
                | u64::from(index) << INDEX_SHIFT
                | PRESENT,
        ))
    }

    /// For mappings the engine made itself: the pool's size is checked against
    /// [`MAX_POOL_BLOCKS`] when it is formatted and opened, and the compressor
    /// makes units of at most 8 blocks.
    fn trusted(mapping: &Mapping) -> Packed {
        let packed = Packed::new(mapping);
        debug_assert!(packed.is_some(), "mapping out of range: {mapping:?}");
        packed.unwrap_or_else(|| {
            // Unreachable by the checks above; reads of the block then fail
            // their crc check (a media error) rather than return other data.
            tracing::error!(?mapping, "mapping beyond the index's range");
            Packed(0)
        })
    }

    fn mapping(self, crc: u32) -> Mapping {
        Mapping {
            location: PhysBlock(self.0 & (MAX_POOL_BLOCKS - 1)),
            crc,
            packing: Packing {
                unit_blocks: ((self.0 >> UNIT_SHIFT) & 0xF) as u8,
                index: ((self.0 >> INDEX_SHIFT) & 0x7) as u8,
            },
        }
    }
}

/// A sparse entry: `[offset | high 16 bits of the packed mapping << 16, low 32
/// bits, crc]`.
#[derive(Clone, Copy)]
struct Entry([u32; 3]);

impl Entry {
    fn new(offset: usize, packed: Packed, crc: u32) -> Entry {
        Entry([
            offset as u32 | ((packed.0 >> 32) as u32) << 16,
            packed.0 as u32,
            crc,
        ])
    }

    fn offset(&self) -> usize {
        (self.0[0] & 0xFFFF) as usize
    }

    fn mapping(&self) -> Mapping {
        Packed(u64::from(self.0[0] >> 16) << 32 | u64::from(self.0[1])).mapping(self.0[2])
    }
}

/// A slot per block; a slot whose `high` is zero is unmapped.
#[derive(Clone)]
struct Dense {
    low: [u32; CHUNK_BLOCKS],
    high: [u16; CHUNK_BLOCKS],
    crcs: [u32; CHUNK_BLOCKS],
    mapped: u16,
}

impl Dense {
    fn get(&self, offset: usize) -> Option<Mapping> {
        match self.high[offset] {
            0 => None,
            high => Some(
                Packed(u64::from(high) << 32 | u64::from(self.low[offset]))
                    .mapping(self.crcs[offset]),
            ),
        }
    }

    fn set(&mut self, offset: usize, packed: Packed, crc: u32) -> Option<Mapping> {
        let old = self.get(offset);
        self.low[offset] = packed.0 as u32;
        self.high[offset] = (packed.0 >> 32) as u16;
        self.crcs[offset] = crc;
        if old.is_none() {
            self.mapped += 1;
        }
        old
    }

    fn take(&mut self, offset: usize) -> Option<Mapping> {
        let old = self.get(offset)?;
        self.high[offset] = 0;
        self.low[offset] = 0;
        self.crcs[offset] = 0;
        self.mapped -= 1;
        Some(old)
    }
}

#[derive(Clone)]
enum Slots {
    /// Sorted by offset, offsets unique.
    Sparse(Vec<Entry>),
    Dense(Box<Dense>),
}

/// One 128-block piece of a map. `owners` counts the maps holding this instance
/// as their own (checkpoint copies do not count).
pub(crate) struct Chunk {
    slots: Slots,
    owners: AtomicU32,
}

impl Clone for Chunk {
    /// A copy has exactly one owner: the map that makes it.
    fn clone(&self) -> Chunk {
        Chunk {
            slots: self.slots.clone(),
            owners: AtomicU32::new(1),
        }
    }
}

impl Chunk {
    /// No block mapped, one owner.
    pub(super) fn empty() -> Chunk {
        Chunk {
            slots: Slots::Sparse(Vec::new()),
            owners: AtomicU32::new(1),
        }
    }

    /// A chunk of one owner from checkpoint entries (offset, location word of
    /// [`Mapping::encode`], crc); `None` if an offset or a mapping is out of range.
    pub(crate) fn from_entries(entries: &[(u16, u64, u32)]) -> Option<Chunk> {
        let mut chunk = Chunk::empty();
        for &(offset, word, crc) in entries {
            let offset = usize::from(offset);
            if offset >= CHUNK_BLOCKS {
                return None;
            }
            let packed = Packed::new(&Mapping::decode(word, crc))?;
            chunk.put(offset, packed, crc);
        }
        Some(chunk)
    }

    pub(super) fn owners(&self) -> u32 {
        self.owners.load(Ordering::Acquire)
    }

    pub(super) fn add_owner(&self) {
        self.owners.fetch_add(1, Ordering::AcqRel);
    }

    /// Drops one owner and returns how many there were before.
    pub(super) fn remove_owner(&self) -> u32 {
        self.owners.fetch_sub(1, Ordering::AcqRel)
    }

    pub(super) fn set_owners(&self, owners: u32) {
        self.owners.store(owners, Ordering::Release);
    }

    /// Mapped blocks.
    pub(crate) fn len(&self) -> usize {
        match &self.slots {
            Slots::Sparse(entries) => entries.len(),
            Slots::Dense(dense) => usize::from(dense.mapped),
        }
    }

    /// The mapping at `offset` (< [`CHUNK_BLOCKS`]), if any.
    pub(super) fn get(&self, offset: usize) -> Option<Mapping> {
        match &self.slots {
            Slots::Sparse(entries) => entries
                .binary_search_by_key(&offset, Entry::offset)
                .ok()
                .map(|i| entries[i].mapping()),
            Slots::Dense(dense) => dense.get(offset),
        }
    }

    /// Maps `offset` to `mapping`; returns the mapping it replaces.
    pub(super) fn set(&mut self, offset: usize, mapping: &Mapping) -> Option<Mapping> {
        self.put(offset, Packed::trusted(mapping), mapping.crc)
    }

    fn put(&mut self, offset: usize, packed: Packed, crc: u32) -> Option<Mapping> {
        let entries = match &mut self.slots {
            Slots::Dense(dense) => return dense.set(offset, packed, crc),
            Slots::Sparse(entries) => entries,
        };
        match entries.binary_search_by_key(&offset, Entry::offset) {
            Ok(i) => {
                let old = entries[i].mapping();
                entries[i] = Entry::new(offset, packed, crc);
                Some(old)
            }
            Err(_) if entries.len() + 1 >= DENSE_AT => {
                self.make_dense();
                self.put(offset, packed, crc)
            }
            Err(i) => {
                if entries.len() == entries.capacity() {
                    // Grow by an eighth rather than doubling: capacity left
                    // unused is memory every partly mapped chunk would carry.
                    entries.reserve_exact((entries.len() / 8).max(4));
                }
                entries.insert(i, Entry::new(offset, packed, crc));
                None
            }
        }
    }

    /// Unmaps `offsets`, calling `removed` with each mapping taken out.
    pub(super) fn take_range(
        &mut self,
        offsets: std::ops::Range<usize>,
        mut removed: impl FnMut(Mapping),
    ) {
        match &mut self.slots {
            Slots::Sparse(entries) => {
                let from = entries.partition_point(|e| e.offset() < offsets.start);
                let to = entries.partition_point(|e| e.offset() < offsets.end);
                for entry in entries.drain(from..to) {
                    removed(entry.mapping());
                }
            }
            Slots::Dense(dense) => {
                for offset in offsets {
                    if let Some(old) = dense.take(offset) {
                        removed(old);
                    }
                }
                if usize::from(dense.mapped) < SPARSE_BELOW {
                    self.make_sparse();
                }
            }
        }
    }

    /// Every mapped block as `(offset, mapping)`, in offset order.
    pub(crate) fn mapped(&self) -> impl Iterator<Item = (u16, Mapping)> + '_ {
        let (sparse, dense) = match &self.slots {
            Slots::Sparse(entries) => (Some(entries.iter()), None),
            Slots::Dense(dense) => (None, Some(dense)),
        };
        let from_sparse = sparse
            .into_iter()
            .flatten()
            .map(|e| (e.offset() as u16, e.mapping()));
        let from_dense = dense.into_iter().flat_map(|dense| {
            (0..CHUNK_BLOCKS)
                .filter_map(move |offset| dense.get(offset).map(|m| (offset as u16, m)))
        });
        from_sparse.chain(from_dense)
    }

    /// Heap bytes the chunk's slots hold (beyond the `Chunk` itself).
    pub(super) fn heap_bytes(&self) -> usize {
        match &self.slots {
            Slots::Sparse(entries) => entries.capacity() * std::mem::size_of::<Entry>(),
            Slots::Dense(_) => std::mem::size_of::<Dense>(),
        }
    }

    fn make_dense(&mut self) {
        let mut dense = Box::new(Dense {
            low: [0; CHUNK_BLOCKS],
            high: [0; CHUNK_BLOCKS],
            crcs: [0; CHUNK_BLOCKS],
            mapped: 0,
        });
        if let Slots::Sparse(entries) = &self.slots {
            for entry in entries {
                let mapping = entry.mapping();
                dense.set(entry.offset(), Packed::trusted(&mapping), mapping.crc);
            }
        }
        self.slots = Slots::Dense(dense);
    }

    fn make_sparse(&mut self) {
        let entries = self
            .mapped()
            .map(|(offset, m)| Entry::new(usize::from(offset), Packed::trusted(&m), m.crc))
            .collect();
        self.slots = Slots::Sparse(entries);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn mapping(location: u64, unit_blocks: u8, index: u8, crc: u32) -> Mapping {
        Mapping {
            location: PhysBlock(location),
            crc,
            packing: Packing { unit_blocks, index },
        }
    }

    proptest! {
        /// Whatever the layout, a chunk behaves like a map from offset to mapping,
        /// including across conversions both ways.
        #[test]
        fn a_chunk_behaves_like_a_btreemap(
            ops in proptest::collection::vec(
                (0usize..CHUNK_BLOCKS, 0u64..MAX_POOL_BLOCKS, 0u8..9, 0u8..8, any::<u32>(), 0usize..400),
                1..3000,
            )
        ) {
            let mut chunk = Chunk::empty();
            let mut model = BTreeMap::new();
            for (offset, location, unit, index, crc, remove) in ops {
                if remove == 0 {
                    let end = (offset + 200).min(CHUNK_BLOCKS);
                    let mut taken = Vec::new();
                    chunk.take_range(offset..end, |m| taken.push(m));
                    let expected: Vec<Mapping> = model.range(offset..end).map(|(_, m)| *m).collect();
                    prop_assert_eq!(taken, expected);
                    model.retain(|&o, _| o < offset || o >= end);
                } else {
                    let m = mapping(location, unit, index, crc);
                    prop_assert_eq!(chunk.set(offset, &m), model.insert(offset, m));
                }
                prop_assert_eq!(chunk.len(), model.len());
            }
            let listed: Vec<(usize, Mapping)> = chunk.mapped().map(|(o, m)| (usize::from(o), m)).collect();
            let expected: Vec<(usize, Mapping)> = model.iter().map(|(&o, &m)| (o, m)).collect();
            prop_assert_eq!(listed, expected);
            for offset in 0..CHUNK_BLOCKS {
                prop_assert_eq!(chunk.get(offset), model.get(&offset).copied());
            }
        }
    }

    #[test]
    fn a_full_chunk_is_dense_and_an_emptied_one_sparse_again() {
        let mut chunk = Chunk::empty();
        for offset in 0..CHUNK_BLOCKS {
            chunk.set(offset, &mapping(offset as u64, 0, 0, 7));
        }
        assert!(matches!(chunk.slots, Slots::Dense(_)));
        assert!(chunk.heap_bytes() < CHUNK_BLOCKS * ENTRY_BYTES);
        chunk.take_range(0..CHUNK_BLOCKS - 10, |_| {});
        assert!(matches!(chunk.slots, Slots::Sparse(_)));
        assert_eq!(chunk.len(), 10);
        assert_eq!(
            chunk.get(CHUNK_BLOCKS - 1),
            Some(mapping(CHUNK_BLOCKS as u64 - 1, 0, 0, 7))
        );
    }

    #[test]
    fn checkpoint_entries_out_of_range_are_refused() {
        let ok = mapping(MAX_POOL_BLOCKS - 1, 8, 7, 1);
        assert!(Chunk::from_entries(&[(3, ok.encode(), 1)]).is_some());
        assert!(Chunk::from_entries(&[(512, ok.encode(), 1)]).is_none());
        let far = mapping(MAX_POOL_BLOCKS, 0, 0, 1);
        assert!(Chunk::from_entries(&[(3, far.encode(), 1)]).is_none());
        let big_unit = mapping(5, 9, 0, 1);
        assert!(Chunk::from_entries(&[(3, big_unit.encode(), 1)]).is_none());
    }
}
