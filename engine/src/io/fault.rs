//! A device wrapper that fails operations on command, for fault-injection tests.

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
}

impl FaultPlan {
    /// A plan that fails nothing.
    pub fn healthy() -> Arc<FaultPlan> {
        let plan = FaultPlan::default();
        plan.writes_before_failure.store(-1, Ordering::SeqCst);
        Arc::new(plan)
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
            IoOp::Write { .. } | IoOp::WriteCached { .. } => self.plan.write_fails(),
            IoOp::Flush => self.plan.fail_flushes.load(Ordering::SeqCst),
        };
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
