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

struct Args {
    target: SocketAddr,
    nqn: String,
    host_nqn: String,
    nsid: u32,
    pattern: Pattern,
    io_bytes: u64,
    depth: usize,
    seconds: u64,
    region_bytes: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let mut target = None;
    let mut nqn = None;
    let mut host_nqn = DEFAULT_HOST_NQN.to_owned();
    let mut nsid = 1;
    let mut pattern = None;
    let mut io_bytes = 4096;
    let mut depth = 1;
    let mut seconds = 10;
    let mut region_bytes = 1 << 30;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |text: String| text.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "-a" => target = Some(value()?.parse().map_err(|e| format!("-a: {e}"))?),
            "-n" => nqn = Some(value()?),
            "-H" => host_nqn = value()?,
            "--nsid" => nsid = number(value()?)? as u32,
            "-w" => {
                pattern = Some(match value()?.as_str() {
                    "randread" => Pattern::RandRead,
                    "randwrite" => Pattern::RandWrite,
                    "read" => Pattern::SeqRead,
                    "write" => Pattern::SeqWrite,
                    other => return Err(format!("-w {other}: not a workload")),
                })
            }
            "-o" => io_bytes = number(value()?)?,
            "-q" => depth = number(value()?)? as usize,
            "-t" => seconds = number(value()?)?,
            "-s" => region_bytes = number(value()?)?,
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if io_bytes == 0 || io_bytes % BLOCK_BYTES != 0 || region_bytes < io_bytes {
        return Err("-o must be whole 4 KiB blocks and -s at least one I/O".to_owned());
    }
    if depth == 0 || depth > 127 {
        return Err("-q must be 1..=127".to_owned());
    }
    Ok(Args {
        target: target.ok_or("-a is required")?,
        nqn: nqn.ok_or("-n is required")?,
        host_nqn,
        nsid,
        pattern: pattern.ok_or("-w is required")?,
        io_bytes,
        depth,
        seconds,
        region_bytes,
    })
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: it measures a running target.
    }
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("nvme_perf: {e}");
        std::process::exit(2);
    });
    let mut options = HostOptions::new(&args.host_nqn, &args.nqn);
    options.kato_ms = 0;
    options.queue_size = 128;
    options.timeout = Duration::from_secs(30);
    let mut host = HostController::connect(args.target, options).expect("connect to the target");
    host.set_queue_count(1).expect("queue count");
    let mut io = host.connect_io_queue(1).expect("I/O queue");
    let w = Workload {
        name: "nvme_perf",
        pattern: args.pattern,
        block_bytes: args.io_bytes,
        depth: args.depth,
    };
    let mut load = HostLoad::new(&mut io, args.nsid, w, w.slots(args.region_bytes));
    let mut latencies = Latencies::with_capacity(1 << 22);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    keep_in_flight(&mut load, args.depth, |_, at| {
        latencies.record(at.elapsed());
        Instant::now() < deadline
    });
    let elapsed = started.elapsed().as_secs_f64();
    let s = latencies.summary(Precision::Nanos);
    let iops = s.count as f64 / elapsed;
    let mib_s = iops * args.io_bytes as f64 / f64::from(1 << 20);
    println!(
        "{:?} {} B QD{}: {iops:.0} IOPS, {mib_s:.1} MiB/s, mean {:.1} µs, p50 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
        args.pattern, args.io_bytes, args.depth, s.mean_us, s.p50_us, s.p99_us, s.p999_us, s.max_us
    );
    println!(
        "RESULT iops={iops:.0} mib_s={mib_s:.1} mean_us={:.1} p99_us={:.1} p999_us={:.1}",
        s.mean_us, s.p99_us, s.p999_us
    );
}
