//! What power loss may leave of an open batch's header: an image older than
//! its final one (images go through the page cache, and unflushed writes
//! survive in any order). Replay must then end the log after that image, so
//! the volume holds a prefix of what was acknowledged, never later writes
//! without earlier ones; where a later header shows a flush had made the
//! final image durable, the older image is damage and the open is refused.

use std::sync::Arc;

use bytes::Bytes;
use engine::format::{BatchHeader, Entry};
use engine::io::{read_blocking, write_blocking, AlignedBuf, CrashMode, DeviceRef, SimDevice};
use engine::{Engine, EngineConfig, OpenError, SectorSize, VolumeId};

const POOL_BYTES: u64 = 48 << 20;
const BLOCK: u64 = 4096;
/// One-block writes issued together: more than one open batch's 16 entries.
const BURST: u64 = 20;

fn config() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    }
}

fn block(lba: u64) -> Bytes {
    Bytes::from(vec![lba as u8 + 1; BLOCK as usize])
}

/// A pool with one volume and [`BURST`] one-block writes issued together
/// (lba `i` holds `block(i)`), every one acknowledged; then `after`, then a
/// process kill, which keeps every header image written.
fn burst_then_kill(after: impl FnOnce(&Engine, VolumeId)) -> Arc<SimDevice> {
    let sim = Arc::new(SimDevice::new(POOL_BYTES));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config()).expect("format");
    let engine = Engine::open(devices, config()).expect("open");
    let volume = engine
        .create_volume("v", 1 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let (tx, rx) = std::sync::mpsc::channel();
    for lba in 0..BURST {
        let tx = tx.clone();
        engine.write(
            volume,
            lba,
            block(lba),
            Box::new(move |result| {
                let _ = tx.send(result);
            }),
        );
    }
    for _ in 0..BURST {
        rx.recv().expect("acknowledged").expect("written");
    }
    after(&engine, volume);
    drop(engine);
    sim.crash(CrashMode::KeepAll);
    sim
}

/// Every batch header on the image, with its byte offset.
fn headers(sim: &SimDevice) -> Vec<(BatchHeader, u64)> {
    let mut found = Vec::new();
    let mut offset = 1 << 20;
    while offset < POOL_BYTES {
        let bytes = read_blocking(sim, offset, BLOCK as usize).expect("read");
        match BatchHeader::decode(bytes.as_slice()) {
            Ok(header) => {
                let next = offset + u64::from(header.total_blocks()) * BLOCK;
                found.push((header, offset));
                offset = next;
            }
            Err(_) => offset += BLOCK,
        }
    }
    found
}

/// Puts back an older image of the batch holding lba 0's write: one naming
/// only its first `keep` entries, flagged open. Returns that batch's seq.
fn keep_an_older_image(sim: &SimDevice, keep: usize) -> u64 {
    let found = headers(sim);
    let (header, offset) = found
        .iter()
        .find(|(h, _)| {
            h.entries
                .iter()
                .any(|e| matches!(e, Entry::Write { lba: 0, .. }))
        })
        .expect("the batch of the first write");
    assert!(!header.open, "a closed batch's final image is not open");
    assert!(header.entries.len() > keep, "{header:?}");
    assert!(
        found.iter().any(|(h, _)| h.seq == header.seq + 1
            && h.entries.iter().any(
                |e| matches!(e, Entry::Write { lba, .. } if *lba >= header.entries.len() as u64)
            )),
        "the burst's later writes are in the next batch"
    );
    let older = BatchHeader {
        open: true,
        entries: header.entries[..keep].to_vec(),
        ..header.clone()
    };
    write_blocking(sim, *offset, AlignedBuf::copy_from(&older.encode())).expect("write");
    header.seq
}

#[test]
fn an_older_image_of_an_open_batch_ends_the_log_after_it() {
    let sim = burst_then_kill(|_, _| {});
    keep_an_older_image(&sim, 2);
    let engine = Engine::open(vec![sim as DeviceRef], config()).expect("reopen");
    let volume = engine.volume_by_name("v").expect("the volume").id;
    for lba in 0..BURST {
        let expected = if lba < 2 {
            block(lba)
        } else {
            Bytes::from(vec![0; BLOCK as usize])
        };
        assert_eq!(
            engine.read_wait(volume, lba, 1).expect("read"),
            expected,
            "block {lba}: the log is a prefix of what was acknowledged"
        );
    }
    assert_eq!(engine.recovery_report().damaged_batches, 0);
}

#[test]
fn an_older_image_of_a_batch_a_later_flush_covered_refuses_the_open() {
    let sim = burst_then_kill(|engine, volume| {
        engine.flush_wait().expect("flush");
        engine
            .write_wait(volume, BURST + 10, block(BURST + 10))
            .expect("a write after the flush");
    });
    let seq = keep_an_older_image(&sim, 2);
    match Engine::open(vec![sim as DeviceRef], config()) {
        Err(OpenError::LogDamaged { seq: at, .. }) => assert_eq!(at, seq),
        Err(err) => panic!("refused for another reason: {err}"),
        Ok(_) => panic!("opened with acknowledged, flushed writes lost"),
    }
}
