//! NVMe/TCP end-to-end benchmark: the same workloads run engine-local (the
//! engine's completion API, one submitting thread with its own engine ring) and
//! through the NVMe/TCP
//! target over loopback with our host side (`nvmf_target::host`, one queue, one
//! submitting thread), in the same run on the same volume. Prints a markdown
//! table with IOPS, MiB/s, mean and p99 latency, the target/engine-local IOPS
//! ratio and the mean latency the target adds. A third column set runs the same
//! NVMe/TCP path against a RAM namespace, separating the transport's cost from
//! the engine's.
//!
//! The target is started in-process (engine on a file, `keel::adapters::
//! VolumeNamespace`, `Subsystem`, `Target::start` on 127.0.0.1, an engine ring
//! per reactor) — the same composition keeld makes, without the REST API, so only the NVMe/TCP path is
//! measured.
//!
//! `cargo bench --bench nvmf_e2e` (KEEL_BENCH_SECONDS sets each run's length,
//! default 3; KEEL_BENCH_DIR the directory of the pool file, default `target/`;
//! KEEL_BENCH_REACTORS the target's reactor threads, default one per core).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pattern {
    SeqWrite,
    SeqRead,
    RandRead,
    RandWrite,
}

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    pattern: Pattern,
    block_bytes: u64,
    depth: usize,
}

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

/// One run's figures.
#[derive(Clone, Copy, Default)]
struct Figures {
    iops: f64,
    mib_s: f64,
    mean_us: f64,
    p99_us: f64,
}

fn seconds() -> u64 {
    std::env::var("KEEL_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(3)
}

/// Target reactor threads (KEEL_BENCH_REACTORS; 0, the default, is one per core
/// as in keeld).
fn reactors() -> usize {
    std::env::var("KEEL_BENCH_REACTORS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn bench_dir() -> PathBuf {
    std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

/// The offsets (in blocks) a workload visits: sequential, or xorshift-random.
struct Offsets {
    pattern: Pattern,
    slots: u64,
    blocks_per_io: u64,
    next: u64,
    rng: u64,
}

impl Offsets {
    fn new(w: Workload) -> Offsets {
        Offsets {
            pattern: w.pattern,
            slots: REGION_BYTES / w.block_bytes,
            blocks_per_io: w.block_bytes / u64::from(BLOCK),
            next: 0,
            rng: 0x9E37_79B9_7F4A_7C15,
        }
    }

    fn next_lba(&mut self) -> u64 {
        let slot = match self.pattern {
            Pattern::SeqRead | Pattern::SeqWrite => {
                self.next += 1;
                (self.next - 1) % self.slots
            }
            Pattern::RandRead | Pattern::RandWrite => {
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                self.rng % self.slots
            }
        };
        slot * self.blocks_per_io
    }
}

fn is_write(p: Pattern) -> bool {
    matches!(p, Pattern::SeqWrite | Pattern::RandWrite)
}

fn summarise(w: Workload, mut latencies_ns: Vec<u64>, elapsed: Duration) -> Figures {
    let ios = latencies_ns.len() as f64;
    let secs = elapsed.as_secs_f64().max(1e-9);
    latencies_ns.sort_unstable();
    let p99 = latencies_ns
        .get(latencies_ns.len() * 99 / 100)
        .copied()
        .unwrap_or(0);
    Figures {
        iops: ios / secs,
        mib_s: ios * w.block_bytes as f64 / secs / f64::from(1 << 20),
        mean_us: latencies_ns.iter().map(|&l| l as f64).sum::<f64>() / ios.max(1.0) / 1000.0,
        p99_us: p99 as f64 / 1000.0,
    }
}

/// Engine-local: the engine's completion API from one thread with its own
/// engine ring (as each reactor has), `depth` in flight.
fn run_local(engine: &Arc<Engine>, volume: VolumeId, w: Workload, run: Duration) -> Figures {
    // Kept attached for the run: completions are polled by the receive below.
    let _ring = engine::io::LocalRing::attach().expect("engine ring for the local run");
    let data = Bytes::from(vec![0x5Au8; w.block_bytes as usize]);
    let blocks = (w.block_bytes / u64::from(BLOCK)) as u32;
    let (tx, rx) = crossbeam_channel::unbounded::<(Instant, Result<(), engine::IoError>)>();
    let mut offsets = Offsets::new(w);
    let mut latencies_ns = Vec::with_capacity(SAMPLES_RESERVED);
    let started = Instant::now();
    let deadline = started + run;
    let submit = |offsets: &mut Offsets| {
        let lba = offsets.next_lba();
        let tx = tx.clone();
        let at = Instant::now();
        if is_write(w.pattern) {
            engine.write(
                volume,
                lba,
                data.clone(),
                Box::new(move |r| drop(tx.send((at, r)))),
            );
        } else {
            engine.read(
                volume,
                lba,
                blocks,
                Box::new(move |r| drop(tx.send((at, r.map(|_| ()))))),
            );
        }
    };
    let mut inflight = 0usize;
    while inflight < w.depth {
        submit(&mut offsets);
        inflight += 1;
    }
    while inflight > 0 {
        let (at, result) = engine::io::recv_driving_local(&rx).expect("engine completion channel");
        inflight -= 1;
        if let Err(err) = result {
            panic!("{} engine-local: I/O failed: {err}", w.name);
        }
        latencies_ns.push(at.elapsed().as_nanos() as u64);
        if Instant::now() < deadline {
            submit(&mut offsets);
            inflight += 1;
        }
    }
    summarise(w, latencies_ns, started.elapsed())
}

/// Through the target: our host side on one I/O queue, `depth` in flight.
fn run_target(io: &mut IoQueue, nsid: u32, w: Workload, run: Duration) -> Figures {
    let data = Bytes::from(vec![0xA5u8; w.block_bytes as usize]);
    let blocks = (w.block_bytes / u64::from(BLOCK)) as u32;
    let mut submitted_at: Vec<Option<Instant>> = vec![None; usize::from(u16::MAX) + 1];
    let mut offsets = Offsets::new(w);
    let mut latencies_ns = Vec::with_capacity(SAMPLES_RESERVED);
    let started = Instant::now();
    let deadline = started + run;
    let submit =
        |io: &mut IoQueue, offsets: &mut Offsets, submitted_at: &mut Vec<Option<Instant>>| {
            let lba = Lba(offsets.next_lba());
            let at = Instant::now();
            let cid = if is_write(w.pattern) {
                io.submit_write(nsid, lba, data.clone(), BLOCK)
            } else {
                io.submit_read(nsid, lba, blocks, BLOCK)
            }
            .unwrap_or_else(|e| panic!("{} over NVMe/TCP: submit failed: {e}", w.name));
            submitted_at[usize::from(cid)] = Some(at);
        };
    let mut inflight = 0usize;
    while inflight < w.depth {
        submit(io, &mut offsets, &mut submitted_at);
        inflight += 1;
    }
    while inflight > 0 {
        let (cid, response) = io
            .queue
            .wait_any()
            .unwrap_or_else(|e| panic!("{} over NVMe/TCP: {e}", w.name));
        inflight -= 1;
        let at = submitted_at[usize::from(cid)]
            .take()
            .expect("completion of a submitted command");
        latencies_ns.push(at.elapsed().as_nanos() as u64);
        if let Err(e) = response.success() {
            panic!("{} over NVMe/TCP: command failed: {e}", w.name);
        }
        if Instant::now() < deadline {
            submit(io, &mut offsets, &mut submitted_at);
            inflight += 1;
        }
    }
    summarise(w, latencies_ns, started.elapsed())
}

/// Writes the whole region once so reads find mapped data (unmapped reads
/// would return zeroes without touching the device).
fn prefill(engine: &Arc<Engine>, volume: VolumeId) {
    let w = Workload {
        name: "prefill",
        pattern: Pattern::SeqWrite,
        block_bytes: 128 << 10,
        depth: 32,
    };
    let ios = REGION_BYTES / w.block_bytes;
    let data = Bytes::from(vec![0xC3u8; w.block_bytes as usize]);
    let (tx, rx) = crossbeam_channel::unbounded::<Result<(), engine::IoError>>();
    let mut next = 0u64;
    let mut inflight = 0usize;
    while next < ios || inflight > 0 {
        while next < ios && inflight < w.depth {
            let tx = tx.clone();
            engine.write(
                volume,
                next * 32,
                data.clone(),
                Box::new(move |r| drop(tx.send(r))),
            );
            next += 1;
            inflight += 1;
        }
        rx.recv().expect("completion").expect("prefill write");
        inflight -= 1;
    }
    engine.flush_wait().expect("prefill flush");
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
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
    prefill(&engine, info.id);

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
    subsystem
        .add_namespace(RAM_NSID, ram, HostAcl::AnyHost)
        .expect("RAM namespace");
    let mut config = TargetConfig::on(Ipv4Addr::LOCALHOST.into());
    config.listen_addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))];
    config.discovery_addrs = Vec::new();
    config.reactors = reactors();
    // As keeld runs it: each reactor submits volume I/O on its own engine ring.
    config.reactor_poller = Some(keel::adapters::engine_ring_pollers());
    let target = Target::start(config, subsystem.clone()).expect("target on loopback");
    let mut options = HostOptions::new(HOST_NQN, NQN);
    options.kato_ms = 0;
    options.queue_size = 128;
    options.timeout = Duration::from_secs(30);
    let mut host = HostController::connect(target.local_addrs()[0], options).expect("host connect");
    host.set_queue_count(1).expect("queue count");
    let mut io = host.connect_io_queue(1).expect("I/O queue");

    let load_before = load_average();
    let mut rows = Vec::new();
    for w in WORKLOADS {
        eprintln!("{} ...", w.name);
        let local = run_local(&engine, info.id, w, run);
        let remote = run_target(&mut io, NSID, w, run);
        let ram = run_target(&mut io, RAM_NSID, w, run);
        rows.push((w, local, remote, ram));
    }
    let load_after = load_average();

    let reactors = match reactors() {
        0 => format!(
            "{} (one per core)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        n => n.to_string(),
    };
    println!(
        "\nNVMe/TCP over loopback (our host side, 1 queue; {reactors} target reactors) vs engine-local, {} s per run, 1 GiB volume on {} (load average before {load_before}, after {load_after})\n",
        run.as_secs(),
        path.display()
    );
    println!("| workload | local IOPS | NVMe/TCP IOPS | ratio | local MiB/s | NVMe/TCP MiB/s | local mean µs | NVMe/TCP mean µs | added mean µs | local p99 µs | NVMe/TCP p99 µs | RAM-ns IOPS | RAM-ns mean µs |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for (w, l, r, m) in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x | {:.1} | {:.1} | {:.1} | {:.1} | {:+.1} | {:.0} | {:.0} | {:.0} | {:.1} |",
            w.name,
            l.iops,
            r.iops,
            r.iops / l.iops.max(1e-9),
            l.mib_s,
            r.mib_s,
            l.mean_us,
            r.mean_us,
            r.mean_us - l.mean_us,
            l.p99_us,
            r.p99_us,
            m.iops,
            m.mean_us
        );
    }
    println!("\nGoals (issue 3): target overhead < 15% of engine-local IOPS at QD32; < 20 µs added mean latency at QD1.");
    println!("RAM-ns: the same NVMe/TCP path to a RAM namespace (no engine): the transport's ceiling here.");
    for (w, l, r, _) in &rows {
        if w.depth == 32 && w.block_bytes == 4096 {
            println!(
                "- {}: overhead {:.1}% of engine-local IOPS",
                w.name,
                (1.0 - r.iops / l.iops.max(1e-9)) * 100.0
            );
        }
        if w.depth == 1 {
            println!(
                "- {}: {:+.1} µs added mean latency",
                w.name,
                r.mean_us - l.mean_us
            );
        }
    }

    drop(io);
    let _ = host.shutdown();
    target.shutdown();
    drop(subsystem);
    match Arc::try_unwrap(engine) {
        Ok(engine) => engine.shutdown().expect("engine shutdown"),
        Err(_) => eprintln!("engine still referenced at the end; not checkpointing"),
    }
    let _ = std::fs::remove_file(&path);
}
