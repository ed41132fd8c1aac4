//! The TCP driver: listeners, an acceptor thread, and reactor threads that own
//! connections and drive each [`Connection`] state machine over their sockets,
//! with io_uring or, where io_uring cannot be set up, epoll ([`ReactorKind`]).
//!
//! Threading: one acceptor thread hands each accepted socket to a reactor
//! (round-robin). A reactor owns its sockets; namespace completions from other
//! threads and asynchronous-event pokes reach it through a channel plus a
//! doorbell (rung only when the reactor sleeps), completions a backend runs
//! inline come back without either, so no lock is held across I/O and an idle
//! reactor sleeps in the kernel apart from a coarse timer tick for keep-alive
//! checks. The servicing logic (`reactor::Core`) is shared; the two backends
//! (`uring_reactor`, `epoll`) differ only in how bytes move.
//!
//! [`Connection`]: crate::connection::Connection

mod admission;
mod epoll;
mod reactor;
mod refusals;
#[cfg(test)]
mod tests;
mod uring_reactor;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use admission::{Admission, Decision};
use reactor::{Counters, Inbox};
use refusals::{Refusal, RefusalLog};

use crate::backend::ReactorPollerFactory;
use crate::connection::{Limits, PortKind};
use crate::subsystem::Subsystem;

/// Default NVMe/TCP I/O port.
pub const DEFAULT_IO_PORT: u16 = 4420;
/// Default NVMe/TCP discovery port.
pub const DEFAULT_DISCOVERY_PORT: u16 = 8009;

/// Default [`TargetConfig::connections_per_peer_max`]: room for a host with
/// one admin and 64 I/O queues on each of two controllers, and an eighth of
/// the default table.
pub const DEFAULT_CONNECTIONS_PER_PEER_MAX: usize = 128;
/// Default [`TargetConfig::handshake_timeout`], as production targets allow
/// for a connection's first exchange.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default [`TargetConfig::discovery_keep_alive`]: Linux's nvmet gives a
/// discovery controller connected without a keep-alive timeout the same 120 s.
pub const DEFAULT_DISCOVERY_KEEP_ALIVE: Duration = Duration::from_secs(120);

/// How to run a target.
#[derive(Clone)]
pub struct TargetConfig {
    /// Addresses serving the NVM subsystem (and discovery). Port 0 picks a free port.
    pub listen_addrs: Vec<SocketAddr>,
    /// Addresses serving only discovery.
    pub discovery_addrs: Vec<SocketAddr>,
    /// Address reported in the discovery log instead of the one the host reached
    /// (for hosts behind NAT or port forwarding).
    pub advertised_addr: Option<SocketAddr>,
    /// Reactor threads; 0 means one per available core.
    pub reactors: usize,
    /// Protocol limits.
    pub limits: Limits,
    /// Connections open at once (I/O and discovery ports together). When
    /// the table is full, a new connection takes the place of the oldest one
    /// still in its handshake (see `handshake_timeout`), so peers that never
    /// speak cannot lock a real host out; it is closed on accept only when
    /// every open connection has finished its handshake.
    pub connections_max: usize,
    /// Connections open at once from one peer address, so one peer cannot
    /// take the whole table.
    pub connections_per_peer_max: usize,
    /// How long a new connection may take to finish its handshake (ICReq,
    /// then a successful Fabrics Connect) before it is closed. A host does
    /// both within a few round trips; a peer that does neither would hold its
    /// place in the table for ever.
    pub handshake_timeout: Duration,
    /// Keep-alive timeout of a discovery controller whose host asked for none
    /// (KATO 0): a host reads its log pages and leaves, while one that stays
    /// silent would otherwise hold its place in the table for ever.
    pub discovery_keep_alive: Duration,
    /// Period of the keep-alive / teardown check.
    pub tick_interval: Duration,
    /// How long a reactor keeps polling for work (spinning on its ring and
    /// inbox) after it last serviced a connection, before sleeping in the
    /// kernel. Polling under load spares the wake-ups that dominate a queue
    /// depth 1 round trip on virtual machines; an idle target never polls.
    /// Zero (the default) never polls.
    pub busy_poll: Duration,
    /// How reactors drive their sockets.
    pub reactor_kind: ReactorKind,
    /// Makes each reactor's [`ReactorPoller`](crate::backend::ReactorPoller) (a backend's per-thread work,
    /// such as an engine's I/O ring); `None` if the backends need none.
    pub reactor_poller: Option<ReactorPollerFactory>,
}

impl std::fmt::Debug for TargetConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TargetConfig")
            .field("listen_addrs", &self.listen_addrs)
            .field("discovery_addrs", &self.discovery_addrs)
            .field("advertised_addr", &self.advertised_addr)
            .field("reactors", &self.reactors)
            .field("limits", &self.limits)
            .field("connections_max", &self.connections_max)
            .field("connections_per_peer_max", &self.connections_per_peer_max)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("discovery_keep_alive", &self.discovery_keep_alive)
            .field("tick_interval", &self.tick_interval)
            .field("busy_poll", &self.busy_poll)
            .field("reactor_kind", &self.reactor_kind)
            .field("reactor_poller", &self.reactor_poller.is_some())
            .finish()
    }
}

/// How reactors drive their sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReactorKind {
    /// io_uring where the kernel allows it, else epoll (with a warning).
    #[default]
    Auto,
    /// io_uring: one ring per reactor submits receives and sends and waits for
    /// their completions in one system call. Starting fails if it is unavailable
    /// (`kernel.io_uring_disabled`, seccomp filters, old kernels).
    Uring,
    /// epoll readiness with nonblocking reads and writes.
    Epoll,
}

impl TargetConfig {
    /// Listens on `ip` with the default I/O (4420) and discovery (8009) ports.
    pub fn on(ip: std::net::IpAddr) -> TargetConfig {
        TargetConfig {
            listen_addrs: vec![SocketAddr::new(ip, DEFAULT_IO_PORT)],
            discovery_addrs: vec![SocketAddr::new(ip, DEFAULT_DISCOVERY_PORT)],
            advertised_addr: None,
            reactors: 0,
            limits: Limits::default(),
            connections_max: 1024,
            connections_per_peer_max: DEFAULT_CONNECTIONS_PER_PEER_MAX,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            discovery_keep_alive: DEFAULT_DISCOVERY_KEEP_ALIVE,
            tick_interval: Duration::from_millis(200),
            busy_poll: Duration::ZERO,
            reactor_kind: ReactorKind::Auto,
            reactor_poller: None,
        }
    }
}

/// Counters of a running target's reactors and acceptor ([`TargetHandle::stats`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReactorStats {
    /// Connections open (accepted and not yet closed).
    pub connections: usize,
    /// Socket operations (receives, sends, cancellations) handed to io_uring
    /// and not yet completed; zero once every closed connection's buffers are
    /// freed. Always zero with [`ReactorKind::Epoll`].
    pub ring_ops_in_flight: usize,
    /// Sends the kernel took only part of (the rest goes in a later send).
    pub short_sends: usize,
    /// Times the reactors woke up from waiting in the kernel (counted at each
    /// tick): an idle target wakes only for its ticks.
    pub wakeups: usize,
    /// io_uring reactors whose socket operations share the ring their backend
    /// poller lends (one ring and one wait per reactor).
    pub shared_rings: usize,
    /// Reactors in their busy-polling window now (see
    /// [`TargetConfig::busy_poll`]): zero on an idle target.
    pub polling: usize,
    /// Times a polling reactor found work without sleeping (counted at each
    /// tick): each one a thread wake-up spared.
    pub polled: usize,
    /// Reactor ticks so far (all reactors): a clock for tests and
    /// diagnostics that measure per tick rather than per wall-clock second.
    pub ticks: usize,
    /// Connections closed on accept: their peer was at
    /// [`TargetConfig::connections_per_peer_max`], or the table was full of
    /// connections past their handshake.
    pub connections_refused: usize,
    /// Connections closed in their handshake to make room for a new one.
    pub connections_evicted: usize,
    /// Connections closed for not finishing their handshake within
    /// [`TargetConfig::handshake_timeout`].
    pub handshake_timeouts: usize,
}

/// Why a target could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No I/O listener was configured.
    #[error("no listen address configured")]
    NoListener,
    /// The limits cannot be advertised to a Linux host.
    #[error("invalid limits: {0}")]
    InvalidLimits(&'static str),
    /// Creating the poller or a thread failed.
    #[error("cannot start the target's threads")]
    Runtime(#[source] std::io::Error),
    /// [`ReactorKind::Uring`] was asked for and io_uring cannot be set up.
    #[error("io_uring is unavailable")]
    UringUnavailable(#[source] std::io::Error),
}

/// The NVMe/TCP target.
pub struct Target;

/// A running target; dropping it (or [`TargetHandle::shutdown`]) stops it.
pub struct TargetHandle {
    local_addrs: Vec<SocketAddr>,
    discovery_addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    reactor_kind: ReactorKind,
    reactors: Vec<Inbox>,
    acceptor_waker: Option<Arc<Waker>>,
    threads: Vec<JoinHandle<()>>,
    connections: Arc<AtomicUsize>,
    counters: Arc<Counters>,
}

fn validate(config: &TargetConfig) -> Result<(), StartError> {
    let limits = &config.limits;
    if limits.maxh2cdata < 4096 || limits.maxh2cdata & 0x3 != 0 {
        return Err(StartError::InvalidLimits(
            "MAXH2CDATA must be a multiple of 4 and at least 4096",
        ));
    }
    if !limits.mdts_bytes.is_power_of_two() || limits.mdts_bytes < 4096 {
        return Err(StartError::InvalidLimits(
            "the transfer size limit must be a power of two >= 4096",
        ));
    }
    if limits.queue_depth_max < 32 {
        return Err(StartError::InvalidLimits("queue depth must be at least 32"));
    }
    if limits.inline_data_max & 0xF != 0 {
        return Err(StartError::InvalidLimits(
            "inline data size must be a multiple of 16",
        ));
    }
    if config.connections_max == 0 || config.connections_per_peer_max == 0 {
        return Err(StartError::InvalidLimits(
            "at least one connection (per peer and in all) is needed",
        ));
    }
    if limits.io_queues_max == 0 {
        return Err(StartError::InvalidLimits(
            "at least one I/O queue is needed",
        ));
    }
    Ok(())
}

const ACCEPT_WAKER: Token = Token(usize::MAX);

impl Target {
    /// Binds the listeners and starts the acceptor and reactor threads.
    pub fn start(
        config: TargetConfig,
        subsystem: Arc<Subsystem>,
    ) -> Result<TargetHandle, StartError> {
        validate(&config)?;
        if config.listen_addrs.is_empty() {
            return Err(StartError::NoListener);
        }
        let mut listeners = Vec::new();
        for (addrs, kind) in [
            (&config.listen_addrs, PortKind::Io),
            (&config.discovery_addrs, PortKind::Discovery),
        ] {
            for addr in addrs {
                let l = TcpListener::bind(*addr).map_err(|source| StartError::Bind {
                    addr: *addr,
                    source,
                })?;
                listeners.push((l, kind));
            }
        }
        let bound = |kind: PortKind| -> Vec<SocketAddr> {
            listeners
                .iter()
                .filter(|(_, k)| *k == kind)
                .filter_map(|(l, _)| l.local_addr().ok())
                .collect()
        };
        let local_addrs = bound(PortKind::Io);
        let discovery_addrs = bound(PortKind::Discovery);
        let reactor_count = if config.reactors == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.reactors
        };
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(reactor::Shared {
            subsystem,
            limits: config.limits,
            io_listeners: Arc::new(local_addrs.clone()),
            advertised_addr: config.advertised_addr,
            stop: stop.clone(),
            tick_interval: config.tick_interval,
            connections: connections.clone(),
            busy_poll: config.busy_poll,
            counters: counters.clone(),
            reactor_poller: config.reactor_poller.clone(),
            admission: Arc::new(Admission::new(
                config.connections_max,
                config.connections_per_peer_max,
            )),
            handshake_timeout: config.handshake_timeout,
            discovery_keep_alive: config.discovery_keep_alive,
        });
        // Dropping the handle on an early return stops the threads started so far.
        let mut handle = TargetHandle {
            local_addrs,
            discovery_addrs,
            stop: stop.clone(),
            reactor_kind: config.reactor_kind,
            reactors: Vec::new(),
            acceptor_waker: None,
            threads: Vec::new(),
            connections: connections.clone(),
            counters,
        };
        let (kind, reactors) = start_reactors(reactor_count, config.reactor_kind, |kind, i| {
            spawn_reactor(kind, i, shared.clone())
        });
        handle.reactor_kind = kind;
        for (inbox, thread) in reactors.started {
            handle.reactors.push(inbox);
            handle.threads.push(thread);
        }
        if let Some(e) = reactors.error {
            return Err(e);
        }
        let poll = Poll::new().map_err(StartError::Runtime)?;
        let accept_waker =
            Arc::new(Waker::new(poll.registry(), ACCEPT_WAKER).map_err(StartError::Runtime)?);
        for (i, (l, _)) in listeners.iter_mut().enumerate() {
            poll.registry()
                .register(l, Token(i), Interest::READABLE)
                .map_err(StartError::Runtime)?;
        }
        let acceptor = Acceptor {
            poll,
            listeners,
            inboxes: handle.reactors.clone(),
            next: 0,
            stop,
            connections,
            admission: shared.admission.clone(),
            counters: shared.counters.clone(),
            refusals: RefusalLog::default(),
        };
        let t = std::thread::Builder::new()
            .name("nvmf-acceptor".into())
            .spawn(move || acceptor.run())
            .map_err(StartError::Runtime)?;
        handle.threads.push(t);
        handle.acceptor_waker = Some(accept_waker);
        Ok(handle)
    }
}

/// Reactor threads started by [`start_reactors`], and why it stopped early.
struct StartedReactors {
    started: Vec<(Inbox, JoinHandle<()>)>,
    error: Option<StartError>,
}

/// Starts `count` reactors of the `requested` kind with `spawn`, resolving
/// [`ReactorKind::Auto`]: io_uring unless the first reactor cannot set it up,
/// then epoll for all of them (with a warning). Returns the kind in use.
fn start_reactors(
    count: usize,
    requested: ReactorKind,
    mut spawn: impl FnMut(ReactorKind, usize) -> std::io::Result<(Inbox, JoinHandle<()>)>,
) -> (ReactorKind, StartedReactors) {
    let mut kind = match requested {
        ReactorKind::Auto => ReactorKind::Uring,
        kind => kind,
    };
    let mut reactors = StartedReactors {
        started: Vec::new(),
        error: None,
    };
    for i in 0..count {
        match spawn(kind, i) {
            Ok(started) => reactors.started.push(started),
            // Only the first reactor decides: every reactor has the same kind.
            Err(e) if requested == ReactorKind::Auto && i == 0 => {
                tracing::warn!(error = %e, "io_uring is unavailable; reactors fall back to epoll");
                kind = ReactorKind::Epoll;
                match spawn(kind, i) {
                    Ok(started) => reactors.started.push(started),
                    Err(e) => {
                        reactors.error = Some(StartError::Runtime(e));
                        break;
                    }
                }
            }
            Err(e) => {
                reactors.error = Some(if kind == ReactorKind::Uring {
                    StartError::UringUnavailable(e)
                } else {
                    StartError::Runtime(e)
                });
                break;
            }
        }
    }
    (kind, reactors)
}

/// Starts reactor thread `index` of `kind` (Uring or Epoll). The reactor is
/// built on its own thread (an io_uring belongs to the thread that set it up),
/// which reports back whether that worked.
fn spawn_reactor(
    kind: ReactorKind,
    index: usize,
    shared: Arc<reactor::Shared>,
) -> std::io::Result<(Inbox, JoinHandle<()>)> {
    let (ready_tx, ready_rx) = crossbeam_channel::bounded::<std::io::Result<Inbox>>(1);
    let thread = std::thread::Builder::new()
        .name(format!("nvmf-reactor-{index}"))
        .spawn(move || {
            if kind == ReactorKind::Epoll {
                match epoll::build(shared) {
                    Ok(core) => {
                        if ready_tx.send(Ok(core.inbox())).is_ok() {
                            epoll::run(core);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            } else {
                match uring_reactor::build(shared) {
                    Ok(core) => {
                        if ready_tx.send(Ok(core.inbox())).is_ok() {
                            uring_reactor::run(core);
                        }
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                    }
                }
            }
        })?;
    let ready = ready_rx.recv().unwrap_or_else(|_| {
        Err(std::io::Error::other(
            "reactor thread exited before starting",
        ))
    });
    match ready {
        Ok(inbox) => Ok((inbox, thread)),
        Err(e) => {
            if thread.join().is_err() {
                tracing::error!("a reactor thread panicked while starting");
            }
            Err(e)
        }
    }
}

impl TargetHandle {
    /// Bound I/O listener addresses (with the real port when 0 was configured).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Bound discovery listener addresses.
    pub fn discovery_addrs(&self) -> &[SocketAddr] {
        &self.discovery_addrs
    }

    /// The reactor backend in use ([`ReactorKind::Uring`] or
    /// [`ReactorKind::Epoll`], never `Auto`), for logs and diagnostics.
    pub fn reactor_kind(&self) -> ReactorKind {
        self.reactor_kind
    }

    /// The reactors' counters now.
    pub fn stats(&self) -> ReactorStats {
        ReactorStats {
            connections: self.connections.load(Ordering::Acquire),
            ring_ops_in_flight: self.counters.ring_ops_in_flight.load(Ordering::Acquire),
            short_sends: self.counters.short_sends.load(Ordering::Relaxed),
            wakeups: self.counters.wakeups.load(Ordering::Relaxed),
            shared_rings: self.counters.shared_rings.load(Ordering::Relaxed),
            polling: self.counters.polling.load(Ordering::Relaxed),
            polled: self.counters.polled.load(Ordering::Relaxed),
            ticks: self.counters.ticks.load(Ordering::Relaxed),
            connections_refused: self.counters.connections_refused.load(Ordering::Relaxed),
            connections_evicted: self.counters.connections_evicted.load(Ordering::Relaxed),
            handshake_timeouts: self.counters.handshake_timeouts.load(Ordering::Relaxed),
        }
    }

    /// Stops accepting, closes every connection (tearing its controller down) and
    /// joins the threads.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        for inbox in &self.reactors {
            inbox.wake();
        }
        if let Some(w) = &self.acceptor_waker {
            if let Err(e) = w.wake() {
                tracing::error!(error = %e, "cannot wake the acceptor for shutdown");
            }
        }
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                tracing::error!("a target thread panicked");
            }
        }
    }
}

impl Drop for TargetHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// The acceptor thread: takes each new connection off its listener, lets
/// the admission table decide on it and hands it to a reactor, round-robin.
struct Acceptor {
    poll: Poll,
    listeners: Vec<(TcpListener, PortKind)>,
    inboxes: Vec<Inbox>,
    next: usize,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
    admission: Arc<Admission>,
    counters: Arc<Counters>,
    refusals: RefusalLog,
}

impl Acceptor {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.stop.load(Ordering::Acquire) {
            if let Err(e) = self
                .poll
                .poll(&mut events, Some(Duration::from_millis(500)))
            {
                if e.kind() != std::io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "acceptor poll failed");
                    return;
                }
            }
            for ev in events.iter() {
                let index = ev.token().0;
                while let Some((listener, kind)) = self.listeners.get(index) {
                    let kind = *kind;
                    match listener.accept() {
                        Ok((stream, peer)) => self.place(stream, peer.ip(), kind),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            tracing::debug!(error = %e, "accept failed");
                            self.refused(Refusal::AcceptFailed, None);
                            break;
                        }
                    }
                }
            }
            // The tail of a burst of refusals is reported once it is due.
            if let Some(summary) = self.refusals.due(Instant::now()) {
                refusals::log(&summary);
            }
        }
    }

    /// Hands a connection just accepted from `peer` to a reactor, or closes
    /// it (dropping `stream`) if the admission table refuses it.
    fn place(&mut self, stream: mio::net::TcpStream, peer: std::net::IpAddr, kind: PortKind) {
        let reactor = self.next % self.inboxes.len();
        let id = match self.admission.admit(peer, reactor) {
            Decision::Admit { id } => id,
            Decision::AdmitEvicting {
                id,
                evicted,
                evicted_reactor,
            } => {
                if let Some(inbox) = self.inboxes.get(evicted_reactor) {
                    inbox.send(reactor::Message::Evict { token: evicted });
                }
                self.counters
                    .connections_evicted
                    .fetch_add(1, Ordering::Relaxed);
                self.refused(Refusal::Evicted, Some(peer));
                id
            }
            Decision::RefusePeerFull => {
                self.counters
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                return self.refused(Refusal::PeerFull, Some(peer));
            }
            Decision::RefuseTableFull => {
                self.counters
                    .connections_refused
                    .fetch_add(1, Ordering::Relaxed);
                return self.refused(Refusal::TableFull, Some(peer));
            }
        };
        self.connections.fetch_add(1, Ordering::AcqRel);
        self.next = self.next.wrapping_add(1);
        self.inboxes[reactor].send(reactor::Message::Accepted {
            stream: stream.into(),
            kind,
            token: id,
        });
    }

    /// Counts a refusal and logs a summary when one is due.
    fn refused(&mut self, refusal: Refusal, peer: Option<std::net::IpAddr>) {
        if let Some(summary) = self.refusals.record(refusal, peer, Instant::now()) {
            refusals::log(&summary);
        }
    }
}
