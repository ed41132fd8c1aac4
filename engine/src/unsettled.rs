//! Blocks this node wrote that its volume's other replicas may lack: what a
//! node must report, after a crash or after losing its primary term, so that a
//! replica set can be made to agree again by copying only those blocks.
//!
//! Replication knows, while it runs, which of its changes are not yet on every
//! member (a primary's pending changes, a replica's frames above the commit
//! point); those are *sources*, asked at each checkpoint. What the engine keeps
//! across restarts is the *carried* set of each volume:
//! - every block written by a batch that recovery replayed (written after the
//!   last checkpoint, so possibly not settled when the node died);
//! - what the sources reported at the checkpoint recovery started from;
//! - what a deposed primary handed over ([`crate::Engine::carry_unsettled`]).
//!
//! **Invariant:** a block this node wrote that may be missing on another
//! member is in a source's report or in the carried set, from before its write
//! can be durable until replication forgets the set (after every member was
//! made to agree on it). A checkpoint asks the sources only after it captured
//! the maps: a write in a batch the checkpoint covers is either settled by
//! then or reported; a write in a later batch is replayed, and so carried.
//!
//! Sets are kept in 4 KiB engine blocks. A volume's set of more than
//! [`CARRIED_EXTENTS_MAX`] runs is recorded and reported as the whole volume:
//! a full copy is the sound answer when the record would be too large.

use std::collections::HashMap;
use std::sync::Weak;

use parking_lot::Mutex;

use crate::format::{Entry, UnsettledImage};
use crate::replication::{BlockSet, Extent};
use crate::units::{VolumeId, BLOCK_SIZE};

/// Most runs a volume's carried set keeps before it becomes the whole volume.
pub const CARRIED_EXTENTS_MAX: usize = 16384;

/// Replication state that knows which of its writes are not yet on every
/// member; asked at each checkpoint.
pub trait UnsettledSource: Send + Sync {
    /// Calls `report` with each volume and extent (in the volume's sectors)
    /// this node wrote, or may yet write, that some member may lack.
    fn report_unsettled(&self, report: &mut dyn FnMut(VolumeId, Extent));
}

/// One volume's carried set.
#[derive(Clone, Debug)]
enum Carried {
    Blocks(BlockSet),
    WholeVolume,
}

impl Carried {
    fn add(&mut self, first_block: u64, blocks: u64) {
        if let Carried::Blocks(set) = self {
            set.insert_range(first_block, blocks);
        }
    }

    /// The set's runs; `None` for the whole volume, or when it has more than
    /// [`CARRIED_EXTENTS_MAX`] runs.
    fn runs(&self) -> Option<Vec<Extent>> {
        match self {
            Carried::WholeVolume => None,
            Carried::Blocks(set) => {
                let runs = set.extents(u32::MAX);
                (runs.len() <= CARRIED_EXTENTS_MAX).then_some(runs)
            }
        }
    }

    fn image(&self, volume: VolumeId) -> UnsettledImage {
        let runs = self.runs();
        UnsettledImage {
            volume: volume.0,
            whole_volume: runs.is_none(),
            extents: runs
                .unwrap_or_default()
                .into_iter()
                .map(|e| (e.lba, e.blocks))
                .collect(),
        }
    }
}

/// The carried sets and the registered sources of one engine.
#[derive(Default)]
pub(crate) struct UnsettledLedger {
    carried: Mutex<HashMap<VolumeId, Carried>>,
    sources: Mutex<Vec<Weak<dyn UnsettledSource>>>,
}

impl UnsettledLedger {
    /// A ledger starting from a checkpoint's record.
    pub fn from_images(images: &[UnsettledImage]) -> UnsettledLedger {
        let ledger = UnsettledLedger::default();
        {
            let mut carried = ledger.carried.lock();
            for image in images {
                let entry = carried
                    .entry(VolumeId(image.volume))
                    .or_insert_with(|| Carried::Blocks(BlockSet::new()));
                if image.whole_volume {
                    *entry = Carried::WholeVolume;
                }
                for &(lba, blocks) in &image.extents {
                    entry.add(lba, u64::from(blocks));
                }
            }
        }
        ledger
    }

    /// Adds what a replayed batch's entries wrote (one lock per batch).
    pub fn note_replayed(&self, entries: &[Entry]) {
        let mut carried = self.carried.lock();
        for entry in entries {
            let (volume, first, blocks) = match entry {
                Entry::Write {
                    volume, lba, crcs, ..
                }
                | Entry::WritePacked {
                    volume, lba, crcs, ..
                } => (*volume, *lba, crcs.len() as u64),
                Entry::Trim {
                    volume,
                    lba,
                    blocks,
                } => (*volume, *lba, *blocks),
                Entry::Revert { volume, .. } => {
                    carried.insert(VolumeId(*volume), Carried::WholeVolume);
                    continue;
                }
                Entry::DeleteVolume { volume } => {
                    carried.remove(&VolumeId(*volume));
                    continue;
                }
                _ => continue,
            };
            carried
                .entry(VolumeId(volume))
                .or_insert_with(|| Carried::Blocks(BlockSet::new()))
                .add(first, blocks);
        }
    }

    /// Adds `extents` of a volume with `sector_bytes` sectors.
    pub fn carry(&self, volume: VolumeId, sector_bytes: u32, extents: &[Extent]) {
        let mut carried = self.carried.lock();
        let set = carried
            .entry(volume)
            .or_insert_with(|| Carried::Blocks(BlockSet::new()));
        for extent in extents {
            let (first, blocks) = to_engine_blocks(*extent, sector_bytes);
            set.add(first, blocks);
        }
    }

    /// The carried set of `volume` in its sectors (every sector of the volume
    /// when the set is the whole volume or too scattered to list).
    pub fn carried(&self, volume: VolumeId, sector_bytes: u32, size_bytes: u64) -> Vec<Extent> {
        let per_block = u64::from(BLOCK_SIZE as u32 / sector_bytes.max(1));
        let volume_sectors = size_bytes / u64::from(sector_bytes.max(1));
        let Some(set) = self.carried.lock().get(&volume).cloned() else {
            return Vec::new();
        };
        match set.runs() {
            None => BlockSet::full(volume_sectors).extents(u32::MAX),
            Some(runs) => {
                let mut sectors = BlockSet::new();
                for extent in runs {
                    let first = extent.lba * per_block;
                    let end =
                        ((extent.lba + u64::from(extent.blocks)) * per_block).min(volume_sectors);
                    sectors.insert_range(first, end.saturating_sub(first));
                }
                sectors.extents(u32::MAX)
            }
        }
    }

    /// Drops the carried set of `volume` (every member agrees on it now).
    pub fn forget(&self, volume: VolumeId) {
        self.carried.lock().remove(&volume);
    }

    /// Registers a source asked at every checkpoint until it is dropped.
    pub fn register(&self, source: Weak<dyn UnsettledSource>) {
        let mut sources = self.sources.lock();
        sources.retain(|s| s.strong_count() > 0);
        sources.push(source);
    }

    /// What a checkpoint records: the carried sets and every live source's
    /// report, for the volumes `sector_bytes_of` knows (others were deleted).
    pub fn checkpoint_images(
        &self,
        sector_bytes_of: impl Fn(VolumeId) -> Option<u32>,
    ) -> Vec<UnsettledImage> {
        let mut all: HashMap<VolumeId, Carried> = self.carried.lock().clone();
        let sources: Vec<_> = self
            .sources
            .lock()
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for source in sources {
            source.report_unsettled(&mut |volume, extent| {
                let Some(sector_bytes) = sector_bytes_of(volume) else {
                    return;
                };
                let (first, blocks) = to_engine_blocks(extent, sector_bytes);
                all.entry(volume)
                    .or_insert_with(|| Carried::Blocks(BlockSet::new()))
                    .add(first, blocks);
            });
        }
        let mut images: Vec<UnsettledImage> = all
            .iter()
            .filter(|(volume, set)| {
                sector_bytes_of(**volume).is_some()
                    && !matches!(set, Carried::Blocks(b) if b.is_empty())
            })
            .map(|(volume, set)| set.image(*volume))
            .collect();
        images.sort_by_key(|i| i.volume);
        images
    }
}

/// The engine blocks an extent of sectors touches: (first block, count).
fn to_engine_blocks(extent: Extent, sector_bytes: u32) -> (u64, u64) {
    let per_block = u64::from(BLOCK_SIZE as u32 / sector_bytes.max(1)).max(1);
    let first = extent.lba / per_block;
    let end = (extent.lba + u64::from(extent.blocks)).div_ceil(per_block);
    (first, end - first)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    struct Fixed(Vec<(VolumeId, Extent)>);

    impl UnsettledSource for Fixed {
        fn report_unsettled(&self, report: &mut dyn FnMut(VolumeId, Extent)) {
            for (volume, extent) in &self.0 {
                report(*volume, *extent);
            }
        }
    }

    fn ext(lba: u64, blocks: u32) -> Extent {
        Extent { lba, blocks }
    }

    #[test]
    fn sectors_round_out_to_the_engine_blocks_they_touch() {
        assert_eq!(to_engine_blocks(ext(7, 2), 512), (0, 2));
        assert_eq!(to_engine_blocks(ext(8, 8), 512), (1, 1));
        assert_eq!(to_engine_blocks(ext(3, 1), 4096), (3, 1));
    }

    #[test]
    fn replayed_writes_and_trims_are_carried_and_a_delete_forgets_them() {
        let ledger = UnsettledLedger::default();
        ledger.note_replayed(&[Entry::Write {
            volume: 1,
            lba: 10,
            data_offset: 0,
            crcs: vec![0; 3],
        }]);
        ledger.note_replayed(&[Entry::Trim {
            volume: 1,
            lba: 100,
            blocks: 2,
        }]);
        ledger.note_replayed(&[Entry::Trim {
            volume: 2,
            lba: 0,
            blocks: 1,
        }]);
        assert_eq!(
            ledger.carried(VolumeId(1), 4096, 1 << 20),
            vec![ext(10, 3), ext(100, 2)]
        );
        assert_eq!(
            ledger.carried(VolumeId(1), 512, 1 << 20),
            vec![ext(80, 24), ext(800, 16)]
        );
        ledger.note_replayed(&[Entry::DeleteVolume { volume: 2 }]);
        assert!(ledger.carried(VolumeId(2), 4096, 1 << 20).is_empty());
    }

    #[test]
    fn a_rollback_or_too_many_runs_carry_the_whole_volume() {
        let ledger = UnsettledLedger::default();
        ledger.note_replayed(&[Entry::Revert {
            volume: 1,
            snapshot: 2,
        }]);
        assert_eq!(ledger.carried(VolumeId(1), 4096, 8 * 4096), vec![ext(0, 8)]);
        let scattered: Vec<Extent> = (0..CARRIED_EXTENTS_MAX as u64 + 1)
            .map(|i| ext(i * 2, 1))
            .collect();
        ledger.carry(VolumeId(3), 4096, &scattered);
        let images = ledger.checkpoint_images(|_| Some(4096));
        assert!(images
            .iter()
            .any(|i| i.volume == 3 && i.whole_volume && i.extents.is_empty()));
    }

    #[test]
    fn a_checkpoint_records_the_sources_and_recovery_reads_it_back() {
        let ledger = UnsettledLedger::default();
        ledger.carry(VolumeId(1), 512, &[ext(0, 8)]);
        let source: Arc<dyn UnsettledSource> = Arc::new(Fixed(vec![
            (VolumeId(1), ext(64, 8)),
            (VolumeId(9), ext(0, 1)),
        ]));
        ledger.register(Arc::downgrade(&source));
        // Volume 9 no longer exists: nothing is recorded for it.
        let images = ledger.checkpoint_images(|v| (v == VolumeId(1)).then_some(512));
        assert_eq!(images.len(), 1);
        assert_eq!(images[0].extents, vec![(0, 1), (8, 1)]);
        let recovered = UnsettledLedger::from_images(&images);
        assert_eq!(
            recovered.carried(VolumeId(1), 512, 1 << 20),
            vec![ext(0, 8), ext(64, 8)]
        );
        // A dropped source is asked no more.
        drop(source);
        let images = ledger.checkpoint_images(|_| Some(512));
        assert_eq!(images[0].extents, vec![(0, 1)]);
        recovered.forget(VolumeId(1));
        assert!(recovered.carried(VolumeId(1), 512, 1 << 20).is_empty());
    }
}
