//! Writing checkpoints: a consistent copy of every volume map as of the last
//! applied batch is written to free segments, then a root naming it is written to
//! the older of the two root slots. Only after the root is durable are the previous
//! body's segments and the dead log segments it covers freed.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::core::Core;
use crate::error::{CheckpointError, IoError};
use crate::format::{CheckpointBody, CheckpointRoot, UnsettledImage, VolumeImage};
use crate::index::{Chunk, VolumeMap};
use crate::io::{flush_blocking, write_blocking, AlignedBuf};
use crate::log::segments::SegmentState;
use crate::pool::{ROOT_MIRRORS, ROOT_SLOTS};
use crate::units::{SegmentId, VolumeId, BLOCK_SIZE};
use crate::volume::VolumeShape;
use crate::volume::VolumeState;
use std::collections::HashMap;

/// Writes one checkpoint. Blocks on device I/O: never call it from a device
/// completion callback.
pub(crate) fn write_checkpoint(core: &Arc<Core>) -> Result<(), CheckpointError> {
    let _gate = core.checkpoint_gate.lock();
    // The capture must hold no part of an unfinished batch (replay would apply
    // it again from its start): close the log's open batch, wait until it is
    // applied, and keep its successor from applying anything early until the
    // capture is taken.
    let held = EarlyApplyHeld::new(core);
    crate::datapath::completion::wait(|done| {
        crate::log::after_open_batch(core, Box::new(move || done(Ok(()))))
    })?;
    let (body, replay_seq, position) = {
        let mut log = core.log.lock();
        if core.fenced.load(Ordering::Acquire) {
            return Err(IoError::Fenced.into());
        }
        debug_assert!(
            !crate::log::open_batch_applied_early(&log),
            "early applies are held"
        );
        let catalog = core.catalog.read();
        let volumes = catalog
            .all()
            .into_iter()
            .filter(|v| v.state() != VolumeState::Creating)
            .map(|v| (v.shape(), v.map.read().clone()))
            .collect::<Vec<_>>();
        let next_volume_id = catalog.next_volume_id;
        drop(catalog);
        log.checkpoint_running = true;
        log.blocks_since_checkpoint = 0;
        (
            (next_volume_id, volumes),
            log.applied_seq + 1,
            log.replay_positions(),
        )
    };
    drop(held);
    // After the capture: a write the captured maps hold is settled by now or
    // reported (see `crate::unsettled`).
    // The sources take their own locks: the catalog is not held meanwhile.
    let sectors: HashMap<VolumeId, u32> = core
        .catalog
        .read()
        .all()
        .into_iter()
        .filter(|v| !v.is_snapshot())
        .map(|v| (v.id, v.sector.bytes()))
        .collect();
    let unsettled = core
        .unsettled
        .checkpoint_images(|volume| sectors.get(&volume).copied());
    let result = write_body_and_root(core, body, unsettled, replay_seq, position);
    let mut log = core.log.lock();
    log.checkpoint_running = false;
    match result {
        Ok((root, new_segments)) => {
            let old = std::mem::replace(&mut log.body_segments, new_segments);
            for segment in old {
                log.segments.get_mut(segment).state = SegmentState::Free;
            }
            log.root_generation = root.generation;
            log.covered_seq = replay_seq;
            log.checkpoint_stalled = false;
            // The body was flushed after the capture: every batch applied by then is durable.
            log.segments.durable_seq = log.segments.durable_seq.max(replay_seq - 1);
            log.segments.free_dead(replay_seq);
            drop(log);
            crate::log::kick(core);
            Ok(())
        }
        Err((err, allocated)) => {
            for segment in allocated {
                log.segments.get_mut(segment).state = SegmentState::Free;
            }
            if matches!(err, CheckpointError::NoSpace(_)) {
                log.checkpoint_stalled = true;
            }
            drop(log);
            crate::log::kick(core);
            Err(err)
        }
    }
}

/// Holds back the log's open batch from applying entries early while alive.
struct EarlyApplyHeld<'a>(&'a Arc<Core>);

impl<'a> EarlyApplyHeld<'a> {
    fn new(core: &'a Arc<Core>) -> Self {
        crate::log::hold_early_apply(core, true);
        EarlyApplyHeld(core)
    }
}

impl Drop for EarlyApplyHeld<'_> {
    fn drop(&mut self) {
        crate::log::hold_early_apply(self.0, false);
    }
}

type BodyParts = (u64, Vec<(VolumeShape, VolumeMap)>);

/// Blocks a checkpoint writes besides its body: the root slot and its mirror.
const ROOT_COPIES: u64 = 2;

fn write_body_and_root(
    core: &Arc<Core>,
    (next_volume_id, volumes): BodyParts,
    unsettled: Vec<UnsettledImage>,
    replay_seq: u64,
    [(replay_segment, replay_block), (collector_segment, collector_block)]: [(SegmentId, u32); 2],
) -> Result<(CheckpointRoot, Vec<SegmentId>), (CheckpointError, Vec<SegmentId>)> {
    let bytes = encode_body(next_volume_id, &volumes, unsettled);
    drop(volumes);
    let segment_bytes = core.pool.segment_bytes() as usize;
    let needed = bytes.len().div_ceil(segment_bytes);
    if needed > crate::format::ROOT_SEGMENTS_MAX {
        return Err((CheckpointError::TooLarge(bytes.len() as u64), Vec::new()));
    }
    let fence = |err: crate::io::DeviceError| {
        core.fenced.store(true, Ordering::Release);
        tracing::error!(%err, "checkpoint write failed; fencing the engine");
        CheckpointError::Io(IoError::Device(err))
    };
    if core.log.lock().segments.allocatable() < needed {
        // Dead segments may only wait for a flush: make every applied batch
        // durable, free what that allows, and try with the room it made.
        let applied = core.log.lock().applied_seq;
        for device in &core.pool.devices {
            flush_blocking(device.as_ref()).map_err(|e| (fence(e), Vec::new()))?;
        }
        let mut log = core.log.lock();
        log.segments.durable_seq = log.segments.durable_seq.max(applied);
        let covered = log.covered_seq;
        log.segments.free_dead(covered);
    }
    let mut allocated = Vec::with_capacity(needed);
    {
        let mut log = core.log.lock();
        for _ in 0..needed {
            match log.segments.allocate(SegmentState::CheckpointBody) {
                Some(segment) => allocated.push(segment),
                None => {
                    drop(log);
                    return Err((CheckpointError::NoSpace(bytes.len() as u64), allocated));
                }
            }
        }
    }
    core.counters.checkpoint_blocks.fetch_add(
        bytes.len().div_ceil(BLOCK_SIZE) as u64 + ROOT_COPIES,
        Ordering::Relaxed,
    );
    for (piece, segment) in bytes.chunks(segment_bytes).zip(&allocated) {
        let mut buf = AlignedBuf::zeroed(piece.len().div_ceil(BLOCK_SIZE) * BLOCK_SIZE);
        buf.as_mut_slice()[..piece.len()].copy_from_slice(piece);
        let (device, offset) = core.pool.locate(*segment, 0);
        if let Err(err) = write_blocking(device, offset, buf) {
            return Err((fence(err), allocated));
        }
    }
    for device in &core.pool.devices {
        if let Err(err) = flush_blocking(device.as_ref()) {
            return Err((fence(err), allocated));
        }
    }
    let generation = core.log.lock().root_generation + 1;
    let root = CheckpointRoot {
        pool_uuid: core.pool.uuid,
        generation,
        epoch: core.epoch,
        replay_seq,
        replay_segment: replay_segment.0,
        replay_block,
        collector_segment: collector_segment.0,
        collector_block,
        body_len: bytes.len() as u64,
        body_crc: crc32c::crc32c(&bytes),
        body_segments: allocated.iter().map(|s| s.0).collect(),
    };
    // Both copies are written before the one flush that completes the
    // checkpoint: if either still holds an older generation after a crash, the
    // flush never completed and nothing was freed on the strength of this root.
    let parity = (generation % 2) as usize;
    let device = core.pool.root_device();
    for offset in [ROOT_SLOTS[parity], ROOT_MIRRORS[parity]] {
        if let Err(err) = write_blocking(device, offset, AlignedBuf::copy_from(&root.encode())) {
            return Err((fence(err), allocated));
        }
    }
    if let Err(err) = flush_blocking(device) {
        return Err((fence(err), allocated));
    }
    Ok((root, allocated))
}

/// Encodes the captured maps, storing each shared chunk instance once.
fn encode_body(
    next_volume_id: u64,
    volumes: &[(VolumeShape, VolumeMap)],
    unsettled: Vec<UnsettledImage>,
) -> Vec<u8> {
    let mut numbers: HashMap<*const Chunk, u32> = HashMap::new();
    let mut instances = Vec::new();
    let images = volumes
        .iter()
        .map(|(shape, map)| {
            let chunks = map
                .instances()
                .into_iter()
                .map(|(index, chunk)| {
                    let number = *numbers.entry(Arc::as_ptr(&chunk)).or_insert_with(|| {
                        instances.push(
                            chunk
                                .mapped()
                                .map(|(o, m)| (o, m.encode(), m.crc))
                                .collect(),
                        );
                        (instances.len() - 1) as u32
                    });
                    (index, number)
                })
                .collect();
            VolumeImage {
                id: shape.id.0,
                name: shape.name.clone(),
                size_bytes: shape.size_bytes,
                sector_bytes: shape.sector.bytes(),
                kind: shape.kind,
                flags: shape.flags,
                lineage: shape.lineage,
                parent: shape.parent.map_or(0, |p| p.0),
                chunks,
            }
        })
        .collect();
    CheckpointBody {
        next_volume_id,
        instances,
        volumes: images,
        unsettled,
    }
    .encode()
}
