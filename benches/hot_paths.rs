//! Criterion micro-benchmarks of the engine's hot functions: checksums, batch
#![allow(missing_docs)] // criterion_group! generates undocumented functions
//! header encoding, the block map, and a whole write or read through the engine on
//! the in-memory device (the engine's own CPU cost per I/O, without a disk).

use std::sync::Arc;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use engine::format::{BatchBuilder, BatchHeader, Entry};
use engine::io::{DeviceRef, SimDevice};
use engine::units::PhysBlock;
use engine::{Engine, EngineConfig, Mapping, SectorSize, Untracked, VolumeMap};

fn checksums(c: &mut Criterion) {
    let block = vec![0x5Au8; 4096];
    let mut group = c.benchmark_group("crc32c");
    group.throughput(Throughput::Bytes(4096));
    group.bench_function("4KiB", |b| {
        b.iter(|| crc32c::crc32c(std::hint::black_box(&block)))
    });
    group.finish();
}

fn batch_header(c: &mut Criterion) {
    let entries: Vec<Entry> = (0..32u64)
        .map(|i| Entry::Write {
            volume: 1,
            lba: i * 977,
            data_offset: i as u32,
            crcs: vec![i as u32],
        })
        .collect();
    let mut plan = BatchBuilder::new();
    for e in &entries {
        plan.add(e.encoded_len(), 1);
    }
    let header = BatchHeader {
        seq: 7,
        epoch: 2,
        pool_uuid: [1; 16],
        segment: 3,
        header_blocks: plan.header_blocks(),
        data_blocks: 32,
        completed_seq: 6,
        durable_seq: 5,
        head: 0,
        open: false,
        entries,
    };
    c.bench_function("batch_header/encode_32_writes", |b| {
        b.iter(|| header.encode())
    });
    let bytes = header.encode();
    c.bench_function("batch_header/decode_32_writes", |b| {
        b.iter(|| BatchHeader::decode(&bytes))
    });
}

fn block_map(c: &mut Criterion) {
    let mut map = VolumeMap::new();
    let blocks = 1u64 << 18;
    for lba in 0..blocks {
        map.insert(
            lba,
            Mapping::raw(PhysBlock(lba * 3), lba as u32),
            &mut Untracked,
        );
    }
    let mut x = 1u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % blocks
    };
    c.bench_function("volume_map/lookup_random", |b| {
        b.iter(|| map.lookup(next()))
    });
    let mut y = 3u64;
    c.bench_function("volume_map/overwrite_random", |b| {
        b.iter(|| {
            y = y.wrapping_mul(6364136223846793005).wrapping_add(1);
            map.insert(y % blocks, Mapping::raw(PhysBlock(y), 0), &mut Untracked)
        })
    });
}

fn engine_on_memory(c: &mut Criterion) {
    let sim = Arc::new(SimDevice::new(1 << 30));
    let devices: Vec<DeviceRef> = vec![sim];
    let config = EngineConfig::default();
    Engine::format(devices.clone(), &config).expect("format");
    let engine = Engine::open(devices, config).expect("open");
    let volume = engine
        .create_volume("bench", 256 << 20, SectorSize::B4096)
        .expect("create")
        .id;
    let data = Bytes::from(vec![0xA5u8; 4096]);
    let mut lba = 0u64;
    c.bench_function("engine_sim/write_4k", |b| {
        b.iter_batched(
            || {
                lba = (lba + 7919) % 65536;
                lba
            },
            |lba| engine.write_wait(volume, lba, data.clone()).expect("write"),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("engine_sim/read_4k", |b| {
        b.iter(|| {
            lba = (lba + 7919) % 65536;
            engine.read_wait(volume, lba, 1).expect("read")
        })
    });
}

criterion_group!(
    benches,
    checksums,
    batch_header,
    block_map,
    engine_on_memory
);
criterion_main!(benches);
