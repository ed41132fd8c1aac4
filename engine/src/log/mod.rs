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
//!
//! The log has two heads, each with its own open segment: fresh writes (and
//! every metadata record) go to the foreground head, the garbage collector's
//! copies to the collector head, so segments sort themselves into hot and cold
//! data. Batches of both heads share one sequence; each batch names its head,
//! and a checkpoint root names where each head continues, so replay follows
//! both (FORMAT.md, "Recovery").

mod apply;
mod plug;
pub(crate) mod segments;

pub(crate) use apply::{apply_batch, created_shape};
pub(crate) use plug::form_deferred;
pub use plug::WritePlug;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use crate::core::Core;
use crate::error::IoError;
use crate::format::{
    BatchBuilder, BatchHeader, Entry, HEAD_COLLECTOR, HEAD_FOREGROUND, NO_SEGMENT,
};
use crate::io::{AlignedBuf, IoOp};
use crate::units::{SegmentId, BLOCK_SIZE};
use segments::{SegmentState, SegmentTable};

/// Largest data area of one batch, in blocks (1 MiB); also the largest write.
pub(crate) const BATCH_DATA_BLOCKS_MAX: u32 = 256;

/// Runs once a record is durable in the log and applied, or has failed.
pub(crate) type RecordDone = Box<dyn FnOnce(Result<(), IoError>) + Send>;

/// A change waiting to be written.
pub(crate) enum Record {
    /// An entry that owns data blocks (a write, or a block moved by garbage
    /// collection) with those blocks; the entry's data offset is set when the
    /// record is placed in a batch.
    Data {
        entry: Entry,
        data: Bytes,
        origin: Origin,
    },
    /// A record with no data (trim, volume create/delete/resize, snapshot, ...).
    Meta(Entry),
}

/// Who asked for a data record: foreground writes may not use the segments kept
/// back for garbage collection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    Foreground,
    Collector,
}

impl Record {
    fn data_blocks(&self) -> u32 {
        match self {
            Record::Data { entry, .. } => entry.data_blocks(),
            Record::Meta(_) => 0,
        }
    }

    fn entry_len(&self) -> usize {
        match self {
            Record::Data { entry, .. } | Record::Meta(entry) => entry.encoded_len(),
        }
    }

    fn is_foreground_data(&self) -> bool {
        matches!(
            self,
            Record::Data {
                origin: Origin::Foreground,
                ..
            }
        )
    }
}

/// Segments that only garbage collection may allocate, so it can always make
/// room: two, and up to 16 MiB worth of them (so a pool of small segments keeps
/// the room in bytes for a round's copies, and for the checkpoint reserve to
/// grow into, that one of the default 8 MiB segments has) as long as that is
/// at most a sixteenth of a pool of `segment_count` segments.
pub(crate) fn collector_reserve_segments(segment_count: usize, blocks_per_segment: u32) -> usize {
    const RESERVE_BLOCKS: usize = 4096;
    let by_bytes = RESERVE_BLOCKS.div_ceil(blocks_per_segment.max(1) as usize);
    by_bytes.min(segment_count / 16).max(2)
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
    /// Per head ([`HEAD_FOREGROUND`], [`HEAD_COLLECTOR`]): the segment being
    /// appended to and its next free block.
    pub open: [Option<(SegmentId, u32)>; 2],
    /// The segment predicted to be opened next, already asked to be preallocated.
    prepared: Option<SegmentId>,
    pending: VecDeque<Pending>,
    /// Records of the garbage collector: formed before `pending`, so the
    /// collector can make room while foreground writes wait for it.
    collector_pending: VecDeque<Pending>,
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
    /// Foreground records wait for garbage collection to free a segment.
    waiting_for_collector: bool,
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
            open: [None, None],
            prepared: None,
            pending: VecDeque::new(),
            collector_pending: VecDeque::new(),
            next_seq,
            applied_seq: next_seq - 1,
            inflight: BTreeMap::new(),
            covered_seq: next_seq,
            root_generation,
            body_segments,
            blocks_since_checkpoint: 0,
            checkpoint_running: false,
            checkpoint_stalled: false,
            waiting_for_collector: false,
        }
    }

    /// Whether foreground records wait for the collector to make room.
    pub fn has_waiting_records(&self) -> bool {
        self.waiting_for_collector && !self.pending.is_empty()
    }

    /// Blocks of `head`'s open segment (of `per_segment`) still free; 0
    /// without an open segment.
    pub fn head_remainder(&self, head: u8, per_segment: u32) -> u64 {
        self.open[usize::from(head)].map_or(0, |(_, next)| {
            u64::from(per_segment).saturating_sub(u64::from(next))
        })
    }

    /// Per head, where its first batch after `applied_seq` starts, or where
    /// its next batch would go (`NO_SEGMENT` without an open segment): what a
    /// checkpoint taken now records as the replay positions.
    pub fn replay_positions(&self) -> [(SegmentId, u32); 2] {
        [HEAD_FOREGROUND, HEAD_COLLECTOR].map(|head| {
            match self.inflight.values().find(|b| b.header.head == head) {
                Some(batch) => (batch.segment, batch.block),
                None => self.open[usize::from(head)].unwrap_or((SegmentId(NO_SEGMENT), 0)),
            }
        })
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

/// Queues a record and writes whatever batches can be formed (unless this
/// thread holds a [`WritePlug`], whose release forms them).
pub(crate) fn append(core: &Arc<Core>, pending: Pending) {
    if plug::defers(core) {
        core.log.lock().pending.push_back(pending);
        return;
    }
    let formed = {
        let mut log = core.log.lock();
        log.pending.push_back(pending);
        form_batches(core, &mut log)
    };
    finish(core, formed);
}

/// Queues garbage collector records ahead of foreground records, all at
/// once so they fill whole batches.
pub(crate) fn append_collected(core: &Arc<Core>, pendings: Vec<Pending>) {
    let formed = {
        let mut log = core.log.lock();
        log.collector_pending.extend(pendings);
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

/// The room the collector may write to: the free segments above its floor
/// (the checkpoint `reserve` and one more), in blocks, plus what remains of
/// the collector head's open segment.
pub(crate) fn collector_room(core: &Core, log: &LogState, reserve: usize) -> u64 {
    let per_segment = core.pool.blocks_per_segment;
    let spare = log.segments.allocatable().saturating_sub(reserve + 1);
    log.head_remainder(HEAD_COLLECTOR, per_segment) + spare as u64 * u64::from(per_segment)
}

/// An upper bound of a checkpoint body's bytes for `live_blocks` live blocks
/// in `chunk_refs` chunk references of `maps` maps: every live block counted
/// twice (copied chunks repeat shared blocks), 8 bytes per chunk reference.
pub(crate) fn checkpoint_body_bytes_max(live_blocks: u64, chunk_refs: u64, maps: u64) -> u64 {
    live_blocks * 28 + chunk_refs * 8 + 64 * 1024 + maps * 2048
}

/// Segments a checkpoint of the current state needs, plus one spare.
pub(crate) fn checkpoint_reserve(core: &Core, log: &LogState) -> usize {
    let maps = core.catalog.read().all();
    let chunk_refs: u64 = maps.iter().map(|v| v.map.read().chunk_count() as u64).sum();
    let body_bytes =
        checkpoint_body_bytes_max(log.segments.live_blocks(), chunk_refs, maps.len() as u64);
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
            failed.extend(
                log.collector_pending
                    .drain(..)
                    .map(|p| (p.done, IoError::Fenced)),
            );
            failed.extend(log.pending.drain(..).map(|p| (p.done, IoError::Fenced)));
            break;
        }
        let from_collector = !log.collector_pending.is_empty();
        if (!from_collector && log.pending.is_empty())
            || log.inflight.len() >= core.config.inflight_batches_max
        {
            break;
        }
        let (queue, head) = if from_collector {
            (&log.collector_pending, HEAD_COLLECTOR)
        } else {
            (&log.pending, HEAD_FOREGROUND)
        };
        let open = log.open[usize::from(head)];
        let data_max = BATCH_DATA_BLOCKS_MAX.min(blocks_per_segment - 16);
        // Fill the open segment first; seal it only when not even the next record fits.
        let room = open.map(|(_, next)| blocks_per_segment - next);
        let (mut plan, mut foreground_data) = plan_batch(queue, data_max, room);
        if plan.entry_count() == 0 {
            (plan, foreground_data) = plan_batch(queue, data_max, None);
        }
        let total = u32::from(plan.header_blocks()) + plan.data_blocks();
        let fits_open = matches!(open, Some((_, next)) if next + total <= blocks_per_segment);
        if !fits_open {
            let reserve = checkpoint_reserve(core, log);
            let floor = if foreground_data {
                reserve
                    + 1
                    + collector_reserve_segments(log.segments.info.len(), blocks_per_segment)
            } else if plan.data_blocks() > 0 {
                reserve + 1
            } else {
                reserve.saturating_sub(1)
            };
            if log.segments.allocatable() > floor {
                if let Some((old, _)) = log.open[usize::from(head)].take() {
                    // Live counts change only when batches apply, so a segment
                    // found dead now died by batch `applied_seq` at the latest.
                    let applied = log.applied_seq;
                    log.segments.seal(old, applied);
                }
                let Some(segment) = log.segments.allocate(SegmentState::Open) else {
                    unreachable!("allocatable() promised a free segment")
                };
                log.open[usize::from(head)] = Some((segment, 0));
                // Preallocate one segment ahead so writes rarely wait for it.
                if log.prepared != Some(segment) {
                    preallocate.push(segment);
                }
                log.prepared = log.segments.next_allocatable();
                preallocate.extend(log.prepared);
            } else if log.checkpoint_running
                || (!log.checkpoint_stalled && log.segments.reclaimable() > 0)
            {
                // A checkpoint will free dead segments; records wait for it.
                core.request_checkpoint();
                break;
            } else if foreground_data && core.collector_can_help() {
                // Garbage collection can turn partly dead segments into free ones.
                log.waiting_for_collector = true;
                core.wake_collector();
                break;
            } else if from_collector {
                failed.extend(
                    log.collector_pending
                        .drain(..)
                        .map(|p| (p.done, IoError::NoSpace)),
                );
                continue;
            } else {
                core.counters
                    .note_no_space("no free segment and nothing the collector can reclaim");
                fail_for_space(log, failed);
                continue;
            }
        }
        let Some((segment, block)) = log.open[usize::from(head)] else {
            unreachable!("an open segment was just ensured")
        };
        if !from_collector {
            log.waiting_for_collector = false;
        }
        let take = plan.entry_count();
        let seq = log.next_seq;
        log.next_seq += 1;
        let mut entries = Vec::with_capacity(take);
        let mut payloads = Vec::new();
        let mut dones = Vec::with_capacity(take);
        let mut data_offset = 0u32;
        let taken: Vec<Pending> = if from_collector {
            log.collector_pending.drain(..take).collect()
        } else {
            log.pending.drain(..take).collect()
        };
        for pending in taken {
            match pending.record {
                Record::Data {
                    mut entry, data, ..
                } => {
                    entry.set_data_offset(data_offset);
                    data_offset += entry.data_blocks();
                    entries.push(entry);
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
            completed_seq: log.applied_seq,
            durable_seq: log.segments.durable_seq,
            head,
            entries,
        };
        let header_bytes = header.encode();
        log.open[usize::from(head)] = Some((segment, block + total));
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

/// Plans the next batch from the front of `queue`: as many records as the batch
/// limits and, if given, `room` blocks (header included) allow. Also says whether
/// the batch carries foreground data.
fn plan_batch(queue: &VecDeque<Pending>, data_max: u32, room: Option<u32>) -> (BatchBuilder, bool) {
    let mut plan = BatchBuilder::new();
    let mut foreground_data = false;
    for pending in queue {
        let (len, blocks) = (pending.record.entry_len(), pending.record.data_blocks());
        if !plan.fits(len, blocks, data_max) {
            break;
        }
        let total_after =
            (plan.header_bytes() + len).div_ceil(BLOCK_SIZE) as u32 + plan.data_blocks() + blocks;
        if room.is_some_and(|room| total_after > room) {
            break;
        }
        plan.add(len, blocks);
        foreground_data |= pending.record.is_foreground_data();
    }
    (plan, foreground_data)
}

/// No space can be had: fail queued writes (they need data blocks) and, if only
/// metadata records remain and even they cannot be placed, those too.
fn fail_for_space(log: &mut LogState, failed: &mut Vec<(RecordDone, IoError)>) {
    let before = log.pending.len();
    let mut kept = VecDeque::new();
    for pending in log.pending.drain(..) {
        match pending.record {
            Record::Data { .. } => failed.push((pending.done, IoError::NoSpace)),
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
    let header_blocks = (batch.header_bytes.len() / BLOCK_SIZE) as u64;
    let counters = &core.counters;
    counters
        .header_blocks
        .fetch_add(header_blocks, Ordering::Relaxed);
    counters.data_blocks.fetch_add(
        u64::from(batch.total_blocks) - header_blocks,
        Ordering::Relaxed,
    );
    let (device, offset) = core.pool.locate(batch.segment, batch.block);
    let core2 = core.clone();
    let seq = batch.seq;
    // On the forming thread's local ring if it has one: the batch then completes
    // (and is applied) when that thread polls, with no hand-off.
    device.submit_here(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_collector_keeps_16_mib_and_two_segments_of_room_in_pools_large_enough() {
        // A 1 GiB pool.
        for blocks_per_segment in [64u32, 256, 512, 1000, 2048, 4096, 16384] {
            let count = (1usize << 18) / blocks_per_segment as usize;
            let segments = collector_reserve_segments(count, blocks_per_segment);
            assert!(segments >= 2, "{blocks_per_segment}");
            assert!(segments as u64 * u64::from(blocks_per_segment) * 4096 >= 16 << 20);
            // No more than needed: one segment fewer would be short of both.
            let fewer = (segments - 1) as u64 * u64::from(blocks_per_segment) * 4096;
            assert!(segments == 2 || fewer < 16 << 20, "{blocks_per_segment}");
        }
        assert_eq!(
            collector_reserve_segments(127, 2048),
            2,
            "the default is unchanged"
        );
        // A 4 MiB pool of 64-block segments keeps the two.
        assert_eq!(collector_reserve_segments(16, 64), 2);
        // A 64 MiB one of 512-block segments: a sixteenth of it.
        assert_eq!(collector_reserve_segments(32, 512), 2);
        assert_eq!(collector_reserve_segments(64, 512), 4);
    }
}
