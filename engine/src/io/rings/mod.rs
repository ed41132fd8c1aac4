//! The io_uring backend: one submission thread per device owns a ring, takes
//! operations from a bounded queue and runs their callbacks on completion.
//! The rings are the `uring` crate's [`uring::FileRing`]s, which own every
//! operation's buffer while the kernel does.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use uring::{EventFd, Reaped};

mod local;
mod share;
mod slots;

pub use local::{recv_driving_local, recv_polling_local, LocalRing, LocalRingError};
pub use share::RingShare;

use super::{check_bounds, Device, DeviceError, IoDone, IoOp, IoOutcome};
use slots::{EngineRing, Finished, Pending, Request};

/// Ring size; the thread keeps at most `RING_ENTRIES - 1` operations in flight
/// (one slot belongs to the wake-up read).
const RING_ENTRIES: u32 = 256;
/// Bound on operations queued for the ring thread but not yet submitted.
const QUEUE_DEPTH_MAX: usize = 4096;
/// Most operations left queued before they are handed to the kernel. A round
/// that starts many (a burst of completions each starting the next read)
/// enters the kernel every `SUBMIT_BATCH_MAX` operations instead of once at
/// the end: the device then gets the first of them while the rest are still
/// being prepared, rather than one long burst per notification. fio submits
/// each operation on its own by default; on the virtio disk of the development
/// VM a burst of 32 reads per entry costs a quarter of the random-read IOPS
/// that bursts of 1 to 4 reach (BENCHMARKS.md).
const SUBMIT_BATCH_MAX: usize = 4;

/// Hands the queued entries to the kernel once `SUBMIT_BATCH_MAX` of them wait
/// (without waiting for completions). An entry that could not be handed over
/// stays queued for the next submit.
fn submit_full_batch(ring: &mut EngineRing) {
    if ring.queued() < SUBMIT_BATCH_MAX {
        return;
    }
    if let Err(err) = ring.submit() {
        tracing::warn!(%err, "io_uring submit of a full batch failed; entries stay queued");
    }
}

/// Opens the file behind `file` once more, without O_DIRECT (through
/// `/proc/self/fd`, which names the same file or block device).
fn reopen_buffered(file: &File) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(format!("/proc/self/fd/{}", file.as_raw_fd()))
}

/// Writes all of `bytes` at `offset` with pwrite, retrying interrupted calls.
fn write_all_at(file: &File, bytes: &[u8], offset: u64) -> Result<(), DeviceError> {
    use std::os::unix::fs::FileExt;
    file.write_all_at(bytes, offset).map_err(|err| {
        if err.kind() == std::io::ErrorKind::WriteZero {
            DeviceError::Short {
                done: 0,
                wanted: bytes.len(),
            }
        } else {
            DeviceError::Os(err.raw_os_error().unwrap_or(libc::EIO))
        }
    })
}

struct Shared {
    file: File,
    /// The same file opened again without O_DIRECT, for [`IoOp::WriteCached`]:
    /// its writes land in the page cache, which the O_DIRECT descriptor's
    /// reads see (the kernel writes dirty pages back before a direct read of
    /// them) and its fdatasync makes durable.
    cached: File,
    /// Regular files may be sparse and are preallocated on request; block devices
    /// have nothing to allocate.
    is_regular_file: bool,
    wake_fd: Arc<EventFd>,
    /// True while the ring thread may be blocked in the kernel; submitters then
    /// write the eventfd to wake it.
    sleeping: AtomicBool,
    closing: AtomicBool,
}

impl Shared {
    fn wake(&self) {
        if let Err(err) = self.wake_fd.signal() {
            tracing::error!(%err, "cannot wake a device's ring thread");
        }
    }
}

/// A file or block device driven through io_uring by a dedicated thread.
pub struct UringDevice {
    shared: Arc<Shared>,
    queue: Sender<Request>,
    thread: Mutex<Option<JoinHandle<()>>>,
    size: u64,
}

impl UringDevice {
    /// Takes ownership of an opened file (normally opened with O_DIRECT) of `size`
    /// bytes and starts its ring thread.
    pub fn new(file: File, size: u64, name: &str) -> std::io::Result<UringDevice> {
        let wake_fd = Arc::new(EventFd::new()?);
        let is_regular_file = file.metadata()?.file_type().is_file();
        let cached = reopen_buffered(&file)?;
        let shared = Arc::new(Shared {
            file,
            cached,
            is_regular_file,
            wake_fd,
            sleeping: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        });
        let (tx, rx) = crossbeam_channel::bounded(QUEUE_DEPTH_MAX);
        let thread_shared = shared.clone();
        let (started_tx, started_rx) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(format!("keel-io-{name}"))
            .spawn(move || {
                // Made here: a ring that defers completions belongs to the
                // thread that creates it.
                match EngineRing::deferring(RING_ENTRIES, 2 * RING_ENTRIES) {
                    Ok(ring) => {
                        let _ = started_tx.send(Ok(()));
                        RingLoop::new(ring, thread_shared, rx).run();
                    }
                    Err(err) => {
                        let _ = started_tx.send(Err(err));
                    }
                }
            })?;
        started_rx
            .recv()
            .map_err(|_| std::io::Error::other("the ring thread exited before starting"))??;
        Ok(UringDevice {
            shared,
            queue: tx,
            thread: Mutex::new(Some(thread)),
            size,
        })
    }
}

impl Device for UringDevice {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn submit(&self, op: IoOp, done: IoDone) {
        if let Some((op, done)) = self.admit(op, done) {
            self.send_io(op, done);
        }
    }

    fn submit_here(&self, op: IoOp, done: IoDone) {
        let Some((op, done)) = self.admit(op, done) else {
            return;
        };
        if let IoOp::WriteCached { .. } = op {
            return self.send_io(op, done);
        }
        if let Err(Request::Io(op, done)) =
            local::submit_on_current(&self.shared, Request::Io(op, done))
        {
            self.send_io(op, done);
        }
    }

    fn preallocate(&self, offset: u64, len: u64) {
        let in_bounds = offset.checked_add(len).is_some_and(|end| end <= self.size);
        if self.shared.is_regular_file
            && len > 0
            && in_bounds
            && !self.shared.closing.load(Ordering::Acquire)
        {
            let _ = self.send(Request::Preallocate { offset, len });
        }
    }
}

impl UringDevice {
    /// Completes `done` at once if `op` cannot run (out of bounds, device
    /// closing); otherwise hands both back.
    fn admit(&self, op: IoOp, done: IoDone) -> Option<(IoOp, IoDone)> {
        let refused = check_bounds(&op, self.size).err().or_else(|| {
            self.shared
                .closing
                .load(Ordering::Acquire)
                .then_some(DeviceError::Closed)
        });
        match refused {
            Some(err) => {
                done(IoOutcome {
                    buf: op.into_buf(),
                    result: Err(err),
                });
                None
            }
            None => Some((op, done)),
        }
    }

    /// Hands an admitted operation to the ring thread; a cached write is a
    /// copy into the page cache, done here and now.
    fn send_io(&self, op: IoOp, done: IoDone) {
        if let IoOp::WriteCached { offset, buf } = op {
            let result = write_all_at(&self.shared.cached, buf.as_slice(), offset);
            return done(IoOutcome {
                buf: Some(buf),
                result,
            });
        }
        if let Err(Request::Io(op, done)) = self.send(Request::Io(op, done)) {
            done(IoOutcome {
                buf: op.into_buf(),
                result: Err(DeviceError::Closed),
            });
        }
    }

    /// Queues a request for the ring thread, waking it if it sleeps; gives the
    /// request back if the thread has gone.
    fn send(&self, request: Request) -> Result<(), Request> {
        let mut item = request;
        loop {
            match self.queue.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    // The queue bound is a backstop; callers bound their own
                    // in-flight work, so this path only yields under overload.
                    item = back;
                    self.shared.wake();
                    std::thread::yield_now();
                }
                Err(TrySendError::Disconnected(back)) => return Err(back),
            }
        }
        if self.shared.sleeping.swap(false, Ordering::SeqCst) {
            self.shared.wake();
        }
        Ok(())
    }
}

impl Drop for UringDevice {
    fn drop(&mut self) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
}

struct RingLoop {
    ring: EngineRing,
    shared: Arc<Shared>,
    queue: Receiver<Request>,
    wake_armed: bool,
    /// Reused list of the callbacks of the completions being handled.
    finished: Vec<Finished>,
}

impl RingLoop {
    fn new(ring: EngineRing, shared: Arc<Shared>, queue: Receiver<Request>) -> RingLoop {
        RingLoop {
            ring,
            shared,
            queue,
            wake_armed: false,
            finished: Vec::with_capacity(RING_ENTRIES as usize),
        }
    }

    fn run(mut self) {
        loop {
            let closing = self.shared.closing.load(Ordering::Acquire);
            if !self.wake_armed && !closing {
                self.arm_wake();
            }
            while self.ring.has_free() {
                match self.queue.try_recv() {
                    Ok(request) => self.push(request),
                    Err(_) => break,
                }
            }
            // The wake-up read is in flight whenever it is armed.
            let inflight = self.ring.in_flight() - usize::from(self.wake_armed);
            if closing && inflight == 0 && self.queue.is_empty() {
                if !self.wake_armed {
                    break;
                }
                // The armed wake-up read completes before the ring goes.
                self.shared.wake();
            }
            self.shared.sleeping.store(true, Ordering::SeqCst);
            let must_wait = self.queue.is_empty() || !self.ring.has_free();
            let wait_for = usize::from(must_wait);
            if !must_wait {
                self.shared.sleeping.store(false, Ordering::SeqCst);
            }
            match self.ring.submit_and_wait(wait_for) {
                Ok(()) => {}
                Err(err) => {
                    tracing::error!(%err, "io_uring submit failed; failing queued operations");
                    self.fail_all(err.raw_os_error().unwrap_or(libc::EIO));
                    return;
                }
            }
            self.shared.sleeping.store(false, Ordering::SeqCst);
            self.reap();
        }
        self.drain_closed();
    }

    fn arm_wake(&mut self) {
        self.wake_armed = self
            .ring
            .read_eventfd(&self.shared.wake_fd, Pending::Wake)
            .is_ok();
    }

    fn push(&mut self, request: Request) {
        let mut request = request;
        for _ in 0..64 {
            match slots::push(&mut self.ring, &self.shared, request, false) {
                Ok(()) => return submit_full_batch(&mut self.ring),
                // The kernel takes no entry for now: reap what it finished.
                Err(back) => request = back,
            }
            self.reap();
        }
        if let Request::Io(op, done) = request {
            Finished::failed(done, op.into_buf(), DeviceError::Os(libc::EAGAIN)).run();
        }
    }

    /// Runs the callbacks of every posted completion.
    fn reap(&mut self) {
        let mut finished = std::mem::take(&mut self.finished);
        let mut woken = false;
        self.ring.reap(|reaped| match reaped {
            Reaped::Own {
                payload: Pending::Wake,
                ..
            } => woken = true,
            Reaped::Own {
                buf,
                payload,
                result,
            } => finished.extend(slots::finished(buf, payload, result)),
            Reaped::Lent(user_data, _) => {
                tracing::error!(user_data, "a device ring is lent to no one")
            }
        });
        if woken {
            self.wake_armed = false;
        }
        for done in finished.drain(..) {
            done.run();
        }
        self.finished = finished;
    }

    /// The ring failed for good: every operation in flight fails (its buffer
    /// is leaked, the kernel may still use it), and so does every queued one.
    fn fail_all(&mut self, errno: i32) {
        for pending in self.ring.abandon() {
            if let Pending::Io { done, .. } = pending {
                Finished::failed(done, None, DeviceError::Os(errno)).run();
            }
        }
        self.wake_armed = false;
        self.drain_closed();
    }

    fn drain_closed(&mut self) {
        while let Ok(request) = self.queue.try_recv() {
            if let Request::Io(op, done) = request {
                done(IoOutcome {
                    buf: op.into_buf(),
                    result: Err(DeviceError::Closed),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::AlignedBuf;
    use crate::io::{flush_blocking, read_blocking, write_blocking};

    /// A file-backed device of `size` bytes in a fresh temporary directory.
    pub(super) fn temp_device(size: u64) -> (tempfile::TempDir, UringDevice) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dev");
        let (file, size) =
            crate::io::open_backing(&path, Some(size), crate::io::BackingKind::File).expect("open");
        (dir, UringDevice::new(file, size, "test").expect("ring"))
    }

    /// Starts a 4 KiB read at `offset` on the calling thread's ring (a local
    /// one if attached) that checks it succeeded and counts it in `done`.
    pub(super) fn start_counted_read(
        dev: &UringDevice,
        offset: u64,
        done: &Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let done = done.clone();
        dev.submit_here(
            IoOp::Read {
                offset,
                buf: AlignedBuf::for_overwrite(4096),
            },
            Box::new(move |outcome| {
                assert!(outcome.result.is_ok());
                done.fetch_add(1, Ordering::SeqCst);
            }),
        );
    }

    #[test]
    fn a_read_into_a_view_fills_only_that_part_of_the_buffer() {
        let (_dir, dev) = temp_device(1 << 20);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        write_blocking(&dev, 8192, AlignedBuf::copy_from(&data)).expect("write");
        let mut buf = AlignedBuf::zeroed(4 * 4096);
        buf.view(4096, 8192);
        let outcome = crate::io::submit_blocking(&dev, IoOp::Read { offset: 8192, buf });
        outcome.result.expect("read");
        let mut buf = outcome.buf.expect("the buffer comes back");
        buf.view(0, 4 * 4096);
        assert!(buf.as_slice()[..4096].iter().all(|&b| b == 0));
        assert_eq!(&buf.as_slice()[4096..3 * 4096], &data[..]);
        assert!(buf.as_slice()[3 * 4096..].iter().all(|&b| b == 0));
    }

    #[test]
    fn writes_read_back_and_flush_succeeds() {
        let (_dir, dev) = temp_device(1 << 20);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 7) as u8).collect();
        write_blocking(&dev, 4096, AlignedBuf::copy_from(&data)).expect("write");
        flush_blocking(&dev).expect("flush");
        let back = read_blocking(&dev, 4096, 8192).expect("read");
        assert_eq!(back.as_slice(), &data[..]);
    }

    #[test]
    fn cached_rewrites_are_what_direct_reads_see_and_direct_writes_replace() {
        let (_dir, dev) = temp_device(1 << 20);
        for round in 0..3u8 {
            let outcome = crate::io::submit_blocking(
                &dev,
                IoOp::WriteCached {
                    offset: 8192,
                    buf: AlignedBuf::copy_from(&[round; 4096]),
                },
            );
            outcome.result.expect("cached write");
            let back = read_blocking(&dev, 8192, 4096).expect("direct read");
            assert_eq!(back.as_slice(), &[round; 4096][..], "image {round}");
        }
        flush_blocking(&dev).expect("flush");
        // The block reused later, written directly, reads back as written.
        write_blocking(&dev, 4096, AlignedBuf::copy_from(&[9u8; 8192])).expect("direct write");
        let back = read_blocking(&dev, 8192, 4096).expect("direct read");
        assert_eq!(back.as_slice(), &[9u8; 4096][..]);
    }

    #[test]
    fn out_of_bounds_is_rejected_before_the_kernel() {
        let (_dir, dev) = temp_device(1 << 20);
        let err = read_blocking(&dev, 1 << 20, 4096).expect_err("must fail");
        assert!(matches!(err, DeviceError::OutOfBounds { .. }));
    }

    #[test]
    fn preallocation_allocates_a_sparse_range_without_changing_it() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("dev");
        let (file, size) =
            crate::io::open_backing(&path, Some(8 << 20), crate::io::BackingKind::File)
                .expect("open");
        let dev = UringDevice::new(file, size, "test").expect("ring");
        let allocated = || std::fs::metadata(&path).expect("stat").blocks() * 512;
        assert!(allocated() < 1 << 20, "a new file starts sparse");
        dev.preallocate(1 << 20, 4 << 20);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while allocated() < 4 << 20 {
            assert!(
                std::time::Instant::now() < deadline,
                "preallocation never happened"
            );
            std::thread::yield_now();
        }
        let back = read_blocking(&dev, 1 << 20, 4 << 20).expect("read");
        assert!(back.as_slice().iter().all(|&b| b == 0));
        assert_eq!(std::fs::metadata(&path).expect("stat").len(), 8 << 20);
    }

    #[test]
    fn many_concurrent_operations_complete() {
        let (_dir, dev) = temp_device(8 << 20);
        let dev = Arc::new(dev);
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..1000u64 {
            let tx = tx.clone();
            let mut buf = AlignedBuf::zeroed(4096);
            buf.as_mut_slice()[..8].copy_from_slice(&i.to_le_bytes());
            dev.submit(
                IoOp::Write {
                    offset: (i % 2048) * 4096,
                    buf,
                },
                Box::new(move |o| {
                    let _ = tx.send(o.result);
                }),
            );
        }
        for _ in 0..1000 {
            rx.recv_timeout(std::time::Duration::from_secs(30))
                .expect("completion")
                .expect("ok");
        }
    }
}
