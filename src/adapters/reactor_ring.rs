//! The engine's per-thread I/O ring as a reactor's backend poller: volume I/O a
//! reactor starts is submitted to the kernel from the reactor thread and
//! completes there, with no wake-up of the engine's ring thread or of the
//! reactor (DESIGN.md's thread model: one ring per reactor for sockets and
//! device I/O alike).

use std::os::fd::{AsRawFd, RawFd};

use engine::io::LocalRing;
use nvmf_target::{ReactorPoller, ReactorPollerFactory};

/// One reactor thread's engine ring.
struct EngineRingPoller(LocalRing);

impl ReactorPoller for EngineRingPoller {
    fn event_fd(&self) -> RawFd {
        self.0.event_fd().as_raw_fd()
    }

    fn poll(&mut self) {
        self.0.poll();
    }

    fn submit(&mut self) {
        self.0.submit();
    }
}

/// Gives every reactor thread an engine ring; a thread that cannot get one
/// (the kernel refuses another io_uring) keeps using the device ring threads.
pub fn engine_ring_pollers() -> ReactorPollerFactory {
    std::sync::Arc::new(|| match LocalRing::attach() {
        Ok(ring) => Some(Box::new(EngineRingPoller(ring)) as Box<dyn ReactorPoller>),
        Err(err) => {
            tracing::warn!(%err, "reactor without its own engine ring: volume I/O goes through the device ring threads");
            None
        }
    })
}
