//! `VolumeMap`: a hash of fixed-size chunks, each a dense array of locations and
//! checksums. Lookups and updates are O(1); a fully mapped chunk costs 12 bytes per
//! 4 KiB block. Chunks are reference-counted so a checkpoint can take a consistent
//! copy of the whole map in O(chunks) and later writers copy a chunk on first touch.

use std::collections::HashMap;
use std::sync::Arc;

use crate::format::ChunkImage;
use crate::units::PhysBlock;

/// Volume blocks per chunk (2 MiB of volume space).
pub const CHUNK_BLOCKS: usize = 512;

/// Where a volume block lives and the crc32c of its content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    /// Physical block holding the data.
    pub location: PhysBlock,
    /// crc32c of the 4 KiB block.
    pub crc: u32,
}

// INVARIANT: `locations[i] == 0` means unmapped; otherwise it is the physical block
// plus one. `mapped` counts the non-zero entries.
#[derive(Clone)]
struct Chunk {
    locations: [u64; CHUNK_BLOCKS],
    crcs: [u32; CHUNK_BLOCKS],
    mapped: u16,
}

impl Chunk {
    fn empty() -> Chunk {
        Chunk {
            locations: [0; CHUNK_BLOCKS],
            crcs: [0; CHUNK_BLOCKS],
            mapped: 0,
        }
    }
}

/// The block map of one volume.
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

    /// Bytes of heap this map holds (chunks plus hash table entries).
    pub fn memory_bytes(&self) -> u64 {
        let per_chunk =
            std::mem::size_of::<Chunk>() + 16 + std::mem::size_of::<(u32, Arc<Chunk>)>() + 1;
        (self.chunks.capacity() * (std::mem::size_of::<(u32, Arc<Chunk>)>() + 1)
            + self.chunks.len() * (per_chunk - std::mem::size_of::<(u32, Arc<Chunk>)>() - 1))
            as u64
    }

    /// The mapping of one block, if any.
    pub fn lookup(&self, lba: u64) -> Option<Mapping> {
        let (chunk, offset) = split(lba);
        let chunk = self.chunks.get(&chunk)?;
        match chunk.locations[offset] {
            0 => None,
            encoded => Some(Mapping {
                location: PhysBlock(encoded - 1),
                crc: chunk.crcs[offset],
            }),
        }
    }

    /// Maps `lba` to `mapping`, returning the location it replaces.
    pub fn insert(&mut self, lba: u64, mapping: Mapping) -> Option<PhysBlock> {
        let (index, offset) = split(lba);
        let chunk = Arc::make_mut(
            self.chunks
                .entry(index)
                .or_insert_with(|| Arc::new(Chunk::empty())),
        );
        let old = chunk.locations[offset];
        chunk.locations[offset] = mapping.location.0 + 1;
        chunk.crcs[offset] = mapping.crc;
        if old == 0 {
            chunk.mapped += 1;
            self.mapped_blocks += 1;
            None
        } else {
            Some(PhysBlock(old - 1))
        }
    }

    /// Unmaps `blocks` blocks from `lba`, calling `released` with every location
    /// that was mapped.
    pub fn remove_range(&mut self, lba: u64, blocks: u64, mut released: impl FnMut(PhysBlock)) {
        let end = lba.saturating_add(blocks);
        let first_chunk = lba / CHUNK_BLOCKS as u64;
        let last_chunk = end.div_ceil(CHUNK_BLOCKS as u64);
        let candidates: Vec<u32> = if last_chunk - first_chunk > self.chunks.len() as u64 {
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
        for index in candidates {
            let chunk_start = u64::from(index) * CHUNK_BLOCKS as u64;
            let from = lba.max(chunk_start) - chunk_start;
            let to = end.min(chunk_start + CHUNK_BLOCKS as u64) - chunk_start;
            let Some(entry) = self.chunks.get_mut(&index) else {
                continue;
            };
            let chunk = Arc::make_mut(entry);
            for offset in from as usize..to as usize {
                let old = std::mem::take(&mut chunk.locations[offset]);
                if old != 0 {
                    chunk.crcs[offset] = 0;
                    chunk.mapped -= 1;
                    self.mapped_blocks -= 1;
                    released(PhysBlock(old - 1));
                }
            }
            if chunk.mapped == 0 {
                self.chunks.remove(&index);
            }
        }
    }

    /// Calls `visit` with every mapped location.
    pub fn for_each_location(&self, mut visit: impl FnMut(PhysBlock)) {
        for chunk in self.chunks.values() {
            for &encoded in chunk.locations.iter().filter(|&&e| e != 0) {
                visit(PhysBlock(encoded - 1));
            }
        }
    }

    /// The map as checkpoint chunk images, in chunk order.
    pub fn images(&self) -> Vec<ChunkImage> {
        let mut indexes: Vec<u32> = self.chunks.keys().copied().collect();
        indexes.sort_unstable();
        indexes
            .into_iter()
            .map(|index| {
                let chunk = &self.chunks[&index];
                let blocks = (0..CHUNK_BLOCKS)
                    .filter(|&o| chunk.locations[o] != 0)
                    .map(|o| (o as u16, chunk.locations[o] - 1, chunk.crcs[o]))
                    .collect();
                ChunkImage { index, blocks }
            })
            .collect()
    }

    /// Rebuilds a map from checkpoint images; rejects offsets outside a chunk.
    pub fn from_images(images: &[ChunkImage]) -> Result<VolumeMap, u16> {
        let mut map = VolumeMap::new();
        for image in images {
            for &(offset, location, crc) in &image.blocks {
                if offset as usize >= CHUNK_BLOCKS {
                    return Err(offset);
                }
                let lba = u64::from(image.index) * CHUNK_BLOCKS as u64 + u64::from(offset);
                map.insert(
                    lba,
                    Mapping {
                        location: PhysBlock(location),
                        crc,
                    },
                );
            }
        }
        Ok(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u64, u64),
        Remove(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..3000, 0u64..1_000_000).prop_map(|(l, p)| Op::Insert(l, p)),
            (0u64..3000, 0u64..1200).prop_map(|(l, n)| Op::Remove(l, n)),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 1..200)) {
            let mut map = VolumeMap::new();
            let mut model: BTreeMap<u64, u64> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(lba, phys) => {
                        let old = map.insert(lba, Mapping { location: PhysBlock(phys), crc: phys as u32 });
                        prop_assert_eq!(old.map(|p| p.0), model.insert(lba, phys));
                    }
                    Op::Remove(lba, blocks) => {
                        let mut released = Vec::new();
                        map.remove_range(lba, blocks, |p| released.push(p.0));
                        let mut expected: Vec<u64> = model.range(lba..lba + blocks).map(|(_, &p)| p).collect();
                        model.retain(|&k, _| k < lba || k >= lba + blocks);
                        released.sort_unstable();
                        expected.sort_unstable();
                        prop_assert_eq!(released, expected);
                    }
                }
                prop_assert_eq!(map.mapped_blocks(), model.len() as u64);
            }
            for lba in 0..3000u64 {
                prop_assert_eq!(map.lookup(lba).map(|m| m.location.0), model.get(&lba).copied());
            }
            let rebuilt = VolumeMap::from_images(&map.images()).expect("valid images");
            for lba in 0..3000u64 {
                prop_assert_eq!(rebuilt.lookup(lba), map.lookup(lba));
            }
        }
    }

    #[test]
    fn a_copy_is_unaffected_by_later_writes() {
        let mut map = VolumeMap::new();
        map.insert(
            5,
            Mapping {
                location: PhysBlock(50),
                crc: 1,
            },
        );
        let copy = map.clone();
        map.insert(
            5,
            Mapping {
                location: PhysBlock(60),
                crc: 2,
            },
        );
        assert_eq!(copy.lookup(5).map(|m| m.location), Some(PhysBlock(50)));
        assert_eq!(map.lookup(5).map(|m| m.location), Some(PhysBlock(60)));
    }

    #[test]
    fn dense_maps_cost_about_twelve_bytes_per_block() {
        let mut map = VolumeMap::new();
        for lba in 0..(CHUNK_BLOCKS as u64 * 64) {
            map.insert(
                lba,
                Mapping {
                    location: PhysBlock(lba),
                    crc: 0,
                },
            );
        }
        let per_block = map.memory_bytes() as f64 / map.mapped_blocks() as f64;
        assert!(per_block < 13.0, "{per_block} bytes per block");
    }
}
