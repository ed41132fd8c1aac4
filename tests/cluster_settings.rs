//! Settings of a replicated volume take effect on whichever node serves it:
//! a real etcd and three keeld processes on loopback. A QoS policy and an IP
//! ACL set through one node's REST API are enforced by the volume's primary
//! (seen in its `/metrics` and by the crate's own host connecting from two
//! loopback addresses), follow changes made through another node, and hold
//! on the node that takes over after the primary's kill -9.

mod common;

use std::net::IpAddr;
use std::time::Duration;

use common::cluster::{create_replicated_volume, optimized_node, three_nodes};
use common::etcd::Etcd;
use common::{wait_until, Keeld, WAIT};
use nvmf_target::host::HostController;
use reqwest::StatusCode;
use serde_json::json;

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:cluster-settings-test";
/// Lease TTL, expiry lag, a reconcile round and a term's start, with room.
const TAKEOVER_BOUND: Duration = Duration::from_secs(30);

/// The value of `keel_volume_qos_limit` for `volume` and `limit` in `k`'s
/// metrics, if it shows one.
fn qos_limit(k: &Keeld, volume: &str, limit: &str) -> Option<u64> {
    let a = k.get("/metrics");
    let text = a.body.as_str()?.to_owned();
    let prefix = format!("keel_volume_qos_limit{{volume=\"{volume}\",limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether a host connecting to `k` from `source` sees namespace `nsid`.
fn sees(k: &Keeld, source: &str, nsid: u32) -> bool {
    let mut options = k.host_options(HOST);
    options.source = Some(source.parse::<IpAddr>().expect("an address"));
    HostController::connect(k.nvme_addr, options)
        .and_then(|mut c| c.active_namespaces())
        .is_ok_and(|active| active.contains(&nsid))
}

#[test]
fn qos_and_ip_acl_of_a_replicated_volume_hold_on_its_primary_and_after_failover() {
    let Some(etcd) = Etcd::start("cluster_settings") else {
        return;
    };
    let mut keelds = three_nodes(&etcd);
    let policy = keelds[0].post(
        "/api/v2/qosPolicies",
        &json!({"name": "capped", "limit": {"limitAbsolute": {"writeIOPS": 400}}}),
    );
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);
    let (uuid, nsid) = create_replicated_volume(&keelds[1], "settled", 3, 64 << 20, HOST);
    let primary = optimized_node(&keelds, &[0, 1, 2], nsid, WAIT, |k| k.host_options(HOST))
        .expect("a node serves the volume");
    assert_eq!(qos_limit(&keelds[primary], &uuid, "write_iops"), None);

    // Set through a node that need not be the primary; the primary applies both.
    let asked = (primary + 1) % 3;
    let put = keelds[asked].put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"qosPolicyName": "capped", "ipAcl": {"values": ["127.0.0.2/32"]}}),
    );
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert!(
        wait_until(WAIT, || qos_limit(&keelds[primary], &uuid, "write_iops")
            == Some(400)),
        "the primary never enforced the policy"
    );
    assert!(
        wait_until(WAIT, || !sees(&keelds[primary], "127.0.0.1", nsid)),
        "a host outside the IP ACL still sees the namespace"
    );
    assert!(sees(&keelds[primary], "127.0.0.2", nsid));

    // A policy change through a third node reaches the primary.
    let third = (primary + 2) % 3;
    let changed = keelds[third].put(
        "/api/v2/qosPolicies/capped",
        &json!({"limit": {"limitAbsolute": {"writeIOPS": 900, "readMBps": 5}}}),
    );
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.body);
    assert!(
        wait_until(WAIT, || qos_limit(&keelds[primary], &uuid, "write_iops")
            == Some(900)
            && qos_limit(&keelds[primary], &uuid, "read_bytes")
                == Some(5_000_000)),
        "the primary never took the policy's new rates"
    );

    // The node that takes over enforces the same settings.
    keelds[primary].kill9();
    let survivors: Vec<usize> = (0..3).filter(|i| *i != primary).collect();
    let successor = optimized_node(&keelds, &survivors, nsid, TAKEOVER_BOUND, |k| {
        let mut options = k.host_options(HOST);
        options.source = Some("127.0.0.2".parse().expect("an address"));
        options
    })
    .expect("a survivor takes over");
    assert!(
        wait_until(WAIT, || qos_limit(&keelds[successor], &uuid, "write_iops")
            == Some(900)),
        "the new primary does not enforce the policy"
    );
    assert!(!sees(&keelds[successor], "127.0.0.1", nsid));
    assert!(sees(&keelds[successor], "127.0.0.2", nsid));
}
