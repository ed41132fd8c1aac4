//! The carried unsettled set: what a node reports, after a crash, as blocks
//! its volume's other replicas may lack. It must hold every block written
//! after the last checkpoint and whatever the sources reported at it, survive
//! further crashes until forgotten, and stay small.

use std::sync::Arc;

use bytes::Bytes;
use engine::io::{CrashMode, DeviceRef, SimDevice};
use engine::replication::Extent;
use engine::{Engine, EngineConfig, SectorSize, UnsettledSource, VolumeId};

fn config() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    }
}

fn open(sim: &Arc<SimDevice>) -> Engine {
    Engine::open(vec![sim.clone() as DeviceRef], config()).expect("open")
}

fn crash_and_reopen(sim: &Arc<SimDevice>, engine: Engine) -> Engine {
    drop(engine);
    sim.crash(CrashMode::KeepAll);
    open(sim)
}

fn ext(lba: u64, blocks: u32) -> Extent {
    Extent { lba, blocks }
}

struct Pending(VolumeId, Vec<Extent>);

impl UnsettledSource for Pending {
    fn report_unsettled(&self, report: &mut dyn FnMut(VolumeId, Extent)) {
        for extent in &self.1 {
            report(self.0, *extent);
        }
    }
}

#[test]
fn writes_after_the_last_checkpoint_and_reported_sources_are_carried_across_crashes() {
    let sim = Arc::new(SimDevice::new(64 << 20));
    Engine::format(vec![sim.clone() as DeviceRef], &config()).expect("format");
    let engine = open(&sim);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B512)
        .expect("create")
        .id;
    let block = Bytes::from(vec![7u8; 4096]);
    // Settled before the checkpoint: not carried.
    engine.write_wait(vol, 0, block.clone()).expect("write");
    // Pending at the checkpoint: reported by the source, so carried.
    let source: Arc<dyn UnsettledSource> = Arc::new(Pending(vol, vec![ext(800, 8)]));
    engine.register_unsettled_source(Arc::downgrade(&source));
    engine.checkpoint().expect("checkpoint");
    // Written after the checkpoint: replayed, so carried.
    engine.write_wait(vol, 16, block.clone()).expect("write");
    engine.deallocate_wait(vol, 64, 16).expect("deallocate");
    drop(source);
    assert!(
        engine.carried_unsettled(vol).is_empty(),
        "nothing carried before a crash"
    );

    let engine = crash_and_reopen(&sim, engine);
    let carried = vec![ext(16, 8), ext(64, 16), ext(800, 8)];
    assert_eq!(engine.carried_unsettled(vol), carried);

    // Carried through a checkpoint and another crash until forgotten.
    engine.checkpoint().expect("checkpoint");
    let engine = crash_and_reopen(&sim, engine);
    assert_eq!(engine.carried_unsettled(vol), carried);
    engine.forget_unsettled(vol);
    engine.checkpoint().expect("checkpoint");
    let engine = crash_and_reopen(&sim, engine);
    assert!(engine.carried_unsettled(vol).is_empty());

    // A clean shutdown's checkpoint leaves nothing behind it to replay.
    engine.write_wait(vol, 24, block).expect("write");
    engine.shutdown().expect("shutdown");
    let engine = open(&sim);
    assert!(engine.carried_unsettled(vol).is_empty());
}

#[test]
fn a_handed_over_set_survives_a_crash_and_a_deleted_volume_carries_nothing() {
    let sim = Arc::new(SimDevice::new(64 << 20));
    Engine::format(vec![sim.clone() as DeviceRef], &config()).expect("format");
    let engine = open(&sim);
    let vol = engine
        .create_volume("v", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let gone = engine
        .create_volume("gone", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    engine.checkpoint().expect("checkpoint");
    engine.carry_unsettled(vol, &[ext(5, 2)]);
    engine.carry_unsettled(gone, &[ext(1, 1)]);
    assert_eq!(engine.carried_unsettled(vol), vec![ext(5, 2)]);
    engine.checkpoint().expect("checkpoint");
    engine.delete_volume(gone).expect("delete");
    let engine = crash_and_reopen(&sim, engine);
    assert_eq!(engine.carried_unsettled(vol), vec![ext(5, 2)]);
    assert!(engine.volume_by_name("gone").is_none());
    engine.checkpoint().expect("checkpoint");
    let engine = crash_and_reopen(&sim, engine);
    assert_eq!(engine.carried_unsettled(vol), vec![ext(5, 2)]);
}

#[test]
fn a_scattered_tail_is_carried_as_the_whole_volume() {
    let sim = Arc::new(SimDevice::new(256 << 20));
    Engine::format(vec![sim.clone() as DeviceRef], &config()).expect("format");
    let engine = open(&sim);
    let blocks = 2 * engine::CARRIED_EXTENTS_MAX as u64 + 2;
    let vol = engine
        .create_volume("v", blocks * 4096, SectorSize::B4096)
        .expect("create")
        .id;
    engine.checkpoint().expect("checkpoint");
    let block = Bytes::from(vec![1u8; 4096]);
    for lba in (0..blocks).step_by(2) {
        engine.write_wait(vol, lba, block.clone()).expect("write");
    }
    let engine = crash_and_reopen(&sim, engine);
    assert_eq!(
        engine.carried_unsettled(vol),
        vec![ext(0, blocks as u32)],
        "more runs than the record keeps: the whole volume"
    );
    engine.checkpoint().expect("checkpoint");
    let engine = crash_and_reopen(&sim, engine);
    assert_eq!(engine.carried_unsettled(vol), vec![ext(0, blocks as u32)]);
}
