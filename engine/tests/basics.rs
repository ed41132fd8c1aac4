//! Behaviour of the engine through its public API on simulated and real devices.

use std::sync::Arc;

use bytes::Bytes;
use engine::io::{CrashMode, DeviceRef, FaultPlan, FaultyDevice, SimDevice};
use engine::{Engine, EngineConfig, IoError, SectorSize, VolumeError, VolumeId};

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
    (sim.clone(), Engine::open(devices, config()).expect("open"))
}

fn reopen(sim: &Arc<SimDevice>) -> Engine {
    Engine::open(vec![sim.clone() as DeviceRef], config()).expect("reopen")
}

fn pattern(seed: u8, len: usize) -> Bytes {
    Bytes::from(
        (0..len)
            .map(|i| seed.wrapping_add((i / 512) as u8))
            .collect::<Vec<u8>>(),
    )
}

#[test]
fn unwritten_blocks_read_as_zeros() {
    let (_sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let data = engine.read_wait(vol, 3, 2).expect("read");
    assert_eq!(data.len(), 8192);
    assert!(data.iter().all(|&b| b == 0));
}

#[test]
fn writes_read_back_and_survive_reopen() {
    let (sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine
        .write_wait(vol, 10, pattern(1, 3 * 4096))
        .expect("write");
    engine
        .write_wait(vol, 11, pattern(9, 4096))
        .expect("overwrite");
    let expect = |engine: &Engine| {
        let back = engine.read_wait(vol, 10, 3).expect("read");
        assert_eq!(&back[..4096], &pattern(1, 3 * 4096)[..4096]);
        assert_eq!(&back[4096..8192], &pattern(9, 4096)[..]);
        assert_eq!(&back[8192..], &pattern(1, 3 * 4096)[8192..]);
    };
    expect(&engine);
    drop(engine);
    sim.crash(CrashMode::KeepAll);
    let engine = reopen(&sim);
    expect(&engine);
    engine.shutdown().expect("shutdown");
    let engine = reopen(&sim);
    expect(&engine);
}

#[test]
fn sub_block_writes_on_512_byte_volumes_merge() {
    let (sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("small", 1 << 20, SectorSize::B512)
        .expect("create")
        .id;
    engine.write_wait(vol, 0, pattern(1, 4096)).expect("write");
    engine
        .write_wait(vol, 3, pattern(7, 1024))
        .expect("write two sectors");
    let back = engine.read_wait(vol, 0, 8).expect("read");
    assert_eq!(&back[..1536], &pattern(1, 4096)[..1536]);
    assert_eq!(&back[1536..2560], &pattern(7, 1024)[..]);
    assert_eq!(&back[2560..], &pattern(1, 4096)[2560..]);
    let one = engine.read_wait(vol, 4, 1).expect("read one sector");
    assert_eq!(&one[..], &pattern(7, 1024)[512..]);
    drop(engine);
    let engine = reopen(&sim);
    assert_eq!(engine.read_wait(vol, 0, 8).expect("read"), back);
}

#[test]
fn deallocate_zeroes_and_frees_space() {
    let (_sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine
        .write_wait(vol, 0, pattern(3, 64 * 4096))
        .expect("write");
    assert_eq!(engine.volume(vol).expect("info").mapped_bytes, 64 * 4096);
    engine.deallocate_wait(vol, 8, 16).expect("trim");
    assert_eq!(engine.volume(vol).expect("info").mapped_bytes, 48 * 4096);
    assert!(engine
        .read_wait(vol, 8, 16)
        .expect("read")
        .iter()
        .all(|&b| b == 0));
    assert_eq!(
        engine.read_wait(vol, 24, 1).expect("read"),
        pattern(3, 64 * 4096).slice(24 * 4096..25 * 4096)
    );
}

#[test]
fn out_of_range_and_malformed_requests_fail_cleanly() {
    let (_sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    assert!(matches!(
        engine.read_wait(vol, 256, 1),
        Err(IoError::OutOfRange { .. })
    ));
    assert!(matches!(
        engine.write_wait(vol, 255, pattern(0, 8192)),
        Err(IoError::OutOfRange { .. })
    ));
    assert!(matches!(
        engine.write_wait(vol, u64::MAX, pattern(0, 4096)),
        Err(IoError::OutOfRange { .. })
    ));
    assert!(matches!(
        engine.write_wait(vol, 0, pattern(0, 100)),
        Err(IoError::Invalid(_))
    ));
    assert!(matches!(
        engine.read_wait(engine::VolumeId(99), 0, 1),
        Err(IoError::NoSuchVolume(_))
    ));
}

#[test]
fn volume_lifecycle_rules() {
    let (sim, engine) = sim_pool(64 << 20);
    let info = engine
        .create_volume("a", 1 << 20, SectorSize::B4096)
        .expect("create");
    assert!(matches!(
        engine.create_volume("a", 1 << 20, SectorSize::B4096),
        Err(VolumeError::NameTaken(_))
    ));
    for bad in ["bad/name", ".", ".."] {
        assert!(
            matches!(
                engine.create_volume(bad, 1 << 20, SectorSize::B4096),
                Err(VolumeError::InvalidName(_))
            ),
            "{bad:?} accepted"
        );
    }
    assert!(matches!(
        engine.create_volume("z", 1000, SectorSize::B4096),
        Err(VolumeError::InvalidSize(_))
    ));
    assert!(matches!(
        engine.resize_volume(info.id, 4096),
        Err(VolumeError::Shrink { .. })
    ));
    let grown = engine.resize_volume(info.id, 2 << 20).expect("grow");
    assert_eq!(grown.size_bytes, 2 << 20);
    engine
        .write_wait(info.id, 300, pattern(1, 4096))
        .expect("write in grown part");
    engine.delete_volume(info.id).expect("delete");
    assert!(engine.volume(info.id).is_none());
    assert!(matches!(
        engine.read_wait(info.id, 0, 1),
        Err(IoError::NoSuchVolume(_))
    ));
    let b = engine
        .create_volume("b", 1 << 20, SectorSize::B512)
        .expect("create b");
    drop(engine);
    let engine = reopen(&sim);
    assert_eq!(engine.volumes(), vec![b]);
    assert_eq!(engine.pool_stats().used_bytes, 0);
}

#[test]
fn a_full_pool_fails_writes_cleanly_and_trim_makes_room() {
    let (_sim, engine) = sim_pool(32 << 20);
    let vol = engine
        .create_volume("big", 1 << 30, SectorSize::B4096)
        .expect("create")
        .id;
    let chunk = pattern(5, 256 * 4096);
    let mut written = 0u64;
    let err = loop {
        match engine.write_wait(vol, written, chunk.clone()) {
            Ok(()) => written += 256,
            Err(err) => break err,
        }
        assert!(written < 100_000, "pool never filled");
    };
    assert_eq!(err, IoError::NoSpace);
    for lba in (0..written).step_by(256) {
        assert_eq!(engine.read_wait(vol, lba, 256).expect("read back"), chunk);
    }
    engine
        .deallocate_wait(vol, 0, written as u32)
        .expect("trim all");
    engine.checkpoint().expect("checkpoint");
    engine
        .write_wait(vol, 0, chunk.clone())
        .expect("write after trim");
}

#[test]
fn checksum_corruption_is_a_media_error() {
    let (sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine.write_wait(vol, 0, pattern(1, 4096)).expect("write");
    engine.shutdown().expect("shutdown");
    // Find the block on the device by its content and flip a byte in it.
    let needle = pattern(1, 4096);
    let mut found = None;
    for block in 0..(64u64 << 20) / 4096 {
        let data = engine::io::read_blocking(sim.as_ref(), block * 4096, 4096).expect("read");
        if data.as_slice() == &needle[..] {
            found = Some(block * 4096);
        }
    }
    sim.corrupt_byte(found.expect("data block on device") + 100);
    let engine = reopen(&sim);
    assert!(matches!(
        engine.read_wait(vol, 0, 1),
        Err(IoError::Media { lba: 0, .. })
    ));
}

/// A pool on a device failing as its plan says (nothing yet), with a 1 MiB
/// volume whose block 1 holds `pattern(2, 4096)`.
fn faulty_pool_with_one_write() -> (Arc<FaultPlan>, DeviceRef, Engine, VolumeId) {
    let sim = Arc::new(SimDevice::new(64 << 20));
    let plan = FaultPlan::healthy();
    let faulty: DeviceRef = Arc::new(FaultyDevice::new(sim, plan.clone()));
    Engine::format(vec![faulty.clone()], &config()).expect("format");
    let engine = Engine::open(vec![faulty.clone()], config()).expect("open");
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine.write_wait(vol, 1, pattern(2, 4096)).expect("write");
    (plan, faulty, engine, vol)
}

#[test]
fn a_failed_write_fences_and_reopen_recovers_what_was_acknowledged() {
    let (plan, faulty, engine, vol) = faulty_pool_with_one_write();
    plan.fail_writes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        engine.write_wait(vol, 2, pattern(3, 4096)),
        Err(IoError::Device(_))
    ));
    assert!(engine.is_fenced());
    assert_eq!(
        engine.write_wait(vol, 3, pattern(4, 4096)),
        Err(IoError::Fenced)
    );
    plan.fail_reads
        .store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        engine.read_wait(vol, 1, 1),
        Err(IoError::Device(_))
    ));
    drop(engine);
    plan.fail_writes
        .store(false, std::sync::atomic::Ordering::SeqCst);
    plan.fail_reads
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let engine = Engine::open(vec![faulty], config()).expect("reopen");
    assert_eq!(engine.read_wait(vol, 1, 1).expect("read"), pattern(2, 4096));
    assert!(engine
        .read_wait(vol, 2, 2)
        .expect("read")
        .iter()
        .all(|&b| b == 0));
}

/// Two writes of one block in flight together whose data writes complete in
/// the reverse order: the one issued last is what the block holds, before and
/// after a reopen, as when both share a batch written whole.
#[test]
fn writes_of_one_block_in_flight_together_apply_in_issue_order_whatever_order_they_complete_in() {
    let (plan, faulty, engine, vol) = faulty_pool_with_one_write();
    plan.hold_writes
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let (tx, rx) = std::sync::mpsc::channel();
    for seed in [5, 6] {
        let tx = tx.clone();
        engine.write(
            vol,
            7,
            pattern(seed, 4096),
            Box::new(move |result| tx.send((seed, result)).expect("send")),
        );
    }
    assert_eq!(plan.held_writes(), 2, "each write is its own device write");
    plan.hold_writes
        .store(false, std::sync::atomic::Ordering::SeqCst);
    plan.release_held_writes(|left| left - 1);
    for _ in 0..2 {
        let (seed, result) = rx.recv().expect("acknowledged");
        assert_eq!(result, Ok(()), "write {seed}");
    }
    let issued_last = pattern(6, 4096);
    assert!(
        engine.read_wait(vol, 7, 1).expect("read") == issued_last,
        "the write issued last wins"
    );
    drop(engine);
    let engine = Engine::open(vec![faulty], config()).expect("reopen");
    assert!(
        engine.read_wait(vol, 7, 1).expect("read") == issued_last,
        "and replays last"
    );
}

#[test]
fn a_failed_header_image_fails_its_write_fences_and_a_flush_says_so() {
    let (plan, faulty, engine, vol) = faulty_pool_with_one_write();
    // The next write's data lands; the header image naming it fails.
    plan.writes_before_failure
        .store(1, std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(
        engine.write_wait(vol, 2, pattern(3, 4096)),
        Err(IoError::Device(_))
    ));
    assert!(engine.is_fenced());
    assert!(
        engine.flush_wait().is_err(),
        "a fenced engine flushes nothing"
    );
    drop(engine);
    plan.writes_before_failure
        .store(-1, std::sync::atomic::Ordering::SeqCst);
    let engine = Engine::open(vec![faulty], config()).expect("reopen");
    assert_eq!(engine.read_wait(vol, 1, 1).expect("read"), pattern(2, 4096));
    assert!(
        engine
            .read_wait(vol, 2, 1)
            .expect("read")
            .iter()
            .all(|&b| b == 0),
        "the failed write was never acknowledged"
    );
}

/// A 64 MiB pool in a file in `dir`, opened: its spec (to open it again) and engine.
fn file_pool(dir: &tempfile::TempDir) -> (engine::DeviceSpec, Engine) {
    let spec = engine::DeviceSpec {
        path: dir.path().join("pool"),
        kind: engine::io::BackingKind::File,
        create_size: Some(64 << 20),
    };
    let engine = Engine::open_paths(std::slice::from_ref(&spec), config(), false).expect("open");
    (spec, engine)
}

#[test]
fn a_second_open_of_the_same_file_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, engine) = file_pool(&dir);
    let second = Engine::open_paths(std::slice::from_ref(&spec), config(), false);
    assert!(matches!(
        second,
        Err(engine::OpenError::Backing(
            engine::io::OpenBackingError::Locked { .. }
        ))
    ));
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine.write_wait(vol, 0, pattern(8, 8192)).expect("write");
    engine.flush_wait().expect("flush");
    engine.shutdown().expect("shutdown");
    let engine = Engine::open_paths(&[spec], config(), false).expect("reopen");
    assert_eq!(engine.read_wait(vol, 0, 2).expect("read"), pattern(8, 8192));
}

#[test]
fn data_in_aligned_buffers_is_written_from_them_to_a_file_and_reads_back_after_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (spec, engine) = file_pool(&dir);
    let vol = engine
        .create_volume("v", 8 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let aligned = |data: Bytes| Bytes::from_owner(engine::io::AlignedBuf::copy_from(&data));
    // Lone blocks, a whole record, a write of several records, and an
    // ordinary buffer among them, all in flight together.
    let writes = [
        (0u64, aligned(pattern(1, 4096))),
        (40, aligned(pattern(2, 128 << 10))),
        (100, aligned(pattern(3, 512 << 10))),
        (300, pattern(4, 3 * 4096)),
        (301, aligned(pattern(5, 4096))),
    ];
    let (tx, rx) = std::sync::mpsc::channel();
    for (lba, data) in writes.iter().cloned() {
        let tx = tx.clone();
        engine.write(vol, lba, data, Box::new(move |r| tx.send(r).expect("send")));
    }
    for _ in 0..writes.len() {
        rx.recv().expect("completion").expect("write");
    }
    let expect = |engine: &Engine| {
        assert_eq!(engine.read_wait(vol, 0, 1).expect("read"), pattern(1, 4096));
        assert_eq!(
            engine.read_wait(vol, 40, 32).expect("read"),
            pattern(2, 128 << 10)
        );
        assert_eq!(
            engine.read_wait(vol, 100, 128).expect("read"),
            pattern(3, 512 << 10)
        );
        let mut last = pattern(4, 3 * 4096).to_vec();
        last[4096..8192].copy_from_slice(&pattern(5, 4096));
        assert_eq!(engine.read_wait(vol, 300, 3).expect("read"), last);
    };
    expect(&engine);
    engine.flush_wait().expect("flush");
    engine.shutdown().expect("shutdown");
    let engine = Engine::open_paths(&[spec], config(), false).expect("reopen");
    expect(&engine);
}

#[test]
fn a_pool_spans_several_devices_and_reopens_in_any_order() {
    let a = Arc::new(SimDevice::new(24 << 20));
    let b = Arc::new(SimDevice::new(40 << 20));
    let devices: Vec<DeviceRef> = vec![a.clone(), b.clone()];
    Engine::format(devices.clone(), &config()).expect("format");
    let engine = Engine::open(devices, config()).expect("open");
    let capacity = engine.pool_stats().capacity_bytes;
    assert!(capacity > 56 << 20, "both devices contribute: {capacity}");
    let vol = engine
        .create_volume("wide", 48 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    // Enough data that segments on both devices are used.
    for chunk in 0..160u64 {
        engine
            .write_wait(vol, chunk * 64, pattern(chunk as u8, 64 * 4096))
            .expect("write");
    }
    engine.shutdown().expect("shutdown");
    let reversed: Vec<DeviceRef> = vec![b.clone(), a.clone()];
    let engine = Engine::open(reversed, config()).expect("reopen with devices swapped");
    for chunk in 0..160u64 {
        assert_eq!(
            engine.read_wait(vol, chunk * 64, 64).expect("read"),
            pattern(chunk as u8, 64 * 4096)
        );
    }
    drop(engine);
    let only_one: Vec<DeviceRef> = vec![a];
    assert!(matches!(
        Engine::open(only_one, config()),
        Err(engine::OpenError::Mismatch(_))
    ));
}

/// Segments freed by flushes since the last checkpoint are still referenced by
/// that checkpoint; on reopen they only become free again once replay's releases
/// are durable. The opening checkpoint must make that room instead of failing.
#[test]
fn a_pool_cycled_many_times_since_its_last_checkpoint_reopens() {
    let config = EngineConfig {
        blocks_per_segment: 512,
        checkpoint_interval_blocks: u64::MAX,
        ..EngineConfig::default()
    };
    let sim = Arc::new(SimDevice::new(40 << 20));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config).expect("format");
    for round in 0..3u8 {
        let engine = Engine::open(devices.clone(), config.clone()).expect("reopen");
        let vol = match engine.volume_by_name("v") {
            Some(info) => info.id,
            None => {
                engine
                    .create_volume("v", 8 << 20, SectorSize::B4096)
                    .expect("create")
                    .id
            }
        };
        for pass in 0..12u8 {
            let seed = round.wrapping_mul(16).wrapping_add(pass);
            for piece in 0..8u64 {
                engine
                    .write_wait(vol, piece * 256, pattern(seed, 1 << 20))
                    .expect("overwrite");
            }
            engine.flush_wait().expect("flush");
        }
        drop(engine);
        sim.crash(CrashMode::KeepAll);
    }
    let engine = Engine::open(devices, config).expect("final reopen");
    let vol = engine.volume_by_name("v").expect("volume").id;
    let last = 2u8.wrapping_mul(16).wrapping_add(11);
    assert_eq!(
        engine.read_wait(vol, 0, 256).expect("read"),
        pattern(last, 1 << 20)
    );
}

#[test]
fn io_from_a_thread_with_a_local_ring_completes_on_it_and_blocking_calls_still_return() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = engine::DeviceSpec {
        path: dir.path().join("pool"),
        kind: engine::io::BackingKind::File,
        create_size: Some(64 << 20),
    };
    let engine = Engine::open_paths(&[spec], config(), false).expect("open");
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    for lba in 0..16u64 {
        engine
            .write_wait(vol, lba, pattern(lba as u8, 4096))
            .expect("write");
    }
    let ring = engine::io::LocalRing::attach().expect("local ring");
    let (tx, rx) = crossbeam_channel::unbounded();
    for lba in 0..16u64 {
        let tx = tx.clone();
        engine.read(
            vol,
            lba,
            1,
            Box::new(move |r| {
                let _ = tx.send((lba, r));
            }),
        );
    }
    assert!(
        ring.in_flight() > 0,
        "the reads went to this thread's ring, not the device's"
    );
    let mut seen = 0;
    while seen < 16 {
        ring.wait();
        while let Ok((lba, result)) = rx.try_recv() {
            assert_eq!(result.expect("read"), pattern(lba as u8, 4096));
            seen += 1;
        }
    }
    // Writes: their batches go to this thread's ring and are acknowledged when
    // it polls.
    for lba in 0..16u64 {
        let tx = tx.clone();
        engine.write(
            vol,
            lba,
            pattern(100 + lba as u8, 4096),
            Box::new(move |r| {
                let _ = tx.send((lba, r.map(|()| Bytes::new())));
            }),
        );
    }
    assert!(
        ring.in_flight() > 0,
        "the batches went to this thread's ring"
    );
    let mut acknowledged = 0;
    while acknowledged < 16 {
        ring.wait();
        while let Ok((_, result)) = rx.try_recv() {
            result.expect("write");
            acknowledged += 1;
        }
    }
    // Blocking calls on a thread whose ring nobody else polls drive it themselves.
    assert_eq!(
        engine.read_wait(vol, 3, 1).expect("read"),
        pattern(103, 4096)
    );
    engine.write_wait(vol, 20, pattern(7, 4096)).expect("write");
    engine
        .create_volume("w", 1 << 20, SectorSize::B4096)
        .expect("a durable metadata record from this thread");
    engine.flush_wait().expect("flush");
    drop(ring);
    engine.shutdown().expect("shutdown");
}

#[test]
fn overwrites_of_a_full_pool_succeed_while_new_blocks_get_no_space() {
    let (_sim, engine) = sim_pool(32 << 20);
    let vol = engine
        .create_volume("big", 1 << 30, SectorSize::B4096)
        .expect("create")
        .id;
    let chunk = pattern(5, 256 * 4096);
    let mut written = 0u64;
    loop {
        match engine.write_wait(vol, written, chunk.clone()) {
            Ok(()) => written += 256,
            Err(err) => {
                assert_eq!(err, IoError::NoSpace);
                break;
            }
        }
        assert!(written < 100_000, "pool never filled");
    }
    // Every block already written can be written again, over and over: each
    // overwrite frees the block it replaces, and the collector reclaims it.
    for round in 0..4u8 {
        for lba in (0..written).step_by(256) {
            let data = pattern(round.wrapping_mul(7).wrapping_add(lba as u8), 256 * 4096);
            engine.write_wait(vol, lba, data).unwrap_or_else(|e| {
                panic!("round {round}: overwrite at {lba} of {written}: {e:?}")
            });
        }
    }
    // Writes of a full pool wait for the collector (or a checkpoint) to free
    // a segment, and the pool counts each wait.
    let stats = engine.pool_stats();
    assert!(
        stats.waits_for_collector + stats.waits_for_checkpoint > 0,
        "overwrites of a full pool waited for room: {stats:?}"
    );
    // Small random overwrites scatter the dead blocks; the collector still
    // keeps up, and every block reads back as last written.
    let mut last: std::collections::HashMap<u64, u8> = std::collections::HashMap::new();
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..3000u32 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let lba = x % written;
        let seed = (i % 251) as u8;
        engine
            .write_wait(vol, lba, pattern(seed, 4096))
            .unwrap_or_else(|e| panic!("random overwrite {i} at {lba}: {e:?}"));
        last.insert(lba, seed);
    }
    for (lba, seed) in &last {
        assert_eq!(
            engine.read_wait(vol, *lba, 1).expect("read"),
            pattern(*seed, 4096)
        );
    }
    assert_eq!(
        engine.write_wait(vol, written, chunk.clone()),
        Err(IoError::NoSpace),
        "new blocks still find no room"
    );
    // Freed space takes new blocks again.
    engine
        .deallocate_wait(vol, 0, 512)
        .expect("trim two ranges");
    engine
        .write_wait(vol, written, chunk.clone())
        .expect("a new block after a trim");
}

#[test]
fn write_amplification_counts_headers_checkpoints_and_copies_per_pool_and_volume() {
    let (_sim, engine) = sim_pool(32 << 20);
    let small = engine
        .create_volume("small", 8 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let large = engine
        .create_volume("large", 8 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let before = engine.pool_stats();
    // 4 KiB writes one at a time: each is one device write of its block; 16
    // of them share the open batch's one-sector header, written to the media
    // once the batch completes (at the flush, for the last one).
    for lba in 0..256 {
        engine
            .write_wait(small, lba, pattern(lba as u8, 4096))
            .expect("write");
    }
    engine.flush_wait().expect("flush");
    let lone = engine.pool_stats();
    let host = lone.host_written_bytes - before.host_written_bytes;
    let device = lone.device_written_bytes - before.device_written_bytes;
    let headers = (lone.batch_header_bytes - before.batch_header_bytes) / 4096;
    assert_eq!(host, 256 * 4096);
    assert_eq!(
        headers,
        256u64.div_ceil(16),
        "one header per 16 lone writes"
    );
    assert_eq!(device, (256 + headers) * 4096);
    assert!(device as f64 / host as f64 <= 1.1, "{device} for {host}");
    // 1 MiB writes: eight records of 128 KiB each, queued together and
    // written as one whole batch with a header block of its own.
    for i in 0..4 {
        engine
            .write_wait(large, i * 256, pattern(i as u8, 1 << 20))
            .expect("write");
    }
    engine.flush_wait().expect("flush");
    let stats = engine.pool_stats();
    let host = stats.host_written_bytes - before.host_written_bytes;
    assert_eq!(host, (256 + 1024) * 4096);
    let device = stats.device_written_bytes - before.device_written_bytes;
    let large_headers = (stats.batch_header_bytes - lone.batch_header_bytes) / 4096;
    // 4, and one more wherever a segment's end closes a batch early.
    assert!((4..=6).contains(&large_headers), "{large_headers}");
    assert_eq!(device, (256 + headers + 1024 + large_headers) * 4096);

    let small_writes = engine.volume_writes(small).expect("small");
    let large_writes = engine.volume_writes(large).expect("large");
    assert_eq!(small_writes.host_written_bytes, 256 * 4096);
    assert_eq!(large_writes.host_written_bytes, 1024 * 4096);
    // Header blocks are shared out by data written, so the small writes'
    // own header blocks show as the pool's overhead, not per volume.
    assert!(large_writes.write_amplification() >= 1.0);
    assert!(small_writes.write_amplification() >= 1.0);

    // The collector's copies count against the volume whose blocks moved.
    for lba in (0..1024).step_by(2) {
        engine
            .write_wait(large, lba, pattern(9, 4096))
            .expect("overwrite");
    }
    let moved_before = engine
        .volume_writes(large)
        .expect("large")
        .device_written_bytes;
    let relocated_before = engine.pool_stats().gc_relocated_bytes;
    while engine.collect_garbage().expect("collect") {
        if engine.pool_stats().gc_relocated_bytes > relocated_before {
            break;
        }
    }
    let stats = engine.pool_stats();
    assert!(stats.gc_relocated_bytes > relocated_before, "nothing moved");
    assert!(
        engine
            .volume_writes(large)
            .expect("large")
            .device_written_bytes
            > moved_before
    );
    assert!(stats.checkpoint_written_bytes > 0);
    assert!(stats.write_amplification() > 1.0);
    assert!(engine.audit_space().is_clean());
}

#[test]
fn writes_appended_under_a_plug_share_one_batch_and_are_acknowledged_when_it_goes() {
    let (sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let headers_before = engine.pool_stats().batch_header_bytes;
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let _plug = engine::WritePlug::new();
        for lba in 0..8u64 {
            let tx = tx.clone();
            engine.write(
                vol,
                lba * 7,
                pattern(lba as u8, 4096),
                Box::new(move |result| tx.send((lba, result)).expect("send")),
            );
        }
        // The device completes at once, yet nothing is acknowledged while
        // the plug holds the records back.
        assert!(rx.try_recv().is_err());
    }
    let mut acknowledged: Vec<u64> = (0..8)
        .map(|_| {
            let (lba, result) = rx.try_recv().expect("acknowledged when the plug went");
            result.expect("write");
            lba
        })
        .collect();
    acknowledged.sort_unstable();
    assert_eq!(acknowledged, (0..8).collect::<Vec<_>>());
    // The batch they share stays open for more; a flush completes it.
    engine.flush_wait().expect("flush");
    assert_eq!(
        engine.pool_stats().batch_header_bytes - headers_before,
        4096,
        "eight writes, one batch header"
    );
    drop(engine);
    sim.crash(CrashMode::KeepAll);
    let engine = reopen(&sim);
    for lba in 0..8u64 {
        let back = engine.read_wait(vol, lba * 7, 1).expect("read");
        assert_eq!(&back[..], &pattern(lba as u8, 4096)[..]);
    }
}

#[test]
fn lone_writes_in_the_open_batch_survive_process_death_and_flushed_ones_power_loss() {
    let (sim, engine) = sim_pool(64 << 20);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    // 20 lone writes: a full batch of 16 and an open one of 4, its header
    // only rewritten in place, never flushed.
    for lba in 0..20u64 {
        engine
            .write_wait(vol, lba, pattern(lba as u8, 4096))
            .expect("write");
    }
    drop(engine);
    sim.crash(CrashMode::KeepAll);
    let engine = reopen(&sim);
    assert!(engine.recovery_report().damaged_extents.is_empty());
    for lba in 0..20u64 {
        let back = engine.read_wait(vol, lba, 1).expect("read");
        assert_eq!(&back[..], &pattern(lba as u8, 4096)[..], "block {lba}");
    }

    // Flushed writes survive power loss; later ones may go, whole.
    for lba in 0..5u64 {
        engine
            .write_wait(vol, lba, pattern(100 + lba as u8, 4096))
            .expect("write");
    }
    engine.flush_wait().expect("flush");
    for lba in 5..9u64 {
        engine
            .write_wait(vol, lba, pattern(100 + lba as u8, 4096))
            .expect("write");
    }
    drop(engine);
    sim.crash(CrashMode::DropAll);
    let engine = reopen(&sim);
    assert!(engine.recovery_report().damaged_extents.is_empty());
    for lba in 0..9u64 {
        let back = engine.read_wait(vol, lba, 1).expect("read");
        let flushed = pattern(100 + lba as u8, 4096);
        if lba < 5 {
            assert_eq!(&back[..], &flushed[..], "flushed block {lba}");
        } else {
            assert_eq!(&back[..], &pattern(lba as u8, 4096)[..], "unflushed {lba}");
        }
    }
}
