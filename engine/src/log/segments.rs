//! The segment table: each segment's role, live block count and newest batch, the
//! reference count of every physical block, and the rules for when a segment may
//! be reused.
//!
//! INVARIANT: a segment whose last live block was released is reused only after
//! (a) a device flush completed that was issued after the release was applied, so
//! the records that released its blocks survive power loss and no durable state
//! can point into it again, and (b) a durable checkpoint covers every batch the
//! segment holds, so replay never needs to read it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::index::RefCounts;
use crate::units::{PhysBlock, SegmentId};

/// What a segment currently holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SegmentState {
    /// Nothing the pool needs; may be allocated.
    Free,
    /// The segment log batches are being appended to.
    Open,
    /// Full of log batches; read-only until freed.
    Sealed,
    /// Holds (part of) a checkpoint body.
    CheckpointBody,
}

#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentInfo {
    pub state: SegmentState,
    /// Blocks of this segment that at least one chunk instance references.
    pub live_blocks: u32,
    /// Highest batch sequence number written to it (0 if none).
    pub max_seq: u64,
}

/// Where a batch sits in its segment: the block its header starts at and
/// how many blocks the header takes (its data follows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchPlace {
    pub block: u32,
    pub header_blocks: u16,
}

/// Reads in flight against each segment; a pinned segment is never reallocated.
/// Lives outside the log lock so readers pin while holding only a volume map lock.
pub(crate) struct SegmentPins(Vec<AtomicU32>);

impl SegmentPins {
    pub fn new(count: u32) -> SegmentPins {
        SegmentPins((0..count).map(|_| AtomicU32::new(0)).collect())
    }

    pub fn pin(&self, segment: SegmentId) {
        self.0[segment.0 as usize].fetch_add(1, Ordering::AcqRel);
    }

    pub fn unpin(&self, segment: SegmentId) {
        self.0[segment.0 as usize].fetch_sub(1, Ordering::AcqRel);
    }

    fn is_pinned(&self, at: usize) -> bool {
        self.0[at].load(Ordering::Acquire) != 0
    }
}

/// Segment bookkeeping. Mutated only under the log lock.
pub(crate) struct SegmentTable {
    pub info: Vec<SegmentInfo>,
    pins: std::sync::Arc<SegmentPins>,
    cursor: usize,
    blocks_per_segment: u32,
    /// References to each physical block: one per chunk instance holding it.
    refs: Vec<u16>,
    /// Segments whose live count reached zero, with the batch that released the
    /// last block; they become free once flushed and checkpointed (see the
    /// module invariant).
    dying: HashMap<SegmentId, u64>,
    /// Every batch up to this one is known to be on stable media.
    pub durable_seq: u64,
    /// Where each batch of a segment's current life sits, when every one
    /// since block 0 was placed or replayed by this process (None when the
    /// life began before the checkpoint replay started from): lets the
    /// collector read a victim's headers and live blocks and nothing else.
    /// About 8 bytes per batch.
    places: Vec<Option<Vec<BatchPlace>>>,
    /// Physical blocks with a reference, the sum of the segments' live
    /// counts; shared with [`crate::core::Core`] so a writer can read it
    /// without the log lock.
    live_total: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SegmentTable {
    pub fn new(
        count: u32,
        blocks_per_segment: u32,
        pins: std::sync::Arc<SegmentPins>,
    ) -> SegmentTable {
        SegmentTable {
            info: vec![
                SegmentInfo {
                    state: SegmentState::Free,
                    live_blocks: 0,
                    max_seq: 0
                };
                count as usize
            ],
            pins,
            cursor: 0,
            blocks_per_segment,
            refs: vec![0; count as usize * blocks_per_segment as usize],
            dying: HashMap::new(),
            durable_seq: 0,
            places: vec![None; count as usize],
            live_total: Default::default(),
        }
    }

    /// The running count of live blocks ([`SegmentTable::live_blocks`]),
    /// readable without the log lock.
    pub fn live_counter(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.live_total.clone()
    }

    pub fn get(&self, segment: SegmentId) -> &SegmentInfo {
        &self.info[segment.0 as usize]
    }

    pub fn get_mut(&mut self, segment: SegmentId) -> &mut SegmentInfo {
        &mut self.info[segment.0 as usize]
    }

    fn segment_of(&self, at: PhysBlock) -> SegmentId {
        SegmentId((at.0 / u64::from(self.blocks_per_segment)) as u32)
    }

    /// The reference changes of map edits made while applying batch `seq`.
    pub fn refs_for(&mut self, seq: u64) -> BlockRefs<'_> {
        BlockRefs {
            table: self,
            seq,
            freed_any: false,
        }
    }

    /// References held to one physical block.
    pub fn block_refs(&self, at: PhysBlock) -> u16 {
        self.refs.get(at.0 as usize).copied().unwrap_or(0)
    }

    /// Which blocks of `segment` some map references, in order.
    pub fn live_in(&self, segment: SegmentId) -> Vec<bool> {
        let per_segment = self.blocks_per_segment as usize;
        let first = segment.0 as usize * per_segment;
        self.refs
            .get(first..first + per_segment)
            .map(|refs| refs.iter().map(|&count| count > 0).collect())
            .unwrap_or_default()
    }

    /// Every physical block with a reference, with its count (for an audit).
    pub fn referenced_blocks(&self) -> std::collections::BTreeMap<u64, u16> {
        self.refs
            .iter()
            .enumerate()
            .filter(|(_, &count)| count != 0)
            .map(|(at, &count)| (at as u64, count))
            .collect()
    }

    /// Marks the open segment full; a segment already without live blocks starts dying.
    pub fn seal(&mut self, segment: SegmentId, seq: u64) {
        let info = self.get_mut(segment);
        info.state = SegmentState::Sealed;
        if info.live_blocks == 0 {
            self.dying.insert(segment, seq);
        }
    }

    /// Queues every sealed segment without live blocks to be freed, as of batch
    /// `seq`: after replay, segments that only held records no map points into.
    pub fn queue_dead_sealed(&mut self, seq: u64) {
        for (at, info) in self.info.iter().enumerate() {
            if info.state == SegmentState::Sealed && info.live_blocks == 0 {
                self.dying.insert(SegmentId(at as u32), seq);
            }
        }
    }

    /// Segments that can be allocated right now.
    pub fn allocatable(&self) -> usize {
        self.info
            .iter()
            .enumerate()
            .filter(|(at, info)| info.state == SegmentState::Free && !self.pins.is_pinned(*at))
            .count()
    }

    /// Dead segments that a flush plus a checkpoint will free.
    pub fn reclaimable(&self) -> usize {
        self.dying
            .keys()
            .filter(|s| self.get(**s).state == SegmentState::Sealed)
            .count()
    }

    /// Frees every dying segment whose release is durable (`durable_seq`) and whose
    /// batches a durable checkpoint covers (`covered_seq`). Returns how many.
    pub fn free_dead(&mut self, covered_seq: u64) -> usize {
        let durable = self.durable_seq;
        let mut freed = 0;
        let info = &mut self.info;
        let places = &mut self.places;
        self.dying.retain(|segment, died| {
            let info = &mut info[segment.0 as usize];
            if info.live_blocks != 0 || info.state == SegmentState::Free {
                return false;
            }
            if info.state == SegmentState::Sealed && info.max_seq < covered_seq && *died <= durable
            {
                info.state = SegmentState::Free;
                places[segment.0 as usize] = None;
                freed += 1;
                return false;
            }
            true
        });
        freed
    }
    /// Takes a free, unpinned segment, scanning round-robin to spread wear.
    pub fn allocate(&mut self, state: SegmentState) -> Option<SegmentId> {
        let count = self.info.len();
        for step in 0..count {
            let at = (self.cursor + step) % count;
            if self.info[at].state == SegmentState::Free && !self.pins.is_pinned(at) {
                self.cursor = (at + 1) % count;
                self.info[at] = SegmentInfo {
                    state,
                    live_blocks: 0,
                    max_seq: 0,
                };
                self.places[at] = (state == SegmentState::Open).then(Vec::new);
                return Some(SegmentId(at as u32));
            }
        }
        None
    }

    /// Records a batch placed (or replayed) at `place` in `segment`. A batch
    /// at block 0 starts the segment's list; one after a batch the list does
    /// not hold leaves it unknown.
    pub fn note_batch(&mut self, segment: SegmentId, place: BatchPlace) {
        let Some(slot) = self.places.get_mut(segment.0 as usize) else {
            return;
        };
        if place.block == 0 {
            *slot = Some(vec![place]);
            return;
        }
        match slot {
            Some(list) if list.last().is_some_and(|last| last.block < place.block) => {
                list.push(place)
            }
            _ => *slot = None,
        }
    }

    /// Where the batches of `segment`'s current life sit, in order, if known.
    pub fn batch_places(&self, segment: SegmentId) -> Option<Vec<BatchPlace>> {
        self.places.get(segment.0 as usize)?.clone()
    }

    /// The segment [`SegmentTable::allocate`] would take next, if any.
    pub fn next_allocatable(&self) -> Option<SegmentId> {
        let count = self.info.len();
        (0..count)
            .map(|step| (self.cursor + step) % count)
            .find(|&at| self.info[at].state == SegmentState::Free && !self.pins.is_pinned(at))
            .map(|at| SegmentId(at as u32))
    }

    /// Count of segments in each state, for statistics.
    pub fn count(&self, state: SegmentState) -> usize {
        self.info.iter().filter(|i| i.state == state).count()
    }

    /// Total live blocks across segments: physical blocks some map references.
    pub fn live_blocks(&self) -> u64 {
        self.live_total.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Applies reference changes to the table; see [`SegmentTable::refs_for`].
pub(crate) struct BlockRefs<'a> {
    table: &'a mut SegmentTable,
    seq: u64,
    freed_any: bool,
}

impl BlockRefs<'_> {
    /// Whether some block lost its last reference (garbage appeared).
    pub fn freed_any(&self) -> bool {
        self.freed_any
    }
}

impl RefCounts for BlockRefs<'_> {
    fn acquire(&mut self, at: PhysBlock) {
        let segment = self.table.segment_of(at);
        let Some(count) = self.table.refs.get_mut(at.0 as usize) else {
            return;
        };
        // Saturated counts stay put: the block leaks rather than being freed early.
        if *count == u16::MAX {
            return;
        }
        *count += 1;
        if *count == 1 {
            self.table.info[segment.0 as usize].live_blocks += 1;
            self.table
                .live_total
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    fn release(&mut self, at: PhysBlock) {
        let segment = self.table.segment_of(at);
        let Some(count) = self.table.refs.get_mut(at.0 as usize) else {
            return;
        };
        debug_assert!(
            *count > 0,
            "releasing block {} that has no references",
            at.0
        );
        if *count == 0 || *count == u16::MAX {
            return;
        }
        *count -= 1;
        if *count == 0 {
            self.freed_any = true;
            self.table
                .live_total
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            let info = &mut self.table.info[segment.0 as usize];
            info.live_blocks -= 1;
            if info.live_blocks == 0 {
                self.table.dying.insert(segment, self.seq);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn next_allocatable_predicts_allocate_and_skips_pinned_and_used_segments() {
        let pins = Arc::new(SegmentPins::new(4));
        let mut table = SegmentTable::new(4, 512, pins.clone());
        assert_eq!(table.next_allocatable(), Some(SegmentId(0)));
        assert_eq!(table.allocate(SegmentState::Open), Some(SegmentId(0)));
        pins.pin(SegmentId(1));
        assert_eq!(table.next_allocatable(), Some(SegmentId(2)));
        assert_eq!(table.allocate(SegmentState::Open), Some(SegmentId(2)));
        table.get_mut(SegmentId(3)).state = SegmentState::CheckpointBody;
        assert_eq!(
            table.next_allocatable(),
            None,
            "1 is pinned, the rest are in use"
        );
        pins.unpin(SegmentId(1));
        assert_eq!(table.next_allocatable(), Some(SegmentId(1)));
        assert_eq!(table.allocate(SegmentState::Open), Some(SegmentId(1)));
    }

    #[test]
    fn batch_places_are_known_only_for_a_life_followed_from_block_0() {
        let place = |block, header_blocks| BatchPlace {
            block,
            header_blocks,
        };
        let mut table = SegmentTable::new(3, 512, Arc::new(SegmentPins::new(3)));
        let open = table.allocate(SegmentState::Open).expect("a segment");
        assert_eq!(table.batch_places(open), Some(Vec::new()));
        table.note_batch(open, place(0, 1));
        table.note_batch(open, place(17, 2));
        assert_eq!(
            table.batch_places(open),
            Some(vec![place(0, 1), place(17, 2)])
        );
        // A place out of order means the list missed something.
        table.note_batch(open, place(9, 1));
        assert_eq!(table.batch_places(open), None);

        // Replay starting mid-segment knows nothing before it...
        let replayed = SegmentId(2);
        table.note_batch(replayed, place(40, 1));
        assert_eq!(table.batch_places(replayed), None);
        // ...and one starting at block 0 knows all.
        table.note_batch(replayed, place(0, 1));
        table.note_batch(replayed, place(5, 1));
        assert_eq!(
            table.batch_places(replayed),
            Some(vec![place(0, 1), place(5, 1)])
        );

        // Freed, the segment's list goes with its life.
        table.seal(replayed, 1);
        table.durable_seq = 1;
        assert_eq!(table.free_dead(2), 1);
        assert_eq!(table.batch_places(replayed), None);
    }
}
