//! Scrub: a pass reads every mapped block of every volume and snapshot and the
//! pool's metadata copies, and reports exactly the damaged blocks per map;
//! rewriting a block heals it at the next pass; stopping the engine ends a
//! paced pass.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use engine::io::{read_blocking, DeviceRef, SimDevice};
use engine::{Engine, EngineConfig, ScrubStatus, SectorSize, VolumeDamage, VolumeOptions};

const POOL_BYTES: u64 = 48 << 20;
const WAIT: Duration = Duration::from_secs(60);

fn config(bytes_per_s: u64) -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        scrub_bytes_per_s: bytes_per_s,
        scrub_interval: None,
        ..EngineConfig::default()
    }
}

fn block(seed: u64) -> Bytes {
    Bytes::from(
        (0..4096u64)
            .map(|i| (seed.wrapping_mul(0x9E37_79B9) ^ (i * 7)) as u8)
            .collect::<Vec<u8>>(),
    )
}

/// The byte offset on the device of the one block holding `content`.
fn find(sim: &SimDevice, content: &[u8]) -> u64 {
    let chunk = 1 << 20;
    let mut found = Vec::new();
    for at in (0..POOL_BYTES).step_by(chunk) {
        let data = read_blocking(sim, at, chunk).expect("read");
        for (i, b) in data.as_slice().chunks(4096).enumerate() {
            if b == content {
                found.push(at + i as u64 * 4096);
            }
        }
    }
    assert_eq!(found.len(), 1, "the block is stored exactly once");
    found[0]
}

/// Runs a pass and waits for it to finish.
fn scrub(engine: &Engine) -> ScrubStatus {
    let before = engine.scrub_status().passes_completed;
    assert!(engine.start_scrub(), "no pass was running");
    let now = engine.scrub_status();
    assert!(
        now.running || now.passes_completed > before,
        "a started pass shows as running at once (or has already ended)"
    );
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let status = engine.scrub_status();
        if status.passes_completed > before && !status.running {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the pass never finished"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_pass_reports_exactly_the_damaged_blocks_per_map_and_a_rewrite_heals_them() {
    let sim = Arc::new(SimDevice::new(POOL_BYTES));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config(0)).expect("format");
    let engine = Engine::open(devices, config(0)).expect("open");
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B512)
        .expect("create")
        .id;
    let packed = engine
        .create_volume_with_options(
            "p",
            1 << 20,
            SectorSize::B4096,
            VolumeOptions { compression: true },
        )
        .expect("create")
        .id;
    for lba in 0..64u64 {
        engine.write_wait(vol, lba * 8, block(lba)).expect("write");
    }
    engine
        .write_wait(packed, 0, Bytes::from(vec![3u8; 8 * 4096]))
        .expect("write");
    let snap = engine.create_snapshot(vol, "s").expect("snapshot").id;
    engine
        .write_wait(vol, 5 * 8, block(500))
        .expect("overwrite");

    let clean = scrub(&engine);
    assert_eq!(
        clean.blocks_total,
        64 + 8 + 64,
        "every mapped block of every map"
    );
    assert_eq!(clean.blocks_checked, clean.blocks_total);
    assert!(clean.damaged.is_empty(), "{clean:?}");
    assert_eq!(clean.metadata_damaged, 0);

    // Damage block 10, which the volume and its snapshot share, and a mirror
    // of a checkpoint root.
    sim.corrupt(find(&sim, &block(10)) + 100, 0x08);
    sim.corrupt(3 * 4096 + 40, 0x01);
    let found = scrub(&engine);
    let mut damaged = found.damaged.clone();
    damaged.sort_by_key(|d| d.volume);
    assert_eq!(
        damaged,
        vec![
            VolumeDamage {
                volume: vol,
                lbas: vec![10]
            },
            VolumeDamage {
                volume: snap,
                lbas: vec![10]
            },
        ]
    );
    assert_eq!(found.metadata_damaged, 1, "{found:?}");

    engine
        .write_wait(vol, 10 * 8, block(1000))
        .expect("rewrite");
    let healed = scrub(&engine);
    assert_eq!(
        healed.damaged,
        vec![VolumeDamage {
            volume: snap,
            lbas: vec![10]
        }],
        "the volume's rewrite heals it; the snapshot keeps the damaged block"
    );
}

#[test]
fn damage_recovery_found_is_known_until_the_first_pass() {
    let sim = Arc::new(SimDevice::new(POOL_BYTES));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config(0)).expect("format");
    let engine = Engine::open(devices.clone(), config(0)).expect("open");
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    for lba in 0..16u64 {
        engine.write_wait(vol, lba, block(lba)).expect("write");
    }
    drop(engine);
    sim.crash(engine::io::CrashMode::KeepAll);
    sim.corrupt(find(&sim, &block(7)) + 9, 0x40);
    let engine = Engine::open(devices, config(0)).expect("reopen");
    let known = engine.scrub_status();
    assert_eq!(known.passes_completed, 0);
    assert_eq!(
        known.damaged,
        vec![VolumeDamage {
            volume: vol,
            lbas: vec![7]
        }]
    );
    assert_eq!(scrub(&engine).damaged, known.damaged);
}

#[test]
fn stopping_the_engine_ends_a_paced_pass() {
    let sim = Arc::new(SimDevice::new(POOL_BYTES));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config(4096)).expect("format");
    let engine = Engine::open(devices, config(4096)).expect("open");
    let vol = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine
        .write_wait(vol, 0, Bytes::from(vec![1u8; 64 * 4096]))
        .expect("write");
    assert!(engine.start_scrub());
    // A started pass shows as running at once, and at one block a second
    // this one cannot end before the next line.
    assert!(engine.scrub_status().running);
    assert!(!engine.start_scrub(), "one pass at a time");
    // At one block a second the pass would take a minute: shutting down must
    // not wait for it (a hang here fails the test by its time limit).
    engine.shutdown().expect("shutdown");
}
