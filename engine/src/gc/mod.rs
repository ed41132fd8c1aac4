//! Garbage collection: when free segments run low, pick sealed segments whose
//! data is partly dead, copy their live blocks to the head of the log as
//! `Relocate` records, and let the emptied segments be freed (after the flush and
//! checkpoint the segment table's invariant asks for).
//!
//! A victim's live blocks are found from its own batch headers, read with its
//! data (see [`live`]); only where those fall short does a round walk every
//! map, O(mapped blocks), which is one reason a round cleans several victims
//! at once.
//!
//! INVARIANT: victims stay pinned from selection until their relocations are
//! applied, so a victim cannot be freed, reused and rewritten in between; a
//! relocation therefore never mistakes new data at an old address for the block
//! it copied.

mod live;
mod victim_read;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::core::{Core, GcPolicy};
use crate::datapath::flush::flush_wait;
use crate::error::IoError;
use crate::format::{HEAD_COLLECTOR, HEAD_FOREGROUND};
use crate::index::Packing;
use crate::log::segments::SegmentState;
use crate::log::{
    append_collected, checkpoint_reserve, collector_reserve_segments, collector_room, Pending,
};
use crate::units::SegmentId;
use live::LiveBlock;

/// How often an idle collector checks the free space on its own.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Most victims cleaned in one round (at most one walk of the maps).
const VICTIMS_PER_ROUND: usize = 4;
/// Rounds in a row that free nothing before the collector pauses until its next
/// wake or poll (it never declares itself stalled while it still finds victims).
const FRUITLESS_ROUNDS_MAX: u32 = 3;

/// The collector thread: sleeps until woken or polled, then cleans while free
/// space is below the watermark.
pub(crate) fn run_collector(core: Arc<Core>, wake: Receiver<()>, stop: Receiver<()>) {
    loop {
        crossbeam_channel::select! {
            recv(wake) -> _ => {}
            recv(stop) -> _ => return,
            default(IDLE_POLL) => {}
        }
        if core.fenced.load(Ordering::Acquire) || !space_is_low(&core) {
            continue;
        }
        let mut fruitless_rounds = 0;
        loop {
            if stop.try_recv() != Err(crossbeam_channel::TryRecvError::Empty) {
                return;
            }
            let free_before = free_blocks(&core);
            let outcome = collect_round(&core);
            if free_blocks(&core) > free_before {
                fruitless_rounds = 0;
            } else {
                fruitless_rounds += 1;
            }
            match outcome {
                Ok(true)
                    if fruitless_rounds < FRUITLESS_ROUNDS_MAX && space_is_below_target(&core) =>
                {
                    continue
                }
                // Rounds that cleaned but freed nothing yet (victims wait for a
                // flush or checkpoint, relocations took segments) are progress,
                // not a stall: pause until the next wake or poll.
                Ok(true) => break,
                Ok(false) => {
                    // Nothing worth cleaning (`collect_round` marked it):
                    // let waiting writers fail cleanly.
                    crate::log::kick(&core);
                    break;
                }
                Err(err) => {
                    tracing::warn!(%err, "garbage collection round failed");
                    break;
                }
            }
        }
    }
}

/// Blocks the log can still be appended to: the free segments and what
/// remains of the heads' open ones. A round's progress, which may show only
/// in the collector head's segment (it freed as many segments as its copies
/// filled).
fn free_blocks(core: &Core) -> u64 {
    let log = core.log.lock();
    let per_segment = core.pool.blocks_per_segment;
    log.segments.allocatable() as u64 * u64::from(per_segment)
        + log.head_remainder(HEAD_FOREGROUND, per_segment)
        + log.head_remainder(HEAD_COLLECTOR, per_segment)
}

/// Free segments at or below which collection starts: the configured share,
/// and at least a round's victims above the foreground's floor (the
/// checkpoint reserve, one more and the collector's reserve), so foreground
/// writes go on while a round copies instead of waiting for it.
fn low_watermark(core: &Core, reserve: usize) -> usize {
    let share =
        core.pool.segment_count() as usize * core.config.gc_free_low_permille as usize / 1000;
    share.max(
        reserve
            + 1
            + collector_reserve_segments(
                core.pool.segment_count() as usize,
                core.pool.blocks_per_segment,
            )
            + VICTIMS_PER_ROUND
            + 1,
    )
}

/// Whether writers wait for room or free segments are fewer than `limit` of the
/// low watermark.
fn free_below(core: &Core, limit: impl Fn(usize) -> usize) -> bool {
    let log = core.log.lock();
    let reserve = checkpoint_reserve(core, &log);
    log.has_waiting_records() || log.segments.allocatable() < limit(low_watermark(core, reserve))
}

/// Collection starts at the low watermark...
fn space_is_low(core: &Core) -> bool {
    free_below(core, |low| low + 1)
}

/// ...and goes on until a round's victims more than that are free.
fn space_is_below_target(core: &Core) -> bool {
    free_below(core, |low| low + VICTIMS_PER_ROUND)
}

/// Unpins the victims when a round ends, however it ends; a victim whose
/// copies have landed is released early.
struct Pinned<'a> {
    core: &'a Core,
    segments: Vec<SegmentId>,
}

impl Pinned<'_> {
    fn release(&mut self, victim: SegmentId) {
        if let Some(at) = self.segments.iter().position(|s| *s == victim) {
            self.segments.swap_remove(at);
            self.core.pins.unpin(victim);
        }
    }
}

impl Drop for Pinned<'_> {
    fn drop(&mut self) {
        for segment in &self.segments {
            self.core.pins.unpin(*segment);
        }
    }
}

/// One victim's copies in flight: how many have not answered yet.
struct VictimCopies {
    segment: SegmentId,
    outstanding: usize,
    answers: Receiver<Result<(), IoError>>,
}

impl VictimCopies {
    /// Takes the answers that have arrived (all of them when `block`); true
    /// once every copy has landed. A failed copy fails the round.
    fn settle(&mut self, block: bool) -> Result<bool, IoError> {
        while self.outstanding > 0 {
            let answer = if block {
                self.answers.recv().map_err(|_| IoError::Fenced)?
            } else {
                match self.answers.try_recv() {
                    Ok(answer) => answer,
                    Err(crossbeam_channel::TryRecvError::Empty) => return Ok(false),
                    Err(crossbeam_channel::TryRecvError::Disconnected) => {
                        return Err(IoError::Fenced)
                    }
                }
            };
            answer?;
            self.outstanding -= 1;
        }
        Ok(true)
    }
}

/// Cleans up to [`VICTIMS_PER_ROUND`] segments. Returns false when no segment is
/// worth cleaning. Rounds never overlap.
pub(crate) fn collect_round(core: &Arc<Core>) -> Result<bool, IoError> {
    let _gate = core.collector_gate.lock();
    let (segments, generation) = choose_victims(core);
    if segments.is_empty() {
        core.collector_stalled_at
            .store(generation, Ordering::Release);
        return Ok(false);
    }
    let chosen = segments.clone();
    let mut victims = Pinned { core, segments };
    // Walked for the whole round at most once, when some victim's headers
    // fall short.
    let mut walked: Option<HashMap<SegmentId, Vec<LiveBlock>>> = None;
    let mut in_flight: Vec<VictimCopies> = Vec::new();
    for &victim in &chosen {
        let (done_tx, answers) = crossbeam_channel::unbounded();
        let records = victim_copies(core, victim, &chosen, &mut walked, &done_tx)?;
        in_flight.push(VictimCopies {
            segment: victim,
            outstanding: records.len(),
            answers,
        });
        // One victim's copies queued together fill whole batches.
        append_collected(core, records);
        // Victims whose copies landed while this one was read free now, so
        // foreground writes waiting for room wait for one victim, not a round.
        release_settled(core, &mut victims, &mut in_flight, false)?;
    }
    release_settled(core, &mut victims, &mut in_flight, true)?;
    core.counters
        .cleaned_segments
        .fetch_add(chosen.len() as u64, Ordering::Relaxed);
    if checkpoint_wanted(core, &chosen) {
        // A victim holds batches no checkpoint covers yet: only a checkpoint
        // (which also flushes) lets it be reused.
        crate::checkpoint::write_checkpoint(core).map_err(|e| match e {
            crate::error::CheckpointError::Io(io) => io,
            _ => IoError::NoSpace,
        })?;
    }
    Ok(true)
}

/// The collector's copies of `victim`'s live blocks, each answering on
/// `done`: found from its headers, or else from the round's one walk of every
/// map (`walked`, made for all of `chosen` the first time it is needed).
fn victim_copies(
    core: &Core,
    victim: SegmentId,
    chosen: &[SegmentId],
    walked: &mut Option<HashMap<SegmentId, Vec<LiveBlock>>>,
    done: &crossbeam_channel::Sender<Result<(), IoError>>,
) -> Result<Vec<Pending>, IoError> {
    let (live, places) = {
        let log = core.log.lock();
        (
            log.segments.live_in(victim),
            log.segments.batch_places(victim),
        )
    };
    let Some(last) = live.iter().rposition(|&l| l) else {
        return Ok(Vec::new());
    };
    let (device, offset) = core.pool.locate(victim, 0);
    let image = match &places {
        Some(places) => {
            victim_read::read_pieces(device, offset, &victim_read::plan_pieces(&live, places))?
        }
        None => victim_read::read_whole(device, offset, last as u32 + 1)?,
    };
    core.counters
        .gc_read_blocks
        .fetch_add(image.blocks_read(), Ordering::Relaxed);
    let mut blocks = match live::from_headers(core, victim, &image, places.as_deref(), &live) {
        Some(blocks) => blocks,
        None => {
            let walked = walked.get_or_insert_with(|| {
                core.counters.gc_map_walks.fetch_add(1, Ordering::Relaxed);
                live::by_walking_maps(core, chosen)
            });
            walked.remove(&victim).unwrap_or_default()
        }
    };
    blocks.sort_unstable_by_key(|b| b.location);
    let mut records = Vec::with_capacity(blocks.len());
    for block in blocks {
        let at = core.pool.split(block.location).1;
        // Every block of a live unit is live and lies in one batch, so the
        // image holds it whole (see `victim_read`); a block the walk found
        // outside it came alive after the live mask was taken: impossible
        // while pinned.
        let Some(content) = image.blocks(at, block.stored_blocks() as u32) else {
            // Left in place: the victim keeps a live block, so it is not
            // freed, and a later round looks at it again.
            tracing::error!(
                location = block.location.0,
                "garbage collection found a live block outside what it read of its victim"
            );
            continue;
        };
        if block.packing == Packing::RAW && crc32c::crc32c(&content) != block.members[0].2 {
            // Moved as it is: the stored crc keeps reporting the damage on read.
            tracing::error!(
                location = block.location.0,
                "garbage collection found a block failing its checksum"
            );
        }
        let tx = done.clone();
        records.push(Pending {
            record: block.record(content),
            done: Box::new(move |result| {
                let _ = tx.send(result);
            }),
        });
    }
    Ok(records)
}

/// Whether some of `victims` holds batches newer than the last checkpoint.
fn checkpoint_wanted(core: &Core, victims: &[SegmentId]) -> bool {
    let log = core.log.lock();
    victims
        .iter()
        .any(|s| log.segments.get(*s).max_seq >= log.covered_seq)
}

/// Releases, in order, the victims whose copies have all landed (waiting for
/// them when `block`), then flushes so the relocations are durable and the
/// emptied victims a checkpoint already covers are freed.
fn release_settled(
    core: &Arc<Core>,
    victims: &mut Pinned<'_>,
    in_flight: &mut Vec<VictimCopies>,
    block: bool,
) -> Result<(), IoError> {
    let mut released = 0;
    for copies in in_flight.iter_mut() {
        if !copies.settle(block)? {
            break;
        }
        victims.release(copies.segment);
        released += 1;
    }
    in_flight.drain(..released);
    if released > 0 {
        flush_wait(core)?;
    }
    Ok(())
}

/// Picks and pins the sealed segments most worth cleaning under the configured
/// policy, with the `freed_generation` the choice saw. A segment qualifies only
/// if cleaning it frees at least an eighth of it (less when space runs low or
/// writers wait for room, see below).
fn choose_victims(core: &Core) -> (Vec<SegmentId>, u64) {
    let log = core.log.lock();
    // Batches apply under the log lock: no block is released during the scan.
    let generation = core.freed_generation.load(Ordering::Acquire);
    let per_segment = core.pool.blocks_per_segment;
    let reserve = checkpoint_reserve(core, &log);
    // Cleaning a segment with live share u writes 1/(1-u) blocks per block freed:
    // segments more than 7/8 live are not worth it; when space runs low,
    // anything that frees more than a sixteenth of a segment is; and while
    // writers wait for room, any segment whose copies surely take less room
    // than it frees (`relocation_blocks` errs high, so every round gains
    // room and an overwrite of a full pool always finishes).
    let waiting = log.has_waiting_records();
    let low = log.segments.allocatable()
        <= reserve + collector_reserve_segments(log.segments.info.len(), per_segment) + 1;
    let worth = |live: u32| {
        if waiting {
            relocation_blocks(live) < u64::from(per_segment)
        } else if low {
            live < per_segment - per_segment / 16
        } else {
            live <= per_segment / 8 * 7
        }
    };
    let now = log.next_seq;
    let mut candidates: Vec<(f64, SegmentId)> = log
        .segments
        .info
        .iter()
        .enumerate()
        .filter(|(_, info)| {
            info.state == SegmentState::Sealed && info.live_blocks > 0 && worth(info.live_blocks)
        })
        .map(|(at, info)| {
            let used = f64::from(info.live_blocks) / f64::from(per_segment);
            let score = match core.config.gc_policy {
                GcPolicy::Greedy => 1.0 - used,
                GcPolicy::CostBenefit => {
                    (1.0 - used) * (now.saturating_sub(info.max_seq) + 1) as f64 / (1.0 + used)
                }
            };
            (score, SegmentId(at as u32))
        })
        .collect();
    candidates.sort_unstable_by(|a, b| b.0.total_cmp(&a.0));
    // Take victims while their live blocks surely fit in the room the
    // collector may write to (the foreground always leaves it
    // `collector_reserve_segments` of it), so a round never stops half done
    // for want of space with its victims not yet freed.
    let mut room = collector_room(core, &log, reserve);
    let mut victims = Vec::new();
    for (_, segment) in candidates {
        if victims.len() == VICTIMS_PER_ROUND {
            break;
        }
        let need = relocation_blocks(log.segments.get(segment).live_blocks);
        if need <= room {
            room -= need;
            victims.push(segment);
        }
    }
    for victim in &victims {
        core.pins.pin(*victim);
    }
    (victims, generation)
}

/// Blocks that relocating `live` blocks can take in the log: the blocks, a
/// header block per 64 of them (a relocate entry takes 40 bytes for a raw
/// block; a unit's is longer but carries up to 8 blocks) and 16 for a
/// segment's tail that the next record did not fit in (a record is at most
/// 8 blocks, its header at most a few more).
fn relocation_blocks(live: u32) -> u64 {
    let live = u64::from(live);
    live + live.div_ceil(64) + 16
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use crate::format::{BatchHeader, Entry, HEAD_COLLECTOR, HEAD_FOREGROUND};
    use crate::io::read_blocking;
    use crate::testing::{reopen, sim_pool};
    use crate::units::{SegmentId, BLOCK_SIZE};
    use crate::{Engine, SectorSize};

    /// The batches each segment holds in its current life: from block 0, one
    /// after another while their seqs rise (older lives' leftovers do not).
    fn batches_by_segment(engine: &Engine) -> Vec<Vec<BatchHeader>> {
        let pool = &engine.core.pool;
        (0..pool.segment_count())
            .map(|at| {
                let (device, offset) = pool.locate(SegmentId(at), 0);
                let bytes = read_blocking(device, offset, pool.segment_bytes() as usize)
                    .expect("read a segment");
                let mut found: Vec<BatchHeader> = Vec::new();
                let mut block = 0usize;
                while block < pool.blocks_per_segment as usize {
                    let Ok(header) = BatchHeader::decode(&bytes.as_slice()[block * BLOCK_SIZE..])
                    else {
                        break;
                    };
                    if header.pool_uuid != pool.uuid
                        || header.segment != at
                        || found.last().is_some_and(|last| last.seq >= header.seq)
                    {
                        break;
                    }
                    block += header.total_blocks() as usize;
                    found.push(header);
                }
                found
            })
            .collect()
    }

    fn relocates(entry: &Entry) -> bool {
        matches!(entry, Entry::Relocate { .. } | Entry::RelocateUnit { .. })
    }

    /// Blocks the tests' volume fills.
    const FILLED: u64 = 3072;

    fn block(seed: u8) -> Bytes {
        Bytes::from(vec![seed; BLOCK_SIZE])
    }

    /// A pool in memory with a 16 MiB volume whose first [`FILLED`] blocks
    /// hold `block(1)`.
    fn filled_volume() -> (Engine, crate::VolumeId) {
        let (_, engine) = sim_pool(64 << 20);
        let vol = engine
            .create_volume("v", 16 << 20, SectorSize::B4096)
            .expect("create")
            .id;
        for lba in 0..FILLED {
            engine.write_wait(vol, lba, block(1)).expect("fill");
        }
        (engine, vol)
    }

    /// Every filled block reads back as `block(expected(lba))` and the
    /// space accounting is exact.
    fn assert_contents(engine: &Engine, vol: crate::VolumeId, expected: impl Fn(u64) -> u8) {
        for lba in 0..FILLED {
            assert_eq!(
                engine.read_wait(vol, lba, 1).expect("read"),
                block(expected(lba)),
                "block {lba}"
            );
        }
        assert!(engine.audit_space().is_clean());
    }

    #[test]
    fn the_collectors_copies_go_to_segments_of_their_own() {
        let (engine, vol) = filled_volume();
        // Every other block overwritten: each filled segment is half dead.
        for round in 0..3u8 {
            for lba in (0..FILLED).step_by(2) {
                engine
                    .write_wait(vol, lba, block(2 + round))
                    .expect("overwrite");
            }
            while engine.collect_garbage().expect("collect") {}
            // Fresh writes between rounds keep the foreground head moving.
            engine
                .write_wait(vol, FILLED + u64::from(round), block(9))
                .expect("write");
        }
        assert!(
            engine.pool_stats().gc_relocated_bytes > 0,
            "nothing was copied"
        );

        let segments = batches_by_segment(&engine);
        let mut collector_segments = 0;
        for (at, batches) in segments.iter().enumerate() {
            let collector = batches.iter().filter(|b| b.head == HEAD_COLLECTOR).count();
            if collector == 0 {
                assert!(
                    batches.iter().all(|b| !b.entries.iter().any(relocates)),
                    "segment {at}: a copy on the foreground head"
                );
                continue;
            }
            collector_segments += 1;
            assert_eq!(collector, batches.len(), "segment {at} mixes the heads");
            assert!(
                batches.iter().all(|b| b.entries.iter().all(relocates)),
                "segment {at}: a fresh write on the collector head"
            );
        }
        assert!(
            collector_segments > 0,
            "no segment holds the collector's copies"
        );
        assert!(
            segments.iter().flatten().any(|b| b.head == HEAD_FOREGROUND
                && b.entries
                    .iter()
                    .any(|e| matches!(e, Entry::Write { lba, .. } if *lba >= FILLED))),
            "the fresh writes are on the foreground head"
        );
        assert_contents(&engine, vol, |lba| if lba % 2 == 0 { 4 } else { 1 });
    }

    #[test]
    fn replay_follows_both_heads_from_a_checkpoint_taken_mid_segment() {
        let (sim, engine) = sim_pool(64 << 20);
        let vol = engine
            .create_volume("v", 16 << 20, SectorSize::B4096)
            .expect("create")
            .id;
        let block = |seed: u8| Bytes::from(vec![seed; 4096]);
        let mut expected = vec![1u8; 3072];
        for lba in 0..3072u64 {
            engine.write_wait(vol, lba, block(1)).expect("fill");
        }
        for lba in (0..3072u64).step_by(3) {
            engine.write_wait(vol, lba, block(2)).expect("overwrite");
            expected[lba as usize] = 2;
        }
        assert!(engine.collect_garbage().expect("collect"));
        // The root names the collector head open mid-segment; the next round's
        // victims are all older than it, so that round writes no checkpoint.
        engine.checkpoint().expect("checkpoint");
        let at_checkpoint = engine.core.log.lock().open[usize::from(HEAD_COLLECTOR)];
        assert!(engine.collect_garbage().expect("collect"));
        let after = engine.core.log.lock().open[usize::from(HEAD_COLLECTOR)];
        let (Some((segment, from)), Some(_)) = (at_checkpoint, after) else {
            panic!("the collector head is not open: {at_checkpoint:?} {after:?}")
        };
        // The round's first copies went where the root says the head goes on.
        let (device, offset) = engine.core.pool.locate(segment, from);
        let first = read_blocking(device, offset, 16 * BLOCK_SIZE).expect("read");
        let header = BatchHeader::decode(first.as_slice()).expect("a batch where the root points");
        assert!(
            from > 0 && header.head == HEAD_COLLECTOR,
            "{at_checkpoint:?}"
        );
        // Fresh writes after the copies: replay must pass the copies to reach them.
        for lba in (1..3072u64).step_by(7) {
            engine.write_wait(vol, lba, block(3)).expect("write");
            expected[lba as usize] = 3;
        }
        drop(engine);
        sim.crash(crate::io::CrashMode::KeepAll);
        let engine = reopen(&sim);
        for lba in 0..3072u64 {
            assert_eq!(
                engine.read_wait(vol, lba, 1).expect("read"),
                block(expected[lba as usize]),
                "block {lba}"
            );
        }
        let audit = engine.audit_space();
        assert!(audit.is_clean(), "{:?}", audit.mismatches);
    }

    #[test]
    fn a_round_reads_its_victims_headers_and_live_blocks_only() {
        let (engine, vol) = filled_volume();
        // Three blocks in four die: the first fill's segments are a quarter live.
        for lba in (0..FILLED).filter(|lba| lba % 4 != 0) {
            engine.write_wait(vol, lba, block(2)).expect("overwrite");
        }
        let before = engine.pool_stats();
        assert!(engine.collect_garbage().expect("collect"));
        let after = engine.pool_stats();
        let cleaned = after.gc_cleaned_segments - before.gc_cleaned_segments;
        let read = after.gc_read_bytes - before.gc_read_bytes;
        let relocated = after.gc_relocated_bytes - before.gc_relocated_bytes;
        assert!(cleaned > 0 && relocated > 0);
        let whole = cleaned * engine.core.pool.segment_bytes();
        assert!(
            read >= relocated && read < whole / 2,
            "read {read} bytes to relocate {relocated} from {cleaned} victims of {whole} bytes"
        );
        assert_contents(&engine, vol, |lba| if lba % 4 == 0 { 1 } else { 2 });
    }
}
