//! A thin pool filled to its limit over NVMe/TCP: writes of new data get the
//! NVMe Capacity Exceeded status (never a hang, never a crashed keeld), writes
//! over data already written keep succeeding round after round, and a
//! deallocate makes room for new data again. keeld logs the refusals, and
//! the REST statistics show the write amplification the collector caused.

mod common;

use common::{pattern, Keeld, KeeldOptions};
use nvmf_target::host::{HostController, IoQueue};
use nvmf_target::{Lba, LbaRange, Status};
use serde_json::Value;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:f0f0f0f0-1111-4111-8111-f0f0f0f0f0f0";
const BLOCK: u32 = 4096;
/// Far more than the pool holds: the volume is thin.
const VOLUME_BYTES: u64 = 1 << 30;
/// The unit: 256 KiB writes.
const CHUNK_BLOCKS: u64 = 64;

fn io_queue(c: &mut HostController) -> IoQueue {
    assert!(c.set_queue_count(1).expect("Set Features number of queues") >= 1);
    c.connect_io_queue(1).expect("I/O queue")
}

fn nsid_of(v: &Value) -> u32 {
    u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid fits u32")
}

fn chunk(seed: u64) -> bytes::Bytes {
    pattern((CHUNK_BLOCKS * u64::from(BLOCK)) as usize, seed)
}

#[test]
fn a_full_thin_pool_refuses_new_data_keeps_taking_overwrites_and_recovers_after_a_trim() {
    let mut k = Keeld::start(KeeldOptions {
        // Fifteen 8 MiB segments.
        pool_size: "128MiB".into(),
        ..KeeldOptions::default()
    });
    k.login();
    let v = k.create_volume("full", VOLUME_BYTES, &[HOST]);
    let nsid = nsid_of(&v);
    let mut c = k.connect(HOST);
    let mut io = io_queue(&mut c);

    let mut written = 0u64;
    let refused = loop {
        match io.write(nsid, Lba(written), chunk(written), BLOCK) {
            Ok(()) => written += CHUNK_BLOCKS,
            Err(err) => break err,
        }
        assert!(
            written * u64::from(BLOCK) < 128 << 20,
            "the pool took more than its size"
        );
    };
    assert_eq!(
        refused.status(),
        Some(Status::CapacityExceeded),
        "{refused:?}"
    );
    assert!(written >= 32 * CHUNK_BLOCKS, "full after {written} blocks");

    // Overwrites of written ranges succeed again and again: each frees the
    // copy it replaces, which the collector reclaims.
    for round in 1..=3u64 {
        for lba in (0..written).step_by(CHUNK_BLOCKS as usize) {
            io.write(nsid, Lba(lba), chunk(lba + round * 1_000_000), BLOCK)
                .unwrap_or_else(|e| {
                    panic!("round {round}: overwrite at {lba} of {written}: {e:?}")
                });
        }
    }
    for lba in (0..written).step_by(CHUNK_BLOCKS as usize * 7) {
        let data = io
            .read(nsid, Lba(lba), CHUNK_BLOCKS as u32, BLOCK)
            .expect("read back");
        assert_eq!(data, chunk(lba + 3_000_000).to_vec(), "block {lba}");
    }
    let again = io
        .write(nsid, Lba(written), chunk(written), BLOCK)
        .expect_err("new data still finds no room");
    assert_eq!(again.status(), Some(Status::CapacityExceeded));

    // A deallocate frees room for new data.
    io.deallocate(
        nsid,
        &[LbaRange {
            start: Lba(0),
            blocks: (8 * CHUNK_BLOCKS) as u32,
        }],
    )
    .expect("deallocate");
    io.write(nsid, Lba(written), chunk(written), BLOCK)
        .expect("new data after a deallocate");
    k.assert_alive("after filling the pool");

    // The write amplification the collector caused shows in the statistics,
    // the pool's and the volume's, counting every device byte.
    let number = |v: &Value| -> f64 {
        v.as_str()
            .unwrap_or_else(|| panic!("a decimal string: {v}"))
            .parse()
            .expect("a number")
    };
    let cluster = k.get("/api/v2/cluster").body;
    let stats = &cluster["statistics"];
    // The effective capacity is what the pool took before refusing new data.
    let effective = number(&stats["effectivePhysicalStorage"]);
    assert!(
        effective < number(&stats["installedPhysicalStorage"]),
        "{stats}"
    );
    let taken = (written * u64::from(BLOCK)) as f64;
    assert!(
        (taken..taken + f64::from(1 << 20) + 1.0).contains(&effective),
        "took {taken} bytes: {stats}"
    );
    let pool_waf = stats["writeAmplification"]
        .as_f64()
        .expect("writeAmplification");
    assert!(pool_waf > 1.0, "{stats}");
    let host = number(&stats["hostWrittenStorage"]);
    assert!(host >= (4 * written * u64::from(BLOCK)) as f64, "{stats}");
    assert!(number(&stats["deviceWrittenStorage"]) > host, "{stats}");
    let uuid = v["UUID"].as_str().expect("UUID");
    let volume = k
        .get(&format!("/api/v2/projects/default/volumes/{uuid}"))
        .body;
    let stats = &volume["statistics"];
    assert!(
        number(&stats["hostWrittenStorage"]) >= host * 0.99,
        "{stats}"
    );
    assert!(number(&stats["writeAmplification"]) > 1.0, "{stats}");
    assert!(
        k.logged("pool out of space"),
        "refusals are logged:\n{}",
        k.log_tail()
    );
}
