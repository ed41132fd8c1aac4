//! Namespace ids: allocated by the catalog from the free ones, reused once
//! freed, kept by each volume across restarts, migrated from catalogs written
//! before the catalog allocated them, and refused with the API's resource-limit
//! error (429) when every one is in use.

mod common;

use std::sync::Arc;

use common::{assert_error_body, eventually, Harness};
use mgmt_api::control::memory::MemoryControl;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

/// Starts a server whose target accepts nsids 1..=`nsid_max` only.
async fn start(nsid_max: u32) -> (Harness, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let control = Arc::new(MemoryControl::default().with_nsid_max(nsid_max));
    let h = Harness::open(tmp.path().join("data"), control, |_| {}).await;
    (h, tmp)
}

/// Stops the server, forgets the target's namespaces as a restart does, and
/// starts it again on the same data dir.
async fn restart(h: Harness) -> Harness {
    let (dir, control, _) = h.stop().await;
    control.restart_target();
    Harness::open(dir, control, |_| {}).await
}

fn uuid_of(v: &Value) -> Uuid {
    v["UUID"].as_str().unwrap().parse().unwrap()
}

fn nsid_of(v: &Value) -> u32 {
    u32::try_from(v["nsid"].as_u64().unwrap()).unwrap()
}

async fn delete_and_wait(h: &Harness, volume: Uuid) {
    let (s, e) = h.delete(&format!("/api/v2/volumes/{volume}")).await;
    assert_eq!(s, StatusCode::OK, "{e}");
    eventually("the delete to finish", || async {
        let (s, _) = h.get(&format!("/api/v2/volumes/{volume}")).await;
        (s == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
}

/// Checks that the API and the target agree on each volume's nsid.
async fn assert_exposed(h: &Harness, expected: &[(Uuid, u32)]) {
    for (volume, nsid) in expected {
        let (s, v) = h.get(&format!("/api/v2/volumes/{volume}")).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(nsid_of(&v), *nsid, "{volume} in the API");
        assert_eq!(
            h.control.exposed_nsid(*volume),
            Some(*nsid),
            "{volume} in the target"
        );
    }
}

#[tokio::test]
async fn when_every_nsid_is_in_use_creates_get_429_and_a_delete_frees_one_for_reuse() {
    let (h, _tmp) = start(3).await;
    let a = h.create_volume("a", "1 mib").await;
    let b = h.create_volume("b", "1 mib").await;
    let c = h.create_volume("c", "1 mib").await;
    assert_eq!([nsid_of(&a), nsid_of(&b), nsid_of(&c)], [1, 2, 3]);

    let (s, e) = h
        .post(
            "/api/v2/volumes",
            json!({"name": "d", "size": "1 mib", "projectName": "default"}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    assert_error_body(&e);
    assert_eq!(e["code"], 8, "RESOURCE_EXHAUSTED: {e}");
    // A snapshot takes no nsid; a thick clone into a new volume does.
    let (s, snap) = h
        .post(
            "/api/v2/projects/default/snapshots",
            json!({"name": "a-snap", "sourceVolumeUUID": a["UUID"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{snap}");
    let (s, e) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap["UUID"], "projectName": "default"}, "dst": {"name": "copy"}}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{e}");
    let (_, list) = h.get("/api/v2/volumes").await;
    assert_eq!(list["volumes"].as_array().unwrap().len(), 3, "{list}");

    delete_and_wait(&h, uuid_of(&b)).await;
    let d = h.create_volume("d", "1 mib").await;
    assert_eq!(nsid_of(&d), 2, "the freed nsid is reused");
    assert_exposed(&h, &[(uuid_of(&a), 1), (uuid_of(&d), 2), (uuid_of(&c), 3)]).await;
}

#[tokio::test]
async fn a_restart_exposes_every_volume_under_the_nsid_it_had() {
    let (h, _tmp) = start(1024).await;
    let a = h.create_volume("a", "1 mib").await;
    let b = h.create_volume("b", "1 mib").await;
    let c = h.create_volume("c", "1 mib").await;
    delete_and_wait(&h, uuid_of(&a)).await;
    let d = h.create_volume("d", "1 mib").await;
    let expected = [(uuid_of(&b), 2), (uuid_of(&c), 3), (uuid_of(&d), 1)];
    assert_exposed(&h, &expected).await;
    let h = restart(h).await;
    assert_exposed(&h, &expected).await;
    let h = restart(h).await;
    assert_exposed(&h, &expected).await;
}

#[tokio::test]
async fn catalogs_without_nsids_migrate_to_the_engine_id_and_bad_ones_are_moved() {
    let (h, _tmp) = start(1024).await;
    // Engine ids 1, 2, 3; nsids 1, 2, 3.
    let a = h.create_volume("a", "1 mib").await;
    let b = h.create_volume("b", "1 mib").await;
    let c = h.create_volume("c", "1 mib").await;
    delete_and_wait(&h, uuid_of(&a)).await;
    // Engine id 4, nsid 1.
    let d = h.create_volume("d", "1 mib").await;
    assert_eq!(nsid_of(&d), 1);
    let (dir, control, _) = h.stop().await;

    // As an older build would have left it: d without an nsid; and b with one
    // out of range, as a hand edit could.
    let path = dir.join("catalog.json");
    let mut catalog: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    catalog["volumes"][d["UUID"].as_str().unwrap()]["nsid"] = Value::Null;
    catalog["volumes"][b["UUID"].as_str().unwrap()]["nsid"] = json!(5000);
    std::fs::write(&path, serde_json::to_vec_pretty(&catalog).unwrap()).unwrap();
    control.restart_target();
    let h = Harness::open(dir, control, |_| {}).await;

    // Each gets its engine id (the nsid older builds exposed it under) where
    // that is free; the next create the lowest free nsid.
    assert_exposed(&h, &[(uuid_of(&c), 3), (uuid_of(&d), 4), (uuid_of(&b), 2)]).await;
    let e = h.create_volume("e", "1 mib").await;
    assert_eq!(nsid_of(&e), 1);
}
