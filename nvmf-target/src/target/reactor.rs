//! One reactor thread: owns connections, reads and writes their sockets, starts
//! their namespace I/O, and feeds completions back.
//!
//! Hot-path rules: a backend that completes inline (on this thread, inside
//! `start`) hands its result straight back without touching the inbox; other
//! threads' completions are drained in batches and each connection is then
//! serviced once, so one `writev` carries every response ready; and senders only
//! pay for an eventfd wake-up when the reactor is (about to be) asleep.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token, Waker};

use crate::backend::NamespaceError;
use crate::connection::{Connection, ConnectionContext, IoOutput, Limits, PortKind};
use crate::subsystem::Subsystem;

/// State shared by all reactors of one target.
pub(super) struct Shared {
    pub subsystem: Arc<Subsystem>,
    pub limits: Limits,
    pub io_listeners: Arc<Vec<SocketAddr>>,
    pub advertised_addr: Option<SocketAddr>,
    pub stop: Arc<AtomicBool>,
    pub tick_interval: Duration,
    pub connections: Arc<AtomicUsize>,
    pub busy_poll: Duration,
}

/// Work delivered to a reactor from other threads.
pub(super) enum Message {
    /// A new connection to own.
    Accepted { stream: TcpStream, kind: PortKind },
    /// A namespace operation finished.
    IoDone {
        token: usize,
        tag: u16,
        result: Result<IoOutput, NamespaceError>,
    },
    /// Something changed for this connection (an asynchronous event or teardown).
    Poke { token: usize },
}

/// Sending side of a reactor's inbox: a channel plus the waker that interrupts
/// its poll. Cheap to clone (one reference count).
#[derive(Clone)]
pub(super) struct Inbox(Arc<InboxShared>);

struct InboxShared {
    tx: Sender<Message>,
    waker: Arc<Waker>,
    /// True while the reactor may block in `epoll_wait` (set before it checks
    /// the channel a last time, cleared when it wakes).
    sleeping: AtomicBool,
}

impl Inbox {
    pub fn send(&self, msg: Message) {
        // A closed channel means the reactor has stopped; the message (and any
        // buffer it carries) is simply dropped.
        if self.0.tx.send(msg).is_ok() {
            // Pairs with the fence in `Reactor::sleep`: either the reactor sees
            // this message before blocking, or this load sees it asleep.
            fence(Ordering::SeqCst);
            if self.0.sleeping.load(Ordering::Relaxed) {
                if let Err(e) = self.0.waker.wake() {
                    tracing::error!(error = %e, "cannot wake reactor");
                }
            }
        }
    }
}

/// A completion produced inline while this thread's reactor was starting I/O.
struct InlineCompletion {
    token: usize,
    tag: u16,
    result: Result<IoOutput, NamespaceError>,
}

/// Completions that backends ran inline on a reactor thread.
struct InlineCompletions {
    /// The reactor currently starting I/O on this thread (0: none).
    reactor: usize,
    done: Vec<InlineCompletion>,
}

thread_local! {
    static INLINE: RefCell<InlineCompletions> = const {
        RefCell::new(InlineCompletions { reactor: 0, done: Vec::new() })
    };
}

/// Hands an inline completion to reactor `reactor` if this thread is running
/// its `start` calls; otherwise gives the result back for the inbox.
fn complete_inline(
    reactor: usize,
    token: usize,
    tag: u16,
    result: Result<IoOutput, NamespaceError>,
) -> Option<Result<IoOutput, NamespaceError>> {
    let mut result = Some(result);
    // try_with: during thread teardown the slot is gone; use the inbox.
    let _ = INLINE.try_with(|cell| {
        let mut inline = cell.borrow_mut();
        if inline.reactor == reactor {
            if let Some(result) = result.take() {
                inline.done.push(InlineCompletion { token, tag, result });
            }
        }
    });
    result
}

/// Source of unique reactor ids (0 means "no reactor").
static NEXT_REACTOR_ID: AtomicUsize = AtomicUsize::new(1);

/// Inbox messages handled before connections are serviced (bounds the batch).
const INBOX_BATCH_MAX: usize = 1024;

const WAKER: Token = Token(0);
const READ_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_SLICES_MAX: usize = 64;

struct Socket {
    stream: TcpStream,
    conn: Connection,
    /// Input stopped before WouldBlock because of output backpressure.
    read_paused: bool,
    /// Queued for servicing after the current inbox batch.
    dirty: bool,
}

pub(super) struct Reactor {
    id: usize,
    shared: Arc<Shared>,
    poll: Poll,
    inbox: Inbox,
    rx: Receiver<Message>,
    sockets: HashMap<usize, Socket>,
    next_token: usize,
    /// Connections with completions to flush, gathered while draining the inbox.
    dirty: Vec<usize>,
    /// Inline completions taken from the thread-local queue (reused buffer).
    inline_done: Vec<InlineCompletion>,
    /// Namespace operations started and not yet completed through the inbox.
    outstanding: usize,
    /// The time this loop iteration woke up: one clock read per iteration
    /// (clock reads are syscalls on some virtual machines).
    now: Instant,
}

impl Reactor {
    pub fn new(shared: Arc<Shared>) -> std::io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // INVARIANT: the inbox is bounded in practice by queue depth times
        // connections (one message per in-flight command) plus accepts.
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(Reactor {
            id: NEXT_REACTOR_ID.fetch_add(1, Ordering::Relaxed),
            shared,
            poll,
            inbox: Inbox(Arc::new(InboxShared {
                tx,
                waker,
                sleeping: AtomicBool::new(false),
            })),
            rx,
            sockets: HashMap::new(),
            next_token: 1,
            dirty: Vec::new(),
            inline_done: Vec::new(),
            outstanding: 0,
            now: Instant::now(),
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.inbox.0.waker.clone()
    }

    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(256);
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        let mut last_tick = Instant::now();
        while !self.shared.stop.load(Ordering::Acquire) {
            let timeout = self
                .shared
                .tick_interval
                .saturating_sub(self.now.saturating_duration_since(last_tick));
            let timeout = self.prepare_to_sleep(timeout);
            let polled = self.poll.poll(&mut events, Some(timeout));
            self.inbox.0.sleeping.store(false, Ordering::Relaxed);
            self.now = Instant::now();
            if let Err(e) = polled {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "reactor poll failed");
                    break;
                }
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                let token = ev.token().0;
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    // A hang-up already signalled by this event raises no later
                    // edge: read on to the end of the stream to see it.
                    let to_end = ev.is_read_closed() || ev.is_error();
                    self.read(token, &mut buf, to_end);
                }
                self.service(token, &mut buf);
            }
            self.drain_inbox(&mut buf);
            if self.now.saturating_duration_since(last_tick) >= self.shared.tick_interval {
                last_tick = self.now;
                let tokens: Vec<usize> = self.sockets.keys().copied().collect();
                for token in tokens {
                    if let Some(s) = self.sockets.get_mut(&token) {
                        s.conn.tick(last_tick);
                    }
                    self.service(token, &mut buf);
                }
            }
        }
        let tokens: Vec<usize> = self.sockets.keys().copied().collect();
        for token in tokens {
            self.drop_socket(token);
        }
    }

    /// Returns the poll timeout: zero if messages are already waiting, else
    /// `timeout` with the sleeping flag raised so senders wake the poll. With
    /// backend I/O outstanding and busy polling configured, first spins up to
    /// `busy_poll` for a completion, sparing the wake-up of a sleeping thread.
    fn prepare_to_sleep(&self, timeout: Duration) -> Duration {
        let busy_poll = self.shared.busy_poll;
        if self.outstanding > 0 && !busy_poll.is_zero() {
            let until = Instant::now() + busy_poll;
            while self.rx.is_empty() && Instant::now() < until {
                std::hint::spin_loop();
            }
        }
        self.inbox.0.sleeping.store(true, Ordering::Relaxed);
        // Pairs with the fence in `Inbox::send`.
        fence(Ordering::SeqCst);
        if self.rx.is_empty() {
            timeout
        } else {
            Duration::ZERO
        }
    }

    /// Handles queued messages (a bounded batch), then services each connection
    /// that received completions once, so its responses leave in one write.
    fn drain_inbox(&mut self, buf: &mut [u8]) {
        let mut dirty = std::mem::take(&mut self.dirty);
        let now = self.now;
        for _ in 0..INBOX_BATCH_MAX {
            let Ok(msg) = self.rx.try_recv() else {
                break;
            };
            match msg {
                Message::Accepted { stream, kind } => self.adopt(stream, kind),
                Message::IoDone { token, tag, result } => {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    if let Some(s) = self.sockets.get_mut(&token) {
                        s.conn.complete_io(tag, result, now);
                        if !s.dirty {
                            s.dirty = true;
                            dirty.push(token);
                        }
                    }
                }
                Message::Poke { token } => {
                    if let Some(s) = self.sockets.get_mut(&token) {
                        s.conn.tick(now);
                        if !s.dirty {
                            s.dirty = true;
                            dirty.push(token);
                        }
                    }
                }
            }
        }
        for &token in &dirty {
            if let Some(s) = self.sockets.get_mut(&token) {
                s.dirty = false;
            }
            self.service(token, buf);
        }
        dirty.clear();
        self.dirty = dirty;
    }

    fn adopt(&mut self, mut stream: TcpStream, kind: PortKind) {
        let token = self.next_token;
        self.next_token += 1;
        let local_addr = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepted socket has no local address");
                self.shared.connections.fetch_sub(1, Ordering::AcqRel);
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        if let Err(e) = self.poll.registry().register(
            &mut stream,
            Token(token),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            tracing::warn!(error = %e, "cannot register socket");
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let inbox = self.inbox.clone();
        let ctx = ConnectionContext {
            subsystem: self.shared.subsystem.clone(),
            limits: self.shared.limits,
            port_kind: kind,
            local_addr,
            io_listeners: self.shared.io_listeners.clone(),
            advertised_addr: self.shared.advertised_addr,
            notifier: Arc::new(move || inbox.send(Message::Poke { token })),
        };
        self.sockets.insert(
            token,
            Socket {
                stream,
                conn: Connection::new(ctx),
                read_paused: false,
                dirty: false,
            },
        );
    }

    /// Reads and processes input until the socket is drained (a short read, or
    /// WouldBlock when `to_end`), the connection pauses input, or the stream ends.
    fn read(&mut self, token: usize, buf: &mut [u8], to_end: bool) {
        let Some(s) = self.sockets.get_mut(&token) else {
            return;
        };
        s.read_paused = false;
        loop {
            if !s.conn.wants_input() {
                s.read_paused = !s.conn.is_closed();
                return;
            }
            match s.stream.read(buf) {
                Ok(0) => {
                    s.conn.peer_closed();
                    return;
                }
                Ok(n) => {
                    s.conn.receive(&buf[..n], self.now);
                    if n < buf.len() && !to_end {
                        // The socket had no more bytes: with edge-triggered
                        // epoll, any later arrival (data or hang-up) raises a
                        // new event, so the read that would only return
                        // WouldBlock is skipped.
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "socket read failed");
                    s.conn.peer_closed();
                    return;
                }
            }
        }
    }

    /// Starts pending I/O, writes pending output, resumes paused input, and
    /// drops the socket once the connection is closed and flushed.
    fn service(&mut self, token: usize, buf: &mut [u8]) {
        for _ in 0..64 {
            let Some(s) = self.sockets.get_mut(&token) else {
                return;
            };
            if s.conn.has_io_requests() {
                let requests = s.conn.take_io_requests();
                self.outstanding += requests.len();
                let id = self.id;
                INLINE.with(|cell| cell.borrow_mut().reactor = id);
                for req in requests {
                    let inbox = self.inbox.clone();
                    req.start(move |tag, result| {
                        if let Some(result) = complete_inline(id, token, tag, result) {
                            inbox.send(Message::IoDone { token, tag, result });
                        }
                    });
                }
                INLINE.with(|cell| {
                    let mut inline = cell.borrow_mut();
                    inline.reactor = 0;
                    std::mem::swap(&mut inline.done, &mut self.inline_done);
                });
                let now = self.now;
                for done in self.inline_done.drain(..) {
                    self.outstanding = self.outstanding.saturating_sub(1);
                    if done.token == token {
                        s.conn.complete_io(done.tag, done.result, now);
                    } else {
                        // A backend finished another connection's earlier request
                        // inside this start call: deliver it the ordinary way.
                        self.outstanding += 1;
                        self.inbox.send(Message::IoDone {
                            token: done.token,
                            tag: done.tag,
                            result: done.result,
                        });
                    }
                }
            }
            let write_failed = Self::write(s);
            if write_failed {
                s.conn.peer_closed();
                self.drop_socket(token);
                return;
            }
            if s.conn.is_closed() && !s.conn.has_output() {
                self.drop_socket(token);
                return;
            }
            if s.read_paused && s.conn.wants_input() {
                self.read(token, buf, true);
                continue;
            }
            if s.conn.has_io_requests() {
                continue;
            }
            return;
        }
    }

    /// Writes as much output as the socket takes; true if the socket failed.
    fn write(s: &mut Socket) -> bool {
        loop {
            let out = s.conn.take_output();
            if out.is_empty() {
                return false;
            }
            let mut slices = [IoSlice::new(&[]); WRITE_SLICES_MAX];
            let mut count = 0;
            for (slot, chunk) in slices.iter_mut().zip(out.iter()) {
                *slot = IoSlice::new(chunk);
                count += 1;
            }
            match s.stream.write_vectored(&slices[..count]) {
                Ok(0) => return true,
                Ok(n) => s.conn.consumed_output(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::debug!(error = %e, "socket write failed");
                    return true;
                }
            }
        }
    }

    fn drop_socket(&mut self, token: usize) {
        if let Some(mut s) = self.sockets.remove(&token) {
            s.conn.peer_closed();
            if let Err(e) = self.poll.registry().deregister(&mut s.stream) {
                tracing::debug!(error = %e, "deregister failed");
            }
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }
}
