//! The foreground head's open batch: one device write per host write.
//!
//! A batch written in one piece costs a header block per device write, so a
//! lone 4 KiB write would cost 8 KiB. The foreground head instead keeps one
//! batch open: its header block is reserved at the front, its data blocks are
//! handed to records as they arrive and each group of records formed together
//! is written on its own (an *extent*, data only). Once an extent's write and
//! those of every extent placed before it have completed, its entries join
//! the header, and the header block is rewritten
//! through the page cache ([`crate::io::IoOp::WriteCached`]); a record is
//! applied and acknowledged once an image naming it is written. The page
//! cache keeps every image across process death and the next flush makes the
//! last one durable, which is exactly what an acknowledgement promises (the
//! namespace reports a volatile write cache), while the media sees the header
//! about once per batch instead of once per write.
//!
//! INVARIANT: an image lists only records whose data writes completed, and
//! every image extends the one before it (entries are only appended), so
//! whichever image a crash leaves names acknowledged-or-later records only.
//! INVARIANT: entries join the header in the order their records were placed
//! (the order they arrived), whatever order their writes complete in, so two
//! writes of one block in flight together apply, and replay, in arrival order,
//! as they do in a batch written whole.
//! INVARIANT: at most one image write is in flight, so images reach the page
//! cache in the order they were made.
//! INVARIANT: entries are applied early (before the batch completes) only
//! while every earlier batch is applied, so the index changes in log order.
//! INVARIANT: the batch closes before anything else is formed on the log
//! (a metadata record, a collector batch), before a flush is issued and before
//! a checkpoint captures the index, so batches still apply in sequence order
//! and a checkpoint never holds part of a batch that replay would apply again.

use std::collections::VecDeque;

use crate::error::IoError;
use crate::format::{BatchHeader, Entry, BATCH_HEADER_FIXED_LEN};
use crate::units::SegmentId;

use super::RecordDone;

/// The open batch's state, kept in [`super::LogState`].
pub(super) struct OpenBatch {
    /// Its header as of the newest image made; `entries` grows as extents
    /// complete, in placement order.
    pub header: BatchHeader,
    pub segment: SegmentId,
    /// Where its header block is; data starts at the next block.
    pub block: u32,
    /// Acknowledgements of `header.entries[applied..]`, in the same order.
    pub dones: Vec<RecordDone>,
    /// Entries already applied to the index (and acknowledged).
    pub applied: usize,
    /// Entries named by the newest image whose write completed.
    pub imaged: usize,
    /// Entries named by the image being written, if one is.
    pub imaging: Option<usize>,
    /// Whether the image being written is the final one.
    imaging_final: bool,
    /// Whether the newest image written is the final one: the batch closed,
    /// every extent joined, and the image says so by lacking the open flag.
    imaged_final: bool,
    /// Header bytes the records placed so far need (written or in flight).
    header_bytes: usize,
    /// Data blocks handed out so far.
    pub data_next: u32,
    /// Data blocks the batch may grow to (its segment's room and the batch limit).
    data_max: u32,
    /// Extents whose entries have not joined the header, in placement order:
    /// `None` while the write is in flight, then its entries and their
    /// acknowledgements until every extent before it has completed too.
    extents: VecDeque<Option<(Vec<Entry>, Vec<RecordDone>)>>,
    /// The placement number of `extents.front()`.
    extents_first: u64,
    /// No more records join; the batch completes once its writes have.
    pub closing: bool,
    /// The first failed write: the batch completes with it.
    pub failed: Option<IoError>,
}

/// Header blocks an open batch reserves.
pub(super) const OPEN_HEADER_BLOCKS: u16 = 1;

/// Header bytes an open batch may use: one 512-byte sector, which no crash
/// tears (FORMAT.md, "Media assumptions"). A header failing its checksum is
/// then always damage, never the torn tail of a rewrite, so recovery refuses
/// it instead of ending the log there and dropping acknowledged records. 16
/// one-block writes share it: 1.06 device blocks per block written.
pub(super) const OPEN_HEADER_BYTES_MAX: usize = 512;

impl OpenBatch {
    /// A batch whose header (`entries` empty) is at `block` of `segment`, with
    /// room for `data_max` data blocks after it.
    pub fn new(header: BatchHeader, segment: SegmentId, block: u32, data_max: u32) -> OpenBatch {
        OpenBatch {
            header,
            segment,
            block,
            dones: Vec::new(),
            applied: 0,
            imaged: 0,
            imaging: None,
            imaging_final: false,
            imaged_final: false,
            header_bytes: BATCH_HEADER_FIXED_LEN,
            data_next: 0,
            data_max,
            extents: VecDeque::new(),
            extents_first: 0,
            closing: false,
            failed: None,
        }
    }

    /// The sequence number it was given when it opened.
    pub fn seq(&self) -> u64 {
        self.header.seq
    }

    /// Whether a record of `entry_len` header bytes and `blocks` data blocks still fits.
    pub fn fits(&self, entry_len: usize, blocks: u32) -> bool {
        !self.closing
            && self.header_bytes + entry_len <= OPEN_HEADER_BYTES_MAX
            && self.data_next + blocks <= self.data_max
    }

    /// Hands `entry` its data blocks; returns their first block in the segment.
    pub fn place(&mut self, entry: &mut Entry) -> u32 {
        let blocks = entry.data_blocks();
        entry.set_data_offset(self.data_next);
        let first = self.block + u32::from(OPEN_HEADER_BLOCKS) + self.data_next;
        self.data_next += blocks;
        self.header_bytes += entry.encoded_len();
        first
    }

    /// Starts an extent of the records just placed; returns its placement
    /// number, which [`OpenBatch::extent_written`] takes.
    pub fn start_extent(&mut self) -> u64 {
        self.extents.push_back(None);
        self.extents_first + self.extents.len() as u64 - 1
    }

    /// Extent `number`'s write completed: its `entries` join the header (and
    /// `dones` the acknowledgements) once every earlier extent's have.
    pub fn extent_written(&mut self, number: u64, entries: Vec<Entry>, dones: Vec<RecordDone>) {
        let slot = usize::try_from(number - self.extents_first)
            .ok()
            .and_then(|at| self.extents.get_mut(at));
        let Some(slot) = slot else {
            unreachable!("an extent completes once, after it started")
        };
        *slot = Some((entries, dones));
        while let Some(Some(_)) = self.extents.front() {
            let Some(Some((entries, dones))) = self.extents.pop_front() else {
                break;
            };
            self.extents_first += 1;
            self.header.entries.extend(entries);
            self.dones.extend(dones);
        }
    }

    /// Where the next batch of the head goes once this one closes.
    pub fn end(&self) -> u32 {
        self.block + u32::from(OPEN_HEADER_BLOCKS) + self.data_next
    }

    /// The next image to write, if the header has changed since the last one
    /// and none is being written: its bytes, and the entries it names. Every
    /// image but the final one carries the open flag; the final one is written
    /// once the batch is closed and every extent has joined, even if it names
    /// no more entries than the image before it.
    pub fn next_image(&mut self) -> Option<(Vec<u8>, usize)> {
        if self.imaging.is_some() || self.failed.is_some() {
            return None;
        }
        let count = self.header.entries.len();
        let last = self.closing && self.extents.is_empty();
        let final_due = last && !self.imaged_final;
        if count == self.imaged && !final_due {
            return None;
        }
        self.header.data_blocks = self.data_next;
        self.header.open = !last;
        self.imaging = Some(count);
        self.imaging_final = last;
        Some((self.header.encode(), count))
    }

    /// The image being written, naming `count` entries, was written.
    pub fn image_written(&mut self, count: usize) {
        self.imaging = None;
        self.imaged = count;
        self.imaged_final = self.imaging_final;
    }

    /// Whether every write of a closing batch has completed and its final
    /// image is written (or a write failed).
    pub fn is_complete(&self) -> bool {
        self.closing
            && self.extents.is_empty()
            && self.imaging.is_none()
            && (self.failed.is_some() || self.imaged_final)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::HEAD_FOREGROUND;
    use crate::units::BLOCK_SIZE;

    fn open(data_max: u32) -> OpenBatch {
        let header = BatchHeader {
            seq: 7,
            epoch: 1,
            pool_uuid: [3; 16],
            segment: 2,
            header_blocks: OPEN_HEADER_BLOCKS,
            data_blocks: 0,
            completed_seq: 6,
            durable_seq: 0,
            head: HEAD_FOREGROUND,
            open: false,
            entries: Vec::new(),
        };
        OpenBatch::new(header, SegmentId(2), 10, data_max)
    }

    fn write(blocks: usize) -> Entry {
        Entry::Write {
            volume: 1,
            lba: 0,
            data_offset: u32::MAX,
            crcs: vec![0; blocks],
        }
    }

    #[test]
    fn records_get_consecutive_blocks_after_the_header_and_stop_at_either_limit() {
        let mut batch = open(5);
        let mut first = write(2);
        assert!(batch.fits(first.encoded_len(), 2));
        assert_eq!(batch.place(&mut first), 11);
        let mut second = write(3);
        assert_eq!(batch.place(&mut second), 13);
        assert!(matches!(second, Entry::Write { data_offset: 2, .. }));
        assert!(
            !batch.fits(write(1).encoded_len(), 1),
            "data room is used up"
        );
        assert_eq!(batch.end(), 16);

        let mut small = open(10_000);
        let mut placed = 0;
        while small.fits(write(1).encoded_len(), 1) {
            small.place(&mut write(1));
            placed += 1;
        }
        assert_eq!(
            placed,
            (OPEN_HEADER_BYTES_MAX - BATCH_HEADER_FIXED_LEN) / 26,
            "one header sector"
        );
    }

    #[test]
    fn entries_join_in_placement_order_whatever_order_their_writes_complete_in() {
        let mut batch = open(8);
        let mut older = write(1);
        batch.place(&mut older);
        let first = batch.start_extent();
        let mut newer = write(1);
        batch.place(&mut newer);
        let second = batch.start_extent();
        batch.extent_written(second, vec![newer.clone()], Vec::new());
        assert!(
            batch.header.entries.is_empty() && batch.next_image().is_none(),
            "the newer write waits for the older one"
        );
        batch.extent_written(first, vec![older.clone()], Vec::new());
        assert_eq!(batch.header.entries, vec![older, newer]);
        let (_, count) = batch.next_image().expect("an image of both");
        assert_eq!(count, 2);
    }

    #[test]
    fn one_image_at_a_time_and_complete_only_when_the_last_names_everything() {
        let mut batch = open(8);
        let mut entry = write(1);
        batch.place(&mut entry);
        let extent = batch.start_extent();
        assert!(batch.next_image().is_none(), "nothing completed yet");
        batch.extent_written(extent, vec![entry], Vec::new());
        let (bytes, count) = batch.next_image().expect("an image");
        assert_eq!(count, 1);
        assert_eq!(bytes.len(), BLOCK_SIZE);
        let decoded = BatchHeader::decode(&bytes).expect("decodes");
        assert_eq!(decoded.data_blocks, 1);
        assert!(decoded.open, "the batch may still gain entries");
        assert!(batch.next_image().is_none(), "one in flight");
        batch.closing = true;
        assert!(!batch.is_complete(), "its image is still being written");
        batch.image_written(count);
        assert!(
            !batch.is_complete(),
            "its newest image is not the final one"
        );
        let (bytes, count) = batch.next_image().expect("the final image");
        assert_eq!(count, 1);
        let decoded = BatchHeader::decode(&bytes).expect("decodes");
        assert!(!decoded.open, "the final image says so");
        batch.image_written(count);
        assert!(batch.is_complete());
        assert!(batch.next_image().is_none(), "nothing more to write");
        assert!(!batch.fits(32, 1), "a closing batch takes no more records");
    }
}
