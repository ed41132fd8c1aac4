//! The scrub under the real keeld: blocks written over NVMe/TCP, a clean
//! shutdown (so the checkpoint covers them and recovery never reads their
//! batches), one damaged byte in one written block of `pool.img`, a restart
//! with scheduled passes off, a pass started over REST. The pass must report
//! exactly that volume and that LBA, in the scrub status and the cluster
//! statistics, and the block must read as Unrecovered Read Error over NVMe
//! while every other block reads back what was written.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::Duration;

use bytes::Bytes;
use common::{pattern, wait_until, Keeld, KeeldOptions};
use nvmf_target::{Lba, Status};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:5c5c5c5c-5555-4555-8555-5c5c5c5c5c5c";
const BLOCK: u64 = 4096;
/// Longest a pass over a few blocks may take, with room for a loaded machine.
const PASS_WAIT: Duration = Duration::from_secs(120);

/// Byte offsets of the 4 KiB blocks of `pool` holding exactly `data`.
fn blocks_holding(pool: &mut std::fs::File, data: &[u8]) -> Vec<u64> {
    let len = pool.metadata().expect("metadata").len();
    let mut found = Vec::new();
    let mut chunk = vec![0u8; 8 << 20];
    let mut at = 0;
    pool.seek(SeekFrom::Start(0)).expect("seek");
    while at < len {
        let n = pool.read(&mut chunk).expect("read");
        if n == 0 {
            break;
        }
        for (i, block) in chunk[..n].chunks_exact(BLOCK as usize).enumerate() {
            if block == data {
                found.push(at + i as u64 * BLOCK);
            }
        }
        at += n as u64;
    }
    found
}

#[test]
fn a_scrub_over_rest_finds_exactly_the_damaged_block_of_a_checkpointed_volume() {
    let mut k = Keeld::start(KeeldOptions {
        extra_args: vec!["--scrub-interval-hours".into(), "0".into()],
        ..KeeldOptions::default()
    });
    k.login();
    let v = k.create_volume("scrubbed", 64 << 20, &[HOST]);
    let nsid = u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid");
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let mut expected: BTreeMap<u64, Bytes> = BTreeMap::new();
    {
        let mut c = k.connect(HOST);
        assert!(c.set_queue_count(1).expect("queues") >= 1);
        let mut io = c.connect_io_queue(1).expect("I/O queue");
        for i in 0..16u64 {
            let lba = 3 + i * 97;
            let data = pattern(BLOCK as usize, 5000 + i);
            io.write(nsid, Lba(lba), data.clone(), BLOCK as u32)
                .expect("write");
            expected.insert(lba, data);
        }
        io.flush(nsid).expect("flush");
    }
    let status = k.terminate();
    assert!(status.success(), "keeld exited with {status} on SIGTERM");

    let damaged_lba = 3 + 7 * 97;
    let mut pool = OpenOptions::new()
        .read(true)
        .write(true)
        .open(k.data_dir().join("pool.img"))
        .expect("open pool.img");
    let places = blocks_holding(&mut pool, &expected[&damaged_lba]);
    assert_eq!(
        places.len(),
        1,
        "LBA {damaged_lba} is stored once: {places:?}"
    );
    let at = places[0] + 1234;
    let mut byte = [0u8; 1];
    pool.seek(SeekFrom::Start(at)).expect("seek");
    pool.read_exact(&mut byte).expect("read");
    pool.seek(SeekFrom::Start(at)).expect("seek");
    pool.write_all(&[byte[0] ^ 0x10]).expect("damage one bit");
    pool.sync_all().expect("sync");
    drop(pool);

    k.restart();
    k.wait_volume_state(&uuid, "Available");
    let before = k.get("/api/v2/cluster/scrub");
    assert_eq!(before.status, StatusCode::OK, "{}", before.body);
    assert_eq!(
        before.body["volumes"],
        json!([]),
        "a clean shutdown leaves recovery nothing to find"
    );
    let started = k.call(Method::POST, "/api/v2/cluster/scrub", None);
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    // The answer never shows the old idle state: the pass runs, or has ended.
    assert!(
        started.body["state"] == "Running" || started.body["passesCompleted"].as_u64() >= Some(1),
        "{}",
        started.body
    );

    let mut last = Value::Null;
    let done = wait_until(PASS_WAIT, || {
        let a = k.get("/api/v2/cluster/scrub");
        last = a.body;
        a.status == StatusCode::OK && last["passesCompleted"].as_u64() >= Some(1)
    });
    assert!(
        done,
        "no scrub pass completed; last status: {last}\n{}",
        k.log_tail()
    );
    assert_eq!(last["state"], "Idle", "{last}");
    assert_eq!(last["damagedBlocks"], 1, "{last}");
    assert_eq!(last["metadataDamaged"], 0, "{last}");
    assert_eq!(
        last["volumes"],
        json!([{
            "UUID": uuid,
            "name": "scrubbed",
            "projectName": "default",
            "kind": "Volume",
            "engineId": last["volumes"][0]["engineId"],
            "damagedBlocks": 1,
            "damagedLbas": [damaged_lba],
        }]),
        "{last}"
    );
    let cluster = k.get("/api/v2/cluster");
    assert_eq!(
        cluster.body["statistics"]["damagedBlocks"], 1,
        "{}",
        cluster.body
    );

    let mut c = k.connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    for (lba, data) in &expected {
        let read = io.read(nsid, Lba(*lba), 1, BLOCK as u32);
        if *lba == damaged_lba {
            let err = read.expect_err("the damaged block must not read back");
            assert_eq!(err.status(), Some(Status::UnrecoveredReadError), "{err:?}");
        } else {
            assert!(
                read.expect("intact block reads") == data.to_vec(),
                "LBA {lba} read back other data"
            );
        }
    }
}
