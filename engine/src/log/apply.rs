//! Applying a batch to the in-memory state: the index, the volume catalog and the
//! blocks' reference counts. The live write path and recovery replay share this
//! code, so a replayed log always rebuilds exactly the state that was acknowledged.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::LogState;
use crate::core::{Catalog, Core};
use crate::format::{BatchHeader, Entry, VolumeKind};
use crate::index::{Mapping, Packing, RefCounts, RelocationMemo, VolumeMap};
use crate::units::{PhysBlock, SectorSize, SegmentId, VolumeId};
use crate::volume::{Volume, VolumeShape, VolumeState};

/// Applies every record of `header`, a batch stored at `block` of `segment`.
pub(crate) fn apply_batch(
    core: &Core,
    log: &mut LogState,
    header: &BatchHeader,
    segment: SegmentId,
    block: u32,
) {
    let data_start = block + u32::from(header.header_blocks);
    apply_entries(core, log, header.seq, &header.entries, segment, data_start);
    log.blocks_since_checkpoint += u64::from(header.total_blocks());
}

/// Applies `entries` of batch `seq`, whose data area starts at `data_start`
/// of `segment`: a whole batch's, or (for the open batch) those its newest
/// header image added.
pub(crate) fn apply_entries(
    core: &Core,
    log: &mut LogState,
    seq: u64,
    entries: &[Entry],
    segment: SegmentId,
    data_start: u32,
) {
    let mut refs = log.segments.refs_for(seq);
    let find = |id: u64| core.catalog.read().get(VolumeId(id));
    for entry in entries {
        match entry {
            Entry::Write {
                volume,
                lba,
                data_offset,
                crcs,
            } => {
                core.counters
                    .foreground_blocks
                    .fetch_add(crcs.len() as u64, Ordering::Relaxed);
                let Some(volume) = find(*volume) else {
                    continue;
                };
                volume
                    .writes
                    .count_host(crcs.len() as u64, crcs.len() as u64);
                let mut map = volume.map.write();
                for (i, &crc) in crcs.iter().enumerate() {
                    let location = core.pool.phys(segment, data_start + data_offset + i as u32);
                    map.insert(lba + i as u64, Mapping::raw(location, crc), &mut refs);
                }
            }
            Entry::Trim {
                volume,
                lba,
                blocks,
            } => {
                let Some(volume) = find(*volume) else {
                    continue;
                };
                volume.map.write().remove_range(*lba, *blocks, &mut refs);
            }
            Entry::CreateVolume { .. } => {
                if let Some(shape) = created_shape(entry, None) {
                    materialize(&mut core.catalog.write(), shape, VolumeMap::new());
                }
            }
            Entry::CreateSnapshot { source, .. } | Entry::CreateClone { source, .. } => {
                let Some(source) = find(*source) else {
                    continue;
                };
                let Some(shape) = created_shape(entry, Some(&source)) else {
                    continue;
                };
                let map = source.map.read().share();
                materialize(&mut core.catalog.write(), shape, map);
            }
            Entry::Revert { volume, snapshot } => {
                let (Some(volume), Some(snapshot)) = (find(*volume), find(*snapshot)) else {
                    continue;
                };
                let shared = snapshot.map.read().share();
                let mut old = std::mem::replace(&mut *volume.map.write(), shared);
                old.release_all(&mut refs);
            }
            Entry::Relocate {
                lineage,
                lba,
                old,
                data_offset,
                crc,
            } => {
                core.counters
                    .relocated_blocks
                    .fetch_add(1, Ordering::Relaxed);
                let new = Mapping::raw(core.pool.phys(segment, data_start + data_offset), *crc);
                let old = Mapping::decode(*old, *crc);
                let maps = core.catalog.read().lineage(*lineage);
                count_relocated(&maps, *lineage, 1);
                relocate_in(&maps, *lba, old, new, &mut refs);
            }
            Entry::WritePacked {
                volume,
                data_offset,
                units,
                crcs,
                ..
            } => {
                let counters = &core.counters;
                counters
                    .foreground_blocks
                    .fetch_add(crcs.len() as u64, Ordering::Relaxed);
                for &(logical, stored) in units {
                    counters
                        .packed_logical_blocks
                        .fetch_add(u64::from(logical), Ordering::Relaxed);
                    counters
                        .packed_stored_blocks
                        .fetch_add(u64::from(stored), Ordering::Relaxed);
                }
                let Some(volume) = find(*volume) else {
                    continue;
                };
                let stored: u64 = units.iter().map(|&(_, stored)| u64::from(stored)).sum();
                volume.writes.count_host(crcs.len() as u64, stored);
                let mut map = volume.map.write();
                for unit in entry.packed_units() {
                    let at = data_start + data_offset + unit.stored_at;
                    let unit_location = core.pool.phys(segment, at);
                    for (index, &crc) in (0..).zip(unit.crcs) {
                        let mapping = if unit.stored < unit.logical {
                            Mapping {
                                location: unit_location,
                                crc,
                                packing: Packing {
                                    unit_blocks: unit.stored,
                                    index,
                                },
                            }
                        } else {
                            Mapping::raw(core.pool.phys(segment, at + u32::from(index)), crc)
                        };
                        map.insert(unit.lba + u64::from(index), mapping, &mut refs);
                    }
                }
            }
            Entry::RelocateUnit {
                lineage,
                old,
                data_offset,
                stored_crcs,
                members,
            } => {
                core.counters
                    .relocated_blocks
                    .fetch_add(stored_crcs.len() as u64, Ordering::Relaxed);
                let unit_blocks = stored_crcs.len() as u8;
                let new_location = core.pool.phys(segment, data_start + data_offset);
                let maps = core.catalog.read().lineage(*lineage);
                count_relocated(&maps, *lineage, stored_crcs.len() as u64);
                for &(target, index, crc) in members {
                    let old = Mapping {
                        location: PhysBlock(*old),
                        crc,
                        packing: Packing { unit_blocks, index },
                    };
                    let new = Mapping {
                        location: new_location,
                        ..old
                    };
                    relocate_in(&maps, target, old, new, &mut refs);
                }
            }
            Entry::DeleteVolume { volume } => {
                let removed = core.catalog.write().remove(VolumeId(*volume));
                if let Some(volume) = removed {
                    volume.map.write().release_all(&mut refs);
                }
            }
            Entry::ResizeVolume { volume, size_bytes } => {
                if let Some(volume) = find(*volume) {
                    volume.size_bytes.store(*size_bytes, Ordering::Release);
                }
            }
            Entry::SetFlags { volume, flags } => {
                if let Some(volume) = find(*volume) {
                    volume.flags.store(*flags, Ordering::Release);
                }
            }
        }
    }
    if refs.freed_any() {
        core.freed_generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Counts `blocks` copied by the collector against the lineage's own volume
/// (the one that started it), or, once that is gone, its first remaining map.
fn count_relocated(maps: &[Arc<Volume>], lineage: u64, blocks: u64) {
    let owner = maps
        .iter()
        .find(|v| v.id.0 == lineage)
        .or_else(|| maps.first());
    if let Some(owner) = owner {
        owner
            .writes
            .data_blocks
            .fetch_add(blocks, Ordering::Relaxed);
    }
}

/// Offers one moved block to every map of its lineage, sharing one memo so maps
/// that own the same chunk instance get the same replacement.
fn relocate_in(
    maps: &[Arc<Volume>],
    lba: u64,
    old: Mapping,
    new: Mapping,
    refs: &mut impl RefCounts,
) {
    let mut memo = RelocationMemo::default();
    for member in maps {
        member.map.write().relocate(lba, old, new, &mut memo, refs);
    }
}

/// The identity and shape of the volume, snapshot or clone a create record makes;
/// `source` is the record's source map (snapshots and clones). `None` for other
/// records, or a snapshot or clone without its source. The engine's placeholder
/// and replay both derive the shape here, so they cannot disagree.
pub(crate) fn created_shape(entry: &Entry, source: Option<&Volume>) -> Option<VolumeShape> {
    // A writable volume: a new one starts its own lineage (and ignores any
    // source), a clone joins its snapshot's.
    let (volume, name, size_bytes, sector_bytes, flags, source) = match (entry, source) {
        (
            Entry::CreateVolume {
                volume,
                size_bytes,
                sector_bytes,
                flags,
                name,
            },
            _,
        ) => (volume, name, size_bytes, sector_bytes, flags, None),
        (
            Entry::CreateClone {
                volume,
                size_bytes,
                sector_bytes,
                flags,
                name,
                ..
            },
            Some(source),
        ) => (volume, name, size_bytes, sector_bytes, flags, Some(source)),
        (Entry::CreateSnapshot { volume, name, .. }, Some(source)) => {
            return Some(VolumeShape {
                id: VolumeId(*volume),
                name: name.clone(),
                size_bytes: source.size(),
                sector: source.sector,
                kind: VolumeKind::Snapshot,
                flags: 0,
                lineage: source.lineage,
                parent: Some(source.id),
            })
        }
        _ => return None,
    };
    Some(VolumeShape {
        id: VolumeId(*volume),
        name: name.clone(),
        size_bytes: *size_bytes,
        sector: SectorSize::from_bytes(*sector_bytes).unwrap_or(SectorSize::B4096),
        kind: VolumeKind::Volume,
        flags: *flags,
        lineage: source.map_or(*volume, |s| s.lineage),
        parent: source.map(|s| s.id),
    })
}

/// Makes a created volume or snapshot live with `map`: the engine put a
/// placeholder in the catalog when it logged the record; replay finds none.
fn materialize(catalog: &mut Catalog, shape: VolumeShape, map: VolumeMap) {
    match catalog.get(shape.id) {
        Some(existing) => {
            *existing.map.write() = map;
            existing.set_state(VolumeState::Live);
        }
        None => catalog.insert(Arc::new(Volume::new(shape, map, VolumeState::Live))),
    }
}
