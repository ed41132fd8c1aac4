//! Shared engine state: the pool, the volume catalog, the log and the fence.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Sender;
use parking_lot::{Mutex, RwLock};

use crate::log::segments::SegmentPins;
use crate::log::LogState;
use crate::pool::Pool;
use crate::units::VolumeId;
use crate::volume::Volume;

/// Tunables of an open engine.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Segment size in 4 KiB blocks for newly formatted pools (at least 512).
    pub blocks_per_segment: u32,
    /// Log batches that may be in flight beyond the last applied one.
    pub inflight_batches_max: usize,
    /// Log blocks written between automatic checkpoints; bounds recovery time.
    pub checkpoint_interval_blocks: u64,
    /// How garbage collection picks the segments it cleans.
    pub gc_policy: GcPolicy,
    /// Garbage collection starts when free segments drop to this share of the
    /// pool (per mille), and stops at twice that.
    pub gc_free_low_permille: u32,
    /// Pace of a scrub pass in bytes per second (0: as fast as reads go), so
    /// foreground I/O keeps the device.
    pub scrub_bytes_per_s: u64,
    /// Time between scheduled scrub passes (the first starts five minutes
    /// after open); `None` scrubs only on demand.
    pub scrub_interval: Option<std::time::Duration>,
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            blocks_per_segment: 2048,
            inflight_batches_max: 4,
            checkpoint_interval_blocks: 256 * 1024 / 4 * 4,
            // Measured (BENCHMARKS.md): greedy cleans at equal or lower write
            // amplification, also on skewed workloads, while relocations share
            // the foreground's log head.
            gc_policy: GcPolicy::CostBenefit,
            gc_free_low_permille: 50,
            scrub_bytes_per_s: 8 << 20,
            scrub_interval: Some(std::time::Duration::from_secs(24 * 3600)),
        }
    }
}

/// Victim selection for garbage collection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GcPolicy {
    /// The segment with the fewest live blocks: cheapest to clean right now.
    Greedy,
    /// The segment with the best `(1 - u) * age / (1 + u)` (u = live share, age =
    /// batches since it was written), which leaves recently written segments to
    /// die on their own (Rosenblum and Ousterhout's LFS policy).
    CostBenefit,
}

/// The volumes and snapshots of the pool, by id, by name and by lineage.
#[derive(Default)]
pub(crate) struct Catalog {
    volumes: HashMap<VolumeId, Arc<Volume>>,
    by_name: HashMap<String, VolumeId>,
    by_lineage: HashMap<u64, Vec<VolumeId>>,
    pub next_volume_id: u64,
}

impl Catalog {
    pub fn get(&self, id: VolumeId) -> Option<Arc<Volume>> {
        self.volumes.get(&id).cloned()
    }

    pub fn by_name(&self, name: &str) -> Option<Arc<Volume>> {
        self.by_name.get(name).and_then(|id| self.get(*id))
    }

    pub fn insert(&mut self, volume: Arc<Volume>) {
        self.next_volume_id = self.next_volume_id.max(volume.id.0 + 1);
        self.by_name.insert(volume.name.clone(), volume.id);
        self.by_lineage
            .entry(volume.lineage)
            .or_default()
            .push(volume.id);
        self.volumes.insert(volume.id, volume);
    }

    pub fn remove(&mut self, id: VolumeId) -> Option<Arc<Volume>> {
        let volume = self.volumes.remove(&id)?;
        if self.by_name.get(&volume.name) == Some(&id) {
            self.by_name.remove(&volume.name);
        }
        if let Some(members) = self.by_lineage.get_mut(&volume.lineage) {
            members.retain(|m| *m != id);
            if members.is_empty() {
                self.by_lineage.remove(&volume.lineage);
            }
        }
        Some(volume)
    }

    /// Every volume and snapshot whose map may share blocks with `lineage`.
    pub fn lineage(&self, lineage: u64) -> Vec<Arc<Volume>> {
        let members = self
            .by_lineage
            .get(&lineage)
            .map(Vec::as_slice)
            .unwrap_or_default();
        members.iter().filter_map(|id| self.get(*id)).collect()
    }

    pub fn volume_count(&self) -> usize {
        self.volumes.len()
    }

    pub fn all(&self) -> Vec<Arc<Volume>> {
        let mut all: Vec<_> = self.volumes.values().cloned().collect();
        all.sort_by_key(|v| v.id);
        all
    }
}

/// Everything the data path, the checkpointer and recovery share.
pub(crate) struct Core {
    pub pool: Pool,
    pub catalog: RwLock<Catalog>,
    pub log: Mutex<LogState>,
    pub pins: Arc<SegmentPins>,
    /// Set after a failed device write or flush; from then on every change fails.
    pub fenced: AtomicBool,
    pub config: EngineConfig,
    /// This open's epoch, stamped on every batch it writes.
    pub epoch: u64,
    /// Serialises checkpoints.
    pub checkpoint_gate: Mutex<()>,
    pub checkpoint_requests: Sender<()>,
    /// Wakes the garbage collector.
    pub collector_wake: Sender<()>,
    /// Serialises garbage collection rounds.
    pub collector_gate: Mutex<()>,
    /// Bumped whenever an applied batch releases a block (which may create
    /// something to clean).
    pub freed_generation: AtomicU64,
    /// The `freed_generation` at which the collector last found nothing
    /// worth cleaning (`u64::MAX`: it has not). The verdict holds only until
    /// a block is released, including one released while the collector was
    /// still looking, so it can never outlive what it was based on.
    pub collector_stalled_at: AtomicU64,
    /// Running totals for statistics (write amplification).
    pub counters: Counters,
    /// Live blocks of the pool (the segment table's running count).
    pub live_blocks: Arc<AtomicU64>,
    /// Live blocks below which every write is admitted at once: the live-data
    /// limit with the largest checkpoint the pool can need (the exact limit,
    /// from the checkpoint reserve of the moment, is at least this; see
    /// [`Core::write_admitted`]).
    pub live_limit_blocks: u64,
    /// Blocks other replicas may lack, carried across restarts in checkpoints.
    pub unsettled: crate::unsettled::UnsettledLedger,
}

/// Monotonic counters of the data path and the collector.
#[derive(Default)]
pub(crate) struct Counters {
    /// Blocks written on behalf of hosts.
    pub foreground_blocks: AtomicU64,
    /// Blocks rewritten by garbage collection.
    pub relocated_blocks: AtomicU64,
    /// Segments garbage collection cleaned.
    pub cleaned_segments: AtomicU64,
    /// Collector rounds that walked every map because some victim's headers
    /// did not account for all its live blocks.
    pub gc_map_walks: AtomicU64,
    /// Blocks the collector read from its victims.
    pub gc_read_blocks: AtomicU64,
    /// Blocks written to compressed volumes, before compression.
    pub packed_logical_blocks: AtomicU64,
    /// Blocks those writes took on disk.
    pub packed_stored_blocks: AtomicU64,
    /// Batch header blocks written to the devices.
    pub header_blocks: AtomicU64,
    /// Batch data blocks written to the devices (host data as stored, and
    /// the collector's copies).
    pub data_blocks: AtomicU64,
    /// Checkpoint blocks written to the devices (bodies and root copies).
    pub checkpoint_blocks: AtomicU64,
    /// Writes refused for want of space.
    pub no_space_refusals: AtomicU64,
    /// Times host writes started waiting for the collector to free a segment.
    pub waits_for_collector: AtomicU64,
    /// Times host writes started waiting for a checkpoint to free segments.
    pub waits_for_checkpoint: AtomicU64,
    /// When a refusal was last logged, in milliseconds since [`NO_SPACE_EPOCH`].
    pub no_space_logged_ms: AtomicU64,
}

/// How often at most a refused write is logged: a full pool refuses every
/// write of new data, and a log line per command would drown everything else.
const NO_SPACE_LOG_EVERY_MS: u64 = 10_000;

/// The reference point of [`Counters::no_space_logged_ms`].
static NO_SPACE_EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

impl Counters {
    /// Zeroes every count (after replay, which applies old writes).
    pub fn reset(&self) {
        for counter in [
            &self.foreground_blocks,
            &self.relocated_blocks,
            &self.cleaned_segments,
            &self.gc_map_walks,
            &self.gc_read_blocks,
            &self.waits_for_collector,
            &self.waits_for_checkpoint,
            &self.packed_logical_blocks,
            &self.packed_stored_blocks,
            &self.header_blocks,
            &self.data_blocks,
            &self.checkpoint_blocks,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a write refused with `NoSpace` and logs it (with the refusals
    /// since the last line) at most every [`NO_SPACE_LOG_EVERY_MS`].
    pub fn note_no_space(&self, why: &'static str) {
        let refused = self.no_space_refusals.fetch_add(1, Ordering::Relaxed) + 1;
        // Offset by one interval so the first refusal (logged at 0) logs.
        let now = NO_SPACE_EPOCH
            .get_or_init(std::time::Instant::now)
            .elapsed()
            .as_millis() as u64
            + NO_SPACE_LOG_EVERY_MS;
        let last = self.no_space_logged_ms.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= NO_SPACE_LOG_EVERY_MS
            && self
                .no_space_logged_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                refused_since_open = refused,
                why,
                "pool out of space: writes refused"
            );
        }
    }
}

/// Segments kept beyond every reserve so overwrites of a full pool find room
/// and leave dead blocks the collector can reclaim: the larger of this and
/// [`HEADROOM_SHARE`] of the pool's segments.
const HEADROOM_SEGMENTS_MIN: u64 = 1;
/// The share of a pool's segments kept as overwrite headroom (1/16, as an
/// SSD's spare area): at the limit, segments are on average that much dead,
/// which keeps each cleaning round's copying bounded.
const HEADROOM_SHARE: u64 = 16;

/// The live-data limit of a pool of `segments` segments of
/// `blocks_per_segment` blocks whose durable checkpoint body holds
/// `body_segments` segments and whose next checkpoint needs
/// `reserve_segments`: every segment less the body, the reserve and the one
/// more free segment the foreground's floor keeps beyond it, the collector's
/// reserve, the collector head's open segment (its copies are not cleaned
/// until it is sealed), and the headroom.
pub(crate) fn live_limit_blocks(
    segments: u64,
    blocks_per_segment: u32,
    body_segments: u64,
    reserve_segments: u64,
) -> u64 {
    let headroom = HEADROOM_SEGMENTS_MIN.max(segments / HEADROOM_SHARE);
    let kept = body_segments
        + reserve_segments
        + 1
        + crate::log::collector_reserve_segments(segments as usize, blocks_per_segment) as u64
        + 1
        + headroom;
    segments.saturating_sub(kept) * u64::from(blocks_per_segment)
}

/// The most segments a checkpoint of a pool of `segments` segments of
/// `blocks_per_segment` blocks can need (as `log::checkpoint_reserve` with
/// every block live, a chunk per 128 blocks and 1024 volumes): a bound the
/// write path can use without the log lock.
pub(crate) fn checkpoint_segments_max(segments: u64, blocks_per_segment: u32) -> u64 {
    let per_segment = u64::from(blocks_per_segment);
    let all_blocks = segments * per_segment;
    let body_bytes = crate::log::checkpoint_body_bytes_max(
        all_blocks,
        all_blocks.div_ceil(crate::index::CHUNK_BLOCKS as u64),
        1024,
    );
    body_bytes.div_ceil(per_segment * crate::units::BLOCK_SIZE_U64) + 1
}

impl Core {
    /// Whether a foreground write of `blocks` blocks of `volume` at `first`
    /// may be taken. Below the pool's live-data limit, always. At the limit,
    /// only if it adds no live data: every block it replaces is stored raw
    /// and held by this volume alone, so the old copy dies when the write
    /// applies and the collector can reclaim it. A full pool thus refuses new
    /// data with `NoSpace` but keeps taking overwrites, and never fills with
    /// live data so far that nothing is left to clean.
    pub fn write_admitted(&self, volume: &Volume, first: u64, blocks: u64) -> bool {
        if self.live_blocks.load(Ordering::Relaxed) + blocks <= self.live_limit_blocks {
            return true;
        }
        // Log before map, as batches apply. Under the lock the limit is
        // exact: the checkpoint reserve of the pool as it is now.
        let log = self.log.lock();
        let limit = self.live_limit_now(&log);
        let live = log.segments.live_blocks();
        let map = volume.map.read();
        let added = (first..first + blocks)
            .filter(|lba| match map.lookup(*lba) {
                Some(m) => m.packing.unit_blocks != 0 || log.segments.block_refs(m.location) != 1,
                None => true,
            })
            .count() as u64;
        // A write adding nothing is taken even past the limit (which dips
        // while the checkpoint reserve grows): it only turns a block dead.
        added == 0 || live + added <= limit
    }

    /// The live-data limit of the pool as it is now (its checkpoint body and
    /// the reserve the next one needs), in blocks.
    pub fn live_limit_now(&self, log: &crate::log::LogState) -> u64 {
        live_limit_blocks(
            u64::from(self.pool.segment_count()),
            self.pool.blocks_per_segment,
            log.body_segments.len() as u64,
            crate::log::checkpoint_reserve(self, log) as u64,
        )
    }

    /// Asks the checkpointer thread for a checkpoint soon; never blocks.
    pub fn request_checkpoint(&self) {
        let _ = self.checkpoint_requests.try_send(());
    }

    /// Whether waiting for garbage collection may yield free space.
    pub fn collector_can_help(&self) -> bool {
        self.collector_stalled_at.load(Ordering::Acquire)
            != self.freed_generation.load(Ordering::Acquire)
    }

    /// Asks the garbage collector to run soon; never blocks.
    pub fn wake_collector(&self) {
        let _ = self.collector_wake.try_send(());
    }
}
