//! The engine's per-thread I/O ring as a reactor's backend poller: volume I/O a
//! reactor starts is submitted to the kernel from the reactor thread and
//! completes there, with no wake-up of the engine's ring thread or of the
//! reactor. The ring is also lent to the reactor for its socket operations
//! (DESIGN.md's thread model: one ring per reactor for sockets and device I/O
//! alike), so one `io_uring_enter` submits both and one wait covers both.

use std::os::fd::{AsRawFd, RawFd};

use engine::io::LocalRing;
use nvmf_target::{LentRing, ReactorPoller, ReactorPollerFactory};

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

    fn lend_ring(&mut self) -> Option<Box<dyn LentRing>> {
        Some(Box::new(self.0.share()))
    }

    fn start_together(&mut self, start: &mut dyn FnMut()) {
        // The round's writes share log batches; the plug's release forms them
        // before the reactor moves on (it never waits while holding it).
        let _plug = engine::WritePlug::new();
        start();
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::net::{Ipv4Addr, SocketAddr};
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use engine::io::BackingKind;
    use engine::{DeviceSpec, Engine, EngineConfig, SectorSize};
    use nvmf_target::host::{HostController, HostOptions, IoQueue, Response};
    use nvmf_target::subsystem::{HostAcl, Subsystem, SubsystemConfig};
    use nvmf_target::{Lba, ReactorKind, ReactorStats, Target, TargetConfig, TargetHandle};

    use super::engine_ring_pollers;
    use crate::adapters::VolumeNamespace;

    const NQN: &str = "nqn.2026-11.io.keel:shared-ring";
    const BLOCK: u32 = 4096;
    const BLOCKS: u64 = 2048;

    /// A block's contents: its number and the pass that wrote it.
    fn pattern(lba: u64, pass: u8) -> Bytes {
        let mut block = vec![pass; BLOCK as usize];
        block[..8].copy_from_slice(&lba.to_le_bytes());
        Bytes::from(block)
    }

    /// An engine volume served by a target of two reactors of `kind` with
    /// engine rings (shared by io_uring reactors, joined by eventfd to epoll
    /// ones).
    struct Served {
        _dir: tempfile::TempDir,
        engine: Arc<Engine>,
        volume: engine::VolumeId,
        target: TargetHandle,
    }

    fn serve(kind: ReactorKind) -> Served {
        serve_polling(kind, Duration::ZERO)
    }

    /// As [`serve`], with reactors that poll for `busy_poll` after serving.
    fn serve_polling(kind: ReactorKind, busy_poll: Duration) -> Served {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = DeviceSpec {
            path: dir.path().join("pool"),
            kind: BackingKind::File,
            create_size: Some(256 << 20),
        };
        let engine =
            Arc::new(Engine::open_paths(&[spec], EngineConfig::default(), false).expect("engine"));
        let volume = engine
            .create_volume("shared", BLOCKS * u64::from(BLOCK), SectorSize::B4096)
            .expect("volume")
            .id;
        let subsystem = Subsystem::new(SubsystemConfig::new(NQN, "KEELSHARED01"));
        let namespace = VolumeNamespace::new(engine.clone(), volume, SectorSize::B4096, [9; 16]);
        subsystem
            .add_namespace(1, Arc::new(namespace), HostAcl::AnyHost)
            .expect("namespace");
        let mut config = TargetConfig::on(Ipv4Addr::LOCALHOST.into());
        config.listen_addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))];
        config.discovery_addrs = Vec::new();
        config.reactors = 2;
        config.reactor_kind = kind;
        config.reactor_poller = Some(engine_ring_pollers());
        config.busy_poll = busy_poll;
        let target = Target::start(config, subsystem).expect("target");
        let sharing = if kind == ReactorKind::Uring { 2 } else { 0 };
        assert_eq!(
            target.stats().shared_rings,
            sharing,
            "io_uring reactors, and only they, wait on their engine rings"
        );
        Served {
            _dir: dir,
            engine,
            volume,
            target,
        }
    }

    impl Served {
        /// Connects a host named `nqn` with a 128-entry I/O queue.
        fn host(&self, nqn: &str) -> (HostController, IoQueue) {
            connect(self.target.local_addrs()[0], nqn, 128)
        }
    }

    /// Connects a host named `nqn` (no keep-alive) with one I/O queue of
    /// `queue_size` entries.
    fn connect(addr: SocketAddr, nqn: &str, queue_size: u16) -> (HostController, IoQueue) {
        let mut options = HostOptions::new(nqn, NQN);
        options.kato_ms = 0;
        options.timeout = Duration::from_secs(30);
        options.queue_size = queue_size;
        let mut ctrl = HostController::connect(addr, options).expect("connect");
        ctrl.set_queue_count(1).expect("queue count");
        let io = ctrl.connect_io_queue(1).expect("I/O queue");
        (ctrl, io)
    }

    /// Waits up to 20 s until the target's counters satisfy `done`, reading
    /// them every 20 ms (they have no notifier).
    fn wait_for_stats(target: &TargetHandle, what: &str, done: impl Fn(&ReactorStats) -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let stats = target.stats();
            if done(&stats) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {stats:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts one command per block of `lbas` with `submit`, keeping at most
    /// 64 in flight, and hands each completion with its block to `done`.
    fn per_block_in_flight(
        io: &mut IoQueue,
        lbas: &[u64],
        submit: impl Fn(&mut IoQueue, u64) -> u16,
        mut done: impl FnMut(u64, Response),
    ) {
        let mut in_flight = HashMap::new();
        let mut complete_one = |io: &mut IoQueue, in_flight: &mut HashMap<u16, u64>| {
            let (cid, response) = io.queue.wait_any().expect("completion");
            done(in_flight.remove(&cid).expect("a command of ours"), response);
        };
        for &lba in lbas {
            if in_flight.len() >= 64 {
                complete_one(io, &mut in_flight);
            }
            in_flight.insert(submit(io, lba), lba);
        }
        while !in_flight.is_empty() {
            complete_one(io, &mut in_flight);
        }
    }

    /// Every io_uring reactor shares its engine ring, and hosts on both
    /// reactors write and read back an engine volume through them with 64
    /// commands in flight.
    #[test]
    fn reactors_run_sockets_and_volume_io_on_one_ring() {
        hosts_write_and_read_back(ReactorKind::Uring, Duration::ZERO);
    }

    /// The epoll reactor keeps socket readiness apart and polls the engine
    /// ring when its eventfd fires.
    #[test]
    fn epoll_reactors_poll_their_engine_rings_by_eventfd() {
        hosts_write_and_read_back(ReactorKind::Epoll, Duration::ZERO);
    }

    /// Reactors that busy-poll their engine rings (the spin checks the ring's
    /// shared memory for engine and socket completions) and polling hosts
    /// move the same data.
    #[test]
    fn polling_reactors_serve_volume_io_from_their_engine_rings() {
        hosts_write_and_read_back(ReactorKind::Uring, Duration::from_millis(2));
    }

    /// The same with epoll reactors, whose poll checks socket readiness and
    /// the engine ring's eventfd without sleeping.
    #[test]
    fn polling_epoll_reactors_serve_volume_io() {
        hosts_write_and_read_back(ReactorKind::Epoll, Duration::from_millis(2));
    }

    /// Two hosts, one per reactor, each write their half of the volume twice
    /// and read every block back after each pass; reactors and hosts poll for
    /// `busy_poll` (zero: they never poll).
    fn hosts_write_and_read_back(kind: ReactorKind, busy_poll: Duration) {
        let Served {
            _dir,
            engine,
            volume,
            target,
        } = serve_polling(kind, busy_poll);
        let addr = target.local_addrs()[0];
        let workers: Vec<_> = (0..2u64)
            .map(|host| {
                std::thread::spawn(move || {
                    let nqn = format!("nqn.2026-11.io.keel:host-{host}");
                    let (ctrl, mut io) = connect(addr, &nqn, 128);
                    io.queue.set_busy_poll(busy_poll);
                    // Each host owns half of the volume.
                    let lbas: Vec<u64> = (host * BLOCKS / 2..(host + 1) * BLOCKS / 2).collect();
                    for pass in 1..=2u8 {
                        per_block_in_flight(
                            &mut io,
                            &lbas,
                            |io, lba| {
                                io.submit_write(1, Lba(lba), pattern(lba, pass), BLOCK)
                                    .expect("submit write")
                            },
                            |_, r| {
                                r.success().expect("write succeeded");
                            },
                        );
                        per_block_in_flight(
                            &mut io,
                            &lbas,
                            |io, lba| io.submit_read(1, Lba(lba), 1, BLOCK).expect("read"),
                            |lba, r| {
                                let data = r.success().expect("read").data;
                                assert!(data == pattern(lba, pass), "block {lba} pass {pass}");
                            },
                        );
                    }
                    io.flush(1).expect("flush");
                    ctrl.shutdown().expect("disconnect");
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("host thread");
        }
        if !busy_poll.is_zero() {
            // Published at the reactors' next tick.
            wait_for_stats(
                &target,
                "a polling reactor to find work without sleeping",
                |s| s.polled > 0,
            );
        }
        target.shutdown();
        let back = engine.read_wait(volume, 7, 1).expect("read");
        assert!(back == pattern(7, 2), "the engine holds the last pass");
    }

    /// A reactor waiting on its engine ring sleeps until its tick when nothing
    /// happens (a wait that found collected completions would not sleep).
    #[test]
    fn idle_reactors_on_engine_rings_sleep() {
        let served = serve(ReactorKind::Uring);
        let (_ctrl, mut io) = served.host("nqn.2026-11.io.keel:idle");
        io.write(1, Lba(3), pattern(3, 1), BLOCK).expect("write");
        let before = served.target.stats().wakeups;
        // A fixed window: two reactors with 200 ms ticks wake a handful of
        // times in it; spinning ones would wake thousands of times.
        std::thread::sleep(Duration::from_millis(500));
        let woke = served.target.stats().wakeups - before;
        assert!(woke <= 60, "idle reactors woke {woke} times in 500 ms");
        assert!(io.read(1, Lba(3), 1, BLOCK).expect("read") == pattern(3, 1));
        served.target.shutdown();
    }

    /// Stopping the target while a host has writes in flight finishes the
    /// engine I/O the reactors started on their rings: the target stops, and
    /// every block then holds either its old or its new contents.
    #[test]
    fn a_target_stopped_with_volume_io_in_flight_finishes_it() {
        let served = serve(ReactorKind::Uring);
        let (_ctrl, mut io) = served.host("nqn.2026-11.io.keel:stopping");
        for lba in 0..64 {
            io.write(1, Lba(lba), pattern(lba, 1), BLOCK)
                .expect("first pass");
        }
        for lba in 0..64 {
            io.submit_write(1, Lba(lba), pattern(lba, 2), BLOCK)
                .expect("second pass");
        }
        served.target.shutdown();
        assert_eq!(served.engine.flush_wait(), Ok(()));
        for lba in 0..64 {
            let back = served
                .engine
                .read_wait(served.volume, lba, 1)
                .expect("read");
            assert!(
                back == pattern(lba, 1) || back == pattern(lba, 2),
                "block {lba} holds neither pass"
            );
        }
    }

    /// Hosts that vanish with commands in flight (their sockets closed, no
    /// disconnect) leak nothing on the shared rings: every connection and
    /// socket operation is released, the engine finishes what it started, and
    /// no block is left torn.
    #[test]
    fn hosts_vanishing_mid_transfer_leak_nothing() {
        const HOSTS: u64 = 3;
        const ROUNDS: u64 = 12;
        const SPAN: u64 = BLOCKS / HOSTS;
        let served = serve(ReactorKind::Uring);
        let addr = served.target.local_addrs()[0];
        let workers: Vec<_> = (0..HOSTS)
            .map(|host| {
                std::thread::spawn(move || {
                    // xorshift64: a fixed, reproducible mix per host.
                    let mut state = 0x9E37_79B9_7F4A_7C15 ^ (host + 1);
                    let mut next = move |bound: u64| {
                        state ^= state << 13;
                        state ^= state >> 7;
                        state ^= state << 17;
                        state % bound
                    };
                    for round in 0..ROUNDS {
                        let nqn = format!("nqn.2026-11.io.keel:vanishing-{host}");
                        let (ctrl, mut io) = connect(addr, &nqn, 64);
                        let pass = u8::try_from(round + 1).expect("few rounds");
                        for _ in 0..48 {
                            let lba = host * SPAN + next(SPAN);
                            if next(2) == 0 {
                                io.submit_write(1, Lba(lba), pattern(lba, pass), BLOCK)
                                    .expect("submit write");
                            } else {
                                io.submit_read(1, Lba(lba), 1, BLOCK).expect("submit read");
                            }
                        }
                        for _ in 0..next(48) {
                            let (_, response) = io.queue.wait_any().expect("completion");
                            response.success().expect("command succeeded");
                        }
                        // Vanish: the sockets close with the rest in flight.
                        drop(io);
                        drop(ctrl);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.join().expect("host thread");
        }
        wait_for_stats(
            &served.target,
            "the vanished hosts' connections to be freed",
            |s| s.connections == 0 && s.ring_ops_in_flight == 0,
        );
        let (_ctrl, mut io) = connect(addr, "nqn.2026-11.io.keel:checker", 128);
        for lba in 0..HOSTS * SPAN {
            let block = io.read(1, Lba(lba), 1, BLOCK).expect("read");
            let whole = block.iter().all(|&b| b == 0)
                || (block[..8] == lba.to_le_bytes() && block[8..].iter().all(|&b| b == block[8]));
            assert!(whole, "block {lba} is torn");
        }
        served.target.shutdown();
    }
}
