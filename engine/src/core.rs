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
            gc_policy: GcPolicy::Greedy,
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
    /// Set by the collector when nothing is worth cleaning; cleared whenever an
    /// applied record releases a block (which may create something to clean).
    pub collector_stalled: AtomicBool,
    /// Running totals for statistics (write amplification).
    pub counters: Counters,
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
    /// Blocks written to compressed volumes, before compression.
    pub packed_logical_blocks: AtomicU64,
    /// Blocks those writes took on disk.
    pub packed_stored_blocks: AtomicU64,
}

impl Core {
    /// Asks the checkpointer thread for a checkpoint soon; never blocks.
    pub fn request_checkpoint(&self) {
        let _ = self.checkpoint_requests.try_send(());
    }

    /// Whether waiting for garbage collection may yield free space.
    pub fn collector_can_help(&self) -> bool {
        !self.collector_stalled.load(Ordering::Acquire)
    }

    /// Asks the garbage collector to run soon; never blocks.
    pub fn wake_collector(&self) {
        let _ = self.collector_wake.try_send(());
    }
}
