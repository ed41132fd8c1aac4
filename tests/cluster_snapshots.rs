//! Snapshots, thin and thick clones and rollback of a replicated volume on a
//! real etcd and three keeld processes on loopback, asked of any node's REST
//! API and checked over NVMe/TCP with the crate's own host: every replica
//! holds the snapshot taken at one point of the write order and rolls back
//! at one point, so after the primary's kill -9 the node that takes over
//! reads exactly what the old primary served.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::cluster::{all_active, create_replicated_volume, optimized_node, three_nodes};
use common::etcd::Etcd;
use common::{pattern, wait_until, Keeld, WAIT};
use nvmf_target::Lba;
use reqwest::StatusCode;
use serde_json::{json, Value};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:cluster-snapshots-test";
const BLOCK: u32 = 4096;
/// Blocks each step writes.
const BLOCKS: u64 = 16;
/// Lease TTL, expiry lag, a reconcile round and a term's start, with room.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

/// Data of step `step` for block `i`.
fn data(step: u64, i: u64) -> Bytes {
    pattern(BLOCK as usize, step * 1_000 + i)
}

/// The node among `alive` serving `nsid`.
fn primary_of(keelds: &[Keeld], alive: &[usize], nsid: u32, within: Duration) -> usize {
    optimized_node(keelds, alive, nsid, within, |k| k.host_options(HOST))
        .unwrap_or_else(|| panic!("no node serves namespace {nsid}"))
}

fn write_blocks(k: &Keeld, nsid: u32, first: u64, step: u64) {
    let mut c = k.connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    for i in 0..BLOCKS {
        io.write(nsid, Lba(first + i), data(step, i), BLOCK)
            .expect("write");
    }
}

/// Asserts blocks `first..first + BLOCKS` of `nsid` on `k` hold step `step`.
fn assert_blocks(k: &Keeld, nsid: u32, first: u64, step: u64, what: &str) {
    let mut c = k.connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    for i in 0..BLOCKS {
        let got = io.read(nsid, Lba(first + i), 1, BLOCK).expect("read");
        assert!(
            got == data(step, i).to_vec(),
            "{what}: LBA {} does not hold step {step}'s data",
            first + i
        );
    }
}

/// Makes volume `uuid` reachable by the test host; returns its nsid.
fn allow_host(k: &Keeld, uuid: &str) -> u32 {
    let acl = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"acl": {"values": [HOST]}}),
    );
    assert_eq!(acl.status, StatusCode::OK, "{}", acl.body);
    let view = k.wait_volume_state(uuid, "Available");
    u32::try_from(view["nsid"].as_u64().expect("nsid")).expect("nsid")
}

fn snapshots(k: &Keeld) -> Vec<Value> {
    k.get("/api/v2/projects/default/snapshots").body["snapshots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn snapshots_clones_and_rollback_of_a_replicated_volume_outlive_its_primary() {
    let Some(etcd) = Etcd::start("cluster_snapshots") else {
        return;
    };
    let mut keelds = three_nodes(&etcd);
    let (uuid, nsid) = create_replicated_volume(&keelds[0], "source", 3, 64 << 20, HOST);
    let primary = primary_of(&keelds, &[0, 1, 2], nsid, WAIT);
    let other = (primary + 1) % 3;
    write_blocks(&keelds[primary], nsid, 0, 1);

    // A snapshot asked of a node that is not the primary.
    let snap = keelds[other].post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "snap-1", "sourceVolumeUUID": uuid}),
    );
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.body);
    let snap_uuid = snap.body["UUID"].as_str().expect("UUID").to_owned();
    assert!(
        wait_until(WAIT, || snapshots(&keelds[other]).iter().any(|s| s["UUID"]
            == snap_uuid.as_str()
            && s["state"] == "Available")),
        "the snapshot never became Available: {:?}",
        snapshots(&keelds[other])
    );
    write_blocks(&keelds[primary], nsid, 0, 2);

    // A thin clone on two of the snapshot's holders starts as the snapshot.
    let thin = keelds[other].post(
        "/api/v2/volumes",
        &json!({"name": "thin", "sourceSnapshotUUID": snap_uuid, "replicaCount": 2,
                "acl": {"values": [HOST]}}),
    );
    assert_eq!(thin.status, StatusCode::OK, "{}", thin.body);
    let thin_uuid = thin.body["UUID"].as_str().expect("UUID").to_owned();
    let thin_view = keelds[other].wait_volume_state(&thin_uuid, "Available");
    let thin_nsid = u32::try_from(thin_view["nsid"].as_u64().expect("nsid")).expect("nsid");
    let thin_primary = primary_of(&keelds, &[0, 1, 2], thin_nsid, WAIT);
    assert_blocks(&keelds[thin_primary], thin_nsid, 0, 1, "the thin clone");

    // A thick clone (a copy on each of its nodes) holds the snapshot too.
    let started = keelds[other].post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap_uuid}, "dst": {"name": "thick", "verifyClone": true}}),
    );
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let workflow = started.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    let mut last = Value::Null;
    assert!(
        wait_until(WAIT, || {
            last = keelds[other]
                .get(&format!("/api/v1/workflows/{workflow}"))
                .body["workflow"]
                .clone();
            last["state"] != "Running"
        }),
        "the thick clone never finished: {last}"
    );
    assert_eq!(last["state"], "Completed", "{last}");
    let thick = keelds[other].get("/api/v2/volumes/?name=thick&projectName=default");
    let thick_uuid = thick.body["UUID"].as_str().expect("UUID").to_owned();
    let thick_nsid = allow_host(&keelds[other], &thick_uuid);
    let thick_primary = primary_of(&keelds, &[0, 1, 2], thick_nsid, WAIT);
    assert_blocks(&keelds[thick_primary], thick_nsid, 0, 1, "the thick clone");

    // Rollback through any node: the source reads the snapshot again, and
    // writes after the rollback stay.
    let rollback = keelds[other].put(
        &format!("/api/v2/projects/default/volumes/{uuid}/rollback"),
        &json!({"srcSnapshotUUID": snap_uuid}),
    );
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.body);
    assert_blocks(&keelds[primary], nsid, 0, 1, "the rolled-back source");
    write_blocks(&keelds[primary], nsid, BLOCKS, 3);

    // The primary dies: the node taking over rolled back at the same point.
    keelds[primary].kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
    let successor = primary_of(&keelds, &survivors, nsid, TAKEOVER_BOUND);
    assert_blocks(&keelds[successor], nsid, 0, 1, "the source after failover");
    assert_blocks(
        &keelds[successor],
        nsid,
        BLOCKS,
        3,
        "writes after the rollback",
    );
    let thin_primary = primary_of(&keelds, &survivors, thin_nsid, TAKEOVER_BOUND);
    assert_blocks(
        &keelds[thin_primary],
        thin_nsid,
        0,
        1,
        "the thin clone after failover",
    );
    let thick_primary = primary_of(&keelds, &survivors, thick_nsid, TAKEOVER_BOUND);
    assert_blocks(
        &keelds[thick_primary],
        thick_nsid,
        0,
        1,
        "the thick clone after failover",
    );

    // A second rollback through the new primary, then the snapshot goes.
    write_blocks(&keelds[successor], nsid, 0, 4);
    let rollback = keelds[successor].put(
        &format!("/api/v2/projects/default/volumes/{uuid}/rollback"),
        &json!({"srcSnapshotUUID": snap_uuid}),
    );
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.body);
    assert_blocks(
        &keelds[successor],
        nsid,
        0,
        1,
        "rolled back by the new primary",
    );
    let deleted =
        keelds[successor].delete(&format!("/api/v2/projects/default/snapshots/{snap_uuid}"));
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert!(
        wait_until(WAIT, || snapshots(&keelds[successor]).is_empty()),
        "the snapshot was never deleted: {:?}",
        snapshots(&keelds[successor])
    );
    assert_blocks(
        &keelds[thin_primary],
        thin_nsid,
        0,
        1,
        "the thin clone without its snapshot",
    );

    // The old primary comes back, drops its copy of the deleted snapshot and
    // catches up with the rolled-back source.
    keelds[primary].restart();
    assert!(
        wait_until(WAIT, || all_active(&keelds[successor], 3)),
        "the old primary never rejoined"
    );
    let protected = wait_until(Duration::from_secs(60), || {
        keelds[successor]
            .get(&format!("/api/v2/volumes/{uuid}"))
            .body["protectionState"]
            == "FullyProtected"
    });
    assert!(protected, "the source never got fully protected again");
}
