//! The epoll reactor backend (through `mio`), the fallback where io_uring
//! cannot be set up: edge-triggered readiness, reads into one buffer the
//! reactor reuses for every connection, and vectored writes until the socket
//! would block.

use std::io::{IoSlice, Read, Write};
use std::net::TcpStream as StdTcpStream;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use super::reactor::{
    make_poller, Core, Counters, Doorbell, Inbox, Shared, Step, Transport, SEND_SLICES_MAX,
};
use crate::connection::Connection;

const WAKER: Token = Token(0);
/// The backend poller's eventfd (connection tokens count up from 1).
const POLLER: Token = Token(usize::MAX);
const READ_CHUNK_BYTES: usize = 64 * 1024;

/// The epoll side of one reactor.
pub(super) struct EpollTransport {
    poll: Poll,
    /// Read buffer shared by every connection of the reactor.
    buf: Vec<u8>,
    counters: Arc<Counters>,
}

/// A connection's nonblocking socket.
pub(super) struct EpollSocket {
    stream: TcpStream,
    /// Input stopped before WouldBlock because of output backpressure.
    read_paused: bool,
}

impl Transport for EpollTransport {
    type Socket = EpollSocket;

    fn register(&mut self, token: usize, stream: StdTcpStream) -> std::io::Result<EpollSocket> {
        stream.set_nonblocking(true)?;
        let mut stream = TcpStream::from_std(stream);
        self.poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        Ok(EpollSocket {
            stream,
            read_paused: false,
        })
    }

    fn send(&mut self, _token: usize, socket: &mut EpollSocket, conn: &mut Connection) -> Step {
        loop {
            let out = conn.take_output();
            if out.is_empty() {
                return Step::Idle;
            }
            let mut slices = [IoSlice::new(&[]); SEND_SLICES_MAX];
            let (mut count, mut wanted) = (0, 0);
            for (slot, chunk) in slices.iter_mut().zip(out.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
                wanted += chunk.len();
            }
            match socket.stream.write_vectored(&slices[..count]) {
                Ok(0) => return Step::Failed,
                Ok(n) => {
                    if n < wanted {
                        self.counters.short_sends.fetch_add(1, Ordering::Relaxed);
                    }
                    conn.consumed_output(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Step::Idle,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "socket write failed");
                    return Step::Failed;
                }
            }
        }
    }

    fn receive(
        &mut self,
        _token: usize,
        socket: &mut EpollSocket,
        conn: &mut Connection,
        now: Instant,
    ) -> Step {
        if socket.read_paused && conn.wants_input() {
            read(socket, conn, &mut self.buf, now, true);
            Step::Progressed
        } else {
            Step::Idle
        }
    }

    fn release(&mut self, _token: usize, mut socket: EpollSocket) {
        if let Err(e) = self.poll.registry().deregister(&mut socket.stream) {
            tracing::debug!(error = %e, "deregister failed");
        }
    }
}

/// Reads and processes input until the socket is drained (a short read, or
/// WouldBlock when `to_end`), the connection pauses input, or the stream ends.
fn read(
    socket: &mut EpollSocket,
    conn: &mut Connection,
    buf: &mut [u8],
    now: Instant,
    to_end: bool,
) {
    socket.read_paused = false;
    loop {
        if !conn.wants_input() {
            socket.read_paused = !conn.is_closed();
            return;
        }
        // The rest of a write's data PDU goes straight into its buffer;
        // anything else into the reactor's.
        let mut target = conn.inbound_target();
        let read = match target.as_mut() {
            Some(target) => socket.stream.read(target.as_mut_slice()),
            None => socket.stream.read(buf),
        };
        let n = *read.as_ref().unwrap_or(&0);
        let wanted = match target {
            Some(target) => {
                let wanted = target.len();
                conn.inbound_received(target, n, now);
                wanted
            }
            None => {
                if n > 0 {
                    conn.receive(&buf[..n], now);
                }
                buf.len()
            }
        };
        match read {
            Ok(0) => {
                conn.peer_closed();
                return;
            }
            Ok(n) if n < wanted && !to_end => {
                // The socket had no more bytes: with edge-triggered epoll,
                // any later arrival (data or hang-up) raises a new event, so
                // the read that would only return WouldBlock is skipped.
                return;
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::debug!(error = %e, "socket read failed");
                conn.peer_closed();
                return;
            }
        }
    }
}

/// Builds an epoll reactor.
pub(super) fn build(shared: Arc<Shared>) -> std::io::Result<Core<EpollTransport>> {
    let poll = Poll::new()?;
    let waker = Waker::new(poll.registry(), WAKER)?;
    let (inbox, rx) = Inbox::new(Doorbell::Epoll(waker));
    let transport = EpollTransport {
        poll,
        buf: vec![0u8; READ_CHUNK_BYTES],
        counters: shared.counters.clone(),
    };
    let poller = make_poller(&shared);
    let core = Core::new(shared, transport, inbox, rx, poller);
    if let Some(fd) = core.poller_fd() {
        core.transport.poll.registry().register(
            &mut mio::unix::SourceFd(&fd),
            POLLER,
            Interest::READABLE,
        )?;
    }
    Ok(core)
}

/// The reactor loop.
pub(super) fn run(mut core: Core<EpollTransport>) {
    let mut events = Events::with_capacity(256);
    while !core.stopping() {
        core.submit_backend();
        // Polling under load looks for readiness without sleeping; events it
        // finds are handled below instead of waiting again.
        events.clear();
        let timeout = core.prepare_to_sleep(|t| {
            t.poll.poll(&mut events, Some(Duration::ZERO)).is_ok() && !events.is_empty()
        });
        let polled = if events.is_empty() {
            core.transport.poll.poll(&mut events, Some(timeout))
        } else {
            Ok(())
        };
        core.woke();
        if let Err(e) = polled {
            if e.kind() != std::io::ErrorKind::Interrupted {
                tracing::error!(error = %e, "reactor poll failed");
                break;
            }
        }
        let mut serviced = false;
        for ev in events.iter() {
            if ev.token() == WAKER {
                continue;
            }
            if ev.token() == POLLER {
                core.poll_backend();
                continue;
            }
            let token = ev.token().0;
            if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                if let Some(s) = core.slots.get_mut(&token) {
                    // A hang-up already signalled by this event raises no later
                    // edge: read on to the end of the stream to see it.
                    let to_end = ev.is_read_closed() || ev.is_error();
                    read(
                        &mut s.socket,
                        &mut s.conn,
                        &mut core.transport.buf,
                        core.now,
                        to_end,
                    );
                }
            }
            core.service(token);
            serviced = true;
        }
        if serviced {
            core.served();
        }
        core.release_held();
        core.drain_inbox();
        core.tick_if_due();
    }
    core.close_all();
    core.drop_poller();
}
