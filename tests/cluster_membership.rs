//! Cluster membership against a real etcd and three real keeld processes on
//! loopback: every node sees every node Active, all serve one subsystem (NQN
//! and serial number), ordinals are distinct; a node killed with SIGKILL turns
//! Inactive once its lease runs out, comes back Active with the same ordinal
//! after a restart, and a node stopped with SIGTERM is Inactive at once
//! (it revokes its lease on the way out).

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::{all_active, node_args};
use common::etcd::Etcd;
use common::{wait_until, Keeld, KeeldOptions, WAIT};
use reqwest::StatusCode;
use serde_json::Value;

/// keeld's default lease TTL (`cluster.lease_ttl_s`).
const LEASE_TTL: Duration = Duration::from_secs(5);
/// How long after the TTL etcd may take to expire a lease: its expiry check
/// runs every 500 ms and the revoke goes through raft; 3 s is generous on a
/// loaded 2-core machine.
const EXPIRY_SLACK: Duration = Duration::from_secs(3);

fn start_node(etcd: &Etcd, i: usize) -> Keeld {
    Keeld::start(KeeldOptions {
        extra_args: node_args(etcd, i, "127.0.0.1:0"),
        ..KeeldOptions::default()
    })
}

fn nodes(k: &Keeld) -> Vec<Value> {
    let answer = k.get("/api/v2/nodes");
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    answer.body["nodes"].as_array().cloned().unwrap_or_default()
}

fn state_of(k: &Keeld, name: &str) -> Option<String> {
    nodes(k)
        .iter()
        .find(|n| n["name"] == name)
        .and_then(|n| n["state"].as_str().map(str::to_owned))
}

/// Runs keelctl against `k` and returns its standard output.
fn keelctl(k: &Keeld, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keelctl"))
        .env_remove("KEEL_ENDPOINT")
        .env_remove("KEEL_TOKEN")
        .env_remove("KEEL_USER")
        .env_remove("KEEL_PASSWORD")
        .arg("--data-dir")
        .arg(k.data_dir())
        .args(["--endpoint", &k.api_url])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run keelctl");
    assert!(
        out.status.success(),
        "keelctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Identify Controller (CNS 01h): SN is bytes 4..24, SUBNQN bytes 768..1024
/// (NVMe Base 2.0 §5.17.2.1).
fn identity(k: &Keeld) -> (String, String) {
    let mut host = k.connect("nqn.2014-08.org.nvmexpress:uuid:cluster-membership-test");
    let data = host.identify(1, 0).expect("identify controller");
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim_end_matches(['\0', ' '])
            .to_owned()
    };
    (text(&data[4..24]), text(&data[768..1024]))
}

#[test]
fn three_nodes_share_one_subsystem_and_report_each_others_liveness() {
    let Some(etcd) = Etcd::start("cluster_membership") else {
        return;
    };
    let mut keelds: Vec<Keeld> = (0..3).map(|i| start_node(&etcd, i)).collect();
    for k in &mut keelds {
        k.login();
    }
    for k in &keelds {
        assert!(
            wait_until(WAIT, || all_active(k, 3)),
            "not all three Active from {}: {:?}",
            k.api_url,
            nodes(k)
        );
    }

    // Keep-alives hold the leases: past a whole TTL every node is still
    // Active on its first lease, none having had to register again.
    std::thread::sleep(LEASE_TTL + Duration::from_secs(1));
    for k in &keelds {
        assert!(all_active(k, 3), "a node went Inactive: {:?}", nodes(k));
        assert!(
            !k.logged("lease lost"),
            "a lease was lost while its node ran\n{}",
            k.log_tail()
        );
    }

    // keelctl shows the same, by list and by name.
    let list = keelctl(&keelds[0], &["node", "list"]);
    assert_eq!(list.lines().count(), 4, "{list}");
    assert_eq!(list.matches(" Active ").count(), 3, "{list}");
    let shown = keelctl(&keelds[0], &["node", "show", "node-2"]);
    assert!(shown.contains("rack-2"), "{shown}");

    // One subsystem: the cluster's NQN in Lightbits' form, everywhere.
    let cluster = keelds[0].get("/api/v2/cluster").body;
    let cluster_nqn = format!(
        "nqn.2014-08.org.nvmexpress:NVMf:uuid:{}",
        cluster["UUID"].as_str().expect("cluster UUID")
    );
    assert_eq!(cluster["subsystemNQN"], cluster_nqn.as_str());
    let identities: Vec<(String, String)> = keelds.iter().map(identity).collect();
    for (k, (serial, nqn)) in keelds.iter().zip(&identities) {
        assert_eq!(k.subsystem_nqn, cluster_nqn);
        assert_eq!(*nqn, cluster_nqn);
        assert_eq!(*serial, identities[0].0, "serial numbers differ");
        assert_eq!(k.get("/api/v2/cluster").body["UUID"], cluster["UUID"]);
    }
    // The cluster's capacity is the three pools'.
    let listed = nodes(&keelds[1]);
    let capacity: u64 = listed
        .iter()
        .map(|n| {
            n["statistics"]["installedPhysicalStorage"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
                .expect("capacity")
        })
        .sum();
    assert_eq!(
        cluster["statistics"]["installedPhysicalStorage"],
        capacity.to_string()
    );

    let ordinals: BTreeSet<u64> = listed
        .iter()
        .map(|n| n["ordinal"].as_u64().expect("ordinal"))
        .collect();
    assert_eq!(ordinals.len(), 3, "ordinals not distinct: {listed:?}");
    let ordinal_of = |k: &Keeld, name: &str| {
        nodes(k)
            .iter()
            .find(|n| n["name"] == name)
            .and_then(|n| n["ordinal"].as_u64())
            .expect("ordinal")
    };
    let node2_ordinal = ordinal_of(&keelds[0], "node-2");
    let node2 = listed
        .iter()
        .find(|n| n["name"] == "node-2")
        .expect("node-2")
        .clone();
    assert_eq!(node2["failureDomains"][0], "rack-2");
    let one = keelds[0].get(&format!(
        "/api/v2/nodes/{}",
        node2["UUID"].as_str().expect("UUID")
    ));
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.body["name"], "node-2");

    // SIGKILL: no revoke, so node-2 turns Inactive when its lease runs out.
    keelds[2].kill9();
    let killed = Instant::now();
    assert!(
        wait_until(LEASE_TTL + EXPIRY_SLACK, || state_of(&keelds[0], "node-2")
            .as_deref()
            == Some("Inactive")),
        "node-2 still {:?} {:?} after kill -9\n{}",
        state_of(&keelds[0], "node-2"),
        killed.elapsed(),
        etcd.log()
    );
    let inactive_after = killed.elapsed();
    eprintln!(
        "cluster_membership: node-2 Inactive {inactive_after:?} after kill -9 (lease TTL {LEASE_TTL:?})"
    );
    // Its last keep-alive reached etcd at most a third of the TTL before the
    // kill, so the lease cannot have expired sooner than this.
    assert!(
        inactive_after >= LEASE_TTL - LEASE_TTL / 3 - Duration::from_millis(100),
        "node-2 Inactive only {inactive_after:?} after kill -9: were its keep-alives reaching etcd?"
    );
    assert_eq!(state_of(&keelds[1], "node-2").as_deref(), Some("Inactive"));

    // Restart: Active again, same identity and ordinal.
    keelds[2].restart();
    keelds[2].login();
    assert!(
        wait_until(WAIT, || all_active(&keelds[0], 3)),
        "node-2 not Active after restart: {:?}",
        nodes(&keelds[0])
    );
    assert_eq!(ordinal_of(&keelds[2], "node-2"), node2_ordinal);
    assert_eq!(
        nodes(&keelds[2])
            .iter()
            .find(|n| n["name"] == "node-2")
            .map(|n| n["UUID"].clone()),
        Some(node2["UUID"].clone())
    );
    assert_eq!(identity(&keelds[2]), identities[0]);

    // SIGTERM: keeld revokes its lease before it exits, so node-1 is
    // Inactive on the first read, long before its TTL could run out.
    let status = keelds[1].terminate();
    assert!(status.success(), "keeld exited with {status}");
    assert_eq!(state_of(&keelds[0], "node-1").as_deref(), Some("Inactive"));
    assert_eq!(state_of(&keelds[2], "node-0").as_deref(), Some("Active"));
}
