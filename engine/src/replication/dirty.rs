//! A sparse set of volume blocks: what a replica missed, or what was written
//! while it was being resynced.
//!
//! One bit per block, kept in 4 KiB pages of 32768 blocks allocated on first
//! use, so a volume written in a few places costs a few pages however large it
//! is.

use std::collections::BTreeMap;

use super::wire::Extent;

/// Blocks covered by one page of the set.
const PAGE_BLOCKS: u64 = 32768;
const PAGE_WORDS: usize = (PAGE_BLOCKS / 64) as usize;

/// A set of blocks.
#[derive(Default, Clone, Debug)]
pub struct BlockSet {
    pages: BTreeMap<u64, Box<[u64; PAGE_WORDS]>>,
    count: u64,
}

impl BlockSet {
    /// An empty set.
    pub fn new() -> BlockSet {
        BlockSet::default()
    }

    /// A set holding blocks `0..blocks`.
    pub fn full(blocks: u64) -> BlockSet {
        let mut set = BlockSet::new();
        set.insert_range(0, blocks);
        set
    }

    /// Number of blocks in the set.
    pub fn len(&self) -> u64 {
        self.count
    }

    /// True when the set holds no block.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Adds every block of `extent`.
    pub fn insert(&mut self, extent: Extent) {
        self.update(extent, true);
    }

    /// Adds blocks `first..first + count` (a range longer than an extent can say).
    pub fn insert_range(&mut self, first: u64, count: u64) {
        let end = first.saturating_add(count);
        let mut lba = first;
        while lba < end {
            let run = (end - lba).min(u64::from(u32::MAX));
            self.insert(Extent {
                lba,
                blocks: run as u32,
            });
            lba += run;
        }
    }

    /// Removes every block of `extent`.
    pub fn remove(&mut self, extent: Extent) {
        self.update(extent, false);
    }

    /// Adds every block of `other`.
    pub fn union_with(&mut self, other: &BlockSet) {
        for extent in other.extents(u32::MAX) {
            self.insert(extent);
        }
    }

    /// Removes every block.
    pub fn clear(&mut self) {
        self.pages.clear();
        self.count = 0;
    }

    /// True when `lba` is in the set.
    pub fn contains(&self, lba: u64) -> bool {
        let (page, word, bit) = locate(lba);
        self.pages
            .get(&page)
            .is_some_and(|words| words[word] & (1 << bit) != 0)
    }

    /// The first run of set blocks at or after `from`, at most `max_blocks` long.
    pub fn next_run(&self, from: u64, max_blocks: u32) -> Option<Extent> {
        let start = self.next_set(from)?;
        let mut blocks = 1u32;
        while blocks < max_blocks && self.contains(start + u64::from(blocks)) {
            blocks += 1;
        }
        Some(Extent { lba: start, blocks })
    }

    /// The runs of the set in order, each at most `max_blocks` long.
    pub fn extents(&self, max_blocks: u32) -> Vec<Extent> {
        let mut out = Vec::new();
        let mut from = 0;
        while let Some(run) = self.next_run(from, max_blocks) {
            from = run.lba + u64::from(run.blocks);
            out.push(run);
        }
        out
    }

    fn next_set(&self, from: u64) -> Option<u64> {
        let (first_page, _, _) = locate(from);
        for (&page, words) in self.pages.range(first_page..) {
            let page_start = page * PAGE_BLOCKS;
            let skip = from.saturating_sub(page_start);
            let mut word = (skip / 64) as usize;
            let mut mask = !0u64 << (skip % 64);
            while word < PAGE_WORDS {
                let bits = words[word] & mask;
                if bits != 0 {
                    return Some(page_start + word as u64 * 64 + u64::from(bits.trailing_zeros()));
                }
                word += 1;
                mask = !0;
            }
        }
        None
    }

    fn update(&mut self, extent: Extent, set: bool) {
        let mut lba = extent.lba;
        let end = extent.lba.saturating_add(u64::from(extent.blocks));
        while lba < end {
            let (page, word, bit) = locate(lba);
            let run = (64 - u64::from(bit)).min(end - lba);
            let mask = if run == 64 {
                !0u64
            } else {
                ((1u64 << run) - 1) << bit
            };
            if set {
                let words = self
                    .pages
                    .entry(page)
                    .or_insert_with(|| Box::new([0; PAGE_WORDS]));
                self.count += u64::from((!words[word] & mask).count_ones());
                words[word] |= mask;
            } else if let Some(words) = self.pages.get_mut(&page) {
                self.count -= u64::from((words[word] & mask).count_ones());
                words[word] &= !mask;
                if words.iter().all(|w| *w == 0) {
                    self.pages.remove(&page);
                }
            }
            lba += run;
        }
    }
}

fn locate(lba: u64) -> (u64, usize, u32) {
    let page = lba / PAGE_BLOCKS;
    let in_page = lba % PAGE_BLOCKS;
    (page, (in_page / 64) as usize, (in_page % 64) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    proptest! {
        #[test]
        fn behaves_like_a_set_of_blocks(
            ops in proptest::collection::vec((any::<bool>(), 0u64..100_000, 1u32..300), 1..60)
        ) {
            let mut set = BlockSet::new();
            let mut model = BTreeSet::new();
            for (insert, lba, blocks) in ops {
                let extent = Extent { lba, blocks };
                if insert {
                    set.insert(extent);
                    model.extend(lba..lba + u64::from(blocks));
                } else {
                    set.remove(extent);
                    for b in lba..lba + u64::from(blocks) {
                        model.remove(&b);
                    }
                }
            }
            prop_assert_eq!(set.len(), model.len() as u64);
            let listed: Vec<u64> = set
                .extents(7)
                .iter()
                .flat_map(|e| e.lba..e.lba + u64::from(e.blocks))
                .collect();
            prop_assert_eq!(listed, model.iter().copied().collect::<Vec<_>>());
            for extent in set.extents(7) {
                prop_assert!(extent.blocks <= 7);
            }
        }
    }

    #[test]
    fn a_full_set_covers_the_volume_and_empties_to_no_pages() {
        let mut set = BlockSet::full(100_000);
        assert_eq!(set.len(), 100_000);
        assert!(set.contains(99_999) && !set.contains(100_000));
        set.remove(Extent {
            lba: 0,
            blocks: 100_000,
        });
        assert!(set.is_empty());
        assert!(set.pages.is_empty());
    }
}
