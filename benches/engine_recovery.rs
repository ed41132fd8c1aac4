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

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::load::fill;
use common::{bench_dir, env_u64, Xorshift};
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
    let mut x = Xorshift(Xorshift::SEED);
    // A random fill of a 4 GiB volume (1 Mi blocks) by 1 Mi random writes.
    for i in 0..blocks {
        random.insert(
            x.next() % blocks,
            Mapping::raw(PhysBlock(i), 0),
            &mut Untracked,
        );
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
    let gib = env_u64("KEEL_RECOVERY_GIB", 4);
    let path = bench_dir().join("keel-recovery-pool.img");
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
    let started = Instant::now();
    fill(&engine, volume, gib << 30, 128 << 10, 32, 0x6B);
    let write_s = started.elapsed().as_secs_f64();
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
