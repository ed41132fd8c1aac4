//! Scrub: a paced background pass that reads every mapped block of every
//! volume and snapshot through the ordinary read path (which verifies each
//! block's crc), then checks the pool's metadata copies (superblocks, root
//! copies, the newest checkpoint body), and reports damaged blocks per volume.
//! Passes run every `scrub_interval` and on demand (`Engine::start_scrub`).
//!
//! INVARIANT: the scrub only reads; it never changes a map or a block, so it
//! cannot make damage worse or race writers into inconsistency. Metadata is
//! checked under the checkpoint gate, so no root is half-written while read.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

use crate::engine::Engine;
use crate::error::IoError;
use crate::recovery::RecoveryReport;
use crate::units::{VolumeId, BLOCK_SIZE_U64};

/// Largest run read at once, in 4 KiB blocks.
const RUN_BLOCKS: u64 = 32;
/// Delay from open to the first scheduled pass, so a restart storm does not
/// start a scrub on every start.
const FIRST_PASS_DELAY: Duration = Duration::from_secs(300);

/// Where scrubbing stands, and what the last completed pass found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ScrubStatus {
    /// A pass is running now.
    pub running: bool,
    /// Passes completed since open.
    pub passes_completed: u64,
    /// Blocks checked by the running pass, or by the last one when idle.
    pub blocks_checked: u64,
    /// Blocks the running (or last) pass set out to check.
    pub blocks_total: u64,
    /// Damaged blocks per volume or snapshot, from the last completed pass
    /// (until the first pass ends, what recovery found at open).
    pub damaged: Vec<VolumeDamage>,
    /// Damaged metadata the last pass found: superblock and root copies, and
    /// the newest checkpoint body.
    pub metadata_damaged: u32,
    /// When the running or last pass started (Unix seconds).
    pub last_started_unix_s: Option<u64>,
    /// When the last pass finished (Unix seconds).
    pub last_finished_unix_s: Option<u64>,
    /// The pace of a pass (0: unpaced).
    pub bytes_per_s: u64,
}

/// The damaged 4 KiB blocks of one volume or snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeDamage {
    /// The volume or snapshot.
    pub volume: VolumeId,
    /// Its damaged blocks, sorted.
    pub lbas: Vec<u64>,
}

/// The scrub state the engine and its scrub thread share.
pub(crate) struct Scrubber {
    status: Mutex<ScrubStatus>,
    requests: Sender<()>,
}

impl Scrubber {
    /// A scrubber whose known damage starts as what recovery found; returns
    /// the receiving end of its on-demand requests for the scrub thread.
    pub(crate) fn new(
        bytes_per_s: u64,
        recovery: &RecoveryReport,
    ) -> (Arc<Scrubber>, Receiver<()>) {
        let mut damaged: Vec<VolumeDamage> = Vec::new();
        for extent in &recovery.damaged_extents {
            let lbas = extent.lba..extent.lba + extent.blocks;
            match damaged.iter_mut().find(|d| d.volume == extent.volume) {
                Some(entry) => entry.lbas.extend(lbas),
                None => damaged.push(VolumeDamage {
                    volume: extent.volume,
                    lbas: lbas.collect(),
                }),
            }
        }
        for entry in &mut damaged {
            entry.lbas.sort_unstable();
            entry.lbas.dedup();
        }
        let (requests, requests_rx) = crossbeam_channel::bounded(1);
        let scrubber = Scrubber {
            status: Mutex::new(ScrubStatus {
                damaged,
                metadata_damaged: recovery.damaged_root_copies,
                bytes_per_s,
                ..ScrubStatus::default()
            }),
            requests,
        };
        (Arc::new(scrubber), requests_rx)
    }

    /// Asks for a pass now; false if one is already running. The pass shows
    /// as running from here on, before the scrub thread takes it up, so a
    /// caller polling for the end never reads the previous idle status.
    pub(crate) fn request(&self) -> bool {
        let mut status = self.status.lock();
        if status.running {
            return false;
        }
        status.running = true;
        status.blocks_checked = 0;
        drop(status);
        let _ = self.requests.try_send(());
        true
    }

    /// A copy of the current status.
    pub(crate) fn status(&self) -> ScrubStatus {
        self.status.lock().clone()
    }
}

/// The scrub thread: a pass every `interval` (the first after
/// [`FIRST_PASS_DELAY`]) and whenever one is requested, until `stop` closes.
pub(crate) fn run_scrubber(
    engine: Engine,
    scrubber: Arc<Scrubber>,
    requests: Receiver<()>,
    stop: Receiver<()>,
    interval: Option<Duration>,
) {
    let mut next_due = interval.map(|_| Instant::now() + FIRST_PASS_DELAY);
    loop {
        let wait = next_due.map_or(Duration::from_secs(3600), |due| {
            due.saturating_duration_since(Instant::now())
        });
        crossbeam_channel::select! {
            recv(stop) -> _ => return,
            recv(requests) -> request => if request.is_err() { return },
            default(wait) => {
                if next_due.is_none_or(|due| Instant::now() < due) {
                    continue;
                }
            }
        }
        if !run_pass(&engine, &scrubber, &stop) {
            return;
        }
        next_due = interval.map(|every| Instant::now() + every);
    }
}

/// One pass; false if `stop` closed during it.
fn run_pass(engine: &Engine, scrubber: &Scrubber, stop: &Receiver<()>) -> bool {
    let maps: Vec<(VolumeId, Vec<(u64, u64)>)> = engine
        .volumes()
        .into_iter()
        .chain(engine.snapshots())
        .filter_map(|info| {
            engine
                .mapped_runs(info.id, RUN_BLOCKS)
                .map(|runs| (info.id, runs))
        })
        .collect();
    let total: u64 = maps
        .iter()
        .flat_map(|(_, runs)| runs.iter().map(|(_, blocks)| blocks))
        .sum();
    let bytes_per_s = {
        let mut status = scrubber.status.lock();
        status.running = true;
        status.blocks_checked = 0;
        status.blocks_total = total;
        status.last_started_unix_s = Some(unix_now());
        status.bytes_per_s
    };
    tracing::info!(blocks = total, "scrub pass started");
    let started = Instant::now();
    let mut checked = 0u64;
    let mut damaged = Vec::new();
    for (volume, runs) in maps {
        let mut lbas = Vec::new();
        for (first, blocks) in runs {
            match check_run(engine, volume, first, blocks, &mut lbas) {
                Ok(()) => {}
                // Deleted or shrunk during the pass: nothing left to check.
                Err(IoError::NoSuchVolume(_) | IoError::OutOfRange { .. }) => break,
                Err(err) => {
                    tracing::warn!(%volume, first, %err, "scrub could not read a run");
                }
            }
            checked += blocks;
            scrubber.status.lock().blocks_checked = checked;
            if !pace(stop, started, checked, bytes_per_s) {
                scrubber.status.lock().running = false;
                return false;
            }
        }
        if !lbas.is_empty() {
            tracing::error!(%volume, blocks = lbas.len(), first = lbas[0], "scrub found damaged blocks");
            damaged.push(VolumeDamage { volume, lbas });
        }
    }
    let metadata_damaged = engine.check_metadata();
    if metadata_damaged > 0 {
        tracing::error!(
            copies = metadata_damaged,
            "scrub found damaged pool metadata"
        );
    }
    let damaged_blocks: usize = damaged.iter().map(|d| d.lbas.len()).sum();
    let mut status = scrubber.status.lock();
    status.running = false;
    status.passes_completed += 1;
    status.damaged = damaged;
    status.metadata_damaged = metadata_damaged;
    status.last_finished_unix_s = Some(unix_now());
    tracing::info!(
        blocks = checked,
        damaged_blocks,
        metadata_damaged,
        "scrub pass finished"
    );
    true
}

/// Reads one run; a media error is narrowed down block by block into `lbas`.
fn check_run(
    engine: &Engine,
    volume: VolumeId,
    first: u64,
    blocks: u64,
    lbas: &mut Vec<u64>,
) -> Result<(), IoError> {
    match engine.read_blocks_wait(volume, first, blocks) {
        Err(IoError::Media { .. }) => {}
        other => return other.map(|_| ()),
    }
    for lba in first..first + blocks {
        match engine.read_blocks_wait(volume, lba, 1) {
            Ok(_) => {}
            Err(IoError::Media { .. }) => lbas.push(lba),
            Err(err) => return Err(err),
        }
    }
    Ok(())
}

/// Sleeps until `checked` blocks are due at `bytes_per_s`; false if `stop`
/// closed meanwhile.
fn pace(stop: &Receiver<()>, started: Instant, checked: u64, bytes_per_s: u64) -> bool {
    let wait = if bytes_per_s == 0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64((checked * BLOCK_SIZE_U64) as f64 / bytes_per_s as f64)
            .saturating_sub(started.elapsed())
    };
    !matches!(
        stop.recv_timeout(wait),
        Ok(()) | Err(RecvTimeoutError::Disconnected)
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
