//! Formatting and opening a pool. Open = superblocks -> newest valid checkpoint
//! root -> checkpoint body -> replay of the log batches that follow it (same epoch,
//! consecutive sequence numbers, intact headers; damaged data stays damaged) -> a
//! new checkpoint that starts a new epoch.

mod chain;
mod damage;
mod roots;

pub use damage::{DamagedExtent, RecoveryReport};

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::core::{Catalog, Core, EngineConfig};
use crate::error::OpenError;
use crate::format::{
    repair_one_bit_against, CheckpointBody, CheckpointRoot, DecodeError, NO_SEGMENT,
};
use crate::index::{set_owners, Chunk, RefCounts, VolumeMap};
use crate::io::{flush_blocking, read_blocking, write_blocking, AlignedBuf, DeviceRef};
use crate::log::segments::{BatchPlace, SegmentPins, SegmentState, SegmentTable};
use crate::log::{apply_batch, LogState};
use crate::pool::{Pool, ROOT_MIRRORS, ROOT_SLOTS, SUPERBLOCK_COPY};
use crate::units::{SectorSize, SegmentId, VolumeId, BLOCK_SIZE};
use crate::unsettled::UnsettledLedger;
use crate::volume::{Volume, VolumeShape, VolumeState};

/// Makes `devices` a new, empty pool.
pub(crate) fn format(
    devices: Vec<DeviceRef>,
    config: &EngineConfig,
    uuid: [u8; 16],
) -> Result<(), OpenError> {
    let pool = Pool::format(devices, config.blocks_per_segment, uuid)?;
    let body = CheckpointBody {
        next_volume_id: 1,
        instances: Vec::new(),
        volumes: Vec::new(),
        unsettled: Vec::new(),
    }
    .encode();
    let body_segment = SegmentId(0);
    let (device, offset) = pool.locate(body_segment, 0);
    let mut buf = AlignedBuf::zeroed(body.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE);
    buf.as_mut_slice()[..body.len()].copy_from_slice(&body);
    write_blocking(device, offset, buf)?;
    let root = CheckpointRoot {
        pool_uuid: uuid,
        generation: 1,
        epoch: 1,
        replay_seq: 1,
        replay_segment: NO_SEGMENT,
        replay_block: 0,
        collector_segment: NO_SEGMENT,
        collector_block: 0,
        body_len: body.len() as u64,
        body_crc: crc32c::crc32c(&body),
        body_segments: vec![body_segment.0],
    };
    // The other slot may hold a root of an earlier pool on this device: zero it.
    for offset in [ROOT_SLOTS[0], ROOT_MIRRORS[0]] {
        write_blocking(pool.root_device(), offset, AlignedBuf::zeroed(BLOCK_SIZE))?;
    }
    for offset in [ROOT_SLOTS[1], ROOT_MIRRORS[1]] {
        write_blocking(
            pool.root_device(),
            offset,
            AlignedBuf::copy_from(&root.encode()),
        )?;
    }
    for device in &pool.devices {
        flush_blocking(device.as_ref())?;
    }
    Ok(())
}

/// Opens a formatted pool, recovering its state. The returned core has not yet
/// written its opening checkpoint; the caller does that once the checkpointer runs.
pub(crate) fn open(
    devices: Vec<DeviceRef>,
    config: EngineConfig,
    checkpoint_requests: crossbeam_channel::Sender<()>,
    collector_wake: crossbeam_channel::Sender<()>,
) -> Result<(Arc<Core>, RecoveryReport), OpenError> {
    let pool = Pool::load(devices)?;
    let chosen = roots::choose_root(&pool)?;
    let root = chosen.root;
    let body = read_body(&pool, &root)?;
    let pins = Arc::new(SegmentPins::new(pool.segment_count()));
    let mut segments =
        SegmentTable::new(pool.segment_count(), pool.blocks_per_segment, pins.clone());
    // `read_body` has checked that every body segment lies inside the pool.
    for &segment in &root.body_segments {
        segments.get_mut(SegmentId(segment)).state = SegmentState::CheckpointBody;
    }
    let catalog = rebuild_catalog(&pool, &body, &mut segments)?;
    let batches = chain::find_replay_chain(&pool, &root, &segments)?;
    let next_seq = root.replay_seq + batches.len() as u64;
    let mut log = LogState::new(
        segments,
        root.replay_seq,
        root.generation,
        root.body_segments.iter().map(|&s| SegmentId(s)).collect(),
    );
    log.covered_seq = root.replay_seq;
    let live_blocks = log.segments.live_counter();
    let segment_count = u64::from(pool.segment_count());
    let checkpoint_max =
        crate::core::checkpoint_segments_max(segment_count, pool.blocks_per_segment);
    let live_limit_blocks = crate::core::live_limit_blocks(
        segment_count,
        pool.blocks_per_segment,
        checkpoint_max,
        checkpoint_max,
    );
    let core = Arc::new(Core {
        pool,
        catalog: RwLock::new(catalog),
        log: Mutex::new(log),
        pins,
        fenced: AtomicBool::new(false),
        config,
        epoch: root.epoch + 1,
        checkpoint_gate: Mutex::new(()),
        checkpoint_requests,
        collector_wake,
        collector_gate: Mutex::new(()),
        freed_generation: AtomicU64::new(0),
        collector_stalled_at: AtomicU64::new(u64::MAX),
        counters: Default::default(),
        live_blocks,
        live_limit_blocks,
        unsettled: UnsettledLedger::from_images(&body.unsettled),
    });
    let mut report = RecoveryReport {
        damaged_root_copies: chosen.damaged_copies,
        ..RecoveryReport::default()
    };
    {
        let mut log = core.log.lock();
        for link in batches {
            report.repaired_headers += u64::from(link.repaired);
            let header = damage::contain(
                &core,
                link.header,
                link.segment,
                link.block,
                &link.damaged_entries,
                &mut report,
            )?;
            let info = log.segments.get_mut(link.segment);
            info.state = SegmentState::Sealed;
            info.max_seq = header.seq;
            log.segments.note_batch(
                link.segment,
                BatchPlace {
                    block: link.block,
                    header_blocks: header.header_blocks,
                },
            );
            core.unsettled.note_replayed(&header.entries);
            apply_batch(&core, &mut log, &header, link.segment, link.block);
            log.applied_seq = header.seq;
        }
        log.next_seq = next_seq;
        let applied = log.applied_seq;
        log.segments.queue_dead_sealed(applied);
    }
    // Replay applied old writes through the same code as new ones: the
    // counts of what was written since open start from here.
    core.counters.reset();
    for volume in core.catalog.read().all() {
        volume.writes.reset();
    }
    tracing::info!(
        replayed_batches = next_seq - root.replay_seq,
        volumes = core.catalog.read().volume_count(),
        epoch = core.epoch,
        "pool recovered"
    );
    Ok((core, report))
}

fn corrupt(what: &'static str, source: DecodeError) -> OpenError {
    OpenError::Corrupt { what, source }
}

/// Reads, checks (repairing one flipped bit) and decodes the body `root` names.
fn read_body(pool: &Pool, root: &CheckpointRoot) -> Result<CheckpointBody, OpenError> {
    let mut bytes = read_body_bytes(pool, root)?;
    let computed = crc32c::crc32c(&bytes);
    if computed != root.body_crc && repair_one_bit_against(&mut bytes, root.body_crc) {
        tracing::warn!(
            generation = root.generation,
            "repaired one flipped bit in the checkpoint body"
        );
    } else if computed != root.body_crc {
        return Err(corrupt(
            "checkpoint body",
            DecodeError::Checksum {
                stored: root.body_crc,
                computed,
            },
        ));
    }
    CheckpointBody::decode(&bytes).map_err(|e| corrupt("checkpoint body", e))
}

/// The body's bytes as stored, unchecked.
fn read_body_bytes(pool: &Pool, root: &CheckpointRoot) -> Result<Vec<u8>, OpenError> {
    let segment_bytes = pool.segment_bytes();
    if root.body_len > segment_bytes * root.body_segments.len() as u64 {
        return Err(corrupt(
            "checkpoint root",
            DecodeError::Invalid {
                field: "body_len",
                value: root.body_len,
            },
        ));
    }
    let mut bytes = Vec::with_capacity(root.body_len as usize);
    for &segment in &root.body_segments {
        if segment >= pool.segment_count() {
            return Err(corrupt(
                "checkpoint root",
                DecodeError::Invalid {
                    field: "body_segment",
                    value: segment.into(),
                },
            ));
        }
        let want = (root.body_len - bytes.len() as u64).min(segment_bytes) as usize;
        let (device, offset) = pool.locate(SegmentId(segment), 0);
        let buf = read_blocking(device, offset, want.div_ceil(BLOCK_SIZE) * BLOCK_SIZE)?;
        bytes.extend_from_slice(&buf.as_slice()[..want]);
    }
    Ok(bytes)
}

fn rebuild_catalog(
    pool: &Pool,
    body: &CheckpointBody,
    segments: &mut SegmentTable,
) -> Result<Catalog, OpenError> {
    let invalid = |field: &'static str, value: u64| {
        corrupt("checkpoint body", DecodeError::Invalid { field, value })
    };
    let mut instances = Vec::with_capacity(body.instances.len());
    for (number, entries) in body.instances.iter().enumerate() {
        let chunk =
            Chunk::from_entries(entries).ok_or_else(|| invalid("chunk_instance", number as u64))?;
        instances.push(Arc::new(chunk));
    }
    let mut owners = vec![0u32; instances.len()];
    let mut catalog = Catalog::default();
    for image in &body.volumes {
        let sector = SectorSize::from_bytes(image.sector_bytes)
            .ok_or_else(|| invalid("sector_bytes", image.sector_bytes.into()))?;
        let mut map = VolumeMap::new();
        for &(index, number) in &image.chunks {
            let chunk = instances
                .get(number as usize)
                .ok_or_else(|| invalid("chunk_instance", number.into()))?;
            owners[number as usize] += 1;
            map.attach(index, chunk.clone());
        }
        let shape = VolumeShape {
            id: VolumeId(image.id),
            name: image.name.clone(),
            size_bytes: image.size_bytes,
            sector,
            kind: image.kind,
            flags: image.flags,
            lineage: image.lineage,
            parent: (image.parent != 0).then_some(VolumeId(image.parent)),
        };
        catalog.insert(Arc::new(Volume::new(shape, map, VolumeState::Live)));
    }
    let mut refs = segments.refs_for(0);
    for (chunk, &count) in instances.iter().zip(&owners) {
        set_owners(chunk, count);
        if count == 0 {
            continue;
        }
        for (_, mapping) in chunk.mapped() {
            for block in mapping.blocks() {
                if !pool.contains(block) {
                    return Err(invalid("location", block.0));
                }
                refs.acquire(block);
            }
        }
    }
    for info in segments.info.iter_mut().filter(|i| i.live_blocks > 0) {
        info.state = SegmentState::Sealed;
    }
    catalog.next_volume_id = catalog.next_volume_id.max(body.next_volume_id);
    Ok(catalog)
}

/// The root recovery would start from (tests that look at the log behind it).
#[cfg(test)]
pub(crate) fn newest_root(pool: &Pool) -> Result<CheckpointRoot, OpenError> {
    Ok(roots::choose_root(pool)?.root)
}

/// Counts damaged pool metadata: superblocks and their copies on every device,
/// root copies, and the newest checkpoint body (a read error counts as
/// damage). Callers hold the checkpoint gate, so no root is being written.
pub(crate) fn damaged_metadata(pool: &Pool) -> u32 {
    let mut damaged = 0;
    for device in &pool.devices {
        for offset in [0, SUPERBLOCK_COPY] {
            let intact = read_blocking(device.as_ref(), offset, BLOCK_SIZE).is_ok_and(|block| {
                crate::format::Superblock::decode(block.as_slice())
                    .is_ok_and(|sb| sb.pool_uuid == pool.uuid)
            });
            if !intact {
                damaged += 1;
            }
        }
    }
    match roots::inspect(pool) {
        Ok((copies, newest)) => {
            damaged += copies;
            let body_intact = newest.is_some_and(|root| {
                read_body_bytes(pool, &root)
                    .is_ok_and(|bytes| crc32c::crc32c(&bytes) == root.body_crc)
            });
            if !body_intact {
                damaged += 1;
            }
        }
        Err(_) => damaged += 1,
    }
    damaged
}

/// True if any of `devices` may carry a Keel pool: its first block starts with
/// the superblock magic (of any version, even damaged) or cannot be read. Only
/// devices for which this is false are ever formatted as blank.
pub(crate) fn any_formatted(devices: &[DeviceRef]) -> bool {
    devices.iter().any(|device| {
        [0, SUPERBLOCK_COPY].into_iter().any(|offset| {
            read_blocking(device.as_ref(), offset, BLOCK_SIZE).map_or(true, |block| {
                crate::format::Superblock::has_magic(block.as_slice())
            })
        })
    })
}
