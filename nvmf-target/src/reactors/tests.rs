//! Reactor tests over loopback, each run once per backend: connections closed
//! with socket operations in flight free everything, many connections share
//! one reactor, short sends lose no byte, idle reactors sleep; and how
//! `ReactorKind::Auto` settles on a backend.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::reactor::{Doorbell, Inbox};
use std::os::fd::AsRawFd;

use super::{start_reactors, ReactorKind, StartError, Target, TargetConfig, TargetHandle};
use crate::host::{HostController, HostOptions, IoQueue, OwnedPdu};
use crate::nvme::{io_opcode, Command, SGL_TYPE_TRANSPORT};
use crate::pdu::{CapsuleCmd, DataPdu, Digests, PduType};
use crate::{
    BlockSize, HostAcl, Lba, MemoryNamespace, NamespaceOptions, RateLimits, Subsystem,
    SubsystemConfig,
};
use ::uring::EventFd;

const NQN: &str = "nqn.2024-01.io.keel:reactor-test";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:reactor-test-host";
const BLOCK: u32 = 4096;
/// Blocks per large read (128 KiB).
const LARGE_BLOCKS: u32 = 32;

struct Fixture {
    subsystem: Arc<Subsystem>,
    target: TargetHandle,
}

impl Fixture {
    fn start(kind: ReactorKind, reactors: usize) -> Fixture {
        Fixture::start_polling(kind, reactors, Duration::ZERO)
    }

    /// A target whose reactors poll for `busy_poll` after serving a connection.
    fn start_polling(kind: ReactorKind, reactors: usize, busy_poll: Duration) -> Fixture {
        let subsystem = Subsystem::new(SubsystemConfig::new(NQN, "KEELREACTOR1"));
        let ns = MemoryNamespace::new(BlockSize::B4096, 4096, [0x5E; 16]);
        subsystem.add_namespace(1, ns, HostAcl::AnyHost).unwrap();
        let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut config = TargetConfig::on(local.ip());
        config.listen_addrs = vec![local];
        config.discovery_addrs = Vec::new();
        config.reactors = reactors;
        config.connections_max = 256;
        config.tick_interval = Duration::from_millis(50);
        config.reactor_kind = kind;
        config.busy_poll = busy_poll;
        let target = Target::start(config, subsystem.clone()).unwrap();
        assert_eq!(target.reactor_kind(), kind);
        Fixture { subsystem, target }
    }

    fn connect(&self) -> (HostController, IoQueue) {
        let mut options = HostOptions::new(HOST, NQN);
        options.kato_ms = 0;
        options.timeout = Duration::from_secs(10);
        let mut c = HostController::connect(self.target.local_addrs()[0], options).unwrap();
        c.set_queue_count(1).unwrap();
        let q = c.connect_io_queue(1).unwrap();
        (c, q)
    }

    /// Waits until every connection is closed and every socket operation of
    /// the ring has completed (so its buffer was freed).
    fn wait_until_released(&self) {
        wait_until("connections and their buffers to be released", || {
            let stats = self.target.stats();
            stats.connections == 0
                && stats.ring_ops_in_flight == 0
                && self.subsystem.controller_count() == 0
        });
    }
}

/// Waits for `f` to hold; the 30 s bound only turns a hang into a failure.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::yield_now();
    }
}

fn pattern(len: usize, seed: u64) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| (i as u64).wrapping_mul(131).wrapping_add(seed * 7) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Submits `count` 128 KiB reads without reading their responses, so the
/// target's sends outgrow the socket buffers, and waits for a short send.
fn back_up_reads(f: &Fixture, q: &mut IoQueue, count: u64) -> Vec<(u16, u64)> {
    let cids = (0..count)
        .map(|i| {
            let lba = i * u64::from(LARGE_BLOCKS);
            (
                q.submit_read(1, Lba(lba), LARGE_BLOCKS, BLOCK).unwrap(),
                lba,
            )
        })
        .collect();
    wait_until("a short send", || f.target.stats().short_sends > 0);
    cids
}

fn closing_with_receives_and_sends_in_flight_frees_everything(kind: ReactorKind) {
    let f = Fixture::start(kind, 1);
    let (c, mut q) = f.connect();
    // 5 MiB: more than the socket buffers take (a short send), and what is
    // left after that is under the connection's output high-water mark, so
    // its receive is armed again while the rest waits for room.
    back_up_reads(&f, &mut q, 40);
    assert_eq!(f.target.stats().connections, 2);
    if kind == ReactorKind::Uring {
        // Receives on both queues and the I/O queue's send.
        wait_until("a send waiting for room", || {
            f.target.stats().ring_ops_in_flight >= 3
        });
    }
    drop(q);
    drop(c);
    f.wait_until_released();
}

fn short_sends_deliver_every_byte_in_order(kind: ReactorKind) {
    let f = Fixture::start(kind, 1);
    let (_c, mut q) = f.connect();
    let count = 64u64;
    for i in 0..count {
        let lba = i * u64::from(LARGE_BLOCKS);
        q.write(
            1,
            Lba(lba),
            pattern((LARGE_BLOCKS * BLOCK) as usize, i),
            BLOCK,
        )
        .unwrap();
    }
    // 8 MiB of responses: beyond the output high-water mark too, so input
    // pauses and resumes as the host drains them.
    let cids = back_up_reads(&f, &mut q, count);
    for (cid, lba) in cids {
        let got = q.queue.wait(cid).unwrap().success().unwrap().data;
        let seed = lba / u64::from(LARGE_BLOCKS);
        assert!(
            got == pattern((LARGE_BLOCKS * BLOCK) as usize, seed).to_vec(),
            "read of LBA {lba} returned other data"
        );
    }
    // The connection still serves commands after the backlog.
    assert_eq!(
        q.read(1, Lba(0), 1, BLOCK).unwrap(),
        pattern((LARGE_BLOCKS * BLOCK) as usize, 0)[..BLOCK as usize].to_vec()
    );
}

fn many_connections_on_one_reactor_keep_their_data_apart(kind: ReactorKind) {
    let f = Fixture::start(kind, 1);
    let hosts: Vec<(HostController, IoQueue)> = (0..16).map(|_| f.connect()).collect();
    let mut queues: Vec<IoQueue> = Vec::new();
    let mut controllers = Vec::new();
    for (c, q) in hosts {
        controllers.push(c);
        queues.push(q);
    }
    assert_eq!(f.target.stats().connections, 32);
    let per_queue = 8u64;
    for round in 0..4u64 {
        // Every queue has commands in flight at once.
        let mut cids = Vec::new();
        for (n, q) in queues.iter_mut().enumerate() {
            for k in 0..per_queue {
                let lba = n as u64 * per_queue + k;
                let data = pattern(BLOCK as usize, lba + round * 1000);
                cids.push(q.submit_write(1, Lba(lba), data, BLOCK).unwrap());
            }
        }
        let mut cids = cids.into_iter();
        for q in queues.iter_mut() {
            for _ in 0..per_queue {
                let cid = cids.next().unwrap();
                q.queue.wait(cid).unwrap().success().unwrap();
            }
        }
        for (n, q) in queues.iter_mut().enumerate() {
            let reads: Vec<(u16, u64)> = (0..per_queue)
                .map(|k| {
                    let lba = n as u64 * per_queue + k;
                    (q.submit_read(1, Lba(lba), 1, BLOCK).unwrap(), lba)
                })
                .collect();
            for (cid, lba) in reads {
                let got = q.queue.wait(cid).unwrap().success().unwrap().data;
                assert_eq!(got, pattern(BLOCK as usize, lba + round * 1000).to_vec());
            }
        }
    }
    drop(queues);
    drop(controllers);
    f.wait_until_released();
}

fn host_vanishing_mid_write_leaks_nothing(kind: ReactorKind) {
    let f = Fixture::start(kind, 2);
    let (c, mut q) = f.connect();
    // A 64 KiB write goes by R2T; the host sends a quarter of it and vanishes.
    let mut cmd = Command::new(io_opcode::WRITE, 9);
    cmd.set_nsid(1);
    cmd.set_cdw(12, 15);
    cmd.set_sgl(0, 64 * 1024, SGL_TYPE_TRANSPORT);
    let mut bytes = Vec::new();
    CapsuleCmd {
        sqe: cmd.0,
        data: &[],
    }
    .encode(Digests::default(), &mut bytes);
    q.queue.send_raw(&bytes).unwrap();
    let OwnedPdu::R2T { ttag, .. } = q.queue.next_raw_pdu().unwrap() else {
        panic!("expected an R2T")
    };
    let mut h2c = Vec::new();
    DataPdu {
        command_id: 9,
        ttag,
        offset: 0,
        last: false,
        success: false,
        data: &[0xAB; 16 * 1024],
    }
    .encode(PduType::H2CData, Digests::default(), 0, &mut h2c);
    q.queue.send_raw(&h2c).unwrap();
    drop(q);
    drop(c);
    f.wait_until_released();
}

fn shutdown_with_sends_in_flight_frees_everything(kind: ReactorKind) {
    let f = Fixture::start(kind, 1);
    let (_c, mut q) = f.connect();
    back_up_reads(&f, &mut q, 40);
    let counters = f.target.counters.clone();
    let connections = f.target.connections.clone();
    let (done_tx, done_rx) = crossbeam_channel::bounded(1);
    let target = f.target;
    std::thread::spawn(move || {
        target.shutdown();
        let _ = done_tx.send(());
    });
    done_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("shutdown returns while the host reads nothing");
    assert_eq!(connections.load(Ordering::Acquire), 0);
    assert_eq!(counters.ring_ops_in_flight.load(Ordering::Acquire), 0);
    assert_eq!(f.subsystem.controller_count(), 0);
}

/// Reactor ticks over which idle wake-ups are counted (about half a second
/// per reactor at the fixtures' 50 ms tick).
const IDLE_WINDOW_TICKS: usize = 20;

/// Most wake-ups per tick an idle reactor may show. A sleeping reactor wakes
/// about once per tick (its wait's timeout is the tick); one that spins
/// instead of sleeping wakes thousands of times per 50 ms tick, even with a
/// small share of a busy CPU. The bound sits fifty times above the first and
/// far below the second.
const IDLE_WAKEUPS_PER_TICK_MAX: usize = 50;

/// Asserts the reactors sleep while idle, counting their wake-ups per tick
/// rather than per wall-clock second: a loaded machine that delays the
/// reactors (or this thread) changes how long the window lasts, not how many
/// times a sleeping reactor wakes per tick. Ticks first pass for each reactor
/// so wake-ups from earlier work, published at the next tick, fall outside
/// the window.
fn assert_idle_reactors_sleep(f: &Fixture, reactors: usize) {
    let settled = f.target.stats().ticks + 2 * reactors;
    wait_until("the reactors to publish earlier wake-ups", || {
        f.target.stats().ticks >= settled
    });
    let before = f.target.stats();
    let end = before.ticks + reactors * IDLE_WINDOW_TICKS;
    wait_until("the reactors to tick through the window", || {
        f.target.stats().ticks >= end
    });
    let after = f.target.stats();
    let ticks = after.ticks - before.ticks;
    let woke = after.wakeups - before.wakeups;
    assert!(
        woke <= ticks * IDLE_WAKEUPS_PER_TICK_MAX,
        "idle reactors woke {woke} times in {ticks} ticks"
    );
}

fn idle_reactors_sleep(kind: ReactorKind) {
    let f = Fixture::start(kind, 2);
    // One connected host: the reactors have sockets and ticks to watch, and
    // nothing to do.
    let (_c, _q) = f.connect();
    assert_idle_reactors_sleep(&f, 2);
}

fn polling_reactors_serve_and_go_back_to_sleep(kind: ReactorKind) {
    let window = Duration::from_millis(20);
    let f = Fixture::start_polling(kind, 2, window);
    let (_c, mut q) = f.connect();
    q.queue.set_busy_poll(window);
    // Round trips one at a time: each next command arrives while the reactor
    // still polls after the last response.
    for lba in 0..200u64 {
        let data = pattern(BLOCK as usize, lba);
        q.write(1, Lba(lba), data.clone(), BLOCK).unwrap();
        assert_eq!(q.read(1, Lba(lba), 1, BLOCK).unwrap(), data.to_vec());
    }
    // Large writes and reads many at a time: R2T exchanges, and more bytes
    // than the sockets buffer, through a host that polls too.
    let large = (LARGE_BLOCKS * BLOCK) as usize;
    let writes: Vec<u16> = (0..32u64)
        .map(|i| {
            let lba = Lba(i * u64::from(LARGE_BLOCKS));
            q.submit_write(1, lba, pattern(large, 1000 + i), BLOCK)
                .unwrap()
        })
        .collect();
    for cid in writes {
        q.queue.wait(cid).unwrap().success().unwrap();
    }
    let reads: Vec<(u16, u64)> = (0..32u64)
        .map(|i| {
            let lba = i * u64::from(LARGE_BLOCKS);
            (q.submit_read(1, Lba(lba), LARGE_BLOCKS, BLOCK).unwrap(), i)
        })
        .collect();
    for (cid, i) in reads {
        let got = q.queue.wait(cid).unwrap().success().unwrap().data;
        assert!(got == pattern(large, 1000 + i).to_vec(), "large read {i}");
    }
    wait_until("a polling reactor to find work without sleeping", || {
        f.target.stats().polled > 0
    });
    wait_until("the reactors to stop polling", || {
        f.target.stats().polling == 0
    });
    // Then they sleep as reactors that never polled do.
    assert_idle_reactors_sleep(&f, 2);
    assert_eq!(f.target.stats().polling, 0, "an idle reactor polls again");
}

/// A deferred piece of work (an I/O start or a completion).
type Deferred = Box<dyn FnOnce() + Send>;

/// Completions queued for one reactor thread's poller, and the eventfd that
/// tells the reactor to poll.
struct PollerInbox {
    queue: parking_lot::Mutex<Vec<Deferred>>,
    eventfd: EventFd,
    /// Operations started on the reactor thread, run only when it submits.
    unstarted: parking_lot::Mutex<Vec<Deferred>>,
}

thread_local! {
    static THIS_REACTOR: std::cell::RefCell<Option<Arc<PollerInbox>>> =
        const { std::cell::RefCell::new(None) };
}

/// A reactor's poller for [`PolledNamespace`]: runs the completions queued for
/// this reactor thread, counting them.
struct TestPoller {
    inbox: Arc<PollerInbox>,
    ran: Arc<std::sync::atomic::AtomicUsize>,
}

impl crate::ReactorPoller for TestPoller {
    fn event_fd(&self) -> std::os::fd::RawFd {
        self.inbox.eventfd.as_raw_fd()
    }

    fn poll(&mut self) {
        // The eventfd is not read here: reactors consume or edge-watch it.
        let due = std::mem::take(&mut *self.inbox.queue.lock());
        self.ran.fetch_add(due.len(), Ordering::Relaxed);
        for done in due {
            done();
        }
    }

    fn submit(&mut self) {
        let started = std::mem::take(&mut *self.inbox.unstarted.lock());
        for start in started {
            start();
        }
    }

    fn lend_ring(&mut self) -> Option<Box<dyn crate::LentRing>> {
        Some(Box::new(UnfitRing))
    }
}

/// A lent ring the reactor must refuse (its kernel cannot be probed), so it
/// keeps a ring of its own and joins the poller by its eventfd; the reactor
/// never uses it.
struct UnfitRing;

impl crate::LentRing for UnfitRing {
    fn with_submission(&mut self, _: &mut dyn FnMut(&mut ::uring::LentQueue<'_, '_>)) {
        unreachable!("a refused ring is never used")
    }
    fn submit(&mut self) -> std::io::Result<()> {
        unreachable!("a refused ring is never used")
    }
    fn submit_and_wait(&mut self, _: Duration) -> std::io::Result<()> {
        unreachable!("a refused ring is never used")
    }
    fn reap(&mut self, _: &mut Vec<(u64, i32)>) {
        unreachable!("a refused ring is never used")
    }
    fn has_pending(&mut self) -> bool {
        unreachable!("a refused ring is never used")
    }
    fn params(&self) -> io_uring::Parameters {
        unreachable!("the reactor probes first, and the probe fails")
    }
    fn probe(&self) -> std::io::Result<io_uring::Probe> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "no probe",
        ))
    }
}

/// A memory namespace that starts I/O only when the reactor thread that asked
/// for it submits, and whose completions come back only through that thread's
/// poller, handed over by another thread (so the reactor may be asleep when they
/// arrive) — like an engine's per-thread ring.
struct PolledNamespace {
    inner: Arc<MemoryNamespace>,
    deliver: crossbeam_channel::Sender<(Arc<PollerInbox>, Deferred)>,
}

impl PolledNamespace {
    /// Queues `op` (the inner namespace's call) until the reactor submits, and
    /// routes its completion back through the courier and the poller.
    fn defer<T: Send + 'static>(
        &self,
        done: crate::Completion<T>,
        op: impl FnOnce(Arc<MemoryNamespace>, crate::Completion<T>) + Send + 'static,
    ) {
        let inbox = THIS_REACTOR
            .with(|r| r.borrow().clone())
            .expect("I/O starts on a reactor thread with a poller");
        let deliver = self.deliver.clone();
        let routed_inbox = inbox.clone();
        let routed: crate::Completion<T> = Box::new(move |result| {
            let _ = deliver.send((routed_inbox, Box::new(move || done(result))));
        });
        let inner = self.inner.clone();
        inbox
            .unstarted
            .lock()
            .push(Box::new(move || op(inner, routed)));
    }
}

impl crate::NamespaceBackend for PolledNamespace {
    fn block_size(&self) -> BlockSize {
        self.inner.block_size()
    }
    fn capacity_blocks(&self) -> u64 {
        self.inner.capacity_blocks()
    }
    fn uuid(&self) -> [u8; 16] {
        self.inner.uuid()
    }
    fn volatile_write_cache(&self) -> bool {
        self.inner.volatile_write_cache()
    }
    fn read(&self, lba: Lba, blocks: u32, done: crate::Completion<Bytes>) {
        self.defer(done, move |ns, done| ns.read(lba, blocks, done));
    }
    fn write(&self, lba: Lba, data: Bytes, done: crate::Completion<()>) {
        self.defer(done, move |ns, done| ns.write(lba, data, done));
    }
    fn flush(&self, done: crate::Completion<()>) {
        self.defer(done, move |ns, done| ns.flush(done));
    }
    fn write_zeroes(&self, lba: Lba, blocks: u32, done: crate::Completion<()>) {
        self.defer(done, move |ns, done| ns.write_zeroes(lba, blocks, done));
    }
    fn deallocate(&self, ranges: Vec<crate::LbaRange>, done: crate::Completion<()>) {
        self.defer(done, move |ns, done| ns.deallocate(ranges, done));
    }
}

fn completions_delivered_through_the_reactor_poller_reach_their_hosts(kind: ReactorKind) {
    let (deliver, delivered) = crossbeam_channel::unbounded::<(Arc<PollerInbox>, Deferred)>();
    let courier = std::thread::spawn(move || {
        for (inbox, done) in delivered {
            inbox.queue.lock().push(done);
            inbox.eventfd.signal().unwrap();
        }
    });
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let subsystem = Subsystem::new(SubsystemConfig::new(NQN, "KEELREACTOR1"));
    let ns = Arc::new(PolledNamespace {
        inner: MemoryNamespace::new(BlockSize::B4096, 4096, [0x5E; 16]),
        deliver,
    });
    subsystem.add_namespace(1, ns, HostAcl::AnyHost).unwrap();
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let mut config = TargetConfig::on(local.ip());
    config.listen_addrs = vec![local];
    config.discovery_addrs = Vec::new();
    config.reactors = 2;
    config.reactor_kind = kind;
    let (ran2, made2) = (ran.clone(), made.clone());
    config.reactor_poller = Some(Arc::new(move || {
        let inbox = Arc::new(PollerInbox {
            queue: parking_lot::Mutex::new(Vec::new()),
            eventfd: EventFd::new().unwrap(),
            unstarted: parking_lot::Mutex::new(Vec::new()),
        });
        THIS_REACTOR.with(|r| *r.borrow_mut() = Some(inbox.clone()));
        made2.fetch_add(1, Ordering::Relaxed);
        Some(Box::new(TestPoller {
            inbox,
            ran: ran2.clone(),
        }) as Box<dyn crate::ReactorPoller>)
    }));
    let target = Target::start(config, subsystem.clone()).unwrap();
    assert_eq!(made.load(Ordering::Relaxed), 2, "one poller per reactor");
    assert_eq!(
        target.stats().shared_rings,
        0,
        "an unfit lent ring is refused"
    );
    let f = Fixture { subsystem, target };
    let (_c, mut q) = f.connect();
    for lba in 0..32u64 {
        q.write(1, Lba(lba), pattern(BLOCK as usize, lba), BLOCK)
            .unwrap();
    }
    let cids: Vec<(u16, u64)> = (0..32u64)
        .map(|lba| (q.submit_read(1, Lba(lba), 1, BLOCK).unwrap(), lba))
        .collect();
    for (cid, lba) in cids {
        let got = q.queue.wait(cid).unwrap().success().unwrap().data;
        assert_eq!(got, pattern(BLOCK as usize, lba).to_vec());
    }
    assert_eq!(
        ran.load(Ordering::Relaxed),
        64,
        "every completion went through a poller"
    );
    drop(q);
    drop(_c);
    drop(f);
    courier.join().unwrap();
}

/// Resolves `requested` for `count` reactors where io_uring can be set up for
/// the first `uring_works` of them; returns the kind in use, the reactors
/// started, the error, and the kinds tried in order.
fn resolve(
    requested: ReactorKind,
    count: usize,
    uring_works: usize,
) -> (ReactorKind, usize, Option<StartError>, Vec<ReactorKind>) {
    let mut tried = Vec::new();
    let mut urings = 0;
    let (kind, started) = start_reactors(count, requested, |kind, _| {
        tried.push(kind);
        if kind == ReactorKind::Uring {
            urings += 1;
            if urings > uring_works {
                return Err(std::io::Error::from_raw_os_error(libc::EPERM));
            }
        }
        let (inbox, _rx) = Inbox::new(Doorbell::Uring(Arc::new(EventFd::new()?)));
        Ok((inbox, std::thread::spawn(|| {})))
    });
    let count = started.started.len();
    for (_, thread) in started.started {
        thread.join().unwrap();
    }
    (kind, count, started.error, tried)
}

#[test]
fn auto_uses_io_uring_where_the_kernel_allows_it() {
    let (kind, started, error, tried) = resolve(ReactorKind::Auto, 2, usize::MAX);
    assert_eq!((kind, started), (ReactorKind::Uring, 2));
    assert!(error.is_none());
    assert_eq!(tried, [ReactorKind::Uring, ReactorKind::Uring]);
}

#[test]
fn auto_falls_back_to_epoll_when_io_uring_cannot_be_set_up() {
    let (kind, started, error, tried) = resolve(ReactorKind::Auto, 3, 0);
    assert_eq!((kind, started), (ReactorKind::Epoll, 3));
    assert!(error.is_none());
    assert_eq!(
        tried,
        [
            ReactorKind::Uring,
            ReactorKind::Epoll,
            ReactorKind::Epoll,
            ReactorKind::Epoll
        ]
    );
}

#[test]
fn explicit_uring_fails_to_start_without_io_uring() {
    let (_, started, error, _) = resolve(ReactorKind::Uring, 2, 0);
    assert_eq!(started, 0);
    assert!(matches!(error, Some(StartError::UringUnavailable(_))));
    // Reactors never mix kinds: a later reactor failing is an error too.
    let (_, started, error, tried) = resolve(ReactorKind::Auto, 2, 1);
    assert_eq!(started, 1);
    assert!(matches!(error, Some(StartError::UringUnavailable(_))));
    assert_eq!(tried, [ReactorKind::Uring, ReactorKind::Uring]);
}

#[test]
fn explicit_epoll_never_tries_io_uring() {
    let (kind, started, error, tried) = resolve(ReactorKind::Epoll, 2, usize::MAX);
    assert_eq!((kind, started), (ReactorKind::Epoll, 2));
    assert!(error.is_none());
    assert_eq!(tried, [ReactorKind::Epoll, ReactorKind::Epoll]);
}

/// Adds namespace 2 to `f`, held to `limits`.
fn add_limited_namespace(f: &Fixture, limits: RateLimits) {
    let ns = MemoryNamespace::new(BlockSize::B4096, 4096, [0x77; 16]);
    f.subsystem
        .add_namespace(
            2,
            ns,
            NamespaceOptions::new(HostAcl::AnyHost).with_rate_limits(limits),
        )
        .unwrap();
}

/// Reads of a rate-limited namespace wait their turn (never fail), while
/// reads of another namespace submitted on the same queue behind them
/// complete at once: a held command holds up nothing but its own namespace.
fn rate_limited_commands_wait_without_holding_up_other_namespaces(kind: ReactorKind) {
    let f = Fixture::start(kind, 1);
    add_limited_namespace(
        &f,
        RateLimits {
            read_iops: Some(10),
            ..RateLimits::UNLIMITED
        },
    );
    let (_c, mut q) = f.connect();
    let started = Instant::now();
    // At 10 reads/s with a burst of one, two start at once and the last of
    // 20 cannot start before 1.8 s.
    let limited: Vec<u16> = (0..20)
        .map(|i| q.submit_read(2, Lba(i), 1, BLOCK).unwrap())
        .collect();
    for i in 0..50 {
        let cid = q.submit_read(1, Lba(i), 1, BLOCK).unwrap();
        q.queue.wait(cid).unwrap().success().unwrap();
    }
    let free_done = started.elapsed();
    for cid in limited {
        q.queue.wait(cid).unwrap().success().unwrap();
    }
    let limited_done = started.elapsed();
    assert!(
        limited_done >= Duration::from_millis(1700),
        "20 reads at 10/s finished in {limited_done:?}"
    );
    assert!(
        free_done < limited_done / 2,
        "the unlimited namespace waited behind the limited one: {free_done:?} of {limited_done:?}"
    );
    let stats = f.subsystem.namespace_throttle_stats(2).unwrap();
    assert!(stats.delayed_commands >= 18, "{stats:?}");
    assert_eq!(
        f.subsystem
            .namespace_throttle_stats(1)
            .unwrap()
            .delayed_commands,
        0
    );
}

/// New limits take effect on a namespace whose commands are held: lifting
/// them releases the backlog at once.
fn lifting_a_limit_releases_held_commands(kind: ReactorKind) {
    let f = Fixture::start(kind, 1);
    add_limited_namespace(
        &f,
        RateLimits {
            write_iops: Some(1),
            ..RateLimits::UNLIMITED
        },
    );
    let (_c, mut q) = f.connect();
    let started = Instant::now();
    let held: Vec<u16> = (0..10)
        .map(|i| q.submit_write(2, Lba(i), pattern(4096, i), BLOCK).unwrap())
        .collect();
    wait_until("writes to be held", || {
        f.subsystem
            .namespace_throttle_stats(2)
            .is_some_and(|s| s.limits.write_iops == Some(1))
            && started.elapsed() > Duration::from_millis(100)
    });
    f.subsystem
        .set_namespace_rate_limits(2, RateLimits::UNLIMITED)
        .unwrap();
    for cid in held {
        q.queue.wait(cid).unwrap().success().unwrap();
    }
    // At 1 write/s the second write could not start before one second.
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    for i in 0..10 {
        assert_eq!(
            q.read(2, Lba(i), 1, BLOCK).unwrap(),
            pattern(4096, i).to_vec()
        );
    }
}

include!("for_each_reactor_kind.rs");

for_each_reactor_kind!(
    crate::ReactorKind;
    closing_with_receives_and_sends_in_flight_frees_everything,
    short_sends_deliver_every_byte_in_order,
    many_connections_on_one_reactor_keep_their_data_apart,
    host_vanishing_mid_write_leaks_nothing,
    shutdown_with_sends_in_flight_frees_everything,
    idle_reactors_sleep,
    polling_reactors_serve_and_go_back_to_sleep,
    completions_delivered_through_the_reactor_poller_reach_their_hosts,
    rate_limited_commands_wait_without_holding_up_other_namespaces,
    lifting_a_limit_releases_held_commands,
);
