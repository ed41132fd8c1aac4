//! Thin volumes: identity, size and block map, plus the range locks that serialise
//! read-modify-write of partial blocks on 512-byte-sector volumes.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::index::VolumeMap;
use crate::units::{SectorSize, VolumeId};

/// Lifecycle of a volume inside the engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum VolumeState {
    /// Its create record is not yet durable.
    Creating = 0,
    /// Serving I/O.
    Live = 1,
    /// Its delete record is queued; no new I/O is accepted.
    Deleting = 2,
}

/// A volume's in-memory state.
pub(crate) struct Volume {
    pub id: VolumeId,
    pub name: String,
    pub sector: SectorSize,
    pub size_bytes: AtomicU64,
    pub map: RwLock<VolumeMap>,
    state: AtomicU8,
    pub range_locks: RangeLocks,
}

impl Volume {
    pub fn new(
        id: VolumeId,
        name: String,
        size_bytes: u64,
        sector: SectorSize,
        state: VolumeState,
    ) -> Volume {
        Volume {
            id,
            name,
            sector,
            size_bytes: AtomicU64::new(size_bytes),
            map: RwLock::new(VolumeMap::new()),
            state: AtomicU8::new(state as u8),
            range_locks: RangeLocks::default(),
        }
    }

    pub fn state(&self) -> VolumeState {
        match self.state.load(Ordering::Acquire) {
            0 => VolumeState::Creating,
            1 => VolumeState::Live,
            _ => VolumeState::Deleting,
        }
    }

    pub fn set_state(&self, state: VolumeState) {
        self.state.store(state as u8, Ordering::Release);
    }

    pub fn size(&self) -> u64 {
        self.size_bytes.load(Ordering::Acquire)
    }

    pub fn info(&self) -> VolumeInfo {
        let mapped_blocks = self.map.read().mapped_blocks();
        VolumeInfo {
            id: self.id,
            name: self.name.clone(),
            size_bytes: self.size(),
            sector_size: self.sector,
            mapped_bytes: mapped_blocks * crate::units::BLOCK_SIZE_U64,
        }
    }
}

/// What callers see of a volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeInfo {
    /// Engine-assigned id.
    pub id: VolumeId,
    /// Unique name.
    pub name: String,
    /// Provisioned size in bytes.
    pub size_bytes: u64,
    /// Logical block size exposed to hosts.
    pub sector_size: SectorSize,
    /// Bytes of volume space that hold data (written and not trimmed); equal to the
    /// physical space the volume uses while nothing is shared or compressed.
    pub mapped_bytes: u64,
}

type Waiter = Box<dyn FnOnce() + Send>;

/// Exclusive locks on 4 KiB block ranges, handed out in arrival order per range.
/// A request that finds its range busy parks a continuation instead of blocking
/// the caller's thread.
#[derive(Default)]
pub(crate) struct RangeLocks {
    held: Mutex<Vec<HeldRange>>,
}

struct HeldRange {
    start: u64,
    end: u64,
    waiters: Vec<(u64, u64, Waiter)>,
}

impl RangeLocks {
    /// Runs `then` once `[start, end)` is exclusively held (possibly right away,
    /// on this thread). The holder must call [`RangeLocks::release`].
    pub fn acquire(&self, start: u64, end: u64, then: Waiter) {
        let mut held = self.held.lock();
        if let Some(busy) = held.iter_mut().find(|h| h.start < end && start < h.end) {
            busy.waiters.push((start, end, then));
            return;
        }
        held.push(HeldRange {
            start,
            end,
            waiters: Vec::new(),
        });
        drop(held);
        then();
    }

    /// Releases a range taken with `acquire` and retries its waiters.
    pub fn release(&self, start: u64, end: u64) {
        let waiters = {
            let mut held = self.held.lock();
            let Some(at) = held.iter().position(|h| h.start == start && h.end == end) else {
                unreachable!("release of a range that is not held")
            };
            held.swap_remove(at).waiters
        };
        for (start, end, then) in waiters {
            self.acquire(start, end, then);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let locks = Arc::new(RangeLocks::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        locks.acquire(0, 4, Box::new(move || l.lock().push("a")));
        let l = log.clone();
        locks.acquire(2, 6, Box::new(move || l.lock().push("b")));
        let l = log.clone();
        locks.acquire(10, 12, Box::new(move || l.lock().push("c")));
        assert_eq!(*log.lock(), vec!["a", "c"]);
        locks.release(0, 4);
        assert_eq!(*log.lock(), vec!["a", "c", "b"]);
        locks.release(2, 6);
        locks.release(10, 12);
    }
}
