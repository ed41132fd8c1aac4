//! Thick clone throughput and the foreground IOPS it leaves, and compression ratio
//! and throughput on compressible and random data, on a file-backed pool driven
//! through the engine's completion API (as in `engine_vs_fio`).
//!
//! `cargo bench --bench engine_clone_compress`. Environment: `KEEL_BENCH_DIR`
//! (default `target/`), `KEEL_BENCH_SECONDS` (foreground phases, default 4),
//! `KEEL_BENCH_CLONE_GIB` (source size, default 4), `KEEL_BENCH_COMPRESS_MIB`
//! (data per compression run, default 512).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::load::{keep_in_flight, EngineLoad, Op, Order, Receive, Slots, BLOCK_BYTES};
use common::{bench_dir, env_u64, Xorshift};
use engine::io::BackingKind;
use engine::{
    CloneState, DeviceSpec, Engine, EngineConfig, SectorSize, ThickCloneOptions, VolumeId,
    VolumeOptions,
};

/// Runs writes (or reads) of `io_bytes` at queue depth `depth` over `[0, region)`
/// of `volume` until `stop` is set or `limit` elapses, or (sequential) until the
/// region is covered once. Returns (ios, seconds).
#[allow(clippy::too_many_arguments)]
fn drive(
    engine: &Engine,
    volume: VolumeId,
    region_bytes: u64,
    io_bytes: u64,
    depth: usize,
    random: bool,
    write: Option<&dyn Fn(u64) -> Bytes>,
    stop: &AtomicBool,
    limit: Duration,
) -> (u64, f64) {
    let order = if random {
        Order::Random
    } else {
        Order::Sequential
    };
    let mut slots = Slots::new(region_bytes / io_bytes, order);
    let blocks = io_bytes / BLOCK_BYTES;
    let mut load = EngineLoad::new(engine, volume, Receive::DrivingLocal, || {
        let slot = slots.next_once()?;
        let lba = slot * blocks;
        Some(match write {
            Some(content) => Op::Write {
                lba,
                data: content(slot),
            },
            None => Op::Read {
                lba,
                blocks: blocks as u32,
            },
        })
    });
    let started = Instant::now();
    let mut done = 0u64;
    keep_in_flight(&mut load, depth, |_, completion| {
        completion.result.expect("benchmark I/O failed");
        done += 1;
        !stop.load(Ordering::Relaxed) && started.elapsed() < limit
    });
    (done, started.elapsed().as_secs_f64())
}

fn text(slot: u64, len: usize) -> Bytes {
    let line = format!("slot {slot:>10}: the quick brown fox jumps over the lazy dog; ");
    Bytes::from(line.bytes().cycle().take(len).collect::<Vec<u8>>())
}

fn noise(slot: u64, len: usize) -> Bytes {
    let mut x = Xorshift(slot.wrapping_mul(Xorshift::SEED) | 1);
    Bytes::from((0..len).map(|_| x.next() as u8).collect::<Vec<u8>>())
}

fn open_pool(path: &PathBuf, bytes: u64) -> Engine {
    let _ = std::fs::remove_file(path);
    let spec = DeviceSpec {
        path: path.clone(),
        kind: BackingKind::File,
        create_size: Some(bytes),
    };
    Engine::open_paths(&[spec], EngineConfig::default(), false).expect("open pool")
}

fn thick_clone(dir: &std::path::Path) {
    let gib = env_u64("KEEL_BENCH_CLONE_GIB", 4);
    let seconds = env_u64("KEEL_BENCH_SECONDS", 4);
    let path = dir.join("keel-bench-clone.img");
    let engine = open_pool(&path, (2 * gib + 4) << 30);
    let source = engine
        .create_volume("source", gib << 30, SectorSize::B4096)
        .expect("create")
        .id;
    let fg = engine
        .create_volume("foreground", 1 << 30, SectorSize::B4096)
        .expect("create")
        .id;
    let never = AtomicBool::new(false);
    let fill = |s: u64| noise(s, 1 << 20);
    let started = Instant::now();
    drive(
        &engine,
        source,
        gib << 30,
        1 << 20,
        8,
        false,
        Some(&fill as &dyn Fn(u64) -> Bytes),
        &never,
        Duration::MAX,
    );
    let fill_s = started.elapsed().as_secs_f64();
    drive(
        &engine,
        fg,
        1 << 30,
        1 << 20,
        8,
        false,
        Some(&fill as &dyn Fn(u64) -> Bytes),
        &never,
        Duration::MAX,
    );
    let snap = engine
        .create_snapshot(source, "golden")
        .expect("snapshot")
        .id;
    let block = |s: u64| noise(s, 4096);
    let limit = Duration::from_secs(seconds);
    let (ios, secs) = drive(
        &engine,
        fg,
        1 << 30,
        4096,
        32,
        true,
        Some(&block as &dyn Fn(u64) -> Bytes),
        &never,
        limit,
    );
    let alone = ios as f64 / secs;
    for (label, pace) in [("unpaced", None), ("paced 200 MiB/s", Some(200u64 << 20))] {
        let options = ThickCloneOptions {
            max_bytes_per_s: pace,
            ..ThickCloneOptions::default()
        };
        let name = format!("thick-{}", pace.unwrap_or(0));
        let started = Instant::now();
        let job = engine
            .start_thick_clone(snap, &name, options)
            .expect("clone");
        let copying = AtomicBool::new(true);
        let (fg_ios, fg_secs) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                let done = job.wait(Duration::from_secs(3600));
                copying.store(false, Ordering::Relaxed);
                done
            });
            let stop = AtomicBool::new(false);
            let mut total = (0u64, 0f64);
            while copying.load(Ordering::Relaxed) {
                let (i, s) = drive(
                    &engine,
                    fg,
                    1 << 30,
                    4096,
                    32,
                    true,
                    Some(&block as &dyn Fn(u64) -> Bytes),
                    &stop,
                    Duration::from_secs(1),
                );
                total = (total.0 + i, total.1 + s);
            }
            let done = watcher.join().expect("watcher");
            assert_eq!(done.state, CloneState::Completed, "{done:?}");
            total
        });
        let clone_s = started.elapsed().as_secs_f64();
        let with_clone = fg_ios as f64 / fg_secs.max(1e-9);
        println!(
            "| thick clone of {gib} GiB, {label} | {:.0} MiB/s | {:.1} s | fg 4k randwrite qd32 alone {:.0} IOPS | during clone {:.0} IOPS | {:.2}x |",
            (gib << 10) as f64 / clone_s,
            clone_s,
            alone,
            with_clone,
            with_clone / alone
        );
        let id = engine.volume_by_name(&name).expect("clone").id;
        engine.delete_volume(id).expect("delete clone");
    }
    println!("| (source fill: {gib} GiB of 1 MiB writes at qd8 in {fill_s:.1} s) |");
    drop(engine);
    let _ = std::fs::remove_file(&path);
}

fn compression(dir: &std::path::Path) {
    let mib = env_u64("KEEL_BENCH_COMPRESS_MIB", 512);
    let path = dir.join("keel-bench-compress.img");
    let engine = open_pool(&path, 8 << 30);
    let never = AtomicBool::new(false);
    let text_io = |s: u64| text(s, 128 << 10);
    let noise_io = |s: u64| noise(s, 128 << 10);
    type Content<'a> = &'a dyn Fn(u64) -> Bytes;
    let cases: [(&str, bool, Content); 4] = [
        ("text, uncompressed volume", false, &text_io),
        ("text, compressed volume", true, &text_io),
        ("random, uncompressed volume", false, &noise_io),
        ("random, compressed volume", true, &noise_io),
    ];
    for (i, (label, compress, content)) in cases.into_iter().enumerate() {
        let volume = engine
            .create_volume_with_options(
                &format!("c{i}"),
                mib << 20,
                SectorSize::B4096,
                VolumeOptions {
                    compression: compress,
                },
            )
            .expect("create")
            .id;
        let (ios, secs) = drive(
            &engine,
            volume,
            mib << 20,
            128 << 10,
            32,
            false,
            Some(content),
            &never,
            Duration::MAX,
        );
        let write_mib_s = ios as f64 * 0.125 / secs;
        let (rios, rsecs) = drive(
            &engine,
            volume,
            mib << 20,
            128 << 10,
            32,
            false,
            None,
            &never,
            Duration::MAX,
        );
        let read_mib_s = rios as f64 * 0.125 / rsecs;
        let space = engine.volume_space(volume).expect("space");
        println!(
            "| {label} | {write_mib_s:.0} MiB/s | {read_mib_s:.0} MiB/s | {:.2}x | {} MiB stored |",
            space.compression_ratio(),
            space.stored_bytes >> 20
        );
    }
    println!(
        "| pool ratio of compressed writes | {:.2}x |",
        engine.pool_stats().compression_ratio()
    );
    drop(engine);
    let _ = std::fs::remove_file(&path);
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: this bench needs a real disk.
    }
    let dir = bench_dir();
    println!("| compression case | write 128k qd32 | read 128k qd32 | ratio | stored |");
    println!("|---|---|---|---|---|");
    compression(&dir);
    println!();
    println!("| thick clone | throughput | time | foreground alone | foreground during | ratio |");
    println!("|---|---|---|---|---|---|");
    thick_clone(&dir);
}
