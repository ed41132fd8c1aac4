//! End-to-end engine benchmark beside its physical baseline. On one file (in
//! `KEEL_BENCH_DIR`, default `target/`), written through once first so that
//! neither side writes into blocks the file system has yet to allocate (as on a
//! pool whose log has wrapped, or a raw device), fio with ioengine=io_uring and
//! direct=1 runs each workload; then the engine is formatted on the same file and runs
//! the same workloads through its completion API, twice: from a plain thread (every
//! device operation goes through the device's ring thread) and from a thread with
//! a `LocalRing` (reads go to the kernel from the submitting thread and complete
//! when it polls, as an event loop would drive them). Prints a table of IOPS,
//! bandwidth, mean and p99 latency and CPU time per I/O, and the engine/fio ratios.
//!
//! `cargo bench --bench engine_vs_fio` (KEEL_BENCH_SECONDS sets each run's length;
//! KEEL_BENCH_ONLY=<text> runs only the workloads whose name contains it, e.g. to
//! profile one; KEEL_BENCH_FRESH_POOL=1 gives the engine a new sparse file instead,
//! to measure a pool's first pass).

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::figures::{cpu_time, Figures, Latencies, Precision};
use common::load::{fill, keep_in_flight, EngineLoad, Pattern, Receive, Workload};
use common::{bench_dir, env_u64};
use engine::io::{BackingKind, LocalRing};
use engine::{DeviceSpec, Engine, EngineConfig, SectorSize, VolumeId};

const FILE_BYTES: u64 = 6 << 30;
const REGION_BYTES: u64 = 1 << 30;

const WORKLOADS: [Workload; 6] = [
    Workload {
        name: "seq write 128k qd32",
        pattern: Pattern::SeqWrite,
        block_bytes: 128 << 10,
        depth: 32,
    },
    Workload {
        name: "seq read 128k qd32",
        pattern: Pattern::SeqRead,
        block_bytes: 128 << 10,
        depth: 32,
    },
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
];

#[derive(Clone, Copy, Default)]
struct Result {
    iops: f64,
    mib_s: f64,
    mean_us: f64,
    p99_us: f64,
    cpu_us_per_io: f64,
}

fn seconds() -> u64 {
    env_u64("KEEL_BENCH_SECONDS", 5)
}

/// Writes the first `bytes` of `file` once, sequentially. The bench file is
/// created sparse: reads of never-written blocks would not reach the device, and
/// a direct write into one also changes the file's block map, which costs a
/// small write about as much again as the write itself.
fn precondition(file: &Path, bytes: u64) {
    let status = fio_job(file, "precondition", "write", 1 << 20, 8, bytes)
        .arg("--output-format=terse")
        .output();
    if !status.is_ok_and(|o| o.status.success()) {
        eprintln!(
            "fio could not write the bench file through: its figures may not reach the device"
        );
    }
}

/// fio with io_uring and O_DIRECT over the first `bytes` of `file`.
fn fio_job(
    file: &Path,
    name: &str,
    rw: &str,
    block_bytes: u64,
    depth: usize,
    bytes: u64,
) -> Command {
    let mut command = Command::new("fio");
    command
        .args(["--ioengine=io_uring", "--direct=1"])
        .arg(format!("--name={name}"))
        .arg(format!("--filename={}", file.display()))
        .arg(format!("--size={bytes}"))
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={block_bytes}"))
        .arg(format!("--iodepth={depth}"));
    command
}

fn fio(file: &Path, w: Workload) -> Option<Result> {
    let rw = match w.pattern {
        Pattern::SeqWrite => "write",
        Pattern::SeqRead => "read",
        Pattern::RandRead => "randread",
        Pattern::RandWrite => "randwrite",
    };
    let output = fio_job(file, "baseline", rw, w.block_bytes, w.depth, REGION_BYTES)
        .args(["--output-format=json", "--time_based"])
        .arg(format!("--runtime={}", seconds()))
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!("fio failed: {}", String::from_utf8_lossy(&output.stderr));
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let job = &json["jobs"][0];
    let side = if w.pattern.is_write() {
        &job["write"]
    } else {
        &job["read"]
    };
    let ios = side["total_ios"].as_f64()?;
    let runtime_s = side["runtime"].as_f64()? / 1000.0;
    let cpu_us = (job["usr_cpu"].as_f64()? + job["sys_cpu"].as_f64()?) / 100.0 * runtime_s * 1e6;
    Some(Result {
        iops: side["iops"].as_f64()?,
        mib_s: side["bw_bytes"].as_f64()? / f64::from(1 << 20),
        mean_us: side["clat_ns"]["mean"].as_f64()? / 1000.0,
        p99_us: side["clat_ns"]["percentile"]["99.000000"]
            .as_f64()
            .unwrap_or(0.0)
            / 1000.0,
        cpu_us_per_io: cpu_us / ios.max(1.0),
    })
}

/// Runs `w` through the engine; with `local_ring`, the submitting thread attaches
/// a [`LocalRing`] and polls it for completions.
fn run_engine(engine: &Arc<Engine>, volume: VolumeId, w: Workload, local_ring: bool) -> Result {
    // Kept attached for the run: completions are polled by the receive below.
    let _ring = local_ring.then(|| LocalRing::attach().expect("local ring"));
    let mut load = EngineLoad::new(
        engine,
        volume,
        Receive::DrivingLocal,
        w.engine_ops(REGION_BYTES, 0x3C),
    );
    let deadline = Instant::now() + Duration::from_secs(seconds());
    let mut latencies = Latencies::with_capacity(1 << 20);
    let cpu_before = cpu_time();
    let started = Instant::now();
    keep_in_flight(&mut load, w.depth, |_, done| {
        if let Err(err) = done.result {
            panic!("{}: engine I/O failed: {err}", w.name);
        }
        latencies.record(done.latency());
        Instant::now() < deadline
    });
    let elapsed = started.elapsed();
    let cpu = (cpu_time() - cpu_before).as_secs_f64();
    let ios = latencies.len() as f64;
    let figures = Figures::of(latencies, Precision::WholeMicros, w.block_bytes, elapsed);
    Result {
        iops: figures.iops,
        mib_s: figures.mib_s,
        mean_us: figures.mean_us,
        p99_us: figures.p99_us,
        cpu_us_per_io: cpu * 1e6 / ios.max(1.0),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: this bench needs a real disk and fio.
    }
    let path = bench_dir().join("keel-bench-pool.img");
    let _ = std::fs::remove_file(&path);
    {
        let file = std::fs::File::create(&path).expect("bench file");
        file.set_len(FILE_BYTES).expect("size bench file");
    }
    let has_fio = Command::new("fio")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_fio {
        eprintln!("fio is not installed: baseline columns will be empty (apt-get install fio)");
    }
    let only = std::env::var("KEEL_BENCH_ONLY").unwrap_or_default();
    let workloads: Vec<Workload> = WORKLOADS
        .into_iter()
        .filter(|w| w.name.contains(only.as_str()))
        .collect();
    let fresh_pool = std::env::var_os("KEEL_BENCH_FRESH_POOL").is_some();
    if has_fio {
        // fio's workloads use only the region; the engine's log may reach any block.
        precondition(&path, if fresh_pool { REGION_BYTES } else { FILE_BYTES });
    }
    let baseline: Vec<Option<Result>> = workloads
        .iter()
        .map(|w| if has_fio { fio(&path, *w) } else { None })
        .collect();
    if fresh_pool {
        std::fs::remove_file(&path).expect("reset bench file");
    }
    let spec = DeviceSpec {
        path: path.clone(),
        kind: BackingKind::File,
        create_size: Some(FILE_BYTES),
    };
    let engine = Arc::new(
        Engine::open_paths(&[spec], EngineConfig::default(), true).expect("engine on bench file"),
    );
    let volume = engine
        .create_volume("bench", REGION_BYTES, SectorSize::B4096)
        .expect("volume")
        .id;
    // The whole region once (1 MiB writes, 8 in flight), as fio lays out its
    // file, so reads always reach the device whichever workloads run.
    fill(&engine, volume, REGION_BYTES, 1 << 20, 8, 0x5A);
    let ours: Vec<(Result, Result)> = workloads
        .iter()
        .map(|w| {
            (
                run_engine(&engine, volume, *w, false),
                run_engine(&engine, volume, *w, true),
            )
        })
        .collect();
    println!(
        "\nengine vs fio (io_uring, direct=1) on {} ({}) — {} s per run",
        path.display(),
        if fresh_pool {
            "engine on a new sparse file"
        } else {
            "written through once"
        },
        seconds()
    );
    println!(
        "| workload | fio IOPS | engine IOPS | ratio | local-ring IOPS | local ratio | fio MiB/s | engine MiB/s | fio mean µs | engine mean µs | local mean µs | fio p99 µs | engine p99 µs | local p99 µs | fio CPU µs/IO | engine CPU µs/IO | local CPU µs/IO |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for ((w, base), (ours, local)) in workloads.iter().zip(&baseline).zip(&ours) {
        let b = base.unwrap_or_default();
        let ratio = |r: &Result| {
            if b.iops > 0.0 {
                format!("{:.2}x", r.iops / b.iops)
            } else {
                "n/a".into()
            }
        };
        println!(
            "| {} | {:.0} | {:.0} | {} | {:.0} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.1} | {:.1} | {:.1} |",
            w.name, b.iops, ours.iops, ratio(ours), local.iops, ratio(local), b.mib_s, ours.mib_s,
            b.mean_us, ours.mean_us, local.mean_us, b.p99_us, ours.p99_us, local.p99_us,
            b.cpu_us_per_io, ours.cpu_us_per_io, local.cpu_us_per_io
        );
    }
    drop(engine);
    let _ = std::fs::remove_file(&path);
}
