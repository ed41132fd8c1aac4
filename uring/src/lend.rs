//! A ring lent by the component that owns it (the engine's per-thread ring)
//! to another on the same thread (a reactor), so one `io_uring_enter`
//! submits both components' operations and one wait covers both.
//!
//! The two share one completion queue, so each must know the other's
//! completions: a borrower's operations carry [`LENT_MARK`] in their
//! user_data and the owner's never do. Both sides take that rule from here: a
//! borrower can queue only through a [`LentQueue`], which sets the mark, and
//! the owner asks [`is_lent`] of every completion it reaps.
#![allow(unsafe_code)]

use io_uring::{squeue, SubmissionQueue};

/// The user_data bit of a borrower's operations on a lent ring. An owner's
/// own user_data must leave it clear (slot numbers below 2^63 do).
pub const LENT_MARK: u64 = 1 << 63;

/// Whether a completion with `user_data` belongs to the ring's borrower: the
/// owner sets it aside for [`LentRing::reap`] instead of taking it for one of
/// its own operations (whose memory it would then free early).
pub fn is_lent(user_data: u64) -> bool {
    user_data & LENT_MARK != 0
}

/// A lent ring's submission queue as its borrower gets it: every entry pushed
/// through it carries [`LENT_MARK`]. Only this crate's [`crate::Ring`] pushes,
/// so the memory every entry names is owned by that ring until the entry's
/// completion comes back through [`LentRing::reap`].
pub struct LentQueue<'q, 'r> {
    queue: &'q mut SubmissionQueue<'r>,
}

impl<'q, 'r> LentQueue<'q, 'r> {
    /// The owner's view of its queue, to hand to the borrower.
    pub fn new(queue: &'q mut SubmissionQueue<'r>) -> Self {
        LentQueue { queue }
    }

    /// Queues `entry` with [`LENT_MARK`] set; false if the queue is full.
    ///
    /// # Safety
    ///
    /// As [`SubmissionQueue::push`]: the memory `entry` names stays valid
    /// until its completion is reaped.
    pub(crate) unsafe fn push(&mut self, entry: &squeue::Entry) -> bool {
        let marked = entry.clone().user_data(entry.get_user_data() | LENT_MARK);
        // SAFETY: per this function's contract; the mark makes the owner hand
        // the completion back rather than take it for its own.
        unsafe { self.queue.push(&marked) }.is_ok()
    }
}

/// A ring its owner lends a borrower on the same thread. The owner keeps the
/// completions [`is_lent`] marks for [`LentRing::reap`], whoever reaps the ring.
pub trait LentRing {
    /// Runs `queue` with the ring's submission queue, for the borrower to
    /// queue its entries (without entering the kernel).
    fn with_submission(&mut self, queue: &mut dyn FnMut(&mut LentQueue<'_, '_>));
    /// Hands what is queued to the kernel without sleeping.
    fn submit(&mut self) -> std::io::Result<()>;
    /// Submits what is queued and sleeps until a completion (the borrower's or
    /// the owner's) is posted or `timeout` passes; does not sleep while
    /// completions already collected wait to be taken.
    fn submit_and_wait(&mut self, timeout: std::time::Duration) -> std::io::Result<()>;
    /// Moves the borrower's completions, as (user_data, result), to `out`.
    fn reap(&mut self, out: &mut Vec<(u64, i32)>);
    /// True if a wait would return at once (completions posted or collected,
    /// or deferred work pending), read without a system call: a borrower
    /// polling under load spins on it.
    fn has_pending(&mut self) -> bool;
    /// How the ring was set up and what its kernel offers (a borrower refuses
    /// a ring without what it needs).
    fn params(&self) -> io_uring::Parameters;
    /// The operations the ring's kernel runs.
    fn probe(&self) -> std::io::Result<io_uring::Probe>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_numbers_are_the_owners_and_marked_ones_the_borrowers() {
        assert!(!is_lent(0) && !is_lent(u64::from(u32::MAX)));
        assert!(is_lent(LENT_MARK | 5));
    }
}
