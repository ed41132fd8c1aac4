//! What the cluster system tests share: replicated volumes made over REST and
//! the ANA state of a namespace as a host reads it.

use std::time::Duration;

use nvmf_target::host::{HostController, HostOptions};
use nvmf_target::AnaState;
use reqwest::StatusCode;
use serde_json::json;

use super::{wait_until, Keeld};

/// Creates a volume of `size_bytes` with `replicas` replicas through `k`,
/// allowing `host`; waits until it is Available and returns (UUID, nsid).
pub fn create_replicated_volume(
    k: &Keeld,
    name: &str,
    replicas: u32,
    size_bytes: u64,
    host: &str,
) -> (String, u32) {
    let a = k.post(
        "/api/v2/volumes",
        &json!({
            "name": name,
            "size": size_bytes.to_string(),
            "replicaCount": replicas,
            "projectName": "default",
            "acl": {"values": [host]},
        }),
    );
    assert_eq!(a.status, StatusCode::OK, "create {name}: {}", a.body);
    let uuid = a.body["UUID"].as_str().expect("UUID").to_owned();
    let v = k.wait_volume_state(&uuid, "Available");
    let nsid = u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid");
    (uuid, nsid)
}

/// The ANA state of `nsid` on `k`, read from the ANA log page as a host
/// connecting with `options` reads it; `None` when it cannot be read or the
/// node does not expose the namespace.
pub fn ana_state(k: &Keeld, options: HostOptions, nsid: u32) -> Option<AnaState> {
    let mut c = HostController::connect(k.nvme_addr, options).ok()?;
    let log = c.ana_log(false).ok()?;
    log.groups
        .iter()
        .find(|g| g.nsids.contains(&nsid))
        .map(|g| g.state)
}

/// The node among `candidates` where `nsid` is ANA optimized, waiting up to
/// `within` for one; `options` gives the host options for a node.
pub fn optimized_node(
    keelds: &[Keeld],
    candidates: &[usize],
    nsid: u32,
    within: Duration,
    options: impl Fn(&Keeld) -> HostOptions,
) -> Option<usize> {
    let mut found = None;
    wait_until(within, || {
        found = candidates.iter().copied().find(|i| {
            ana_state(&keelds[*i], options(&keelds[*i]), nsid) == Some(AnaState::Optimized)
        });
        found.is_some()
    });
    found
}

/// The flags that make a keeld node `i` of the cluster on `etcd`: its name
/// `node-<i>`, failure domain `rack-<i>`, and replication listener.
pub fn node_args(etcd: &super::etcd::Etcd, i: usize, replication_listen: &str) -> Vec<String> {
    vec![
        "--etcd-endpoints".into(),
        etcd.client_url.clone(),
        "--node-name".into(),
        format!("node-{i}"),
        "--failure-domain".into(),
        format!("rack-{i}"),
        "--replication-listen".into(),
        replication_listen.to_owned(),
    ]
}

/// True when `k`'s API lists exactly `count` nodes, all Active.
pub fn all_active(k: &Keeld, count: usize) -> bool {
    let answer = k.get("/api/v2/nodes");
    answer.body["nodes"]
        .as_array()
        .is_some_and(|n| n.len() == count && n.iter().all(|n| n["state"] == "Active"))
}

/// Where a node listens for replication: a port of its own, new on every
/// start (the node publishes it, and primaries follow it).
pub const REPLICATION_LISTEN: &str = "127.0.0.1:0";

/// Three keeld nodes of the cluster on `etcd`, logged in, once all three
/// show Active.
pub fn three_nodes(etcd: &super::etcd::Etcd) -> Vec<Keeld> {
    let keelds: Vec<Keeld> = (0..3)
        .map(|i| {
            let mut k = Keeld::start(super::KeeldOptions {
                extra_args: node_args(etcd, i, REPLICATION_LISTEN),
                ..super::KeeldOptions::default()
            });
            k.login();
            k
        })
        .collect();
    assert!(
        wait_until(super::WAIT, || all_active(&keelds[0], 3)),
        "the three nodes never all showed Active"
    );
    keelds
}
