//! A ring owned by the calling thread: data-path I/O that thread starts goes
//! straight to the kernel from it and completes when it polls, with no hand-off
//! to a device's ring thread and back.
//!
//! Each hand-off costs a thread wake-up, which on small machines and VMs costs
//! more than a 4 KiB read from a fast device. An event loop (an NVMe/TCP
//! reactor, a benchmark driver) attaches a [`LocalRing`], watches its
//! [`LocalRing::event_fd`] beside its sockets and calls [`LocalRing::poll`] when
//! it is readable; a thread without one keeps using the ring threads.
//!
//! Submissions are batched: operations started on the thread are queued and
//! handed to the kernel together when the owner calls [`LocalRing::submit`],
//! [`LocalRing::poll`] or [`LocalRing::wait`] — an event loop starts everything
//! one round asks for, then submits once before it sleeps.
//!
//! Where the kernel allows it (5.19 and later for the flag, 6.1 for deferral),
//! completions are deferred task work (`IORING_SETUP_DEFER_TASKRUN`): the
//! kernel queues them without interrupting the thread, and they are run in
//! batches when it enters the ring to poll or wait, as fio drives its rings. The
//! eventfd is still signalled when the first of a batch is queued, and the
//! ring's `IORING_SQ_TASKRUN` flag tells `poll` that entering is worth a call.
//!
//! The owner may also lend the ring to another component on its thread
//! ([`LocalRing::share`]): its operations then share the submission queue and
//! one wait with the engine's, and their completions are set aside for it.
//!
//! INVARIANT: callbacks run only from `poll`, `wait` and drop, on the owning
//! thread, never while the ring's state is borrowed — so a callback may start
//! more I/O on the same ring (`poll` submits it before returning).

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use uring::{EventFd, Reaped};

use super::share::RingShare;
use super::slots::{EngineRing, Finished, Request};
use super::Shared;

/// Operations one local ring keeps in flight; beyond that, work goes to the
/// device's ring thread.
const LOCAL_RING_ENTRIES: u32 = 256;
/// Completion queue slots: room for the engine's operations and for those of a
/// component the ring is lent to (a reactor's receive and send per connection).
/// Completions beyond it are buffered by the kernel, never dropped.
const LOCAL_RING_CQ_ENTRIES: u32 = 4096;

thread_local! {
    static CURRENT: RefCell<Option<Rc<Inner>>> = const { RefCell::new(None) };
}

pub(super) struct Inner {
    pub(super) state: RefCell<State>,
    /// Signalled by the kernel for every completion posted to the ring.
    event_fd: EventFd,
}

pub(super) struct State {
    pub(super) ring: EngineRing,
    /// Completions taken from the ring whose callbacks have not run yet.
    ready: Vec<Finished>,
    /// Completions of a borrower's operations (see [`RingShare`]), kept until
    /// it reaps them.
    pub(super) shared_done: Vec<(u64, i32)>,
}

/// Why a local ring could not be attached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LocalRingError {
    /// The thread already has one.
    #[error("this thread already has a local ring")]
    AlreadyAttached,
    /// The kernel refused the ring or its eventfd.
    #[error("cannot set up a local ring: {0}")]
    Setup(#[source] std::io::Error),
}

/// The calling thread's own ring for data-path I/O (see the module docs). Not
/// `Send`: it belongs to the thread that attached it. Dropping it waits for the
/// operations still in flight and runs their callbacks.
pub struct LocalRing {
    inner: Rc<Inner>,
}

impl LocalRing {
    /// Gives the calling thread a ring of its own.
    pub fn attach() -> Result<LocalRing, LocalRingError> {
        if CURRENT.with(|c| c.borrow().is_some()) {
            return Err(LocalRingError::AlreadyAttached);
        }
        let ring = EngineRing::deferring(LOCAL_RING_ENTRIES, LOCAL_RING_CQ_ENTRIES)
            .map_err(LocalRingError::Setup)?;
        let event_fd = EventFd::new().map_err(LocalRingError::Setup)?;
        ring.register_eventfd(&event_fd)
            .map_err(LocalRingError::Setup)?;
        let inner = Rc::new(Inner {
            state: RefCell::new(State {
                ring,
                ready: Vec::new(),
                shared_done: Vec::new(),
            }),
            event_fd,
        });
        CURRENT.with(|c| *c.borrow_mut() = Some(inner.clone()));
        Ok(LocalRing { inner })
    }

    /// An eventfd signalled for every completion posted: what an event loop
    /// watches beside its sockets. Nothing here reads it: the loop consumes
    /// its counter itself (an io_uring read of it) or watches its edges
    /// (edge-triggered epoll).
    pub fn event_fd(&self) -> BorrowedFd<'_> {
        self.inner.event_fd.as_fd()
    }

    /// Operations submitted and not yet completed.
    pub fn in_flight(&self) -> usize {
        self.inner.state.borrow().ring.in_flight()
    }

    /// Hands every queued operation to the kernel (one system call), without
    /// waiting; what an event loop calls before it sleeps.
    pub fn submit(&self) {
        self.inner.submit();
    }

    /// Runs the callbacks of every completion posted so far, then submits what
    /// they started, without blocking; returns how many callbacks ran.
    pub fn poll(&self) -> usize {
        self.inner.poll()
    }

    /// Submits what is queued, blocks until at least one operation completes
    /// (at once if none is in flight), then polls; returns how many callbacks ran.
    pub fn wait(&self) -> usize {
        self.inner.wait()
    }

    /// Lends the ring to another component on this thread (see [`RingShare`]).
    pub fn share(&self) -> RingShare {
        RingShare::new(self.inner.clone())
    }
}

impl Drop for LocalRing {
    fn drop(&mut self) {
        self.inner.run_ready();
        while self.in_flight() > 0 {
            let waited = self.inner.state.borrow_mut().ring.submit_and_wait(1);
            if let Err(err) = waited {
                // The kernel may still own buffers: leak them rather than
                // free memory it could write to.
                tracing::error!(%err, in_flight = self.in_flight(), "a local ring failed with I/O in flight; leaking its buffers");
                CURRENT.with(|c| *c.borrow_mut() = None);
                std::mem::forget(self.inner.clone());
                return;
            }
            self.inner.collect();
            self.inner.run_ready();
        }
        CURRENT.with(|c| *c.borrow_mut() = None);
    }
}

impl Inner {
    fn in_flight(&self) -> usize {
        self.state.borrow().ring.in_flight()
    }

    /// Runs the callbacks of posted completions, then submits what they started.
    fn poll(&self) -> usize {
        self.run_deferred();
        self.collect();
        let count = self.run_ready();
        self.submit();
        count
    }

    /// Runs the callbacks of the completions collected so far, outside the
    /// state's borrow; returns how many ran.
    fn run_ready(&self) -> usize {
        let ready = std::mem::take(&mut self.state.borrow_mut().ready);
        let count = ready.len();
        for done in ready {
            done.run();
        }
        count
    }

    /// True if completions were collected that nobody has taken yet: callbacks
    /// to run or a borrower's completions. A wait must not sleep on them.
    pub(super) fn has_collected(&self) -> bool {
        let state = self.state.borrow();
        !state.ready.is_empty() || !state.shared_done.is_empty()
    }

    /// Has the kernel post the completions it deferred, if it has any (and
    /// hands it what is queued on the way).
    fn run_deferred(&self) {
        self.enter_if(|ring| ring.taskrun());
    }

    fn submit(&self) {
        self.enter_if(|ring| ring.queued() > 0);
    }

    /// Enters the kernel without waiting if `due` says there is a reason to.
    /// The entry submits what is queued and, while `IORING_SQ_TASKRUN` is up,
    /// asks for events, which runs the deferred completions.
    fn enter_if(&self, due: impl FnOnce(&mut EngineRing) -> bool) {
        if let Err(err) = self.try_enter_if(due) {
            // Queued entries stay queued: the next submit or wait retries.
            tracing::warn!(%err, "local ring could not enter the kernel");
        }
    }

    /// As `enter_if`, handing back the error of a failed entry (transient
    /// ones, which a later entry retries, count as success: see
    /// [`uring::FileRing::submit`]).
    pub(super) fn try_enter_if(
        &self,
        due: impl FnOnce(&mut EngineRing) -> bool,
    ) -> std::io::Result<()> {
        let mut state = self.state.borrow_mut();
        if !due(&mut state.ring) {
            return Ok(());
        }
        state.ring.submit()
    }

    fn wait(&self) -> usize {
        if self.in_flight() == 0 || !self.state.borrow().ready.is_empty() {
            return self.poll();
        }
        let waited = self.state.borrow_mut().ring.submit_and_wait(1);
        if let Err(err) = waited {
            tracing::error!(%err, "waiting on a local ring failed");
        }
        self.poll()
    }

    /// Takes every posted completion out of the ring: the engine's become
    /// callbacks ready to run, a borrower's are set aside for it.
    pub(super) fn collect(&self) {
        let mut state = self.state.borrow_mut();
        let State {
            ring,
            ready,
            shared_done,
        } = &mut *state;
        ring.reap(|reaped| match reaped {
            Reaped::Own {
                buf,
                payload,
                result,
            } => ready.extend(super::slots::finished(buf, payload, result)),
            Reaped::Lent(user_data, result) => shared_done.push((user_data, result)),
        });
    }
}

/// Receives from `rx`, keeping the calling thread's local ring (if any) turning
/// meanwhile: a thread that blocks on a result of its own local I/O would
/// otherwise wait forever. For threads that wait for their engine completions
/// on a channel (tools, benchmarks); a thread without a ring just receives.
pub fn recv_driving_local<T>(
    rx: &crossbeam_channel::Receiver<T>,
) -> Result<T, crossbeam_channel::RecvError> {
    let Some(inner) = CURRENT.with(|c| c.borrow().clone()) else {
        return rx.recv();
    };
    loop {
        if let Ok(value) = rx.try_recv() {
            return Ok(value);
        }
        // Callbacks collected by a borrower's reap hold no slot any more.
        if inner.run_ready() > 0 {
            continue;
        }
        if inner.in_flight() == 0 {
            return rx.recv();
        }
        inner.wait();
    }
}

/// As [`recv_driving_local`], but first polls for up to `window`: it checks
/// the channel and the local ring's shared memory in a loop (entering the
/// kernel only when it flags deferred completions) instead of sleeping, as a
/// polling event loop does under load. Spares the wake-up of a sleeping
/// thread per completion at the cost of a busy CPU while it waits. It yields
/// the CPU every 64 spins, so a thread it waits for is not kept off it.
pub fn recv_polling_local<T>(
    rx: &crossbeam_channel::Receiver<T>,
    window: Duration,
) -> Result<T, crossbeam_channel::RecvError> {
    if let Some(inner) = CURRENT.with(|c| c.borrow().clone()) {
        let until = Instant::now() + window;
        let mut spins = 0u32;
        loop {
            if let Ok(value) = rx.try_recv() {
                return Ok(value);
            }
            if inner.poll() > 0 {
                continue;
            }
            spins = spins.wrapping_add(1);
            if spins.is_multiple_of(64) {
                if Instant::now() >= until {
                    break;
                }
                std::thread::yield_now();
            }
            std::hint::spin_loop();
        }
    }
    recv_driving_local(rx)
}

/// Submits `request` on the calling thread's local ring, if it has one with a
/// free slot; otherwise gives the request back for the device's ring thread.
pub(super) fn submit_on_current(shared: &Arc<Shared>, request: Request) -> Result<(), Request> {
    let Some(inner) = CURRENT.with(|c| c.borrow().clone()) else {
        return Err(request);
    };
    let Ok(mut state) = inner.state.try_borrow_mut() else {
        return Err(request);
    };
    // No room (or the kernel takes no entry for now): the request goes to the
    // device's ring thread instead.
    super::slots::push(&mut state.ring, shared, request, true)?;
    super::submit_full_batch(&mut state.ring);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{start_counted_read, temp_device};
    use super::*;
    use crate::io::{AlignedBuf, Device, IoOp};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// The `/proc` stat file of the calling thread (`/proc/thread-self`
    /// resolves to `<pid>/task/<tid>`).
    fn this_thread_stat() -> std::path::PathBuf {
        let task = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        std::path::Path::new("/proc").join(task).join("stat")
    }

    /// Waits until `ready` holds and the thread whose stat file is `stat` is
    /// asleep in the kernel (state S): blocked, not spinning or preempted.
    /// False if that did not happen within 10 s.
    fn wait_until_asleep(stat: &std::path::Path, ready: &std::sync::atomic::AtomicBool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let state = std::fs::read_to_string(stat).expect("thread stat");
            // The state follows the command name, which ends at the last ')'.
            let asleep = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('S'));
            if ready.load(std::sync::atomic::Ordering::SeqCst) && asleep {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    /// Waits up to 10 s for `ring`'s eventfd to be signalled; true if it was.
    fn wait_readable(ring: &LocalRing) -> bool {
        ring.inner
            .event_fd
            .wait(Duration::from_secs(10))
            .expect("poll the eventfd")
    }

    #[test]
    fn io_started_on_a_thread_with_a_local_ring_completes_when_it_polls() {
        let (_dir, dev) = temp_device(1 << 20);
        crate::io::write_blocking(&dev, 8192, AlignedBuf::copy_from(&[7u8; 4096])).expect("write");
        let ring = LocalRing::attach().expect("attach");
        let done = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let done = done.clone();
            dev.submit_here(
                IoOp::Read {
                    offset: 8192,
                    buf: AlignedBuf::for_overwrite(4096),
                },
                Box::new(move |outcome| {
                    assert!(outcome.result.is_ok());
                    let buf = outcome.buf.expect("buffer back");
                    assert!(buf.as_slice().iter().all(|&b| b == 7));
                    done.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        assert_eq!(ring.in_flight(), 3, "the reads wait on this thread's ring");
        let mut polled = 0;
        while polled < 3 {
            polled += ring.wait();
        }
        assert_eq!(done.load(Ordering::SeqCst), 3);
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn a_polling_receive_completes_local_io_then_falls_back_to_blocking() {
        let (_dir, dev) = temp_device(1 << 20);
        crate::io::write_blocking(&dev, 0, AlignedBuf::copy_from(&[9u8; 32768])).expect("write");
        let ring = LocalRing::attach().expect("attach");
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..8u64 {
            let tx = tx.clone();
            dev.submit_here(
                IoOp::Read {
                    offset: 4096 * i,
                    buf: AlignedBuf::for_overwrite(4096),
                },
                Box::new(move |outcome| {
                    let whole = outcome
                        .buf
                        .is_some_and(|b| b.as_slice().iter().all(|&x| x == 9));
                    let _ = tx.send((i, outcome.result.is_ok() && whole));
                }),
            );
        }
        let mut got: Vec<(u64, bool)> = (0..8)
            .map(|_| recv_polling_local(&rx, Duration::from_millis(10)).expect("completion"))
            .collect();
        got.sort_unstable();
        assert_eq!(got, (0..8).map(|i| (i, true)).collect::<Vec<_>>());
        assert_eq!(ring.in_flight(), 0);
        // Nothing local in flight: after its window the receive blocks, and
        // only then does another thread send.
        let receiver = this_thread_stat();
        let receiving = Arc::new(AtomicBool::new(false));
        let sender = {
            let receiving = receiving.clone();
            std::thread::spawn(move || {
                let blocked = wait_until_asleep(&receiver, &receiving);
                tx.send((99, true)).expect("send");
                blocked
            })
        };
        receiving.store(true, Ordering::SeqCst);
        assert_eq!(
            recv_polling_local(&rx, Duration::from_millis(1)),
            Ok((99, true))
        );
        assert!(
            sender.join().expect("sender"),
            "the receive never blocked after its window"
        );
    }

    #[test]
    fn a_burst_of_operations_enters_the_kernel_every_full_batch() {
        use super::super::SUBMIT_BATCH_MAX;
        let (_dir, dev) = temp_device(1 << 20);
        let ring = LocalRing::attach().expect("attach");
        let started = 2 * SUBMIT_BATCH_MAX - 1;
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..started {
            start_counted_read(&dev, 4096 * i as u64, &done);
        }
        let queued = ring.inner.state.borrow_mut().ring.queued();
        assert_eq!(
            queued,
            SUBMIT_BATCH_MAX - 1,
            "every full batch went to the kernel as it filled; only the rest waits for a submit"
        );
        while done.load(Ordering::SeqCst) < started {
            ring.wait();
        }
    }

    #[test]
    fn the_event_fd_turns_readable_when_a_completion_is_posted() {
        let (_dir, dev) = temp_device(1 << 20);
        let ring = LocalRing::attach().expect("attach");
        dev.submit_here(
            IoOp::Read {
                offset: 0,
                buf: AlignedBuf::for_overwrite(4096),
            },
            Box::new(|_| {}),
        );
        // Started operations wait for the owner's submit (an event loop's, before
        // it sleeps).
        ring.submit();
        assert!(wait_readable(&ring), "the eventfd never became readable");
        assert_eq!(ring.poll(), 1);
    }

    #[test]
    fn an_event_loop_woken_only_by_the_event_fd_gets_every_completion() {
        let (_dir, dev) = temp_device(1 << 20);
        // Written first: a read of a hole completes inside the submission.
        crate::io::write_blocking(&dev, 0, AlignedBuf::copy_from(&[5u8; 65536])).expect("write");
        crate::io::flush_blocking(&dev).expect("flush");
        let ring = LocalRing::attach().expect("attach");
        let mut deferred = false;
        for round in 0..50 {
            dev.submit_here(
                IoOp::Read {
                    offset: 4096 * (round % 16),
                    buf: AlignedBuf::for_overwrite(4096),
                },
                Box::new(|outcome| assert!(outcome.result.is_ok())),
            );
            ring.submit();
            let mut ran = 0;
            while ran == 0 {
                assert!(
                    wait_readable(&ring),
                    "round {round}: the eventfd never became readable"
                );
                ring.inner.event_fd.drain().expect("read the eventfd");
                deferred |= ring.inner.state.borrow_mut().ring.taskrun();
                ran = ring.poll();
            }
            assert_eq!(ran, 1, "round {round}");
        }
        let defers = ring
            .inner
            .state
            .borrow()
            .ring
            .params()
            .is_setup_single_issuer();
        // Only one direction is a property: whether the kernel had queued the
        // task work when the flag was read is a race a loaded machine loses.
        assert!(
            !deferred || defers,
            "completions were deferred by a ring that does not defer them"
        );
    }

    #[test]
    fn a_second_ring_on_one_thread_is_refused_and_a_dropped_ring_finishes_its_io() {
        let (_dir, dev) = temp_device(1 << 20);
        let ring = LocalRing::attach().expect("attach");
        assert!(matches!(
            LocalRing::attach(),
            Err(LocalRingError::AlreadyAttached)
        ));
        let done = Arc::new(AtomicUsize::new(0));
        for i in 0..8u64 {
            let done = done.clone();
            dev.submit_here(
                IoOp::Write {
                    offset: i * 4096,
                    buf: AlignedBuf::copy_from(&[1u8; 4096]),
                },
                Box::new(move |outcome| {
                    assert!(outcome.result.is_ok());
                    done.fetch_add(1, Ordering::SeqCst);
                }),
            );
        }
        drop(ring);
        assert_eq!(done.load(Ordering::SeqCst), 8, "drop ran every callback");
        // Without a local ring, the same call goes through the ring thread.
        let back = crate::io::read_blocking(&dev, 0, 4096).expect("read");
        assert!(back.as_slice().iter().all(|&b| b == 1));
        let again = LocalRing::attach().expect("a thread may attach again after drop");
        drop(again);
    }

    #[test]
    fn a_thread_without_a_local_ring_uses_the_ring_thread() {
        let (_dir, dev) = temp_device(1 << 20);
        let (tx, rx) = crossbeam_channel::bounded(1);
        dev.submit_here(
            IoOp::Read {
                offset: 0,
                buf: AlignedBuf::for_overwrite(4096),
            },
            Box::new(move |outcome| {
                let _ = tx.send(outcome.result);
            }),
        );
        rx.recv_timeout(std::time::Duration::from_secs(30))
            .expect("the ring thread completed it")
            .expect("ok");
    }
}
