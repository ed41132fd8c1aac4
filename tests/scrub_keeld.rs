//! The scrub under the real keeld: blocks written over NVMe/TCP, a clean
//! shutdown (so the checkpoint covers them and recovery never reads their
//! batches), one damaged byte in one written block of `pool.img`, a restart
//! with scheduled passes off, a pass started over REST. The pass must report
//! exactly that volume and that LBA, in the scrub status and the cluster
//! statistics, and the block must read as Unrecovered Read Error over NVMe
//! while every other block reads back what was written.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

use common::blocks::{damage, read_back, write_blocks, BLOCK};
use common::{wait_until, Keeld, KeeldOptions};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:5c5c5c5c-5555-4555-8555-5c5c5c5c5c5c";
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
    let lbas: Vec<u64> = (0..16u64).map(|i| 3 + i * 97).collect();
    let expected = write_blocks(&k, HOST, nsid, &lbas, None, true);
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
    drop(pool);
    damage(&k.data_dir().join("pool.img"), places[0] + 1234, 0x10);

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
    let volume = k.get(&format!("/api/v2/projects/default/volumes/{uuid}"));
    assert_eq!(volume.status, StatusCode::OK, "{}", volume.body);
    assert_eq!(
        volume.body["statistics"]["damagedBlocks"], 1,
        "the volume's own statistics count its damaged block: {}",
        volume.body
    );
    let cluster = k.get("/api/v2/cluster");
    assert_eq!(
        cluster.body["statistics"]["damagedBlocks"], 1,
        "{}",
        cluster.body
    );

    assert_eq!(
        read_back(&k, HOST, nsid, &expected, "after the scrub"),
        vec![damaged_lba],
        "exactly the damaged block fails"
    );
}
