//! Thick clones: a background job that copies every mapped block of a snapshot
//! into a new, independent volume (its own lineage: it shares nothing with the
//! source), optionally reads both sides back to verify, and only then clears
//! the destination's "incomplete" flag.
//!
//! INVARIANT: a destination is marked complete only after every copied block is
//! durable (the flag record is appended after the last copy and flushed), so a
//! crash leaves it either complete or visibly incomplete, never half-built and
//! claimed complete. After a restart an incomplete destination stays incomplete:
//! jobs do not resume, their owner reports them failed and deletes the volume.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::engine::Engine;
use crate::error::{IoError, VolumeError};
use crate::format::{VOLUME_FLAG_COMPRESS, VOLUME_FLAG_INCOMPLETE};
use crate::units::{SectorSize, VolumeId, BLOCK_SIZE_U64};

/// Largest piece copied at once, in blocks.
const PIECE_BLOCKS: u64 = 256;

/// What a thick clone should produce.
#[derive(Clone, Debug, Default)]
pub struct ThickCloneOptions {
    /// Destination size (default and minimum: the snapshot's).
    pub size_bytes: Option<u64>,
    /// Destination sector size (default: the snapshot's).
    pub sector: Option<SectorSize>,
    /// Compress the destination's data.
    pub compression: bool,
    /// Read source and destination back after copying and compare them.
    pub verify: bool,
    /// Copy at most this many bytes per second (None: as fast as one stream goes),
    /// so foreground I/O keeps its share of the device.
    pub max_bytes_per_s: Option<u64>,
}

/// Where a thick clone job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CloneState {
    /// Copying or verifying.
    Running,
    /// The destination is complete and independent of the source.
    Completed,
    /// Stopped on an error; the destination is incomplete.
    Failed(String),
    /// Stopped on request; the destination is incomplete.
    Cancelled,
}

/// The step a running job is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloneStage {
    /// Copying blocks.
    Copying,
    /// Reading both sides back.
    Verifying,
    /// Making the destination durable and marking it complete.
    Finishing,
    /// Nothing left to do (see the state).
    Done,
}

/// A snapshot of a job's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneProgress {
    /// The job's state.
    pub state: CloneState,
    /// The step it is in.
    pub stage: CloneStage,
    /// The destination volume.
    pub destination: VolumeId,
    /// Bytes copied (and, while verifying, bytes verified) so far.
    pub done_bytes: u64,
    /// Bytes to copy (the snapshot's mapped bytes; twice that with verification).
    pub total_bytes: u64,
}

struct JobState {
    destination: VolumeId,
    done_bytes: AtomicU64,
    total_bytes: u64,
    cancel: AtomicBool,
    outcome: Mutex<(CloneState, CloneStage)>,
    finished: parking_lot::Condvar,
}

/// A handle on a running or finished thick clone job. Cheap to clone.
#[derive(Clone)]
pub struct CloneJob(Arc<JobState>);

impl CloneJob {
    /// Current progress.
    pub fn progress(&self) -> CloneProgress {
        let (state, stage) = self.0.outcome.lock().clone();
        CloneProgress {
            state,
            stage,
            destination: self.0.destination,
            done_bytes: self.0.done_bytes.load(Ordering::Relaxed),
            total_bytes: self.0.total_bytes,
        }
    }

    /// Asks the job to stop; it ends Cancelled unless it already finished.
    pub fn cancel(&self) {
        self.0.cancel.store(true, Ordering::Release);
    }

    /// Waits until the job ends, at most `timeout`; returns the progress then.
    pub fn wait(&self, timeout: Duration) -> CloneProgress {
        let deadline = Instant::now() + timeout;
        let mut outcome = self.0.outcome.lock();
        while outcome.0 == CloneState::Running {
            if self
                .0
                .finished
                .wait_until(&mut outcome, deadline)
                .timed_out()
            {
                break;
            }
        }
        drop(outcome);
        self.progress()
    }

    fn set(&self, state: CloneState, stage: CloneStage) {
        let mut outcome = self.0.outcome.lock();
        *outcome = (state, stage);
        self.0.finished.notify_all();
    }

    fn set_stage(&self, stage: CloneStage) {
        self.0.outcome.lock().1 = stage;
    }

    fn cancelled(&self) -> bool {
        self.0.cancel.load(Ordering::Acquire)
    }
}

/// A run of mapped blocks `[first, first + blocks)` of the source.
type Run = (u64, u64);

impl Engine {
    /// Creates volume `name` and starts filling it from `snapshot` in the
    /// background. The volume exists (incomplete) at once; poll the returned job.
    pub fn start_thick_clone(
        &self,
        snapshot: VolumeId,
        name: &str,
        options: ThickCloneOptions,
    ) -> Result<CloneJob, VolumeError> {
        let source = self
            .volume(snapshot)
            .ok_or_else(|| VolumeError::NotFound(snapshot.to_string()))?;
        if source.kind != crate::format::VolumeKind::Snapshot {
            return Err(VolumeError::NotSnapshot(snapshot));
        }
        let size_bytes = options.size_bytes.unwrap_or(source.size_bytes);
        if size_bytes < source.size_bytes {
            return Err(VolumeError::Shrink {
                from: source.size_bytes,
                to: size_bytes,
            });
        }
        let runs = self.mapped_runs_of(snapshot)?;
        let flags = VOLUME_FLAG_INCOMPLETE
            | if options.compression {
                VOLUME_FLAG_COMPRESS
            } else {
                0
            };
        let sector = options.sector.unwrap_or(source.sector_size);
        let destination = self.create_volume_with(name, size_bytes, sector, flags)?;
        let mapped: u64 = runs.iter().map(|(_, blocks)| blocks * BLOCK_SIZE_U64).sum();
        let job = CloneJob(Arc::new(JobState {
            destination: destination.id,
            done_bytes: AtomicU64::new(0),
            total_bytes: if options.verify { 2 * mapped } else { mapped },
            cancel: AtomicBool::new(false),
            outcome: Mutex::new((CloneState::Running, CloneStage::Copying)),
            finished: parking_lot::Condvar::new(),
        }));
        let view = self.view();
        let handle = job.clone();
        let spawned = std::thread::Builder::new().name("keel-thick-clone".into()).spawn(move || {
            let (state, stage) = match run_job(&view, &handle, snapshot, &runs, &options) {
                Ok(()) => (CloneState::Completed, CloneStage::Done),
                Err(JobEnd::Cancelled) => (CloneState::Cancelled, CloneStage::Done),
                Err(JobEnd::Failed(why)) => {
                    tracing::warn!(destination = %handle.0.destination, %why, "thick clone failed");
                    (CloneState::Failed(why), CloneStage::Done)
                }
            };
            handle.set(state, stage);
        });
        if spawned.is_err() {
            let _ = self.delete_volume(destination.id);
            return Err(VolumeError::Io(IoError::Invalid(
                "cannot start a clone job thread",
            )));
        }
        self.remember_job(job.clone());
        Ok(job)
    }

    /// The snapshot's mapped blocks as runs of at most [`PIECE_BLOCKS`].
    fn mapped_runs_of(&self, snapshot: VolumeId) -> Result<Vec<Run>, VolumeError> {
        self.mapped_runs(snapshot, PIECE_BLOCKS)
            .ok_or_else(|| VolumeError::NotFound(snapshot.to_string()))
    }
}

enum JobEnd {
    Cancelled,
    Failed(String),
}

impl From<IoError> for JobEnd {
    fn from(err: IoError) -> JobEnd {
        JobEnd::Failed(err.to_string())
    }
}

fn run_job(
    engine: &Engine,
    job: &CloneJob,
    source: VolumeId,
    runs: &[Run],
    options: &ThickCloneOptions,
) -> Result<(), JobEnd> {
    let destination = job.0.destination;
    let started = Instant::now();
    let pace = |done: u64| {
        if let Some(rate) = options.max_bytes_per_s.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    };
    for &(first, blocks) in runs {
        if job.cancelled() {
            return Err(JobEnd::Cancelled);
        }
        let data = engine.read_blocks_wait(source, first, blocks)?;
        write_blocks(engine, destination, first, data)?;
        let done = job
            .0
            .done_bytes
            .fetch_add(blocks * BLOCK_SIZE_U64, Ordering::Relaxed)
            + blocks * BLOCK_SIZE_U64;
        pace(done);
    }
    if options.verify {
        job.set_stage(CloneStage::Verifying);
        for &(first, blocks) in runs {
            if job.cancelled() {
                return Err(JobEnd::Cancelled);
            }
            let original = engine.read_blocks_wait(source, first, blocks)?;
            let copy = engine.read_blocks_wait(destination, first, blocks)?;
            if original != copy {
                return Err(JobEnd::Failed(format!(
                    "verification found a difference in blocks {first}..{}",
                    first + blocks
                )));
            }
            job.0
                .done_bytes
                .fetch_add(blocks * BLOCK_SIZE_U64, Ordering::Relaxed);
        }
    }
    if job.cancelled() {
        return Err(JobEnd::Cancelled);
    }
    job.set_stage(CloneStage::Finishing);
    engine
        .mark_complete(destination)
        .map_err(|e| JobEnd::Failed(e.to_string()))
}

/// Reads whole 4 KiB blocks, whatever the volume's sector size.
fn write_blocks(
    engine: &Engine,
    volume: VolumeId,
    first: u64,
    data: bytes::Bytes,
) -> Result<(), IoError> {
    let sector = u64::from(
        engine
            .volume(volume)
            .ok_or(IoError::NoSuchVolume(volume))?
            .sector_size
            .bytes(),
    );
    engine.write_wait(volume, first * (BLOCK_SIZE_U64 / sector), data)
}
