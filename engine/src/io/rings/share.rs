//! A local ring lent to another component on the same thread (an NVMe/TCP
//! reactor): its own operations (socket receives and sends) go on the engine's
//! ring, so one `io_uring_enter` submits both kinds and one wait sleeps until
//! either completes — one ring per reactor, as DESIGN.md's thread model has it.
//!
//! The contract between the two is the `uring` crate's ([`uring::LentRing`]):
//! the borrower queues through a [`uring::LentQueue`], which marks its
//! operations, and the engine sets the completions [`uring::is_lent`] marks
//! aside (whoever reaps the ring, the borrower's wait or an engine wait on the
//! same thread) until the borrower takes them with [`LentRing::reap`].

use std::rc::Rc;
use std::time::Duration;

use io_uring::{Parameters, Probe};
use uring::{LentQueue, LentRing};

use super::local::Inner;

/// A handle on the calling thread's [`LocalRing`](super::LocalRing) through
/// which another component queues operations of its own and waits for them.
/// Not `Send`; it keeps the ring open after the `LocalRing` is dropped (then
/// the engine no longer uses it), so the borrower can finish its operations.
pub struct RingShare {
    inner: Rc<Inner>,
}

impl RingShare {
    pub(super) fn new(inner: Rc<Inner>) -> RingShare {
        RingShare { inner }
    }
}

impl LentRing for RingShare {
    fn with_submission(&mut self, queue: &mut dyn FnMut(&mut LentQueue<'_, '_>)) {
        self.inner.state.borrow_mut().ring.lend(queue);
    }

    /// Hands every queued operation (the borrower's and the engine's) to the
    /// kernel, and runs deferred completions if some wait; never sleeps, and
    /// makes no system call when there is neither.
    fn submit(&mut self) -> std::io::Result<()> {
        self.inner
            .try_enter_if(|ring| ring.queued() > 0 || ring.taskrun())
    }

    /// Submits what is queued and sleeps until a completion of either side is
    /// posted or `timeout` passes. Does not sleep while completions already
    /// collected wait to be taken: engine callbacks (the owner's `poll` runs
    /// them) or the borrower's (its `reap`).
    fn submit_and_wait(&mut self, timeout: Duration) -> std::io::Result<()> {
        if self.inner.has_collected() {
            return self.submit();
        }
        self.inner
            .state
            .borrow_mut()
            .ring
            .submit_and_wait_for(timeout)
    }

    /// True if a wait would return at once: completions are collected or
    /// posted, or the kernel holds deferred work that the next enter turns
    /// into completions (the ring's task-run flag). Reads only shared memory,
    /// so a borrower polling under load can spin on it without system calls.
    fn has_pending(&mut self) -> bool {
        if self.inner.has_collected() {
            return true;
        }
        let mut state = self.inner.state.borrow_mut();
        state.ring.taskrun() || state.ring.has_posted()
    }

    /// Moves the borrower's posted completions, as (user_data, result), to
    /// `out`. The engine's completions found on the way are kept for its
    /// callbacks, which run in the owner's next `poll`.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>) {
        self.inner.collect();
        out.append(&mut self.inner.state.borrow_mut().shared_done);
    }

    /// How the ring was set up and what its kernel offers, for the borrower
    /// to check what it needs of a ring.
    fn params(&self) -> Parameters {
        self.inner.state.borrow().ring.params().clone()
    }

    /// The operations the ring's kernel runs.
    fn probe(&self) -> std::io::Result<Probe> {
        self.inner.state.borrow().ring.probe()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{start_counted_read, temp_device};
    use super::super::LocalRing;
    use super::*;
    use crate::io::{AlignedBuf, Device};
    use io_uring::opcode;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use uring::{Completion, Ring};

    const NOP: u64 = 7;

    /// The tags and results of `done`.
    fn tags(done: &[Completion]) -> Vec<(u64, i32)> {
        done.iter().map(|c| (c.tag, c.result)).collect()
    }

    #[test]
    fn one_wait_serves_the_borrower_and_the_engine() {
        let (_dir, dev) = temp_device(1 << 20);
        crate::io::write_blocking(&dev, 0, AlignedBuf::copy_from(&[3u8; 4096])).expect("write");
        let ring = LocalRing::attach().expect("attach");
        let mut borrower = Ring::lent(Box::new(ring.share())).expect("a fit ring");
        let done = Arc::new(AtomicUsize::new(0));
        start_counted_read(&dev, 0, &done);
        borrower.nop(NOP).expect("queue a no-op");
        let mut reaped = Vec::new();
        for _ in 0..1000 {
            if done.load(Ordering::SeqCst) == 1 && !reaped.is_empty() {
                break;
            }
            borrower
                .submit_and_wait(true, Duration::from_secs(10))
                .expect("wait");
            borrower.reap(&mut reaped);
            ring.poll();
        }
        assert_eq!(
            tags(&reaped),
            vec![(NOP, 0)],
            "the borrower got its completion back"
        );
        assert_eq!(done.load(Ordering::SeqCst), 1, "the engine's callback ran");
        assert_eq!(ring.in_flight(), 0);
    }

    #[test]
    fn an_engine_wait_sets_the_borrowers_completions_aside() {
        let (_dir, dev) = temp_device(1 << 20);
        let ring = LocalRing::attach().expect("attach");
        let mut borrower = Ring::lent(Box::new(ring.share())).expect("a fit ring");
        borrower.nop(NOP).expect("queue a no-op");
        let done = Arc::new(AtomicUsize::new(0));
        start_counted_read(&dev, 0, &done);
        while done.load(Ordering::SeqCst) == 0 {
            ring.wait();
        }
        // The no-op completed during the engine's waits; a borrower's wait
        // must not sleep on a completion already set aside for it.
        let started = std::time::Instant::now();
        borrower
            .submit_and_wait(true, Duration::from_secs(60))
            .expect("wait");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the wait slept on a collected completion"
        );
        let mut reaped = Vec::new();
        borrower.reap(&mut reaped);
        assert_eq!(tags(&reaped), vec![(NOP, 0)]);
    }

    #[test]
    fn the_share_outlives_the_local_ring_and_reports_what_the_ring_can_do() {
        let ring = LocalRing::attach().expect("attach");
        let share = ring.share();
        drop(ring);
        assert!(share
            .probe()
            .expect("probe")
            .is_supported(opcode::Nop::CODE));
        assert!(share.params().is_feature_nodrop());
        let mut borrower = Ring::lent(Box::new(share)).expect("a fit ring");
        borrower.nop(NOP).expect("queue a no-op");
        let mut reaped = Vec::new();
        while reaped.is_empty() {
            borrower
                .submit_and_wait(true, Duration::from_secs(10))
                .expect("wait");
            borrower.reap(&mut reaped);
        }
        assert_eq!(tags(&reaped), vec![(NOP, 0)]);
        drop(borrower);
        let again = LocalRing::attach().expect("the thread may attach a new ring");
        drop(again);
    }

    #[test]
    fn pending_work_shows_without_entering_the_kernel() {
        let (_dir, dev) = temp_device(1 << 20);
        let ring = LocalRing::attach().expect("attach");
        let mut share = ring.share();
        assert!(!share.has_pending(), "an idle ring has nothing pending");
        let done = Arc::new(AtomicUsize::new(0));
        start_counted_read(&dev, 0, &done);
        share.submit().expect("submit");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !share.has_pending() {
            assert!(
                std::time::Instant::now() < deadline,
                "the read's completion never showed"
            );
            std::hint::spin_loop();
        }
        assert_eq!(done.load(Ordering::SeqCst), 0, "no callback ran yet");
        while done.load(Ordering::SeqCst) == 0 {
            share
                .submit_and_wait(Duration::from_secs(10))
                .expect("wait");
            ring.poll();
        }
        assert!(!share.has_pending(), "the callback took the completion");
    }

    #[test]
    fn a_blocking_engine_wait_runs_callbacks_the_borrower_collected() {
        let (_dir, dev) = temp_device(1 << 20);
        let ring = LocalRing::attach().expect("attach");
        let mut share = ring.share();
        let (tx, rx) = crossbeam_channel::bounded(1);
        dev.submit_here(
            crate::io::IoOp::Read {
                offset: 0,
                buf: AlignedBuf::for_overwrite(4096),
            },
            Box::new(move |outcome| {
                let _ = tx.send(outcome.result.is_ok());
            }),
        );
        // The borrower's wait and reap take the engine's completion out of
        // the ring; its callback has not run and its slot is free.
        while ring.in_flight() > 0 {
            share
                .submit_and_wait(Duration::from_secs(10))
                .expect("wait");
            share.reap(&mut Vec::new());
        }
        assert_eq!(crate::io::recv_driving_local(&rx), Ok(true));
    }
}
