//! The io_uring reactor backend: each connection has one receive and at most
//! one send in flight on the reactor's ring, the inbox doorbell is an eventfd
//! read on the same ring, and the tick is the timeout of the wait, so one
//! `io_uring_enter` per loop iteration submits every receive and send queued
//! and sleeps until the next event.
//!
//! The ring is the backend poller's where it lends one (a storage engine's
//! per-thread ring, see `ReactorPoller::lend_ring`): the backend's I/O then
//! goes to the kernel with the same entry and completes into the same wait,
//! and the poller runs after every wait. Otherwise the reactor has a ring of
//! its own and reads the poller's eventfd on it.
//!
//! Buffers: a connection's receive buffer and send batch belong to the ring
//! while an operation uses them (see `uring`), and come back with the
//! completion. Sends go straight from the connection's output chunks (no copy
//! into a staging buffer); a short send is followed by one for the rest.
//! Closing a connection shuts its socket down and cancels what it has in
//! flight; the completions then free the buffers.

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use super::reactor::{
    make_poller, Core, Counters, Doorbell, Inbox, Message, Shared, Step, Transport, SEND_SLICES_MAX,
};
use crate::connection::{Connection, InboundTarget};
use uring::{Completion, EventFd, Held, OpId, Ring, SendBatch};

/// Receive buffer of a new connection.
const RECV_CHUNK_BYTES: usize = 64 * 1024;
/// Largest receive buffer: a connection whose receives fill its buffer (bulk
/// writes) gets a bigger one, up to this.
const RECV_CHUNK_MAX_BYTES: usize = 256 * 1024;
/// How long a stopping reactor waits for its cancelled operations.
const CLOSE_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Tag kinds (the low two bits of an operation's tag; the rest is the token).
const KIND_RECV: u64 = 0;
const KIND_SEND: u64 = 1;
const KIND_CANCEL: u64 = 2;
/// Tag of the eventfd read (token 0 is never a connection's).
const WAKE_TAG: u64 = 3;
/// Tags of the backend poller's eventfd read and of its cancellation (kind 3
/// is never a connection's).
const POLLER_TAG: u64 = (1 << 2) | 3;
const POLLER_CANCEL_TAG: u64 = (2 << 2) | 3;

fn tag(token: usize, kind: u64) -> u64 {
    ((token as u64) << 2) | kind
}

/// The io_uring side of one reactor.
pub(super) struct UringTransport {
    ring: Ring,
    eventfd: Arc<EventFd>,
    wake_armed: bool,
    /// The read of the backend poller's eventfd, while armed.
    poller_armed: Option<OpId>,
    counters: Arc<Counters>,
    /// Sockets of closed connections that could not be submitted for before
    /// closing (see `release`): kept open until the reactor stops.
    unsubmitted_sockets: Vec<TcpStream>,
}

/// A connection's socket and the buffers it lends the ring.
pub(super) struct UringSocket {
    stream: TcpStream,
    /// The receive buffer; `None` while a receive has it.
    recv_buf: Option<Vec<u8>>,
    recv_op: Option<OpId>,
    /// The last receive left the socket empty (it did not fill the buffer).
    drained: bool,
    /// The send batch; `None` while a send has it.
    batch: Option<SendBatch>,
    send_op: Option<OpId>,
}

impl UringTransport {
    fn count_submitted(&self) {
        self.counters
            .ring_ops_in_flight
            .fetch_add(1, Ordering::Relaxed);
    }

    fn count_reaped(&self) {
        self.counters
            .ring_ops_in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }

    fn arm_poller(&mut self, fd: Option<std::os::fd::RawFd>) -> std::io::Result<()> {
        if let (Some(fd), None) = (fd, self.poller_armed) {
            self.poller_armed = Some(self.ring.read_counter(POLLER_TAG, fd)?);
        }
        Ok(())
    }

    fn arm_wake(&mut self) -> std::io::Result<()> {
        if !self.wake_armed {
            self.ring.read_eventfd(WAKE_TAG, &self.eventfd)?;
            self.wake_armed = true;
        }
        Ok(())
    }
}

impl Transport for UringTransport {
    type Socket = UringSocket;

    fn register(&mut self, _token: usize, stream: TcpStream) -> std::io::Result<UringSocket> {
        // A blocking socket lets the ring wait for readiness itself instead of
        // completing an operation with EAGAIN.
        stream.set_nonblocking(false)?;
        Ok(UringSocket {
            stream,
            recv_buf: Some(vec![0; RECV_CHUNK_BYTES]),
            recv_op: None,
            drained: false,
            batch: Some(SendBatch::new()),
            send_op: None,
        })
    }

    fn send(&mut self, token: usize, socket: &mut UringSocket, conn: &mut Connection) -> Step {
        if socket.send_op.is_some() {
            return Step::Idle;
        }
        let Some(mut batch) = socket.batch.take() else {
            return Step::Idle;
        };
        batch.clear();
        // The chunks stay queued in the connection until the completion says
        // how many bytes left (`consumed_output`); the batch holds references.
        for chunk in conn.take_output().iter().take(SEND_SLICES_MAX) {
            batch.push(chunk.clone());
        }
        if batch.is_empty() {
            socket.batch = Some(batch);
            return Step::Idle;
        }
        match self.ring.send(tag(token, KIND_SEND), &socket.stream, batch) {
            Ok(op) => {
                socket.send_op = Some(op);
                self.count_submitted();
                Step::Idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot queue a send");
                Step::Failed
            }
        }
    }

    fn receive(
        &mut self,
        token: usize,
        socket: &mut UringSocket,
        conn: &mut Connection,
        _now: Instant,
    ) -> Step {
        if socket.recv_op.is_some() || !conn.wants_input() {
            return Step::Idle;
        }
        let queued = if let Some(target) = conn.inbound_target() {
            // The rest of a write's data PDU: straight into its buffer.
            let (buf, at, len) = target.into_parts();
            self.ring.recv_into(
                tag(token, KIND_RECV),
                &socket.stream,
                buf,
                (at, len),
                socket.drained,
            )
        } else {
            let Some(buf) = socket.recv_buf.take() else {
                return Step::Idle;
            };
            self.ring
                .recv(tag(token, KIND_RECV), &socket.stream, buf, socket.drained)
        };
        match queued {
            Ok(op) => {
                socket.recv_op = Some(op);
                self.count_submitted();
                Step::Idle
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot queue a receive");
                Step::Failed
            }
        }
    }

    fn release(&mut self, token: usize, socket: UringSocket) {
        let in_flight = [socket.recv_op, socket.send_op];
        let has_ops = in_flight.iter().any(Option::is_some);
        if has_ops {
            // Completes a pending receive (end of stream) and send (EPIPE) even
            // where cancellation cannot reach an operation already running.
            if let Err(e) = socket.stream.shutdown(Shutdown::Both) {
                tracing::debug!(error = %e, "shutdown of a closing socket failed");
            }
        }
        for op in in_flight.into_iter().flatten() {
            match self.ring.cancel(tag(token, KIND_CANCEL), op) {
                Ok(_) => self.count_submitted(),
                Err(e) => tracing::debug!(error = %e, "cannot queue a cancellation"),
            }
        }
        // INVARIANT: the descriptor is closed only after the kernel has taken
        // every operation that names it. An operation still in the submission
        // queue names the socket by number; once closed, that number can be
        // given to a connection accepted meanwhile on another thread (this
        // target's acceptor, or another target's), and a receive submitted
        // later would take that connection's bytes. Submitting first makes
        // each queued operation hold its own reference to this socket.
        if has_ops {
            if let Err(e) = self.ring.submit_and_wait(false, Duration::ZERO) {
                tracing::warn!(error = %e, "cannot submit before closing a socket; keeping it open until the reactor stops");
                self.unsubmitted_sockets.push(socket.stream);
                return;
            }
        }
        // The socket's buffers in flight stay with the ring until their
        // completions; closing the descriptor now is safe (the kernel holds
        // its own reference to the socket while operations use it).
        drop(socket);
    }
}

/// Builds an io_uring reactor on the calling thread (a ring is used by the
/// thread that created it).
pub(super) fn build(shared: Arc<Shared>) -> std::io::Result<Core<UringTransport>> {
    let mut poller = make_poller(&shared);
    let lent = poller.as_mut().and_then(|p| p.lend_ring());
    let ring = match lent.map(Ring::lent) {
        Some(Ok(ring)) => {
            shared.counters.shared_rings.fetch_add(1, Ordering::Relaxed);
            ring
        }
        Some(Err(e)) => {
            tracing::warn!(error = %e, "cannot share the backend's ring; the reactor makes its own");
            Ring::new()?
        }
        None => Ring::new()?,
    };
    let eventfd = Arc::new(EventFd::new()?);
    let (inbox, rx): (Inbox, Receiver<Message>) = Inbox::new(Doorbell::Uring(eventfd.clone()));
    let transport = UringTransport {
        ring,
        eventfd,
        wake_armed: false,
        poller_armed: None,
        counters: shared.counters.clone(),
        unsubmitted_sockets: Vec::new(),
    };
    Ok(Core::new(shared, transport, inbox, rx, poller))
}

/// The reactor loop.
pub(super) fn run(mut core: Core<UringTransport>) {
    let mut completions = Vec::with_capacity(256);
    while !core.stopping() {
        if let Err(e) = core.transport.arm_wake() {
            tracing::error!(error = %e, "cannot arm the reactor's wake-up read");
            break;
        }
        let lent = core.transport.ring.is_lent();
        if !lent {
            let poller_fd = core.poller_fd();
            if let Err(e) = core.transport.arm_poller(poller_fd) {
                tracing::error!(error = %e, "cannot arm the backend poller's eventfd read");
                break;
            }
            core.submit_backend();
        }
        if core.polling() {
            // What the round queued (responses, receives, backend I/O) goes
            // to the kernel before the reactor spins waiting for its results.
            if let Err(e) = core.transport.ring.submit_and_wait(false, Duration::ZERO) {
                tracing::error!(error = %e, "io_uring submit failed");
                break;
            }
        }
        let timeout = core.prepare_to_sleep(|t| t.ring.has_pending());
        let waited = core
            .transport
            .ring
            .submit_and_wait(!timeout.is_zero(), timeout);
        core.woke();
        if let Err(e) = waited {
            tracing::error!(error = %e, "io_uring wait failed");
            break;
        }
        if lent {
            core.poll_backend();
        }
        core.transport.ring.reap(&mut completions);
        for c in completions.drain(..) {
            complete(&mut core, c);
        }
        core.release_held();
        core.drain_inbox();
        core.tick_if_due();
    }
    core.close_all();
    if let Some(poll) = core.transport.poller_armed {
        if let Err(e) = core.transport.ring.cancel(POLLER_CANCEL_TAG, poll) {
            tracing::debug!(error = %e, "cannot cancel the backend poller's eventfd read");
        }
    }
    // Waits for the cancelled operations so their buffers are freed here; the
    // ring's own drop cancels the wake-up read.
    let deadline = Instant::now() + CLOSE_DRAIN_TIMEOUT;
    while core.transport.ring.in_flight() > usize::from(core.transport.wake_armed) {
        let now = Instant::now();
        if now >= deadline {
            tracing::error!("socket operations still in flight after closing every connection");
            break;
        }
        if let Err(e) = core.transport.ring.submit_and_wait(true, deadline - now) {
            tracing::error!(error = %e, "io_uring wait failed while closing");
            break;
        }
        if core.transport.ring.is_lent() {
            core.poll_backend();
        }
        core.transport.ring.reap(&mut completions);
        for c in completions.drain(..) {
            complete(&mut core, c);
        }
    }
    // Last: the poller finishes its backend I/O, whose completions find their
    // connections gone.
    core.drop_poller();
}

/// Acts on one reaped operation.
fn complete(core: &mut Core<UringTransport>, c: Completion) {
    if c.tag == WAKE_TAG {
        core.transport.wake_armed = false;
        return;
    }
    if c.tag == POLLER_TAG {
        core.transport.poller_armed = None;
        if c.result < 0 && c.result != -libc::ECANCELED {
            // The read is re-armed next round; polling anyway keeps completions
            // flowing whatever the eventfd did.
            tracing::warn!(
                errno = -c.result,
                "reading the backend poller's eventfd failed"
            );
        }
        core.poll_backend();
        return;
    }
    if c.tag == POLLER_CANCEL_TAG {
        return;
    }
    core.transport.count_reaped();
    let token = (c.tag >> 2) as usize;
    match (c.tag & 3, c.held) {
        (KIND_RECV, Held::Received(mut buf)) => {
            let Some(s) = core.slots.get_mut(&token) else {
                return; // Closed meanwhile: the buffer is freed here.
            };
            s.socket.recv_op = None;
            s.socket.drained = true;
            match c.result {
                n if n > 0 => {
                    let n = (n as usize).min(buf.len());
                    s.conn.receive(&buf[..n], core.now);
                    if n == buf.len() {
                        s.socket.drained = false;
                        if buf.len() < RECV_CHUNK_MAX_BYTES {
                            buf = vec![0; (buf.len() * 2).min(RECV_CHUNK_MAX_BYTES)];
                        }
                    }
                }
                0 => s.conn.peer_closed(),
                e if is_retryable(-e) => {}
                e => {
                    tracing::debug!(errno = -e, "socket receive failed");
                    s.conn.peer_closed();
                }
            }
            s.socket.recv_buf = Some(buf);
            core.mark_dirty(token);
        }
        (KIND_RECV, Held::ReceivedInto { buf, at, len }) => {
            let Some(s) = core.slots.get_mut(&token) else {
                return; // Closed meanwhile: the buffer is freed here.
            };
            s.socket.recv_op = None;
            let target = InboundTarget::from_parts(buf, at, len);
            match c.result {
                n if n > 0 => {
                    let n = (n as usize).min(len);
                    s.socket.drained = n < len;
                    s.conn.inbound_received(target, n, core.now);
                }
                0 => {
                    s.conn.inbound_received(target, 0, core.now);
                    s.conn.peer_closed();
                }
                e if is_retryable(-e) => {
                    s.socket.drained = true;
                    s.conn.inbound_received(target, 0, core.now);
                }
                e => {
                    tracing::debug!(errno = -e, "socket receive failed");
                    s.conn.inbound_received(target, 0, core.now);
                    s.conn.peer_closed();
                }
            }
            core.mark_dirty(token);
        }
        (KIND_SEND, Held::Sent(mut batch)) => {
            let Some(s) = core.slots.get_mut(&token) else {
                return;
            };
            s.socket.send_op = None;
            let wanted = batch.len_bytes();
            batch.clear();
            s.socket.batch = Some(batch);
            match c.result {
                n if n > 0 => {
                    let n = n as usize;
                    if n < wanted {
                        core.shared
                            .counters
                            .short_sends
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    s.conn.consumed_output(n);
                    core.mark_dirty(token);
                }
                e if e < 0 && is_retryable(-e) => core.mark_dirty(token),
                e => {
                    tracing::debug!(errno = -e, "socket send failed");
                    core.close(token);
                }
            }
        }
        (KIND_CANCEL, _) => {}
        (kind, _) => tracing::error!(kind, "completion of an unexpected kind"),
    }
}

fn is_retryable(errno: i32) -> bool {
    errno == libc::EINTR || errno == libc::EAGAIN
}
