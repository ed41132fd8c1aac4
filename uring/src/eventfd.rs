//! An eventfd: the counter one thread signals to wake another's ring or poll.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A nonblocking, close-on-exec eventfd. Other threads [`signal`](EventFd::signal)
/// it; its owner reads it with a ring ([`crate::Ring::read_eventfd`]), registers
/// it for a ring's completions, or [`drain`](EventFd::drain)s it.
#[derive(Debug)]
pub struct EventFd(File);

impl EventFd {
    /// An eventfd with a zero counter.
    pub fn new() -> std::io::Result<EventFd> {
        // SAFETY: eventfd has no memory-safety preconditions; the result is checked.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: raw is a freshly created descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(EventFd(File::from(fd)))
    }

    /// Adds one to the counter, waking whoever waits for it.
    pub fn signal(&self) -> std::io::Result<()> {
        match (&self.0).write(&1u64.to_ne_bytes()) {
            Ok(_) => Ok(()),
            // The counter is saturated: a read is already due to complete.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads and resets the counter without blocking: 0 if it was not signalled.
    pub fn drain(&self) -> std::io::Result<u64> {
        let mut counter = [0u8; 8];
        match (&self.0).read(&mut counter) {
            Ok(_) => Ok(u64::from_ne_bytes(counter)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Waits up to `timeout` for the counter to be signalled (without
    /// resetting it); true if it was.
    pub fn wait(&self, timeout: Duration) -> std::io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: pfd is a valid pollfd for the duration of the call.
        match unsafe { libc::poll(&mut pfd, 1, millis) } {
            n if n < 0 => Err(std::io::Error::last_os_error()),
            n => Ok(n > 0),
        }
    }
}

impl AsFd for EventFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_shows_once_and_draining_resets_it() {
        let fd = EventFd::new().expect("eventfd");
        assert!(!fd.wait(Duration::ZERO).expect("poll"), "nothing signalled");
        assert_eq!(fd.drain().expect("read"), 0);
        fd.signal().expect("signal");
        fd.signal().expect("signal");
        assert!(fd.wait(Duration::from_secs(5)).expect("poll"));
        assert_eq!(fd.drain().expect("read"), 2);
        assert!(!fd.wait(Duration::ZERO).expect("poll"), "drained");
    }
}
