//! Thin volumes: identity, size and block map, plus the range locks that serialise
//! read-modify-write of partial blocks on 512-byte-sector volumes.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};

use parking_lot::{Mutex, RwLock};

use crate::format::{VolumeKind, VOLUME_FLAG_COMPRESS, VOLUME_FLAG_INCOMPLETE};
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

/// Identity and shape of a volume or snapshot, as its create record gives them.
#[derive(Clone, Debug)]
pub(crate) struct VolumeShape {
    pub id: VolumeId,
    pub name: String,
    pub size_bytes: u64,
    pub sector: SectorSize,
    pub kind: VolumeKind,
    pub flags: u32,
    /// The volume whose blocks this map may share; see `index` for the invariant.
    pub lineage: u64,
    /// Snapshot: the volume it was taken of. Clone: the snapshot it came from.
    pub parent: Option<VolumeId>,
}

/// A volume's (or snapshot's) in-memory state.
pub(crate) struct Volume {
    pub id: VolumeId,
    pub name: String,
    pub sector: SectorSize,
    pub kind: VolumeKind,
    pub lineage: u64,
    pub parent: Option<VolumeId>,
    pub flags: AtomicU32,
    pub size_bytes: AtomicU64,
    pub map: RwLock<VolumeMap>,
    state: AtomicU8,
    pub range_locks: RangeLocks,
    /// What was written for this map since the pool opened.
    pub writes: VolumeWrites,
}

/// Blocks written for one map since the pool opened, for its write
/// amplification.
#[derive(Default)]
pub(crate) struct VolumeWrites {
    /// Blocks hosts wrote (before compression).
    pub host_blocks: AtomicU64,
    /// Data blocks that took on the devices: host data as stored (after
    /// compression) and the collector's copies of this lineage's blocks.
    pub data_blocks: AtomicU64,
}

impl VolumeWrites {
    /// Zeroes both counts.
    pub fn reset(&self) {
        self.host_blocks.store(0, Ordering::Relaxed);
        self.data_blocks.store(0, Ordering::Relaxed);
    }

    /// Counts a host write of `host` blocks that took `stored` on the devices.
    pub fn count_host(&self, host: u64, stored: u64) {
        self.host_blocks.fetch_add(host, Ordering::Relaxed);
        self.data_blocks.fetch_add(stored, Ordering::Relaxed);
    }
}

impl Volume {
    pub fn new(shape: VolumeShape, map: VolumeMap, state: VolumeState) -> Volume {
        Volume {
            id: shape.id,
            name: shape.name,
            sector: shape.sector,
            kind: shape.kind,
            lineage: shape.lineage,
            parent: shape.parent,
            flags: AtomicU32::new(shape.flags),
            size_bytes: AtomicU64::new(shape.size_bytes),
            map: RwLock::new(map),
            state: AtomicU8::new(state as u8),
            range_locks: RangeLocks::default(),
            writes: VolumeWrites::default(),
        }
    }

    /// The shape to record in a checkpoint.
    pub fn shape(&self) -> VolumeShape {
        VolumeShape {
            id: self.id,
            name: self.name.clone(),
            size_bytes: self.size(),
            sector: self.sector,
            kind: self.kind,
            flags: self.flags(),
            lineage: self.lineage,
            parent: self.parent,
        }
    }

    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Acquire)
    }

    pub fn is_snapshot(&self) -> bool {
        self.kind == VolumeKind::Snapshot
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
        let flags = self.flags();
        VolumeInfo {
            id: self.id,
            name: self.name.clone(),
            size_bytes: self.size(),
            sector_size: self.sector,
            mapped_bytes: mapped_blocks * crate::units::BLOCK_SIZE_U64,
            kind: self.kind,
            parent: self.parent,
            compression: flags & VOLUME_FLAG_COMPRESS != 0,
            complete: flags & VOLUME_FLAG_INCOMPLETE == 0,
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
    /// Writable volume or read-only snapshot.
    pub kind: VolumeKind,
    /// A snapshot's source volume, or a thin clone's source snapshot.
    pub parent: Option<VolumeId>,
    /// Whether newly written data is compressed.
    pub compression: bool,
    /// False while a thick clone is still filling the volume (and forever if the
    /// clone failed or was cancelled before finishing).
    pub complete: bool,
}

type Waiter = Box<dyn FnOnce() + Send>;

/// Exclusive locks on 4 KiB block ranges, granted in arrival order among
/// requests that overlap. A request that finds its range busy parks a
/// continuation instead of blocking the caller's thread.
///
/// INVARIANT: a request runs only once every request that arrived before it
/// and overlaps it has been released (whether that one was running or still
/// parked when this one came, and whatever order earlier ones are released
/// in), so overlapping writes reach the log in the order they arrived.
#[derive(Default)]
pub(crate) struct RangeLocks {
    /// Every request not yet released, in arrival order.
    requests: Mutex<Vec<RangeRequest>>,
}

struct RangeRequest {
    start: u64,
    end: u64,
    /// The continuation of a parked request; None once it runs.
    parked: Option<Waiter>,
}

impl RangeRequest {
    fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.end
    }
}

impl RangeLocks {
    /// Runs `then` once `[start, end)` is exclusively held (possibly right away,
    /// on this thread). The holder must call [`RangeLocks::release`].
    pub fn acquire(&self, start: u64, end: u64, then: Waiter) {
        let mut requests = self.requests.lock();
        if requests.iter().any(|r| r.overlaps(start, end)) {
            requests.push(RangeRequest {
                start,
                end,
                parked: Some(then),
            });
            return;
        }
        requests.push(RangeRequest {
            start,
            end,
            parked: None,
        });
        drop(requests);
        then();
    }

    /// Releases a range taken with `acquire` and runs, in arrival order, the
    /// parked requests nothing earlier overlaps any more.
    pub fn release(&self, start: u64, end: u64) {
        let runnable = {
            let mut requests = self.requests.lock();
            let Some(at) = requests
                .iter()
                .position(|r| r.parked.is_none() && r.start == start && r.end == end)
            else {
                unreachable!("release of a range that is not held")
            };
            requests.remove(at);
            let mut runnable = Vec::new();
            for next in at..requests.len() {
                let (earlier, rest) = requests.split_at_mut(next);
                let request = &mut rest[0];
                if request.parked.is_some()
                    && !earlier
                        .iter()
                        .any(|r| r.overlaps(request.start, request.end))
                {
                    runnable.extend(request.parked.take());
                }
            }
            runnable
        };
        for then in runnable {
            then();
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

    #[test]
    fn a_request_overlapping_only_a_parked_one_waits_behind_it() {
        let locks = Arc::new(RangeLocks::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, start, end) in [("a", 0, 2), ("b", 0, 3), ("c", 2, 3)] {
            let l = log.clone();
            locks.acquire(start, end, Box::new(move || l.lock().push(name)));
        }
        assert_eq!(*log.lock(), vec!["a"], "c overlaps the parked b");
        locks.release(0, 2);
        assert_eq!(*log.lock(), vec!["a", "b"]);
        locks.release(0, 3);
        assert_eq!(*log.lock(), vec!["a", "b", "c"]);
        locks.release(2, 3);
    }

    #[test]
    fn parked_requests_run_in_arrival_order_whatever_order_earlier_ones_release_in() {
        let locks = Arc::new(RangeLocks::default());
        let log = Arc::new(Mutex::new(Vec::new()));
        for (name, start, end) in [
            ("a", 3, 4),
            ("b", 0, 1),
            ("c", 0, 3),
            ("d", 5, 7),
            ("e", 2, 5),
        ] {
            let l = log.clone();
            locks.acquire(start, end, Box::new(move || l.lock().push(name)));
        }
        assert_eq!(*log.lock(), vec!["a", "b", "d"]);
        // c waits for b; e for a, and for c, which arrived before it.
        locks.release(0, 1);
        assert_eq!(*log.lock(), vec!["a", "b", "d", "c"]);
        locks.release(3, 4);
        assert_eq!(*log.lock(), vec!["a", "b", "d", "c"], "e overlaps c");
        locks.release(0, 3);
        assert_eq!(*log.lock(), vec!["a", "b", "d", "c", "e"]);
        locks.release(5, 7);
        locks.release(2, 5);
    }
}
