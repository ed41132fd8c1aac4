//! Flushing: a device flush on every device of the pool, after which batches
//! applied before it are on stable media and dead segments may be reused.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::core::Core;
use crate::datapath::completion::{wait, Join, WriteDone};
use crate::error::IoError;
use crate::io::IoOp;

/// Flushes every device of the pool; `done` runs with the first error once all
/// have answered. A failed flush fences the engine, and a fenced engine does not
/// flush. The log's open batch closes first, and the flush waits for it: its
/// records were acknowledged with their header image only in the page cache.
pub(crate) fn flush_devices(core: &Arc<Core>, done: WriteDone) {
    let core2 = core.clone();
    crate::log::after_open_batch(core, Box::new(move || flush_now(&core2, done)));
}

fn flush_now(core: &Arc<Core>, done: WriteDone) {
    if core.fenced.load(Ordering::Acquire) {
        return done(Err(IoError::Fenced));
    }
    // Every batch applied now has completed its write, so the flush covers it.
    let covers_seq = core.log.lock().applied_seq;
    let devices = core.pool.devices.clone();
    let flushed_core = core.clone();
    let join = Join::new(
        devices.len(),
        Box::new(move |result| {
            if result.is_ok() {
                flushed_up_to(&flushed_core, covers_seq);
            }
            done(result);
        }),
    );
    for device in devices {
        let core2 = core.clone();
        let part = join.part();
        device.submit(
            IoOp::Flush,
            Box::new(move |outcome| {
                if let Err(err) = &outcome.result {
                    // A failed flush may have dropped data: never retry, fence.
                    core2.fenced.store(true, Ordering::Release);
                    tracing::error!(%err, "flush failed; fencing the engine");
                }
                part(outcome.result.map_err(IoError::Device));
            }),
        );
    }
}

/// Records that batches up to `seq` are on stable media, which may let dead
/// segments be reused.
fn flushed_up_to(core: &Arc<Core>, seq: u64) {
    let freed = {
        let mut log = core.log.lock();
        log.segments.durable_seq = log.segments.durable_seq.max(seq);
        let covered = log.covered_seq;
        log.segments.free_dead(covered)
    };
    if freed > 0 {
        crate::log::kick(core);
    }
}

/// [`flush_devices`], waiting for the completion (for threads that may block).
pub(crate) fn flush_wait(core: &Arc<Core>) -> Result<(), IoError> {
    wait(|done| flush_devices(core, done))
}
