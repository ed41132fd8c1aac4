//! Damaged media: one pool image, written through volumes, a snapshot and a
//! compressed volume with part of its history in a checkpoint and part only in
//! the log, is damaged many times over — single bit flips and byte overwrites
//! in data blocks, batch headers, the log's tail, checkpoint bodies, both root
//! copies and the superblock — and reopened. Every block of every volume and
//! snapshot must then read back exactly what was acknowledged or fail as a
//! media error, never other data with success; the pool may refuse to open
//! only where FORMAT.md says it must, and only with a clear error. One flipped
//! bit in a batch header costs nothing: it is repaired from the checksum.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use engine::format::BatchHeader;
use engine::io::{read_blocking, CrashMode, DeviceRef, SimDevice};
use engine::{Engine, EngineConfig, IoError, OpenError, SectorSize, VolumeId, VolumeOptions};

const POOL_BYTES: u64 = 48 << 20;
const BLOCK: u64 = 4096;

fn config() -> EngineConfig {
    EngineConfig {
        blocks_per_segment: 512,
        ..EngineConfig::default()
    }
}

/// A tiny deterministic generator, so every run damages the same places.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// What every map must read back: its id and each written block's content.
type Expected = Vec<(VolumeId, u64, BTreeMap<u64, Bytes>)>;

fn content(rng: &mut Rng, compressible: bool) -> Bytes {
    let seed = rng.next();
    Bytes::from(
        (0..BLOCK)
            .map(|i| {
                if compressible {
                    (seed as u8).wrapping_add((i / 512) as u8)
                } else {
                    (seed.wrapping_mul(i | 1) >> 13) as u8
                }
            })
            .collect::<Vec<u8>>(),
    )
}

/// Writes `blocks` blocks at `lba` and records them.
fn write(
    engine: &Engine,
    map: &mut BTreeMap<u64, Bytes>,
    id: VolumeId,
    lba: u64,
    data: Vec<Bytes>,
) {
    let mut joined = Vec::new();
    for (i, block) in data.into_iter().enumerate() {
        joined.extend_from_slice(&block);
        map.insert(lba + i as u64, block);
    }
    engine
        .write_wait(id, lba, Bytes::from(joined))
        .expect("write");
}

/// Builds the pool image every case damages; returns it after a process kill
/// with what each map must hold.
fn build_image() -> (SimDevice, Expected) {
    let sim = Arc::new(SimDevice::new(POOL_BYTES));
    let devices: Vec<DeviceRef> = vec![sim.clone()];
    Engine::format(devices.clone(), &config()).expect("format");
    let engine = Engine::open(devices, config()).expect("open");
    let mut rng = Rng(7);
    let plain = engine
        .create_volume("plain", 4 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let packed = engine
        .create_volume_with_options(
            "packed",
            2 << 20,
            SectorSize::B4096,
            VolumeOptions { compression: true },
        )
        .expect("create")
        .id;
    let mut plain_map = BTreeMap::new();
    let mut packed_map = BTreeMap::new();
    let mut snapshot = None;
    for round in 0..240u64 {
        let blocks = 1 + rng.below(4);
        let lba = rng.below(1024 - blocks);
        let data = (0..blocks).map(|_| content(&mut rng, false)).collect();
        write(&engine, &mut plain_map, plain, lba, data);
        if round % 6 == 0 {
            let lba = rng.below(64) * 8;
            let data = (0..8).map(|_| content(&mut rng, true)).collect();
            write(&engine, &mut packed_map, packed, lba, data);
        }
        if round == 80 {
            engine.checkpoint().expect("checkpoint");
        }
        if round == 120 {
            let id = engine.create_snapshot(plain, "snap").expect("snapshot").id;
            snapshot = Some((id, plain_map.clone()));
        }
        if round % 50 == 49 {
            engine.flush_wait().expect("flush");
        }
    }
    drop(engine);
    sim.crash(CrashMode::KeepAll);
    let (snapshot, snapshot_map) = snapshot.expect("the snapshot was taken");
    let expected = vec![
        (plain, 1024, plain_map),
        (packed, 512, packed_map),
        (snapshot, 1024, snapshot_map),
    ];
    (sim.duplicate(), expected)
}

/// Where damage goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// A data block of some batch.
    Data,
    /// The used bytes of some batch header.
    Header,
    /// The header or data of the newest batch.
    Tail,
    /// The first block of the newest checkpoint body.
    Body,
    /// One copy of a checkpoint root.
    Root,
    /// The superblock or its copy.
    Superblock,
    /// Anywhere on the device.
    Anywhere,
}

/// Batches found on the image: (seq, byte offset, used header bytes, data blocks).
fn batches(image: &SimDevice) -> Vec<(u64, u64, u64, u64)> {
    let mut found = Vec::new();
    let mut offset = 1 << 20;
    while offset < POOL_BYTES {
        let block = read_blocking(image, offset, BLOCK as usize).expect("read");
        if block.as_slice().starts_with(b"KEELBTCH") {
            let blocks = BatchHeader::peek_header_blocks(block.as_slice()).unwrap_or(1);
            let bytes =
                read_blocking(image, offset, usize::from(blocks) * BLOCK as usize).expect("read");
            if let Ok(header) = BatchHeader::decode(bytes.as_slice()) {
                let used = u32::from_le_bytes(bytes.as_slice()[56..60].try_into().unwrap());
                found.push((
                    header.seq,
                    offset,
                    u64::from(used),
                    u64::from(header.data_blocks),
                ));
                offset += u64::from(header.total_blocks()) * BLOCK;
                continue;
            }
        }
        offset += BLOCK;
    }
    found
}

/// First blocks of checkpoint bodies.
fn bodies(image: &SimDevice) -> Vec<u64> {
    (0..POOL_BYTES / BLOCK)
        .map(|b| b * BLOCK)
        .filter(|&offset| {
            read_blocking(image, offset, BLOCK as usize)
                .expect("read")
                .as_slice()
                .starts_with(b"KEELCKPT")
        })
        .collect()
}

/// A byte offset inside `target` on the image.
fn pick(target: Target, image: &SimDevice, rng: &mut Rng) -> u64 {
    let found = batches(image);
    let newest = found.iter().max_by_key(|b| b.0).copied().expect("a batch");
    let with_data: Vec<_> = found.iter().filter(|b| b.3 > 0).collect();
    match target {
        Target::Data => {
            let (_, at, used, data) = *with_data[rng.below(with_data.len() as u64) as usize];
            at + used.div_ceil(BLOCK) * BLOCK + rng.below(data * BLOCK)
        }
        Target::Header => {
            let (_, at, used, _) = found[rng.below(found.len() as u64) as usize];
            at + rng.below(used)
        }
        Target::Tail => {
            let (_, at, used, data) = newest;
            at + rng.below(used.div_ceil(BLOCK) * BLOCK + data * BLOCK)
        }
        Target::Body => {
            let all = bodies(image);
            all[rng.below(all.len() as u64) as usize] + rng.below(BLOCK)
        }
        Target::Root => (1 + rng.below(4)) * BLOCK + rng.below(120),
        Target::Superblock => [0, 5 * BLOCK][rng.below(2) as usize] + rng.below(76),
        Target::Anywhere => rng.below(POOL_BYTES),
    }
}

/// How one damaged image fared.
#[derive(Debug, Default)]
struct Tally {
    exact: u64,
    with_media_errors: u64,
    refused: u64,
}

/// Opens a damaged copy and checks every block of every map.
fn check(image: SimDevice, expected: &Expected, target: Target, tally: &mut Tally) {
    let engine = match Engine::open(vec![Arc::new(image) as DeviceRef], config()) {
        Ok(engine) => engine,
        Err(err) => {
            assert!(
                matches!(
                    target,
                    Target::Header | Target::Tail | Target::Body | Target::Anywhere
                ),
                "damage to {target:?} must never keep the pool closed: {err}"
            );
            assert!(
                matches!(
                    err,
                    OpenError::LogDamaged { .. }
                        | OpenError::RootDamaged { .. }
                        | OpenError::Corrupt { .. }
                ),
                "refusal must name the damage: {err}"
            );
            tally.refused += 1;
            return;
        }
    };
    let mut errors = 0;
    for (id, blocks, map) in expected {
        for lba in 0..*blocks {
            match engine.read_wait(*id, lba, 1) {
                Ok(data) => {
                    let want = map
                        .get(&lba)
                        .cloned()
                        .unwrap_or_else(|| Bytes::from(vec![0u8; BLOCK as usize]));
                    assert!(
                        data == want,
                        "{target:?}: {id} block {lba} read back other data with success"
                    );
                }
                Err(IoError::Media { .. }) => errors += 1,
                Err(err) => panic!("{target:?}: {id} block {lba}: unexpected {err}"),
            }
        }
    }
    if matches!(target, Target::Root | Target::Superblock) {
        assert_eq!(
            errors, 0,
            "one damaged copy of {target:?} must cost nothing"
        );
    }
    if errors == 0 {
        tally.exact += 1;
    } else {
        tally.with_media_errors += 1;
    }
}

#[test]
fn damaged_media_reads_back_exactly_or_as_media_errors_never_as_other_data() {
    let cases: u64 = std::env::var("KEEL_CORRUPTION_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    let (image, expected) = build_image();
    let mut rng = Rng(11);
    let mut tallies: BTreeMap<(Target, bool), Tally> = BTreeMap::new();
    for target in [
        Target::Data,
        Target::Header,
        Target::Tail,
        Target::Body,
        Target::Root,
        Target::Superblock,
        Target::Anywhere,
    ] {
        for case in 0..cases {
            let bit_flip = case % 2 == 0;
            let copy = image.duplicate();
            let offset = pick(target, &copy, &mut rng);
            let mask = if bit_flip {
                1 << rng.below(8)
            } else {
                1 + rng.below(255) as u8
            };
            copy.corrupt(offset, mask);
            check(
                copy,
                &expected,
                target,
                tallies.entry((target, bit_flip)).or_default(),
            );
        }
    }
    for ((target, bit_flip), tally) in &tallies {
        let kind = if *bit_flip {
            "bit flips"
        } else {
            "byte overwrites"
        };
        println!("{target:?} {kind}: {tally:?}");
    }
    let header_flips = &tallies[&(Target::Header, true)];
    assert!(
        header_flips.refused == 0 && header_flips.with_media_errors == 0,
        "one flipped bit in a batch header is repaired from its checksum: {header_flips:?}"
    );
    let data = &tallies[&(Target::Data, true)];
    assert!(
        data.with_media_errors > 0,
        "damaged data must be reported: {data:?}"
    );
}

#[test]
fn a_damaged_batch_in_the_middle_keeps_every_later_write() {
    let (image, expected) = build_image();
    let found = batches(&image);
    let mut by_seq = found.clone();
    by_seq.sort_unstable();
    let (seq, at, used, data) = *by_seq[by_seq.len() / 2..]
        .iter()
        .find(|b| b.3 > 0)
        .expect("a batch with data in the second half of the log");
    let copy = image.duplicate();
    copy.corrupt(at + used.div_ceil(BLOCK) * BLOCK + data * BLOCK / 2, 0x10);
    let engine = Engine::open(vec![Arc::new(copy) as DeviceRef], config()).expect("open");
    let report = engine.recovery_report().clone();
    assert_eq!(report.damaged_batches, 1, "{report:?}");
    assert_eq!(report.damaged_extents.len(), 1, "{report:?}");
    let extent = &report.damaged_extents[0];
    assert_eq!((extent.seq, extent.blocks), (seq, 1));
    let mut media_errors = 0;
    for (id, blocks, map) in &expected {
        for lba in 0..*blocks {
            match engine.read_wait(*id, lba, 1) {
                Ok(data) => assert_eq!(
                    data,
                    map.get(&lba)
                        .cloned()
                        .unwrap_or_else(|| Bytes::from(vec![0u8; 4096]))
                ),
                Err(IoError::Media { volume, lba: at }) => {
                    assert_eq!(volume, *id);
                    assert_eq!(at, extent.lba);
                    assert!(
                        volume == extent.volume
                            || engine
                                .volume(volume)
                                .is_some_and(|v| v.parent == Some(extent.volume)),
                        "{volume} is neither the damaged volume nor a snapshot sharing its block"
                    );
                    media_errors += 1;
                }
                Err(err) => panic!("{err}"),
            }
        }
    }
    assert!(
        (1..=2).contains(&media_errors),
        "exactly the damaged block fails (in the volume, and in the snapshot if it shares it)"
    );
}

#[test]
fn a_newest_root_damaged_in_both_copies_refuses_the_open() {
    let (image, _) = build_image();
    let generation = |offset: u64| {
        let block = read_blocking(&image, offset, BLOCK as usize).expect("read");
        u64::from_le_bytes(block.as_slice()[32..40].try_into().unwrap())
    };
    let newest = if generation(BLOCK) > generation(2 * BLOCK) {
        1
    } else {
        2
    };
    let one_copy = image.duplicate();
    one_copy.corrupt(newest * BLOCK + 50, 0x01);
    Engine::open(vec![Arc::new(one_copy) as DeviceRef], config())
        .expect("one damaged copy of the newest root is survived");
    let both = image.duplicate();
    both.corrupt(newest * BLOCK + 50, 0x01);
    both.corrupt((newest + 2) * BLOCK + 50, 0x01);
    let err = Engine::open(vec![Arc::new(both) as DeviceRef], config())
        .err()
        .expect("opening from the older root would lose acknowledged writes");
    assert!(matches!(err, OpenError::RootDamaged { .. }), "{err}");
}

/// The image's newest checkpoint root (of the two slots and their mirrors).
fn newest_root(image: &SimDevice) -> engine::format::CheckpointRoot {
    (1..=4u64)
        .filter_map(|slot| {
            let block = read_blocking(image, slot * BLOCK, BLOCK as usize).expect("read");
            engine::format::CheckpointRoot::decode(block.as_slice()).ok()
        })
        .max_by_key(|root| root.generation)
        .expect("a root")
}

#[test]
fn one_flipped_bit_in_the_newest_checkpoint_body_is_repaired_and_wider_damage_refuses() {
    let (image, expected) = build_image();
    let newest = newest_root(&image);
    let segment_bytes = u64::from(config().blocks_per_segment) * BLOCK;
    let body_at = (1 << 20) + u64::from(newest.body_segments[0]) * segment_bytes;
    let inside = body_at + (newest.body_len / 2);

    let flipped = image.duplicate();
    flipped.corrupt(inside, 0x02);
    let mut tally = Tally::default();
    check(flipped, &expected, Target::Body, &mut tally);
    assert_eq!(tally.exact, 1, "the flipped bit is repaired: {tally:?}");

    let overwritten = image.duplicate();
    overwritten.corrupt(inside, 0x5A);
    let err = Engine::open(vec![Arc::new(overwritten) as DeviceRef], config())
        .err()
        .expect("a body damaged beyond one bit cannot be trusted");
    assert!(
        matches!(
            err,
            OpenError::Corrupt {
                what: "checkpoint body",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_damaged_header_where_a_segment_starts_is_repaired_or_refused_never_taken_for_the_end() {
    let (image, expected) = build_image();
    let replay_seq = newest_root(&image).replay_seq;
    let segment_bytes = u64::from(config().blocks_per_segment) * BLOCK;
    // A batch the replay reaches only by its segment's start: the previous
    // batch of its head ended where the segment before it did.
    let (_, at, used, _) = batches(&image)
        .into_iter()
        .filter(|&(seq, at, _, _)| seq > replay_seq && (at - (1 << 20)) % segment_bytes == 0)
        .max_by_key(|b| b.0)
        .expect("a replayed batch at the start of a segment");
    assert!(used <= 512, "an open batch's header: one sector");

    let flipped = image.duplicate();
    flipped.corrupt(at + used - 5, 0x08);
    let mut tally = Tally::default();
    check(flipped, &expected, Target::Header, &mut tally);
    assert_eq!(tally.exact, 1, "the flipped bit is repaired: {tally:?}");

    let overwritten = image.duplicate();
    overwritten.corrupt(at + used - 5, 0x5A);
    let err = Engine::open(vec![Arc::new(overwritten) as DeviceRef], config())
        .err()
        .expect("a damaged one-sector header is never a torn tail");
    assert!(matches!(err, OpenError::LogDamaged { .. }), "{err}");
}
