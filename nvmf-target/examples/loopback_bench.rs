//! Transport-only micro-benchmark: a RAM namespace served by the in-process
//! target over loopback, driven by this crate's host side on one I/O queue.
//! Isolates the NVMe/TCP path (reactor, connection state machine, host side)
//! from any storage engine, for before/after comparisons of the data path.
//!
//! `cargo run --release -p nvmf-target --example loopback_bench`
//! (LOOPBACK_BENCH_SECONDS per workload, default 2; LOOPBACK_BENCH_REACTORS,
//! default 2; LOOPBACK_BENCH_REACTOR_KIND, `uring`, `epoll` or `auto`, the
//! default; LOOPBACK_BENCH_ONLY runs only the workloads whose name contains it,
//! e.g. `qd1`).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use nvmf_target::host::{HostController, HostOptions, IoQueue};
use nvmf_target::{
    BlockSize, HostAcl, Lba, MemoryNamespace, ReactorKind, Subsystem, SubsystemConfig, Target,
    TargetConfig,
};

const NQN: &str = "nqn.2024-01.io.keel:loopback-bench";
const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:loopback-bench-host";
const BLOCK: u32 = 4096;
const CAPACITY_BLOCKS: u64 = 64 * 1024;

/// CPU time (user + system) the target's reactor threads have used, in
/// microseconds, from /proc (Linux); `None` where it cannot be read.
fn reactor_cpu_us() -> Option<u64> {
    // Linux reports these fields in USER_HZ, 100 per second on the
    // architectures Keel runs on.
    const TICK_US: u64 = 10_000;
    let mut ticks = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()? {
        let dir = task.ok()?.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        if !comm.starts_with("nvmf-reactor") {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        // After the parenthesised name: utime and stime are the 12th and 13th fields.
        let rest = stat.get(stat.rfind(')')? + 2..)?;
        let fields: Vec<&str> = rest.split(' ').collect();
        ticks += fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    }
    Some(ticks * TICK_US)
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `depth` commands in flight for `run`; returns (IOPS, mean latency µs,
/// I/Os completed).
fn run(io: &mut IoQueue, write: bool, blocks: u32, depth: usize, run: Duration) -> (f64, f64, u64) {
    let data = Bytes::from(vec![0x5A; (blocks * BLOCK) as usize]);
    let mut submitted = vec![None; usize::from(u16::MAX) + 1];
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let slots = CAPACITY_BLOCKS / u64::from(blocks);
    let mut next_lba = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        Lba(rng % slots * u64::from(blocks))
    };
    let mut submit = |io: &mut IoQueue, submitted: &mut Vec<Option<Instant>>| {
        let at = Instant::now();
        let cid = if write {
            io.submit_write(1, next_lba(), data.clone(), BLOCK)
        } else {
            io.submit_read(1, next_lba(), blocks, BLOCK)
        }
        .expect("submit");
        submitted[usize::from(cid)] = Some(at);
    };
    let started = Instant::now();
    let deadline = started + run;
    let (mut inflight, mut ios, mut total_ns) = (0usize, 0u64, 0u128);
    while inflight < depth {
        submit(io, &mut submitted);
        inflight += 1;
    }
    while inflight > 0 {
        let (cid, response) = io.queue.wait_any().expect("completion");
        response.success().expect("command succeeded");
        inflight -= 1;
        ios += 1;
        let at = submitted[usize::from(cid)]
            .take()
            .expect("submitted command");
        total_ns += at.elapsed().as_nanos();
        if Instant::now() < deadline {
            submit(io, &mut submitted);
            inflight += 1;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    (
        ios as f64 / secs,
        total_ns as f64 / ios.max(1) as f64 / 1000.0,
        ios,
    )
}

fn main() {
    let seconds = Duration::from_secs(env_or("LOOPBACK_BENCH_SECONDS", 2));
    let subsystem = Subsystem::new(SubsystemConfig::new(NQN, "KEELLOOP0001"));
    let ns = MemoryNamespace::new(BlockSize::B4096, CAPACITY_BLOCKS, [0x44; 16]);
    subsystem
        .add_namespace(1, ns, HostAcl::AnyHost)
        .expect("namespace");
    let mut config = TargetConfig::on(Ipv4Addr::LOCALHOST.into());
    config.listen_addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, 0))];
    config.discovery_addrs = Vec::new();
    config.reactors = env_or("LOOPBACK_BENCH_REACTORS", 2) as usize;
    config.reactor_kind = match std::env::var("LOOPBACK_BENCH_REACTOR_KIND").as_deref() {
        Ok("uring") => ReactorKind::Uring,
        Ok("epoll") => ReactorKind::Epoll,
        Ok("auto") | Err(_) => ReactorKind::Auto,
        Ok(other) => {
            panic!("LOOPBACK_BENCH_REACTOR_KIND must be uring, epoll or auto, not {other}")
        }
    };
    let target = Target::start(config, subsystem).expect("target");
    println!("reactor kind: {:?}", target.reactor_kind());
    let mut options = HostOptions::new(HOST, NQN);
    options.kato_ms = 0;
    let mut host = HostController::connect(target.local_addrs()[0], options).expect("connect");
    host.set_queue_count(1).expect("queue count");
    let mut io = host.connect_io_queue(1).expect("I/O queue");
    let only = std::env::var("LOOPBACK_BENCH_ONLY").ok();
    println!("| workload | IOPS | mean µs | reactor CPU µs/IO |");
    println!("|---|---|---|---|");
    for (name, write, blocks, depth) in [
        ("rand read 4k qd1", false, 1, 1),
        ("rand write 4k qd1", true, 1, 1),
        ("rand read 4k qd32", false, 1, 32),
        ("rand write 4k qd32", true, 1, 32),
        ("seq read 128k qd32", false, 32, 32),
        ("seq write 128k qd32", true, 32, 32),
    ] {
        if !only.as_deref().is_none_or(|only| name.contains(only)) {
            continue;
        }
        let cpu_before = reactor_cpu_us();
        let (iops, mean_us, ios) = run(&mut io, write, blocks, depth, seconds);
        let cpu_per_io = match (cpu_before, reactor_cpu_us()) {
            (Some(before), Some(after)) => {
                format!("{:.2}", (after - before) as f64 / ios.max(1) as f64)
            }
            _ => "n/a".to_string(),
        };
        println!("| {name} | {iops:.0} | {mean_us:.1} | {cpu_per_io} |");
    }
    drop(io);
    let _ = host.shutdown();
    target.shutdown();
}
