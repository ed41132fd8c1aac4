//! The engine's public face: opening pools, managing volumes and the
//! completion-based data path.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::checkpoint::write_checkpoint;
use crate::core::{Core, EngineConfig};
use crate::error::{CheckpointError, IoError, OpenError, VolumeError};
use crate::format::Entry;
use crate::io::{open_backing, AlignedBuf, BackingKind, DeviceError, DeviceRef, IoOp, UringDevice};
use crate::log::{append, Pending, Record, BATCH_DATA_BLOCKS_MAX};
use crate::units::{SectorSize, VolumeId, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::volume::{Volume, VolumeInfo, VolumeState};

/// Largest single read or write, in bytes.
pub const IO_BYTES_MAX: u64 = BATCH_DATA_BLOCKS_MAX as u64 * BLOCK_SIZE_U64;
/// Largest volume size in bytes (2^52: 4 PiB).
pub const VOLUME_BYTES_MAX: u64 = 1 << 52;
/// Longest volume name.
pub const VOLUME_NAME_MAX: usize = 256;

/// A backing store given by path.
#[derive(Clone, Debug)]
pub struct DeviceSpec {
    /// Path of the file or block device.
    pub path: PathBuf,
    /// File or block device.
    pub kind: BackingKind,
    /// Size of the file to create when it does not exist (files only).
    pub create_size: Option<u64>,
}

/// Pool-wide space figures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Bytes of all segments.
    pub capacity_bytes: u64,
    /// Bytes of segments holding nothing.
    pub free_bytes: u64,
    /// Bytes of live volume data.
    pub used_bytes: u64,
    /// Sum of the volumes' provisioned sizes.
    pub provisioned_bytes: u64,
    /// Bytes of checkpoint bodies.
    pub checkpoint_bytes: u64,
    /// Number of volumes.
    pub volume_count: usize,
}

/// Completion of a write, trim or flush.
pub type WriteDone = Box<dyn FnOnce(Result<(), IoError>) + Send>;
/// Completion of a read.
pub type ReadDone = Box<dyn FnOnce(Result<Bytes, IoError>) + Send>;

/// An open pool. Cheap to share behind an `Arc`; every method may be called from
/// any thread, and data-path methods never block: they return at once and run the
/// completion later, on an engine thread.
pub struct Engine {
    core: Arc<Core>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    stop: Sender<()>,
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
        let core = crate::recovery::open(devices, config, requests_tx)?;
        write_checkpoint(&core)?;
        let (stop_tx, stop_rx) = crossbeam_channel::bounded(1);
        let thread_core = core.clone();
        let checkpointer = std::thread::Builder::new()
            .name("keel-checkpoint".into())
            .spawn(move || run_checkpointer(thread_core, requests_rx, stop_rx))
            .map_err(OpenError::Thread)?;
        Ok(Engine {
            core,
            checkpointer: Mutex::new(Some(checkpointer)),
            stop: stop_tx,
        })
    }

    /// Opens the files or block devices named by `specs` with io_uring, formatting
    /// them first when every one of them is new (a file just created, or a device
    /// without a superblock only if `format_blank` is set).
    pub fn open_paths(
        specs: &[DeviceSpec],
        config: EngineConfig,
        format_blank: bool,
    ) -> Result<Engine, OpenError> {
        let mut devices: Vec<DeviceRef> = Vec::new();
        let mut created = 0;
        for (index, spec) in specs.iter().enumerate() {
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

    /// Writes a checkpoint now (normally the engine does so on its own).
    pub fn checkpoint(&self) -> Result<(), CheckpointError> {
        write_checkpoint(&self.core)
    }

    /// Writes a final checkpoint and stops the engine's threads. Dropping an engine
    /// without calling this is like a crash: nothing acknowledged is lost, but the
    /// next open replays the log.
    pub fn shutdown(self) -> Result<(), CheckpointError> {
        let _ = self.stop.send(());
        if let Some(thread) = self.checkpointer.lock().take() {
            let _ = thread.join();
        }
        write_checkpoint(&self.core)
    }

    /// True after a device failure: writes fail until the pool is reopened.
    pub fn is_fenced(&self) -> bool {
        self.core.fenced.load(Ordering::Acquire)
    }

    // ----- volumes -----

    /// Creates an empty thin volume; returns once its creation is durable.
    pub fn create_volume(
        &self,
        name: &str,
        size_bytes: u64,
        sector: SectorSize,
    ) -> Result<VolumeInfo, VolumeError> {
        validate_name(name)?;
        if size_bytes == 0 || size_bytes % BLOCK_SIZE_U64 != 0 || size_bytes > VOLUME_BYTES_MAX {
            return Err(VolumeError::InvalidSize(size_bytes));
        }
        let volume = {
            let mut catalog = self.core.catalog.write();
            if catalog.by_name(name).is_some() {
                return Err(VolumeError::NameTaken(name.to_owned()));
            }
            let id = VolumeId(catalog.next_volume_id);
            let volume = Arc::new(Volume::new(
                id,
                name.to_owned(),
                size_bytes,
                sector,
                VolumeState::Creating,
            ));
            catalog.insert(volume.clone());
            volume
        };
        let entry = Entry::CreateVolume {
            volume: volume.id.0,
            size_bytes,
            sector_bytes: sector.bytes(),
            name: name.to_owned(),
        };
        if let Err(err) = self.append_meta_durably(entry) {
            self.core.catalog.write().remove(volume.id);
            return Err(err.into());
        }
        Ok(volume.info())
    }

    /// Deletes a volume and frees its space; returns once the deletion is durable.
    pub fn delete_volume(&self, id: VolumeId) -> Result<(), VolumeError> {
        let volume = self
            .live_volume(id)
            .map_err(|_| VolumeError::NotFound(id.to_string()))?;
        volume.set_state(VolumeState::Deleting);
        let result = self.append_meta_durably(Entry::DeleteVolume { volume: id.0 });
        if result.is_err() {
            volume.set_state(VolumeState::Live);
        }
        Ok(result?)
    }

    /// Grows a volume; shrinking is refused. Returns once the change is durable.
    pub fn resize_volume(&self, id: VolumeId, size_bytes: u64) -> Result<VolumeInfo, VolumeError> {
        let volume = self
            .live_volume(id)
            .map_err(|_| VolumeError::NotFound(id.to_string()))?;
        if size_bytes == 0 || size_bytes % BLOCK_SIZE_U64 != 0 || size_bytes > VOLUME_BYTES_MAX {
            return Err(VolumeError::InvalidSize(size_bytes));
        }
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

    /// Every live volume, ordered by id.
    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let all = self.core.catalog.read().all();
        all.into_iter()
            .filter(|v| v.state() == VolumeState::Live)
            .map(|v| v.info())
            .collect()
    }

    /// One volume by id.
    pub fn volume(&self, id: VolumeId) -> Option<VolumeInfo> {
        self.live_volume(id).ok().map(|v| v.info())
    }

    /// A volume's size in bytes, cheaply (no map lock): for per-I/O capacity checks.
    pub fn volume_size(&self, id: VolumeId) -> Option<u64> {
        self.live_volume(id).ok().map(|v| v.size())
    }

    /// One volume by name.
    pub fn volume_by_name(&self, name: &str) -> Option<VolumeInfo> {
        let volume = self.core.catalog.read().by_name(name)?;
        (volume.state() == VolumeState::Live).then(|| volume.info())
    }

    /// Space figures for the pool.
    pub fn pool_stats(&self) -> PoolStats {
        use crate::log::segments::SegmentState;
        let segment_bytes = self.core.pool.segment_bytes();
        let (free, body, live) = {
            let log = self.core.log.lock();
            (
                log.segments.count(SegmentState::Free) as u64,
                log.segments.count(SegmentState::CheckpointBody) as u64,
                log.segments.live_blocks(),
            )
        };
        let volumes = self.volumes();
        PoolStats {
            capacity_bytes: u64::from(self.core.pool.segment_count()) * segment_bytes,
            free_bytes: free * segment_bytes,
            used_bytes: live * BLOCK_SIZE_U64,
            provisioned_bytes: volumes.iter().map(|v| v.size_bytes).sum(),
            checkpoint_bytes: body * segment_bytes,
            volume_count: volumes.len(),
        }
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
        let first = offset / BLOCK_SIZE_U64;
        let blocks = (offset + len).div_ceil(BLOCK_SIZE_U64) - first;
        let skip = (offset - first * BLOCK_SIZE_U64) as usize;
        read_blocks(
            &self.core,
            volume,
            first,
            blocks,
            Box::new(move |result| {
                done(result.map(|buf| Bytes::from_owner(buf).slice(skip..skip + len as usize)))
            }),
        );
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
        let volume = self.live_volume(id)?;
        let sector = u64::from(volume.sector.bytes());
        if len == 0 || len % sector != 0 {
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
        let volume = self.live_volume(id)?;
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
        let (tx, rx) = crossbeam_channel::bounded(1);
        let tx2 = tx.clone();
        append(
            &self.core,
            Pending {
                record: Record::Meta(entry),
                done: Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            },
        );
        rx.recv().unwrap_or(Err(IoError::Fenced))?;
        flush_devices(
            &self.core,
            Box::new(move |r| {
                let _ = tx2.send(r);
            }),
        );
        rx.recv().unwrap_or(Err(IoError::Fenced))
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop.try_send(());
        if let Some(thread) = self.checkpointer.lock().take() {
            let _ = thread.join();
        }
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

fn validate_name(name: &str) -> Result<(), VolumeError> {
    let ok = !name.is_empty()
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

/// What a range write stores.
enum RangeData {
    Bytes(Bytes),
    Zeroes(u64),
}

/// Writes a byte range that may start or end inside a 4 KiB block. Whole aligned
/// blocks go straight to the log; partial ones are read, merged and rewritten
/// while the volume's range lock keeps concurrent writers to those blocks out.
fn write_range(
    core: &Arc<Core>,
    volume: Arc<Volume>,
    offset: u64,
    data: RangeData,
    done: WriteDone,
) {
    let len = match &data {
        RangeData::Bytes(b) => b.len() as u64,
        RangeData::Zeroes(n) => *n,
    };
    let first = offset / BLOCK_SIZE_U64;
    let end = (offset + len).div_ceil(BLOCK_SIZE_U64);
    let aligned = offset % BLOCK_SIZE_U64 == 0 && len % BLOCK_SIZE_U64 == 0;
    if volume.sector == SectorSize::B4096 {
        assert!(aligned, "4096-byte-sector volumes only see whole blocks");
        return store_blocks(core, &volume, first, end - first, data, done);
    }
    let core2 = core.clone();
    let locked = volume.clone();
    volume.range_locks.acquire(
        first,
        end,
        Box::new(move || {
            let unlock_volume = locked.clone();
            let done: WriteDone = Box::new(move |result| {
                unlock_volume.range_locks.release(first, end);
                done(result);
            });
            if aligned {
                return store_blocks(&core2, &locked, first, end - first, data, done);
            }
            let core3 = core2.clone();
            let merge_volume = locked.clone();
            read_blocks(
                &core2,
                locked,
                first,
                end - first,
                Box::new(move |result| {
                    let mut merged = match result {
                        Ok(buf) => buf.as_slice().to_vec(),
                        Err(err) => return done(Err(err)),
                    };
                    let at = (offset - first * BLOCK_SIZE_U64) as usize;
                    match &data {
                        RangeData::Bytes(bytes) => {
                            merged[at..at + bytes.len()].copy_from_slice(bytes)
                        }
                        RangeData::Zeroes(n) => merged[at..at + *n as usize].fill(0),
                    }
                    store_blocks(
                        &core3,
                        &merge_volume,
                        first,
                        end - first,
                        RangeData::Bytes(Bytes::from(merged)),
                        done,
                    );
                }),
            );
        }),
    );
}

/// Logs whole blocks: data as a write record (all-zero blocks as trims would be a
/// later optimisation), zeroes as a trim record.
fn store_blocks(
    core: &Arc<Core>,
    volume: &Volume,
    first: u64,
    blocks: u64,
    data: RangeData,
    done: WriteDone,
) {
    let record = match data {
        RangeData::Zeroes(_) => Record::Meta(Entry::Trim {
            volume: volume.id.0,
            lba: first,
            blocks,
        }),
        RangeData::Bytes(bytes) => {
            let crcs = bytes.chunks(BLOCK_SIZE).map(crc32c::crc32c).collect();
            Record::Write {
                volume: volume.id,
                lba: first,
                data: bytes,
                crcs,
            }
        }
    };
    append(core, Pending { record, done });
}

/// A contiguous piece of a read: `blocks` blocks at `phys` land at block `dest` of
/// the result.
struct ReadRun {
    dest: usize,
    phys: crate::units::PhysBlock,
    crcs: Vec<u32>,
}

/// Reads whole blocks `[first, first + blocks)` of a volume, verifying checksums.
fn read_blocks(
    core: &Arc<Core>,
    volume: Arc<Volume>,
    first: u64,
    blocks: u64,
    done: Box<dyn FnOnce(Result<AlignedBuf, IoError>) + Send>,
) {
    let mut runs: Vec<ReadRun> = Vec::new();
    {
        let map = volume.map.read();
        for i in 0..blocks {
            let Some(mapping) = map.lookup(first + i) else {
                continue;
            };
            let extend = runs.last().is_some_and(|run| {
                run.dest + run.crcs.len() == i as usize
                    && run.phys.0 + run.crcs.len() as u64 == mapping.location.0
                    && core.pool.split(run.phys).0 == core.pool.split(mapping.location).0
            });
            if extend {
                if let Some(run) = runs.last_mut() {
                    run.crcs.push(mapping.crc);
                }
            } else {
                runs.push(ReadRun {
                    dest: i as usize,
                    phys: mapping.location,
                    crcs: vec![mapping.crc],
                });
            }
        }
        // INVARIANT: pins are taken while the map lock is held, so no segment a
        // run points into can be freed and reused before the read completes.
        for run in &runs {
            core.pins.pin(core.pool.split(run.phys).0);
        }
    }
    let len = blocks as usize * BLOCK_SIZE;
    if runs.is_empty() {
        return done(Ok(AlignedBuf::zeroed(len)));
    }
    if runs.len() == 1 && runs[0].dest == 0 && runs[0].crcs.len() == blocks as usize {
        // One contiguous run covers the whole range: the device reads straight
        // into the result.
        let Some(run) = runs.pop() else {
            unreachable!("one run was just counted")
        };
        let (segment, block) = core.pool.split(run.phys);
        let (device, offset) = core.pool.locate(segment, block);
        let core2 = core.clone();
        let volume_id = volume.id;
        device.submit(
            IoOp::Read {
                offset,
                buf: AlignedBuf::for_overwrite(len),
            },
            Box::new(move |outcome| {
                core2.pins.unpin(segment);
                let result = match (outcome.result, outcome.buf) {
                    (Ok(()), Some(data)) => {
                        verify_run(&data, &run, first, volume_id).map(|()| data)
                    }
                    (Err(err), _) => Err(IoError::Device(err)),
                    (Ok(()), None) => Err(IoError::Device(DeviceError::Closed)),
                };
                done(result);
            }),
        );
        return;
    }
    let result = AlignedBuf::zeroed(len);
    let join = Arc::new(Mutex::new(ReadJoin {
        buf: Some(result),
        remaining: runs.len(),
        error: None,
        done: Some(done),
    }));
    for run in runs {
        let (segment, block) = core.pool.split(run.phys);
        let (device, offset) = core.pool.locate(segment, block);
        let join = join.clone();
        let core2 = core.clone();
        let volume_id = volume.id;
        let buf = AlignedBuf::for_overwrite(run.crcs.len() * BLOCK_SIZE);
        device.submit(
            IoOp::Read { offset, buf },
            Box::new(move |outcome| {
                core2.pins.unpin(segment);
                let mut state = join.lock();
                match (outcome.result, outcome.buf) {
                    (Ok(()), Some(data)) => {
                        if let Err(err) = verify_run(&data, &run, first, volume_id) {
                            state.error.get_or_insert(err);
                        }
                        if let Some(out) = state.buf.as_mut() {
                            let at = run.dest * BLOCK_SIZE;
                            out.as_mut_slice()[at..at + data.len()]
                                .copy_from_slice(data.as_slice());
                        }
                    }
                    (Err(err), _) => {
                        state.error.get_or_insert(IoError::Device(err));
                    }
                    (Ok(()), None) => {
                        state
                            .error
                            .get_or_insert(IoError::Device(DeviceError::Closed));
                    }
                }
                state.remaining -= 1;
                if state.remaining == 0 {
                    let done = state.done.take();
                    let outcome = match state.error.take() {
                        Some(err) => Err(err),
                        None => state.buf.take().ok_or(IoError::Device(DeviceError::Closed)),
                    };
                    drop(state);
                    if let Some(done) = done {
                        done(outcome);
                    }
                }
            }),
        );
    }
}

/// Checks every block a run read against its mapped checksum; volume block
/// `first` is the start of the read the run belongs to.
fn verify_run(
    data: &AlignedBuf,
    run: &ReadRun,
    first: u64,
    volume: VolumeId,
) -> Result<(), IoError> {
    let mut error = None;
    for (i, (block, &crc)) in data
        .as_slice()
        .chunks(BLOCK_SIZE)
        .zip(&run.crcs)
        .enumerate()
    {
        if crc32c::crc32c(block) != crc {
            let lba = first + (run.dest + i) as u64;
            tracing::error!(%volume, lba, "checksum mismatch on read");
            error.get_or_insert(IoError::Media { volume, lba });
        }
    }
    error.map_or(Ok(()), Err)
}

struct ReadJoin {
    buf: Option<AlignedBuf>,
    remaining: usize,
    error: Option<IoError>,
    done: Option<Box<dyn FnOnce(Result<AlignedBuf, IoError>) + Send>>,
}

fn flush_devices(core: &Arc<Core>, done: WriteDone) {
    if core.fenced.load(Ordering::Acquire) {
        return done(Err(IoError::Fenced));
    }
    let devices = core.pool.devices.clone();
    let join = Arc::new(Mutex::new((devices.len(), None::<IoError>, Some(done))));
    for device in devices {
        let join = join.clone();
        let core2 = core.clone();
        device.submit(
            IoOp::Flush,
            Box::new(move |outcome| {
                let mut state = join.lock();
                if let Err(err) = outcome.result {
                    // A failed flush may have dropped data: never retry, fence.
                    core2.fenced.store(true, Ordering::Release);
                    tracing::error!(%err, "flush failed; fencing the engine");
                    state.1.get_or_insert(IoError::Device(err));
                }
                state.0 -= 1;
                if state.0 == 0 {
                    let result = state.1.take().map_or(Ok(()), Err);
                    if let Some(done) = state.2.take() {
                        drop(state);
                        done(result);
                    }
                }
            }),
        );
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

fn wait<T: Send + 'static>(
    start: impl FnOnce(Box<dyn FnOnce(Result<T, IoError>) + Send>),
) -> Result<T, IoError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    start(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    rx.recv()
        .unwrap_or(Err(IoError::Device(DeviceError::Closed)))
}
