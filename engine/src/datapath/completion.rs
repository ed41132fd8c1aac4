//! How data-path operations complete: the completion types of the public API,
//! a join that runs one completion after several parts, and a blocking wait for
//! threads that may block.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use crate::error::IoError;
use crate::io::DeviceError;

/// Completion of a write, trim or flush.
pub type WriteDone = Box<dyn FnOnce(Result<(), IoError>) + Send>;
/// Completion of a read.
pub type ReadDone = Box<dyn FnOnce(Result<Bytes, IoError>) + Send>;

/// Runs one completion after `parts` partial completions, with the first error.
pub(crate) struct Join {
    state: Arc<Mutex<JoinState>>,
}

/// Parts still running, the first error, and the completion to run.
type JoinState = (usize, Option<IoError>, Option<WriteDone>);

impl Join {
    /// `parts` completions that together run `done` once; a single part is
    /// `done` itself, so the common one-record write pays for no join.
    pub(crate) fn split(done: WriteDone, parts: usize) -> Vec<WriteDone> {
        if parts == 1 {
            return vec![done];
        }
        let join = Join::new(parts, done);
        (0..parts).map(|_| join.part()).collect()
    }

    /// A join of `parts` completions that runs `done` once, after the last.
    pub(crate) fn new(parts: usize, done: WriteDone) -> Join {
        Join {
            state: Arc::new(Mutex::new((parts, None, Some(done)))),
        }
    }

    /// The completion of one part; exactly `parts` of them must be taken and run.
    pub(crate) fn part(&self) -> WriteDone {
        let state = self.state.clone();
        Box::new(move |result| {
            let mut guard = state.lock();
            if let Err(err) = result {
                guard.1.get_or_insert(err);
            }
            guard.0 -= 1;
            if guard.0 == 0 {
                let outcome = guard.1.take().map_or(Ok(()), Err);
                let done = guard.2.take();
                drop(guard);
                if let Some(done) = done {
                    done(outcome);
                }
            }
        })
    }
}

/// Runs a completion-based operation and waits for its completion (for engine
/// threads that may block: the collector, tools, tests).
pub(crate) fn wait<T: Send + 'static>(
    start: impl FnOnce(Box<dyn FnOnce(Result<T, IoError>) + Send>),
) -> Result<T, IoError> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    start(Box::new(move |result| {
        let _ = tx.send(result);
    }));
    crate::io::recv_driving_local(&rx).unwrap_or(Err(IoError::Device(DeviceError::Closed)))
}
