//! Shared engine state: the pool, the volume catalog, the log and the fence.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
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
}

impl Default for EngineConfig {
    fn default() -> EngineConfig {
        EngineConfig {
            blocks_per_segment: 2048,
            inflight_batches_max: 4,
            checkpoint_interval_blocks: 256 * 1024 / 4 * 4,
        }
    }
}

/// The volumes of the pool, by id and by name.
#[derive(Default)]
pub(crate) struct Catalog {
    volumes: HashMap<VolumeId, Arc<Volume>>,
    by_name: HashMap<String, VolumeId>,
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
        self.volumes.insert(volume.id, volume);
    }

    pub fn remove(&mut self, id: VolumeId) -> Option<Arc<Volume>> {
        let volume = self.volumes.remove(&id)?;
        if self.by_name.get(&volume.name) == Some(&id) {
            self.by_name.remove(&volume.name);
        }
        Some(volume)
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
}

impl Core {
    /// Asks the checkpointer thread for a checkpoint soon; never blocks.
    pub fn request_checkpoint(&self) {
        let _ = self.checkpoint_requests.try_send(());
    }
}
