//! A ring for file and block-device I/O whose in-flight table owns every
//! operation's buffer and its owner's payload (the engine's callback) until
//! the kernel reports the operation done.
//!
//! The ring and the table are one value, so an entry's user_data can only be
//! answered by the completion of that entry: a buffer leaves the table when
//! its own completion is reaped, or never (leaked) when the ring is given up
//! with operations in flight.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, squeue, types, IoUring, Parameters, Probe};

use crate::lend::{is_lent, LentQueue};
use crate::settled;
use crate::table::InFlightTable;
use crate::{AlignedBuf, BlockParts, EventFd};

/// An operation on a file (or block device) descriptor.
#[derive(Debug)]
pub enum FileOp {
    /// Reads `buf.len()` bytes at `offset` into `buf`.
    Read {
        /// Byte offset in the file.
        offset: u64,
        /// Where the bytes go.
        buf: AlignedBuf,
    },
    /// Writes all of `buf` at `offset`.
    Write {
        /// Byte offset in the file.
        offset: u64,
        /// What is written.
        buf: AlignedBuf,
    },
    /// Writes `parts` one after another from `offset`, in one vectored write.
    WriteParts {
        /// Byte offset in the file.
        offset: u64,
        /// What is written.
        parts: BlockParts,
    },
    /// Makes every completed write durable (`fdatasync`).
    Sync,
    /// Allocates `len` bytes at `offset` without changing the file's size or
    /// content (fallocate mode 0).
    Allocate {
        /// Byte offset in the file.
        offset: u64,
        /// Bytes to allocate.
        len: u64,
    },
}

impl FileOp {
    /// The buffer the operation carries, if any.
    pub fn into_buf(self) -> Option<AlignedBuf> {
        match self {
            FileOp::Read { buf, .. } | FileOp::Write { buf, .. } => Some(buf),
            FileOp::WriteParts { .. } | FileOp::Sync | FileOp::Allocate { .. } => None,
        }
    }

    /// Bytes the operation moves when it succeeds in full.
    pub fn wanted(&self) -> usize {
        match self {
            FileOp::Read { buf, .. } | FileOp::Write { buf, .. } => buf.len(),
            FileOp::WriteParts { parts, .. } => parts.len(),
            FileOp::Sync | FileOp::Allocate { .. } => 0,
        }
    }
}

/// Memory an operation in flight owns.
enum Owned {
    /// A file operation, with its buffer.
    Op(FileOp),
    /// An eventfd read: the eventfd and the counter the kernel writes.
    Counter {
        _eventfd: Arc<EventFd>,
        _counter: Box<[u8; 8]>,
    },
}

struct InFlight<T> {
    owned: Owned,
    payload: T,
}

/// One reaped completion.
pub enum Reaped<T> {
    /// One of the ring's own operations: its buffer (a read's holds the bytes
    /// read), its payload and the kernel's result (bytes moved, or a negated
    /// errno).
    Own {
        /// The buffer the operation carried, if any.
        buf: Option<AlignedBuf>,
        /// What its submitter attached.
        payload: T,
        /// The CQE result.
        result: i32,
    },
    /// A borrower's operation (see [`crate::LentRing`]), as (user_data, result).
    Lent(u64, i32),
}

/// An io_uring and the operations it has in flight, each with a payload `T`.
/// Used by the one thread that created it.
pub struct FileRing<T> {
    ring: IoUring,
    ops: InFlightTable<InFlight<T>>,
}

impl<T> FileRing<T> {
    /// Takes `ring` (fresh, nothing in flight) with room for `capacity`
    /// operations in flight.
    pub fn new(ring: IoUring, capacity: usize) -> FileRing<T> {
        FileRing {
            ring,
            ops: InFlightTable::with_capacity(capacity),
        }
    }

    /// A ring of `entries` submission and `cq_entries` completion slots whose
    /// completions the kernel defers until its owner enters it
    /// (`IORING_SETUP_DEFER_TASKRUN`, Linux 6.1) instead of interrupting the
    /// owner for each; [`FileRing::taskrun`] then says when entering is due.
    /// A plain ring on kernels without it. Room for `entries` operations.
    pub fn deferring(entries: u32, cq_entries: u32) -> std::io::Result<FileRing<T>> {
        let ring = IoUring::builder()
            .setup_cqsize(cq_entries)
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_taskrun_flag()
            .build(entries)
            .or_else(|_| IoUring::builder().setup_cqsize(cq_entries).build(entries))?;
        Ok(FileRing::new(ring, entries as usize))
    }

    /// Whether another operation fits in the table.
    pub fn has_free(&self) -> bool {
        self.ops.has_room()
    }

    /// Operations queued or in flight whose completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Queues `op` on `fd` with `payload` (without entering the kernel unless
    /// the submission queue is full). Gives both back if the table is full or
    /// the kernel takes no entry.
    pub fn push(&mut self, fd: RawFd, op: FileOp, payload: T) -> Result<(), (FileOp, T)> {
        let fd = types::Fd(fd);
        let mut op = op;
        let sqe = match &mut op {
            FileOp::Read { offset, buf } => {
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                opcode::Read::new(fd, buf.as_mut_ptr(), len)
                    .offset(*offset)
                    .build()
            }
            FileOp::Write { offset, buf } => {
                let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
                opcode::Write::new(fd, buf.as_mut_ptr(), len)
                    .offset(*offset)
                    .build()
            }
            FileOp::WriteParts { offset, parts } => {
                let (iovecs, count) = parts.iovecs();
                opcode::Writev::new(fd, iovecs, count)
                    .offset(*offset)
                    .build()
            }
            FileOp::Sync => opcode::Fsync::new(fd)
                .flags(types::FsyncFlags::DATASYNC)
                .build(),
            FileOp::Allocate { offset, len } => {
                opcode::Fallocate::new(fd, *len).offset(*offset).build()
            }
        };
        // SAFETY: the SQE points into the buffer's heap allocation (or the
        // pieces' vector and, through it, the pieces' memory; or at nothing),
        // which moves with the operation (the handle, not the memory) into
        // the slot and stays there until this entry's own completion is reaped.
        match unsafe { self.queue(sqe, Owned::Op(op), payload) } {
            Ok(()) => Ok(()),
            Err(InFlight {
                owned: Owned::Op(op),
                payload,
            }) => Err((op, payload)),
            Err(_) => unreachable!("a file operation was queued"),
        }
    }

    /// Queues a read of `eventfd`'s counter, completing with `payload` once it
    /// is signalled. Gives the payload back if it cannot be queued.
    pub fn read_eventfd(&mut self, eventfd: &Arc<EventFd>, payload: T) -> Result<(), T> {
        let mut counter = Box::new([0u8; 8]);
        let sqe =
            opcode::Read::new(types::Fd(eventfd.as_raw_fd()), counter.as_mut_ptr(), 8).build();
        let owned = Owned::Counter {
            _eventfd: eventfd.clone(),
            _counter: counter,
        };
        // SAFETY: the SQE points into the boxed counter, which moves with the
        // box into the slot and stays there until the completion is reaped.
        unsafe { self.queue(sqe, owned, payload) }.map_err(|op| op.payload)
    }

    /// Puts `owned` and `payload` in a slot of the table and queues `sqe`
    /// under it, handing the queue to the kernel first if it is full.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` points into heap memory `owned` holds (or into
    /// nothing), so it stays valid while `owned` sits in the table.
    unsafe fn queue(
        &mut self,
        sqe: squeue::Entry,
        owned: Owned,
        payload: T,
    ) -> Result<(), InFlight<T>> {
        let slot = self.ops.insert(InFlight { owned, payload })?;
        let sqe = sqe.user_data(slot);
        for _ in 0..2 {
            // SAFETY: per this function's contract; the slot's entry is taken
            // out only by the completion carrying user_data `slot` (or leaked
            // with the ring), so the memory outlives the operation.
            if unsafe { self.ring.submission().push(&sqe) }.is_ok() {
                return Ok(());
            }
            // Full: what is queued goes to the kernel, which makes room.
            if self.ring.submit().is_err() {
                break;
            }
        }
        match self.ops.remove(slot) {
            Some(op) => Err(op),
            None => unreachable!("the slot was just filled"),
        }
    }

    /// Entries queued and not yet handed to the kernel.
    pub fn queued(&mut self) -> usize {
        self.ring.submission().len()
    }

    /// True while the kernel holds deferred completions that the next entry
    /// into it posts (`IORING_SQ_TASKRUN`). Reads shared memory only.
    pub fn taskrun(&mut self) -> bool {
        self.ring.submission().taskrun()
    }

    /// True if completions are posted and not yet reaped. Reads shared memory only.
    pub fn has_posted(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    /// Hands what is queued to the kernel (and runs deferred completions)
    /// without waiting. A transient failure counts as success: what is
    /// queued stays queued for the next entry.
    pub fn submit(&mut self) -> std::io::Result<()> {
        settled(self.ring.submit().map(drop))
    }

    /// Submits what is queued and waits until `want` completions are posted
    /// (or a transient failure cuts the wait short).
    pub fn submit_and_wait(&mut self, want: usize) -> std::io::Result<()> {
        settled(self.ring.submit_and_wait(want).map(drop))
    }

    /// Submits what is queued and waits until a completion is posted or
    /// `timeout` passes (or a transient failure cuts the wait short).
    pub fn submit_and_wait_for(&mut self, timeout: Duration) -> std::io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        settled(self.ring.submitter().submit_with_args(1, &args).map(drop))
    }

    /// Moves every posted completion to `each`: the ring's own with their
    /// buffers and payloads, a borrower's as they came.
    pub fn reap(&mut self, mut each: impl FnMut(Reaped<T>)) {
        let (ring, ops) = (&mut self.ring, &mut self.ops);
        for cqe in ring.completion() {
            let (user_data, result) = (cqe.user_data(), cqe.result());
            if is_lent(user_data) {
                each(Reaped::Lent(user_data, result));
                continue;
            }
            let Some(op) = ops.remove(user_data) else {
                tracing::error!(user_data, "completion for an unknown slot");
                continue;
            };
            let buf = match op.owned {
                Owned::Op(op) => op.into_buf(),
                Owned::Counter { .. } => None,
            };
            each(Reaped::Own {
                buf,
                payload: op.payload,
                result,
            });
        }
    }

    /// Gives up on every operation in flight (after the ring failed for
    /// good): returns their payloads and leaks their memory, which the kernel
    /// may still use.
    pub fn abandon(&mut self) -> Vec<T> {
        let busy: Vec<u64> = self.ops.busy().collect();
        let mut payloads = Vec::with_capacity(busy.len());
        for slot in busy {
            if let Some(InFlight { owned, payload }) = self.ops.remove(slot) {
                std::mem::forget(owned);
                payloads.push(payload);
            }
        }
        payloads
    }

    /// Runs `queue` with the submission queue as a borrower sees it (see
    /// [`crate::LentRing`]).
    pub fn lend(&mut self, queue: &mut dyn FnMut(&mut LentQueue<'_, '_>)) {
        let mut submission = self.ring.submission();
        queue(&mut LentQueue::new(&mut submission));
        // The queue's tail is published to the kernel when it is dropped.
        drop(submission);
    }

    /// Has the kernel signal `eventfd` for every completion posted.
    pub fn register_eventfd(&self, eventfd: &EventFd) -> std::io::Result<()> {
        self.ring.submitter().register_eventfd(eventfd.as_raw_fd())
    }

    /// How the ring was set up and what its kernel offers.
    pub fn params(&self) -> &Parameters {
        self.ring.params()
    }

    /// The operations the ring's kernel runs.
    pub fn probe(&self) -> std::io::Result<Probe> {
        let mut probe = Probe::new();
        self.ring.submitter().register_probe(&mut probe)?;
        Ok(probe)
    }
}

impl<T> Drop for FileRing<T> {
    fn drop(&mut self) {
        if self.in_flight() > 0 {
            tracing::error!(
                operations = self.in_flight(),
                "a file ring dropped with operations in flight; leaking their buffers"
            );
            drop(self.abandon());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    fn temp_file(len: u64) -> (std::path::PathBuf, std::fs::File) {
        let path = std::env::temp_dir().join(format!(
            "uring-file-ring-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        file.set_len(len).expect("size");
        (path, file)
    }

    fn reap_all(ring: &mut FileRing<u32>, count: usize) -> Vec<(u32, i32, Option<AlignedBuf>)> {
        let mut done = Vec::new();
        while done.len() < count {
            ring.submit_and_wait(1).expect("wait");
            ring.reap(|reaped| {
                if let Reaped::Own {
                    buf,
                    payload,
                    result,
                } = reaped
                {
                    done.push((payload, result, buf));
                }
            });
        }
        done
    }

    #[test]
    fn writes_and_reads_hand_their_buffers_back_with_their_payloads() {
        let (path, file) = temp_file(1 << 20);
        let mut ring = FileRing::deferring(8, 16).expect("ring");
        let fd = file.as_raw_fd();
        let write = FileOp::Write {
            offset: 8192,
            buf: AlignedBuf::copy_from(&[7u8; 4096]),
        };
        ring.push(fd, write, 1).map_err(|_| ()).expect("queued");
        ring.push(fd, FileOp::Sync, 2)
            .map_err(|_| ())
            .expect("queued");
        let mut done = reap_all(&mut ring, 2);
        done.sort_by_key(|d| d.0);
        assert_eq!((done[0].0, done[0].1), (1, 4096));
        assert_eq!((done[1].0, done[1].1), (2, 0));
        let read = FileOp::Read {
            offset: 8192,
            buf: AlignedBuf::zeroed(4096),
        };
        ring.push(fd, read, 3).map_err(|_| ()).expect("queued");
        let done = reap_all(&mut ring, 1);
        let buf = done[0].2.as_ref().expect("the read's buffer");
        assert_eq!(buf.as_slice(), &[7u8; 4096][..]);
        assert_eq!(ring.in_flight(), 0);
        let mut back = [0u8; 4096];
        file.read_exact_at(&mut back, 8192).expect("read");
        assert_eq!(back, [7u8; 4096]);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn pieces_are_written_side_by_side_in_one_write() {
        let (path, file) = temp_file(1 << 20);
        let mut ring = FileRing::deferring(8, 16).expect("ring");
        let fd = file.as_raw_fd();
        let piece = |byte: u8, blocks: usize| {
            let mut buf = AlignedBuf::for_overwrite(blocks * 4096);
            buf.as_mut_slice().fill(byte);
            bytes::Bytes::from_owner(buf)
        };
        let parts = BlockParts::new(vec![piece(1, 1), piece(2, 3), piece(3, 1)]).expect("aligned");
        let write = FileOp::WriteParts {
            offset: 4096,
            parts,
        };
        ring.push(fd, write, 1).map_err(|_| ()).expect("queued");
        let done = reap_all(&mut ring, 1);
        assert_eq!((done[0].0, done[0].1), (1, 5 * 4096));
        assert!(done[0].2.is_none(), "pieces are not a buffer to recycle");
        let mut back = vec![0u8; 6 * 4096];
        file.read_exact_at(&mut back, 0).expect("read");
        let expected: Vec<u8> = [0u8, 1, 2, 2, 2, 3]
            .iter()
            .flat_map(|&b| [b; 4096])
            .collect();
        assert!(
            back == expected,
            "pieces land in order, nothing else changes"
        );
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn a_full_table_gives_the_operation_back() {
        let (path, file) = temp_file(1 << 20);
        let mut ring = FileRing::<u32>::new(IoUring::new(4).expect("ring"), 1);
        let fd = file.as_raw_fd();
        ring.push(fd, FileOp::Sync, 1)
            .map_err(|_| ())
            .expect("queued");
        let refused = ring.push(
            fd,
            FileOp::Read {
                offset: 0,
                buf: AlignedBuf::zeroed(4096),
            },
            2,
        );
        let Err((op, 2)) = refused else {
            panic!("the second operation must come back")
        };
        assert_eq!(op.into_buf().map(|b| b.len()), Some(4096));
        assert_eq!(reap_all(&mut ring, 1)[0].0, 1);
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn an_eventfd_read_completes_once_signalled() {
        let mut ring = FileRing::deferring(4, 8).expect("ring");
        let eventfd = Arc::new(EventFd::new().expect("eventfd"));
        ring.read_eventfd(&eventfd, 9).expect("queued");
        ring.submit().expect("submit");
        eventfd.signal().expect("signal");
        let done = reap_all(&mut ring, 1);
        assert_eq!((done[0].0, done[0].1), (9, 8));
        assert!(done[0].2.is_none());
    }
}
