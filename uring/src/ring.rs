//! An io_uring wrapper with a safe API, for a reactor's socket operations.
//!
//! Every operation takes ownership of the memory the kernel will use (a receive
//! buffer, a batch of send buffers with its `iovec`s and `msghdr`, the eventfd
//! counter) and keeps it in the ring's table of operations in flight until the
//! operation's completion is reaped, when it is handed back in
//! [`Completion::held`]. Callers therefore cannot free or reuse a buffer the
//! kernel may still read or write. A ring dropped with operations in flight
//! cancels them and waits for their completions (bounded); what still has not
//! completed then is leaked rather than freed.
#![allow(unsafe_code)]

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use io_uring::{opcode, squeue, types, IoUring, Parameters, Probe};

use crate::lend::{LentRing, LENT_MARK};
use crate::table::InFlightTable;
use crate::{is_transient, settled};
use crate::{AlignedBuf, EventFd};

/// Submission queue entries; the completion queue is [`CQ_ENTRIES`].
const SQ_ENTRIES: u32 = 256;
/// Completion queue entries: room for a receive and a send per connection of a
/// busy reactor (the kernel buffers overflow beyond this, it never drops).
const CQ_ENTRIES: u32 = 4096;
/// IORING_RECVSEND_POLL_FIRST (in the SQE's ioprio field of a receive).
const RECVSEND_POLL_FIRST: u16 = 1;
/// How long a dropped ring waits for cancelled operations to complete.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Buffers sent by one `sendmsg`, with the `iovec`s and header describing them.
pub struct SendBatch {
    bufs: Vec<Bytes>,
    iovecs: Vec<libc::iovec>,
    header: Box<libc::msghdr>,
}

impl Default for SendBatch {
    fn default() -> Self {
        SendBatch::new()
    }
}

impl SendBatch {
    /// An empty batch.
    pub fn new() -> SendBatch {
        // SAFETY: msghdr is plain data (pointers, lengths, flags) for which all
        // zero bytes is a valid value: no name, no iovecs, no control data.
        let header: libc::msghdr = unsafe { std::mem::zeroed() };
        SendBatch {
            bufs: Vec::new(),
            iovecs: Vec::new(),
            header: Box::new(header),
        }
    }

    /// Appends a buffer to send after the ones already in the batch.
    pub fn push(&mut self, buf: Bytes) {
        if !buf.is_empty() {
            self.bufs.push(buf);
        }
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    /// Bytes in the batch.
    pub fn len_bytes(&self) -> usize {
        self.bufs.iter().map(Bytes::len).sum()
    }

    /// Empties the batch, keeping its allocations for reuse.
    pub fn clear(&mut self) {
        self.bufs.clear();
        self.iovecs.clear();
    }

    /// Points the header at one `iovec` per buffer.
    fn prepare(&mut self) -> *const libc::msghdr {
        self.iovecs.clear();
        self.iovecs.extend(self.bufs.iter().map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        self.header.msg_iov = self.iovecs.as_mut_ptr();
        self.header.msg_iovlen = self.iovecs.len() as _;
        &*self.header
    }
}

/// Memory an operation in flight owns, handed back with its completion.
pub enum Held {
    /// Nothing (a cancellation).
    Nothing,
    /// The receive buffer; the completion's result says how many bytes arrived.
    Received(Vec<u8>),
    /// The buffer of a [`Ring::recv_into`] and the part of it asked for; the
    /// completion's result says how many bytes arrived there.
    ReceivedInto {
        /// The buffer.
        buf: AlignedBuf,
        /// Where in it the bytes went.
        at: usize,
        /// How many were asked for.
        len: usize,
    },
    /// The batch sent; the completion's result says how many bytes left.
    Sent(SendBatch),
    /// The eventfd read (its counter is of no interest).
    Woken,
}

/// What a wake-up read owns while in flight.
struct WakeRead {
    _eventfd: Arc<EventFd>,
    /// The kernel writes the counter here; nobody reads it.
    _counter: Box<[u8; 8]>,
}

enum Owned {
    Nothing,
    Received(Vec<u8>),
    ReceivedInto {
        buf: AlignedBuf,
        at: usize,
        len: usize,
    },
    Sent(SendBatch),
    Woken {
        _read: WakeRead,
    },
    /// The kernel writes a foreign eventfd's counter here; nobody reads it.
    Counter {
        _counter: Box<[u8; 8]>,
    },
}

impl Owned {
    fn handed_back(self) -> Held {
        match self {
            Owned::Nothing => Held::Nothing,
            Owned::Received(buf) => Held::Received(buf),
            Owned::ReceivedInto { buf, at, len } => Held::ReceivedInto { buf, at, len },
            Owned::Sent(batch) => Held::Sent(batch),
            Owned::Woken { .. } | Owned::Counter { .. } => Held::Woken,
        }
    }
}

struct InFlight {
    tag: u64,
    owned: Owned,
}

/// One reaped operation.
pub struct Completion {
    /// The caller's tag given at submission.
    pub tag: u64,
    /// The CQE result: bytes moved, or a negated errno.
    pub result: i32,
    /// The memory the operation owned.
    pub held: Held,
}

/// Identifies an operation in flight (for cancellation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpId(u64);

impl OpId {
    /// The operation in slot `index` of the table of operations in flight.
    /// Its user_data carries the lent-ring mark whichever ring it goes on, so
    /// a lender hands its completion back rather than taking it for its own.
    fn of_slot(slot: u64) -> OpId {
        OpId(slot | LENT_MARK)
    }

    /// The slot of the operation whose completion carries `user_data`.
    fn slot(user_data: u64) -> u64 {
        user_data & !LENT_MARK
    }
}

/// The operations a reactor needs of the kernel.
const OPCODES: [u8; 4] = [
    opcode::Recv::CODE,
    opcode::SendMsg::CODE,
    opcode::Read::CODE,
    opcode::AsyncCancel::CODE,
];

/// Where a [`Ring`]'s operations go: a ring of its own, or one a backend lends.
enum Backing {
    Own(Box<IoUring>),
    Lent(Box<dyn LentRing>),
}

impl Backing {
    /// Queues `sqe`; false if the submission queue is full.
    ///
    /// # Safety
    ///
    /// As [`io_uring::SubmissionQueue::push`]: the SQE's memory stays valid
    /// until its completion is reaped.
    unsafe fn push(&mut self, sqe: &squeue::Entry) -> bool {
        match self {
            // SAFETY: per this function's contract.
            Backing::Own(ring) => unsafe { ring.submission().push(sqe) }.is_ok(),
            Backing::Lent(ring) => {
                let mut pushed = false;
                // SAFETY: per this function's contract, which is the lent
                // queue's (the queue itself marks the entry as the borrower's).
                ring.with_submission(&mut |queue| pushed = unsafe { queue.push(sqe) });
                pushed
            }
        }
    }

    /// Submits what is queued and runs deferred completions, entering the
    /// kernel only if there is either.
    fn submit(&mut self) -> std::io::Result<()> {
        match self {
            Backing::Own(ring) => {
                let queue = ring.submission();
                if queue.is_empty() && !queue.taskrun() {
                    return Ok(());
                }
                drop(queue);
                ring.submit().map(drop)
            }
            Backing::Lent(ring) => ring.submit(),
        }
    }

    fn submit_and_wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        match self {
            Backing::Own(ring) => {
                let ts = types::Timespec::from(timeout);
                let args = types::SubmitArgs::new().timespec(&ts);
                ring.submitter().submit_with_args(1, &args).map(drop)
            }
            Backing::Lent(ring) => ring.submit_and_wait(timeout),
        }
    }

    /// True if a wait would return at once; see [`LentRing::has_pending`].
    fn has_pending(&mut self) -> bool {
        match self {
            Backing::Own(ring) => ring.submission().taskrun() || !ring.completion().is_empty(),
            Backing::Lent(ring) => ring.has_pending(),
        }
    }

    /// Moves the posted completions, as (user_data, result), to `out`.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        match self {
            Backing::Own(ring) => {
                let mut cq = ring.completion();
                cq.sync();
                out.extend(cq.map(|cqe| (cqe.user_data(), cqe.result())));
            }
            Backing::Lent(ring) => ring.reap(out),
        }
    }
}

/// An io_uring used by one thread, with the memory of every operation in flight.
pub struct Ring {
    backing: Backing,
    /// The kernel takes IORING_RECVSEND_POLL_FIRST on receives.
    poll_first: bool,
    /// Operations in flight, by slot (the SQE's user_data without the mark).
    ops: InFlightTable<InFlight>,
    /// Completions reaped while making room in the submission queue.
    reaped: Vec<Completion>,
    /// Reused list of the (user_data, result) pairs being collected.
    posted: Vec<(u64, i32)>,
}

impl Ring {
    /// Sets up a ring, failing if the kernel lacks what the reactor needs
    /// (receive, sendmsg, read, cancel, and waits with a timeout).
    pub fn new() -> std::io::Result<Ring> {
        // Kernels that know single issuers (6.0) also know polling before
        // receiving (5.19); older ones get a plain ring and plain receives.
        let (ring, poll_first) = match IoUring::builder()
            .setup_cqsize(CQ_ENTRIES)
            .setup_coop_taskrun()
            .setup_taskrun_flag()
            .setup_single_issuer()
            .build(SQ_ENTRIES)
        {
            Ok(ring) => (ring, true),
            Err(_) => (
                IoUring::builder()
                    .setup_cqsize(CQ_ENTRIES)
                    .build(SQ_ENTRIES)?,
                false,
            ),
        };
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        check_fit(ring.params(), &probe)?;
        Ok(Ring::with_backing(Backing::Own(Box::new(ring)), poll_first))
    }

    /// Uses a ring a backend lends (see [`LentRing`]), failing if the kernel
    /// lacks what the reactor needs.
    pub fn lent(ring: Box<dyn LentRing>) -> std::io::Result<Ring> {
        let probe = ring.probe()?;
        let params = ring.params();
        check_fit(&params, &probe)?;
        // Kernels that know single issuers (6.0) also know polling before
        // receiving (5.19).
        let poll_first = params.is_setup_single_issuer();
        Ok(Ring::with_backing(Backing::Lent(ring), poll_first))
    }

    fn with_backing(backing: Backing, poll_first: bool) -> Ring {
        Ring {
            backing,
            poll_first,
            ops: InFlightTable::with_capacity(usize::MAX),
            reaped: Vec::new(),
            posted: Vec::new(),
        }
    }

    /// True if the ring is a backend's, shared with its I/O.
    pub fn is_lent(&self) -> bool {
        matches!(self.backing, Backing::Lent(_))
    }

    /// Operations submitted whose completion has not been reaped.
    pub fn in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Receives into `buf` (up to its length) from `fd`. `drained` says the
    /// socket was just read empty, so the kernel should wait for data before
    /// trying (where it can).
    pub fn recv(
        &mut self,
        tag: u64,
        fd: impl AsFd,
        mut buf: Vec<u8>,
        drained: bool,
    ) -> std::io::Result<OpId> {
        let len = u32::try_from(buf.len()).unwrap_or(u32::MAX);
        let poll_first = if drained && self.poll_first {
            RECVSEND_POLL_FIRST
        } else {
            0
        };
        let sqe = opcode::Recv::new(types::Fd(fd.as_fd().as_raw_fd()), buf.as_mut_ptr(), len)
            .ioprio(poll_first)
            .build();
        // SAFETY: the SQE points into buf's heap allocation, which `push` moves
        // (without reallocating or touching its contents) into the table of
        // operations in flight; it stays there, unread and unfreed, until this
        // operation's completion is reaped.
        unsafe { self.push(sqe, tag, Owned::Received(buf)) }
    }

    /// Receives up to `len` bytes from `fd` into `buf` from byte `at` (the
    /// rest of a data PDU, straight into the buffer it belongs in); refuses
    /// a range outside the buffer. `drained` as for [`Ring::recv`]. On an
    /// error the buffer is dropped: the caller gives up the connection.
    pub fn recv_into(
        &mut self,
        tag: u64,
        fd: impl AsFd,
        mut buf: AlignedBuf,
        (at, len): (usize, usize),
        drained: bool,
    ) -> std::io::Result<OpId> {
        let Some(place) = buf.as_mut_slice().get_mut(at..at.saturating_add(len)) else {
            return Err(std::io::ErrorKind::InvalidInput.into());
        };
        let ptr = place.as_mut_ptr();
        let len32 = u32::try_from(len).unwrap_or(u32::MAX);
        let poll_first = if drained && self.poll_first {
            RECVSEND_POLL_FIRST
        } else {
            0
        };
        let sqe = opcode::Recv::new(types::Fd(fd.as_fd().as_raw_fd()), ptr, len32)
            .ioprio(poll_first)
            .build();
        // SAFETY: the SQE points into buf's heap allocation, inside its usable
        // region (checked above); `push` moves the handle, not the memory, into
        // the table of operations in flight, where nothing reads, writes or
        // frees it until this operation's completion is reaped.
        unsafe { self.push(sqe, tag, Owned::ReceivedInto { buf, at, len }) }
    }

    /// Sends `batch` on `fd` with one `sendmsg` (no SIGPIPE if the peer is gone).
    pub fn send(&mut self, tag: u64, fd: impl AsFd, mut batch: SendBatch) -> std::io::Result<OpId> {
        let header = batch.prepare();
        let sqe = opcode::SendMsg::new(types::Fd(fd.as_fd().as_raw_fd()), header)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build();
        // SAFETY: the header is boxed and its iovecs and the buffers they point
        // to are heap allocations (the `Bytes` handles keep theirs alive); `push`
        // moves the batch, not those allocations, into the table of operations in
        // flight, where nothing modifies or frees them until this operation's
        // completion is reaped.
        unsafe { self.push(sqe, tag, Owned::Sent(batch)) }
    }

    /// Reads `eventfd`'s counter, completing once another thread signals it.
    pub fn read_eventfd(&mut self, tag: u64, eventfd: &Arc<EventFd>) -> std::io::Result<OpId> {
        let mut counter = Box::new([0u8; 8]);
        let sqe =
            opcode::Read::new(types::Fd(eventfd.as_raw_fd()), counter.as_mut_ptr(), 8).build();
        let owned = Owned::Woken {
            _read: WakeRead {
                _eventfd: eventfd.clone(),
                _counter: counter,
            },
        };
        // SAFETY: the SQE points into the boxed counter, which moves with the
        // box into the table of operations in flight and stays there until this
        // operation's completion is reaped.
        unsafe { self.push(sqe, tag, owned) }
    }

    /// Reads the counter of an eventfd someone else owns (a backend poller's),
    /// completing once it is signalled and resetting it. The owner keeps the
    /// descriptor open until the read completes or is cancelled (the kernel
    /// holds its own reference to the file meanwhile, so an early close is not
    /// unsafe, only wasteful).
    pub fn read_counter(&mut self, tag: u64, fd: RawFd) -> std::io::Result<OpId> {
        let mut counter = Box::new([0u8; 8]);
        let sqe = opcode::Read::new(types::Fd(fd), counter.as_mut_ptr(), 8).build();
        // SAFETY: the SQE points into the boxed counter, which moves with the
        // box into the table of operations in flight and stays there until this
        // operation's completion is reaped.
        unsafe { self.push(sqe, tag, Owned::Counter { _counter: counter }) }
    }

    /// Asks the kernel to cancel `target` (which completes, possibly with
    /// `-ECANCELED`, either way); the cancellation itself completes with `tag`.
    pub fn cancel(&mut self, tag: u64, target: OpId) -> std::io::Result<OpId> {
        let sqe = opcode::AsyncCancel::new(target.0).build();
        // SAFETY: a cancellation references no memory of ours.
        unsafe { self.push(sqe, tag, Owned::Nothing) }
    }

    /// Does nothing, completing with `tag` (a ring's round trip, for tests of
    /// the rings themselves).
    pub fn nop(&mut self, tag: u64) -> std::io::Result<OpId> {
        let sqe = opcode::Nop::new().build();
        // SAFETY: a no-op references no memory.
        unsafe { self.push(sqe, tag, Owned::Nothing) }
    }

    /// Queues `sqe`, whose memory `owned` holds, under a fresh user_data.
    ///
    /// # Safety
    ///
    /// Every pointer in `sqe` must point into heap memory owned by `owned` (or
    /// into nothing), so that it stays valid while `owned` sits in `self.ops`.
    unsafe fn push(
        &mut self,
        sqe: io_uring::squeue::Entry,
        tag: u64,
        owned: Owned,
    ) -> std::io::Result<OpId> {
        let Ok(slot) = self.ops.insert(InFlight { tag, owned }) else {
            unreachable!("the reactor's table has no bound")
        };
        let id = OpId::of_slot(slot);
        let sqe = sqe.user_data(id.0);
        for _ in 0..64 {
            // SAFETY: per this function's contract the SQE's memory is owned by
            // the entry just stored in the table's `slot`, which is removed
            // only when the completion carrying user_data `id` is reaped (or
            // leaked by `Drop`), so it outlives the operation.
            if unsafe { self.backing.push(&sqe) } {
                return Ok(id);
            }
            // The submission queue is full: hand it to the kernel first.
            match self.backing.submit() {
                Ok(_) => {}
                Err(e) if is_transient(&e) => self.collect(),
                Err(e) => {
                    // The SQE never reached the kernel: its memory is ours again.
                    self.ops.remove(slot);
                    return Err(e);
                }
            }
        }
        self.ops.remove(slot);
        Err(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            "io_uring submission queue stays full",
        ))
    }

    /// Submits what is queued and, if `wait`, sleeps until a completion arrives
    /// or `timeout` passes.
    pub fn submit_and_wait(&mut self, wait: bool, timeout: Duration) -> std::io::Result<()> {
        let result = if wait {
            self.backing.submit_and_wait(timeout)
        } else {
            self.backing.submit()
        };
        settled(result)
    }

    /// True if the next wait would return at once: completions already
    /// reaped or posted, or deferred work the next enter runs. No system call.
    pub fn has_pending(&mut self) -> bool {
        !self.reaped.is_empty() || self.backing.has_pending()
    }

    /// Moves every posted completion, with the memory it owned, to `out`.
    pub fn reap(&mut self, out: &mut Vec<Completion>) {
        self.collect();
        out.append(&mut self.reaped);
    }

    fn collect(&mut self) {
        self.backing.reap(&mut self.posted);
        for (user_data, result) in self.posted.drain(..) {
            let Some(op) = self.ops.remove(OpId::slot(user_data)) else {
                tracing::error!(user_data, "completion for no operation");
                continue;
            };
            self.reaped.push(Completion {
                tag: op.tag,
                result,
                held: op.owned.handed_back(),
            });
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        if self.in_flight() == 0 {
            return;
        }
        let targets: Vec<OpId> = self.ops.busy().map(OpId::of_slot).collect();
        for id in targets {
            if let Err(e) = self.cancel(u64::MAX, id) {
                tracing::debug!(error = %e, "cannot cancel an operation of a closing ring");
            }
        }
        let deadline = Instant::now() + DRAIN_TIMEOUT;
        let mut done = Vec::new();
        while self.in_flight() > 0 {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if let Err(e) = self.submit_and_wait(true, deadline - now) {
                tracing::error!(error = %e, "io_uring wait failed while closing");
                break;
            }
            self.reap(&mut done);
            done.clear();
        }
        let left = self.in_flight();
        if left > 0 {
            tracing::error!(
                operations = left,
                "io_uring operations did not complete; leaking their buffers"
            );
            let busy: Vec<u64> = self.ops.busy().collect();
            for slot in busy {
                // The kernel may still use this memory: never free it.
                std::mem::forget(self.ops.remove(slot));
            }
        }
    }
}

/// Fails unless a ring with `params`, whose kernel `probe` describes, can
/// carry a reactor: timed waits, no dropped completions, and every opcode the
/// reactor uses.
fn check_fit(params: &Parameters, probe: &Probe) -> std::io::Result<()> {
    let unsupported = |what: String| std::io::Error::new(std::io::ErrorKind::Unsupported, what);
    if !params.is_feature_ext_arg() || !params.is_feature_nodrop() {
        return Err(unsupported(
            "io_uring lacks timed waits or no-drop completions".into(),
        ));
    }
    match OPCODES.into_iter().find(|&c| !probe.is_supported(c)) {
        Some(code) => Err(unsupported(format!("io_uring lacks opcode {code}"))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::{Completion, EventFd, Held, Ring, SendBatch};

    /// Waits (bounded) until `count` completions have been reaped.
    fn reap_until(ring: &mut Ring, count: usize) -> Vec<Completion> {
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut done = Vec::new();
        while done.len() < count {
            assert!(Instant::now() < deadline, "completions did not arrive");
            ring.submit_and_wait(true, Duration::from_millis(100))
                .unwrap();
            ring.reap(&mut done);
        }
        done
    }

    #[test]
    fn a_receive_into_a_part_of_an_aligned_buffer_fills_only_that_part() {
        let mut ring = Ring::new().unwrap();
        let (mut peer, local) = UnixStream::pair().unwrap();
        let buf = crate::AlignedBuf::zeroed(8192);
        ring.recv_into(3, &local, buf, (4096, 8), true).unwrap();
        peer.write_all(b"payload and more").unwrap();
        let done = reap_until(&mut ring, 1);
        assert_eq!((done[0].tag, done[0].result), (3, 8));
        let Held::ReceivedInto { buf, at, len } = &done[0].held else {
            panic!("expected the aligned buffer back")
        };
        assert_eq!((*at, *len), (4096, 8));
        assert_eq!(&buf.as_slice()[4096..4104], b"payload ");
        assert!(buf.as_slice()[..4096].iter().all(|&b| b == 0));
        assert!(buf.as_slice()[4104..].iter().all(|&b| b == 0));
        let outside = ring.recv_into(
            4,
            &local,
            crate::AlignedBuf::zeroed(4096),
            (4000, 200),
            true,
        );
        assert!(outside.is_err(), "a range past the buffer is refused");
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_receive_fills_its_buffer_and_hands_it_back() {
        let mut ring = Ring::new().unwrap();
        let (mut peer, local) = UnixStream::pair().unwrap();
        ring.recv(7, &local, vec![0; 16], true).unwrap();
        peer.write_all(b"hello").unwrap();
        let done = reap_until(&mut ring, 1);
        assert_eq!((done[0].tag, done[0].result), (7, 5));
        let Held::Received(buf) = &done[0].held else {
            panic!("expected the receive buffer back")
        };
        assert_eq!(&buf[..5], b"hello");
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_cancelled_receive_hands_its_buffer_back() {
        let mut ring = Ring::new().unwrap();
        let (_peer, local) = UnixStream::pair().unwrap();
        let op = ring.recv(1, &local, vec![0; 64 * 1024], false).unwrap();
        ring.submit_and_wait(false, Duration::ZERO).unwrap();
        ring.cancel(2, op).unwrap();
        let mut done = reap_until(&mut ring, 2);
        done.sort_by_key(|c| c.tag);
        assert_eq!(done[0].result, -libc::ECANCELED);
        assert!(matches!(&done[0].held, Held::Received(b) if b.len() == 64 * 1024));
        assert!(matches!(done[1].held, Held::Nothing));
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_send_batch_goes_out_in_order() {
        let mut ring = Ring::new().unwrap();
        let (mut peer, local) = UnixStream::pair().unwrap();
        let mut batch = SendBatch::new();
        for part in ["one ", "", "two ", "three"] {
            batch.push(Bytes::from(part));
        }
        assert_eq!(batch.len_bytes(), 13);
        ring.send(3, &local, batch).unwrap();
        let done = reap_until(&mut ring, 1);
        assert_eq!((done[0].tag, done[0].result), (3, 13));
        assert!(matches!(&done[0].held, Held::Sent(b) if b.len_bytes() == 13));
        let mut got = [0u8; 13];
        peer.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"one two three");
    }

    #[test]
    fn signalling_the_eventfd_completes_its_read() {
        let mut ring = Ring::new().unwrap();
        let eventfd = Arc::new(EventFd::new().unwrap());
        ring.read_eventfd(9, &eventfd).unwrap();
        ring.submit_and_wait(false, Duration::ZERO).unwrap();
        let signaller = eventfd.clone();
        std::thread::spawn(move || signaller.signal().unwrap());
        let done = reap_until(&mut ring, 1);
        assert_eq!((done[0].tag, done[0].result), (9, 8));
        assert!(matches!(done[0].held, Held::Woken));
    }

    #[test]
    fn dropping_a_ring_with_operations_in_flight_waits_for_them() {
        let mut ring = Ring::new().unwrap();
        let (_peer, local) = UnixStream::pair().unwrap();
        ring.recv(1, &local, vec![0; 4096], false).unwrap();
        ring.submit_and_wait(false, Duration::ZERO).unwrap();
        assert_eq!(ring.in_flight(), 1);
        let started = Instant::now();
        drop(ring);
        // Cancelled and reaped, not left to the two-second leak bound.
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
