//! One reactor thread: owns connections, reads and writes their sockets, starts
//! their namespace I/O, and feeds completions back.

use std::collections::HashMap;
use std::io::{IoSlice, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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

/// Sending side of a reactor's inbox: a channel plus the waker that interrupts its poll.
#[derive(Clone)]
pub(super) struct Inbox {
    tx: Sender<Message>,
    waker: Arc<Waker>,
}

impl Inbox {
    pub fn send(&self, msg: Message) {
        // A closed channel means the reactor has stopped; the message (and any
        // buffer it carries) is simply dropped.
        if self.tx.send(msg).is_ok() {
            if let Err(e) = self.waker.wake() {
                tracing::error!(error = %e, "cannot wake reactor");
            }
        }
    }
}

const WAKER: Token = Token(0);
const READ_CHUNK_BYTES: usize = 64 * 1024;
const WRITE_SLICES_MAX: usize = 64;

struct Socket {
    stream: TcpStream,
    conn: Connection,
    /// Input stopped before WouldBlock because of output backpressure.
    read_paused: bool,
}

pub(super) struct Reactor {
    shared: Arc<Shared>,
    poll: Poll,
    inbox: Inbox,
    rx: Receiver<Message>,
    sockets: HashMap<usize, Socket>,
    next_token: usize,
}

impl Reactor {
    pub fn new(shared: Arc<Shared>) -> std::io::Result<Reactor> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        // INVARIANT: the inbox is bounded in practice by queue depth times
        // connections (one message per in-flight command) plus accepts.
        let (tx, rx) = crossbeam_channel::unbounded();
        Ok(Reactor {
            shared,
            poll,
            inbox: Inbox { tx, waker },
            rx,
            sockets: HashMap::new(),
            next_token: 1,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.inbox.waker.clone()
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
                .saturating_sub(last_tick.elapsed());
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
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
                    self.read(token, &mut buf);
                }
                self.service(token, &mut buf);
            }
            self.drain_inbox(&mut buf);
            if last_tick.elapsed() >= self.shared.tick_interval {
                last_tick = Instant::now();
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

    fn drain_inbox(&mut self, buf: &mut [u8]) {
        while let Ok(msg) = self.rx.try_recv() {
            match msg {
                Message::Accepted { stream, kind } => self.adopt(stream, kind),
                Message::IoDone { token, tag, result } => {
                    if let Some(s) = self.sockets.get_mut(&token) {
                        s.conn.complete_io(tag, result, Instant::now());
                        self.service(token, buf);
                    }
                }
                Message::Poke { token } => {
                    if let Some(s) = self.sockets.get_mut(&token) {
                        s.conn.tick(Instant::now());
                        self.service(token, buf);
                    }
                }
            }
        }
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
            },
        );
    }

    fn read(&mut self, token: usize, buf: &mut [u8]) {
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
                Ok(n) => s.conn.receive(&buf[..n], Instant::now()),
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
            for req in s.conn.take_io_requests() {
                let inbox = self.inbox.clone();
                req.start(move |tag, result| inbox.send(Message::IoDone { token, tag, result }));
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
                self.read(token, buf);
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
            let slices: Vec<IoSlice<'_>> = out
                .iter()
                .take(WRITE_SLICES_MAX)
                .map(|b| IoSlice::new(b))
                .collect();
            match s.stream.write_vectored(&slices) {
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
