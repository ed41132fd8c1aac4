//! Recovery time and index memory, the two figures issue 2 asks for beyond IOPS.
//!
//! 1. Index memory: bytes per mapped 4 KiB block of the engine's block map
//!    (`VolumeMap`) after a random fill and after a sequential fill of 1 Mi blocks.
//! 2. Recovery: several GiB written to a file-backed pool through the engine, then
//!    the engine is dropped without a checkpoint (as after kill -9) and reopened;
//!    the open time (checkpoint load + log replay + opening checkpoint) is reported,
//!    and again after a clean shutdown.
//!
//! `cargo bench --bench engine_recovery` (KEEL_RECOVERY_GIB sets the amount, default 4).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use engine::io::BackingKind;
use engine::units::PhysBlock;
use engine::{DeviceSpec, Engine, EngineConfig, Mapping, SectorSize, Untracked, VolumeMap};

fn index_memory() {
    let blocks = 1u64 << 20;
    let mut sequential = VolumeMap::new();
    for lba in 0..blocks {
        sequential.insert(lba, Mapping::raw(PhysBlock(lba), 0), &mut Untracked);
    }
    let mut random = VolumeMap::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    // A random fill of a 4 GiB volume (1 Mi blocks) by 1 Mi random writes.
    for i in 0..blocks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        random.insert(x % blocks, Mapping::raw(PhysBlock(i), 0), &mut Untracked);
    }
    for (name, map) in [("sequential fill", &sequential), ("random fill", &random)] {
        println!(
            "| index, {name} | {} blocks mapped | {:.2} bytes per mapped block |",
            map.mapped_blocks(),
            map.memory_bytes() as f64 / map.mapped_blocks() as f64
        );
    }
}

fn recovery() {
    let gib: u64 = std::env::var("KEEL_RECOVERY_GIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let dir = std::env::var_os("KEEL_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    let path = dir.join("keel-recovery-pool.img");
    let _ = std::fs::remove_file(&path);
    let spec = DeviceSpec {
        path: path.clone(),
        kind: BackingKind::File,
        create_size: Some((gib + 2) << 30),
    };
    let engine = Arc::new(
        Engine::open_paths(std::slice::from_ref(&spec), EngineConfig::default(), false)
            .expect("open"),
    );
    let volume = engine
        .create_volume("recovery", gib << 30, SectorSize::B4096)
        .expect("volume")
        .id;
    let chunk = Bytes::from(vec![0x6Bu8; 128 << 10]);
    let writes = (gib << 30) / (128 << 10);
    let started = Instant::now();
    let (tx, rx) = crossbeam_channel::unbounded();
    let mut inflight = 0;
    let mut next = 0u64;
    while next < writes || inflight > 0 {
        while inflight < 32 && next < writes {
            let tx = tx.clone();
            engine.write(
                volume,
                next * 32,
                chunk.clone(),
                Box::new(move |r| {
                    let _ = tx.send(r);
                }),
            );
            next += 1;
            inflight += 1;
        }
        rx.recv().expect("completion").expect("write");
        inflight -= 1;
    }
    let write_s = started.elapsed().as_secs_f64();
    drop(rx);
    let engine = Arc::try_unwrap(engine).unwrap_or_else(|_| panic!("engine still shared"));
    drop(engine); // no final checkpoint: like kill -9
    let started = Instant::now();
    let engine = Engine::open_paths(std::slice::from_ref(&spec), EngineConfig::default(), false)
        .expect("reopen");
    let crash_open = started.elapsed();
    engine.shutdown().expect("shutdown");
    let started = Instant::now();
    let engine = Engine::open_paths(std::slice::from_ref(&spec), EngineConfig::default(), false)
        .expect("reopen");
    let clean_open = started.elapsed();
    drop(engine);
    println!("| recovery, {gib} GiB written ({:.0} MiB/s) | open after crash {:?} | open after clean shutdown {:?} |",
        (gib << 10) as f64 / write_s, crash_open, clean_open);
    let _ = std::fs::remove_file(&path);
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return;
    }
    index_memory();
    recovery();
}
