//! Snapshot costs on a file-backed pool (sparse file in `KEEL_BENCH_DIR`, default
//! `target/`), driven through the completion API from one thread at QD32 as in
//! `engine_vs_fio`:
//!
//! 1. a volume with `KEEL_SNAP_VOLUME_MIB` (default 1024) written sequentially;
//!    snapshot creation timed over `KEEL_SNAP_CREATIONS` (default 50) snapshots
//!    taken back to back, which are then deleted (timed too);
//! 2. 4 KiB random write IOPS with 0 snapshots, then after taking snapshots up
//!    to 16 and then 256, writing `KEEL_SNAP_STEP_WRITES` (default 256) random
//!    4 KiB blocks between two snapshots so each snapshot differs from the next.
//!    Each measurement alternates rounds on the snapshotted volume and on a
//!    control volume of the same size in the same pool that never has
//!    snapshots, `KEEL_BENCH_SECONDS` (default 4) per volume in all, so the
//!    ratio between the two is taken under the same machine load;
//! 3. deletion of all 256 snapshots in a shuffled order: time, and the space
//!    reclaimed (live bytes at once; free segments after garbage collection
//!    rounds and a checkpoint).
//!
//! `cargo bench --bench engine_snapshots`. The pool file is `KEEL_SNAP_POOL_GIB`
//! (default 12) GiB, sparse; the run writes about 9 GiB of it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::figures::{Latencies, Precision};
use common::load::{keep_in_flight, writes, EngineLoad, Receive, Tally};
use common::{bench_dir, env_u64, Xorshift};
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig, SectorSize, VolumeId};

const BLOCK_BYTES: u64 = 4096;
const FILL_IO_BYTES: u64 = 128 << 10;
const DEPTH: usize = 32;
/// Alternating rounds per measured snapshot count (snapshotted, then control).
const ROUNDS: u32 = 8;
/// A phase with no completion for this long is reported as stalled and abandoned.
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Snapshot counts at which write IOPS are measured.
const MEASURE_AT: [usize; 3] = [0, 16, 256];

/// What one driven phase did.
struct Phase {
    tally: Tally,
    elapsed: f64,
    stalled: bool,
}

impl Phase {
    fn check(&self, what: &str) {
        if self.tally.errors > 0 || self.stalled {
            eprintln!(
                "{what}: {} writes failed (first: {:?}), stalled: {}",
                self.tally.errors, self.tally.first_error, self.stalled
            );
        }
    }
}

/// Writes `io_bytes` at the block addresses `next_block` yields, `DEPTH` at a
/// time from this thread, for at most `duration` and `max_ios` writes.
fn drive(
    engine: &Arc<Engine>,
    volume: VolumeId,
    io_bytes: u64,
    next_block: impl FnMut() -> u64,
    duration: Duration,
    max_ios: u64,
) -> Phase {
    let started = Instant::now();
    let deadline = started + duration;
    let mut phase = Phase {
        tally: Tally::with_capacity(1 << 16),
        elapsed: 0.0,
        stalled: false,
    };
    let ops = writes(io_bytes, 0x5A, next_block);
    let mut load =
        EngineLoad::new(engine, volume, Receive::StallAfter(STALL_LIMIT), ops).max_ops(max_ios);
    let finished = keep_in_flight(&mut load, DEPTH, |load, done| {
        phase.tally.record(done);
        Instant::now() < deadline && load.submitted() < max_ios && phase.tally.errors == 0
    });
    phase.stalled = !finished;
    phase.elapsed = started.elapsed().as_secs_f64();
    phase
}

/// Write figures of the snapshotted volume at one snapshot count.
struct WriteRow {
    count: usize,
    iops: f64,
    control_iops: f64,
    mean_us: f64,
    p99_us: f64,
    max_us: f64,
    used_bytes: u64,
    checkpoint_bytes: u64,
    cleaned: u64,
}

/// Mean, p50 and max of durations, in milliseconds.
fn summary(times: &[Duration]) -> (f64, f64, f64) {
    if times.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut ms: Vec<f64> = times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    (mean, ms[ms.len() / 2], ms[ms.len() - 1])
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: this bench needs a real disk.
    }
    let seconds = Duration::from_secs(env_u64("KEEL_BENCH_SECONDS", 4));
    let volume_bytes = env_u64("KEEL_SNAP_VOLUME_MIB", 1024) << 20;
    let creations = env_u64("KEEL_SNAP_CREATIONS", 50) as usize;
    let step_writes = env_u64("KEEL_SNAP_STEP_WRITES", 256);
    let blocks = volume_bytes / BLOCK_BYTES;

    let path = bench_dir().join("keel-bench-snapshots.img");
    let _ = std::fs::remove_file(&path);
    let spec = DeviceSpec {
        path: path.clone(),
        kind: BackingKind::File,
        create_size: Some(env_u64("KEEL_SNAP_POOL_GIB", 12) << 30),
    };
    let engine = Arc::new(
        Engine::open_paths(&[spec], EngineConfig::default(), false).expect("engine on bench file"),
    );
    let volume = engine
        .create_volume("base", volume_bytes, SectorSize::B4096)
        .expect("volume")
        .id;
    let control = engine
        .create_volume("control", volume_bytes, SectorSize::B4096)
        .expect("control volume")
        .id;
    for target in [volume, control] {
        let mut next = 0u64;
        let fill = drive(
            &engine,
            target,
            FILL_IO_BYTES,
            move || {
                next += 1;
                (next - 1) * (FILL_IO_BYTES / BLOCK_BYTES)
            },
            Duration::from_secs(600),
            volume_bytes / FILL_IO_BYTES,
        );
        fill.check("fill");
        eprintln!("filled {} MiB in {:.1} s", volume_bytes >> 20, fill.elapsed);
    }

    // 1. Creation time of snapshots of the written volume, back to back.
    let mut times = Vec::with_capacity(creations);
    let mut ids = Vec::with_capacity(creations);
    for i in 0..creations {
        let at = Instant::now();
        let snap = engine
            .create_snapshot(volume, &format!("burst-{i}"))
            .expect("snapshot");
        times.push(at.elapsed());
        ids.push(snap.id);
    }
    let burst_create = summary(&times);
    let used_before = engine.pool_stats().used_bytes;
    let mut delete_times = Vec::with_capacity(creations);
    for id in ids {
        let at = Instant::now();
        engine.delete_volume(id).expect("delete snapshot");
        delete_times.push(at.elapsed());
    }
    let burst_delete = summary(&delete_times);
    let burst_reclaimed = used_before.saturating_sub(engine.pool_stats().used_bytes);

    // 2. Write IOPS with 0, 16 and 256 snapshots that differ from each other.
    let mut rng = Xorshift(Xorshift::SEED);
    let mut write_rows = Vec::new();
    let mut step_create = Vec::new();
    let mut snapshots = Vec::new();
    for &count in &MEASURE_AT {
        while snapshots.len() < count {
            let at = Instant::now();
            let snap = engine
                .create_snapshot(volume, &format!("snap-{}", snapshots.len()))
                .expect("snapshot");
            step_create.push((snapshots.len(), at.elapsed()));
            snapshots.push(snap.id);
            let step = drive(
                &engine,
                volume,
                BLOCK_BYTES,
                || rng.next() % blocks,
                Duration::from_secs(60),
                step_writes,
            );
            step.check("writes between snapshots");
        }
        // Alternate rounds on the snapshotted volume and the control volume.
        let mut sides = [
            (0u64, 0.0f64, Latencies::default()),
            (0u64, 0.0f64, Latencies::default()),
        ];
        for _ in 0..ROUNDS {
            for (side, target) in sides.iter_mut().zip([volume, control]) {
                let mut phase = drive(
                    &engine,
                    target,
                    BLOCK_BYTES,
                    || rng.next() % blocks,
                    seconds / ROUNDS,
                    u64::MAX,
                );
                phase.check("measured writes");
                side.0 += phase.tally.ios;
                side.1 += phase.elapsed;
                side.2.append(&mut phase.tally.latencies);
            }
        }
        let stats = engine.pool_stats();
        let [snapped, plain] = sides;
        let latencies = snapped.2.summary(Precision::WholeMicros);
        write_rows.push(WriteRow {
            count,
            iops: snapped.0 as f64 / snapped.1.max(1e-9),
            control_iops: plain.0 as f64 / plain.1.max(1e-9),
            mean_us: latencies.mean_us,
            p99_us: latencies.p99_us,
            max_us: latencies.max_us,
            used_bytes: stats.used_bytes,
            checkpoint_bytes: stats.checkpoint_bytes,
            cleaned: stats.gc_cleaned_segments,
        });
    }
    let first16: Vec<Duration> = step_create
        .iter()
        .filter(|(n, _)| *n < 16)
        .map(|(_, d)| *d)
        .collect();
    let later: Vec<Duration> = step_create
        .iter()
        .filter(|(n, _)| *n >= 16)
        .map(|(_, d)| *d)
        .collect();

    // 3. Delete all 256 in a shuffled order.
    let before = engine.pool_stats();
    let mut order = snapshots.clone();
    for i in (1..order.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    let mut delete_times = Vec::with_capacity(order.len());
    let started = Instant::now();
    for id in order {
        let at = Instant::now();
        engine.delete_volume(id).expect("delete snapshot");
        delete_times.push(at.elapsed());
    }
    let delete_total = started.elapsed();
    let after_delete = engine.pool_stats();
    let gc_started = Instant::now();
    let mut rounds = 0;
    while rounds < 1000 && gc_started.elapsed() < Duration::from_secs(120) {
        match engine.collect_garbage() {
            Ok(true) => rounds += 1,
            Ok(false) => break,
            Err(err) => {
                eprintln!("collect_garbage failed: {err}");
                break;
            }
        }
    }
    if let Err(err) = engine.checkpoint() {
        eprintln!("checkpoint failed: {err}");
    }
    let gc_time = gc_started.elapsed();
    let after_gc = engine.pool_stats();

    println!(
        "\nsnapshots: {} MiB volume written sequentially, 4 KiB random writes at QD{DEPTH}, {} s per volume per measurement in {ROUNDS} alternating rounds, {} random 4 KiB writes between snapshots",
        volume_bytes >> 20,
        seconds.as_secs(),
        step_writes
    );
    println!("| operation | count | mean ms | p50 ms | max ms |");
    println!("|---|---|---|---|---|");
    let (mean, p50, max) = burst_create;
    println!(
        "| create snapshot of the written volume, back to back | {creations} | {mean:.2} | {p50:.2} | {max:.2} |"
    );
    let (mean, p50, max) = burst_delete;
    println!(
        "| delete those snapshots (nothing exclusive: {:.1} MiB reclaimed) | {creations} | {mean:.2} | {p50:.2} | {max:.2} |",
        mib(burst_reclaimed)
    );
    let (mean, p50, max) = summary(&first16);
    println!(
        "| create snapshot 1-16 (writes in between) | {} | {mean:.2} | {p50:.2} | {max:.2} |",
        first16.len()
    );
    let (mean, p50, max) = summary(&later);
    println!(
        "| create snapshot 17-256 (writes in between) | {} | {mean:.2} | {p50:.2} | {max:.2} |",
        later.len()
    );
    let (mean, p50, max) = summary(&delete_times);
    println!(
        "| delete all {} snapshots, shuffled order (total {:.2} s) | {} | {mean:.2} | {p50:.2} | {max:.2} |",
        delete_times.len(),
        delete_total.as_secs_f64(),
        delete_times.len()
    );
    println!();
    println!("| snapshots | write IOPS | control volume IOPS (same rounds) | ratio | ratio vs 0 snapshots | mean µs | p99 µs | max µs | pool used MiB after | checkpoint MiB after | GC segments cleaned so far |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    let ratio = |r: &WriteRow| r.iops / r.control_iops.max(1e-9);
    let base = write_rows.first().map_or(1.0, ratio);
    for r in &write_rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2}x | {:.2}x | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            r.count,
            r.iops,
            r.control_iops,
            ratio(r),
            ratio(r) / base,
            r.mean_us,
            r.p99_us,
            r.max_us,
            mib(r.used_bytes),
            mib(r.checkpoint_bytes),
            r.cleaned
        );
    }
    println!();
    println!("| space | MiB |");
    println!("|---|---|");
    println!(
        "| used (live data) with 256 snapshots | {:.0} |",
        mib(before.used_bytes)
    );
    println!(
        "| used right after deleting them | {:.0} (reclaimed {:.0}) |",
        mib(after_delete.used_bytes),
        mib(before.used_bytes.saturating_sub(after_delete.used_bytes))
    );
    println!(
        "| free segments before delete / after delete / after {rounds} GC rounds + checkpoint ({:.1} s) | {:.0} / {:.0} / {:.0} |",
        gc_time.as_secs_f64(),
        mib(before.free_bytes),
        mib(after_delete.free_bytes),
        mib(after_gc.free_bytes)
    );
    drop(engine);
    let _ = std::fs::remove_file(&path);
}
