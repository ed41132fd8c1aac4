//! Formatting and opening a pool. Open = superblocks -> newest valid checkpoint
//! root -> checkpoint body -> replay of the log batches that follow it (same epoch,
//! consecutive sequence numbers, header and data checksums valid) -> a new
//! checkpoint that starts a new epoch.

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::core::{Catalog, Core, EngineConfig};
use crate::error::OpenError;
use crate::format::{BatchHeader, CheckpointBody, CheckpointRoot, DecodeError, Entry};
use crate::index::{set_owners, Chunk, RefCounts, VolumeMap};
use crate::io::{flush_blocking, read_blocking, write_blocking, AlignedBuf, DeviceRef};
use crate::log::segments::{SegmentPins, SegmentState, SegmentTable};
use crate::log::{apply_batch, LogState};
use crate::pool::{Pool, ROOT_SLOTS};
use crate::units::{SectorSize, SegmentId, VolumeId, BLOCK_SIZE};
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
        replay_segment: u32::MAX,
        replay_block: 0,
        body_len: body.len() as u64,
        body_crc: crc32c::crc32c(&body),
        body_segments: vec![body_segment.0],
    };
    // The other slot may hold a root of an earlier pool on this device: zero it.
    write_blocking(
        pool.root_device(),
        ROOT_SLOTS[0],
        AlignedBuf::zeroed(BLOCK_SIZE),
    )?;
    write_blocking(
        pool.root_device(),
        ROOT_SLOTS[1],
        AlignedBuf::copy_from(&root.encode()),
    )?;
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
) -> Result<Arc<Core>, OpenError> {
    let pool = Pool::load(devices)?;
    let root = newest_root(&pool)?;
    let body = read_body(&pool, &root)?;
    let pins = Arc::new(SegmentPins::new(pool.segment_count()));
    let mut segments =
        SegmentTable::new(pool.segment_count(), pool.blocks_per_segment, pins.clone());
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
        segments.get_mut(SegmentId(segment)).state = SegmentState::CheckpointBody;
    }
    let catalog = rebuild_catalog(&pool, &body, &mut segments)?;
    let batches = find_replay_chain(&pool, &root, &segments)?;
    let next_seq = root.replay_seq + batches.len() as u64;
    let mut log = LogState::new(
        segments,
        root.replay_seq,
        root.generation,
        root.body_segments.iter().map(|&s| SegmentId(s)).collect(),
    );
    log.covered_seq = root.replay_seq;
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
        collector_stalled: AtomicBool::new(false),
        counters: Default::default(),
    });
    {
        let mut log = core.log.lock();
        for (header, segment, block) in &batches {
            let info = log.segments.get_mut(*segment);
            info.state = SegmentState::Sealed;
            info.max_seq = header.seq;
            apply_batch(&core, &mut log, header, *segment, *block);
            log.applied_seq = header.seq;
        }
        log.next_seq = next_seq;
        let applied = log.applied_seq;
        log.segments.queue_dead_sealed(applied);
    }
    tracing::info!(
        replayed_batches = batches.len(),
        volumes = core.catalog.read().volume_count(),
        epoch = core.epoch,
        "pool recovered"
    );
    Ok(core)
}

fn corrupt(what: &'static str, source: DecodeError) -> OpenError {
    OpenError::Corrupt { what, source }
}

fn newest_root(pool: &Pool) -> Result<CheckpointRoot, OpenError> {
    let mut best: Option<CheckpointRoot> = None;
    let mut last_error = DecodeError::BadMagic;
    for slot in ROOT_SLOTS {
        let block = read_blocking(pool.root_device(), slot, BLOCK_SIZE)?;
        match CheckpointRoot::decode(block.as_slice()) {
            Ok(root) if root.pool_uuid == pool.uuid => {
                if best.as_ref().is_none_or(|b| root.generation > b.generation) {
                    best = Some(root);
                }
            }
            Ok(_) => {
                last_error = DecodeError::Invalid {
                    field: "root_pool_uuid",
                    value: 0,
                }
            }
            Err(err) => last_error = err,
        }
    }
    best.ok_or_else(|| corrupt("checkpoint root (both slots)", last_error))
}

fn read_body(pool: &Pool, root: &CheckpointRoot) -> Result<CheckpointBody, OpenError> {
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
    let computed = crc32c::crc32c(&bytes);
    if computed != root.body_crc {
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

/// Serves replay's reads from whole segments: the log is read one segment at a
/// time with one large read, instead of two or three small reads per batch.
struct SegmentReader<'a> {
    pool: &'a Pool,
    cached: Option<(SegmentId, AlignedBuf)>,
}

impl<'a> SegmentReader<'a> {
    fn new(pool: &'a Pool) -> SegmentReader<'a> {
        SegmentReader { pool, cached: None }
    }

    /// Blocks `[block, block + count)` of `segment`, or `None` past its end.
    fn blocks(
        &mut self,
        segment: SegmentId,
        block: u32,
        count: u32,
    ) -> Result<Option<&[u8]>, OpenError> {
        if block
            .checked_add(count)
            .is_none_or(|end| end > self.pool.blocks_per_segment)
        {
            return Ok(None);
        }
        if self
            .cached
            .as_ref()
            .is_none_or(|(cached, _)| *cached != segment)
        {
            let (device, offset) = self.pool.locate(segment, 0);
            let buf = read_blocking(device, offset, self.pool.segment_bytes() as usize)?;
            self.cached = Some((segment, buf));
        }
        let Some((_, buf)) = &self.cached else {
            unreachable!("the segment was just read")
        };
        let at = block as usize * BLOCK_SIZE;
        Ok(buf.as_slice().get(at..at + count as usize * BLOCK_SIZE))
    }
}

/// Reads and fully verifies the batch at `block` of `segment`; `None` if there is
/// no valid batch of `epoch` with sequence number `seq` there.
fn read_batch(
    reader: &mut SegmentReader<'_>,
    segment: SegmentId,
    block: u32,
    epoch: u64,
    seq: u64,
) -> Result<Option<BatchHeader>, OpenError> {
    let pool = reader.pool;
    if segment.0 >= pool.segment_count() {
        return Ok(None);
    }
    let Some(first) = reader.blocks(segment, block, 1)? else {
        return Ok(None);
    };
    let Ok(header_blocks) = BatchHeader::peek_header_blocks(first) else {
        return Ok(None);
    };
    let Some(header_bytes) = reader.blocks(segment, block, u32::from(header_blocks))? else {
        return Ok(None);
    };
    let Ok(header) = BatchHeader::decode(header_bytes) else {
        return Ok(None);
    };
    if header.seq != seq
        || header.epoch != epoch
        || header.pool_uuid != pool.uuid
        || header.segment != segment.0
    {
        return Ok(None);
    }
    let data_start = block + u32::from(header_blocks);
    let Some(data) = reader.blocks(segment, data_start, header.data_blocks)? else {
        return Ok(None);
    };
    if !data_matches(&header, data) {
        tracing::warn!(
            seq,
            segment = segment.0,
            "torn log batch: data checksum mismatch; replay stops here"
        );
        return Ok(None);
    }
    Ok(Some(header))
}

/// Whether every data block the batch's entries own matches its stored crc.
fn data_matches(header: &BatchHeader, data: &[u8]) -> bool {
    let blocks_match = |data_offset: u32, crcs: &[u32]| {
        crcs.iter().enumerate().all(|(i, &crc)| {
            let at = (data_offset as usize + i) * BLOCK_SIZE;
            data.get(at..at + BLOCK_SIZE)
                .is_some_and(|block| crc32c::crc32c(block) == crc)
        })
    };
    header.entries.iter().all(|entry| match entry {
        Entry::Write {
            data_offset, crcs, ..
        } => blocks_match(*data_offset, crcs),
        Entry::Relocate {
            data_offset, crc, ..
        } => blocks_match(*data_offset, &[*crc]),
        Entry::WritePacked {
            data_offset,
            stored_crcs,
            ..
        }
        | Entry::RelocateUnit {
            data_offset,
            stored_crcs,
            ..
        } => blocks_match(*data_offset, stored_crcs),
        _ => true,
    })
}

type ChainLink = (BatchHeader, SegmentId, u32);

/// Follows the log from the root's replay position: each next batch is either
/// right after the previous one or at the start of another segment.
fn find_replay_chain(
    pool: &Pool,
    root: &CheckpointRoot,
    segments: &SegmentTable,
) -> Result<Vec<ChainLink>, OpenError> {
    let mut segment_starts: HashMap<u64, SegmentId> = HashMap::new();
    for at in 0..pool.segment_count() {
        let segment = SegmentId(at);
        if segments.get(segment).state == SegmentState::CheckpointBody {
            continue;
        }
        let (device, offset) = pool.locate(segment, 0);
        let first = read_blocking(device, offset, BLOCK_SIZE)?;
        let Ok(header_blocks) = BatchHeader::peek_header_blocks(first.as_slice()) else {
            continue;
        };
        let bytes = if header_blocks == 1 {
            first
        } else {
            read_blocking(device, offset, usize::from(header_blocks) * BLOCK_SIZE)?
        };
        if let Ok(header) = BatchHeader::decode(bytes.as_slice()) {
            if header.epoch == root.epoch && header.pool_uuid == pool.uuid && header.segment == at {
                segment_starts.insert(header.seq, segment);
            }
        }
    }
    let mut chain = Vec::new();
    let mut reader = SegmentReader::new(pool);
    let mut seq = root.replay_seq;
    let mut position = (SegmentId(root.replay_segment), root.replay_block);
    loop {
        let mut found = read_batch(&mut reader, position.0, position.1, root.epoch, seq)?
            .map(|h| (h, position));
        if found.is_none() {
            if let Some(&segment) = segment_starts.get(&seq) {
                found = read_batch(&mut reader, segment, 0, root.epoch, seq)?
                    .map(|h| (h, (segment, 0)));
            }
        }
        let Some((header, (segment, block))) = found else {
            break;
        };
        position = (segment, block + header.total_blocks());
        chain.push((header, segment, block));
        seq += 1;
    }
    Ok(chain)
}

/// True if any of `devices` may carry a Keel pool: its first block starts with
/// the superblock magic (of any version, even damaged) or cannot be read. Only
/// devices for which this is false are ever formatted as blank.
pub(crate) fn any_formatted(devices: &[DeviceRef]) -> bool {
    devices.iter().any(|device| {
        read_blocking(device.as_ref(), 0, BLOCK_SIZE).map_or(true, |block| {
            crate::format::Superblock::has_magic(block.as_slice())
        })
    })
}
