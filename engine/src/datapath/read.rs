//! The read path: looks a range up in the volume's map, pins the segments it
//! points into, reads raw runs and compressed units from the devices, checks
//! every block against its mapped crc and joins the parts into one buffer.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::core::Core;
use crate::datapath::completion::ReadDone;
use crate::error::IoError;
use crate::index::Packing;
use crate::io::{AlignedBuf, DeviceError, IoOp};
use crate::units::{VolumeId, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::volume::Volume;

/// Reads `len` bytes at byte `offset` of a volume, which may start or end inside
/// a 4 KiB block. Unmapped blocks read as zeros.
pub(crate) fn read_range(
    core: &Arc<Core>,
    volume: Arc<Volume>,
    offset: u64,
    len: u64,
    done: ReadDone,
) {
    let first = offset / BLOCK_SIZE_U64;
    let blocks = (offset + len).div_ceil(BLOCK_SIZE_U64) - first;
    let skip = (offset - first * BLOCK_SIZE_U64) as usize;
    read_blocks(
        core,
        volume,
        first,
        blocks,
        Box::new(move |result| {
            done(result.map(|buf| Bytes::from_owner(buf).slice(skip..skip + len as usize)))
        }),
    );
}

/// A contiguous piece of a read: `blocks` blocks at `phys` land at block `dest` of
/// the result.
struct ReadRun {
    dest: usize,
    phys: crate::units::PhysBlock,
    crcs: Vec<u32>,
}

/// Reads whole blocks `[first, first + blocks)` of a volume, verifying checksums.
pub(crate) fn read_blocks(
    core: &Arc<Core>,
    volume: Arc<Volume>,
    first: u64,
    blocks: u64,
    done: BlocksDone,
) {
    let mut runs: Vec<ReadRun> = Vec::new();
    let mut units: Vec<UnitRead> = Vec::new();
    {
        let map = volume.map.read();
        for i in 0..blocks {
            let Some(mapping) = map.lookup(first + i) else {
                continue;
            };
            if mapping.packing != Packing::RAW {
                let want = (i as usize, mapping.packing.index, mapping.crc);
                match units.iter_mut().rev().find(|u| u.phys == mapping.location) {
                    Some(unit) => unit.wants.push(want),
                    None => units.push(UnitRead {
                        phys: mapping.location,
                        stored_blocks: mapping.stored_blocks() as usize,
                        wants: vec![want],
                    }),
                }
                continue;
            }
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
        for phys in runs
            .iter()
            .map(|r| r.phys)
            .chain(units.iter().map(|u| u.phys))
        {
            core.pins.pin(core.pool.split(phys).0);
        }
    }
    let len = blocks as usize * BLOCK_SIZE;
    if runs.is_empty() && units.is_empty() {
        return done(Ok(AlignedBuf::zeroed(len)));
    }
    if units.is_empty()
        && runs.len() == 1
        && runs[0].dest == 0
        && runs[0].crcs.len() == blocks as usize
    {
        // One contiguous run covers the whole range: the device reads straight
        // into the result.
        let Some(run) = runs.pop() else {
            unreachable!("one run was just counted")
        };
        let (segment, block) = core.pool.split(run.phys);
        let (device, offset) = core.pool.locate(segment, block);
        let core2 = core.clone();
        let volume_id = volume.id;
        device.submit_here(
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
        remaining: runs.len() + units.len(),
        error: None,
        done: Some(done),
    }));
    for unit in units {
        read_unit(core, unit, first, volume.id, join.clone());
    }
    for run in runs {
        let (segment, block) = core.pool.split(run.phys);
        let (device, offset) = core.pool.locate(segment, block);
        let join = join.clone();
        let core2 = core.clone();
        let volume_id = volume.id;
        let buf = AlignedBuf::for_overwrite(run.crcs.len() * BLOCK_SIZE);
        device.submit_here(
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
                part_done(state);
            }),
        );
    }
}

/// One compressed unit a read needs: stored at `phys` in `stored_blocks` blocks;
/// `wants` holds `(block of the result, index in the unit, crc)`.
struct UnitRead {
    phys: crate::units::PhysBlock,
    stored_blocks: usize,
    wants: Vec<(usize, u8, u32)>,
}

/// Reads and decompresses one unit into the joined result, checking each wanted
/// block against its crc; a unit that does not decompress is a media error.
fn read_unit(
    core: &Arc<Core>,
    unit: UnitRead,
    first: u64,
    volume: VolumeId,
    join: Arc<Mutex<ReadJoin>>,
) {
    let (segment, block) = core.pool.split(unit.phys);
    let (device, offset) = core.pool.locate(segment, block);
    let core2 = core.clone();
    let buf = AlignedBuf::for_overwrite(unit.stored_blocks * BLOCK_SIZE);
    device.submit_here(
        IoOp::Read { offset, buf },
        Box::new(move |outcome| {
            core2.pins.unpin(segment);
            let mut state = join.lock();
            let media = |dest: usize| IoError::Media { volume, lba: first + dest as u64 };
            match (outcome.result, outcome.buf) {
                (Ok(()), Some(data)) => match crate::compress::unpack(data.as_slice()) {
                    Ok(content) => {
                        for &(dest, index, crc) in &unit.wants {
                            let at = usize::from(index) * BLOCK_SIZE;
                            let Some(block) = content.get(at..at + BLOCK_SIZE) else {
                                state.error.get_or_insert(media(dest));
                                continue;
                            };
                            if crc32c::crc32c(block) != crc {
                                tracing::error!(%volume, lba = first + dest as u64, "checksum mismatch on read");
                                state.error.get_or_insert(media(dest));
                            }
                            if let Some(out) = state.buf.as_mut() {
                                out.as_mut_slice()[dest * BLOCK_SIZE..(dest + 1) * BLOCK_SIZE].copy_from_slice(block);
                            }
                        }
                    }
                    Err(_) => {
                        tracing::error!(%volume, "a compressed unit does not decompress");
                        let dest = unit.wants.first().map_or(0, |w| w.0);
                        state.error.get_or_insert(media(dest));
                    }
                },
                (Err(err), _) => {
                    state.error.get_or_insert(IoError::Device(err));
                }
                (Ok(()), None) => {
                    state.error.get_or_insert(IoError::Device(DeviceError::Closed));
                }
            }
            part_done(state);
        }),
    );
}

/// Counts one finished part of a joined read; the last part completes it.
fn part_done(mut state: parking_lot::MutexGuard<'_, ReadJoin>) {
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

/// Completion of a whole-block read.
pub(crate) type BlocksDone = Box<dyn FnOnce(Result<AlignedBuf, IoError>) + Send>;

/// A read of several parts: the result being assembled, the parts still
/// running, the first error and the completion to run after the last part.
struct ReadJoin {
    buf: Option<AlignedBuf>,
    remaining: usize,
    error: Option<IoError>,
    done: Option<BlocksDone>,
}
