//! Replicated volumes on a real etcd and three keeld processes on loopback,
//! driven over NVMe/TCP by the crate's own host:
//! - kill -9 of the primary under a write load: an in-sync replica takes over
//!   (its namespace turns ANA optimized) within a stated bound and every
//!   acknowledged write reads back from it; the volume keeps taking writes;
//! - a replica restarted after N MiB of writes resyncs by copying about
//!   N MiB, not the volume;
//! - so does a primary killed with kill -9 and restarted after its successor
//!   took N MiB of writes: it gets those and what it alone wrote before dying,
//!   and then holds every acknowledged write (it serves them when the
//!   successor is killed in turn);
//! - behind NAT (`--advertised-address`), every node's discovery log names
//!   each node at the address it advertises, never at its loopback listener.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::cluster::{
    all_active, create_replicated_volume, node_args, optimized_node, REPLICATION_LISTEN,
};
use common::etcd::Etcd;
use common::{pattern, wait_until, Keeld, KeeldOptions, WAIT};
use nvmf_target::{AnaState, Lba};
use reqwest::StatusCode;
use serde_json::json;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:cluster-replication-test";
const BLOCK: usize = 4096;
/// How long a takeover may take: the lease TTL (5 s), etcd's expiry lag, one
/// reconcile round and the new term's start. The aim is under 10 s.
const TAKEOVER_BOUND: Duration = Duration::from_secs(15);
/// Writes the failover test has made when it kills the primary (which then
/// dies with one in flight).
const KILL_AFTER_WRITES: u64 = 200;

fn start_node(etcd: &Etcd, i: usize, more_args: Vec<String>) -> Keeld {
    let mut extra_args = node_args(etcd, i, REPLICATION_LISTEN);
    extra_args.extend(more_args);
    let mut k = Keeld::start(KeeldOptions {
        extra_args,
        ..KeeldOptions::default()
    });
    k.login();
    k
}

fn cluster(etcd: &Etcd) -> Vec<Keeld> {
    cluster_with(etcd, |_| Vec::new())
}

/// Three nodes, node i started with `more_args(i)` besides the cluster flags.
fn cluster_with(etcd: &Etcd, more_args: impl Fn(usize) -> Vec<String>) -> Vec<Keeld> {
    let keelds: Vec<Keeld> = (0..3).map(|i| start_node(etcd, i, more_args(i))).collect();
    assert!(
        wait_until(WAIT, || all_active(&keelds[0], 3)),
        "the three nodes never all showed Active"
    );
    keelds
}

/// Creates a 256 MiB volume with `replicas` replicas through `k`; returns (UUID, nsid).
fn create_volume(k: &Keeld, name: &str, replicas: u32) -> (String, u32) {
    create_replicated_volume(k, name, replicas, 256 << 20, HOST)
}

/// The ANA state of `nsid` on node `k`, read as a host reads it.
fn ana_state(k: &Keeld, nsid: u32) -> Option<AnaState> {
    common::cluster::ana_state(k, k.host_options(HOST), nsid)
}

/// The index of the node serving `nsid` (ANA optimized), waiting for one.
fn primary_of(keelds: &[Keeld], alive: &[usize], nsid: u32, within: Duration) -> Option<usize> {
    optimized_node(keelds, alive, nsid, within, |k| k.host_options(HOST))
}

fn block(seed: u64) -> Bytes {
    pattern(BLOCK, seed)
}

/// Writes unique values to blocks `0..blocks` of `nsid` on `k` until `stop`
/// says so or a write fails; returns what was acknowledged last per block and
/// the write in flight when it failed (it may or may not have happened).
fn write_until(
    k: &Keeld,
    nsid: u32,
    blocks: u64,
    first_seed: u64,
    mut stop: impl FnMut(u64) -> bool,
) -> (BTreeMap<u64, u64>, Option<(u64, u64)>) {
    let mut c = k.connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    let mut acked = BTreeMap::new();
    let mut seed = first_seed;
    while !stop(seed - first_seed) {
        let lba = seed % blocks;
        match io.write(nsid, Lba(lba), block(seed), BLOCK as u32) {
            Ok(()) => {
                acked.insert(lba, seed);
            }
            Err(_) => return (acked, Some((lba, seed))),
        }
        seed += 1;
    }
    (acked, None)
}

#[test]
fn an_in_sync_replica_takes_over_from_a_killed_primary_with_every_acknowledged_write() {
    let Some(etcd) = Etcd::start("cluster_replication_failover") else {
        return;
    };
    let mut keelds = cluster(&etcd);
    let (_uuid, nsid) = create_volume(&keelds[0], "replicated", 3);
    let primary = primary_of(&keelds, &[0, 1, 2], nsid, WAIT).expect("a primary serves the volume");
    for (i, k) in keelds.iter().enumerate() {
        if i != primary {
            assert!(
                wait_until(WAIT, || ana_state(k, nsid) == Some(AnaState::Inaccessible)),
                "node-{i} does not show the replica inaccessible"
            );
        }
    }

    // Write for a while, then kill the primary under the load (another
    // thread kills it while the writer keeps going).
    let pid = keelds[primary].pid();
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let killer = {
        let written = written.clone();
        std::thread::spawn(move || {
            wait_until(WAIT, || {
                written.load(std::sync::atomic::Ordering::SeqCst) >= KILL_AFTER_WRITES
            });
            let _ = std::process::Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            Instant::now()
        })
    };
    let (acked, in_flight) = write_until(&keelds[primary], nsid, 512, 1, |n| {
        written.store(n, std::sync::atomic::Ordering::SeqCst);
        false
    });
    let killed_at = killer.join().expect("killer");
    keelds[primary].kill9();
    assert!(
        acked.len() > 16,
        "too few writes before the kill: {}",
        acked.len()
    );

    let survivors: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
    let successor = primary_of(&keelds, &survivors, nsid, TAKEOVER_BOUND + WAIT)
        .expect("no replica took the volume over");
    let takeover = killed_at.elapsed();
    eprintln!("cluster_replication: node-{successor} serves the volume {takeover:?} after the primary's kill -9");
    assert!(
        takeover < TAKEOVER_BOUND,
        "takeover took {takeover:?}\n{}",
        keelds[successor].log_tail()
    );

    // Every acknowledged write is there; the one in flight may or may not be.
    let mut c = keelds[successor].connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    for (lba, seed) in &acked {
        let got = io.read(nsid, Lba(*lba), 1, BLOCK as u32).expect("read");
        let in_flight_here = in_flight.filter(|(l, _)| l == lba).map(|(_, s)| block(s));
        assert!(
            got == block(*seed).to_vec() || in_flight_here.is_some_and(|b| got == b.to_vec()),
            "LBA {lba}: not the last acknowledged write (seed {seed})"
        );
    }
    // The volume keeps taking writes on two replicas.
    let (more, failed) = write_until(&keelds[successor], nsid, 512, 1_000_000, |n| n >= 64);
    assert_eq!((more.len(), failed), (64, None));

    // The old primary comes back as a replica: inaccessible there, and the
    // successor still serves.
    keelds[primary].restart();
    assert!(wait_until(WAIT, || ana_state(&keelds[primary], nsid)
        == Some(AnaState::Inaccessible)));
    assert_eq!(
        ana_state(&keelds[successor], nsid),
        Some(AnaState::Optimized)
    );
}

#[test]
fn a_restarted_replica_resyncs_only_the_blocks_it_missed() {
    let Some(etcd) = Etcd::start("cluster_replication_resync") else {
        return;
    };
    let mut keelds = cluster(&etcd);
    let (_uuid, nsid) = create_volume(&keelds[0], "resynced", 2);
    let primary = primary_of(&keelds, &[0, 1, 2], nsid, WAIT).expect("a primary");
    // The other replica: the node whose namespace exists and is inaccessible.
    let mut replica = None;
    wait_until(WAIT, || {
        replica = (0..3).find(|i| {
            *i != primary && ana_state(&keelds[*i], nsid) == Some(AnaState::Inaccessible)
        });
        replica.is_some()
    });
    let replica = replica.expect("the replica");
    write_until(&keelds[primary], nsid, 256, 1, |n| n >= 256);

    keelds[replica].kill9();
    // 8 MiB (2048 distinct blocks) while the replica is away.
    let missed_blocks = 2048u64;
    let (acked, failed) = write_until(&keelds[primary], nsid, 4096, 10_000, |n| n >= missed_blocks);
    assert_eq!(failed, None);
    assert_eq!(acked.len() as u64, missed_blocks);

    keelds[replica].restart();
    let rejoined = |k: &Keeld| k.logged("member rejoined the in-sync set");
    assert!(
        wait_until(WAIT * 2, || rejoined(&keelds[primary])),
        "the replica never rejoined\n{}",
        keelds[primary].log_tail()
    );
    let copied = copied_bytes(&keelds[primary]).expect("the rejoin names the bytes copied");
    let missed = missed_blocks * BLOCK as u64;
    eprintln!("cluster_replication: resync copied {copied} bytes for {missed} bytes missed (volume 256 MiB)");
    // About what was missed: writes in flight at the kill may be copied twice.
    assert!(
        copied >= missed && copied <= missed + (1 << 20),
        "copied {copied} bytes for {missed} missed"
    );
}

#[test]
fn a_killed_primary_that_comes_back_resyncs_only_what_changed() {
    let Some(etcd) = Etcd::start("cluster_replication_primary_resync") else {
        return;
    };
    let mut keelds = cluster(&etcd);
    let (_uuid, nsid) = create_volume(&keelds[0], "comeback", 2);
    let first = primary_of(&keelds, &[0, 1, 2], nsid, WAIT).expect("a primary");
    let (mut acked, failed) = write_until(&keelds[first], nsid, 256, 1, |n| n >= 256);
    assert_eq!(failed, None);

    keelds[first].kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let second = primary_of(&keelds, &survivors, nsid, TAKEOVER_BOUND + WAIT)
        .expect("the replica took the volume over");
    // 8 MiB (2048 distinct blocks, none of the first 256) while it is away.
    let missed_blocks = 2048u64;
    let (more, failed) = write_until(&keelds[second], nsid, 4096, 10_000, |n| n >= missed_blocks);
    assert_eq!(failed, None);
    assert_eq!(more.len() as u64, missed_blocks);
    acked.extend(more);

    keelds[first].restart();
    let rejoined = |k: &Keeld| k.logged("member rejoined the in-sync set");
    assert!(
        wait_until(WAIT * 2, || rejoined(&keelds[second])),
        "the old primary never rejoined\n{}",
        keelds[second].log_tail()
    );
    let copied = copied_bytes(&keelds[second]).expect("the rejoin names the bytes copied");
    let missed = missed_blocks * BLOCK as u64;
    eprintln!("cluster_replication: the old primary's resync copied {copied} bytes for {missed} bytes written while it was away (volume 256 MiB)");
    // What it missed, plus what it wrote itself since its last checkpoint
    // (the first 256 blocks): never the volume.
    assert!(
        copied >= missed && copied <= missed + (2 << 20),
        "copied {copied} bytes for {missed} missed"
    );

    // The copy made it whole: with the successor killed it serves every
    // acknowledged write.
    keelds[second].kill9();
    let third = primary_of(&keelds, &[first], nsid, TAKEOVER_BOUND + WAIT)
        .expect("the old primary took the volume back");
    assert_eq!(third, first);
    let mut c = keelds[first].connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    for (lba, seed) in &acked {
        let got = io.read(nsid, Lba(*lba), 1, BLOCK as u32).expect("read");
        assert!(
            got == block(*seed).to_vec(),
            "LBA {lba}: not the last acknowledged write (seed {seed})"
        );
    }
}

/// The byte count of the primary's last "member rejoined" log line.
fn copied_bytes(k: &Keeld) -> Option<u64> {
    k.log_tail()
        .lines()
        .rev()
        .find(|l| l.contains("member rejoined the in-sync set"))
        .and_then(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            v["fields"]["bytes"].as_u64()
        })
}

fn volume_json(k: &Keeld, uuid: &str) -> serde_json::Value {
    let a = k.get(&format!("/api/v2/volumes/{uuid}"));
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

fn protection(k: &Keeld, uuid: &str) -> String {
    volume_json(k, uuid)["protectionState"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Every node's API serves one catalog; protection states follow the nodes:
/// RF1 on a dead node is NotAvailable, RF2 with a dead member Degraded, and
/// both are FullyProtected again once the node is back and caught up.
#[test]
fn every_node_serves_one_catalog_and_protection_follows_the_nodes() {
    let Some(etcd) = Etcd::start("cluster_replication_protection") else {
        return;
    };
    let mut keelds = cluster(&etcd);
    let (rf2, rf2_nsid) = create_volume(&keelds[1], "two-copies", 2);
    let (rf1, _) = create_volume(&keelds[2], "one-copy", 1);
    // One catalog: each volume is listed by every node, whichever API made it.
    for k in &keelds {
        let listed = k.get("/api/v2/volumes").body["volumes"].clone();
        let names: Vec<&str> = listed
            .as_array()
            .map(|v| v.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            names.contains(&"two-copies") && names.contains(&"one-copy"),
            "{listed}"
        );
        assert_eq!(protection(k, &rf2), "FullyProtected");
        assert_eq!(
            volume_json(k, &rf2)["nodeList"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(volume_json(k, &rf2)["rebuildProgress"], "None");
    }
    // More replicas than active nodes: refused with the API's own error.
    let refused = keelds[0].post(
        "/api/v2/volumes",
        &json!({"name": "too-many", "size": "1048576", "replicaCount": 4,
                "projectName": "default", "acl": {"values": [HOST]}}),
    );
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);

    // Put data on the RF2 volume, then kill the node holding the RF1 volume.
    let primary = primary_of(&keelds, &[0, 1, 2], rf2_nsid, WAIT).expect("a primary");
    write_until(&keelds[primary], rf2_nsid, 1024, 1, |n| n >= 1024);
    let rf1_node = volume_json(&keelds[0], &rf1)["nodeList"][0]
        .as_str()
        .expect("nodeList")
        .to_owned();
    let node_uuid = |k: &Keeld| {
        let listed = k.get("/api/v2/nodes").body["nodes"].clone();
        let name = format!(
            "node-{}",
            keelds
                .iter()
                .position(|x| x.api_url == k.api_url)
                .unwrap_or(0)
        );
        listed
            .as_array()
            .and_then(|n| n.iter().find(|n| n["name"] == name.as_str()).cloned())
            .and_then(|n| n["UUID"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let victim = (0..3)
        .find(|i| node_uuid(&keelds[*i]) == rf1_node)
        .expect("the RF1 volume's node");
    let rf2_nodes: Vec<String> = volume_json(&keelds[0], &rf2)["nodeList"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let victim_holds_rf2 = rf2_nodes.contains(&rf1_node);
    keelds[victim].kill9();
    let survivor = (0..3).find(|i| *i != victim).expect("a survivor");
    let k = &keelds[survivor];
    assert!(
        wait_until(TAKEOVER_BOUND + WAIT, || protection(k, &rf1)
            == "NotAvailable"),
        "RF1 on a dead node: {}",
        protection(k, &rf1)
    );
    let expected_rf2 = if victim_holds_rf2 {
        "Degraded"
    } else {
        "FullyProtected"
    };
    assert!(
        wait_until(TAKEOVER_BOUND + WAIT, || protection(k, &rf2)
            == expected_rf2),
        "RF2 with node-{victim} dead: {} (expected {expected_rf2})",
        protection(k, &rf2)
    );

    // Back: both FullyProtected again, the RF2 member caught up.
    keelds[victim].restart();
    keelds[victim].login();
    for uuid in [&rf1, &rf2] {
        assert!(
            wait_until(WAIT * 2, || protection(&keelds[victim], uuid)
                == "FullyProtected"),
            "{uuid} after the node came back: {}",
            volume_json(&keelds[victim], uuid)
        );
    }
    assert!(wait_until(WAIT, || volume_json(&keelds[victim], &rf2)
        ["rebuildProgress"]
        == "None"));
}

/// The test's index of the node with UUID `uuid` (nodes are named node-<i>).
fn index_of(k: &Keeld, uuid: &str) -> usize {
    let listed = k.get("/api/v2/nodes").body["nodes"].clone();
    listed
        .as_array()
        .and_then(|n| n.iter().find(|n| n["UUID"] == uuid))
        .and_then(|n| n["name"].as_str())
        .and_then(|name| name.strip_prefix("node-"))
        .and_then(|i| i.parse().ok())
        .expect("a node of the test")
}

fn node_list(k: &Keeld, volume: &str) -> Vec<String> {
    volume_json(k, volume)["nodeList"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A replica whose node stays down past the replacement delay is rebuilt in
/// full on the third node, which then holds every acknowledged write.
#[test]
fn a_replica_lost_for_good_is_rebuilt_on_another_node() {
    let Some(etcd) = Etcd::start("cluster_replication_replace") else {
        return;
    };
    let mut keelds = cluster_with(&etcd, |_| {
        vec!["--replica-replace-after-s".into(), "2".into()]
    });
    let (volume, nsid) = create_volume(&keelds[0], "rebuilt", 2);
    let placed = node_list(&keelds[0], &volume);
    let primary = index_of(&keelds[0], &placed[0]);
    let lost = index_of(&keelds[0], &placed[1]);
    let spare = (0..3)
        .find(|i| *i != primary && *i != lost)
        .expect("a spare node");
    let (at_snapshot, failed) = write_until(&keelds[primary], nsid, 2048, 1, |n| n >= 2048);
    assert_eq!(failed, None);
    let snapshot = take_snapshot(&keelds[primary], &volume, "before-rebuild");
    let (later, failed) = write_until(&keelds[primary], nsid, 2048, 5000, |n| n >= 512);
    assert_eq!(failed, None);
    let mut acked = at_snapshot.clone();
    acked.extend(later);

    keelds[lost].kill9();
    let k = &keelds[primary];
    assert!(
        wait_until(WAIT * 2, || {
            node_list(k, &volume).len() == 2
                && !node_list(k, &volume).contains(&placed[1])
                && protection(k, &volume) == "FullyProtected"
        }),
        "the lost replica was not rebuilt elsewhere: {}\n{}",
        volume_json(k, &volume),
        k.log_tail()
    );
    assert_eq!(index_of(k, &node_list(k, &volume)[1]), spare);

    // The rebuilt replica holds everything: make it serve and read back.
    keelds[primary].kill9();
    let served = primary_of(&keelds, &[spare], nsid, TAKEOVER_BOUND + WAIT)
        .expect("the rebuilt replica takes over");
    let mut c = keelds[served].connect(HOST);
    assert!(c.set_queue_count(1).expect("queues") >= 1);
    let mut io = c.connect_io_queue(1).expect("I/O queue");
    for (lba, seed) in &acked {
        let got = io.read(nsid, Lba(*lba), 1, BLOCK as u32).expect("read");
        assert!(
            got == block(*seed).to_vec(),
            "LBA {lba} lost in the rebuild"
        );
    }

    // It got the snapshot too, and holds it in cluster metadata: rolled
    // back through it, the volume reads as it did when the snapshot was taken.
    let rollback = keelds[served].put(
        &format!("/api/v2/projects/default/volumes/{volume}/rollback"),
        &json!({"srcSnapshotUUID": snapshot}),
    );
    assert_eq!(
        rollback.status,
        StatusCode::OK,
        "{}\n{}",
        rollback.body,
        keelds[served].log_tail()
    );
    for (lba, seed) in &at_snapshot {
        let got = io.read(nsid, Lba(*lba), 1, BLOCK as u32).expect("read");
        assert!(
            got == block(*seed).to_vec(),
            "LBA {lba} is not the snapshot's after the rollback"
        );
    }
}

/// Takes snapshot `name` of `volume` through `k`; returns its UUID once Available.
fn take_snapshot(k: &Keeld, volume: &str, name: &str) -> String {
    let snap = k.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": name, "sourceVolumeUUID": volume}),
    );
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.body);
    let uuid = snap.body["UUID"].as_str().expect("UUID").to_owned();
    let available = || {
        k.get("/api/v2/projects/default/snapshots").body["snapshots"]
            .as_array()
            .is_some_and(|all| {
                all.iter()
                    .any(|s| s["UUID"] == uuid.as_str() && s["state"] == "Available")
            })
    };
    assert!(
        wait_until(WAIT, available),
        "the snapshot never became Available"
    );
    uuid
}

#[test]
fn discovery_names_every_node_at_the_address_it_advertises() {
    let Some(etcd) = Etcd::start("cluster_replication_advertised") else {
        return;
    };
    // TEST-NET-1 addresses: nothing listens there; hosts behind a NAT would
    // reach the nodes through them.
    let advertised = |i: usize| format!("192.0.2.1:{}", 4420 + i);
    let keelds = cluster_with(&etcd, |i| {
        vec!["--advertised-address".into(), advertised(i)]
    });
    let (_uuid, nsid) = create_volume(&keelds[0], "advertised", 3);
    assert!(primary_of(&keelds, &[0, 1, 2], nsid, WAIT).is_some());
    let want: BTreeSet<String> = (0..3).map(advertised).collect();
    for (i, k) in keelds.iter().enumerate() {
        let mut portals = BTreeSet::new();
        let listed = wait_until(WAIT, || {
            portals = nvmf_target::host::discover(k.discovery_addr, HOST)
                .map(|entries| {
                    entries
                        .iter()
                        .filter(|e| e.subnqn == k.subsystem_nqn)
                        .map(|e| format!("{}:{}", e.traddr, e.trsvcid))
                        .collect()
                })
                .unwrap_or_default();
            portals == want
        });
        assert!(
            listed,
            "node-{i} lists {portals:?}, not the advertised {want:?}"
        );
    }
}
