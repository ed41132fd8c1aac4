//! Nodes: `GET /api/v2/nodes` and `GET /api/v2/nodes/{UUID}` report what the
//! control port says about each node, and `GET /api/v2/cluster` of a clustered
//! node reports the cluster's identity and the capacity of its Active nodes.

mod common;

use std::sync::Arc;

use common::Harness;
use mgmt_api::control::memory::MemoryControl;
use mgmt_api::control::{NodeState, NodeStatus};
use reqwest::StatusCode;
use uuid::Uuid;

fn node(ordinal: u32, state: NodeState, capacity_bytes: u64, free_bytes: u64) -> NodeStatus {
    NodeStatus {
        uuid: Uuid::from_u128(0x1000 + u128::from(ordinal)),
        name: format!("node-{ordinal}"),
        state,
        ordinal,
        nvme_endpoint: format!("127.0.0.{}:4420", ordinal + 1),
        discovery_endpoint: format!("127.0.0.{}:8009", ordinal + 1),
        failure_domains: vec![format!("rack-{ordinal}")],
        capacity_bytes,
        free_bytes,
    }
}

async fn clustered() -> (Harness, tempfile::TempDir, Uuid) {
    let cluster = Uuid::from_u128(0xc1);
    let nodes = vec![
        node(0, NodeState::Active, 100 << 30, 60 << 30),
        node(1, NodeState::Inactive, 100 << 30, 100 << 30),
        node(2, NodeState::Active, 50 << 30, 10 << 30),
    ];
    let tmp = tempfile::tempdir().unwrap();
    let control = Arc::new(MemoryControl::new(1 << 30).with_cluster(cluster, nodes));
    let h = Harness::open(tmp.path().join("data"), control, |_| {}).await;
    (h, tmp, cluster)
}

#[tokio::test]
async fn a_single_node_lists_itself_active_with_its_pool() {
    let h = Harness::start().await;
    let (s, list) = h.get("/api/v2/nodes").await;
    assert_eq!(s, StatusCode::OK);
    let nodes = list["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 1, "{list}");
    assert_eq!(nodes[0]["state"], "Active");
    assert_eq!(nodes[0]["ordinal"], 0);
    let uuid = nodes[0]["UUID"].as_str().unwrap();
    let (s, one) = h.get(&format!("/api/v2/nodes/{uuid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one, nodes[0]);
    let (_, cluster) = h.get("/api/v2/cluster").await;
    assert_eq!(
        one["statistics"]["installedPhysicalStorage"],
        cluster["statistics"]["installedPhysicalStorage"]
    );
}

#[tokio::test]
async fn every_node_is_listed_with_state_domains_and_capacity() {
    let (h, _tmp, _) = clustered().await;
    let (s, list) = h.get("/api/v2/nodes").await;
    assert_eq!(s, StatusCode::OK);
    let nodes = list["nodes"].as_array().unwrap();
    let states: Vec<(&str, &str)> = nodes
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(
        states,
        vec![
            ("node-0", "Active"),
            ("node-1", "Inactive"),
            ("node-2", "Active")
        ]
    );
    let n2 = &nodes[2];
    assert_eq!(n2["UUID"], Uuid::from_u128(0x1002).to_string());
    assert_eq!(n2["nvmeEndpoint"], "127.0.0.3:4420");
    assert_eq!(n2["failureDomains"][0], "rack-2");
    assert_eq!(n2["ordinal"], 2);
    assert_eq!(
        n2["statistics"]["installedPhysicalStorage"],
        (50u64 << 30).to_string()
    );
    assert_eq!(
        n2["statistics"]["freePhysicalStorage"],
        (10u64 << 30).to_string()
    );
    assert_eq!(
        n2["statistics"]["physicalUsedStorage"],
        (40u64 << 30).to_string()
    );
}

#[tokio::test]
async fn one_node_by_uuid_and_unknown_or_malformed_uuids_are_refused() {
    let (h, _tmp, _) = clustered().await;
    let id = Uuid::from_u128(0x1001);
    let (s, one) = h.get(&format!("/api/v2/nodes/{id}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(one["name"], "node-1");
    assert_eq!(one["state"], "Inactive");
    let (s, _) = h
        .get(&format!("/api/v2/nodes/{}", Uuid::from_u128(7)))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.get("/api/v2/nodes/not-a-uuid").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_clustered_node_reports_the_cluster_and_active_capacity() {
    let (h, _tmp, cluster) = clustered().await;
    let (s, c) = h.get("/api/v2/cluster").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(c["UUID"], cluster.to_string());
    // Nodes 0 and 2 are Active: 100 + 50 GiB, 60 + 10 GiB free.
    assert_eq!(
        c["statistics"]["installedPhysicalStorage"],
        (150u64 << 30).to_string()
    );
    assert_eq!(
        c["statistics"]["freePhysicalStorage"],
        (70u64 << 30).to_string()
    );
    assert_eq!(
        c["discoveryEndpoints"],
        serde_json::json!(["127.0.0.1:8009", "127.0.0.3:8009"])
    );
    let (_, info) = h.get("/api/v2/clusterinfo").await;
    assert_eq!(info["UUID"], cluster.to_string());
}
