//! Containing damage found in replayed batches: a damaged write stays mapped
//! with the checksum of what was acknowledged, so reads of exactly its damaged
//! blocks fail as media errors; a damaged copy made by garbage collection is
//! dropped when the original it copied is still intact.

use crate::core::Core;
use crate::error::OpenError;
use crate::format::{BatchHeader, Entry};
use crate::io::read_blocking;
use crate::units::{PhysBlock, SegmentId, VolumeId, BLOCK_SIZE};

use super::chain::DamagedEntry;

/// What recovery found damaged when the pool was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Log batches replayed with damaged data.
    pub damaged_batches: u64,
    /// Volume blocks whose data in the log is damaged: they read as media
    /// errors until rewritten.
    pub damaged_extents: Vec<DamagedExtent>,
    /// Copies of garbage-collected blocks found damaged whose originals were
    /// intact and are used instead.
    pub relocations_dropped: u64,
    /// Checkpoint root copies found damaged (each root is stored twice).
    pub damaged_root_copies: u32,
    /// Log batch headers with one flipped bit, repaired from their checksum.
    pub repaired_headers: u64,
}

/// A run of damaged volume blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DamagedExtent {
    /// The volume written, or for a block moved by garbage collection the
    /// lineage (the id of the volume that started it) whose maps hold it.
    pub volume: VolumeId,
    /// First damaged 4 KiB block.
    pub lba: u64,
    /// Damaged blocks from `lba` on.
    pub blocks: u64,
    /// The log batch that holds the damaged data.
    pub seq: u64,
}

/// Logs and records the damage in `header` (a batch at `block` of `segment`) and
/// returns the header to apply: without relocations whose originals are intact.
pub(super) fn contain(
    core: &Core,
    mut header: BatchHeader,
    segment: SegmentId,
    block: u32,
    damaged: &[DamagedEntry],
    report: &mut RecoveryReport,
) -> Result<BatchHeader, OpenError> {
    if damaged.is_empty() {
        return Ok(header);
    }
    report.damaged_batches += 1;
    let mut dropped = Vec::new();
    for entry in damaged {
        let Some(record) = header.entries.get(entry.index) else {
            continue;
        };
        let before = report.damaged_extents.len();
        match record {
            Entry::Write { volume, lba, .. } => {
                for &i in &entry.blocks {
                    push_block(report, VolumeId(*volume), lba + i as u64, header.seq);
                }
            }
            Entry::WritePacked { volume, .. } => {
                for unit in record.packed_units() {
                    let stored_at = unit.stored_at as usize;
                    let stored_range = stored_at..stored_at + usize::from(unit.stored);
                    if entry.blocks.iter().any(|b| stored_range.contains(b)) {
                        report.damaged_extents.push(DamagedExtent {
                            volume: VolumeId(*volume),
                            lba: unit.lba,
                            blocks: u64::from(unit.logical),
                            seq: header.seq,
                        });
                    }
                }
            }
            Entry::Relocate {
                lineage,
                lba,
                old,
                crc,
                ..
            } => {
                if original_intact(core, *old, &[*crc])? {
                    dropped.push(entry.index);
                } else {
                    push_block(report, VolumeId(*lineage), *lba, header.seq);
                }
            }
            Entry::RelocateUnit {
                lineage,
                old,
                stored_crcs,
                members,
                ..
            } => {
                if original_intact(core, *old, stored_crcs)? {
                    dropped.push(entry.index);
                } else {
                    for &(lba, _, _) in members {
                        push_block(report, VolumeId(*lineage), lba, header.seq);
                    }
                }
            }
            _ => {}
        }
        for extent in &report.damaged_extents[before..] {
            tracing::error!(
                seq = header.seq,
                segment = segment.0,
                block,
                volume = %extent.volume,
                lba = extent.lba,
                blocks = extent.blocks,
                "log batch data failed its checksum in the middle of the log; \
                 these blocks read as media errors until rewritten"
            );
        }
    }
    if !dropped.is_empty() {
        tracing::warn!(
            seq = header.seq,
            segment = segment.0,
            copies = dropped.len(),
            "blocks moved by garbage collection were damaged in their new place; \
             their intact originals are kept"
        );
        report.relocations_dropped += dropped.len() as u64;
        let mut index = 0;
        header.entries.retain(|_| {
            let keep = !dropped.contains(&index);
            index += 1;
            keep
        });
    }
    Ok(header)
}

/// Records one damaged block, extending the previous extent when contiguous.
fn push_block(report: &mut RecoveryReport, volume: VolumeId, lba: u64, seq: u64) {
    if let Some(last) = report.damaged_extents.last_mut() {
        if last.volume == volume && last.seq == seq && last.lba + last.blocks == lba {
            last.blocks += 1;
            return;
        }
    }
    report.damaged_extents.push(DamagedExtent {
        volume,
        lba,
        blocks: 1,
        seq,
    });
}

/// Whether the stored blocks at `old` (the location garbage collection copied
/// from) still match `crcs`: then the original may stay mapped.
fn original_intact(core: &Core, old: u64, crcs: &[u32]) -> Result<bool, OpenError> {
    let old = PhysBlock(old);
    if !core.pool.contains(old) {
        return Ok(false);
    }
    let (segment, block) = core.pool.split(old);
    let count = crcs.len() as u32;
    if block
        .checked_add(count)
        .is_none_or(|end| end > core.pool.blocks_per_segment)
    {
        return Ok(false);
    }
    let (device, offset) = core.pool.locate(segment, block);
    let data = read_blocking(device, offset, crcs.len() * BLOCK_SIZE)?;
    Ok(data
        .as_slice()
        .chunks(BLOCK_SIZE)
        .zip(crcs)
        .all(|(block, &crc)| crc32c::crc32c(block) == crc))
}
