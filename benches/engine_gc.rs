//! Garbage collection under sustained 4 KiB random overwrite.
//!
//! For every case (pool fill x workload x policy) a file-backed pool is formatted
//! on a sparse file in `KEEL_BENCH_DIR` (default `target/`) and driven through the
//! completion API from one thread at QD32, as in `engine_vs_fio`:
//!
//! 1. fresh baseline: random 4 KiB writes (same address pattern as the measured
//!    phase) into the empty volume for `KEEL_BENCH_SECONDS`, bounded so it never
//!    writes more than 60% of the pool (no garbage collection can run);
//! 2. the pool is formatted again, the volume filled sequentially with 128 KiB
//!    writes until live data is the asked share of the pool's data capacity
//!    (`pool_stats().data_capacity_bytes`: what it takes before refusing new data);
//! 3. random 4 KiB overwrites until garbage collection has cleaned twice (or
//!    `KEEL_GC_CLEANINGS` times) the pool's segment count, or `KEEL_GC_SECONDS`
//!    have passed.
//!
//! Reported per case: IOPS of the fresh phase, IOPS over the overwrite phase and
//! over its steady part (from the moment the collector has done half of those
//! cleanings, or from its first cleaning if the run ends before that), the steady/fresh ratio, write amplification from the
//! `pool_stats()` counters over those windows (relocated + host bytes per host
//! byte), every device byte per host byte (`device_written_bytes`: adds batch
//! headers and checkpoints), segments cleaned, latency percentiles and any
//! write errors (out of space) or stalls.
//!
//! `cargo bench --bench engine_gc`. Environment: `KEEL_BENCH_SECONDS` (fresh
//! phase, default 5), `KEEL_GC_SECONDS` (overwrite phase cap, default 90),
//! `KEEL_GC_POOL_MIB` (pool file, default 2048), `KEEL_GC_FILLS` (per-mille
//! fills, default `800,850,900`), `KEEL_GC_WORKLOADS` (`uniform,hotcold`),
//! `KEEL_GC_POLICIES` (`greedy,cost-benefit`), `KEEL_GC_SEGMENT_BLOCKS` (4 KiB
//! blocks per segment, default the engine's), `KEEL_GC_CLEANINGS` (pools'
//! worth of segments cleaned per case, default 2; steady from half of them).

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::figures::Precision;
use common::load::{keep_in_flight, writes, EngineLoad, Receive, Tally};
use common::{bench_dir, env_u64, Xorshift};
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig, GcPolicy, PoolStats, SectorSize, VolumeId};

const BLOCK_BYTES: u64 = 4096;
const FILL_IO_BYTES: u64 = 128 << 10;
const DEPTH: usize = 32;
/// A phase with no completion for this long is reported as stalled and abandoned.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// A phase stops after this many failed writes.
const ERRORS_MAX: u64 = 10_000;
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Which blocks the random phases write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Workload {
    /// Every block equally likely.
    Uniform,
    /// 90% of writes to the first 10% of the volume, 10% to the rest.
    HotCold,
}

impl Workload {
    fn name(self) -> &'static str {
        match self {
            Workload::Uniform => "uniform",
            Workload::HotCold => "hot/cold 90/10",
        }
    }
}

/// Block addresses for a workload over a volume of `blocks` blocks.
fn addresses(workload: Workload, blocks: u64, seed: u64) -> impl FnMut() -> u64 {
    let mut rng = Xorshift(seed);
    let hot = (blocks / 10).max(1);
    move || {
        let r = rng.next();
        match workload {
            Workload::Uniform => r % blocks,
            Workload::HotCold if r % 10 < 9 => (r >> 8) % hot,
            Workload::HotCold => hot + (r >> 8) % (blocks - hot).max(1),
        }
    }
}

/// A look at the pool taken during a phase.
struct Sample {
    at: f64,
    ios: u64,
    stats: PoolStats,
}

/// What one driven phase did.
struct Phase {
    tally: Tally,
    elapsed: f64,
    stalled: bool,
    samples: Vec<Sample>,
}

impl Phase {
    fn iops(&self) -> f64 {
        self.tally.ios as f64 / self.elapsed.max(1e-9)
    }
}

/// Bounds of one phase.
struct Limits {
    duration: Duration,
    max_ios: u64,
}

/// Writes `io_bytes` at the block addresses `next_block` yields, `DEPTH` at a
/// time from this thread, until a limit is hit or `stop` (asked every sample
/// with fresh pool figures) says so.
fn drive(
    engine: &Arc<Engine>,
    volume: VolumeId,
    io_bytes: u64,
    next_block: impl FnMut() -> u64,
    limits: Limits,
    mut stop: impl FnMut(&PoolStats) -> bool,
) -> Phase {
    let started = Instant::now();
    let deadline = started + limits.duration;
    let mut phase = Phase {
        tally: Tally::with_capacity(1 << 20),
        elapsed: 0.0,
        stalled: false,
        samples: vec![Sample {
            at: 0.0,
            ios: 0,
            stats: engine.pool_stats(),
        }],
    };
    let ops = writes(io_bytes, 0xA5, next_block);
    let mut load = EngineLoad::new(engine, volume, Receive::StallAfter(STALL_LIMIT), ops)
        .max_ops(limits.max_ios);
    let mut stopping = false;
    let mut next_sample = started + SAMPLE_EVERY;
    let finished = keep_in_flight(&mut load, DEPTH, |load, done| {
        phase.tally.record(done);
        if !stopping {
            let now = Instant::now();
            if now >= next_sample {
                let stats = engine.pool_stats();
                stopping |= stop(&stats);
                phase.samples.push(Sample {
                    at: (now - started).as_secs_f64(),
                    ios: phase.tally.ios,
                    stats,
                });
                next_sample = now + SAMPLE_EVERY;
            }
            stopping |= now >= deadline
                || load.submitted() >= limits.max_ios
                || phase.tally.errors >= ERRORS_MAX;
        }
        !stopping
    });
    phase.stalled = !finished;
    phase.elapsed = started.elapsed().as_secs_f64();
    phase.samples.push(Sample {
        at: phase.elapsed,
        ios: phase.tally.ios,
        stats: engine.pool_stats(),
    });
    phase
}

/// Device bytes (the engine's count: batch headers, data, relocations and
/// checkpoints) per host byte between two samples.
fn device_amplification(from: &Sample, to: &Sample) -> f64 {
    let host = to
        .stats
        .host_written_bytes
        .saturating_sub(from.stats.host_written_bytes);
    if host == 0 {
        return f64::NAN;
    }
    to.stats
        .device_written_bytes
        .saturating_sub(from.stats.device_written_bytes) as f64
        / host as f64
}

/// Write amplification between two samples, from the pool's counters.
fn amplification(from: &PoolStats, to: &PoolStats) -> f64 {
    let host = to
        .host_written_bytes
        .saturating_sub(from.host_written_bytes);
    let moved = to
        .gc_relocated_bytes
        .saturating_sub(from.gc_relocated_bytes);
    if host == 0 {
        return f64::NAN;
    }
    (host + moved) as f64 / host as f64
}

fn open_fresh(path: &PathBuf, pool_bytes: u64, config: &EngineConfig) -> Arc<Engine> {
    let _ = std::fs::remove_file(path);
    let spec = DeviceSpec {
        path: path.clone(),
        kind: BackingKind::File,
        create_size: Some(pool_bytes),
    };
    Arc::new(Engine::open_paths(&[spec], config.clone(), false).expect("engine on bench file"))
}

fn policy_name(policy: GcPolicy) -> &'static str {
    match policy {
        GcPolicy::Greedy => "greedy",
        GcPolicy::CostBenefit => "cost-benefit",
    }
}

/// One table row.
struct Row {
    fill_permille: u64,
    workload: Workload,
    policy: GcPolicy,
    fresh_iops: f64,
    phase_iops: f64,
    steady_iops: f64,
    steady_from_s: f64,
    seconds: f64,
    wa_phase: f64,
    wa_steady: f64,
    device_wa_steady: f64,
    cleaned: u64,
    segments: u64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    max_us: f64,
    errors: u64,
    notes: String,
}

fn run_case(
    path: &PathBuf,
    pool_bytes: u64,
    fill_permille: u64,
    workload: Workload,
    policy: GcPolicy,
) -> Row {
    let defaults = EngineConfig::default();
    let config = EngineConfig {
        gc_policy: policy,
        blocks_per_segment: env_u64(
            "KEEL_GC_SEGMENT_BLOCKS",
            u64::from(defaults.blocks_per_segment),
        ) as u32,
        ..defaults
    };
    let segment_bytes = u64::from(config.blocks_per_segment) * BLOCK_BYTES;
    let mut notes = Vec::new();

    // Fresh baseline on a just-formatted pool.
    let engine = open_fresh(path, pool_bytes, &config);
    let stats = engine.pool_stats();
    let capacity = stats.capacity_bytes;
    let segments = capacity / segment_bytes;
    // Fill is the share of what the pool takes in live data (its capacity
    // less checkpoint room, the collector's reserve and its spare area).
    let volume_bytes =
        stats.data_capacity_bytes * fill_permille / 1000 / FILL_IO_BYTES * FILL_IO_BYTES;
    let blocks = volume_bytes / BLOCK_BYTES;
    let volume = engine
        .create_volume("gc", volume_bytes, SectorSize::B4096)
        .expect("volume")
        .id;
    let fresh = drive(
        &engine,
        volume,
        BLOCK_BYTES,
        addresses(workload, blocks, 0x9E37_79B9_7F4A_7C15),
        Limits {
            duration: Duration::from_secs(env_u64("KEEL_BENCH_SECONDS", 5)),
            max_ios: capacity * 6 / 10 / BLOCK_BYTES,
        },
        |_| false,
    );
    let fresh_cleaned = fresh
        .samples
        .last()
        .map_or(0, |s| s.stats.gc_cleaned_segments);
    if fresh_cleaned > 0 {
        notes.push(format!("GC ran in fresh phase ({fresh_cleaned} segments)"));
    }
    if fresh.tally.errors > 0 || fresh.stalled {
        notes.push(format!(
            "fresh phase: {} errors ({:?}), stalled {}",
            fresh.tally.errors, fresh.tally.first_error, fresh.stalled
        ));
    }
    drop(engine);

    // The same pool formatted again and filled sequentially.
    let engine = open_fresh(path, pool_bytes, &config);
    let volume = engine
        .create_volume("gc", volume_bytes, SectorSize::B4096)
        .expect("volume")
        .id;
    let fill_ios = volume_bytes / FILL_IO_BYTES;
    let mut next = 0u64;
    let fill = drive(
        &engine,
        volume,
        FILL_IO_BYTES,
        move || {
            next += 1;
            (next - 1) * (FILL_IO_BYTES / BLOCK_BYTES)
        },
        Limits {
            duration: Duration::from_secs(600),
            max_ios: fill_ios,
        },
        |_| false,
    );
    let filled = engine.pool_stats();
    eprintln!(
        "  fill {}‰: {:.1} s ({:.0} MiB/s), used {} MiB of {} MiB, free {} MiB, checkpoints {} MiB, cleaned {}",
        fill_permille,
        fill.elapsed,
        (fill.tally.ios * FILL_IO_BYTES) as f64 / fill.elapsed / f64::from(1 << 20),
        filled.used_bytes >> 20,
        capacity >> 20,
        filled.free_bytes >> 20,
        filled.checkpoint_bytes >> 20,
        filled.gc_cleaned_segments
    );
    if fill.tally.errors > 0 || fill.stalled || fill.tally.ios < fill_ios {
        notes.push(format!(
            "fill: {} of {} writes done, {} errors ({:?}), stalled {}",
            fill.tally.ios, fill_ios, fill.tally.errors, fill.tally.first_error, fill.stalled
        ));
    }

    // Sustained random overwrite.
    let cleanings = env_u64("KEEL_GC_CLEANINGS", 2).max(2);
    let target = filled.gc_cleaned_segments + cleanings * segments;
    let mut overwrite = drive(
        &engine,
        volume,
        BLOCK_BYTES,
        addresses(workload, blocks, 0x2545_F491_4F6C_DD1D),
        Limits {
            duration: Duration::from_secs(env_u64("KEEL_GC_SECONDS", 90)),
            max_ios: u64::MAX,
        },
        |stats| stats.gc_cleaned_segments >= target,
    );
    if overwrite.tally.errors > 0 || overwrite.stalled {
        notes.push(format!(
            "overwrite: {} errors ({:?}), stalled {}",
            overwrite.tally.errors, overwrite.tally.first_error, overwrite.stalled
        ));
    }
    let first = &overwrite.samples[0];
    let last = &overwrite.samples[overwrite.samples.len() - 1];
    let cleaned = last.stats.gc_cleaned_segments - first.stats.gc_cleaned_segments;
    // Steady part: once half the cleanings are done, else from the first one.
    let steady_start = overwrite
        .samples
        .iter()
        .find(|s| {
            s.stats.gc_cleaned_segments
                >= first.stats.gc_cleaned_segments + cleanings / 2 * segments
        })
        .filter(|s| last.at - s.at >= 1.0)
        .or_else(|| {
            notes.push("steady window from first cleaning".into());
            overwrite
                .samples
                .iter()
                .find(|s| s.stats.gc_cleaned_segments > first.stats.gc_cleaned_segments)
        })
        .unwrap_or(first);
    let steady_iops = (last.ios - steady_start.ios) as f64 / (last.at - steady_start.at).max(1e-9);
    if overwrite.tally.errors >= ERRORS_MAX {
        notes.push(format!("stopped by write errors at {cleaned} cleaned"));
    } else if cleaned < cleanings * segments {
        notes.push(format!("stopped by the time limit at {cleaned} cleaned"));
    }
    let latencies = std::mem::take(&mut overwrite.tally.latencies).summary(Precision::WholeMicros);
    let longest_gap = overwrite
        .samples
        .windows(2)
        .filter(|w| w[1].ios == w[0].ios)
        .map(|w| w[1].at - w[0].at)
        .fold(0.0f64, f64::max);
    if longest_gap > 0.0 {
        notes.push(format!(
            "a {:.2} s sample window completed no write",
            longest_gap
        ));
    }
    let free_min = overwrite
        .samples
        .iter()
        .map(|s| s.stats.free_bytes)
        .min()
        .unwrap_or(0);
    eprintln!(
        "  overwrite: {:.1} s, {} writes, cleaned {}, free min {} MiB, used {} MiB, WA since open {:.2}",
        overwrite.elapsed,
        overwrite.tally.ios,
        cleaned,
        free_min >> 20,
        last.stats.used_bytes >> 20,
        last.stats.write_amplification()
    );
    drop(engine);
    let _ = std::fs::remove_file(path);
    Row {
        fill_permille,
        workload,
        policy,
        fresh_iops: fresh.iops(),
        phase_iops: overwrite.iops(),
        steady_iops,
        steady_from_s: steady_start.at,
        seconds: overwrite.elapsed,
        wa_phase: amplification(&first.stats, &last.stats),
        wa_steady: amplification(&steady_start.stats, &last.stats),
        device_wa_steady: device_amplification(steady_start, last),
        cleaned,
        segments,
        p50_us: latencies.p50_us,
        p99_us: latencies.p99_us,
        p999_us: latencies.p999_us,
        max_us: latencies.max_us,
        errors: overwrite.tally.errors,
        notes: notes.join("; "),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: this bench needs a real disk.
    }
    let pool_bytes = env_u64("KEEL_GC_POOL_MIB", 2048) << 20;
    let path = bench_dir().join("keel-bench-gc.img");
    let fills: Vec<u64> = env_list("KEEL_GC_FILLS", "800,850,900")
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|f| (1..1000).contains(f))
        .collect();
    let workloads: Vec<Workload> = env_list("KEEL_GC_WORKLOADS", "uniform,hotcold")
        .iter()
        .filter_map(|s| match s.as_str() {
            "uniform" => Some(Workload::Uniform),
            "hotcold" => Some(Workload::HotCold),
            _ => None,
        })
        .collect();
    let policies: Vec<GcPolicy> = env_list("KEEL_GC_POLICIES", "greedy,cost-benefit")
        .iter()
        .filter_map(|s| match s.as_str() {
            "greedy" => Some(GcPolicy::Greedy),
            "cost-benefit" => Some(GcPolicy::CostBenefit),
            _ => None,
        })
        .collect();
    let mut rows = Vec::new();
    for &fill in &fills {
        for &workload in &workloads {
            for &policy in &policies {
                eprintln!(
                    "case: fill {fill}‰, {}, {}",
                    workload.name(),
                    policy_name(policy)
                );
                let row = run_case(&path, pool_bytes, fill, workload, policy);
                print_header_once(rows.is_empty(), pool_bytes);
                print_row(&row);
                rows.push(row);
            }
        }
    }
}

fn print_header_once(first: bool, pool_bytes: u64) {
    if !first {
        return;
    }
    println!(
        "\nGC under 4 KiB random overwrite at QD{DEPTH}, {} MiB pool file",
        pool_bytes >> 20
    );
    println!(
        "| fill | workload | policy | fresh IOPS | overwrite IOPS (whole phase) | steady IOPS | steady/fresh | WA (phase) | WA (steady) | device bytes per host byte (steady) | segments cleaned | run s (steady from) | p50 µs | p99 µs | p99.9 µs | max µs | errors | notes |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
}

fn print_row(r: &Row) {
    println!(
        "| {}% | {} | {} | {:.0} | {:.0} | {:.0} | {:.2}x | {:.2} | {:.2} | {:.2} | {} ({:.1}x pool) | {:.1} ({:.1}) | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
        r.fill_permille / 10,
        r.workload.name(),
        policy_name(r.policy),
        r.fresh_iops,
        r.phase_iops,
        r.steady_iops,
        r.steady_iops / r.fresh_iops.max(1e-9),
        r.wa_phase,
        r.wa_steady,
        r.device_wa_steady,
        r.cleaned,
        r.cleaned as f64 / r.segments as f64,
        r.seconds,
        r.steady_from_s,
        r.p50_us,
        r.p99_us,
        r.p999_us,
        r.max_us,
        r.errors,
        r.notes
    );
}
