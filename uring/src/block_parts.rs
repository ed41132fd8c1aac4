//! Block-aligned pieces of memory that one vectored write lays side by side
//! on a device: a log batch's header and its records' data written from the
//! buffers the data arrived in, instead of copied into one buffer first.
#![allow(unsafe_code)]

use bytes::Bytes;

use crate::BLOCK_SIZE;

/// The most pieces one write takes: the kernel's `IOV_MAX`.
pub const BLOCK_PARTS_MAX: usize = 1024;

/// Pieces written in order as one contiguous range. Every piece starts at an
/// address that is a multiple of [`BLOCK_SIZE`] and holds a non-zero multiple
/// of it, as O_DIRECT requires of each piece of a vectored transfer.
pub struct BlockParts {
    parts: Vec<Bytes>,
    /// One entry per piece, pointing into `parts`' memory (which `Bytes`
    /// never moves or frees while a handle to it lives here).
    iovecs: Box<[libc::iovec]>,
    len: usize,
}

// SAFETY: the iovecs only point into memory the `Bytes` handles beside them
// keep alive and never mutate; nothing reads through them but the kernel,
// while the operation that holds this value is in flight.
unsafe impl Send for BlockParts {}
// SAFETY: shared access only reads the pieces, which `Bytes` permits from any thread.
unsafe impl Sync for BlockParts {}

impl BlockParts {
    /// True when `piece` may be one piece of a [`BlockParts`]: block-aligned
    /// in address and a non-zero number of whole blocks long.
    pub fn fits(piece: &[u8]) -> bool {
        !piece.is_empty()
            && piece.len().is_multiple_of(BLOCK_SIZE)
            && (piece.as_ptr() as usize).is_multiple_of(BLOCK_SIZE)
    }

    /// The pieces as one write, or the pieces back when one does not
    /// [`BlockParts::fits`] or there are none or more than [`BLOCK_PARTS_MAX`].
    pub fn new(parts: Vec<Bytes>) -> Result<BlockParts, Vec<Bytes>> {
        let usable = !parts.is_empty()
            && parts.len() <= BLOCK_PARTS_MAX
            && parts.iter().all(|part| BlockParts::fits(part));
        if !usable {
            return Err(parts);
        }
        let iovecs = parts
            .iter()
            .map(|part| libc::iovec {
                iov_base: part.as_ptr().cast_mut().cast(),
                iov_len: part.len(),
            })
            .collect();
        let len = parts.iter().map(Bytes::len).sum();
        Ok(BlockParts { parts, iovecs, len })
    }

    /// Total bytes written.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there is nothing to write (never, once made).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The pieces, in the order they are written.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// The pieces as the kernel's vector: its address and its length.
    pub(crate) fn iovecs(&self) -> (*const libc::iovec, u32) {
        // INVARIANT: at most BLOCK_PARTS_MAX entries, so the count fits.
        (self.iovecs.as_ptr(), self.iovecs.len() as u32)
    }
}

impl std::fmt::Debug for BlockParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BlockParts({} pieces, {} bytes)",
            self.parts.len(),
            self.len
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AlignedBuf;

    fn aligned(blocks: usize) -> Bytes {
        Bytes::from_owner(AlignedBuf::zeroed(blocks * BLOCK_SIZE))
    }

    #[test]
    fn aligned_whole_blocks_make_one_write() {
        let parts = BlockParts::new(vec![aligned(1), aligned(32)]).expect("aligned");
        assert_eq!(parts.len(), 33 * BLOCK_SIZE);
        assert_eq!(parts.parts().len(), 2);
        let (iovecs, count) = parts.iovecs();
        assert!(!iovecs.is_null());
        assert_eq!(count, 2);
    }

    #[test]
    fn a_misaligned_or_partial_piece_gives_the_pieces_back() {
        let shifted = aligned(2).slice(512..512 + BLOCK_SIZE);
        assert_eq!(
            BlockParts::new(vec![aligned(1), shifted])
                .unwrap_err()
                .len(),
            2
        );
        let short = aligned(1).slice(..BLOCK_SIZE - 1);
        assert!(BlockParts::new(vec![short]).is_err());
        assert!(BlockParts::new(Vec::new()).is_err());
        let too_many = (0..=BLOCK_PARTS_MAX).map(|_| aligned(1)).collect();
        assert!(BlockParts::new(too_many).is_err());
    }
}
