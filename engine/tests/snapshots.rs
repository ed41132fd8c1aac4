//! Snapshots, thin clones, revert, thick clones and garbage collection through the
//! engine's public API, including crashes in the middle of a thick clone.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::io::{CrashMode, DeviceRef, SimDevice};
use engine::{
    CloneStage, CloneState, Engine, EngineConfig, IoError, SectorSize, ThickCloneOptions,
    VolumeError, VolumeId, VolumeKind,
};

const WAIT: Duration = Duration::from_secs(30);

fn config() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    }
}

fn sim_pool(size: u64) -> (Arc<SimDevice>, Engine) {
    let sim = Arc::new(SimDevice::new(size));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config()).expect("format");
    (sim, Engine::open(devices, config()).expect("open"))
}

fn reopen(sim: &Arc<SimDevice>) -> Engine {
    Engine::open(vec![sim.clone() as DeviceRef], config()).expect("reopen")
}

fn block(seed: u64) -> Bytes {
    Bytes::from(
        (0..4096u64)
            .map(|i| (seed.wrapping_mul(31) ^ i) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// Writes block `lba` with content `seed` for every `(lba, seed)`.
fn fill(engine: &Engine, volume: VolumeId, blocks: &[(u64, u64)]) {
    for &(lba, seed) in blocks {
        engine.write_wait(volume, lba, block(seed)).expect("write");
    }
}

fn assert_blocks(engine: &Engine, volume: VolumeId, blocks: &[(u64, u64)]) {
    for &(lba, seed) in blocks {
        let data = engine.read_wait(volume, lba, 1).expect("read");
        assert_eq!(data, block(seed), "{volume} block {lba}");
    }
}

#[test]
fn snapshots_keep_their_point_in_time_while_the_volume_and_its_clones_move_on() {
    let (_sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 8 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    fill(&engine, vol, &[(0, 1), (1, 2), (700, 3)]);
    let snap = engine.create_snapshot(vol, "s1").expect("snapshot");
    assert_eq!(snap.kind, VolumeKind::Snapshot);
    assert_eq!(snap.parent, Some(vol));
    fill(&engine, vol, &[(1, 20), (2, 21)]);
    assert_blocks(&engine, snap.id, &[(0, 1), (1, 2), (700, 3)]);
    assert_eq!(
        engine.read_wait(snap.id, 2, 1).expect("read"),
        Bytes::from(vec![0u8; 4096])
    );
    assert!(matches!(
        engine.write_wait(snap.id, 0, block(9)),
        Err(IoError::ReadOnly(_))
    ));
    assert!(matches!(
        engine.resize_volume(snap.id, 16 << 20),
        Err(VolumeError::IsSnapshot(_))
    ));

    let clone = engine
        .create_clone(snap.id, "c1", Some(16 << 20), None)
        .expect("clone");
    assert_eq!(clone.size_bytes, 16 << 20);
    assert_blocks(&engine, clone.id, &[(0, 1), (1, 2), (700, 3)]);
    fill(&engine, clone.id, &[(0, 30), (3000, 31)]);
    assert_blocks(&engine, clone.id, &[(0, 30), (1, 2), (3000, 31)]);
    assert_blocks(&engine, vol, &[(0, 1), (1, 20), (2, 21)]);
    assert_blocks(&engine, snap.id, &[(0, 1), (1, 2)]);

    // A clone of a clone's snapshot.
    let snap2 = engine
        .create_snapshot(clone.id, "s2")
        .expect("snapshot of clone");
    let clone2 = engine
        .create_clone(snap2.id, "c2", None, None)
        .expect("clone of clone");
    assert_blocks(&engine, clone2.id, &[(0, 30), (1, 2), (700, 3), (3000, 31)]);

    // Shared blocks are counted once in the pool and as shared per map.
    let space = engine.volume_space(snap.id).expect("space");
    assert_eq!(space.mapped_bytes, 3 * 4096);
    assert!(space.shared_bytes >= 4096, "{space:?}");

    // Snapshots and clones are deleted in any order; the rest stays intact.
    engine
        .delete_volume(snap.id)
        .expect("delete snapshot with clones");
    assert_blocks(&engine, clone.id, &[(0, 30), (1, 2), (700, 3)]);
    engine.delete_volume(vol).expect("delete origin");
    assert_blocks(&engine, clone2.id, &[(0, 30), (1, 2), (700, 3), (3000, 31)]);
    engine.delete_volume(clone.id).expect("delete clone");
    assert_blocks(&engine, clone2.id, &[(0, 30), (1, 2), (700, 3), (3000, 31)]);
    assert_eq!(engine.snapshots().len(), 1);
}

#[test]
fn revert_takes_the_snapshots_content_and_refuses_foreign_snapshots() {
    let (sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let other = engine
        .create_volume("w", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    fill(&engine, vol, &[(0, 1), (5, 2)]);
    let snap = engine.create_snapshot(vol, "s").expect("snapshot").id;
    let foreign = engine.create_snapshot(other, "f").expect("snapshot").id;
    fill(&engine, vol, &[(0, 10), (6, 11)]);
    engine.resize_volume(vol, 8 << 20).expect("grow");
    fill(&engine, vol, &[(1500, 12)]);
    assert!(matches!(
        engine.revert_volume(vol, foreign),
        Err(VolumeError::NotRelated { .. })
    ));
    assert!(matches!(
        engine.revert_volume(vol, other),
        Err(VolumeError::NotSnapshot(_))
    ));
    engine.revert_volume(vol, snap).expect("revert");
    let zero = Bytes::from(vec![0u8; 4096]);
    assert_blocks(&engine, vol, &[(0, 1), (5, 2)]);
    assert_eq!(engine.read_wait(vol, 6, 1).expect("read"), zero);
    assert_eq!(engine.read_wait(vol, 1500, 1).expect("read"), zero);
    assert_eq!(
        engine.volume(vol).expect("volume").size_bytes,
        8 << 20,
        "revert keeps the size"
    );
    // Durable across a power loss right after.
    drop(engine);
    sim.crash(CrashMode::DropAll);
    let engine = reopen(&sim);
    assert_blocks(&engine, vol, &[(0, 1), (5, 2)]);
    assert_eq!(engine.read_wait(vol, 6, 1).expect("read"), zero);
}

#[test]
fn deleting_snapshots_and_overwriting_frees_space_and_collection_reclaims_segments() {
    let (_sim, engine) = sim_pool(48 << 20);
    let vol = engine
        .create_volume("v", 8 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    // A second volume whose blocks land in every segment the churn fills and
    // stay live: no such segment ever empties on its own, so space comes back
    // only if the collector relocates them.
    let keeper = engine
        .create_volume("keeper", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let mut kept: Vec<(u64, Bytes)> = Vec::new();
    // 8 MiB writes are larger than IO_BYTES_MAX: write in 1 MiB pieces, a
    // keeper block after each.
    let mut write_all = |seed: u8| {
        for piece in 0..8u64 {
            let bytes = Bytes::from(vec![seed; 1 << 20]);
            engine.write_wait(vol, piece * 256, bytes).expect("write");
            let lba = kept.len() as u64;
            let data = block(1_000 + lba);
            engine
                .write_wait(keeper, lba, data.clone())
                .expect("keeper write");
            kept.push((lba, data));
        }
    };
    write_all(1);
    let snaps: Vec<VolumeId> = (0..3)
        .map(|i| {
            write_all(2 + i as u8);
            engine
                .create_snapshot(vol, &format!("s{i}"))
                .expect("snap")
                .id
        })
        .collect();
    // Contents 2, 3 and 4 are distinct; the newest snapshot shares 4 with the volume.
    let keeper_bytes = 32 * 4096;
    let stats = engine.pool_stats();
    assert_eq!(stats.used_bytes, 3 * (8 << 20) + keeper_bytes, "{stats:?}");
    assert_eq!(
        stats.logical_bytes,
        4 * (8 << 20) + keeper_bytes,
        "{stats:?}"
    );
    for snap in snaps {
        engine.delete_volume(snap).expect("delete");
    }
    let used = engine.pool_stats().used_bytes;
    assert_eq!(
        used,
        (8 << 20) + keeper_bytes,
        "only the live blocks stay live"
    );
    // Overwrite far more than the pool holds: only collection keeps up.
    for round in 0..12u8 {
        write_all(10 + round);
    }
    let stats = engine.pool_stats();
    assert_eq!(stats.used_bytes, (8 << 20) + 128 * 4096, "{stats:?}");
    assert!(
        stats.gc_cleaned_segments > 0 && stats.gc_relocated_bytes > 0,
        "the collector reclaimed nothing: {stats:?}"
    );
    for piece in 0..8u64 {
        let got = engine.read_wait(vol, piece * 256, 256).expect("read");
        assert!(got.iter().all(|&b| b == 21), "piece {piece}");
    }
    // What the collector moved reads back as written.
    for (lba, data) in &kept {
        assert_eq!(
            &engine.read_wait(keeper, *lba, 1).expect("read keeper"),
            data,
            "keeper block {lba}"
        );
    }
}

#[test]
fn a_thick_clone_copies_everything_shares_nothing_and_may_change_shape() {
    let (_sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let blocks: Vec<(u64, u64)> = (0..300).map(|i| (i * 3, i + 100)).collect();
    fill(&engine, vol, &blocks);
    let snap = engine.create_snapshot(vol, "s").expect("snapshot").id;
    let job = engine
        .start_thick_clone(
            snap,
            "thick",
            ThickCloneOptions {
                size_bytes: Some(8 << 20),
                sector: Some(SectorSize::B512),
                verify: true,
                ..ThickCloneOptions::default()
            },
        )
        .expect("start");
    let done = job.wait(WAIT);
    assert_eq!(done.state, CloneState::Completed, "{done:?}");
    assert_eq!(done.stage, CloneStage::Done);
    assert_eq!(done.total_bytes, 2 * 300 * 4096, "copy plus verify");
    assert_eq!(done.done_bytes, done.total_bytes);
    let info = engine.volume(done.destination).expect("destination");
    assert!(info.complete);
    assert_eq!(info.size_bytes, 8 << 20);
    assert_eq!(info.sector_size, SectorSize::B512);
    assert_eq!(info.parent, None, "a thick clone has no parent");
    for &(lba, seed) in &blocks {
        let data = engine
            .read_wait(done.destination, lba * 8, 8)
            .expect("read");
        assert_eq!(data, block(seed), "block {lba}");
    }
    let space = engine.volume_space(done.destination).expect("space");
    assert_eq!(
        space.exclusive_bytes,
        300 * 4096,
        "shares nothing: {space:?}"
    );
    engine.delete_volume(snap).expect("delete source");
    engine.delete_volume(vol).expect("delete origin");
    assert_eq!(
        engine.read_wait(done.destination, 0, 8).expect("read"),
        block(100)
    );
}

#[test]
fn a_cancelled_or_failed_thick_clone_leaves_an_incomplete_volume() {
    let (_sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 8 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let blocks: Vec<(u64, u64)> = (0..1024).map(|i| (i * 2, i)).collect();
    fill(&engine, vol, &blocks);
    let snap = engine.create_snapshot(vol, "s").expect("snapshot").id;
    // Slow enough (64 KiB/s) that the cancel lands while copying.
    let slow = ThickCloneOptions {
        max_bytes_per_s: Some(64 << 10),
        ..ThickCloneOptions::default()
    };
    let job = engine
        .start_thick_clone(snap, "t1", slow.clone())
        .expect("start");
    job.cancel();
    let done = job.wait(WAIT);
    assert_eq!(done.state, CloneState::Cancelled);
    assert!(!engine.volume(done.destination).expect("dest").complete);
    assert!(done.done_bytes < done.total_bytes);

    // The source vanishing mid-copy fails the job.
    let job = engine.start_thick_clone(snap, "t2", slow).expect("start");
    engine.delete_volume(snap).expect("delete source");
    let done = job.wait(WAIT);
    assert!(matches!(done.state, CloneState::Failed(_)), "{done:?}");
    assert!(!engine.volume(done.destination).expect("dest").complete);
    assert!(engine.clone_job(done.destination).is_some());
    assert!(matches!(
        engine.start_thick_clone(vol, "t3", ThickCloneOptions::default()),
        Err(VolumeError::NotSnapshot(_))
    ));
}

#[test]
fn a_crash_during_a_thick_clone_leaves_it_incomplete_never_claimed_complete() {
    for mode in [CrashMode::KeepAll, CrashMode::DropAll, CrashMode::Torn(11)] {
        let (sim, engine) = sim_pool(64 << 20);
        let vol = engine
            .create_volume("v", 8 << 20, SectorSize::B4096)
            .expect("create")
            .id;
        let blocks: Vec<(u64, u64)> = (0..512).map(|i| (i, i + 7)).collect();
        fill(&engine, vol, &blocks);
        engine.flush_wait().expect("flush");
        let snap = engine.create_snapshot(vol, "s").expect("snapshot").id;
        let job = engine
            .start_thick_clone(
                snap,
                "thick",
                ThickCloneOptions {
                    max_bytes_per_s: Some(256 << 10),
                    ..ThickCloneOptions::default()
                },
            )
            .expect("start");
        // Crash once the copy is under way (the pace keeps it running for seconds).
        let deadline = std::time::Instant::now() + WAIT;
        while job.progress().done_bytes == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "the copy never started"
            );
            std::thread::yield_now();
        }
        let destination = job.progress().destination;
        drop(engine);
        sim.crash(mode);
        let engine = reopen(&sim);
        let info = engine
            .volume(destination)
            .expect("the destination was created durably");
        assert!(
            !info.complete,
            "{mode:?}: an interrupted clone must not claim completeness"
        );
        assert!(
            engine.clone_job(destination).is_none(),
            "jobs do not resume"
        );
        assert_blocks(&engine, snap, &blocks);
        engine
            .delete_volume(destination)
            .expect("delete the leftover");
    }
}

/// Text-like content: compresses well.
fn text_block(seed: u64) -> Bytes {
    let line = format!("volume block {seed:>8} of a compressible test pattern; ");
    Bytes::from(line.bytes().cycle().take(4096).collect::<Vec<u8>>())
}

/// Content that does not compress.
fn noise_block(seed: u64) -> Bytes {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    Bytes::from(
        (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn compressed_volumes_store_less_read_back_exactly_and_survive_gc_and_crashes() {
    let (sim, engine) = sim_pool(64 << 20);
    let options = engine::VolumeOptions { compression: true };
    let text = engine
        .create_volume_with_options("text", 8 << 20, SectorSize::B4096, options)
        .expect("create")
        .id;
    let noise = engine
        .create_volume_with_options("noise", 8 << 20, SectorSize::B512, options)
        .expect("create")
        .id;
    assert!(engine.volume(text).expect("info").compression);
    // 1 MiB writes of 256 blocks, and single blocks in between.
    let big: Vec<u8> = (0..256).flat_map(|i| text_block(i).to_vec()).collect();
    engine
        .write_wait(text, 0, Bytes::from(big.clone()))
        .expect("big write");
    for lba in [300u64, 301, 777] {
        engine
            .write_wait(text, lba, text_block(lba))
            .expect("write");
    }
    for lba in 0..64u64 {
        engine
            .write_wait(noise, lba * 8, noise_block(lba))
            .expect("write noise");
    }
    let space = engine.volume_space(text).expect("space");
    assert!(
        space.compression_ratio() > 2.0,
        "text compresses: {space:?}"
    );
    let space = engine.volume_space(noise).expect("space");
    assert!(
        (space.compression_ratio() - 1.0).abs() < 1e-9,
        "noise is stored raw: {space:?}"
    );
    assert!(engine.pool_stats().compression_ratio() > 1.5);

    let check = |engine: &Engine| {
        assert_eq!(
            engine.read_wait(text, 0, 256).expect("read"),
            Bytes::from(big.clone())
        );
        for lba in [300u64, 301, 777] {
            assert_eq!(
                engine.read_wait(text, lba, 1).expect("read"),
                text_block(lba)
            );
        }
        // A read that starts inside a unit and crosses into raw and unmapped blocks.
        let mixed = engine.read_wait(text, 250, 60).expect("read");
        assert_eq!(&mixed[..6 * 4096], &big[250 * 4096..]);
        assert!(mixed[6 * 4096..50 * 4096].iter().all(|&b| b == 0));
        assert_eq!(&mixed[50 * 4096..51 * 4096], &text_block(300)[..]);
        for lba in 0..64u64 {
            assert_eq!(
                engine.read_wait(noise, lba * 8, 8).expect("read"),
                noise_block(lba)
            );
        }
    };
    check(&engine);

    // A snapshot shares the compressed units; overwrites leave it intact.
    let snap = engine.create_snapshot(text, "s").expect("snapshot").id;
    engine
        .write_wait(text, 3, text_block(9999))
        .expect("overwrite");
    assert_eq!(engine.read_wait(snap, 3, 1).expect("read"), text_block(3));
    assert_eq!(
        engine.read_wait(text, 3, 1).expect("read"),
        text_block(9999)
    );
    engine.write_wait(text, 3, text_block(3)).expect("restore");

    // Garbage collection moves compressed units without changing what they hold.
    for round in 0..6u64 {
        for lba in 400..600u64 {
            engine
                .write_wait(text, lba, text_block(lba + round))
                .expect("churn");
        }
        engine.collect_garbage().expect("gc");
    }
    assert!(
        engine.pool_stats().gc_relocated_bytes > 0,
        "the collector ran"
    );
    check(&engine);

    // Power loss after a flush keeps everything.
    engine.flush_wait().expect("flush");
    drop(engine);
    sim.crash(CrashMode::Torn(5));
    let engine = reopen(&sim);
    check(&engine);
    assert_eq!(engine.read_wait(snap, 3, 1).expect("read"), text_block(3));
}
