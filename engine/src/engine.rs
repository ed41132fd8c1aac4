//! The engine's public face: opening, formatting and shutting down pools,
//! managing volumes, snapshots and clones, stats, and the completion-based data
//! path, whose methods check their arguments and hand the byte range to
//! [`crate::datapath`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::audit::SpaceAudit;
use crate::checkpoint::write_checkpoint;
use crate::core::{Core, EngineConfig};
use crate::datapath::completion::{wait, ReadDone, WriteDone};
use crate::datapath::flush::{flush_devices, flush_wait};
use crate::datapath::read::read_range;
use crate::datapath::write::{write_range, RangeData};
use crate::error::{CheckpointError, IoError, OpenError, VolumeError};
use crate::format::{Entry, VolumeKind, VOLUME_FLAG_COMPRESS, VOLUME_FLAG_INCOMPLETE};
use crate::index::VolumeMap;
use crate::io::{open_backing, BackingKind, DeviceRef, OpenBackingError, RamDevice, UringDevice};
use crate::log::{append, Pending, Record, BATCH_DATA_BLOCKS_MAX};
use crate::recovery::RecoveryReport;
use crate::replication::Extent;
use crate::scrub::{ScrubStatus, Scrubber};
use crate::thick_clone::CloneJob;
use crate::units::{SectorSize, VolumeId, BLOCK_SIZE_U64};
use crate::unsettled::UnsettledSource;
use crate::volume::{Volume, VolumeInfo, VolumeState};

/// Largest single read or write, in bytes.
pub const IO_BYTES_MAX: u64 = BATCH_DATA_BLOCKS_MAX as u64 * BLOCK_SIZE_U64;
/// How long shutdown waits for a cancelled clone job to stop.
const JOB_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(10);
/// Largest volume size in bytes (2^52: 4 PiB).
pub const VOLUME_BYTES_MAX: u64 = 1 << 52;
/// Longest volume name.
pub const VOLUME_NAME_MAX: usize = 256;

/// A backing store given by path.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// Path of the file or block device (a memory device's name).
    pub path: PathBuf,
    /// File, block device or memory.
    pub kind: BackingKind,
    /// Size of the file to create when it does not exist, or of a memory
    /// device (which needs one).
    pub create_size: Option<u64>,
}

/// Pool-wide space figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of all segments.
    pub capacity_bytes: u64,
    /// Bytes of segments holding nothing.
    pub free_bytes: u64,
    /// Bytes of distinct live data blocks (shared blocks count once).
    pub used_bytes: u64,
    /// Sum of the volumes' provisioned sizes (snapshots excluded).
    pub provisioned_bytes: u64,
    /// Bytes of data the volumes and snapshots map, shared blocks counted once
    /// per map: what the pool would need without sharing.
    pub logical_bytes: u64,
    /// Bytes of checkpoint bodies.
    pub checkpoint_bytes: u64,
    /// Number of volumes (clones included).
    pub volume_count: usize,
    /// Number of snapshots.
    pub snapshot_count: usize,
    /// Bytes hosts wrote since the pool was opened.
    pub host_written_bytes: u64,
    /// Bytes garbage collection rewrote since the pool was opened.
    pub gc_relocated_bytes: u64,
    /// Segments garbage collection cleaned since the pool was opened.
    pub gc_cleaned_segments: u64,
    /// Collector rounds since the pool was opened that walked every map
    /// (their victims' batch headers did not account for every live block,
    /// e.g. damaged headers or data of a deleted clone kept by snapshots).
    pub gc_map_walks: u64,
    /// Bytes the collector read from its victims since the pool was opened:
    /// their headers and live blocks, or all of a victim up to its last live
    /// block where the places of its batches are not known (batches from before
    /// the checkpoint replay started from).
    pub gc_read_bytes: u64,
    /// Times since open that host writes started waiting for the collector to
    /// free a segment (the pool's free segments at the reserve kept for it):
    /// each wait stalls every write behind it until a victim is cleaned.
    pub waits_for_collector: u64,
    /// Times since open that host writes started waiting for a checkpoint to
    /// free segments whose blocks are all dead.
    pub waits_for_checkpoint: u64,
    /// Bytes written to compressed volumes since open, before compression.
    pub compressed_logical_bytes: u64,
    /// Bytes those writes took on disk.
    pub compressed_stored_bytes: u64,
    /// Every byte written to the devices since open: batch headers, batch
    /// data (host data as stored and the collector's copies) and checkpoints.
    pub device_written_bytes: u64,
    /// The batch headers' share of `device_written_bytes`.
    pub batch_header_bytes: u64,
    /// The checkpoints' share of `device_written_bytes` (bodies and roots).
    pub checkpoint_written_bytes: u64,
    /// Writes refused for want of space since open.
    pub writes_refused_no_space: u64,
    /// Bytes of live data the pool takes before it refuses new data: the
    /// capacity less checkpoint room, the collector's reserve and the spare
    /// area it cleans in (see `Core::write_admitted`).
    pub data_capacity_bytes: u64,
}

impl PoolStats {
    /// Achieved compression ratio of data written to compressed volumes since
    /// open (1.0 if none).
    pub fn compression_ratio(&self) -> f64 {
        if self.compressed_stored_bytes == 0 {
            return 1.0;
        }
        self.compressed_logical_bytes as f64 / self.compressed_stored_bytes as f64
    }

    /// Provisioned bytes per byte of capacity in use: how far thin provisioning,
    /// sharing and compression stretch the pool (0 when nothing is used).
    pub fn provisioned_to_used_ratio(&self) -> f64 {
        if self.used_bytes == 0 {
            return 0.0;
        }
        self.provisioned_bytes as f64 / self.used_bytes as f64
    }

    /// Bytes written to the devices per byte hosts wrote since open, counting
    /// every device byte (1.0 before any host write).
    pub fn write_amplification(&self) -> f64 {
        if self.host_written_bytes == 0 {
            return 1.0;
        }
        self.device_written_bytes as f64 / self.host_written_bytes as f64
    }
}

/// What was written for one volume or snapshot since the pool opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeWriteStats {
    /// Bytes hosts wrote to it (before compression).
    pub host_written_bytes: u64,
    /// Device bytes its writes took: its data as stored, the collector's
    /// copies of its blocks, and its share (by data written) of the pool's
    /// batch headers and checkpoints.
    pub device_written_bytes: u64,
}

impl VolumeWriteStats {
    /// Device bytes per host byte (1.0 before any host write).
    pub fn write_amplification(&self) -> f64 {
        if self.host_written_bytes == 0 {
            return 1.0;
        }
        self.device_written_bytes as f64 / self.host_written_bytes as f64
    }
}

/// Choices made when a volume is created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Compress the volume's data (lz4; incompressible data is stored raw).
    pub compression: bool,
}

/// How much of the pool one volume or snapshot occupies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VolumeSpace {
    /// Bytes of the volume's address space that hold data.
    pub mapped_bytes: u64,
    /// Bytes only this map references: freed if it is deleted.
    pub exclusive_bytes: u64,
    /// Bytes also referenced by snapshots or clones of the same lineage.
    pub shared_bytes: u64,
    /// Bytes the mapped data occupies on disk after compression.
    pub stored_bytes: u64,
}

impl VolumeSpace {
    /// Mapped bytes per stored byte (1.0 for uncompressed data).
    pub fn compression_ratio(&self) -> f64 {
        if self.stored_bytes == 0 {
            return 1.0;
        }
        self.mapped_bytes as f64 / self.stored_bytes as f64
    }
}

/// An open pool. Cheap to share behind an `Arc`; every method may be called from
/// any thread, and data-path methods never block: they return at once and run the
/// completion later, on an engine thread.
pub struct Engine {
    pub(crate) core: Arc<Core>,
    /// The checkpointer and the garbage collector.
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// Dropping it tells the engine's threads to stop.
    stop: Mutex<Option<Sender<()>>>,
    /// Thick clone jobs started since open, by destination volume.
    jobs: Mutex<HashMap<VolumeId, CloneJob>>,
    /// What recovery found damaged at open.
    recovery: RecoveryReport,
    /// Scrub state shared with the scrub thread.
    scrubber: Arc<Scrubber>,
}

impl Engine {
    /// Formats `devices` as a new, empty pool.
    pub fn format(devices: Vec<DeviceRef>, config: &EngineConfig) -> Result<(), OpenError> {
        assert!(
            config.blocks_per_segment >= 512,
            "segments must hold at least 2 MiB"
        );
        crate::recovery::format(devices, config, *uuid::Uuid::new_v4().as_bytes())
    }

    /// Opens a formatted pool, replays its log and writes an opening checkpoint.
    pub fn open(devices: Vec<DeviceRef>, config: EngineConfig) -> Result<Engine, OpenError> {
        let (requests_tx, requests_rx) = crossbeam_channel::bounded(1);
        let (wake_tx, wake_rx) = crossbeam_channel::bounded(1);
        let scrub_interval = config.scrub_interval;
        let (core, recovery) = crate::recovery::open(devices, config, requests_tx, wake_tx)?;
        let (scrubber, scrub_requests) = Scrubber::new(core.config.scrub_bytes_per_s, &recovery);
        write_checkpoint(&core)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let engine = Engine {
            core: core.clone(),
            threads: Mutex::new(Vec::new()),
            stop: Mutex::new(Some(stop_tx)),
            jobs: Mutex::new(HashMap::new()),
            recovery,
            scrubber,
        };
        let stop = stop_rx.clone();
        let scrub_stop = stop_rx.clone();
        let checkpointer = std::thread::Builder::new()
            .name("keel-checkpoint".into())
            .spawn(move || run_checkpointer(core, requests_rx, stop))
            .map_err(OpenError::Thread)?;
        engine.threads.lock().push(checkpointer);
        let core = engine.core.clone();
        let collector = std::thread::Builder::new()
            .name("keel-gc".into())
            .spawn(move || crate::gc::run_collector(core, wake_rx, stop_rx))
            .map_err(OpenError::Thread)?;
        engine.threads.lock().push(collector);
        let (view, scrub_state) = (engine.view(), engine.scrubber.clone());
        let scrub = std::thread::Builder::new()
            .name("keel-scrub".into())
            .spawn(move || {
                crate::scrub::run_scrubber(
                    view,
                    scrub_state,
                    scrub_requests,
                    scrub_stop,
                    scrub_interval,
                )
            })
            .map_err(OpenError::Thread)?;
        engine.threads.lock().push(scrub);
        Ok(engine)
    }

    /// Opens the files or block devices named by `specs` with io_uring (memory
    /// devices in memory), formatting them first when every one of them is new
    /// (a file just created, a memory device, or a device without a superblock
    /// only if `format_blank` is set).
    pub fn open_paths(
        specs: &[DeviceSpec],
        config: EngineConfig,
        format_blank: bool,
    ) -> Result<Engine, OpenError> {
        let mut devices: Vec<DeviceRef> = Vec::new();
        let mut created = 0;
        for (index, spec) in specs.iter().enumerate() {
            if spec.kind == BackingKind::Memory {
                let size = spec.create_size.ok_or_else(|| OpenBackingError::NoSize {
                    path: spec.path.clone(),
                })?;
                let device = RamDevice::new(size).map_err(|source| OpenBackingError::Os {
                    op: "allocate memory for",
                    path: spec.path.clone(),
                    source,
                })?;
                devices.push(Arc::new(device));
                created += 1;
                continue;
            }
            let existed = spec.path.exists();
            let (file, size) = open_backing(&spec.path, spec.create_size, spec.kind)?;
            if !existed {
                created += 1;
            }
            let device =
                UringDevice::new(file, size, &index.to_string()).map_err(OpenError::Thread)?;
            devices.push(Arc::new(device));
        }
        if created == specs.len() || format_blank && !crate::recovery::any_formatted(&devices) {
            Engine::format(devices.clone(), &config)?;
        }
        Engine::open(devices, config)
    }

    /// What recovery found damaged when this pool was opened: damaged blocks
    /// read as media errors until rewritten.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Starts a scrub pass now (paced like scheduled ones); false if one is
    /// already running.
    pub fn start_scrub(&self) -> bool {
        self.scrubber.request()
    }

    /// Where scrubbing stands and what the last pass found.
    pub fn scrub_status(&self) -> ScrubStatus {
        self.scrubber.status()
    }

    /// Writes a checkpoint now (normally the engine does so on its own).
    pub fn checkpoint(&self) -> Result<(), CheckpointError> {
        write_checkpoint(&self.core)
    }

    /// Writes a final checkpoint and stops the engine's threads. Dropping an engine
    /// without calling this is like a crash: nothing acknowledged is lost, but the
    /// next open replays the log.
    pub fn shutdown(self) -> Result<(), CheckpointError> {
        self.stop_threads();
        write_checkpoint(&self.core)
    }

    fn stop_threads(&self) {
        let jobs: Vec<CloneJob> = self.jobs.lock().values().cloned().collect();
        for job in &jobs {
            job.cancel();
        }
        for job in &jobs {
            job.wait(JOB_STOP_WAIT);
        }
        drop(self.stop.lock().take());
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }

    /// The thick clone job filling `destination`, if one was started since open.
    pub fn clone_job(&self, destination: VolumeId) -> Option<CloneJob> {
        self.jobs.lock().get(&destination).cloned()
    }

    pub(crate) fn remember_job(&self, job: CloneJob) {
        self.jobs.lock().insert(job.progress().destination, job);
    }

    /// An engine value sharing this one's state but owning none of its threads:
    /// what background jobs use to call the public data path.
    pub(crate) fn view(&self) -> Engine {
        Engine {
            core: self.core.clone(),
            threads: Mutex::new(Vec::new()),
            stop: Mutex::new(None),
            jobs: Mutex::new(HashMap::new()),
            recovery: self.recovery.clone(),
            scrubber: self.scrubber.clone(),
        }
    }

    /// A volume's or snapshot's mapped 4 KiB blocks as sorted runs of at most
    /// `max_blocks`; `None` if it does not exist.
    pub(crate) fn mapped_runs(&self, id: VolumeId, max_blocks: u64) -> Option<Vec<(u64, u64)>> {
        let map = self.map_copy(id)?;
        let mut lbas = Vec::with_capacity(map.mapped_blocks() as usize);
        map.scan(|_| true, |lba, _| lbas.push(lba));
        lbas.sort_unstable();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        for lba in lbas {
            match runs.last_mut() {
                Some((first, blocks)) if *first + *blocks == lba && *blocks < max_blocks => {
                    *blocks += 1
                }
                _ => runs.push((lba, 1)),
            }
        }
        Some(runs)
    }

    /// Reads `blocks` 4 KiB blocks from block `first`, whatever the sector size.
    pub(crate) fn read_blocks_wait(
        &self,
        volume: VolumeId,
        first: u64,
        blocks: u64,
    ) -> Result<Bytes, IoError> {
        let sector = u64::from(
            self.volume(volume)
                .ok_or(IoError::NoSuchVolume(volume))?
                .sector_size
                .bytes(),
        );
        let per_block = BLOCK_SIZE_U64 / sector;
        self.read_wait(volume, first * per_block, (blocks * per_block) as u32)
    }

    /// Reads the pool's metadata copies and the newest checkpoint body back and
    /// counts the damaged ones; blocks checkpoints meanwhile.
    pub(crate) fn check_metadata(&self) -> u32 {
        let _gate = self.core.checkpoint_gate.lock();
        crate::recovery::damaged_metadata(&self.core.pool)
    }

    /// A copy of a volume's or snapshot's map (chunks shared, O(chunks)).
    pub(crate) fn map_copy(&self, id: VolumeId) -> Option<VolumeMap> {
        self.live_volume(id).ok().map(|v| v.map.read().clone())
    }

    /// Clears a thick clone destination's incomplete flag, durably.
    pub(crate) fn mark_complete(&self, id: VolumeId) -> Result<(), VolumeError> {
        let volume = self.existing(id)?;
        self.set_flags(&volume, volume.flags() & !VOLUME_FLAG_INCOMPLETE)
    }

    /// Runs one garbage collection round now, whatever the free space: cleans the
    /// segments the policy ranks best. Returns whether any segment was worth
    /// cleaning. The engine collects on its own when space runs low; this is for
    /// tools and tests.
    pub fn collect_garbage(&self) -> Result<bool, IoError> {
        crate::gc::collect_round(&self.core)
    }

    /// Recounts every block's references from the maps and compares them
    /// with the space accounting the collector and allocator rely on: a
    /// consistency check for tests and operators. Holds the log lock while
    /// it walks every map, so writes wait meanwhile.
    pub fn audit_space(&self) -> SpaceAudit {
        crate::audit::audit_space(&self.core)
    }

    /// True after a device failure: writes fail until the pool is reopened.
    pub fn is_fenced(&self) -> bool {
        self.core.fenced.load(Ordering::Acquire)
    }

    // ----- volumes, snapshots and clones -----

    /// Creates an empty thin volume; returns once its creation is durable.
    pub fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        sector: SectorSize,
    ) -> Result<VolumeInfo, VolumeError> {
        self.create_volume_with(name, size_bytes, sector, 0)
    }

    /// Creates an empty thin volume with `options`; returns once it is durable.
    pub fn create_volume_with_options(
        &self,
        name: &str,
        size_bytes: u64,
        sector: SectorSize,
        options: VolumeOptions,
    ) -> Result<VolumeInfo, VolumeError> {
        let flags = if options.compression {
            VOLUME_FLAG_COMPRESS
        } else {
            0
        };
        self.create_volume_with(name, size_bytes, sector, flags)
    }

    pub(crate) fn create_volume_with(
        &self,
        name: &str,
        size_bytes: u64,
        sector: SectorSize,
        flags: u32,
    ) -> Result<VolumeInfo, VolumeError> {
        validate_size(size_bytes)?;
        let entry = |id: VolumeId| Entry::CreateVolume {
            volume: id.0,
            size_bytes,
            sector_bytes: sector.bytes(),
            flags,
            name: name.to_owned(),
        };
        self.create_entry(name, entry, None)
    }

    /// Takes a read-only, crash-consistent snapshot of `source` while I/O goes on:
    /// it holds every write acknowledged before this call and none issued after it
    /// returns. Costs no data copy; returns once the snapshot is durable.
    pub fn create_snapshot(&self, source: VolumeId, name: &str) -> Result<VolumeInfo, VolumeError> {
        let source = self.existing(source)?;
        if source.is_snapshot() {
            return Err(VolumeError::IsSnapshot(source.id));
        }
        let entry = |id: VolumeId| Entry::CreateSnapshot {
            volume: id.0,
            source: source.id.0,
            name: name.to_owned(),
        };
        self.create_entry(name, entry, Some(&source))
    }

    /// Creates a writable thin clone of `snapshot`, sharing every block with it.
    /// `size_bytes` (default: the snapshot's) may exceed the snapshot's size;
    /// `sector` defaults to the snapshot's.
    pub fn create_clone(
        &self,
        snapshot: VolumeId,
        name: &str,
        size_bytes: Option<u64>,
        sector: Option<SectorSize>,
    ) -> Result<VolumeInfo, VolumeError> {
        let source = self.existing(snapshot)?;
        if !source.is_snapshot() {
            return Err(VolumeError::NotSnapshot(source.id));
        }
        let size_bytes = size_bytes.unwrap_or_else(|| source.size());
        validate_size(size_bytes)?;
        if size_bytes < source.size() {
            return Err(VolumeError::Shrink {
                from: source.size(),
                to: size_bytes,
            });
        }
        let sector = sector.unwrap_or(source.sector);
        let entry = |id: VolumeId| Entry::CreateClone {
            volume: id.0,
            source: source.id.0,
            size_bytes,
            sector_bytes: sector.bytes(),
            flags: 0,
            name: name.to_owned(),
        };
        self.create_entry(name, entry, Some(&source))
    }

    /// Makes `volume`'s content that of `snapshot`, a snapshot of the same lineage
    /// (of this volume, or of the volume it was cloned from). Writes racing with
    /// the revert land either before it (and are discarded) or after it. The size
    /// stays; blocks beyond the snapshot's size read as zeros.
    pub fn revert_volume(
        &self,
        volume: VolumeId,
        snapshot: VolumeId,
    ) -> Result<VolumeInfo, VolumeError> {
        let target = self.existing(volume)?;
        let source = self.existing(snapshot)?;
        if target.is_snapshot() {
            return Err(VolumeError::IsSnapshot(target.id));
        }
        if !source.is_snapshot() {
            return Err(VolumeError::NotSnapshot(source.id));
        }
        if source.lineage != target.lineage {
            return Err(VolumeError::NotRelated { volume, snapshot });
        }
        self.append_meta_durably(Entry::Revert {
            volume: volume.0,
            snapshot: snapshot.0,
        })?;
        Ok(target.info())
    }

    /// Deletes a volume or snapshot and frees the space nothing else shares;
    /// returns once the deletion is durable. Snapshots and clones are independent
    /// maps, so they may be deleted in any order: deleting a snapshot keeps its
    /// clones whole, and deleting a volume keeps its snapshots.
    pub fn delete_volume(&self, id: VolumeId) -> Result<(), VolumeError> {
        let volume = self.existing(id)?;
        volume.set_state(VolumeState::Deleting);
        let result = self.append_meta_durably(Entry::DeleteVolume { volume: id.0 });
        if result.is_err() {
            volume.set_state(VolumeState::Live);
        }
        Ok(result?)
    }

    /// Grows a volume; shrinking is refused. Returns once the change is durable.
    pub fn resize_volume(&self, id: VolumeId, size_bytes: u64) -> Result<VolumeInfo, VolumeError> {
        let volume = self.existing(id)?;
        if volume.is_snapshot() {
            return Err(VolumeError::IsSnapshot(id));
        }
        validate_size(size_bytes)?;
        if size_bytes < volume.size() {
            return Err(VolumeError::Shrink {
                from: volume.size(),
                to: size_bytes,
            });
        }
        self.append_meta_durably(Entry::ResizeVolume {
            volume: id.0,
            size_bytes,
        })?;
        Ok(volume.info())
    }

    /// Turns compression of data written from now on on or off.
    pub fn set_compression(&self, id: VolumeId, enabled: bool) -> Result<VolumeInfo, VolumeError> {
        let volume = self.existing(id)?;
        if volume.is_snapshot() {
            return Err(VolumeError::IsSnapshot(id));
        }
        let flags = if enabled {
            volume.flags() | VOLUME_FLAG_COMPRESS
        } else {
            volume.flags() & !VOLUME_FLAG_COMPRESS
        };
        self.set_flags(&volume, flags)?;
        Ok(volume.info())
    }

    pub(crate) fn set_flags(&self, volume: &Volume, flags: u32) -> Result<(), VolumeError> {
        if flags != volume.flags() {
            self.append_meta_durably(Entry::SetFlags {
                volume: volume.id.0,
                flags,
            })?;
        }
        Ok(())
    }

    /// Every live volume (not snapshots), ordered by id.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        self.listed(VolumeKind::Volume)
    }

    /// Every snapshot, ordered by id.
    pub fn snapshots(&self) -> Vec<VolumeInfo> {
        self.listed(VolumeKind::Snapshot)
    }

    fn listed(&self, kind: VolumeKind) -> Vec<VolumeInfo> {
        let all = self.core.catalog.read().all();
        all.into_iter()
            .filter(|v| v.state() == VolumeState::Live && v.kind == kind)
            .map(|v| v.info())
            .collect()
    }

    /// One volume or snapshot by id.
    pub fn volume(&self, id: VolumeId) -> Option<VolumeInfo> {
        self.live_volume(id).ok().map(|v| v.info())
    }

    /// A volume's size in bytes, cheaply (no map lock): for per-I/O capacity checks.
    pub fn volume_size(&self, id: VolumeId) -> Option<u64> {
        self.live_volume(id).ok().map(|v| v.size())
    }

    /// Blocks of `volume` (in its sectors) this node wrote that its other
    /// replicas may lack, carried across restarts: what recovery replayed,
    /// what the last checkpoint's sources reported, what a deposed primary
    /// handed over. Empty for an unknown volume.
    pub fn carried_unsettled(&self, volume: VolumeId) -> Vec<Extent> {
        let Ok(v) = self.live_volume(volume) else {
            return Vec::new();
        };
        self.core
            .unsettled
            .carried(volume, v.sector.bytes(), v.size())
    }

    /// Adds `extents` (in the volume's sectors) to `volume`'s carried set:
    /// a primary term that ends with changes not on every member hands them
    /// over, so they are reported until every member agrees on them.
    pub fn carry_unsettled(&self, volume: VolumeId, extents: &[Extent]) {
        if let Ok(v) = self.live_volume(volume) {
            self.core.unsettled.carry(volume, v.sector.bytes(), extents);
        }
    }

    /// Drops `volume`'s carried set: every member agrees on those blocks now.
    pub fn forget_unsettled(&self, volume: VolumeId) {
        self.core.unsettled.forget(volume);
    }

    /// The extents (in `volume`'s sectors) where `volume` differs from
    /// `base` (every mapped block when `base` is `None`): what must be
    /// copied to a replica holding `base`'s content so it holds `volume`'s.
    /// Walks both maps, skipping chunks they share.
    pub fn differing_extents(
        &self,
        base: Option<VolumeId>,
        volume: VolumeId,
    ) -> Result<Vec<Extent>, IoError> {
        let target = self.live_volume(volume)?;
        let base_map = match base {
            Some(id) => self.live_volume(id)?.map.read().clone(),
            None => VolumeMap::new(),
        };
        let runs = target.map.read().differing_runs(&base_map);
        let per_block = BLOCK_SIZE_U64 / u64::from(target.sector.bytes());
        let mut sectors = crate::replication::BlockSet::new();
        for (first, count) in runs {
            sectors.insert_range(first * per_block, count * per_block);
        }
        Ok(sectors.extents(u32::MAX))
    }

    /// Registers replication state asked at every checkpoint which of its
    /// writes are not yet on every member; it is asked until dropped.
    pub fn register_unsettled_source(&self, source: Weak<dyn UnsettledSource>) {
        self.core.unsettled.register(source);
    }

    /// One volume or snapshot by name.
    pub fn volume_by_name(&self, name: &str) -> Option<VolumeInfo> {
        let volume = self.core.catalog.read().by_name(name)?;
        (volume.state() == VolumeState::Live).then(|| volume.info())
    }

    /// How much of the pool a volume or snapshot occupies: blocks it alone holds
    /// and blocks it shares with snapshots and clones of its lineage. Walks the
    /// map: O(mapped blocks).
    pub fn volume_space(&self, id: VolumeId) -> Option<VolumeSpace> {
        let volume = self.live_volume(id).ok()?;
        let map = volume.map.read().clone();
        let log = self.core.log.lock();
        let (exclusive, shared) = map.exclusive_and_shared(|at| log.segments.block_refs(at));
        Some(VolumeSpace {
            mapped_bytes: map.mapped_blocks() * BLOCK_SIZE_U64,
            stored_bytes: map.stored_blocks() * BLOCK_SIZE_U64,
            exclusive_bytes: exclusive * BLOCK_SIZE_U64,
            shared_bytes: shared * BLOCK_SIZE_U64,
        })
    }

    /// Space figures for the pool.
    pub fn pool_stats(&self) -> PoolStats {
        use crate::log::segments::SegmentState;
        let segment_bytes = self.core.pool.segment_bytes();
        let (free, body, live, data_capacity_blocks) = {
            let log = self.core.log.lock();
            (
                log.segments.count(SegmentState::Free) as u64,
                log.segments.count(SegmentState::CheckpointBody) as u64,
                log.segments.live_blocks(),
                self.core.live_limit_now(&log),
            )
        };
        let all = self.core.catalog.read().all();
        let live_maps: Vec<_> = all
            .iter()
            .filter(|v| v.state() == VolumeState::Live)
            .collect();
        let volumes: Vec<_> = live_maps.iter().filter(|v| !v.is_snapshot()).collect();
        let counters = &self.core.counters;
        PoolStats {
            capacity_bytes: u64::from(self.core.pool.segment_count()) * segment_bytes,
            free_bytes: free * segment_bytes,
            used_bytes: live * BLOCK_SIZE_U64,
            provisioned_bytes: volumes.iter().map(|v| v.size()).sum(),
            logical_bytes: live_maps
                .iter()
                .map(|v| v.map.read().mapped_blocks())
                .sum::<u64>()
                * BLOCK_SIZE_U64,
            checkpoint_bytes: body * segment_bytes,
            volume_count: volumes.len(),
            snapshot_count: live_maps.len() - volumes.len(),
            host_written_bytes: counters.foreground_blocks.load(Ordering::Relaxed) * BLOCK_SIZE_U64,
            gc_relocated_bytes: counters.relocated_blocks.load(Ordering::Relaxed) * BLOCK_SIZE_U64,
            gc_cleaned_segments: counters.cleaned_segments.load(Ordering::Relaxed),
            gc_map_walks: counters.gc_map_walks.load(Ordering::Relaxed),
            gc_read_bytes: counters.gc_read_blocks.load(Ordering::Relaxed) * BLOCK_SIZE_U64,
            waits_for_collector: counters.waits_for_collector.load(Ordering::Relaxed),
            waits_for_checkpoint: counters.waits_for_checkpoint.load(Ordering::Relaxed),
            compressed_logical_bytes: counters.packed_logical_blocks.load(Ordering::Relaxed)
                * BLOCK_SIZE_U64,
            compressed_stored_bytes: counters.packed_stored_blocks.load(Ordering::Relaxed)
                * BLOCK_SIZE_U64,
            device_written_bytes: (counters.header_blocks.load(Ordering::Relaxed)
                + counters.data_blocks.load(Ordering::Relaxed)
                + counters.checkpoint_blocks.load(Ordering::Relaxed))
                * BLOCK_SIZE_U64,
            batch_header_bytes: counters.header_blocks.load(Ordering::Relaxed) * BLOCK_SIZE_U64,
            checkpoint_written_bytes: counters.checkpoint_blocks.load(Ordering::Relaxed)
                * BLOCK_SIZE_U64,
            writes_refused_no_space: counters.no_space_refusals.load(Ordering::Relaxed),
            data_capacity_bytes: data_capacity_blocks * BLOCK_SIZE_U64,
        }
    }

    /// What was written for volume or snapshot `id` since the pool opened,
    /// with its share of the pool's overhead; `None` if there is no such map.
    pub fn volume_writes(&self, id: VolumeId) -> Option<VolumeWriteStats> {
        let volume = self.core.catalog.read().get(id)?;
        let counters = &self.core.counters;
        let data = counters.data_blocks.load(Ordering::Relaxed);
        let overhead = counters.header_blocks.load(Ordering::Relaxed)
            + counters.checkpoint_blocks.load(Ordering::Relaxed);
        let own = volume.writes.data_blocks.load(Ordering::Relaxed);
        let share = if data == 0 {
            0
        } else {
            (u128::from(overhead) * u128::from(own) / u128::from(data)) as u64
        };
        Some(VolumeWriteStats {
            host_written_bytes: volume.writes.host_blocks.load(Ordering::Relaxed) * BLOCK_SIZE_U64,
            device_written_bytes: (own + share) * BLOCK_SIZE_U64,
        })
    }

    /// Logs a create record for a new volume or snapshot named `name`, with a
    /// placeholder in the catalog so the name is taken at once.
    fn create_entry(
        &self,
        name: &str,
        entry: impl FnOnce(VolumeId) -> Entry,
        source: Option<&Volume>,
    ) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        let (volume, record) = {
            let mut catalog = self.core.catalog.write();
            if catalog.by_name(name).is_some() {
                return Err(VolumeError::NameTaken(name.to_owned()));
            }
            let record = entry(VolumeId(catalog.next_volume_id));
            let Some(shape) = crate::log::created_shape(&record, source) else {
                return Err(IoError::Invalid("not a record that creates a volume").into());
            };
            let volume = Arc::new(Volume::new(shape, VolumeMap::new(), VolumeState::Creating));
            catalog.insert(volume.clone());
            (volume, record)
        };
        if let Err(err) = self.append_meta_durably(record) {
            self.core.catalog.write().remove(volume.id);
            return Err(err.into());
        }
        Ok(volume.info())
    }

    fn existing(&self, id: VolumeId) -> Result<Arc<Volume>, VolumeError> {
        self.live_volume(id)
            .map_err(|_| VolumeError::NotFound(id.to_string()))
    }

    // ----- data path -----

    /// Writes `data` (a whole number of the volume's sectors) at sector `lba`.
    /// `done` runs once the data is in the log (it then survives process death;
    /// power loss needs a later [`Engine::flush`]).
    pub fn write(&self, volume: VolumeId, lba: u64, data: Bytes, done: WriteDone) {
        let volume = match self.checked_range(volume, lba, data.len() as u64, true) {
            Ok(v) => v,
            Err(err) => return done(Err(err)),
        };
        let offset = lba * u64::from(volume.sector.bytes());
        write_range(&self.core, volume, offset, RangeData::Bytes(data), done);
    }

    /// Reads `sectors` sectors at `lba`. Unwritten blocks read as zeros.
    pub fn read(&self, volume: VolumeId, lba: u64, sectors: u32, done: ReadDone) {
        let (volume, offset, len) = match self.sector_range(volume, lba, sectors, false) {
            Ok(t) => t,
            Err(err) => return done(Err(err)),
        };
        read_range(&self.core, volume, offset, len, done);
    }

    /// Makes `sectors` sectors at `lba` read as zeros and frees their space.
    pub fn deallocate(&self, volume: VolumeId, lba: u64, sectors: u32, done: WriteDone) {
        let (volume, offset, len) = match self.sector_range(volume, lba, sectors, true) {
            Ok(t) => t,
            Err(err) => return done(Err(err)),
        };
        write_range(&self.core, volume, offset, RangeData::Zeroes(len), done);
    }

    /// Same as [`Engine::deallocate`]: zeroed blocks take no space.
    pub fn write_zeroes(&self, volume: VolumeId, lba: u64, sectors: u32, done: WriteDone) {
        self.deallocate(volume, lba, sectors, done)
    }

    /// Makes every write acknowledged before this call durable across power loss.
    pub fn flush(&self, done: WriteDone) {
        flush_devices(&self.core, done)
    }

    fn writable_volume(&self, id: VolumeId) -> Result<Arc<Volume>, IoError> {
        let volume = self.live_volume(id)?;
        if volume.is_snapshot() {
            return Err(IoError::ReadOnly(id));
        }
        Ok(volume)
    }

    fn live_volume(&self, id: VolumeId) -> Result<Arc<Volume>, IoError> {
        match self.core.catalog.read().get(id) {
            Some(v) if v.state() == VolumeState::Live => Ok(v),
            _ => Err(IoError::NoSuchVolume(id)),
        }
    }

    fn checked_range(
        &self,
        id: VolumeId,
        lba: u64,
        len: u64,
        writing: bool,
    ) -> Result<Arc<Volume>, IoError> {
        let volume = if writing {
            self.writable_volume(id)?
        } else {
            self.live_volume(id)?
        };
        let sector = u64::from(volume.sector.bytes());
        if len == 0 || !len.is_multiple_of(sector) {
            return Err(IoError::Invalid(
                "length must be a positive multiple of the sector size",
            ));
        }
        if len > IO_BYTES_MAX {
            return Err(IoError::Invalid(
                "transfer larger than the maximum I/O size",
            ));
        }
        let size = volume.size();
        let offset = lba.checked_mul(sector).ok_or(IoError::OutOfRange {
            offset: u64::MAX,
            len,
            size,
        })?;
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(IoError::OutOfRange { offset, len, size });
        }
        if writing && self.is_fenced() {
            return Err(IoError::Fenced);
        }
        Ok(volume)
    }

    fn sector_range(
        &self,
        id: VolumeId,
        lba: u64,
        sectors: u32,
        writing: bool,
    ) -> Result<(Arc<Volume>, u64, u64), IoError> {
        let volume = if writing {
            self.writable_volume(id)?
        } else {
            self.live_volume(id)?
        };
        let sector = u64::from(volume.sector.bytes());
        let len = u64::from(sectors) * sector;
        let volume = if writing && len > IO_BYTES_MAX {
            // Trims may exceed the I/O size limit; only bounds matter.
            let size = volume.size();
            let offset = lba.checked_mul(sector).ok_or(IoError::OutOfRange {
                offset: u64::MAX,
                len,
                size,
            })?;
            if len == 0 || offset.checked_add(len).is_none_or(|end| end > size) {
                return Err(IoError::OutOfRange { offset, len, size });
            }
            if self.is_fenced() {
                return Err(IoError::Fenced);
            }
            volume
        } else {
            self.checked_range(id, lba, len, writing)?
        };
        Ok((volume, lba * sector, len))
    }

    fn append_meta_durably(&self, entry: Entry) -> Result<(), IoError> {
        wait(|done| {
            append(
                &self.core,
                Pending {
                    record: Record::Meta(entry),
                    done,
                },
            )
        })?;
        flush_wait(&self.core)
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

fn run_checkpointer(core: Arc<Core>, requests: Receiver<()>, stop: Receiver<()>) {
    loop {
        crossbeam_channel::select! {
            recv(requests) -> msg => {
                if msg.is_err() {
                    return;
                }
                if let Err(err) = write_checkpoint(&core) {
                    tracing::warn!(%err, "checkpoint failed");
                }
            }
            recv(stop) -> _ => return,
        }
    }
}

fn validate_size(size_bytes: u64) -> Result<(), VolumeError> {
    if size_bytes == 0
        || !size_bytes.is_multiple_of(BLOCK_SIZE_U64)
        || size_bytes > VOLUME_BYTES_MAX
    {
        return Err(VolumeError::InvalidSize(size_bytes));
    }
    Ok(())
}

/// Names are 1..=`VOLUME_NAME_MAX` of `[A-Za-z0-9._-]`, never `.` or `..`:
/// a name may become a path component, where those two mean directories.
fn validate_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= VOLUME_NAME_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(VolumeError::InvalidName(name.chars().take(64).collect()))
    }
}

/// Blocking forms of the data path, for tools, tests and control-plane code that
/// runs on its own threads. Never call them from a reactor or a completion.
impl Engine {
    /// [`Engine::write`], waiting for the completion.
    pub fn write_wait(&self, volume: VolumeId, lba: u64, data: Bytes) -> Result<(), IoError> {
        wait(|done| self.write(volume, lba, data, done))
    }

    /// [`Engine::read`], waiting for the completion.
    pub fn read_wait(&self, volume: VolumeId, lba: u64, sectors: u32) -> Result<Bytes, IoError> {
        wait(|done| self.read(volume, lba, sectors, done))
    }

    /// [`Engine::deallocate`], waiting for the completion.
    pub fn deallocate_wait(&self, volume: VolumeId, lba: u64, sectors: u32) -> Result<(), IoError> {
        wait(|done| self.deallocate(volume, lba, sectors, done))
    }

    /// [`Engine::flush`], waiting for the completion.
    pub fn flush_wait(&self) -> Result<(), IoError> {
        wait(|done| self.flush(done))
    }
}
