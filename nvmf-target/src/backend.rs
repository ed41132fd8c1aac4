//! The namespace port: what a volume must provide to be served as an NVMe namespace.
//!
//! The target never blocks a reactor on storage: every data operation takes a
//! completion callback that the backend may run on any thread (typically the
//! engine's I/O thread). The root package implements [`NamespaceBackend`] on a
//! newtype over an engine volume; [`MemoryNamespace`] is the in-crate RAM
//! implementation used by tests and benchmarks.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::RwLock;

/// A logical block address, in units of the namespace's block size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lba(pub u64);

/// Logical block size of a namespace. Only the two sizes Linux hosts handle
/// without surprises are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockSize {
    /// 512-byte logical blocks.
    B512,
    /// 4096-byte logical blocks.
    B4096,
}

impl BlockSize {
    /// Size of one block in bytes.
    pub fn bytes(self) -> u32 {
        match self {
            BlockSize::B512 => 512,
            BlockSize::B4096 => 4096,
        }
    }

    /// log2 of the block size, as reported in the LBA format (LBADS).
    pub fn shift(self) -> u8 {
        match self {
            BlockSize::B512 => 9,
            BlockSize::B4096 => 12,
        }
    }
}

/// A contiguous run of blocks, used by Dataset Management deallocate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LbaRange {
    /// First block of the range.
    pub start: Lba,
    /// Number of blocks in the range (may be zero, which is a no-op).
    pub blocks: u32,
}

/// Why a namespace operation failed. The target maps each variant to exactly one
/// NVMe status in `status.rs`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NamespaceError {
    /// The range reaches past the namespace's capacity.
    #[error("blocks {lba:?}+{blocks} are outside the namespace")]
    OutOfRange {
        /// First block of the rejected range.
        lba: Lba,
        /// Length of the rejected range in blocks.
        blocks: u64,
    },
    /// The medium returned unreadable or checksum-failing data.
    #[error("unrecovered media error at {lba:?}")]
    Media {
        /// A block inside the failing range.
        lba: Lba,
    },
    /// The backing store has no room left for the write.
    #[error("no space left to store the write")]
    NoSpace,
    /// The volume was fenced after an earlier I/O failure; every later call fails.
    #[error("the volume is fenced after an earlier I/O failure")]
    Fenced,
    /// An internal device error that is neither a media error nor a full store.
    #[error("device error")]
    Device,
    /// The request was malformed for this backend (for example a misaligned buffer length).
    #[error("invalid request")]
    Invalid,
    /// This node cannot serve the namespace right now (it is not, or no
    /// longer, the volume's primary): another path can. Answered with the
    /// ANA Inaccessible path status, without DNR, so a multipath host retries
    /// the command on another controller.
    #[error("this path cannot serve the namespace now")]
    PathUnavailable,
}

/// Completion callback for a namespace operation. May run on any thread, exactly once.
pub type Completion<T> = Box<dyn FnOnce(Result<T, NamespaceError>) + Send + 'static>;

/// Work a backend runs on a reactor's own thread: typically a storage engine's
/// per-thread I/O ring, so I/O a reactor starts reaches the device from that
/// thread and its completions come back to it without waking another thread.
/// Each reactor makes one with [`ReactorPollerFactory`] when it starts, watches
/// [`ReactorPoller::event_fd`] beside its sockets, and calls
/// [`ReactorPoller::poll`] when it is readable. Completions delivered inside
/// `poll` are taken back by the reactor without going through its inbox.
pub trait ReactorPoller {
    /// An eventfd signalled whenever `poll` has work. The reactor consumes its
    /// counter itself (an io_uring read) or watches its edges (epoll), so
    /// `poll` need not read it.
    fn event_fd(&self) -> std::os::fd::RawFd;
    /// Runs whatever is ready, including namespace completions; never blocks.
    fn poll(&mut self);
    /// Hands the work started on this thread since the last call to whatever
    /// carries it out (one system call for a whole round of I/O). The reactor
    /// calls it before every wait; work started and not submitted never runs.
    fn submit(&mut self);
    /// The io_uring this poller drives, lent to an io_uring reactor for its
    /// own socket operations, so one `io_uring_enter` per loop iteration
    /// submits both kinds and one wait sleeps until either completes. Asked
    /// once, when the reactor starts; `None` (the default) keeps two rings
    /// joined by `event_fd`. A reactor that uses the lent ring no longer
    /// watches `event_fd` or calls `submit` (its waits submit everything), and
    /// calls `poll` after every wait.
    fn lend_ring(&mut self) -> Option<Box<dyn uring::LentRing>> {
        None
    }
    /// Runs `start`, which starts one round of a connection's commands on
    /// their namespaces, letting the backend hold back the I/O it starts and
    /// issue it together when `start` returns (many writes in one log batch
    /// rather than one batch each). The default runs `start` alone.
    fn start_together(&mut self, start: &mut dyn FnMut()) {
        start();
    }
}

/// Makes the [`ReactorPoller`] of the calling reactor thread, or `None` if the
/// backend has nothing to run there (the reactor then relies on other threads'
/// completions alone).
pub type ReactorPollerFactory = Arc<dyn Fn() -> Option<Box<dyn ReactorPoller>> + Send + Sync>;

/// A block device served as an NVMe namespace.
///
/// Implementations must be cheap to call from a reactor thread: start the I/O and
/// return, then call the completion when it finishes. Calling the completion
/// inline, before returning, is also allowed.
pub trait NamespaceBackend: Send + Sync {
    /// Logical block size (constant for the namespace's lifetime).
    fn block_size(&self) -> BlockSize;
    /// Current capacity in blocks. May grow; the control plane then calls
    /// [`crate::Subsystem::namespace_resized`] so hosts are told.
    fn capacity_blocks(&self) -> u64;
    /// A stable, globally unique 16-byte identifier, reported as both NGUID and UUID.
    fn uuid(&self) -> [u8; 16];
    /// True when acknowledged writes may still be lost on power failure until a
    /// Flush completes (a volatile write cache). Reported in Identify VWC.
    fn volatile_write_cache(&self) -> bool;
    /// True when deallocated blocks read back as zeroes (reported in DLFEAT).
    fn deallocated_reads_zeroes(&self) -> bool {
        true
    }
    /// Read `blocks` blocks starting at `lba`; the result holds exactly
    /// `blocks * block_size` bytes.
    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>);
    /// Write `data` (a whole number of blocks) starting at `lba`.
    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>);
    /// Make every acknowledged write durable.
    fn flush(&self, done: Completion<()>);
    /// Make `blocks` blocks starting at `lba` read as zeroes.
    fn write_zeroes(&self, lba: Lba, blocks: u32, done: Completion<()>);
    /// Release the given ranges; they read back as zeroes if
    /// [`NamespaceBackend::deallocated_reads_zeroes`] is true.
    fn deallocate(&self, ranges: Vec<LbaRange>, done: Completion<()>);
}

/// Checks that `blocks` blocks at `lba` fit in a namespace of `capacity_blocks`.
pub fn check_range(lba: Lba, blocks: u64, capacity_blocks: u64) -> Result<(), NamespaceError> {
    match lba.0.checked_add(blocks) {
        Some(end) if end <= capacity_blocks => Ok(()),
        _ => Err(NamespaceError::OutOfRange { lba, blocks }),
    }
}

/// Faults a [`MemoryNamespace`] can be told to produce, for tests of error paths.
#[derive(Debug, Clone, Default)]
struct Faults {
    media_error_lbas: Vec<u64>,
    no_space: bool,
    fenced: bool,
}

/// A RAM-backed namespace: completes every operation inline. Thread-safe.
pub struct MemoryNamespace {
    block_size: BlockSize,
    uuid: [u8; 16],
    volatile_write_cache: bool,
    data: RwLock<Vec<u8>>,
    faults: RwLock<Faults>,
    flushes: std::sync::atomic::AtomicU64,
}

impl MemoryNamespace {
    /// Creates a zero-filled namespace of `capacity_blocks` blocks.
    pub fn new(block_size: BlockSize, capacity_blocks: u64, uuid: [u8; 16]) -> Arc<Self> {
        let len =
            usize::try_from(capacity_blocks * u64::from(block_size.bytes())).unwrap_or(usize::MAX);
        Arc::new(Self {
            block_size,
            uuid,
            volatile_write_cache: true,
            data: RwLock::new(vec![0; len]),
            faults: RwLock::new(Faults::default()),
            flushes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Creates a namespace that reports no volatile write cache.
    pub fn new_write_through(
        block_size: BlockSize,
        capacity_blocks: u64,
        uuid: [u8; 16],
    ) -> Arc<Self> {
        let len =
            usize::try_from(capacity_blocks * u64::from(block_size.bytes())).unwrap_or(usize::MAX);
        Arc::new(Self {
            block_size,
            uuid,
            volatile_write_cache: false,
            data: RwLock::new(vec![0; len]),
            faults: RwLock::new(Faults::default()),
            flushes: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Grows or shrinks the namespace to `capacity_blocks` (new blocks read as zero).
    pub fn resize(&self, capacity_blocks: u64) {
        let len = usize::try_from(capacity_blocks * u64::from(self.block_size.bytes()))
            .unwrap_or(usize::MAX);
        self.data.write().resize(len, 0);
    }

    /// Makes reads covering `lba` fail with a media error.
    pub fn inject_media_error(&self, lba: Lba) {
        self.faults.write().media_error_lbas.push(lba.0);
    }

    /// Makes every write fail with [`NamespaceError::NoSpace`] while `on`.
    pub fn set_no_space(&self, on: bool) {
        self.faults.write().no_space = on;
    }

    /// Fences the namespace: every later operation fails with [`NamespaceError::Fenced`].
    pub fn fence(&self) {
        self.faults.write().fenced = true;
    }

    /// Number of flushes completed so far.
    pub fn flush_count(&self) -> u64 {
        self.flushes.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Copies `blocks` blocks at `lba` out of the namespace (test inspection).
    pub fn snapshot_blocks(&self, lba: Lba, blocks: u32) -> Result<Vec<u8>, NamespaceError> {
        let (start, end) = self.byte_range(lba, u64::from(blocks))?;
        Ok(self.data.read()[start..end].to_vec())
    }

    fn byte_range(&self, lba: Lba, blocks: u64) -> Result<(usize, usize), NamespaceError> {
        check_range(lba, blocks, self.capacity_blocks())?;
        let bs = u64::from(self.block_size.bytes());
        let start = usize::try_from(lba.0 * bs).map_err(|_| NamespaceError::Invalid)?;
        let end = usize::try_from((lba.0 + blocks) * bs).map_err(|_| NamespaceError::Invalid)?;
        Ok((start, end))
    }

    fn write_check(&self) -> Result<(), NamespaceError> {
        let faults = self.faults.read();
        if faults.fenced {
            return Err(NamespaceError::Fenced);
        }
        if faults.no_space {
            return Err(NamespaceError::NoSpace);
        }
        Ok(())
    }

    fn do_read(&self, lba: Lba, blocks: u32) -> Result<Bytes, NamespaceError> {
        {
            let faults = self.faults.read();
            if faults.fenced {
                return Err(NamespaceError::Fenced);
            }
            let end = lba.0.saturating_add(u64::from(blocks));
            if let Some(bad) = faults
                .media_error_lbas
                .iter()
                .find(|b| **b >= lba.0 && **b < end)
            {
                return Err(NamespaceError::Media { lba: Lba(*bad) });
            }
        }
        let (start, end) = self.byte_range(lba, u64::from(blocks))?;
        Ok(Bytes::copy_from_slice(&self.data.read()[start..end]))
    }

    fn do_write(&self, lba: Lba, data: &[u8]) -> Result<(), NamespaceError> {
        let bs = self.block_size.bytes() as usize;
        if data.len() / bs * bs != data.len() {
            return Err(NamespaceError::Invalid);
        }
        let blocks = (data.len() / bs) as u64;
        let (start, end) = self.byte_range(lba, blocks)?;
        self.write_check()?;
        self.data.write()[start..end].copy_from_slice(data);
        Ok(())
    }

    fn do_zero(&self, lba: Lba, blocks: u32) -> Result<(), NamespaceError> {
        let (start, end) = self.byte_range(lba, u64::from(blocks))?;
        if self.faults.read().fenced {
            return Err(NamespaceError::Fenced);
        }
        self.data.write()[start..end].fill(0);
        Ok(())
    }
}

impl NamespaceBackend for MemoryNamespace {
    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    fn capacity_blocks(&self) -> u64 {
        self.data.read().len() as u64 / u64::from(self.block_size.bytes())
    }

    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    fn volatile_write_cache(&self) -> bool {
        self.volatile_write_cache
    }

    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        done(self.do_read(lba, blocks));
    }

    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        done(self.do_write(lba, &data));
    }

    fn flush(&self, done: Completion<()>) {
        if self.faults.read().fenced {
            return done(Err(NamespaceError::Fenced));
        }
        self.flushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        done(Ok(()));
    }

    fn write_zeroes(&self, lba: Lba, blocks: u32, done: Completion<()>) {
        done(self.do_zero(lba, blocks));
    }

    fn deallocate(&self, ranges: Vec<LbaRange>, done: Completion<()>) {
        let capacity = self.capacity_blocks();
        for range in &ranges {
            if let Err(e) = check_range(range.start, u64::from(range.blocks), capacity) {
                return done(Err(e));
            }
        }
        for range in ranges {
            if let Err(e) = self.do_zero(range.start, range.blocks) {
                return done(Err(e));
            }
        }
        done(Ok(()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn run<T: Send + 'static>(f: impl FnOnce(Completion<T>)) -> Result<T, NamespaceError> {
        let (tx, rx) = mpsc::channel();
        f(Box::new(move |r| tx.send(r).unwrap()));
        rx.recv().unwrap()
    }

    #[test]
    fn memory_namespace_round_trips_and_zeroes() {
        let ns = MemoryNamespace::new(BlockSize::B512, 16, [1; 16]);
        let data = Bytes::from(vec![7u8; 1024]);
        run(|d| ns.write(Lba(2), data.clone(), d)).unwrap();
        assert_eq!(run(|d| ns.read(Lba(2), 2, d)).unwrap(), data);
        run(|d| {
            ns.deallocate(
                vec![LbaRange {
                    start: Lba(3),
                    blocks: 1,
                }],
                d,
            )
        })
        .unwrap();
        assert_eq!(
            &run(|d| ns.read(Lba(3), 1, d)).unwrap()[..],
            &[0u8; 512][..]
        );
        run(|d| ns.write_zeroes(Lba(2), 1, d)).unwrap();
        assert_eq!(
            &run(|d| ns.read(Lba(2), 1, d)).unwrap()[..],
            &[0u8; 512][..]
        );
    }

    #[test]
    fn memory_namespace_reports_faults() {
        let ns = MemoryNamespace::new(BlockSize::B4096, 4, [2; 16]);
        assert_eq!(
            run(|d| ns.read(Lba(3), 2, d)),
            Err(NamespaceError::OutOfRange {
                lba: Lba(3),
                blocks: 2
            })
        );
        ns.inject_media_error(Lba(1));
        assert_eq!(
            run(|d| ns.read(Lba(0), 2, d)),
            Err(NamespaceError::Media { lba: Lba(1) })
        );
        ns.set_no_space(true);
        assert_eq!(
            run(|d| ns.write(Lba(0), Bytes::from(vec![0; 4096]), d)),
            Err(NamespaceError::NoSpace)
        );
        ns.fence();
        assert_eq!(run(|d| ns.flush(d)), Err(NamespaceError::Fenced));
    }

    #[test]
    fn resize_grows_capacity() {
        let ns = MemoryNamespace::new(BlockSize::B512, 8, [3; 16]);
        ns.resize(32);
        assert_eq!(ns.capacity_blocks(), 32);
    }
}
