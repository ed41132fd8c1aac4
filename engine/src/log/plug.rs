//! Holding back batch forming while a thread starts a group of writes, as the
//! block layer's plug holds back requests: a reactor starting one round of a
//! connection's commands under a [`WritePlug`] lets all of that round's writes
//! share batches (one header and one device write for many records) instead of
//! each write forming a batch of its own the moment it is appended, which is
//! what happens whenever no batch is in flight (always, on a device that
//! completes at once).
//!
//! The records wait in the log's pending queue, where any other thread forming
//! batches may take them earlier; the plug's release forms whatever is left.
//! INVARIANT: a thread holding a plug never blocks on something that may wait
//! for a record it deferred: a reactor releases the plug before it waits, and
//! a path that may block under one (a replicated volume's gate, which a
//! control change holds while it waits for the local writes before it) calls
//! [`form_deferred`] first.

use std::cell::RefCell;
use std::marker::PhantomData;
use std::sync::Arc;

use crate::core::Core;

struct PlugState {
    /// Plugs this thread holds (they nest).
    depth: u32,
    /// Logs holding records this thread deferred, kicked when the outermost
    /// plug goes.
    held: Vec<Arc<Core>>,
}

thread_local! {
    static PLUG: RefCell<PlugState> = const {
        RefCell::new(PlugState {
            depth: 0,
            held: Vec::new(),
        })
    };
}

/// While alive, records this thread appends wait for it to be dropped (or for
/// another thread's batch forming) before they are formed into batches.
#[must_use = "a plug defers batch forming only while it is held"]
pub struct WritePlug {
    /// Bound to the thread whose appends it defers.
    _thread: PhantomData<*const ()>,
}

impl WritePlug {
    /// Starts deferring this thread's appends.
    pub fn new() -> WritePlug {
        PLUG.with(|plug| plug.borrow_mut().depth += 1);
        WritePlug {
            _thread: PhantomData,
        }
    }
}

impl Default for WritePlug {
    fn default() -> Self {
        WritePlug::new()
    }
}

impl Drop for WritePlug {
    fn drop(&mut self) {
        let held = PLUG.with(|plug| {
            let mut plug = plug.borrow_mut();
            plug.depth -= 1;
            if plug.depth == 0 {
                std::mem::take(&mut plug.held)
            } else {
                Vec::new()
            }
        });
        for core in held {
            super::kick(&core);
        }
    }
}

/// Forms the records this thread's plug has held back so far (the plug stays):
/// for a path about to block on something that may wait for those records.
pub(crate) fn form_deferred() {
    let held = PLUG.with(|plug| std::mem::take(&mut plug.borrow_mut().held));
    for core in held {
        super::kick(&core);
    }
}

/// Whether this thread holds a plug; if it does, `core`'s log is kicked when
/// the plug goes, so the caller may leave its record pending.
pub(super) fn defers(core: &Arc<Core>) -> bool {
    PLUG.with(|plug| {
        let mut plug = plug.borrow_mut();
        if plug.depth == 0 {
            return false;
        }
        if !plug.held.iter().any(|held| Arc::ptr_eq(held, core)) {
            plug.held.push(core.clone());
        }
        true
    })
}
