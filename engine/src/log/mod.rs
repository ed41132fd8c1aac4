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
mod open_batch;
mod plug;
pub(crate) mod segments;

pub(crate) use apply::{apply_batch, apply_entries, created_shape};
pub(crate) use plug::form_deferred;
pub use plug::WritePlug;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::core::Core;
use crate::error::IoError;
use crate::format::{
    BatchBuilder, BatchHeader, Entry, HEAD_COLLECTOR, HEAD_FOREGROUND, NO_SEGMENT,
};
use crate::io::{AlignedBuf, BlockParts, IoOp};
use crate::units::{SegmentId, BLOCK_SIZE};
use open_batch::{OpenBatch, OPEN_HEADER_BLOCKS};
use segments::{BatchPlace, SegmentState, SegmentTable};

/// Largest data area of one batch, in blocks (1 MiB); also the largest write.
pub(crate) const BATCH_DATA_BLOCKS_MAX: u32 = 256;

/// Foreground records of at least this many blocks (64 KiB) go to whole
/// batches, where a header block costs at most 1/16 of their data, rather
/// than to the open batch, whose one-sector header names only two or three
/// of them: a batch of such records then carries up to 1 MiB instead of
/// 256 KiB (half the header bytes, a lower tail; BENCHMARKS.md).
pub(crate) const WHOLE_BATCH_RECORD_BLOCKS_MIN: u32 = 16;

/// Runs once a record is durable in the log and applied, or has failed.
pub(crate) type RecordDone = Box<dyn FnOnce(Result<(), IoError>) + Send>;

/// Runs once the batch it waits for is applied.
pub(crate) type AfterApplied = Box<dyn FnOnce() + Send>;

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

    /// Whether it is foreground data (which the collector's reserve is kept for).
    fn is_foreground_data(&self) -> bool {
        matches!(
            self,
            Record::Data {
                origin: Origin::Foreground,
                ..
            }
        )
    }

    /// Whether it goes to the open batch: foreground data of fewer than
    /// [`WHOLE_BATCH_RECORD_BLOCKS_MIN`] blocks.
    fn joins_open_batch(&self) -> bool {
        self.is_foreground_data() && self.data_blocks() < WHOLE_BATCH_RECORD_BLOCKS_MIN
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

/// A batch the device owns (or the open batch, until it completes).
struct InflightBatch {
    header: BatchHeader,
    segment: SegmentId,
    block: u32,
    /// Entries of `header` applied (and acknowledged) before the batch
    /// completed: the open batch's; `dones` belong to the rest.
    applied_early: usize,
    dones: Vec<RecordDone>,
    result: Option<Result<(), IoError>>,
}

/// A run of the open batch's data blocks, written on its own.
struct ReadyExtent {
    seq: u64,
    /// Its placement number in the batch.
    number: u64,
    segment: SegmentId,
    block: u32,
    entries: Vec<Entry>,
    dones: Vec<RecordDone>,
    payloads: Vec<Bytes>,
    blocks: u32,
}

/// An image of the open batch's header, naming its first `count` entries.
struct ReadyImage {
    seq: u64,
    segment: SegmentId,
    block: u32,
    bytes: Vec<u8>,
    count: usize,
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
    /// Records of the garbage collector: formed before `pending` while
    /// foreground writes wait for the room it makes, else taking turns
    /// with them (see `collector_went_last`).
    collector_pending: VecDeque<Pending>,
    /// The last batch formed carried the collector's records: with both
    /// queues waiting and room to spare, the foreground goes next, so a
    /// victim's megabytes of copies hold a host write back by one batch, not
    /// by all of them.
    collector_went_last: bool,
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
    /// Foreground records wait for a checkpoint to free dead segments.
    waiting_for_checkpoint: bool,
    /// The foreground head's open batches, oldest first (also in `inflight`,
    /// without a result): the newest may take records; the others are
    /// closing, waiting for their writes.
    open_batches: VecDeque<OpenBatch>,
    /// While set, the open batch applies nothing early: a checkpoint is about
    /// to capture the index, which must hold no part of an unfinished batch.
    hold_early_apply: bool,
    /// Run once `applied_seq` reaches their number.
    after_applied: Vec<(u64, AfterApplied)>,
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
            collector_went_last: false,
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
            waiting_for_checkpoint: false,
            open_batches: VecDeque::new(),
            hold_early_apply: false,
            after_applied: Vec::new(),
        }
    }

    /// Notes that records of the collector's queue (`from_collector`) or the
    /// foreground's were just formed: whose turn is next, and foreground
    /// records that found room no longer wait for any.
    fn formed_from(&mut self, from_collector: bool) {
        if !from_collector {
            self.waiting_for_collector = false;
            self.waiting_for_checkpoint = false;
        }
        self.collector_went_last = from_collector;
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

    /// The newest batch any of whose entries are applied: `applied_seq`, or an
    /// open batch that applied entries early.
    pub fn changed_seq(&self) -> u64 {
        self.open_batches
            .iter()
            .filter(|batch| batch.applied > 0)
            .map(OpenBatch::seq)
            .fold(self.applied_seq, u64::max)
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
    extents: Vec<ReadyExtent>,
    images: Vec<ReadyImage>,
    /// Records applied (or failed), to acknowledge.
    acks: Vec<(RecordDone, Result<(), IoError>)>,
    after_applied: Vec<AfterApplied>,
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
    under_lock(core, |log, formed| {
        log.pending.push_back(pending);
        form_batches(core, log, formed);
    });
}

/// Queues garbage collector records ahead of foreground records, all at
/// once so they fill whole batches.
pub(crate) fn append_collected(core: &Arc<Core>, pendings: Vec<Pending>) {
    under_lock(core, |log, formed| {
        log.collector_pending.extend(pendings);
        form_batches(core, log, formed);
    });
}

/// Re-runs batch forming, e.g. after a checkpoint freed space.
pub(crate) fn kick(core: &Arc<Core>) {
    under_lock(core, |log, formed| form_batches(core, log, formed));
}

/// Closes the open batch (if any) and runs `then` once it is applied, so
/// everything acknowledged before the call is in a completed batch: what a
/// flush must cover.
pub(crate) fn after_open_batch(core: &Arc<Core>, then: AfterApplied) {
    under_lock(core, |log, formed| {
        let Some(seq) = log.open_batches.back().map(OpenBatch::seq) else {
            return formed.after_applied.push(then);
        };
        log.after_applied.push((seq, then));
        close_open_batch(log);
        settle(core, log, formed);
    });
}

/// Holds back (`true`) or lets go (`false`) the open batch's early applying,
/// around a checkpoint's capture of the index.
pub(crate) fn hold_early_apply(core: &Arc<Core>, hold: bool) {
    under_lock(core, |log, formed| {
        log.hold_early_apply = hold;
        if !hold {
            settle(core, log, formed);
        }
    });
}

/// Whether the open batch has applied entries a checkpoint taken now would
/// capture (then the checkpoint must close it and wait first).
pub(crate) fn open_batch_applied_early(log: &LogState) -> bool {
    log.open_batches.iter().any(|batch| batch.applied > 0)
}

/// Runs `work` under the log lock, then starts what it formed after releasing it.
fn under_lock(core: &Arc<Core>, work: impl FnOnce(&mut LogState, &mut Formed)) {
    let mut formed = Formed::default();
    work(&mut core.log.lock(), &mut formed);
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
    for (done, result) in formed.acks {
        done(result);
    }
    for batch in formed.ready {
        submit(core, batch);
    }
    for extent in formed.extents {
        submit_extent(core, extent);
    }
    for image in formed.images {
        submit_image(core, image);
    }
    for then in formed.after_applied {
        then();
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

fn form_batches(core: &Arc<Core>, log: &mut LogState, formed: &mut Formed) {
    let Formed {
        ready,
        extents,
        failed,
        preallocate,
        ..
    } = formed;
    let blocks_per_segment = core.pool.blocks_per_segment;
    loop {
        if core.fenced.load(Ordering::Acquire) {
            failed.extend(
                log.collector_pending
                    .drain(..)
                    .map(|p| (p.done, IoError::Fenced)),
            );
            failed.extend(log.pending.drain(..).map(|p| (p.done, IoError::Fenced)));
            close_open_batch(log);
            break;
        }
        let from_collector = !log.collector_pending.is_empty()
            && (log.pending.is_empty() || log.waiting_for_collector || !log.collector_went_last);
        if !from_collector && log.pending.is_empty() {
            break;
        }
        let to_open_batch = !from_collector
            && log
                .pending
                .front()
                .is_some_and(|p| p.record.joins_open_batch());
        if to_open_batch {
            if let Some(extent) = extend_open_batch(log) {
                log.formed_from(false);
                extents.push(extent);
                continue;
            }
        }
        // Anything else is formed after the open batch, which closes first
        // (also when full), so batches apply in sequence order.
        close_open_batch(log);
        if log.inflight.len() >= core.config.inflight_batches_max {
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
        let (mut plan, mut foreground_data) = if to_open_batch {
            plan_open_batch(queue)
        } else {
            plan_batch(queue, data_max, room)
        };
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
                    // found dead now died by the last batch applied at the latest.
                    let applied = log.changed_seq();
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
            } else if !from_collector && !log.collector_pending.is_empty() {
                // The foreground's turn, but no room for it: the collector's
                // copies (with a lower floor) go first, and may make room.
                log.collector_went_last = false;
                continue;
            } else if log.checkpoint_running
                || (!log.checkpoint_stalled && log.segments.reclaimable() > 0)
            {
                // A checkpoint will free dead segments; records wait for it.
                if !from_collector {
                    start_waiting(
                        &mut log.waiting_for_checkpoint,
                        &core.counters.waits_for_checkpoint,
                    );
                }
                core.request_checkpoint();
                break;
            } else if foreground_data && core.collector_can_help() {
                // Garbage collection can turn partly dead segments into free ones.
                start_waiting(
                    &mut log.waiting_for_collector,
                    &core.counters.waits_for_collector,
                );
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
        log.formed_from(from_collector);
        let seq = log.next_seq;
        log.next_seq += 1;
        let mut header = BatchHeader {
            seq,
            epoch: core.epoch,
            pool_uuid: core.pool.uuid,
            segment: segment.0,
            // An open batch's header has its one reserved block, however
            // many entries its images come to name.
            header_blocks: if to_open_batch {
                OPEN_HEADER_BLOCKS
            } else {
                plan.header_blocks()
            },
            data_blocks: plan.data_blocks(),
            completed_seq: log.applied_seq,
            durable_seq: log.segments.durable_seq,
            head,
            open: false,
            entries: Vec::new(),
        };
        log.segments.get_mut(segment).max_seq = seq;
        log.segments.note_batch(
            segment,
            BatchPlace {
                block,
                header_blocks: header.header_blocks,
            },
        );
        if to_open_batch {
            // Its records join in the next round of the loop.
            header.data_blocks = 0;
            let data_max = data_max.min(blocks_per_segment - block - u32::from(OPEN_HEADER_BLOCKS));
            log.open[usize::from(head)] = Some((segment, blocks_per_segment));
            log.inflight.insert(
                seq,
                InflightBatch {
                    header: header.clone(),
                    segment,
                    block,
                    applied_early: 0,
                    dones: Vec::new(),
                    result: None,
                },
            );
            log.open_batches
                .push_back(OpenBatch::new(header, segment, block, data_max));
            continue;
        }
        let take = plan.entry_count();
        let mut payloads = Vec::new();
        let mut dones = Vec::with_capacity(take);
        let mut data_offset = 0u32;
        let taken: Vec<Pending> = if from_collector {
            log.collector_pending.drain(..take).collect()
        } else {
            log.pending.drain(..take).collect()
        };
        header.entries.reserve(take);
        for pending in taken {
            match pending.record {
                Record::Data {
                    mut entry, data, ..
                } => {
                    entry.set_data_offset(data_offset);
                    data_offset += entry.data_blocks();
                    header.entries.push(entry);
                    payloads.push(data);
                }
                Record::Meta(entry) => header.entries.push(entry),
            }
            dones.push(pending.done);
        }
        let header_bytes = header.encode();
        log.open[usize::from(head)] = Some((segment, block + total));
        log.inflight.insert(
            seq,
            InflightBatch {
                header,
                segment,
                block,
                applied_early: 0,
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
}

/// Places the foreground data records at the front of the queue that fit in
/// the open batch, as one extent; `None` without an open batch with room.
fn extend_open_batch(log: &mut LogState) -> Option<ReadyExtent> {
    let batch = log.open_batches.back_mut().filter(|b| !b.closing)?;
    let mut extent = ReadyExtent {
        seq: batch.seq(),
        number: 0,
        segment: batch.segment,
        block: 0,
        entries: Vec::new(),
        dones: Vec::new(),
        payloads: Vec::new(),
        blocks: 0,
    };
    while let Some(pending) = log.pending.front() {
        let record = &pending.record;
        if !record.joins_open_batch() || !batch.fits(record.entry_len(), record.data_blocks()) {
            break;
        }
        let Some(Pending {
            record: Record::Data {
                mut entry, data, ..
            },
            done,
        }) = log.pending.pop_front()
        else {
            unreachable!("the front record is foreground data")
        };
        let first = batch.place(&mut entry);
        if extent.entries.is_empty() {
            extent.block = first;
        }
        extent.blocks += entry.data_blocks();
        extent.entries.push(entry);
        extent.dones.push(done);
        extent.payloads.push(data);
    }
    if extent.entries.is_empty() {
        return None;
    }
    extent.number = batch.start_extent();
    Some(extent)
}

/// Takes no more records into the open batch; it completes once its writes have.
fn close_open_batch(log: &mut LogState) {
    if let Some(batch) = log.open_batches.back_mut() {
        if !batch.closing {
            batch.closing = true;
            log.open[usize::from(HEAD_FOREGROUND)] = Some((batch.segment, batch.end()));
        }
    }
}

/// Sets `waiting` and counts in `waits` a wait that starts now (not one
/// already under way).
fn start_waiting(waiting: &mut bool, waits: &AtomicU64) {
    if !std::mem::replace(waiting, true) {
        waits.fetch_add(1, Ordering::Relaxed);
    }
}

/// Plans opening a batch for the foreground data record at the front of
/// `queue`: its header block and that record's blocks must fit.
fn plan_open_batch(queue: &VecDeque<Pending>) -> (BatchBuilder, bool) {
    let mut plan = BatchBuilder::new();
    if let Some(pending) = queue.front() {
        plan.add(pending.record.entry_len(), pending.record.data_blocks());
    }
    (plan, true)
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
    let op = write_op(
        offset,
        &batch.header_bytes,
        batch.payloads,
        batch.total_blocks,
    );
    // On the forming thread's local ring if it has one: the batch then completes
    // (and is applied) when that thread polls, with no hand-off.
    device.submit_here(
        op,
        Box::new(move |outcome| batch_done(&core2, seq, outcome.result.map_err(IoError::from))),
    );
}

fn batch_done(core: &Arc<Core>, seq: u64, result: Result<(), IoError>) {
    under_lock(core, |log, formed| {
        if let Some(batch) = log.inflight.get_mut(&seq) {
            batch.result = Some(result);
        }
        settle(core, log, formed);
    });
}

/// Applies completed batches in sequence order (and the open batch's imaged
/// entries when it is next), collects what waits for them, and forms more.
fn settle(core: &Arc<Core>, log: &mut LogState, formed: &mut Formed) {
    loop {
        while let Some(entry) = log.inflight.first_entry() {
            if entry.get().result.is_none() {
                break;
            }
            let batch = entry.remove();
            let outcome = match batch.result {
                Some(Ok(())) if !core.fenced.load(Ordering::Acquire) => {
                    let header = &batch.header;
                    let data_start = batch.block + u32::from(header.header_blocks);
                    apply_entries(
                        core,
                        log,
                        header.seq,
                        &header.entries[batch.applied_early..],
                        batch.segment,
                        data_start,
                    );
                    log.blocks_since_checkpoint += u64::from(header.total_blocks());
                    Ok(())
                }
                Some(Ok(())) => Err(IoError::Fenced),
                Some(Err(err)) => {
                    // An open batch that failed because the engine was
                    // already fenced says so with `Fenced`: nothing new to log.
                    if err != IoError::Fenced {
                        tracing::error!(%err, seq = batch.header.seq, "log write failed; fencing the engine");
                    }
                    core.fenced.store(true, Ordering::Release);
                    Err(err)
                }
                None => unreachable!("checked above"),
            };
            log.applied_seq = log.applied_seq.max(batch.header.seq);
            formed
                .acks
                .extend(batch.dones.into_iter().map(|d| (d, outcome.clone())));
        }
        if !advance_open_batches(core, log, formed) {
            break;
        }
    }
    let applied = log.applied_seq;
    let (due, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut log.after_applied)
        .into_iter()
        .partition(|(seq, _)| *seq <= applied);
    log.after_applied = waiting;
    formed
        .after_applied
        .extend(due.into_iter().map(|(_, then)| then));
    if log.blocks_since_checkpoint >= core.config.checkpoint_interval_blocks {
        core.request_checkpoint();
    }
    form_batches(core, log, formed);
}

/// Moves the open batches on: applies and acknowledges the oldest one's
/// imaged entries if every earlier batch is applied, starts their next images,
/// and hands complete ones to the in-order loop. Returns whether one completed.
fn advance_open_batches(core: &Arc<Core>, log: &mut LogState, formed: &mut Formed) -> bool {
    let fenced = core.fenced.load(Ordering::Acquire);
    let early = log.applied_seq + 1;
    let hold = log.hold_early_apply;
    let ready = log.open_batches.front().is_some_and(|batch| {
        batch.seq() == early && batch.failed.is_none() && batch.imaged > batch.applied
    });
    if ready && !hold && !fenced {
        // Out of the queue while applying, which needs the whole log state.
        if let Some(mut batch) = log.open_batches.pop_front() {
            let (from, to) = (batch.applied, batch.imaged);
            let data_start = batch.block + u32::from(OPEN_HEADER_BLOCKS);
            let entries = &batch.header.entries[from..to];
            apply_entries(core, log, early, entries, batch.segment, data_start);
            batch.applied = to;
            let dones = batch.dones.drain(..to - from);
            formed.acks.extend(dones.map(|d| (d, Ok(()))));
            log.open_batches.push_front(batch);
        }
    }
    let mut completed = false;
    let mut at = 0;
    while at < log.open_batches.len() {
        let batch = &mut log.open_batches[at];
        if fenced {
            batch.closing = true;
            batch.failed.get_or_insert(IoError::Fenced);
        }
        if let Some((bytes, count)) = batch.next_image() {
            formed.images.push(ReadyImage {
                seq: batch.seq(),
                segment: batch.segment,
                block: batch.block,
                bytes,
                count,
            });
        }
        if !batch.is_complete() {
            at += 1;
            continue;
        }
        let Some(batch) = log.open_batches.remove(at) else {
            break;
        };
        core.counters
            .header_blocks
            .fetch_add(u64::from(OPEN_HEADER_BLOCKS), Ordering::Relaxed);
        if let Some(inflight) = log.inflight.get_mut(&batch.seq()) {
            inflight.applied_early = batch.applied;
            inflight.dones = batch.dones;
            inflight.result = Some(batch.failed.map_or(Ok(()), Err));
            inflight.header = batch.header;
        }
        completed = true;
    }
    completed
}

/// The device write of `blocks` blocks at `offset`: `header` (zero-padded
/// to whole blocks, or empty) and then the payloads (whole blocks), which
/// cover them exactly. Written from the payloads' own buffers when every one
/// is block-aligned (data received into aligned buffers), so the data is not
/// copied once more; otherwise gathered into one buffer.
fn write_op(offset: u64, header: &[u8], payloads: Vec<Bytes>, blocks: u32) -> IoOp {
    if !payloads.iter().all(|payload| BlockParts::fits(payload)) {
        let buf = gather(header, &payloads, blocks);
        return IoOp::Write { offset, buf };
    }
    let mut parts = Vec::with_capacity(payloads.len() + 1);
    if !header.is_empty() {
        parts.push(Bytes::from_owner(AlignedBuf::copy_from(header)));
    }
    let header_parts = parts.len();
    parts.extend(payloads);
    match BlockParts::new(parts) {
        Ok(parts) => {
            assert_eq!(
                parts.len(),
                blocks as usize * BLOCK_SIZE,
                "header and payloads fill the blocks exactly"
            );
            IoOp::WriteParts { offset, parts }
        }
        Err(parts) => IoOp::Write {
            offset,
            buf: gather(header, &parts[header_parts..], blocks),
        },
    }
}

/// One device write's buffer of `blocks` blocks: `header` (zero-padded to
/// whole blocks, or empty) and then the payloads (whole blocks), which cover
/// it exactly, so it needs no clearing first.
fn gather(header: &[u8], payloads: &[Bytes], blocks: u32) -> AlignedBuf {
    let mut buf = AlignedBuf::for_overwrite(blocks as usize * BLOCK_SIZE);
    let bytes = buf.as_mut_slice();
    bytes[..header.len()].copy_from_slice(header);
    let mut at = header.len();
    for payload in payloads {
        bytes[at..at + payload.len()].copy_from_slice(payload);
        at += payload.len();
    }
    assert_eq!(
        at,
        bytes.len(),
        "header and payloads fill the blocks exactly"
    );
    buf
}

/// Writes an extent of the open batch (data only).
fn submit_extent(core: &Arc<Core>, extent: ReadyExtent) {
    core.counters
        .data_blocks
        .fetch_add(u64::from(extent.blocks), Ordering::Relaxed);
    let (device, offset) = core.pool.locate(extent.segment, extent.block);
    let core2 = core.clone();
    let ReadyExtent {
        seq,
        number,
        entries,
        dones,
        payloads,
        blocks,
        ..
    } = extent;
    device.submit_here(
        write_op(offset, &[], payloads, blocks),
        Box::new(move |outcome| {
            extent_done(
                &core2,
                (seq, number),
                entries,
                dones,
                outcome.result.map_err(IoError::from),
            )
        }),
    );
}

fn extent_done(
    core: &Arc<Core>,
    (seq, number): (u64, u64),
    entries: Vec<Entry>,
    dones: Vec<RecordDone>,
    result: Result<(), IoError>,
) {
    under_lock(core, |log, formed| {
        let batch = open_batch(log, seq);
        match result {
            Ok(()) => batch.extent_written(number, entries, dones),
            Err(err) => {
                batch.extent_written(number, Vec::new(), Vec::new());
                fail_open_batch(core, batch, err.clone(), "log write failed");
                formed
                    .acks
                    .extend(dones.into_iter().map(|d| (d, Err(err.clone()))));
            }
        }
        settle(core, log, formed);
    });
}

/// Open batch `seq`, which has a write in flight.
fn open_batch(log: &mut LogState, seq: u64) -> &mut OpenBatch {
    match log.open_batches.iter_mut().find(|b| b.seq() == seq) {
        Some(batch) => batch,
        None => unreachable!("an open batch completes only after its writes"),
    }
}

/// A write of `batch` failed: the engine fences and the batch completes with
/// the error.
fn fail_open_batch(core: &Core, batch: &mut OpenBatch, err: IoError, what: &str) {
    tracing::error!(%err, seq = batch.seq(), "{what}; fencing the engine");
    core.fenced.store(true, Ordering::Release);
    batch.failed.get_or_insert(err);
}

/// Writes an image of the open batch's header, through the page cache.
fn submit_image(core: &Arc<Core>, image: ReadyImage) {
    let buf = AlignedBuf::copy_from(&image.bytes);
    let (device, offset) = core.pool.locate(image.segment, image.block);
    let core2 = core.clone();
    let (seq, count) = (image.seq, image.count);
    device.submit_here(
        IoOp::WriteCached { offset, buf },
        Box::new(move |outcome| {
            image_done(&core2, seq, count, outcome.result.map_err(IoError::from))
        }),
    );
}

fn image_done(core: &Arc<Core>, seq: u64, count: usize, result: Result<(), IoError>) {
    under_lock(core, |log, formed| {
        let batch = open_batch(log, seq);
        match result {
            Ok(()) => batch.image_written(count),
            Err(err) => {
                batch.imaging = None;
                fail_open_batch(core, batch, err, "log header write failed")
            }
        }
        settle(core, log, formed);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(byte: u8, blocks: usize) -> Bytes {
        let mut buf = AlignedBuf::for_overwrite(blocks * BLOCK_SIZE);
        buf.as_mut_slice().fill(byte);
        Bytes::from_owner(buf)
    }

    fn written(op: IoOp) -> Vec<u8> {
        match op {
            IoOp::Write { buf, .. } => buf.as_slice().to_vec(),
            IoOp::WriteParts { parts, .. } => parts.parts().concat(),
            other => panic!("not a write: {other:?}"),
        }
    }

    #[test]
    fn aligned_payloads_are_written_from_their_own_buffers_and_others_gathered() {
        let header = vec![9u8; BLOCK_SIZE];
        let mut expected = header.clone();
        expected.extend([1u8; 2 * BLOCK_SIZE]);
        expected.extend([2u8; BLOCK_SIZE]);
        let payloads = vec![aligned(1, 2), aligned(2, 1)];
        let op = write_op(4096, &header, payloads, 4);
        assert!(matches!(&op, IoOp::WriteParts { parts, .. } if parts.parts().len() == 3));
        assert_eq!(written(op), expected);

        let unaligned = Bytes::from(vec![2u8; BLOCK_SIZE]);
        let op = write_op(4096, &header, vec![aligned(1, 2), unaligned], 4);
        assert!(
            matches!(op, IoOp::Write { .. }),
            "one unaligned payload: gathered"
        );
        assert_eq!(written(op), expected);

        let op = write_op(0, &[], vec![aligned(1, 2), aligned(2, 1)], 3);
        assert!(matches!(&op, IoOp::WriteParts { parts, .. } if parts.parts().len() == 2));
        assert_eq!(written(op), expected[BLOCK_SIZE..]);
    }

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
