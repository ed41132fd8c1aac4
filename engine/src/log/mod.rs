//! The log: pending records are grouped into batches, each written with one
//! sequential device write into the open segment; completed batches are applied to
//! the index strictly in sequence order, and only then are their records
//! acknowledged.
//!
//! INVARIANT: a batch is applied (and its records acknowledged) only after every
//! lower-numbered batch is applied, so a valid batch on disk implies every earlier
//! acknowledged batch is on disk too, and replay may stop at the first gap.
//! INVARIANT: at most `inflight_batches_max` batches exist beyond the last applied
//! one, so a crash can leave at most that many unacknowledged batches.

mod apply;
pub(crate) mod segments;

pub(crate) use apply::apply_batch;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::core::Core;
use crate::error::IoError;
use crate::format::{BatchBuilder, BatchHeader, Entry};
use crate::io::{AlignedBuf, IoOp};
use crate::units::{SegmentId, VolumeId, BLOCK_SIZE};
use segments::{SegmentState, SegmentTable};

/// Largest data area of one batch, in blocks (1 MiB); also the largest write.
pub(crate) const BATCH_DATA_BLOCKS_MAX: u32 = 256;

/// Runs once a record is durable in the log and applied, or has failed.
pub(crate) type RecordDone = Box<dyn FnOnce(Result<(), IoError>) + Send>;

/// A change waiting to be written.
pub(crate) enum Record {
    /// Whole 4 KiB blocks of data with their checksums.
    Write {
        volume: VolumeId,
        lba: u64,
        data: Bytes,
        crcs: Vec<u32>,
    },
    /// A record with no data (trim, volume create/delete/resize).
    Meta(Entry),
}

impl Record {
    fn data_blocks(&self) -> u32 {
        match self {
            Record::Write { crcs, .. } => crcs.len() as u32,
            Record::Meta(_) => 0,
        }
    }

    fn entry_len(&self) -> usize {
        match self {
            Record::Write { crcs, .. } => 4 + 24 + 4 * crcs.len(),
            Record::Meta(entry) => entry.encoded_len(),
        }
    }
}

pub(crate) struct Pending {
    pub record: Record,
    pub done: RecordDone,
}

/// A batch the device owns.
struct InflightBatch {
    header: BatchHeader,
    segment: SegmentId,
    block: u32,
    dones: Vec<RecordDone>,
    result: Option<Result<(), IoError>>,
}

/// A batch ready to be written, built under the log lock and submitted outside it.
struct ReadyBatch {
    seq: u64,
    segment: SegmentId,
    block: u32,
    header_bytes: Vec<u8>,
    payloads: Vec<Bytes>,
    total_blocks: u32,
}

/// Everything about the log that changes as batches are written.
pub(crate) struct LogState {
    pub segments: SegmentTable,
    /// The segment being appended to and its next free block.
    pub open: Option<(SegmentId, u32)>,
    /// The segment predicted to be opened next, already asked to be preallocated.
    prepared: Option<SegmentId>,
    pending: VecDeque<Pending>,
    pub next_seq: u64,
    pub applied_seq: u64,
    inflight: BTreeMap<u64, InflightBatch>,
    /// `replay_seq` of the durable checkpoint: batches below it need no replay.
    pub covered_seq: u64,
    pub root_generation: u64,
    pub body_segments: Vec<SegmentId>,
    pub blocks_since_checkpoint: u64,
    pub checkpoint_running: bool,
    /// The last checkpoint found no room for its body: waiting for one is futile.
    pub checkpoint_stalled: bool,
}

impl LogState {
    pub fn new(
        segments: SegmentTable,
        next_seq: u64,
        root_generation: u64,
        body_segments: Vec<SegmentId>,
    ) -> LogState {
        LogState {
            segments,
            open: None,
            prepared: None,
            pending: VecDeque::new(),
            next_seq,
            applied_seq: next_seq - 1,
            inflight: BTreeMap::new(),
            covered_seq: next_seq,
            root_generation,
            body_segments,
            blocks_since_checkpoint: 0,
            checkpoint_running: false,
            checkpoint_stalled: false,
        }
    }

    /// Where batch `applied_seq + 1` starts (or will start): what a checkpoint taken
    /// now records as the replay position.
    pub fn replay_position(&self) -> (SegmentId, u32) {
        match self.inflight.values().next() {
            Some(batch) => (batch.segment, batch.block),
            None => self.open.unwrap_or((SegmentId(u32::MAX), 0)),
        }
    }
}

/// Work decided under the log lock and started after releasing it.
#[derive(Default)]
struct Formed {
    ready: Vec<ReadyBatch>,
    failed: Vec<(RecordDone, IoError)>,
    /// Segments about to receive batches: asked to be preallocated, so the first
    /// writes into a sparse file do not allocate blocks inline (which makes the
    /// kernel hand each of them to a worker thread).
    preallocate: Vec<SegmentId>,
}

/// Queues a record and writes whatever batches can be formed.
pub(crate) fn append(core: &Arc<Core>, pending: Pending) {
    let formed = {
        let mut log = core.log.lock();
        log.pending.push_back(pending);
        form_batches(core, &mut log)
    };
    finish(core, formed);
}

/// Re-runs batch forming, e.g. after a checkpoint freed space.
pub(crate) fn kick(core: &Arc<Core>) {
    let formed = {
        let mut log = core.log.lock();
        form_batches(core, &mut log)
    };
    finish(core, formed);
}

fn finish(core: &Arc<Core>, formed: Formed) {
    for segment in formed.preallocate {
        let (device, offset) = core.pool.locate(segment, 0);
        device.preallocate(offset, core.pool.segment_bytes());
    }
    for (done, err) in formed.failed {
        done(Err(err));
    }
    for batch in formed.ready {
        submit(core, batch);
    }
}

/// Segments a checkpoint of the current state needs, plus one spare.
fn checkpoint_reserve(core: &Core, log: &LogState) -> usize {
    let body_bytes = log.segments.live_blocks() * 14
        + 64 * 1024
        + core.catalog.read().volume_count() as u64 * 2048;
    body_bytes.div_ceil(core.pool.segment_bytes()) as usize + 1
}

fn form_batches(core: &Arc<Core>, log: &mut LogState) -> Formed {
    let mut formed = Formed::default();
    let Formed {
        ready,
        failed,
        preallocate,
    } = &mut formed;
    let blocks_per_segment = core.pool.blocks_per_segment;
    loop {
        if core.fenced.load(Ordering::Acquire) {
            failed.extend(log.pending.drain(..).map(|p| (p.done, IoError::Fenced)));
            break;
        }
        if log.pending.is_empty() || log.inflight.len() >= core.config.inflight_batches_max {
            break;
        }
        let mut plan = BatchBuilder::new();
        let data_max = BATCH_DATA_BLOCKS_MAX.min(blocks_per_segment - 16);
        for pending in &log.pending {
            let (len, blocks) = (pending.record.entry_len(), pending.record.data_blocks());
            if !plan.fits(len, blocks, data_max) {
                break;
            }
            plan.add(len, blocks);
        }
        let total = u32::from(plan.header_blocks()) + plan.data_blocks();
        let fits_open = matches!(log.open, Some((_, next)) if next + total <= blocks_per_segment);
        if !fits_open {
            let reserve = checkpoint_reserve(core, log);
            let floor = if plan.data_blocks() > 0 {
                reserve + 1
            } else {
                reserve.saturating_sub(1)
            };
            if log.segments.allocatable() > floor {
                if let Some((old, _)) = log.open.take() {
                    log.segments.get_mut(old).state = SegmentState::Sealed;
                    let covered = log.covered_seq;
                    log.segments.free_if_dead(old, covered);
                }
                let Some(segment) = log.segments.allocate(SegmentState::Open) else {
                    unreachable!("allocatable() promised a free segment")
                };
                log.open = Some((segment, 0));
                // Preallocate one segment ahead so writes rarely wait for it.
                if log.prepared != Some(segment) {
                    preallocate.push(segment);
                }
                log.prepared = log.segments.next_allocatable();
                preallocate.extend(log.prepared);
            } else if log.checkpoint_running
                || (!log.checkpoint_stalled && log.segments.reclaimable(log.covered_seq) > 0)
            {
                // A checkpoint will free dead segments; records wait for it.
                core.request_checkpoint();
                break;
            } else {
                fail_for_space(log, failed);
                continue;
            }
        }
        let Some((segment, block)) = log.open else {
            unreachable!("an open segment was just ensured")
        };
        let take = plan.entry_count();
        let seq = log.next_seq;
        log.next_seq += 1;
        let mut entries = Vec::with_capacity(take);
        let mut payloads = Vec::new();
        let mut dones = Vec::with_capacity(take);
        let mut data_offset = 0u32;
        for pending in log.pending.drain(..take) {
            match pending.record {
                Record::Write {
                    volume,
                    lba,
                    data,
                    crcs,
                } => {
                    let blocks = crcs.len() as u32;
                    entries.push(Entry::Write {
                        volume: volume.0,
                        lba,
                        data_offset,
                        crcs,
                    });
                    data_offset += blocks;
                    payloads.push(data);
                }
                Record::Meta(entry) => entries.push(entry),
            }
            dones.push(pending.done);
        }
        let header = BatchHeader {
            seq,
            epoch: core.epoch,
            pool_uuid: core.pool.uuid,
            segment: segment.0,
            header_blocks: plan.header_blocks(),
            data_blocks: plan.data_blocks(),
            entries,
        };
        let header_bytes = header.encode();
        log.open = Some((segment, block + total));
        log.segments.get_mut(segment).max_seq = seq;
        log.inflight.insert(
            seq,
            InflightBatch {
                header,
                segment,
                block,
                dones,
                result: None,
            },
        );
        ready.push(ReadyBatch {
            seq,
            segment,
            block,
            header_bytes,
            payloads,
            total_blocks: total,
        });
    }
    formed
}

/// No space can be had: fail queued writes (they need data blocks) and, if only
/// metadata records remain and even they cannot be placed, those too.
fn fail_for_space(log: &mut LogState, failed: &mut Vec<(RecordDone, IoError)>) {
    let before = log.pending.len();
    let mut kept = VecDeque::new();
    for pending in log.pending.drain(..) {
        match pending.record {
            Record::Write { .. } => failed.push((pending.done, IoError::NoSpace)),
            Record::Meta(_) => kept.push_back(pending),
        }
    }
    if kept.len() == before {
        failed.extend(kept.drain(..).map(|p| (p.done, IoError::NoSpace)));
    }
    log.pending = kept;
}

fn submit(core: &Arc<Core>, batch: ReadyBatch) {
    // The header (zero-padded to whole blocks) and the payloads (whole blocks)
    // cover the buffer exactly, so it needs no clearing first.
    let mut buf = AlignedBuf::for_overwrite(batch.total_blocks as usize * BLOCK_SIZE);
    let bytes = buf.as_mut_slice();
    bytes[..batch.header_bytes.len()].copy_from_slice(&batch.header_bytes);
    let mut at = batch.header_bytes.len();
    for payload in &batch.payloads {
        bytes[at..at + payload.len()].copy_from_slice(payload);
        at += payload.len();
    }
    assert_eq!(
        at,
        bytes.len(),
        "a batch's header and payloads fill its blocks exactly"
    );
    let (device, offset) = core.pool.locate(batch.segment, batch.block);
    let core2 = core.clone();
    let seq = batch.seq;
    device.submit(
        IoOp::Write { offset, buf },
        Box::new(move |outcome| batch_done(&core2, seq, outcome.result.map_err(IoError::from))),
    );
}

fn batch_done(core: &Arc<Core>, seq: u64, result: Result<(), IoError>) {
    let mut completed: Vec<(RecordDone, Result<(), IoError>)> = Vec::new();
    let formed = {
        let mut log = core.log.lock();
        if let Some(batch) = log.inflight.get_mut(&seq) {
            batch.result = Some(result);
        }
        while let Some(entry) = log.inflight.first_entry() {
            if entry.get().result.is_none() {
                break;
            }
            let batch = entry.remove();
            let outcome = match batch.result {
                Some(Ok(())) if !core.fenced.load(Ordering::Acquire) => {
                    apply_batch(core, &mut log, &batch.header, batch.segment, batch.block);
                    Ok(())
                }
                Some(Ok(())) => Err(IoError::Fenced),
                Some(Err(err)) => {
                    tracing::error!(%err, seq = batch.header.seq, "log write failed; fencing the engine");
                    core.fenced.store(true, Ordering::Release);
                    Err(err)
                }
                None => unreachable!("checked above"),
            };
            log.applied_seq = log.applied_seq.max(batch.header.seq);
            completed.extend(batch.dones.into_iter().map(|d| (d, outcome.clone())));
        }
        if log.blocks_since_checkpoint >= core.config.checkpoint_interval_blocks {
            core.request_checkpoint();
        }
        form_batches(core, &mut log)
    };
    for (done, outcome) in completed {
        done(outcome);
    }
    finish(core, formed);
}
