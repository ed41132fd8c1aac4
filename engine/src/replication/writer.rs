//! Ordered output on one replication stream, written from the caller's
//! thread whenever the socket takes the bytes at once.
//!
//! A change used to cross a thread hand-off on each side of every link: the
//! primary queued each frame to a sender thread, and the replica queued each
//! acknowledgement to an ack-writer thread. Each hand-off is a wake-up, tens
//! of microseconds on a busy machine. [`StreamWriter::send`] instead tries a
//! non-blocking send right away; only what the socket does not take (a full
//! send buffer, a slow peer) goes to the writer thread ([`StreamWriter::run`]).
//!
//! **Invariant:** bytes reach the socket in `send` order: the caller writes
//! directly only when nothing is queued and the writer thread is not
//! writing, and it does so under the lock that orders the queue.

use std::collections::VecDeque;
use std::io::Write;
use std::net::{Shutdown, TcpStream};

use bytes::{Bytes, BytesMut};
use parking_lot::{Condvar, Mutex};

/// Most bytes the writer thread gathers into one write.
const BATCH_BYTES_MAX: usize = 1 << 20;

/// The ordered output side of one stream.
pub struct StreamWriter {
    socket: TcpStream,
    state: Mutex<State>,
    wake: Condvar,
}

#[derive(Default)]
struct State {
    queued: VecDeque<Bytes>,
    /// The writer thread holds bytes taken from the queue and not yet written.
    writing: bool,
    closed: bool,
    failed: bool,
}

/// The stream failed or was closed: nothing more is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamClosed;

impl StreamWriter {
    /// Output on `socket` (a blocking socket; sends from callers use
    /// `MSG_DONTWAIT` per call, so the socket's own mode does not change).
    pub fn new(socket: TcpStream) -> StreamWriter {
        StreamWriter {
            socket,
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        }
    }

    /// Sends `bytes` after everything sent before; never blocks on the
    /// network.
    pub fn send(&self, bytes: Bytes) -> Result<(), StreamClosed> {
        let mut state = self.state.lock();
        if state.failed || state.closed {
            return Err(StreamClosed);
        }
        if state.writing || !state.queued.is_empty() {
            state.queued.push_back(bytes);
            self.wake.notify_one();
            return Ok(());
        }
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        match socket2::SockRef::from(&self.socket).send_with_flags(&bytes, flags) {
            Ok(sent) if sent == bytes.len() => Ok(()),
            Ok(sent) => {
                state.queued.push_back(bytes.slice(sent..));
                self.wake.notify_one();
                Ok(())
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                state.queued.push_back(bytes);
                self.wake.notify_one();
                Ok(())
            }
            Err(_) => {
                state.failed = true;
                self.wake.notify_one();
                Err(StreamClosed)
            }
        }
    }

    /// Stops the stream: the writer thread returns once what is queued is
    /// written (or at once if the socket is gone).
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.wake.notify_one();
    }

    /// The writer thread: writes what callers could not, in order, until the
    /// stream is closed (`Ok`) or a write fails (`Err`; the socket is shut
    /// down so the peer and the reader see the end).
    pub fn run(&self) -> Result<(), StreamClosed> {
        let mut batch = BytesMut::new();
        loop {
            {
                let mut state = self.state.lock();
                while state.queued.is_empty() && !state.closed && !state.failed {
                    self.wake.wait(&mut state);
                }
                if state.failed || state.queued.is_empty() {
                    return if state.failed {
                        Err(StreamClosed)
                    } else {
                        Ok(())
                    };
                }
                while batch.len() < BATCH_BYTES_MAX {
                    match state.queued.pop_front() {
                        Some(bytes) => batch.extend_from_slice(&bytes),
                        None => break,
                    }
                }
                state.writing = true;
            }
            let written = (&self.socket).write_all(&batch);
            batch.clear();
            let mut state = self.state.lock();
            state.writing = false;
            if written.is_err() {
                state.failed = true;
                drop(state);
                let _ = self.socket.shutdown(Shutdown::Both);
                return Err(StreamClosed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::sync::Arc;

    #[test]
    fn bytes_arrive_in_send_order_whether_written_directly_or_queued() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (mut server, _) = listener.accept().expect("accept");
        let writer = Arc::new(StreamWriter::new(client));
        let thread = {
            let writer = writer.clone();
            std::thread::spawn(move || writer.run())
        };
        // Far more than a socket buffer holds while nobody reads: most of it
        // is queued, and the order must hold across both paths.
        let mut expected = Vec::new();
        for i in 0..2_000u32 {
            let chunk: Vec<u8> = (0..4096u32)
                .map(|j| (i.wrapping_mul(31) ^ j) as u8)
                .collect();
            expected.extend_from_slice(&chunk);
            writer.send(Bytes::from(chunk)).expect("send");
        }
        let reader = std::thread::spawn(move || {
            let mut got = vec![0u8; expected.len()];
            server.read_exact(&mut got).expect("read everything");
            assert!(got == expected, "bytes arrived out of order");
        });
        reader.join().expect("reader");
        writer.close();
        assert_eq!(thread.join().expect("writer thread"), Ok(()));
        assert_eq!(writer.send(Bytes::from_static(b"late")), Err(StreamClosed));
    }
}
