//! A load generator for any NVMe/TCP target, like SPDK's `spdk_nvme_perf`
//! but on the crate's own host (`nvmf_target::host`): the side-by-side
//! benchmark (`scripts/bench-vs-spdk.sh`) drives keeld with it where SPDK's
//! initiator is not at hand. One I/O queue, one thread, `-q` commands kept in
//! flight for `-t` seconds; prints IOPS, MiB/s and latency percentiles, and a
//! `RESULT` line for scripts.
//!
//! `cargo bench --bench nvme_perf -- -a 127.0.0.1:4420 -n <subsystem NQN>
//! -w randread|randwrite|read|write -o <bytes> -q <depth> -t <seconds>
//! [-H <host NQN>] [-s <namespace bytes to address, default 1 GiB>]
//! [--nsid <n>]`. The namespace must have 4 KiB blocks.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::figures::{Latencies, Precision};
use common::host_load::HostLoad;
use common::load::{keep_in_flight, Pattern, Workload, BLOCK_BYTES};
use nvmf_target::host::{HostController, HostOptions};

/// The host NQN used when `-H` is not given.
const DEFAULT_HOST_NQN: &str =
    "nqn.2014-08.org.nvmexpress:uuid:6b65656c-7065-7266-8000-000000000001";

/// What to run against which target (flags as spdk_nvme_perf's).
#[derive(clap::Parser)]
struct Args {
    /// The target's NVMe/TCP address, e.g. 127.0.0.1:4420.
    #[arg(short = 'a')]
    target: SocketAddr,
    /// The subsystem NQN.
    #[arg(short = 'n')]
    nqn: String,
    /// The host NQN to connect as.
    #[arg(short = 'H', default_value = DEFAULT_HOST_NQN)]
    host_nqn: String,
    /// The namespace.
    #[arg(long, default_value_t = 1)]
    nsid: u32,
    /// The workload.
    #[arg(short = 'w', value_enum)]
    pattern: PatternArg,
    /// Bytes per I/O: whole 4 KiB blocks.
    #[arg(short = 'o', default_value_t = 4096)]
    io_bytes: u64,
    /// Commands kept in flight.
    #[arg(short = 'q', default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=127))]
    depth: u16,
    /// Seconds to run.
    #[arg(short = 't', default_value_t = 10)]
    seconds: u64,
    /// Bytes of the namespace to address.
    #[arg(short = 's', default_value_t = 1 << 30)]
    region_bytes: u64,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// The workloads, named as spdk_nvme_perf's `-w`.
#[derive(Clone, Copy, clap::ValueEnum)]
enum PatternArg {
    Randread,
    Randwrite,
    Read,
    Write,
}

impl From<PatternArg> for Pattern {
    fn from(arg: PatternArg) -> Pattern {
        match arg {
            PatternArg::Randread => Pattern::RandRead,
            PatternArg::Randwrite => Pattern::RandWrite,
            PatternArg::Read => Pattern::SeqRead,
            PatternArg::Write => Pattern::SeqWrite,
        }
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: it measures a running target.
    }
    let args = <Args as clap::Parser>::parse();
    if args.io_bytes == 0 || args.io_bytes % BLOCK_BYTES != 0 || args.region_bytes < args.io_bytes {
        eprintln!("nvme_perf: -o must be whole 4 KiB blocks and -s at least one I/O");
        std::process::exit(2);
    }
    let depth = usize::from(args.depth);
    let mut options = HostOptions::new(&args.host_nqn, &args.nqn);
    options.kato_ms = 0;
    options.queue_size = 128;
    options.timeout = Duration::from_secs(30);
    let mut host = HostController::connect(args.target, options).expect("connect to the target");
    host.set_queue_count(1).expect("queue count");
    let mut io = host.connect_io_queue(1).expect("I/O queue");
    let w = Workload {
        name: "nvme_perf",
        pattern: args.pattern.into(),
        block_bytes: args.io_bytes,
        depth,
    };
    let mut load = HostLoad::new(&mut io, args.nsid, w, w.slots(args.region_bytes));
    let mut latencies = Latencies::with_capacity(1 << 22);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    keep_in_flight(&mut load, depth, |_, at| {
        latencies.record(at.elapsed());
        Instant::now() < deadline
    });
    let elapsed = started.elapsed().as_secs_f64();
    let s = latencies.summary(Precision::Nanos);
    let iops = s.count as f64 / elapsed;
    let mib_s = iops * args.io_bytes as f64 / f64::from(1 << 20);
    println!(
        "{:?} {} B QD{depth}: {iops:.0} IOPS, {mib_s:.1} MiB/s, mean {:.1} µs, p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
        w.pattern, args.io_bytes, s.mean_us, s.p50_us, s.p99_us, s.p999_us, s.max_us
    );
    println!(
        "RESULT iops={iops:.0} mib_s={mib_s:.1} mean_us={:.1} p99_us={:.1} p999_us={:.1}",
        s.mean_us, s.p99_us, s.p999_us
    );
}
