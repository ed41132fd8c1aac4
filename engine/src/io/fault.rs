//! A device wrapper that fails (or holds back) operations on command, for
//! fault-injection tests.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use super::{Device, DeviceError, DeviceRef, IoDone, IoOp, IoOutcome};

/// Which operations fail. Shared with the test so it can change the plan while the
/// engine runs.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Every read fails with EIO while set.
    pub fail_reads: AtomicBool,
    /// Every write fails with EIO while set.
    pub fail_writes: AtomicBool,
    /// Every flush fails with EIO while set.
    pub fail_flushes: AtomicBool,
    /// When non-negative, counts writes down; the write that finds it at zero and
    /// every later one fail.
    pub writes_before_failure: AtomicI64,
    /// Direct writes are held back (neither performed nor completed) while
    /// set, until [`FaultPlan::release_held_writes`].
    pub hold_writes: AtomicBool,
    held: parking_lot::Mutex<HeldWrites>,
}

/// Writes held back, oldest first; each submits its write to the wrapped
/// device when run.
#[derive(Default)]
struct HeldWrites(Vec<Box<dyn FnOnce() + Send>>);

impl std::fmt::Debug for HeldWrites {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} held writes", self.0.len())
    }
}

impl FaultPlan {
    /// A plan that fails nothing.
    pub fn healthy() -> Arc<FaultPlan> {
        let plan = FaultPlan::default();
        plan.writes_before_failure.store(-1, Ordering::SeqCst);
        Arc::new(plan)
    }

    /// Writes held back so far.
    pub fn held_writes(&self) -> usize {
        self.held.lock().0.len()
    }

    /// Performs the writes held back one at a time, in the order `pick`
    /// chooses: given how many are left, it names which of them (oldest
    /// first) goes next, so a test can complete them in any order.
    pub fn release_held_writes(&self, mut pick: impl FnMut(usize) -> usize) {
        let mut held = std::mem::take(&mut self.held.lock().0);
        while !held.is_empty() {
            let at = pick(held.len()).min(held.len() - 1);
            (held.remove(at))();
        }
    }

    fn write_fails(&self) -> bool {
        if self.fail_writes.load(Ordering::SeqCst) {
            return true;
        }
        let left = self.writes_before_failure.load(Ordering::SeqCst);
        if left < 0 {
            return false;
        }
        if left == 0 {
            return true;
        }
        self.writes_before_failure.fetch_sub(1, Ordering::SeqCst);
        false
    }
}

/// Wraps a device and fails operations as its [`FaultPlan`] says.
pub struct FaultyDevice {
    inner: DeviceRef,
    plan: Arc<FaultPlan>,
}

impl FaultyDevice {
    /// Wraps `inner`, consulting `plan` on every operation.
    pub fn new(inner: DeviceRef, plan: Arc<FaultPlan>) -> FaultyDevice {
        FaultyDevice { inner, plan }
    }
}

impl Device for FaultyDevice {
    fn size_bytes(&self) -> u64 {
        self.inner.size_bytes()
    }

    fn submit(&self, op: IoOp, done: IoDone) {
        let fails = match &op {
            IoOp::Read { .. } => self.plan.fail_reads.load(Ordering::SeqCst),
            IoOp::Write { .. } | IoOp::WriteCached { .. } | IoOp::WriteParts { .. } => {
                self.plan.write_fails()
            }
            IoOp::Flush => self.plan.fail_flushes.load(Ordering::SeqCst),
        };
        let held = matches!(op, IoOp::Write { .. } | IoOp::WriteParts { .. })
            && self.plan.hold_writes.load(Ordering::SeqCst);
        if held && !fails {
            let inner = self.inner.clone();
            let write = Box::new(move || inner.submit(op, done));
            return self.plan.held.lock().0.push(write);
        }
        if !fails {
            return self.inner.submit(op, done);
        }
        done(IoOutcome {
            buf: op.into_buf(),
            result: Err(DeviceError::Os(libc::EIO)),
        })
    }

    fn preallocate(&self, offset: u64, len: u64) {
        self.inner.preallocate(offset, len);
    }
}
