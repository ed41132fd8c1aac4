//! Cluster, volume and snapshot endpoints over real HTTPS, with every documented
//! error code and bad input.

mod common;

use common::{assert_error_body, eventually, Harness};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn cluster_clusterinfo_and_nodes_describe_the_node() {
    let h = Harness::start().await;
    let (s, c) = h.get("/api/v2/cluster").await;
    assert_eq!(s, StatusCode::OK);
    assert!(uuid::Uuid::parse_str(c["UUID"].as_str().unwrap()).is_ok());
    assert_eq!(c["subsystemNQN"], "nqn.2016-01.io.keel:subsystem:memory");
    assert_eq!(c["maxReplicas"], 1);
    assert_eq!(c["discoveryEndpoints"][0], "127.0.0.1:8009");
    assert_eq!(
        c["apiEndpoints"][0],
        h.server.as_ref().unwrap().local_addr().to_string()
    );
    for field in [
        "estimatedLogicalStorage",
        "estimatedFreeLogicalStorage",
        "provisionedToEffectiveStorageRatio",
    ] {
        assert!(c["statistics"][field].is_string(), "{field} missing: {c}");
    }
    let (s, info) = h.get("/api/v2/clusterinfo").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(info["UUID"], c["UUID"]);
    assert_eq!(info["subsystemNQN"], c["subsystemNQN"]);
    let (s, nodes) = h.get("/api/v2/nodes").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(nodes["nodes"][0]["nvmeEndpoint"], "127.0.0.1:4420");
    assert_eq!(nodes["nodes"][0]["state"], "Active");
}

#[tokio::test]
async fn volume_create_get_update_delete_with_loose_types() {
    let h = Harness::start().await;
    let (s, v) = h
        .post(
            "/api/v2/volumes",
            json!({"name": "vol-1", "size": "1 gib", "replicaCount": "1", "compression": "True",
                   "projectName": "default", "acl": {"values": ["nqn.2014-08.org.nvmexpress:uuid:host-a"]},
                   "IPAcl": {"values": ["ALLOW_ANY"]}, "sectorSize": 4096, "sourceSnapshotUUID": null,
                   "labels": [{"key": "b", "value": "2"}, {"key": "a", "value": ""}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["size"], "1073741824");
    assert_eq!(v["state"], "Available");
    assert_eq!(v["compression"], "true");
    assert_eq!(v["replicaCount"], 1);
    assert_eq!(
        v["labels"],
        json!([{"key": "b", "value": "2"}, {"key": "a", "value": ""}])
    );
    assert!(v["nsid"].as_u64().unwrap() >= 1);
    assert!(v["statistics"]["logicalUsedStorage"].is_string());
    let uuid = v["UUID"].as_str().unwrap().to_owned();
    let id = uuid::Uuid::parse_str(&uuid).unwrap();
    assert_eq!(
        h.control.host_acl(id),
        Some(mgmt_api::control::HostAcl::Hosts(vec![
            "nqn.2014-08.org.nvmexpress:uuid:host-a".into()
        ]))
    );

    // Get by UUID, by name (trailing slash), list without slash.
    let (s, got) = h
        .get(&format!("/api/v2/volumes/{uuid}?projectName=default"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["name"], "vol-1");
    let (s, by_name) = h.get("/api/v2/projects/default/volumes/?name=vol-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_name["UUID"], uuid.as_str());
    let (s, _) = h.get("/api/v2/projects/default/volumes/?name=nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, list) = h.get("/api/v2/projects/default/volumes").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1);

    // Update with the ETag as If-Match: grow, ACL (reaches the target), labels.
    let etag = got["ETag"].as_str().unwrap().to_owned();
    let (s, up) = h
        .raw(
            Method::PUT,
            &format!("/api/v2/projects/default/volumes/{uuid}"),
            serde_json::to_vec(&json!({"size": "2147483648", "acl": {"values": ["ALLOW_ANY"]}, "labels": [{"key": "x", "value": "y"}]})).unwrap(),
            &[("If-Match", &etag), ("Content-Type", "application/json")],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{up}");
    assert_eq!(up["size"], "2147483648");
    assert_eq!(up["labels"], json!([{"key": "x", "value": "y"}]));
    assert_ne!(up["ETag"], etag.as_str());
    assert_eq!(h.control.volume_size(id), Some(2 << 30));
    assert_eq!(
        h.control.host_acl(id),
        Some(mgmt_api::control::HostAcl::AllowAny)
    );

    // A stale ETag, by header or by body field, is 412 and changes nothing.
    let (s, e) = h
        .raw(
            Method::PUT,
            &format!("/api/v2/volumes/{uuid}"),
            br#"{"compression": false}"#.to_vec(),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_error_body(&e);
    let (s, _) = h
        .put(
            &format!("/api/v2/volumes/{uuid}"),
            json!({"ETag": etag, "compression": false}),
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    // Update without any ETag works; shrinking is 400.
    let (s, _) = h
        .put(
            &format!("/api/v2/volumes/{uuid}"),
            json!({"compression": "False"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, e) = h
        .put(&format!("/api/v2/volumes/{uuid}"), json!({"size": "1 gib"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_body(&e);

    // A stale If-Match on delete is 412 and the volume stays.
    let (s, _) = h
        .raw(
            Method::DELETE,
            &format!("/api/v2/volumes/{uuid}"),
            Vec::new(),
            &[("If-Match", &etag)],
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);

    // Delete is long: Deleting (a second delete is 400), then 404.
    h.control.hold_deletes(true);
    let (s, body) = h
        .delete(&format!("/api/v2/projects/default/volumes/{uuid}"))
        .await;
    assert_eq!((s, body), (StatusCode::OK, json!({})));
    let (s, deleting) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(deleting["state"], "Deleting");
    let (s, _) = h.delete(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (_, hidden) = h.get("/api/v2/volumes").await;
    assert_eq!(
        hidden["volumes"].as_array().unwrap().len(),
        0,
        "showAll=false hides Deleting"
    );
    let (_, shown) = h.get("/api/v2/volumes?showAll=true").await;
    assert_eq!(shown["volumes"].as_array().unwrap().len(), 1);
    h.control.hold_deletes(false);
    eventually("the volume to disappear", || async {
        (h.get(&format!("/api/v2/volumes/{uuid}")).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert!(!h.control.has_volume(id));
    let (s, e) = h.delete(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_body(&e);
}

#[tokio::test]
async fn temporary_states_answer_503_and_duplicates_409() {
    let h = std::sync::Arc::new(Harness::start().await);
    h.create_volume("taken", "1 gib").await;
    let (s, e) = h
        .post("/api/v2/volumes", json!({"name": "taken", "size": "1 gib"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_error_body(&e);

    h.control.hold_creates(true);
    let h2 = h.clone();
    let creating = tokio::spawn(async move {
        h2.post("/api/v2/volumes", json!({"name": "slow", "size": "1 gib"}))
            .await
    });
    let uuid = eventually("the volume to be Creating", || async {
        let (_, list) = h.get("/api/v2/volumes?name=slow").await;
        list["volumes"][0]["UUID"].as_str().map(str::to_owned)
    })
    .await;
    let (_, v) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(v["state"], "Creating");
    let (s, e) = h.delete(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert_error_body(&e);
    let (s, _) = h
        .put(&format!("/api/v2/volumes/{uuid}"), json!({"labels": []}))
        .await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, _) = h
        .post("/api/v2/volumes", json!({"name": "slow", "size": "1 gib"}))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "a Creating volume's name is taken");
    h.control.hold_creates(false);
    let (s, done) = creating.await.unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(done["state"], "Available");
}

#[tokio::test]
async fn concurrent_creates_of_one_name_have_exactly_one_winner() {
    let h = std::sync::Arc::new(Harness::start().await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            h.post("/api/v2/volumes", json!({"name": "race", "size": "1 gib"}))
                .await
                .0
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        7,
        "{statuses:?}"
    );
    let (_, list) = h.get("/api/v2/volumes?name=race").await;
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_pages_with_offset_and_limit() {
    let h = Harness::start().await;
    for i in 0..5 {
        h.create_volume(&format!("p{i}"), "1 mib").await;
    }
    let (_, all) = h.get("/api/v2/volumes").await;
    let uuids: Vec<String> = all["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["UUID"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(uuids.len(), 5);
    let mut sorted = uuids.clone();
    sorted.sort();
    assert_eq!(uuids, sorted, "list order is UUID order");
    let mut seen = Vec::new();
    let mut offset: Option<String> = None;
    for _ in 0..5 {
        let path = match &offset {
            Some(o) => format!("/api/v2/volumes?limit=2&offsetUUID={o}"),
            None => "/api/v2/volumes?limit=2".to_owned(),
        };
        let (s, page) = h.get(&path).await;
        assert_eq!(s, StatusCode::OK);
        let page = page["volumes"].as_array().unwrap().clone();
        assert!(page.len() <= 2);
        if page.is_empty() {
            break;
        }
        offset = page.last().map(|v| v["UUID"].as_str().unwrap().to_owned());
        seen.extend(page.iter().map(|v| v["UUID"].as_str().unwrap().to_owned()));
    }
    assert_eq!(seen, uuids);
    let (_, one) = h.get(&format!("/api/v2/volumes?UUID={}", uuids[3])).await;
    assert_eq!(one["volumes"].as_array().unwrap().len(), 1);
    let (_, big) = h.get("/api/v2/volumes?limit=100000").await;
    assert_eq!(big["volumes"].as_array().unwrap().len(), 5);
    for bad in [
        "limit=abc",
        "limit=-1",
        "offsetUUID=zzz",
        "showAll=maybe",
        "UUID=1",
    ] {
        let (s, e) = h.get(&format!("/api/v2/volumes?{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert_error_body(&e);
    }
}

#[tokio::test]
async fn snapshots_clones_and_rollback() {
    let h = Harness::start().await;
    let v = h.create_volume("base", "1 gib").await;
    let vol = v["UUID"].as_str().unwrap().to_owned();
    let (s, snap) = h
        .post(
            "/api/v2/projects/default/snapshots",
            json!({"name": "s1", "sourceVolumeUUID": vol, "description": "first"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{snap}");
    assert_eq!(snap["state"], "Available");
    assert_eq!(snap["sourceVolumeUUID"], vol.as_str());
    let sid = snap["UUID"].as_str().unwrap().to_owned();
    let (s, _) = h
        .post(
            "/api/v2/projects/default/snapshots",
            json!({"name": "s1", "sourceVolumeUUID": vol}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, list) = h.get("/api/v2/projects/default/snapshots").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["snapshots"][0]["sourceVolumeUUID"], vol.as_str());
    let (s, by_name) = h.get("/api/v2/projects/default/snapshots/?Name=s1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(by_name["UUID"], sid.as_str());
    let (s, _) = h.get("/api/v2/projects/default/snapshots/?Name=nope").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, got) = h
        .get(&format!("/api/v2/projects/default/snapshots/{sid}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(got["description"], "first");

    // A clone inherits the snapshot's size; the snapshotUUID filter finds it.
    let (s, clone) = h
        .post(
            "/api/v2/projects/default/volumes",
            json!({"name": "c1", "sourceSnapshotUUID": sid}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{clone}");
    assert_eq!(clone["size"], "1073741824");
    assert_eq!(clone["sourceSnapshotUUID"], sid.as_str());
    let (_, clones) = h.get(&format!("/api/v2/volumes?snapshotUUID={sid}")).await;
    assert_eq!(clones["volumes"].as_array().unwrap().len(), 1);
    let (s, _) = h
        .post(
            "/api/v2/volumes",
            json!({"name": "c2", "sourceSnapshotUUID": sid, "size": "1 mib"}),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "a clone smaller than its snapshot"
    );

    // Rollback to the volume's own snapshot; another volume's snapshot is 400.
    let (s, rolled) = h
        .put(
            &format!("/api/v2/projects/default/volumes/{vol}/rollback"),
            json!({"srcSnapshotUUID": sid}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["state"], "Available");
    let c1 = clone["UUID"].as_str().unwrap();
    let (s, _) = h
        .put(
            &format!("/api/v2/projects/default/volumes/{c1}/rollback"),
            json!({"srcSnapshotUUID": sid}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = h
        .put(
            &format!("/api/v2/projects/default/volumes/{vol}/rollback"),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Delete: Deleting, then 404; deleting again is 404.
    let (s, _) = h
        .delete(&format!("/api/v2/projects/default/snapshots/{sid}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    eventually("the snapshot to disappear", || async {
        (h.get(&format!("/api/v2/projects/default/snapshots/{sid}"))
            .await
            .0
            == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
    let (s, _) = h
        .delete(&format!("/api/v2/projects/default/snapshots/{sid}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn engine_failures_map_to_documented_errors_and_leave_nothing() {
    let h = Harness::start().await;
    h.control.fail_next(mgmt_api::ControlError::NoSpace);
    let (s, e) = h
        .post("/api/v2/volumes", json!({"name": "big", "size": "1 gib"}))
        .await;
    assert_eq!(s, StatusCode::INSUFFICIENT_STORAGE);
    assert_error_body(&e);
    h.control
        .fail_next(mgmt_api::ControlError::Internal("disk on fire".into()));
    let (s, e) = h
        .post("/api/v2/volumes", json!({"name": "big", "size": "1 gib"}))
        .await;
    assert_eq!(s, StatusCode::INTERNAL_SERVER_ERROR);
    assert_error_body(&e);
    let (_, list) = h.get("/api/v2/volumes?showAll=true").await;
    assert_eq!(list["volumes"], json!([]));
    // The name is free again.
    h.create_volume("big", "1 gib").await;
}

async fn assert_nothing_created(h: &Harness) {
    let (_, list) = h.get("/api/v2/volumes?showAll=true").await;
    assert_eq!(
        list["volumes"],
        json!([]),
        "a rejected request created something"
    );
}

#[tokio::test]
async fn bad_input_gets_4xx_with_a_message_and_changes_nothing() {
    let h = Harness::start_with(|c| c.body_limit_bytes = 64 * 1024).await;
    let long = "a".repeat(10 * 1024);
    let bodies: Vec<(Vec<u8>, &str)> = vec![
        (b"{not json".to_vec(), "malformed"),
        (b"".to_vec(), "empty"),
        (b"[]".to_vec(), "array"),
        (br#"{"name": 5, "size": "1 gib"}"#.to_vec(), "name type"),
        (br#"{"name": "v", "size": [1]}"#.to_vec(), "size type"),
        (br#"{"name": "v", "size": "-1"}"#.to_vec(), "negative size"),
        (br#"{"name": "v", "size": "0"}"#.to_vec(), "zero size"),
        (
            br#"{"name": "v", "size": "1 zib"}"#.to_vec(),
            "unknown unit",
        ),
        (
            br#"{"name": "v", "size": "1000"}"#.to_vec(),
            "not a sector multiple",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "replicaCount": "x"}"#.to_vec(),
            "replica type",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "replicaCount": 4}"#.to_vec(),
            "replicas out of range",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "replicaCount": 2}"#.to_vec(),
            "more replicas than the cluster places",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "compression": "yes"}"#.to_vec(),
            "compression type",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "sectorSize": 1024}"#.to_vec(),
            "sector size",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "acl": {"values": ["ALLOW_ANY", "nqn.x"]}}"#
                .to_vec(),
            "acl mix",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "acl": {"values": ["not-an-nqn"]}}"#.to_vec(),
            "acl value",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "ipAcl": {"values": ["300.1.1.1"]}}"#.to_vec(),
            "ip acl",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "labels": [{"key": "a"}, {"key": "a"}]}"#.to_vec(),
            "duplicate labels",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "bogus": 1}"#.to_vec(),
            "unknown field",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "sourceSnapshotUUID": "nope"}"#.to_vec(),
            "bad snapshot uuid",
        ),
        (br#"{"size": "1 gib"}"#.to_vec(), "missing name"),
        (br#"{"name": "v"}"#.to_vec(), "missing size"),
    ];
    for (body, what) in bodies {
        let (s, e) = h
            .raw(
                Method::POST,
                "/api/v2/volumes",
                body,
                &[("Content-Type", "application/json")],
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{what}: {e}");
        assert_error_body(&e);
    }
    for name in [
        "../etc/passwd",
        ".",
        "..",
        "a/b",
        "a\\b",
        "völume",
        "💾",
        "a b",
        "",
        long.as_str(),
        "x\u{0}y",
    ] {
        let (s, e) = h
            .post("/api/v2/volumes", json!({"name": name, "size": "1 gib"}))
            .await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "name {:?}",
            name.chars().take(20).collect::<String>()
        );
        assert_error_body(&e);
    }
    // Hostile project names in paths and queries.
    for path in [
        "/api/v2/projects/..%2F..%2Fetc/volumes",
        "/api/v2/projects/v%C3%B6l/volumes",
        "/api/v2/volumes?projectName=a%2Fb",
        "/api/v2/volumes/..%2F..",
        "/api/v2/volumes/not-a-uuid",
    ] {
        let (s, e) = h.get(path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {e}");
        assert_error_body(&e);
    }
    let (s, _) = h
        .get(&format!(
            "/api/v2/projects/{}/volumes",
            "p".repeat(10 * 1024)
        ))
        .await;
    assert!(s.is_client_error(), "10 KB project name: {s}");
    // An oversized body is 413.
    let huge = format!(
        r#"{{"name": "v", "size": "1 gib", "labels": [{{"key": "k", "value": "{}"}}]}}"#,
        "x".repeat(100 * 1024)
    );
    let (s, e) = h
        .raw(
            Method::POST,
            "/api/v2/volumes",
            huge.into_bytes(),
            &[("Content-Type", "application/json")],
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_error_body(&e);
    // Unknown projects are 404; unknown routes are JSON 404s.
    let (s, _) = h
        .post(
            "/api/v2/projects/ghost/volumes",
            json!({"name": "v", "size": "1 gib"}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, e) = h.get("/api/v2/nothing-here").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_body(&e);
    assert_nothing_created(&h).await;
    assert!(h.control.list_volumes_len() == 0);
}

trait Count {
    fn list_volumes_len(&self) -> usize;
}

impl Count for mgmt_api::control::memory::MemoryControl {
    fn list_volumes_len(&self) -> usize {
        use mgmt_api::Control;
        self.list_volumes().unwrap().len()
    }
}

#[tokio::test]
async fn update_and_delete_reject_bad_bodies_without_change() {
    let h = Harness::start().await;
    let v = h.create_volume("keep", "1 gib").await;
    let uuid = v["UUID"].as_str().unwrap();
    for body in [
        r#"{"size": "abc"}"#,
        r#"{"replicaCount": 2}"#,
        r#"{"labels": "x"}"#,
        r#"{"UUID": "00000000-0000-0000-0000-000000000000"}"#,
        "nope",
    ] {
        let (s, e) = h
            .raw(
                Method::PUT,
                &format!("/api/v2/volumes/{uuid}"),
                body.as_bytes().to_vec(),
                &[],
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
    }
    let (_, after) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(after, {
        let (_, again) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
        again
    });
    assert_eq!(
        after["ETag"], v["ETag"],
        "a rejected update changed the volume"
    );
    let _: Value = after;
}
