//! A writer for the process-kill crash test (`tests/crash_kill.rs`): writes
//! self-describing 4 KiB blocks (LBA and generation in the first 16 bytes, the
//! rest derived from both) with 16 writes in flight, and records each write in a
//! log file before it is issued (`I lba gen`) and once acknowledged (`A lba gen`).
//! The log is written with unbuffered `write(2)` calls, so what it says survives
//! SIGKILL of this process. Runs until killed.
//!
//! Usage: crash_writer POOL_FILE LOG_FILE FIRST_GENERATION
//!
//! `KEEL_CRASH_POOL_MIB` sizes a new pool file (default 256). With
//! `KEEL_CRASH_SNAPSHOT_EVERY=n` the writer also takes a snapshot of the volume
//! every n acknowledged writes and deletes the one before the previous, so
//! garbage collection must move blocks that snapshots share; it logs each
//! snapshot once taken (`S <name generation> <newest generation issued>`) and
//! prints `G <segments cleaned> <bytes relocated>` whenever the collector has
//! cleaned more. With
//! `KEEL_CRASH_LOCAL_RING=1` the writing thread attaches its own engine ring
//! (`LocalRing`), so its batches are written and acknowledged the way a
//! reactor's are.

use std::io::Write;
use std::sync::Arc;

use bytes::Bytes;
use engine::io::BackingKind;
use engine::{DeviceSpec, Engine, EngineConfig, SectorSize};

/// Blocks in the test volume.
pub const VOLUME_BLOCKS: u64 = 2048;
const INFLIGHT: usize = 16;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn block_content(lba: u64, generation: u64) -> Vec<u8> {
    let mut data = vec![0u8; 4096];
    data[..8].copy_from_slice(&lba.to_le_bytes());
    data[8..16].copy_from_slice(&generation.to_le_bytes());
    for (i, byte) in data.iter_mut().enumerate().skip(16) {
        *byte = (generation
            .wrapping_mul(31)
            .wrapping_add(lba)
            .wrapping_add(i as u64)
            % 251) as u8;
    }
    data
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: crash_writer POOL_FILE LOG_FILE FIRST_GENERATION");
        std::process::exit(2);
    }
    let Ok(mut generation) = args[3].parse::<u64>() else {
        eprintln!("FIRST_GENERATION must be a number");
        std::process::exit(2);
    };
    let spec = DeviceSpec {
        path: args[1].clone().into(),
        kind: BackingKind::File,
        create_size: Some(env_u64("KEEL_CRASH_POOL_MIB", 256) << 20),
    };
    let engine = match Engine::open_paths(&[spec], EngineConfig::default(), false) {
        Ok(engine) => Arc::new(engine),
        Err(err) => {
            eprintln!("open failed: {err}");
            std::process::exit(3);
        }
    };
    let volume = match engine.volume_by_name("crash") {
        Some(info) => info.id,
        None => match engine.create_volume("crash", VOLUME_BLOCKS * 4096, SectorSize::B4096) {
            Ok(info) => info.id,
            Err(err) => {
                eprintln!("create failed: {err}");
                std::process::exit(3);
            }
        },
    };
    let mut log = match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&args[2])
    {
        Ok(file) => file,
        Err(err) => {
            eprintln!("log open failed: {err}");
            std::process::exit(3);
        }
    };
    let snapshot_every = env_u64("KEEL_CRASH_SNAPSHOT_EVERY", 0);
    let mut acked = 0u64;
    let mut cleaned = 0u64;
    let mut snapshots: Vec<engine::VolumeId> =
        engine.snapshots().into_iter().map(|s| s.id).collect();
    let mut rng = generation.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    // Kept attached while writing: completions are polled by the receive below.
    let _ring = (env_u64("KEEL_CRASH_LOCAL_RING", 0) == 1).then(|| {
        engine::io::LocalRing::attach().unwrap_or_else(|err| {
            eprintln!("local ring: {err}");
            std::process::exit(8)
        })
    });
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut inflight = 0;
    println!("ready");
    let mut stdout = std::io::stdout();
    loop {
        while inflight < INFLIGHT {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let lba = rng % VOLUME_BLOCKS;
            generation += 1;
            if log
                .write_all(format!("I {lba} {generation}\n").as_bytes())
                .is_err()
            {
                std::process::exit(4);
            }
            let tx = tx.clone();
            let this_generation = generation;
            engine.write(
                volume,
                lba,
                Bytes::from(block_content(lba, generation)),
                Box::new(move |result| {
                    let _ = tx.send((lba, this_generation, result));
                }),
            );
            inflight += 1;
        }
        let Ok((lba, acked_generation, result)) = engine::io::recv_driving_local(&rx) else {
            std::process::exit(5)
        };
        inflight -= 1;
        if let Err(err) = result {
            eprintln!("write failed: {err}");
            std::process::exit(6);
        }
        if log
            .write_all(format!("A {lba} {acked_generation}\n").as_bytes())
            .is_err()
        {
            std::process::exit(4);
        }
        let _ = writeln!(stdout, "A");
        acked += 1;
        if snapshot_every > 0 && acked.is_multiple_of(snapshot_every) {
            match engine.create_snapshot(volume, &format!("snap-{acked_generation}")) {
                Ok(info) => {
                    snapshots.push(info.id);
                    // Every write issued so far may be in it; every one
                    // acknowledged so far is.
                    if log
                        .write_all(format!("S {acked_generation} {generation}\n").as_bytes())
                        .is_err()
                    {
                        std::process::exit(4);
                    }
                }
                Err(err) => {
                    eprintln!("snapshot failed: {err}");
                    std::process::exit(7);
                }
            }
            while snapshots.len() > 2 {
                if let Err(err) = engine.delete_volume(snapshots.remove(0)) {
                    eprintln!("snapshot delete failed: {err}");
                    std::process::exit(7);
                }
            }
            let stats = engine.pool_stats();
            if stats.gc_cleaned_segments > cleaned {
                cleaned = stats.gc_cleaned_segments;
                let _ = writeln!(stdout, "G {cleaned} {}", stats.gc_relocated_bytes);
            }
        }
    }
}
