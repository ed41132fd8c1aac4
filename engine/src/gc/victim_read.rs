//! Reading a victim: only its batch headers and its live blocks when the
//! segment table knows where its batches sit, otherwise everything up to its
//! last live block.
//!
//! A victim under random overwrite is mostly dead (cleaning one more than 7/8
//! live is not worth it), so reading only what its copies need saves most of
//! the collector's device reads on a disk and most of its memory copying on a
//! RAM device.
//!
//! INVARIANT: a piece of a partial read starts and ends only at a batch start
//! or beside a dead block. A live unit lies inside one batch's data, and every
//! block of it is live, so each header and each unit lies whole in one piece.

use bytes::Bytes;
use crossbeam_channel::Receiver;

use crate::io::{read_blocking_into, AlignedBuf, Device, DeviceError, IoOp, IoOutcome};
use crate::log::segments::BatchPlace;
use crate::units::BLOCK_SIZE;

/// A victim is read in requests of at most this size, at most this much at a
/// time, so no collector read holds the device's queue for long ahead of
/// host I/O.
pub(super) const VICTIM_READ_PIECE_BYTES: usize = 1024 * 1024;
/// Requests of one victim in flight at once: a partly live victim is read
/// in hundreds of small pieces, each waiting behind the host's I/O on a busy
/// device, so they go in groups rather than a few at a time (16 measured
/// 15% slower than whole reads for large writes cleaning a fragmented pool).
const PIECES_IN_FLIGHT_MAX: usize = 64;
/// Dead blocks between two needed ones that are read through rather than
/// skipped: a request costs the device more than a few blocks of transfer.
const GAP_READ_THROUGH_BLOCKS: u32 = 2;

/// What a round read of one victim: pieces of consecutive blocks, in order.
pub(super) struct VictimImage {
    pieces: Vec<(u32, Bytes)>,
}

impl VictimImage {
    /// The piece holding `block`, and where in it the block starts.
    fn piece_of(&self, block: u32) -> Option<(&Bytes, usize)> {
        let after = self.pieces.partition_point(|(first, _)| *first <= block);
        let (first, bytes) = self.pieces.get(after.checked_sub(1)?)?;
        let at = (block - first) as usize * BLOCK_SIZE;
        (at < bytes.len()).then_some((bytes, at))
    }

    /// `count` blocks from `first`, when one piece holds them all.
    pub fn blocks(&self, first: u32, count: u32) -> Option<Bytes> {
        let (bytes, at) = self.piece_of(first)?;
        let end = at + count as usize * BLOCK_SIZE;
        (end <= bytes.len()).then(|| bytes.slice(at..end))
    }

    /// Blocks read in all.
    pub fn blocks_read(&self) -> u64 {
        self.pieces
            .iter()
            .map(|(_, bytes)| (bytes.len() / BLOCK_SIZE) as u64)
            .sum()
    }

    /// What was read from `first` to the end of its piece.
    pub fn tail_from(&self, first: u32) -> Option<&[u8]> {
        let (bytes, at) = self.piece_of(first)?;
        bytes.get(at..)
    }
}

/// Reads blocks `0..blocks` at `offset` in requests of
/// [`VICTIM_READ_PIECE_BYTES`], each into its part of one buffer.
pub(super) fn read_whole(
    device: &dyn Device,
    offset: u64,
    blocks: u32,
) -> Result<VictimImage, DeviceError> {
    let len = blocks as usize * BLOCK_SIZE;
    let mut buf = AlignedBuf::for_overwrite(len);
    for at in (0..len).step_by(VICTIM_READ_PIECE_BYTES) {
        buf.view(at, VICTIM_READ_PIECE_BYTES.min(len - at));
        buf = read_blocking_into(device, offset + at as u64, buf)?;
    }
    buf.view(0, len);
    Ok(VictimImage {
        pieces: vec![(0, Bytes::from_owner(buf))],
    })
}

/// The pieces to read of a victim whose batches sit at `places`: every
/// header and every `live` block, bridging gaps of at most
/// [`GAP_READ_THROUGH_BLOCKS`], cut at batch starts into pieces of at most
/// [`VICTIM_READ_PIECE_BYTES`] where a batch start allows. `(first, count)`
/// in blocks.
pub(super) fn plan_pieces(live: &[bool], places: &[BatchPlace]) -> Vec<(u32, u32)> {
    let mut needed = live.to_vec();
    for place in places {
        let end = place.block as usize + usize::from(place.header_blocks);
        if needed.len() < end {
            needed.resize(end, false);
        }
        needed[place.block as usize..end].fill(true);
    }
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for block in (0..needed.len() as u32).filter(|b| needed[*b as usize]) {
        match runs.last_mut() {
            Some((_, end)) if block - *end <= GAP_READ_THROUGH_BLOCKS => *end = block + 1,
            _ => runs.push((block, block + 1)),
        }
    }
    let piece_max = (VICTIM_READ_PIECE_BYTES / BLOCK_SIZE) as u32;
    let mut pieces = Vec::new();
    let mut starts = places.iter().map(|p| p.block).peekable();
    for (first, end) in runs {
        let mut start = first;
        let mut last_cut = None;
        while let Some(cut) = starts.next_if(|&cut| cut < end) {
            if cut <= start {
                continue;
            }
            if cut - start > piece_max {
                let at = last_cut.unwrap_or(cut);
                pieces.push((start, at - start));
                start = at;
            }
            last_cut = (cut > start).then_some(cut);
        }
        if end - start > piece_max {
            if let Some(at) = last_cut {
                pieces.push((start, at - start));
                start = at;
            }
        }
        pieces.push((start, end - start));
    }
    pieces
}

/// Reads `pieces` (`(first, count)` blocks of the segment at `offset`), up
/// to [`PIECES_IN_FLIGHT_MAX`] and [`VICTIM_READ_PIECE_BYTES`] at a time.
pub(super) fn read_pieces(
    device: &dyn Device,
    offset: u64,
    pieces: &[(u32, u32)],
) -> Result<VictimImage, DeviceError> {
    let (done_tx, done): (_, Receiver<(usize, IoOutcome)>) = crossbeam_channel::unbounded();
    let mut read: Vec<Option<Bytes>> = vec![None; pieces.len()];
    let (mut next, mut in_flight, mut bytes_in_flight) = (0, 0, 0);
    let mut failed = None;
    while next < pieces.len() || in_flight > 0 {
        while failed.is_none() && next < pieces.len() && in_flight < PIECES_IN_FLIGHT_MAX {
            let len = pieces[next].1 as usize * BLOCK_SIZE;
            if in_flight > 0 && bytes_in_flight + len > VICTIM_READ_PIECE_BYTES {
                break;
            }
            let tx = done_tx.clone();
            let index = next;
            device.submit(
                IoOp::Read {
                    offset: offset + u64::from(pieces[next].0) * BLOCK_SIZE as u64,
                    buf: AlignedBuf::for_overwrite(len),
                },
                Box::new(move |outcome| {
                    let _ = tx.send((index, outcome));
                }),
            );
            next += 1;
            in_flight += 1;
            bytes_in_flight += len;
        }
        if in_flight == 0 {
            break;
        }
        let (index, outcome) = done.recv().map_err(|_| DeviceError::Closed)?;
        in_flight -= 1;
        bytes_in_flight -= pieces[index].1 as usize * BLOCK_SIZE;
        match outcome
            .result
            .and_then(|()| outcome.buf.ok_or(DeviceError::Closed))
        {
            Ok(buf) => read[index] = Some(Bytes::from_owner(buf)),
            Err(err) => failed = Some(err),
        }
    }
    if let Some(err) = failed {
        return Err(err);
    }
    let pieces = pieces
        .iter()
        .zip(read)
        .map(|(&(first, _), bytes)| bytes.map(|b| (first, b)).ok_or(DeviceError::Closed))
        .collect::<Result<_, _>>()?;
    Ok(VictimImage { pieces })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{write_blocking, SimDevice};

    fn place(block: u32, header_blocks: u16) -> BatchPlace {
        BatchPlace {
            block,
            header_blocks,
        }
    }

    fn mask(blocks: usize, live: impl Fn(usize) -> bool) -> Vec<bool> {
        (0..blocks).map(live).collect()
    }

    #[test]
    fn a_plan_reads_headers_and_live_blocks_and_bridges_only_short_gaps() {
        // Batches of one header and 16 data blocks; live: 3, 4, 9 of the
        // first batch's data, none of the second's, the third's last.
        let places = [place(0, 1), place(17, 1), place(34, 1)];
        let live = mask(51, |b| [4, 5, 10, 50].contains(&b));
        assert_eq!(
            plan_pieces(&live, &places),
            vec![(0, 1), (4, 2), (10, 1), (17, 1), (34, 1), (50, 1)]
        );
        let short_gaps = mask(51, |b| [3, 6, 50].contains(&b));
        assert_eq!(
            plan_pieces(&short_gaps, &places),
            vec![(0, 7), (17, 1), (34, 1), (50, 1)]
        );
    }

    #[test]
    fn a_long_live_stretch_is_cut_at_batch_starts_only() {
        let per_piece = (VICTIM_READ_PIECE_BYTES / BLOCK_SIZE) as u32;
        // Whole batches of 2 header and 100 data blocks, every block live.
        let places: Vec<BatchPlace> = (0..8).map(|i| place(i * 102, 2)).collect();
        let live = mask(8 * 102, |_| true);
        let pieces = plan_pieces(&live, &places);
        let starts: Vec<u32> = places.iter().map(|p| p.block).collect();
        let mut expected_first = 0;
        for &(first, count) in &pieces {
            assert_eq!(first, expected_first, "{pieces:?}");
            assert!(starts.contains(&first), "{pieces:?}");
            assert!(count <= per_piece, "{pieces:?}");
            expected_first = first + count;
        }
        assert_eq!(expected_first, 8 * 102);
        assert!(pieces.len() > 1);
        // A batch longer than a piece is read whole.
        let huge = [place(0, 1), place(per_piece + 10, 1)];
        let live = mask(per_piece as usize + 12, |_| true);
        assert_eq!(
            plan_pieces(&live, &huge),
            vec![(0, per_piece + 10), (per_piece + 10, 2)]
        );
    }

    #[test]
    fn pieces_read_are_the_bytes_on_the_device_and_found_by_block() {
        let device = SimDevice::new(8 << 20);
        let blocks = 700usize;
        let mut written = AlignedBuf::for_overwrite(blocks * BLOCK_SIZE);
        for (i, byte) in written.as_mut_slice().iter_mut().enumerate() {
            *byte = (i * 7 % 251) as u8;
        }
        let expected = written.as_slice().to_vec();
        let base = BLOCK_SIZE as u64;
        write_blocking(&device, base, written).expect("write");
        let block = |b: u32| &expected[b as usize * BLOCK_SIZE..(b as usize + 1) * BLOCK_SIZE];

        let pieces = [(0, 3), (10, 300), (400, 290)];
        let image = read_pieces(&device, base, &pieces).expect("read");
        for &(first, count) in &pieces {
            for b in first..first + count {
                assert_eq!(image.blocks(b, 1).expect("read block").as_ref(), block(b));
            }
        }
        assert!(image.blocks(3, 1).is_none(), "a block not read");
        assert!(image.blocks(2, 2).is_none(), "blocks across a hole");
        assert_eq!(
            image.tail_from(300).expect("read").len(),
            10 * BLOCK_SIZE,
            "to the end of its piece"
        );

        let whole = read_whole(&device, base, blocks as u32).expect("read");
        assert_eq!(
            whole.blocks(0, blocks as u32).expect("all").as_ref(),
            &expected[..]
        );
    }
}
