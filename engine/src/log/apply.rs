//! Applying a batch to the in-memory state: the index, the volume catalog and the
//! segments' live counts. The live write path and recovery replay share this code,
//! so a replayed log always rebuilds exactly the state that was acknowledged.

use std::sync::Arc;

use super::segments::SegmentTable;
use super::LogState;
use crate::core::Core;
use crate::format::{BatchHeader, Entry};
use crate::index::Mapping;
use crate::units::{PhysBlock, SectorSize, SegmentId, VolumeId};
use crate::volume::{Volume, VolumeState};

/// Applies every record of `header`, a batch stored at `block` of `segment`.
pub(crate) fn apply_batch(
    core: &Core,
    log: &mut LogState,
    header: &BatchHeader,
    segment: SegmentId,
    block: u32,
) {
    let data_start = block + u32::from(header.header_blocks);
    let covered = log.covered_seq;
    let segments = &mut log.segments;
    for entry in &header.entries {
        match entry {
            Entry::Write {
                volume,
                lba,
                data_offset,
                crcs,
            } => {
                let Some(volume) = core.catalog.read().get(VolumeId(*volume)) else {
                    continue;
                };
                let mut map = volume.map.write();
                for (i, &crc) in crcs.iter().enumerate() {
                    let location = core.pool.phys(segment, data_start + data_offset + i as u32);
                    segments.get_mut(segment).live_blocks += 1;
                    if let Some(old) = map.insert(lba + i as u64, Mapping { location, crc }) {
                        release(core, segments, old, covered);
                    }
                }
            }
            Entry::Trim {
                volume,
                lba,
                blocks,
            } => {
                let Some(volume) = core.catalog.read().get(VolumeId(*volume)) else {
                    continue;
                };
                volume
                    .map
                    .write()
                    .remove_range(*lba, *blocks, |old| release(core, segments, old, covered));
            }
            Entry::CreateVolume {
                volume,
                size_bytes,
                sector_bytes,
                name,
            } => {
                let mut catalog = core.catalog.write();
                match catalog.get(VolumeId(*volume)) {
                    Some(existing) => existing.set_state(VolumeState::Live),
                    None => {
                        let sector =
                            SectorSize::from_bytes(*sector_bytes).unwrap_or(SectorSize::B4096);
                        let created = Volume::new(
                            VolumeId(*volume),
                            name.clone(),
                            *size_bytes,
                            sector,
                            VolumeState::Live,
                        );
                        catalog.insert(Arc::new(created));
                    }
                }
            }
            Entry::DeleteVolume { volume } => {
                let removed = core.catalog.write().remove(VolumeId(*volume));
                if let Some(volume) = removed {
                    volume
                        .map
                        .write()
                        .remove_range(0, u64::MAX, |old| release(core, segments, old, covered));
                }
            }
            Entry::ResizeVolume { volume, size_bytes } => {
                if let Some(volume) = core.catalog.read().get(VolumeId(*volume)) {
                    volume
                        .size_bytes
                        .store(*size_bytes, std::sync::atomic::Ordering::Release);
                }
            }
        }
    }
    log.blocks_since_checkpoint += u64::from(header.total_blocks());
}

fn release(core: &Core, segments: &mut SegmentTable, old: PhysBlock, covered_seq: u64) {
    let (segment, _) = core.pool.split(old);
    let info = segments.get_mut(segment);
    debug_assert!(
        info.live_blocks > 0,
        "releasing a block of a segment with no live blocks"
    );
    info.live_blocks = info.live_blocks.saturating_sub(1);
    if info.live_blocks == 0 {
        segments.free_if_dead(segment, covered_seq);
    }
}
