//! The segment table: each segment's role, live block count and newest batch, and
//! the rules for when a segment may be reused.

use std::sync::atomic::{AtomicU32, Ordering};

use crate::units::SegmentId;

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
    /// Blocks of this segment that some volume map references.
    pub live_blocks: u32,
    /// Highest batch sequence number written to it (0 if none).
    pub max_seq: u64,
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
}

impl SegmentTable {
    pub fn new(count: u32, pins: std::sync::Arc<SegmentPins>) -> SegmentTable {
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
        }
    }

    pub fn get(&self, segment: SegmentId) -> &SegmentInfo {
        &self.info[segment.0 as usize]
    }

    pub fn get_mut(&mut self, segment: SegmentId) -> &mut SegmentInfo {
        &mut self.info[segment.0 as usize]
    }

    /// Segments that can be allocated right now.
    pub fn allocatable(&self) -> usize {
        self.info
            .iter()
            .enumerate()
            .filter(|(at, info)| info.state == SegmentState::Free && !self.pins.is_pinned(*at))
            .count()
    }

    /// Sealed segments with no live data that the next checkpoint will free.
    pub fn reclaimable(&self, covered_seq: u64) -> usize {
        self.info
            .iter()
            .filter(|i| {
                i.state == SegmentState::Sealed && i.live_blocks == 0 && i.max_seq >= covered_seq
            })
            .count()
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
                return Some(SegmentId(at as u32));
            }
        }
        None
    }

    /// The segment [`SegmentTable::allocate`] would take next, if any.
    pub fn next_allocatable(&self) -> Option<SegmentId> {
        let count = self.info.len();
        (0..count)
            .map(|step| (self.cursor + step) % count)
            .find(|&at| self.info[at].state == SegmentState::Free && !self.pins.is_pinned(at))
            .map(|at| SegmentId(at as u32))
    }

    /// Frees `segment` if it is sealed, holds no live data and no batch newer than
    /// the durable checkpoint (replay must still find such batches).
    pub fn free_if_dead(&mut self, segment: SegmentId, covered_seq: u64) {
        let info = self.get_mut(segment);
        if info.state == SegmentState::Sealed && info.live_blocks == 0 && info.max_seq < covered_seq
        {
            info.state = SegmentState::Free;
        }
    }

    /// Count of segments in each state, for statistics.
    pub fn count(&self, state: SegmentState) -> usize {
        self.info.iter().filter(|i| i.state == state).count()
    }

    /// Total live blocks across segments.
    pub fn live_blocks(&self) -> u64 {
        self.info.iter().map(|i| u64::from(i.live_blocks)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn next_allocatable_predicts_allocate_and_skips_pinned_and_used_segments() {
        let pins = Arc::new(SegmentPins::new(4));
        let mut table = SegmentTable::new(4, pins.clone());
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
}
