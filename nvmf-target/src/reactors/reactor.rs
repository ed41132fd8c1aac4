//! The part of a reactor both backends share: it owns the connections, starts
//! their namespace I/O, feeds completions back and decides when a connection is
//! serviced or closed. How bytes reach and leave the sockets is the backend's
//! job ([`Transport`]): `epoll` reads and writes when the socket is ready,
//! `uring` hands receive and send buffers to the kernel and is told when they
//! are done.
//!
//! Hot-path rules: a backend that completes inline (on this thread, inside
//! `start`) hands its result straight back without touching the inbox; other
//! threads' completions are drained in batches and each connection is then
//! serviced once, so one send carries every response ready; and senders only
//! pay for a wake-up when the reactor is (about to be) asleep.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::admission::{Admission, ConnId};
use crate::backend::{NamespaceError, ReactorPoller, ReactorPollerFactory};
use crate::connection::{Connection, ConnectionContext, IoOutput, IoRequest, Limits, PortKind};
use crate::subsystem::Subsystem;
use crate::throttle::{Admit, IoClass, Throttle};
use uring::EventFd;

/// State shared by all reactors of one target.
pub(super) struct Shared {
    pub subsystem: Arc<Subsystem>,
    pub limits: Limits,
    pub io_listeners: Arc<Vec<SocketAddr>>,
    pub advertised_addr: Option<SocketAddr>,
    pub stop: Arc<AtomicBool>,
    pub tick_interval: Duration,
    /// Connections open (accepted and not yet closed by their reactor).
    pub connections: Arc<AtomicUsize>,
    pub busy_poll: Duration,
    pub counters: Arc<Counters>,
    /// Makes each reactor's backend poller (see [`ReactorPoller`]).
    pub reactor_poller: Option<ReactorPollerFactory>,
    /// The open connections the acceptor admitted; a reactor reports each
    /// finished handshake and each close.
    pub admission: Arc<Admission>,
    /// How long a connection may take to finish its handshake.
    pub handshake_timeout: Duration,
    /// Keep-alive timeout of a discovery controller connected with KATO 0.
    pub discovery_keep_alive: Duration,
}

/// What the reactors count for diagnostics and for the tests that prove a
/// closed connection leaves nothing behind.
#[derive(Debug, Default)]
pub(super) struct Counters {
    /// Socket operations (receives, sends, cancellations) handed to io_uring
    /// whose completion has not been reaped yet; the wake-up read is not counted.
    pub ring_ops_in_flight: AtomicUsize,
    /// Sends the kernel took only part of (the rest is sent in a later round).
    pub short_sends: AtomicUsize,
    /// Times the reactors came back from waiting in the kernel, published at
    /// each tick (so reactors do not share a cache line on every wake-up).
    pub wakeups: AtomicUsize,
    /// io_uring reactors running on their backend poller's ring.
    pub shared_rings: AtomicUsize,
    /// Reactors inside their busy-polling window.
    pub polling: AtomicUsize,
    /// Times polling found work without sleeping, published at each tick.
    pub polled: AtomicUsize,
    /// Ticks run by all reactors.
    pub ticks: AtomicUsize,
    /// Connections the acceptor closed on accept.
    pub connections_refused: AtomicUsize,
    /// Connections closed in their handshake to make room for new ones.
    pub connections_evicted: AtomicUsize,
    /// Connections closed for not finishing their handshake in time.
    pub handshake_timeouts: AtomicUsize,
}

/// Work delivered to a reactor from other threads.
pub(super) enum Message {
    /// A new connection to own, under the token (its admission id) given.
    Accepted {
        stream: TcpStream,
        kind: PortKind,
        token: ConnId,
    },
    /// Close this connection: the acceptor evicted it to make room.
    Evict { token: ConnId },
    /// A namespace operation finished.
    IoDone {
        token: usize,
        tag: u16,
        result: Result<IoOutput, NamespaceError>,
    },
    /// Something changed for this connection (an asynchronous event or teardown).
    Poke { token: usize },
}

/// How other threads interrupt a sleeping reactor.
pub(super) enum Doorbell {
    /// An `epoll` reactor: the mio waker registered with its poll.
    Epoll(mio::Waker),
    /// An io_uring reactor: an eventfd its ring always has a read armed on.
    Uring(Arc<EventFd>),
}

impl Doorbell {
    fn ring(&self) -> std::io::Result<()> {
        match self {
            Doorbell::Epoll(waker) => waker.wake(),
            Doorbell::Uring(eventfd) => eventfd.signal(),
        }
    }
}

/// Sending side of a reactor's inbox: a channel plus the doorbell that
/// interrupts its wait. Cheap to clone (one reference count).
#[derive(Clone)]
pub(super) struct Inbox(Arc<InboxShared>);

struct InboxShared {
    tx: Sender<Message>,
    doorbell: Doorbell,
    /// True while the reactor may block in the kernel (set before it checks the
    /// channel a last time, cleared when it wakes).
    sleeping: AtomicBool,
}

impl Inbox {
    /// A new inbox and the receiving end its reactor drains.
    pub fn new(doorbell: Doorbell) -> (Inbox, Receiver<Message>) {
        // INVARIANT: the inbox is bounded in practice by queue depth times
        // connections (one message per in-flight command) plus accepts.
        let (tx, rx) = crossbeam_channel::unbounded();
        let inbox = Inbox(Arc::new(InboxShared {
            tx,
            doorbell,
            sleeping: AtomicBool::new(false),
        }));
        (inbox, rx)
    }

    /// Queues `msg`, ringing the doorbell only if the reactor may be asleep.
    pub fn send(&self, msg: Message) {
        // A closed channel means the reactor has stopped; the message (and any
        // buffer it carries) is simply dropped.
        if self.0.tx.send(msg).is_ok() {
            // Pairs with the fence in `Core::prepare_to_sleep`: either the
            // reactor sees this message before blocking, or this load sees it
            // asleep.
            fence(Ordering::SeqCst);
            if self.0.sleeping.load(Ordering::Relaxed) {
                self.wake();
            }
        }
    }

    /// Rings the doorbell unconditionally (shutdown).
    pub fn wake(&self) {
        if let Err(e) = self.0.doorbell.ring() {
            tracing::error!(error = %e, "cannot wake reactor");
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

/// Runs `f` with this thread's inline completions addressed to reactor `id`,
/// then moves the completions `f` produced into `done` (which must be empty).
fn collecting_inline(id: usize, done: &mut Vec<InlineCompletion>, f: impl FnOnce()) {
    INLINE.with(|cell| cell.borrow_mut().reactor = id);
    f();
    INLINE.with(|cell| {
        let mut inline = cell.borrow_mut();
        inline.reactor = 0;
        std::mem::swap(&mut inline.done, done);
    });
}

/// Source of unique reactor ids (0 means "no reactor").
static NEXT_REACTOR_ID: AtomicUsize = AtomicUsize::new(1);

/// Inbox messages handled before connections are serviced (bounds the batch).
const INBOX_BATCH_MAX: usize = 1024;

/// Longest a reactor waits before asking a held command's rate limits again,
/// however far off its turn: new limits (a limit lifted) reach held commands
/// within this.
const HELD_RECHECK_MAX: Duration = Duration::from_millis(20);

/// Service passes over one connection before yielding to the others.
const SERVICE_PASSES_MAX: usize = 64;

/// Most output chunks handed to the socket in one send.
pub(super) const SEND_SLICES_MAX: usize = 64;

/// What a backend did when asked to move a connection's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Nothing more to do until the socket or the kernel reports back.
    Idle,
    /// Input was consumed: the connection may have new work.
    Progressed,
    /// The socket failed: close the connection.
    Failed,
}

/// How one backend moves bytes between sockets and connections.
pub(super) trait Transport {
    /// Per-connection socket state.
    type Socket;

    /// Takes an accepted socket under this backend's control.
    fn register(&mut self, token: usize, stream: TcpStream) -> std::io::Result<Self::Socket>;

    /// Hands output the connection has ready to the socket (at most one send
    /// per connection per round for backends that complete asynchronously).
    fn send(&mut self, token: usize, socket: &mut Self::Socket, conn: &mut Connection) -> Step;

    /// Resumes input if the connection wants it and none is under way.
    fn receive(
        &mut self,
        token: usize,
        socket: &mut Self::Socket,
        conn: &mut Connection,
        now: Instant,
    ) -> Step;

    /// Lets go of a closed connection's socket. Buffers the kernel may still
    /// use stay with the backend until their operations complete.
    fn release(&mut self, token: usize, socket: Self::Socket);
}

/// One connection owned by a reactor.
pub(super) struct Slot<S> {
    pub conn: Connection,
    pub socket: S,
    /// Queued for servicing after the current batch.
    dirty: bool,
    /// The admission table knows the handshake is done.
    handshake_reported: bool,
}

/// A reactor's connections and the logic servicing them, over backend `T`.
pub(super) struct Core<T: Transport> {
    id: usize,
    pub shared: Arc<Shared>,
    inbox: Inbox,
    rx: Receiver<Message>,
    pub slots: HashMap<usize, Slot<T::Socket>>,
    pub transport: T,
    /// Connections with news to act on, gathered while draining the inbox or
    /// reaping the kernel's completions.
    dirty: Vec<usize>,
    /// Inline completions taken from the thread-local queue (reused buffer).
    inline_done: Vec<InlineCompletion>,
    /// The time this loop iteration woke up: one clock read per iteration
    /// (clock reads are syscalls on some virtual machines).
    pub now: Instant,
    last_tick: Instant,
    /// Wake-ups since the last tick published them.
    wakeups: usize,
    /// Until when the reactor polls instead of sleeping: set whenever a
    /// connection is serviced (see `prepare_to_sleep`), if busy polling is on.
    busy_until: Option<Instant>,
    /// Times polling found work since the last tick published them.
    polled: usize,
    /// The backends' work on this thread (made here: it belongs to the thread).
    poller: Option<Box<dyn ReactorPoller>>,
    /// Commands a namespace's rate limits hold back, oldest first.
    held: VecDeque<HeldRequest>,
    /// When the first held command may be admitted (`None`: none is held).
    held_due: Option<Instant>,
}

/// A command held back by its namespace's rate limits.
struct HeldRequest {
    token: usize,
    request: IoRequest,
    /// When it was first held, for the throttle's delay statistics.
    since: Instant,
}

/// True if `a` and `b` are the same namespace's throttle.
fn same_throttle(a: &Arc<Throttle>, b: &Arc<Throttle>) -> bool {
    Arc::ptr_eq(a, b)
}

/// Makes the calling reactor thread's backend poller, if the target has a
/// factory and the backend has work for the thread (it belongs to the thread).
pub fn make_poller(shared: &Shared) -> Option<Box<dyn ReactorPoller>> {
    shared.reactor_poller.as_ref().and_then(|make| make())
}

impl<T: Transport> Core<T> {
    /// A reactor core with no connections; `poller` is the thread's backend
    /// poller (see [`make_poller`]).
    pub fn new(
        shared: Arc<Shared>,
        transport: T,
        inbox: Inbox,
        rx: Receiver<Message>,
        poller: Option<Box<dyn ReactorPoller>>,
    ) -> Self {
        let now = Instant::now();
        Core {
            poller,
            id: NEXT_REACTOR_ID.fetch_add(1, Ordering::Relaxed),
            shared,
            inbox,
            rx,
            slots: HashMap::new(),
            transport,
            dirty: Vec::new(),
            inline_done: Vec::new(),
            now,
            last_tick: now,
            wakeups: 0,
            busy_until: None,
            polled: 0,
            held: VecDeque::new(),
            held_due: None,
        }
    }

    /// A sending side of this reactor's inbox.
    pub fn inbox(&self) -> Inbox {
        self.inbox.clone()
    }

    /// True once the target is shutting down.
    pub fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Acquire)
    }

    /// Notes that a connection had work this round: with busy polling on,
    /// the reactor polls for the next `busy_poll` instead of sleeping.
    pub fn served(&mut self) {
        if self.shared.busy_poll.is_zero() {
            return;
        }
        let started = self
            .busy_until
            .replace(self.now + self.shared.busy_poll)
            .is_none();
        if started {
            self.shared.counters.polling.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Ends the polling window (the reactor sleeps when it next waits).
    fn stop_polling(&mut self) {
        if self.busy_until.take().is_some() {
            self.shared.counters.polling.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// True while the reactor polls instead of sleeping (see
    /// `prepare_to_sleep`): it serviced a connection within `busy_poll`.
    pub fn polling(&self) -> bool {
        self.busy_until.is_some()
    }

    /// Returns how long the reactor may sleep: zero if work is already
    /// waiting, else the time to the next tick with the sleeping flag raised
    /// so senders ring the doorbell.
    ///
    /// Under load (a connection was serviced within the last `busy_poll`)
    /// the reactor first polls instead: it spins on its inbox and on
    /// `pending`, the transport's check for completions that needs no system
    /// call, until either shows work (zero: no sleep) or the window closes.
    /// That spares the wake-up of a sleeping thread, which on virtual
    /// machines costs more than the I/O itself; an idle reactor never spins.
    /// Every 64 spins it yields its CPU to any other runnable thread there:
    /// a spinning thread must not hold a CPU the thread it waits for needs.
    pub fn prepare_to_sleep(&mut self, mut pending: impl FnMut(&mut T) -> bool) -> Duration {
        if let Some(until) = self.busy_until {
            let mut spins = 0u32;
            loop {
                if !self.rx.is_empty() || pending(&mut self.transport) {
                    self.polled += 1;
                    return Duration::ZERO;
                }
                spins = spins.wrapping_add(1);
                // A clock read per 64 spins keeps the loop off the clock source.
                if spins.is_multiple_of(64) {
                    let now = Instant::now();
                    if self.held_due.is_some_and(|due| now >= due) {
                        self.polled += 1;
                        return Duration::ZERO;
                    }
                    if now >= until {
                        self.stop_polling();
                        break;
                    }
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            }
        }
        let mut timeout = self
            .shared
            .tick_interval
            .saturating_sub(self.now.saturating_duration_since(self.last_tick));
        if let Some(due) = self.held_due {
            timeout = timeout.min(due.saturating_duration_since(Instant::now()));
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

    /// Called when the wait in the kernel returns: lowers the sleeping flag
    /// and reads the clock for this iteration.
    pub fn woke(&mut self) {
        self.inbox.0.sleeping.store(false, Ordering::Relaxed);
        self.now = Instant::now();
        self.wakeups += 1;
    }

    /// Queues `token` to be serviced once at the end of this round.
    pub fn mark_dirty(&mut self, token: usize) {
        if let Some(s) = self.slots.get_mut(&token) {
            if !s.dirty {
                s.dirty = true;
                self.dirty.push(token);
            }
        }
    }

    /// Handles queued messages (a bounded batch), then services each connection
    /// marked dirty once, so its responses leave in one send.
    pub fn drain_inbox(&mut self) {
        let now = self.now;
        for _ in 0..INBOX_BATCH_MAX {
            let Ok(msg) = self.rx.try_recv() else {
                break;
            };
            match msg {
                Message::Accepted {
                    stream,
                    kind,
                    token,
                } => self.adopt(token, stream, kind),
                Message::Evict { token } => {
                    tracing::debug!(token, "closing a connection in its handshake to make room");
                    self.close(token);
                }
                Message::IoDone { token, tag, result } => {
                    if let Some(s) = self.slots.get_mut(&token) {
                        s.conn.complete_io(tag, result, now);
                        self.mark_dirty(token);
                    }
                }
                Message::Poke { token } => {
                    if let Some(s) = self.slots.get_mut(&token) {
                        s.conn.tick(now);
                        self.mark_dirty(token);
                    }
                }
            }
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        if !dirty.is_empty() {
            self.served();
        }
        for &token in &dirty {
            if let Some(s) = self.slots.get_mut(&token) {
                s.dirty = false;
            }
            self.service(token);
        }
        dirty.clear();
        // Servicing marks nothing dirty, so the list is empty and can be reused.
        debug_assert!(self.dirty.is_empty());
        self.dirty = dirty;
    }

    /// Runs the periodic keep-alive / teardown check when it is due.
    pub fn tick_if_due(&mut self) {
        if self.now.saturating_duration_since(self.last_tick) < self.shared.tick_interval {
            return;
        }
        self.last_tick = self.now;
        self.shared.counters.ticks.fetch_add(1, Ordering::Relaxed);
        self.shared
            .counters
            .wakeups
            .fetch_add(std::mem::take(&mut self.wakeups), Ordering::Relaxed);
        self.shared
            .counters
            .polled
            .fetch_add(std::mem::take(&mut self.polled), Ordering::Relaxed);
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            if let Some(s) = self.slots.get_mut(&token) {
                s.conn.tick(self.now);
            }
            self.service(token);
        }
    }

    /// Gives up a connection accepted for `token` that never got a slot.
    fn abandon(&mut self, token: ConnId) {
        self.shared.admission.release(token);
        self.shared.connections.fetch_sub(1, Ordering::AcqRel);
    }

    fn adopt(&mut self, token: ConnId, stream: TcpStream, kind: PortKind) {
        let local_addr = match stream.local_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accepted socket has no local address");
                self.abandon(token);
                return;
            }
        };
        let peer_addr = match stream.peer_addr() {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "accepted socket has no peer address");
                self.abandon(token);
                return;
            }
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let socket = match self.transport.register(token, stream) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot register socket");
                self.abandon(token);
                return;
            }
        };
        let inbox = self.inbox.clone();
        let ctx = ConnectionContext {
            subsystem: self.shared.subsystem.clone(),
            limits: self.shared.limits,
            port_kind: kind,
            local_addr,
            peer_addr,
            io_listeners: self.shared.io_listeners.clone(),
            advertised_addr: self.shared.advertised_addr,
            notifier: Arc::new(move || inbox.send(Message::Poke { token })),
            handshake_timeout: self.shared.handshake_timeout,
            discovery_keep_alive: self.shared.discovery_keep_alive,
        };
        self.slots.insert(
            token,
            Slot {
                conn: Connection::new(ctx),
                socket,
                dirty: false,
                handshake_reported: false,
            },
        );
        // Arms the first receive on backends that need one.
        self.service(token);
    }

    /// Starts pending I/O, sends pending output, resumes paused input, and
    /// closes the connection once it is closed and flushed.
    pub fn service(&mut self, token: usize) {
        for _ in 0..SERVICE_PASSES_MAX {
            let Some(s) = self.slots.get_mut(&token) else {
                return;
            };
            if !s.handshake_reported && s.conn.handshake_done() {
                s.handshake_reported = true;
                self.shared.admission.handshake_done(token);
            }
            if s.conn.has_io_requests() {
                self.start_io(token);
            }
            let Some(s) = self.slots.get_mut(&token) else {
                return;
            };
            if self.transport.send(token, &mut s.socket, &mut s.conn) == Step::Failed {
                self.close(token);
                return;
            }
            if s.conn.is_closed() && !s.conn.has_output() {
                self.close(token);
                return;
            }
            match self
                .transport
                .receive(token, &mut s.socket, &mut s.conn, self.now)
            {
                Step::Failed => {
                    self.close(token);
                    return;
                }
                Step::Progressed => continue,
                Step::Idle => {}
            }
            if s.conn.has_io_requests() {
                continue;
            }
            return;
        }
    }

    /// Starts the namespace I/O `token`'s connection asked for, taking back the
    /// completions a backend ran inline without going through the inbox.
    /// Commands their namespace's rate limits do not admit now are held
    /// (behind held commands that compete with them for a bucket, so those
    /// are admitted in the order they came).
    fn start_io(&mut self, token: usize) {
        let Some(s) = self.slots.get_mut(&token) else {
            return;
        };
        let requests = s.conn.take_io_requests();
        // The common case, no namespace with a limit, starts as before.
        if requests.iter().all(|r| r.throttle.is_none()) {
            return self.start_requests(token, requests);
        }
        let now = self.now;
        let mut ready = Vec::with_capacity(requests.len());
        for request in requests {
            match self.admit(&request, now) {
                Admit::Now => ready.push(request),
                Admit::At(at) => {
                    let at = at.min(now + HELD_RECHECK_MAX);
                    self.held_due = Some(self.held_due.map_or(at, |due| due.min(at)));
                    self.held.push_back(HeldRequest {
                        token,
                        request,
                        since: now,
                    });
                }
            }
        }
        self.start_requests(token, ready);
    }

    /// Asks `request`'s rate limits whether it may start at `now`; a request
    /// waits behind held commands of its namespace that compete with it for
    /// a bucket.
    fn admit(&self, request: &IoRequest, now: Instant) -> Admit {
        let Some(throttle) = request.throttle.as_ref() else {
            return Admit::Now;
        };
        let class = request.class();
        let queued_behind = self.held.iter().any(|h| {
            h.request.throttle.as_ref().is_some_and(|t| {
                same_throttle(t, throttle) && throttle.competes(h.request.class(), class)
            })
        });
        if queued_behind {
            // Retried when the oldest held command is.
            return Admit::At(self.held_due.unwrap_or(now));
        }
        throttle.admit(class, now)
    }

    /// Starts the held commands their rate limits now admit, oldest first
    /// per namespace, and notes when to look again.
    pub fn release_held(&mut self) {
        if self.held_due.is_none_or(|due| self.now < due) {
            return;
        }
        let now = self.now;
        let mut still_held = VecDeque::with_capacity(self.held.len());
        // Throttles, with the class of a command they refused this pass: a
        // later command that competes with it for a bucket stays behind it.
        let mut blocked: Vec<(Arc<Throttle>, IoClass)> = Vec::new();
        let mut due: Option<Instant> = None;
        let mut ready: Vec<(usize, IoRequest)> = Vec::new();
        for held in std::mem::take(&mut self.held) {
            let Some(throttle) = held.request.throttle.clone() else {
                ready.push((held.token, held.request));
                continue;
            };
            let class = held.request.class();
            if blocked.iter().any(|(b, refused)| {
                same_throttle(b, &throttle) && throttle.competes(*refused, class)
            }) {
                still_held.push_back(held);
                continue;
            }
            match throttle.admit(held.request.class(), now) {
                Admit::Now => {
                    throttle.record_delay(now.saturating_duration_since(held.since));
                    ready.push((held.token, held.request));
                }
                Admit::At(at) => {
                    let at = at.min(now + HELD_RECHECK_MAX);
                    due = Some(due.map_or(at, |d| d.min(at)));
                    blocked.push((throttle, class));
                    still_held.push_back(held);
                }
            }
        }
        self.held = still_held;
        self.held_due = due;
        // Start each connection's admitted commands together, in order.
        while !ready.is_empty() {
            let token = ready[0].0;
            let (mine, rest): (Vec<_>, Vec<_>) = ready.into_iter().partition(|(t, _)| *t == token);
            ready = rest;
            if self.slots.contains_key(&token) {
                self.start_requests(token, mine.into_iter().map(|(_, r)| r).collect());
                self.mark_dirty(token);
            }
        }
    }

    /// Starts `requests` of `token`'s connection on their backends, taking
    /// back the completions a backend ran inline without going through the
    /// inbox.
    fn start_requests(&mut self, token: usize, mut requests: Vec<IoRequest>) {
        if requests.is_empty() {
            return;
        }
        let id = self.id;
        let inbox = &self.inbox;
        let poller = &mut self.poller;
        collecting_inline(id, &mut self.inline_done, || {
            let mut start = || {
                for req in requests.drain(..) {
                    let inbox = inbox.clone();
                    req.start(move |tag, result| {
                        if let Some(result) = complete_inline(id, token, tag, result) {
                            inbox.send(Message::IoDone { token, tag, result });
                        }
                    });
                }
            };
            match poller {
                Some(poller) => poller.start_together(&mut start),
                None => start(),
            }
        });
        let now = self.now;
        for done in self.inline_done.drain(..) {
            if done.token == token {
                if let Some(s) = self.slots.get_mut(&token) {
                    s.conn.complete_io(done.tag, done.result, now);
                }
            } else {
                // A backend finished another connection's earlier request
                // inside this start call: deliver it the ordinary way.
                self.inbox.send(Message::IoDone {
                    token: done.token,
                    tag: done.tag,
                    result: done.result,
                });
            }
        }
    }

    /// The descriptor of this reactor's backend poller, if it has one.
    pub fn poller_fd(&self) -> Option<std::os::fd::RawFd> {
        self.poller.as_ref().map(|p| p.event_fd())
    }

    /// Runs the backend poller and takes back the completions it delivered
    /// (they never touch the inbox); the connections they belong to are
    /// serviced with the next `drain_inbox`.
    pub fn poll_backend(&mut self) {
        let Some(poller) = self.poller.as_mut() else {
            return;
        };
        collecting_inline(self.id, &mut self.inline_done, || poller.poll());
        let mut done = std::mem::take(&mut self.inline_done);
        for completion in done.drain(..) {
            if let Some(s) = self.slots.get_mut(&completion.token) {
                s.conn
                    .complete_io(completion.tag, completion.result, self.now);
                self.mark_dirty(completion.token);
            }
        }
        self.inline_done = done;
    }

    /// Submits the backend work this round started (before the reactor waits).
    pub fn submit_backend(&mut self) {
        if let Some(poller) = self.poller.as_mut() {
            poller.submit();
        }
    }

    /// Drops the backend poller, which first finishes the I/O it has in flight
    /// (shutdown, after every connection is closed).
    pub fn drop_poller(&mut self) {
        self.poller = None;
    }

    /// Closes `token`'s connection: tears its queue down and hands its socket
    /// back to the backend.
    pub fn close(&mut self, token: usize) {
        // A closed connection's held commands are never started.
        self.held.retain(|h| h.token != token);
        if let Some(mut s) = self.slots.remove(&token) {
            if s.conn.handshake_timed_out() {
                self.shared
                    .counters
                    .handshake_timeouts
                    .fetch_add(1, Ordering::Relaxed);
            }
            s.conn.peer_closed();
            self.transport.release(token, s.socket);
            self.shared.admission.release(token);
            self.shared.connections.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Closes every connection (shutdown).
    pub fn close_all(&mut self) {
        self.stop_polling();
        let tokens: Vec<usize> = self.slots.keys().copied().collect();
        for token in tokens {
            self.close(token);
        }
    }
}
