//! NVMe/TCP end-to-end benchmark: the same workloads run engine-local (the
//! engine's completion API, a submitting thread with its own engine ring) and
//! through the NVMe/TCP target over loopback with our host side
//! (`nvmf_target::host`, an I/O queue and its submitting thread), one lane
//! each by default, in the same run on the same volume. Prints a markdown
//! table with IOPS, MiB/s, mean and p99 latency, the target/engine-local IOPS
//! ratio and the mean latency the target adds. A third column set runs the same
//! NVMe/TCP path against a RAM namespace, separating the transport's cost from
//! the engine's, and a plain TCP ping-pong of the same sizes over loopback (no
//! NVMe at all) gives the floor any target's added QD1 latency sits on here.
//!
//! The target is started in-process (engine on a file, `keel::adapters::
//! VolumeNamespace`, `Subsystem`, `Target::start` on 127.0.0.1, an engine ring
//! per reactor) — the same composition keeld makes, without the REST API, so only the NVMe/TCP path is
//! measured.
//!
//! `cargo bench --bench nvmf_e2e` (KEEL_BENCH_SECONDS sets each run's length,
//! default 3; KEEL_BENCH_DIR the directory of the pool file, default `target/`;
//! KEEL_BENCH_REACTORS the target's reactor threads, default one per core;
//! KEEL_BENCH_ONLY=<text> runs only the workloads whose name contains it;
//! KEEL_BENCH_POLL_US how long the reactors, the host and the engine-local
//! thread poll before sleeping, default keeld's reactor window, 0 never;
//! KEEL_BENCH_ROUNDS how many times each workload runs engine-local and
//! through the target in turn, default 1: the table shows the round with the
//! median ratio and lists every round's, since one pair of runs on a shared VM
//! can land anywhere in a wide spread; KEEL_BENCH_QUEUES how many lanes share
//! each workload's queue depth, default 1: through the target each lane is an
//! I/O queue of its own with its own host thread, as a Linux host opens one
//! queue per CPU; engine-local each lane is a thread with its own engine ring).

mod common;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::figures::{Figures, Latencies, Precision, ThreadUsage};
use common::host_load::HostLoad;
use common::load::{fill, keep_in_flight, EngineLoad, Pattern, Receive, Workload};
use common::loopback::{tcp_ping_pong, PING_BYTES, PONG_BYTES};
use common::process::load_average;
use common::{bench_dir, env_u64};
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig, SectorSize, VolumeId};
use keel::adapters::VolumeNamespace;
use nvmf_target::host::{HostController, HostOptions, IoQueue};
use nvmf_target::{
    BlockSize, HostAcl, Lba, MemoryNamespace, Subsystem, SubsystemConfig, Target, TargetConfig,
};

/// Sparse pool file: room for every run's log writes (the engine has no cleaner
/// yet, so partially overwritten segments stay allocated).
const POOL_BYTES: u64 = 16 << 30;
/// The volume, fully written before the first measured run.
const REGION_BYTES: u64 = 1 << 30;
const BLOCK: u32 = 4096;
const NQN: &str = "nqn.2024-11.io.keel:bench";
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:bench000-0000-4000-8000-000000000001";
/// The engine volume's namespace.
const NSID: u32 = 1;
/// A RAM namespace of the same size: the target and host side with (almost) no
/// storage cost, i.e. the transport's ceiling on this machine.
const RAM_NSID: u32 = 2;
/// Latency samples kept per run before the vector grows.
const SAMPLES_RESERVED: usize = 1 << 20;

const WORKLOADS: [Workload; 8] = [
    Workload {
        name: "rand read 4k qd1",
        pattern: Pattern::RandRead,
        block_bytes: 4096,
        depth: 1,
    },
    Workload {
        name: "rand read 4k qd32",
        pattern: Pattern::RandRead,
        block_bytes: 4096,
        depth: 32,
    },
    Workload {
        name: "rand read 4k qd128",
        pattern: Pattern::RandRead,
        block_bytes: 4096,
        depth: 128,
    },
    Workload {
        name: "rand write 4k qd1",
        pattern: Pattern::RandWrite,
        block_bytes: 4096,
        depth: 1,
    },
    Workload {
        name: "rand write 4k qd32",
        pattern: Pattern::RandWrite,
        block_bytes: 4096,
        depth: 32,
    },
    Workload {
        name: "rand write 4k qd128",
        pattern: Pattern::RandWrite,
        block_bytes: 4096,
        depth: 128,
    },
    Workload {
        name: "seq read 128k qd32",
        pattern: Pattern::SeqRead,
        block_bytes: 128 << 10,
        depth: 32,
    },
    Workload {
        name: "seq write 128k qd32",
        pattern: Pattern::SeqWrite,
        block_bytes: 128 << 10,
        depth: 32,
    },
];

fn seconds() -> u64 {
    match env_u64("KEEL_BENCH_SECONDS", 3) {
        0 => 3,
        s => s,
    }
}

/// Target reactor threads (KEEL_BENCH_REACTORS; 0, the default, is one per core
/// as in keeld).
fn reactors() -> usize {
    std::env::var("KEEL_BENCH_REACTORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Lanes sharing each workload's depth (KEEL_BENCH_QUEUES; default and
/// minimum 1).
fn queues() -> usize {
    usize::try_from(env_u64("KEEL_BENCH_QUEUES", 1))
        .unwrap_or(1)
        .max(1)
}

/// How many lanes run workload `w` with `queues` configured (never more than
/// its depth), and the depth each keeps.
fn lanes_of(w: Workload, queues: usize) -> (usize, usize) {
    let lanes = queues.min(w.depth).max(1);
    (lanes, w.depth / lanes)
}

/// Runs `lane` on a scoped thread per item, all at once, and merges what the
/// lanes measured: every latency, the longest elapsed time, and the summed
/// usage of the lanes' own threads.
fn in_lanes<T: Send>(
    items: &mut [T],
    lane: impl Fn(usize, &mut T) -> (Latencies, Duration, ThreadUsage) + Sync,
) -> (Latencies, Duration, ThreadUsage) {
    let results: Vec<_> = std::thread::scope(|scope| {
        let lane = &lane;
        let handles: Vec<_> = items
            .iter_mut()
            .enumerate()
            .map(|(i, item)| scope.spawn(move || lane(i, item)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench lane"))
            .collect()
    });
    let mut all = Latencies::with_capacity(SAMPLES_RESERVED);
    let mut longest = Duration::ZERO;
    let mut used = ThreadUsage::default();
    for (mut latencies, elapsed, usage) in results {
        all.append(&mut latencies);
        longest = longest.max(elapsed);
        used.cpu += usage.cpu;
        used.switches += usage.switches;
    }
    (all, longest, used)
}

/// Rounds of each workload (KEEL_BENCH_ROUNDS; default and minimum 1).
fn rounds() -> usize {
    usize::try_from(env_u64("KEEL_BENCH_ROUNDS", 1))
        .unwrap_or(1)
        .max(1)
}

/// One round of a workload: engine-local, through the target to the engine
/// volume, and through the target to the RAM namespace, run back to back.
struct Round {
    local: Figures,
    remote: Figures,
    ram: Figures,
    remote_costs: Costs,
    ram_costs: Costs,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.remote.iops / self.local.iops.max(1e-9)
    }

    fn added_us(&self) -> f64 {
        self.remote.mean_us - self.local.mean_us
    }
}

/// A workload's rounds, sorted by ratio.
struct Rounds(Vec<Round>);

impl Rounds {
    /// The round with the median ratio (the lower middle one of an even count).
    fn median(&self) -> &Round {
        &self.0[(self.0.len() - 1) / 2]
    }

    /// Every round's `figure`, comma-separated in ratio order.
    fn each(&self, figure: impl Fn(&Round) -> String) -> String {
        self.0.iter().map(figure).collect::<Vec<_>>().join(", ")
    }
}

/// How long every waiting side polls before it sleeps: the target's reactors,
/// our host, and the engine-local thread alike (KEEL_BENCH_POLL_US; default
/// keeld's reactor window; 0 makes every side sleep whenever it waits).
fn polling_window() -> Duration {
    Duration::from_micros(env_u64(
        "KEEL_BENCH_POLL_US",
        keel::config::DEFAULT_BUSY_POLL_US,
    ))
}

/// Engine-local: the engine's completion API from `lanes` threads, each with
/// its own engine ring (as each reactor has), `depth` in flight per lane.
fn run_local(
    engine: &Arc<Engine>,
    volume: VolumeId,
    w: Workload,
    run: Duration,
    receive: Receive,
    (lanes, depth): (usize, usize),
) -> Figures {
    let (latencies, elapsed, _) = in_lanes(&mut vec![(); lanes], |lane, _| {
        // Kept attached for the run: completions are polled by the receive below.
        let _ring = engine::io::LocalRing::attach().expect("engine ring for the local run");
        let slots = w.slots(REGION_BYTES).lane(lane as u64, lanes as u64);
        let mut load = EngineLoad::new(engine, volume, receive, w.engine_ops_over(slots, 0x5A));
        let mut latencies = Latencies::with_capacity(SAMPLES_RESERVED);
        let started = Instant::now();
        let deadline = started + run;
        let finished = keep_in_flight(&mut load, depth, |_, done| {
            if let Err(err) = done.result {
                panic!("{} engine-local: I/O failed: {err}", w.name);
            }
            latencies.record(done.latency());
            Instant::now() < deadline
        });
        assert!(finished, "engine completion channel closed");
        (latencies, started.elapsed(), ThreadUsage::default())
    });
    Figures::of(latencies, Precision::Nanos, w.block_bytes, elapsed)
}

/// What a target run cost per operation: CPU µs and context switches of the
/// target's reactor threads, and of the host's submitting thread (this one).
#[derive(Clone, Copy, Default)]
struct Costs {
    reactor_cpu_us: f64,
    reactor_switches: f64,
    host_cpu_us: f64,
    host_switches: f64,
}

/// Through the target: our host side on `lanes` I/O queues, each driven by a
/// thread of its own with `depth` in flight; the figures, and what the run
/// cost the reactors and the host threads.
fn run_target(
    ios: &mut [IoQueue],
    nsid: u32,
    w: Workload,
    run: Duration,
    (lanes, depth): (usize, usize),
) -> (Figures, Costs) {
    let reactors_before = ThreadUsage::of_threads("nvmf-reactor");
    let (latencies, elapsed, host) = in_lanes(&mut ios[..lanes], |lane, io| {
        let mut load = HostLoad::new(
            io,
            nsid,
            w,
            w.slots(REGION_BYTES).lane(lane as u64, lanes as u64),
        );
        let mut latencies = Latencies::with_capacity(SAMPLES_RESERVED);
        let host_before = ThreadUsage::of_this_thread();
        let started = Instant::now();
        let deadline = started + run;
        keep_in_flight(&mut load, depth, |_, at| {
            latencies.record(at.elapsed());
            Instant::now() < deadline
        });
        let elapsed = started.elapsed();
        (
            latencies,
            elapsed,
            ThreadUsage::of_this_thread().since(host_before),
        )
    });
    let ops = latencies.len() as f64;
    let (reactor_cpu_us, reactor_switches) =
        ThreadUsage::of_threads("nvmf-reactor").per_op_since(reactors_before, ops);
    let (host_cpu_us, host_switches) = host.per_op_since(ThreadUsage::default(), ops);
    let costs = Costs {
        reactor_cpu_us,
        reactor_switches,
        host_cpu_us,
        host_switches,
    };
    let figures = Figures::of(latencies, Precision::Nanos, w.block_bytes, elapsed);
    (figures, costs)
}

/// Writes the whole RAM namespace once, as the engine volume is prefilled:
/// its memory is allocated zeroed and lazily, so otherwise the first round's
/// writes fault in fresh pages and the transport's ceiling reads low.
fn touch_every_page(ram: &MemoryNamespace) {
    use nvmf_target::backend::NamespaceBackend;
    const PIECE_BYTES: u64 = 1 << 20;
    let piece = Bytes::from(vec![0x3Cu8; PIECE_BYTES as usize]);
    for at in (0..REGION_BYTES).step_by(PIECE_BYTES as usize) {
        ram.write(
            Lba(at / u64::from(BLOCK)),
            piece.clone(),
            Box::new(|result| result.expect("RAM namespace prefill")),
        );
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: the runs are timed measurements.
    }
    let run = Duration::from_secs(seconds());
    let path = bench_dir().join("keel-nvmf-bench-pool.img");
    let _ = std::fs::remove_file(&path);
    let spec = DeviceSpec {
        path: path.clone(),
        kind: BackingKind::File,
        create_size: Some(POOL_BYTES),
    };
    let engine = Arc::new(
        Engine::open_paths(&[spec], EngineConfig::default(), false)
            .expect("engine on the bench file"),
    );
    let info = engine
        .create_volume("bench", REGION_BYTES, SectorSize::B4096)
        .expect("volume");
    eprintln!("prefilling {} MiB ...", REGION_BYTES >> 20);
    // The whole region once so reads find mapped data (unmapped reads would
    // return zeroes without touching the device).
    fill(&engine, info.id, REGION_BYTES, 128 << 10, 32, 0xC3);
    engine.flush_wait().expect("prefill flush");

    let subsystem = Subsystem::new(SubsystemConfig::new(NQN, "KEELBENCH0001"));
    let namespace = VolumeNamespace::new(engine.clone(), info.id, SectorSize::B4096, [0x42; 16]);
    subsystem
        .add_namespace(NSID, Arc::new(namespace), HostAcl::AnyHost)
        .expect("namespace");
    let ram = MemoryNamespace::new(
        BlockSize::B4096,
        REGION_BYTES / u64::from(BLOCK),
        [0x43; 16],
    );
    touch_every_page(&ram);
    subsystem
        .add_namespace(RAM_NSID, ram, HostAcl::AnyHost)
        .expect("RAM namespace");
    let mut config = TargetConfig::on(Ipv4Addr::LOCALHOST.into());
    config.listen_addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))];
    config.discovery_addrs = Vec::new();
    config.reactors = reactors();
    // As keeld runs it: each reactor submits volume I/O on its own engine ring.
    config.reactor_poller = Some(keel::adapters::engine_ring_pollers());
    let poll = polling_window();
    config.busy_poll = poll;
    let target = Target::start(config, subsystem.clone()).expect("target on loopback");
    let mut options = HostOptions::new(HOST_NQN, NQN);
    options.kato_ms = 0;
    options.queue_size = 128;
    options.timeout = Duration::from_secs(30);
    let mut host = HostController::connect(target.local_addrs()[0], options).expect("host connect");
    let queues = queues();
    let granted = host
        .set_queue_count(u16::try_from(queues).expect("KEEL_BENCH_QUEUES fits a queue id"))
        .expect("queue count");
    assert!(
        usize::from(granted) >= queues,
        "target granted {granted} queues"
    );
    let mut ios: Vec<IoQueue> = (1..=queues as u16)
        .map(|qid| {
            let mut io = host.connect_io_queue(qid).expect("I/O queue");
            io.queue.set_busy_poll(poll);
            io
        })
        .collect();

    let load_before = load_average();
    let rounds = rounds();
    let mut rows = Vec::new();
    let only = std::env::var("KEEL_BENCH_ONLY").unwrap_or_default();
    for w in WORKLOADS
        .into_iter()
        .filter(|w| w.name.contains(only.as_str()))
    {
        let receive = if poll.is_zero() {
            Receive::DrivingLocal
        } else {
            Receive::PollingLocal(poll)
        };
        let mut done = Vec::with_capacity(rounds);
        for round in 1..=rounds {
            eprintln!("{} (round {round} of {rounds}) ...", w.name);
            let lanes = lanes_of(w, queues);
            let local = run_local(&engine, info.id, w, run, receive, lanes);
            let (remote, remote_costs) = run_target(&mut ios, NSID, w, run, lanes);
            let (ram, ram_costs) = run_target(&mut ios, RAM_NSID, w, run, lanes);
            done.push(Round {
                local,
                remote,
                ram,
                remote_costs,
                ram_costs,
            });
        }
        done.sort_by(|a, b| a.ratio().total_cmp(&b.ratio()));
        rows.push((w, Rounds(done)));
    }
    eprintln!("TCP ping-pong ...");
    let floor = tcp_ping_pong(run);
    let load_after = load_average();

    let reactors = match reactors() {
        0 => format!(
            "{} (one per core)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        n => n.to_string(),
    };
    println!(
        "\nNVMe/TCP over loopback (our host side, {queues} queue(s) sharing each depth, a host thread each; {reactors} target reactors) vs engine-local ({queues} thread(s) sharing each depth), {} s per run, {rounds} round(s) per workload (the median round shown), 1 GiB volume on {}, every side polling {} µs before it sleeps (load average before {load_before}, after {load_after})\n",
        run.as_secs(),
        path.display(),
        poll.as_micros()
    );
    println!("| workload | local IOPS | NVMe/TCP IOPS | ratio | local MiB/s | NVMe/TCP MiB/s | local mean µs | NVMe/TCP mean µs | added mean µs | local p99 µs | NVMe/TCP p99 µs | RAM-ns IOPS | RAM-ns mean µs |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (w, rounds) in &rows {
        let median = rounds.median();
        let (l, r, m) = (&median.local, &median.remote, &median.ram);
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {:.0} | {:.0} | {:.0} | {:.1} |",
            w.name,
            l.iops,
            r.iops,
            median.ratio(),
            l.mib_s,
            r.mib_s,
            l.mean_us,
            r.mean_us,
            median.added_us(),
            l.p99_us,
            r.p99_us,
            m.iops,
            m.mean_us
        );
    }
    if rows.iter().any(|(_, rounds)| rounds.0.len() > 1) {
        println!("\nEvery round, in ratio order:\n");
        println!("| workload | ratio | added mean µs | local IOPS | NVMe/TCP IOPS |");
        println!("|---|---|---|---|---|");
        for (w, rounds) in &rows {
            println!(
                "| {} | {} | {} | {} | {} |",
                w.name,
                rounds.each(|r| format!("{:.2}x", r.ratio())),
                rounds.each(|r| format!("{:+.1}", r.added_us())),
                rounds.each(|r| format!("{:.0}", r.local.iops)),
                rounds.each(|r| format!("{:.0}", r.remote.iops)),
            );
        }
    }
    println!("\nPer I/O through the target in the median round (from /proc/self/task: CPU time in 10 ms ticks, voluntary and involuntary context switches):\n");
    println!("| workload | reactors CPU µs | reactors switches | host thread CPU µs | host thread switches | RAM-ns reactors CPU µs | RAM-ns reactors switches |");
    println!("|---|---|---|---|---|---|---|");
    for (w, rounds) in &rows {
        let (c, m) = (rounds.median().remote_costs, rounds.median().ram_costs);
        println!(
            "| {} | {:.1} | {:.2} | {:.1} | {:.2} | {:.1} | {:.2} |",
            w.name,
            c.reactor_cpu_us,
            c.reactor_switches,
            c.host_cpu_us,
            c.host_switches,
            m.reactor_cpu_us,
            m.reactor_switches
        );
    }
    println!("\nGoals (issue 3): target overhead < 15% of engine-local IOPS at QD32; < 20 µs added mean latency at QD1.");
    println!("RAM-ns: the same NVMe/TCP path to a RAM namespace (no engine): the transport's ceiling here.");
    println!(
        "Loopback floor: a plain TCP ping-pong with a 4 KiB read's sizes ({PING_BYTES} B out, {PONG_BYTES} B back, one in flight, blocking sockets): {:.1} µs mean, {:.1} µs p99, {:.0} round trips/s.",
        floor.mean_us, floor.p99_us, floor.iops
    );
    for (w, rounds) in &rows {
        let median = rounds.median();
        if w.depth == 32 && w.block_bytes == 4096 {
            println!(
                "- {}: overhead {:.1}% of engine-local IOPS",
                w.name,
                (1.0 - median.ratio()) * 100.0
            );
        }
        if w.depth == 1 {
            println!(
                "- {}: {:+.1} µs added mean latency",
                w.name,
                median.added_us()
            );
        }
    }

    drop(ios);
    let _ = host.shutdown();
    target.shutdown();
    drop(subsystem);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown().expect("engine shutdown"),
        Err(_) => eprintln!("engine still referenced at the end; not checkpointing"),
    }
    let _ = std::fs::remove_file(&path);
}
