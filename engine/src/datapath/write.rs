//! The write path: splits writes into log records of at most
//! `ATOMIC_WRITE_BLOCKS` blocks (packed into compressed units on compressing
//! volumes), turns trims and write-zeroes into trim records, and merges writes
//! that cover part of a 4 KiB block with the block's old content under the
//! volume's range lock (512-byte sectors).

use std::sync::Arc;

use bytes::Bytes;

use crate::core::Core;
use crate::datapath::completion::{Join, WriteDone};
use crate::datapath::read::read_blocks;
use crate::error::IoError;
use crate::format::{Entry, VOLUME_FLAG_COMPRESS};
use crate::log::{append, Origin, Pending, Record, WritePlug};
use crate::units::{SectorSize, BLOCK_SIZE, BLOCK_SIZE_U64};
use crate::volume::Volume;

/// Writes of up to this many 4 KiB blocks are one log record: all or nothing
/// across power loss. Larger writes are split into records of this size (so
/// batches can fill the room left in a segment); after power loss a prefix of
/// such a write's pieces may survive without the rest.
pub const ATOMIC_WRITE_BLOCKS: usize = 32;

/// What a range write stores.
pub(crate) enum RangeData {
    /// Data to store: whole sectors of the volume.
    Bytes(Bytes),
    /// This many bytes to read as zeros from then on, taking no space.
    Zeroes(u64),
}

/// Writes a byte range that may start or end inside a 4 KiB block. Whole aligned
/// blocks go straight to the log; partial ones are read, merged and rewritten
/// while the volume's range lock keeps concurrent writers to those blocks out.
pub(crate) fn write_range(
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
    let aligned = offset.is_multiple_of(BLOCK_SIZE_U64) && len.is_multiple_of(BLOCK_SIZE_U64);
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
    let bytes = match data {
        RangeData::Zeroes(_) => {
            let record = Record::Meta(Entry::Trim {
                volume: volume.id.0,
                lba: first,
                blocks,
            });
            return append(core, Pending { record, done });
        }
        RangeData::Bytes(bytes) => bytes,
    };
    if !core.write_admitted(volume, first, blocks) {
        core.counters
            .note_no_space("live data at the pool's limit; only overwrites are taken");
        return done(Err(IoError::NoSpace));
    }
    let compressed = volume.flags() & VOLUME_FLAG_COMPRESS != 0;
    let piece_bytes = ATOMIC_WRITE_BLOCKS * BLOCK_SIZE;
    let pieces = bytes.len().div_ceil(piece_bytes);
    let mut rest = bytes;
    // A write of several records forms its batches once all are queued, so
    // they share batches instead of the first forming one on its own.
    let _plug = (pieces > 1).then(WritePlug::new);
    for (piece, done) in Join::split(done, pieces).into_iter().enumerate() {
        // The last piece (the only one, for most writes) takes the buffer
        // itself: slicing a `Bytes` made from a `Vec` allocates to share it.
        let data = if rest.len() > piece_bytes {
            rest.split_to(piece_bytes)
        } else {
            std::mem::take(&mut rest)
        };
        let lba = first + (piece * ATOMIC_WRITE_BLOCKS) as u64;
        let (entry, data) = if compressed {
            crate::compress::pack(volume.id.0, lba, &data)
        } else {
            let crcs = data.chunks(BLOCK_SIZE).map(crc32c::crc32c).collect();
            let entry = Entry::Write {
                volume: volume.id.0,
                lba,
                data_offset: 0,
                crcs,
            };
            (entry, data)
        };
        let record = Record::Data {
            entry,
            data,
            origin: Origin::Foreground,
        };
        append(core, Pending { record, done });
    }
}
