//! System tests of the management REST API against the real keeld binary: real
//! HTTPS, the real engine on a pool file, the real NVMe/TCP target. Each test
//! starts its own keeld on loopback ports with a temporary data directory.

mod common;

use std::collections::HashSet;
use std::process::Command;
use std::sync::{Arc, Barrier};

use bytes::Bytes;
use common::{pattern, uuid_bytes, wait_until, Keeld, KeeldOptions, WAIT};
use nvmf_target::host::HostError;
use nvmf_target::{Lba, Status};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0000-4000-8000-00000000000a";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-0000-4000-8000-00000000000b";
const GIB: u64 = 1 << 30;
const BLOCK: u32 = 4096;

fn started() -> Keeld {
    let mut k = Keeld::start_default();
    k.login();
    k
}

/// Error bodies are `{"code": <gRPC code>, "message": "...", "details": []}`.
fn assert_error_body(what: &str, body: &Value) {
    assert!(
        body["code"].as_i64().is_some_and(|c| c > 0),
        "{what}: no code in {body}"
    );
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{what}: no message in {body}"
    );
}

fn volume_names(k: &Keeld, query: &str) -> Vec<String> {
    let a = k.get(&format!("/api/v2/volumes{query}"));
    assert_eq!(a.status, StatusCode::OK, "list {query}: {}", a.body);
    a.body["volumes"]
        .as_array()
        .expect("volumes array")
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_owned())
        .collect()
}

fn status_of(err: HostError) -> Status {
    err.status()
        .unwrap_or_else(|| panic!("expected an NVMe status, got {err:?}"))
}

#[test]
fn cluster_clusterinfo_and_nodes_describe_the_running_node() {
    let k = started();
    let cluster = k.get("/api/v2/cluster");
    assert_eq!(cluster.status, StatusCode::OK, "{}", cluster.body);
    let c = &cluster.body;
    assert!(uuid::Uuid::parse_str(c["UUID"].as_str().expect("UUID")).is_ok());
    assert_eq!(c["subsystemNQN"], k.subsystem_nqn.as_str());
    assert_eq!(c["maxReplicas"], 1);
    let api_port = k.api_url.rsplit(':').next().expect("port");
    assert!(
        c["apiEndpoints"]
            .as_array()
            .expect("apiEndpoints")
            .iter()
            .any(|e| e.as_str().is_some_and(|e| e.ends_with(api_port))),
        "apiEndpoints {} lack port {api_port}",
        c["apiEndpoints"]
    );
    assert_eq!(
        c["discoveryEndpoints"],
        json!([k.discovery_addr.to_string()])
    );
    let stats = &c["statistics"];
    for field in [
        "estimatedLogicalStorage",
        "estimatedFreeLogicalStorage",
        "provisionedToEffectiveStorageRatio",
    ] {
        assert!(
            stats[field].is_string(),
            "statistics.{field} missing: {stats}"
        );
    }
    let logical: u64 = stats["estimatedLogicalStorage"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("bytes");
    assert!(
        logical > 900 << 20 && logical <= GIB,
        "a 1 GiB pool estimates {logical} bytes"
    );

    let info = k.get("/api/v2/clusterinfo");
    assert_eq!(info.status, StatusCode::OK);
    assert_eq!(info.body["UUID"], c["UUID"]);
    assert_eq!(info.body["subsystemNQN"], k.subsystem_nqn.as_str());

    let nodes = k.get("/api/v2/nodes");
    assert_eq!(nodes.status, StatusCode::OK);
    let list = nodes.body["nodes"].as_array().expect("nodes");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["nvmeEndpoint"], k.nvme_addr.to_string());
    assert!(uuid::Uuid::parse_str(list[0]["UUID"].as_str().expect("node UUID")).is_ok());
    assert!(list[0]["name"].as_str().is_some_and(|n| !n.is_empty()));

    // The provisioned ratio follows a create.
    k.create_volume("ratio", 2 * GIB, &[]);
    let after = k.get("/api/v2/cluster").body;
    assert_eq!(
        after["statistics"]["provisionedStorage"],
        (2 * GIB).to_string()
    );
    assert_ne!(
        after["statistics"]["provisionedToEffectiveStorageRatio"],
        "0.00"
    );
}

#[test]
fn requests_without_a_valid_token_get_401_and_change_nothing() {
    let k = started();
    for (method, path, body) in [
        (Method::GET, "/api/v2/cluster", None),
        (Method::GET, "/api/v2/volumes", None),
        (
            Method::POST,
            "/api/v2/volumes",
            Some(json!({"name": "sneaky", "size": "1 gib"})),
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots",
            Some(json!({"name": "s"})),
        ),
    ] {
        for token in [
            None,
            Some("not.a.jwt"),
            Some("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9."),
        ] {
            let a = k.call_as(token, method.clone(), path, body.as_ref());
            assert_eq!(
                a.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {token:?}: {}",
                a.body
            );
            assert_error_body(path, &a.body);
        }
    }
    // A wrong password does not log in either.
    let resp = k
        .client()
        .post(format!("{}/login", k.api_url))
        .basic_auth("admin", Some("wrong-password"))
        .send()
        .expect("login request");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(volume_names(&k, "?showAll=true").is_empty());
}

#[test]
fn volume_lifecycle_over_both_route_styles_reaches_the_target() {
    let k = started();
    // Create as the seed writes it (project in the body) and project-scoped.
    let seed_style = json!({
        "name": "vol-seed", "size": "1073741824", "replicaCount": 1, "projectName": "default",
        "acl": {"values": [HOST_A]}, "sectorSize": 4096, "compression": "False",
        "labels": [{"key": "tier", "value": "gold"}],
    });
    let a = k.post("/api/v2/volumes", &seed_style);
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["size"], "1073741824");
    assert_eq!(a.body["labels"], json!([{"key": "tier", "value": "gold"}]));
    let v1 = a.body["UUID"].as_str().expect("UUID").to_owned();
    let scoped = json!({"name": "vol-scoped", "size": "1 gib", "replicaCount": "1", "acl": {"values": ["ALLOW_ANY"]}});
    let b = k.post("/api/v2/projects/default/volumes", &scoped);
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    let v2 = b.body["UUID"].as_str().expect("UUID").to_owned();
    let first = k.wait_volume_state(&v1, "Available");
    let second = k.wait_volume_state(&v2, "Available");
    let nsid1 = first["nsid"].as_u64().expect("nsid") as u32;
    let nsid2 = second["nsid"].as_u64().expect("nsid") as u32;
    assert!(
        nsid1 >= 1 && nsid2 >= 1 && nsid1 != nsid2,
        "nsids {nsid1} {nsid2}"
    );

    // Get by UUID (both styles), by name (trailing slash, both styles), list.
    for path in [
        format!("/api/v2/volumes/{v1}"),
        format!("/api/v2/volumes/{v1}?projectName=default"),
        format!("/api/v2/projects/default/volumes/{v1}"),
        "/api/v2/volumes/?name=vol-seed&projectName=default".to_owned(),
        "/api/v2/volumes/?name=vol-seed".to_owned(),
        "/api/v2/projects/default/volumes/?name=vol-seed".to_owned(),
    ] {
        let got = k.get(&path);
        assert_eq!(got.status, StatusCode::OK, "{path}: {}", got.body);
        assert_eq!(got.body["UUID"], v1.as_str(), "{path}");
        assert_eq!(got.body["nsid"], nsid1, "{path}");
    }
    assert_eq!(
        k.get("/api/v2/volumes/?name=no-such-volume").status,
        StatusCode::NOT_FOUND
    );
    let missing = k.get(&format!("/api/v2/volumes/{}", uuid::Uuid::new_v4()));
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_error_body("missing volume", &missing.body);
    let mut names = volume_names(&k, "");
    names.sort();
    assert_eq!(names, ["vol-scoped", "vol-seed"]);
    assert_eq!(
        k.get("/api/v2/projects/default/volumes").body["volumes"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );

    // The namespace is on the target with NGUID == REST UUID, for host A only.
    let mut host_a = k.connect(HOST_A);
    let active = host_a.active_namespaces().expect("active namespaces");
    assert!(
        active.contains(&nsid1) && active.contains(&nsid2),
        "A sees {active:?}"
    );
    let ns = host_a.identify_namespace(nsid1).expect("identify");
    assert_eq!(ns.nguid, uuid_bytes(&v1));
    assert_eq!(ns.size_blocks, GIB / u64::from(BLOCK));
    let mut host_b = k.connect(HOST_B);
    assert_eq!(
        host_b.active_namespaces().expect("active"),
        vec![nsid2],
        "B is not in vol-seed's ACL"
    );

    // Grow with If-Match: the namespace grows as the host sees it.
    let etag = first["ETag"].as_str().expect("ETag").to_owned();
    let grown = k.call_raw(
        Method::PUT,
        &format!("/api/v2/volumes/{v1}"),
        serde_json::to_vec(&json!({"size": "2 gib"})).expect("json"),
        &[("If-Match", &etag), ("Content-Type", "application/json")],
    );
    assert_eq!(grown.status, StatusCode::OK, "{}", grown.body);
    let grown = k.wait_volume_state(&v1, "Available");
    assert_eq!(grown["size"], (2 * GIB).to_string());
    assert_ne!(grown["ETag"], etag.as_str());
    let ok = wait_until(WAIT, || {
        host_a
            .identify_namespace(nsid1)
            .is_ok_and(|ns| ns.size_blocks == 2 * GIB / u64::from(BLOCK))
    });
    assert!(ok, "the host never saw the namespace grow to 2 GiB");
    host_a.set_queue_count(1).expect("queues");
    let mut io = host_a.connect_io_queue(1).expect("io queue");
    let last_lba = 2 * GIB / u64::from(BLOCK) - 1;
    io.write(nsid1, Lba(last_lba), pattern(4096, 7), BLOCK)
        .expect("write in the grown range");
    assert_eq!(
        io.read(nsid1, Lba(last_lba), 1, BLOCK).expect("read"),
        pattern(4096, 7).to_vec()
    );

    // Stale ETag, by header and by body field: 412, nothing changes.
    let stale = k.call_raw(
        Method::PUT,
        &format!("/api/v2/volumes/{v1}"),
        br#"{"size": "4 gib"}"#.to_vec(),
        &[("If-Match", &etag), ("Content-Type", "application/json")],
    );
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    assert_error_body("stale If-Match", &stale.body);
    let stale = k.put(
        &format!("/api/v2/volumes/{v1}"),
        &json!({"ETag": etag, "size": "4 gib"}),
    );
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{}",
        stale.body
    );
    let stale_delete = k.call_raw(
        Method::DELETE,
        &format!("/api/v2/volumes/{v1}"),
        Vec::new(),
        &[("If-Match", &etag)],
    );
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(
        k.get(&format!("/api/v2/volumes/{v1}")).body["size"],
        (2 * GIB).to_string()
    );
    // Shrinking is refused.
    let shrink = k.put(&format!("/api/v2/volumes/{v1}"), &json!({"size": "1 gib"}));
    assert_eq!(shrink.status, StatusCode::BAD_REQUEST, "{}", shrink.body);
    assert_error_body("shrink", &shrink.body);

    // ACL update (project-scoped route): B gains the namespace, A loses it.
    let acl = k.put(
        &format!("/api/v2/projects/default/volumes/{v1}"),
        &json!({"acl": {"values": [HOST_B]}}),
    );
    assert_eq!(acl.status, StatusCode::OK, "{}", acl.body);
    assert_eq!(
        k.wait_volume_state(&v1, "Available")["acl"],
        json!({"values": [HOST_B]})
    );
    let ok = wait_until(WAIT, || {
        host_b.active_namespaces().is_ok_and(|l| l.contains(&nsid1))
    });
    assert!(ok, "B never gained vol-seed");
    let ok = wait_until(WAIT, || {
        host_a
            .active_namespaces()
            .is_ok_and(|l| !l.contains(&nsid1))
    });
    assert!(ok, "A never lost vol-seed");
    assert_eq!(
        status_of(io.read(nsid1, Lba(0), 1, BLOCK).unwrap_err()),
        Status::InvalidNamespace
    );

    // Delete: Deleting until done, then 404; the namespace leaves the target.
    let del = k.delete(&format!("/api/v2/volumes/{v1}?projectName=default"));
    assert_eq!(del.status, StatusCode::OK, "{}", del.body);
    assert_eq!(del.body, json!({}));
    let during = k.get(&format!("/api/v2/volumes/{v1}"));
    assert!(
        during.status == StatusCode::NOT_FOUND || during.body["state"] == "Deleting",
        "after DELETE the volume is Deleting or gone, not {} {}",
        during.status,
        during.body
    );
    k.wait_volume_gone(&v1);
    let again = k.delete(&format!("/api/v2/volumes/{v1}"));
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    let ok = wait_until(WAIT, || {
        host_b
            .active_namespaces()
            .is_ok_and(|l| !l.contains(&nsid1))
    });
    assert!(ok, "the deleted volume's namespace stayed on the target");
    assert_eq!(volume_names(&k, "?showAll=true"), ["vol-scoped"]);
    // The project-scoped delete works too.
    let del = k.delete(&format!("/api/v2/projects/default/volumes/{v2}"));
    assert_eq!(del.status, StatusCode::OK, "{}", del.body);
    k.wait_volume_gone(&v2);
    assert!(volume_names(&k, "?showAll=true").is_empty());
}

#[test]
fn list_pages_with_offset_uuid_and_limit() {
    let k = started();
    let mut created = Vec::new();
    for i in 0..7 {
        let v = k.create_volume(&format!("page-{i}"), 64 << 20, &[]);
        created.push(v["UUID"].as_str().expect("UUID").to_owned());
    }
    created.sort();
    let mut seen = Vec::new();
    let mut offset: Option<String> = None;
    for _ in 0..10 {
        let path = match &offset {
            Some(o) => format!("/api/v2/volumes?limit=3&offsetUUID={o}"),
            None => "/api/v2/volumes?limit=3".to_owned(),
        };
        let a = k.get(&path);
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        let page: Vec<String> = a.body["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .map(|v| v["UUID"].as_str().expect("UUID").to_owned())
            .collect();
        assert!(page.len() <= 3, "{path} returned {} volumes", page.len());
        if page.is_empty() {
            break;
        }
        offset = page.last().cloned();
        seen.extend(page);
    }
    assert_eq!(
        seen, created,
        "pages cover every volume once, in UUID order"
    );
    // Filters: by UUID and by name.
    let by_uuid = k.get(&format!("/api/v2/volumes?UUID={}", created[3])).body;
    assert_eq!(by_uuid["volumes"].as_array().map(Vec::len), Some(1));
    assert_eq!(volume_names(&k, "?name=page-5"), ["page-5"]);
    for bad in ["limit=abc", "limit=-1", "offsetUUID=zzz", "UUID=../etc"] {
        let a = k.get(&format!("/api/v2/volumes?{bad}"));
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{bad}: {}", a.body);
        assert_error_body(bad, &a.body);
    }
}

#[test]
fn duplicates_conflict_and_concurrent_creates_of_one_name_have_one_winner() {
    let k = started();
    k.create_volume("taken", 64 << 20, &[]);
    let dup = k.post(
        "/api/v2/volumes",
        &json!({"name": "taken", "size": "1 gib"}),
    );
    assert_eq!(dup.status, StatusCode::CONFLICT, "{}", dup.body);
    assert_error_body("duplicate", &dup.body);

    const RACERS: usize = 8;
    let barrier = Arc::new(Barrier::new(RACERS));
    let url = format!("{}/api/v2/volumes", k.api_url);
    let token = k.token().expect("token").to_owned();
    let results: Vec<(StatusCode, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..RACERS)
            .map(|i| {
                let barrier = barrier.clone();
                let (url, token, client) = (url.clone(), token.clone(), k.client().clone());
                scope.spawn(move || {
                    let body = json!({"name": "race", "size": format!("{} mib", 64 + i)});
                    barrier.wait();
                    let resp = client
                        .post(url)
                        .bearer_auth(token)
                        .json(&body)
                        .send()
                        .expect("create");
                    let status = resp.status();
                    (status, resp.json::<Value>().unwrap_or(Value::Null))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("racer"))
            .collect()
    });
    let winners: Vec<&Value> = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::OK)
        .map(|(_, b)| b)
        .collect();
    let losers = results
        .iter()
        .filter(|(s, _)| *s == StatusCode::CONFLICT)
        .count();
    assert_eq!(winners.len(), 1, "exactly one create wins: {results:?}");
    assert_eq!(losers, RACERS - 1, "every other create is 409: {results:?}");
    let winner_uuid = winners[0]["UUID"].as_str().expect("UUID").to_owned();
    let listed = k.get("/api/v2/volumes?name=race&showAll=true").body;
    let listed = listed["volumes"].as_array().expect("volumes");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["UUID"], winner_uuid.as_str());
    k.wait_volume_state(&winner_uuid, "Available");
    // The engine holds exactly the two volumes the catalog shows: the losers left
    // nothing behind on the target either.
    let mut host = k.connect(HOST_A);
    let cluster = k.get("/api/v2/cluster").body;
    assert_eq!(cluster["numVolumes"], 2, "{cluster}");
    let race = k.get(&format!("/api/v2/volumes/{winner_uuid}")).body;
    let nsid = race["nsid"].as_u64().expect("nsid") as u32;
    // Neither volume allows host A; identify still answers (inactive = zeroes).
    assert!(host.active_namespaces().expect("active").is_empty());
    assert_eq!(
        host.identify_namespace(nsid).expect("identify").size_blocks,
        0
    );
}

#[test]
fn bad_json_and_hostile_names_get_400_and_change_nothing() {
    let k = started();
    let json_ct = [("Content-Type", "application/json")];
    let bodies: [(&[u8], &str); 10] = [
        (b"{not json", "malformed"),
        (b"", "empty"),
        (b"[]", "array"),
        (br#"{"name": 5, "size": "1 gib"}"#, "name type"),
        (br#"{"name": "v", "size": [1]}"#, "size type"),
        (br#"{"name": "v", "size": "0"}"#, "zero size"),
        (
            br#"{"name": "v", "size": "1 gib", "bogus": 1}"#,
            "unknown field",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "sectorSize": 1024}"#,
            "sector size",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "replicaCount": 2}"#,
            "more replicas than one node places",
        ),
        (
            br#"{"name": "v", "size": "1 gib", "acl": {"values": ["not-an-nqn"]}}"#,
            "acl value",
        ),
    ];
    for (body, what) in bodies {
        let a = k.call_raw(Method::POST, "/api/v2/volumes", body.to_vec(), &json_ct);
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{what}: {}", a.body);
        assert_error_body(what, &a.body);
    }
    let long = "a".repeat(10 * 1024);
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
        let a = k.post("/api/v2/volumes", &json!({"name": name, "size": "1 gib"}));
        let shown: String = name.chars().take(16).collect();
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "name {shown:?}: {}",
            a.body
        );
        assert_error_body(&shown, &a.body);
    }
    for path in [
        "/api/v2/projects/..%2F..%2Fetc/volumes",
        "/api/v2/volumes?projectName=a%2Fb",
        "/api/v2/volumes/not-a-uuid",
    ] {
        let a = k.get(path);
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{path}: {}", a.body);
    }
    // An update with a bad body changes nothing.
    let v = k.create_volume("kept", 64 << 20, &[HOST_A]);
    let uuid = v["UUID"].as_str().expect("UUID");
    for body in [
        &b"{"[..],
        br#"{"size": "huge"}"#,
        br#"{"acl": {"values": ["ALLOW_ANY", "nqn.x"]}}"#,
        br#"{"nope": 1}"#,
    ] {
        let a = k.call_raw(
            Method::PUT,
            &format!("/api/v2/volumes/{uuid}"),
            body.to_vec(),
            &json_ct,
        );
        assert_eq!(
            a.status,
            StatusCode::BAD_REQUEST,
            "{}: {}",
            String::from_utf8_lossy(body),
            a.body
        );
    }
    let after = k.get(&format!("/api/v2/volumes/{uuid}")).body;
    assert_eq!(
        (&after["size"], &after["acl"], &after["ETag"]),
        (&v["size"], &v["acl"], &v["ETag"])
    );
    assert_eq!(volume_names(&k, "?showAll=true"), ["kept"]);
}

#[test]
fn snapshot_clone_and_rollback_show_the_right_data_over_nvme_at_every_step() {
    let k = started();
    let v = k.create_volume("src", 64 << 20, &[HOST_A]);
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let nsid = v["nsid"].as_u64().expect("nsid") as u32;
    let mut host = k.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    let (a, b, c) = (
        pattern(4 * 4096, 1),
        pattern(4 * 4096, 2),
        pattern(4 * 4096, 3),
    );
    io.write(nsid, Lba(3), a.clone(), BLOCK).expect("write A");
    let read = |io: &mut nvmf_target::host::IoQueue, nsid: u32| {
        io.read(nsid, Lba(3), 4, BLOCK).expect("read")
    };

    // Snapshot: 200, Available at once, listed with its source.
    let snap = k.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "snap-1", "sourceVolumeUUID": uuid, "description": "before B"}),
    );
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.body);
    assert_eq!(snap.body["state"], "Available", "{}", snap.body);
    let snap_uuid = snap.body["UUID"]
        .as_str()
        .expect("snapshot UUID")
        .to_owned();
    let listed = k.get("/api/v2/projects/default/snapshots");
    assert_eq!(
        listed.body["snapshots"][0]["sourceVolumeUUID"],
        uuid.as_str(),
        "{}",
        listed.body
    );
    let by_name = k.get("/api/v2/snapshots/?Name=snap-1&projectName=default");
    assert_eq!(by_name.status, StatusCode::OK, "{}", by_name.body);
    assert_eq!(by_name.body["UUID"], snap_uuid.as_str());

    // The volume moves on; the snapshot keeps A.
    io.write(nsid, Lba(3), b.clone(), BLOCK).expect("write B");
    assert_eq!(read(&mut io, nsid), b.to_vec());

    // A thin clone of the snapshot sees A and diverges on its own.
    let clone = k.post(
        "/api/v2/volumes",
        &json!({"name": "clone", "sourceSnapshotUUID": snap_uuid, "acl": {"values": [HOST_A]}}),
    );
    assert_eq!(clone.status, StatusCode::OK, "{}", clone.body);
    let clone_uuid = clone.body["UUID"].as_str().expect("clone UUID").to_owned();
    let clone_view = k.wait_volume_state(&clone_uuid, "Available");
    assert_eq!(
        clone_view["size"], v["size"],
        "a clone takes its snapshot's size by default"
    );
    let clone_nsid = clone_view["nsid"].as_u64().expect("clone nsid") as u32;
    assert!(
        wait_until(WAIT, || io.read(clone_nsid, Lba(3), 4, BLOCK).is_ok()),
        "the clone's namespace never became readable"
    );
    assert_eq!(
        read(&mut io, clone_nsid),
        a.to_vec(),
        "the clone starts as the snapshot"
    );
    io.write(clone_nsid, Lba(3), c.clone(), BLOCK)
        .expect("write C to the clone");
    assert_eq!(read(&mut io, clone_nsid), c.to_vec());
    assert_eq!(
        read(&mut io, nsid),
        b.to_vec(),
        "writing the clone leaves the source alone"
    );

    // Rollback: the source reads A again; the clone keeps C.
    let rollback = k.put(
        &format!("/api/v2/projects/default/volumes/{uuid}/rollback"),
        &json!({"srcSnapshotUUID": snap_uuid}),
    );
    assert_eq!(rollback.status, StatusCode::OK, "{}", rollback.body);
    assert_eq!(
        read(&mut io, nsid),
        a.to_vec(),
        "rolled back to the snapshot"
    );
    assert_eq!(read(&mut io, clone_nsid), c.to_vec());

    // A rollback to a snapshot of another volume is refused and changes nothing.
    let other = k.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "snap-of-clone", "sourceVolumeUUID": clone_uuid}),
    );
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let refused = k.put(
        &format!("/api/v2/projects/default/volumes/{uuid}/rollback"),
        &json!({"srcSnapshotUUID": other.body["UUID"]}),
    );
    assert_eq!(refused.status, StatusCode::BAD_REQUEST, "{}", refused.body);
    assert_error_body("foreign rollback", &refused.body);
    assert_eq!(read(&mut io, nsid), a.to_vec());

    // Deleting the snapshot keeps its clone whole (clones do not depend on it).
    let deleted = k.delete(&format!("/api/v2/projects/default/snapshots/{snap_uuid}"));
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert!(
        wait_until(WAIT, || k
            .get(&format!("/api/v2/projects/default/snapshots/{snap_uuid}"))
            .status
            == StatusCode::NOT_FOUND),
        "the snapshot was never deleted"
    );
    assert_eq!(read(&mut io, clone_nsid), c.to_vec());
    assert_eq!(read(&mut io, nsid), a.to_vec());

    // Everything survives a restart.
    drop(io);
    drop(host);
    let mut k = k;
    k.restart();
    let mut host = k.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    assert_eq!(read(&mut io, nsid), a.to_vec());
    assert_eq!(read(&mut io, clone_nsid), c.to_vec());
    let listed = k.get("/api/v2/projects/default/snapshots");
    assert_eq!(
        listed.body["snapshots"].as_array().map(Vec::len),
        Some(1),
        "{}",
        listed.body
    );
}

#[test]
fn compressed_volumes_serve_data_and_report_their_savings() {
    let k = started();
    let v = k.create_volume("src", 64 << 20, &[HOST_A]);
    let uuid = v["UUID"].as_str().expect("UUID");
    let a = k.post(
        "/api/v2/volumes",
        &json!({"name": "squeezed", "size": "64 mib", "compression": "True", "acl": {"values": [HOST_A]}}),
    );
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let squeezed = a.body["UUID"].as_str().expect("UUID").to_owned();
    let view = k.wait_volume_state(&squeezed, "Available");
    assert_eq!(view["compression"], "true", "{view}");
    let nsid = view["nsid"].as_u64().expect("nsid") as u32;
    // Text compresses; the host reads back exactly what it wrote.
    let text: Vec<Bytes> = (0..64u64)
        .map(|i| {
            Bytes::from(
                format!("block {i:>6} of a very compressible text; ")
                    .bytes()
                    .cycle()
                    .take(4096)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect();
    let mut host = k.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    // One 256 KiB write, as a file system sends it: units of 32 KiB compress.
    let all: Vec<u8> = text.iter().flat_map(|b| b.to_vec()).collect();
    io.write(nsid, Lba(0), Bytes::from(all), BLOCK)
        .expect("write");
    for (i, block) in text.iter().enumerate() {
        assert_eq!(
            io.read(nsid, Lba(i as u64), 1, BLOCK).expect("read"),
            block.to_vec()
        );
    }
    let view = k.get(&format!("/api/v2/volumes/{squeezed}")).body;
    let logical: u64 = view["statistics"]["logicalUsedStorage"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("logical");
    let physical: u64 = view["statistics"]["physicalUsedStorage"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("physical");
    assert_eq!(logical, 64 * 4096, "{view}");
    assert!(
        physical * 2 < logical,
        "compression halves the text at least: {view}"
    );
    // Compression can be switched on and off on a live volume.
    let a = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"compression": true}),
    );
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let after = k.wait_volume_state(uuid, "Available");
    assert_eq!(after["compression"], "true");
    assert_eq!(after["size"], v["size"]);

    // Unknown clone and rollback sources are 404 and create nothing.
    let ghost = uuid::Uuid::new_v4().to_string();
    let clone = k.post(
        "/api/v2/volumes",
        &json!({"name": "clone", "sourceSnapshotUUID": ghost}),
    );
    assert_eq!(clone.status, StatusCode::NOT_FOUND, "{}", clone.body);
    let rollback = k.put(
        &format!("/api/v2/projects/default/volumes/{uuid}/rollback"),
        &json!({"srcSnapshotUUID": ghost}),
    );
    assert_eq!(rollback.status, StatusCode::NOT_FOUND, "{}", rollback.body);
    // Lists come in UUID order: compare the set of names.
    let mut names = volume_names(&k, "?showAll=true");
    names.sort_unstable();
    assert_eq!(names, ["squeezed", "src"]);
}

/// The current view of a workflow (`GET /api/v1/workflows/{id}`).
fn workflow(k: &Keeld, id: &str) -> Value {
    k.get(&format!("/api/v1/workflows/{id}")).body["workflow"].clone()
}

/// A volume with `blocks` written blocks and a snapshot of it.
fn volume_with_snapshot(k: &Keeld, blocks: u64) -> (String, u32, String, Vec<Bytes>) {
    let v = k.create_volume("src", 64 << 20, &[HOST_A]);
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let nsid = v["nsid"].as_u64().expect("nsid") as u32;
    let data = write_blocks(k, HOST_A, nsid, 0, blocks, 40, true);
    let snap = k.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "golden", "sourceVolumeUUID": uuid}),
    );
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.body);
    let snap_uuid = snap.body["UUID"].as_str().expect("UUID").to_owned();
    (uuid, nsid, snap_uuid, data)
}

#[test]
fn the_log_file_is_plain_text_without_terminal_colours() {
    let k = started();
    k.create_volume("logged", 64 << 20, &[HOST_A]);
    let log = k.log_tail();
    assert!(k.logged("keeld starting"), "{log}");
    assert!(
        !log.contains('\u{1b}'),
        "escape sequences in a log that is not a terminal:\n{log}"
    );
}

#[test]
fn a_clone_made_by_snapshot_name_as_the_cinder_driver_asks_serves_the_snapshot() {
    let k = started();
    let (source, _nsid, snap, data) = volume_with_snapshot(&k, 16);
    // The body the OpenStack Cinder LightOS driver sends: every field, the
    // unused source as null.
    let by_name = k.post(
        "/api/v2/projects/default/volumes",
        &json!({"name": "from-name", "size": "64 mib", "replicaCount": 1,
                "compression": "False", "acl": {"values": [HOST_A]},
                "sourceSnapshotUUID": null, "sourceSnapshotName": "golden"}),
    );
    assert_eq!(by_name.status, StatusCode::OK, "{}", by_name.body);
    let clone_uuid = by_name.body["UUID"].as_str().expect("UUID").to_owned();
    let view = k.wait_volume_state(&clone_uuid, "Available");
    assert_eq!(
        volume_names(&k, &format!("?snapshotUUID={snap}")),
        ["from-name"],
        "the clone is listed as the named snapshot's"
    );
    let clone_nsid = view["nsid"].as_u64().expect("nsid") as u32;
    assert_blocks(&k, HOST_A, clone_nsid, 0, &data);

    // A plain volume with both sources null, as the driver sends it too.
    let plain = k.post(
        "/api/v2/projects/default/volumes",
        &json!({"name": "plain", "size": "64 mib", "replicaCount": 1,
                "acl": {"values": [HOST_A]},
                "sourceSnapshotUUID": null, "sourceSnapshotName": null}),
    );
    assert_eq!(plain.status, StatusCode::OK, "{}", plain.body);
    k.wait_volume_state(plain.body["UUID"].as_str().expect("UUID"), "Available");

    // An unknown name is 404; a name and a UUID of different snapshots 400.
    let unknown = k.post(
        "/api/v2/projects/default/volumes",
        &json!({"name": "ghost", "sourceSnapshotName": "no-such-snapshot"}),
    );
    assert_eq!(unknown.status, StatusCode::NOT_FOUND, "{}", unknown.body);
    let other = k.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "other", "sourceVolumeUUID": source}),
    );
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let mismatch = k.post(
        "/api/v2/projects/default/volumes",
        &json!({"name": "mismatch", "sourceSnapshotUUID": other.body["UUID"],
                "sourceSnapshotName": "golden"}),
    );
    assert_eq!(
        mismatch.status,
        StatusCode::BAD_REQUEST,
        "{}",
        mismatch.body
    );
    let names = volume_names(&k, "?showAll=true");
    assert!(
        !names.iter().any(|n| n == "ghost" || n == "mismatch"),
        "{names:?}"
    );
}

#[test]
fn a_thick_clone_workflow_completes_verified_and_the_copy_serves_the_data() {
    let k = started();
    let (_uuid, nsid, snap, data) = volume_with_snapshot(&k, 64);
    let started = k.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap}, "dst": {"name": "thick", "verifyClone": true}}),
    );
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let id = started.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    let done = k.wait_workflow(&id);
    assert_eq!(done["state"], "Completed", "{done}");
    assert_eq!(done["progress"]["percent"], 100, "{done}");
    let thick = k.get("/api/v2/volumes/?name=thick&projectName=default");
    assert_eq!(thick.status, StatusCode::OK, "{}", thick.body);
    let thick_uuid = thick.body["UUID"].as_str().expect("UUID").to_owned();
    k.wait_volume_state(&thick_uuid, "Available");
    let acl = k.put(
        &format!("/api/v2/volumes/{thick_uuid}"),
        &json!({"acl": {"values": [HOST_A]}}),
    );
    assert_eq!(acl.status, StatusCode::OK, "{}", acl.body);
    let view = k.wait_volume_state(&thick_uuid, "Available");
    let thick_nsid = view["nsid"].as_u64().expect("nsid") as u32;
    assert_ne!(thick_nsid, nsid);
    assert_blocks(&k, HOST_A, thick_nsid, 0, &data);
    // Independent of its source: the source's snapshot can go, the copy stays.
    let deleted = k.delete(&format!("/api/v2/projects/default/snapshots/{snap}"));
    assert!(deleted.status.is_success(), "{}", deleted.body);
    assert_blocks(&k, HOST_A, thick_nsid, 0, &data);
}

#[test]
fn kill9_during_a_thick_clone_fails_the_workflow_and_leaves_no_half_built_volume() {
    let mut k = Keeld::start(KeeldOptions {
        thick_clone_mib_per_s: Some(1),
        ..KeeldOptions::default()
    });
    k.login();
    // 8 MiB at 1 MiB/s: the copy is surely running when keeld dies.
    let (uuid, nsid, snap, data) = volume_with_snapshot(&k, 2048);
    let started = k.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap}, "dst": {"name": "thick"}}),
    );
    assert_eq!(started.status, StatusCode::OK, "{}", started.body);
    let id = started.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    let mut last = Value::Null;
    assert!(
        wait_until(WAIT, || {
            last = workflow(&k, &id);
            last["progress"]["percent"].as_u64().is_some_and(|p| p > 0)
        }),
        "the copy never made progress: {last}"
    );
    k.kill9();
    k.restart();
    let after = k.wait_workflow(&id);
    assert_eq!(after["state"], "Failed", "{after}");
    assert_eq!(after["progress"]["stage"], "Failed", "{after}");
    assert_eq!(
        k.get("/api/v2/volumes/?name=thick&projectName=default")
            .status,
        StatusCode::NOT_FOUND,
        "the half-built destination is removed"
    );
    assert_eq!(volume_names(&k, "?showAll=true"), ["src"]);
    k.wait_volume_state(&uuid, "Available");
    assert_blocks(&k, HOST_A, nsid, 0, &data);
    // The snapshot still works as a source.
    let again = k.post(
        "/api/v2/volumes",
        &json!({"name": "thin", "sourceSnapshotUUID": snap, "acl": {"values": [HOST_A]}}),
    );
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
}

fn write_blocks(
    k: &Keeld,
    host: &str,
    nsid: u32,
    first_lba: u64,
    blocks: u64,
    seed: u64,
    flush: bool,
) -> Vec<Bytes> {
    let mut c = k.connect(host);
    c.set_queue_count(1).expect("queues");
    let mut io = c.connect_io_queue(1).expect("io queue");
    let data: Vec<Bytes> = (0..blocks).map(|i| pattern(4096, seed + i)).collect();
    for (i, block) in data.iter().enumerate() {
        io.write(nsid, Lba(first_lba + i as u64), block.clone(), BLOCK)
            .expect("write");
    }
    if flush {
        io.flush(nsid).expect("flush");
    }
    data
}

fn assert_blocks(k: &Keeld, host: &str, nsid: u32, first_lba: u64, expected: &[Bytes]) {
    let mut c = k.connect(host);
    assert!(
        c.active_namespaces().expect("active").contains(&nsid),
        "{host} lost nsid {nsid}"
    );
    c.set_queue_count(1).expect("queues");
    let mut io = c.connect_io_queue(1).expect("io queue");
    for (i, block) in expected.iter().enumerate() {
        let lba = first_lba + i as u64;
        let got = io.read(nsid, Lba(lba), 1, BLOCK).expect("read");
        assert!(
            got == block.to_vec(),
            "nsid {nsid} LBA {lba} lost its acknowledged data"
        );
    }
}

#[test]
fn sigterm_restart_keeps_volumes_their_data_nsids_and_tokens() {
    let mut k = started();
    let a = k.create_volume("keep-a", GIB, &[HOST_A]);
    let b = k.create_volume("keep-b", 128 << 20, &["ALLOW_ANY"]);
    let upd = k.put(
        &format!("/api/v2/volumes/{}", b["UUID"].as_str().expect("UUID")),
        &json!({"labels": [{"key": "k", "value": "v"}]}),
    );
    assert_eq!(upd.status, StatusCode::OK, "{}", upd.body);
    let before: Vec<Value> = ["keep-a", "keep-b"]
        .iter()
        .map(|n| k.get(&format!("/api/v2/volumes/?name={n}")).body)
        .collect();
    let nsid_a = a["nsid"].as_u64().expect("nsid") as u32;
    let nsid_b = b["nsid"].as_u64().expect("nsid") as u32;
    let data_a = write_blocks(&k, HOST_A, nsid_a, 100, 16, 1, true);
    let data_b = write_blocks(&k, HOST_B, nsid_b, 0, 8, 50, true);
    let cluster_uuid = k.get("/api/v2/cluster").body["UUID"].clone();
    let nqn = k.subsystem_nqn.clone();

    let status = k.terminate();
    assert!(
        status.success(),
        "keeld exited with {status} on SIGTERM\n{}",
        k.log_tail()
    );
    assert!(
        k.logged("pool closed cleanly"),
        "no clean close logged\n{}",
        k.log_tail()
    );
    k.restart();

    // The old token still works (token keys persist); identity is stable.
    assert_eq!(k.get("/api/v2/cluster").body["UUID"], cluster_uuid);
    assert_eq!(k.subsystem_nqn, nqn);
    for old in &before {
        let now = k.wait_volume_state(old["UUID"].as_str().expect("UUID"), "Available");
        for field in [
            "UUID",
            "name",
            "nsid",
            "size",
            "acl",
            "labels",
            "ETag",
            "creationTime",
        ] {
            assert_eq!(
                now[field], old[field],
                "{field} of {} changed across a restart",
                old["name"]
            );
        }
    }
    // Data and ACLs are back on the target.
    assert_blocks(&k, HOST_A, nsid_a, 100, &data_a);
    assert_blocks(&k, HOST_B, nsid_b, 0, &data_b);
    let mut b_host = k.connect(HOST_B);
    assert_eq!(
        b_host.active_namespaces().expect("active"),
        vec![nsid_b],
        "B must still not see keep-a"
    );
    let ns = b_host.identify_namespace(nsid_b).expect("identify");
    assert_eq!(ns.nguid, uuid_bytes(b["UUID"].as_str().expect("UUID")));
    // New volumes get fresh nsids, never a used one.
    let c = k.create_volume("after-restart", 64 << 20, &[]);
    let nsid_c = c["nsid"].as_u64().expect("nsid") as u32;
    assert!(![nsid_a, nsid_b].contains(&nsid_c), "nsid {nsid_c} reused");
}

#[test]
fn kill9_after_writes_and_during_or_after_deletes_loses_nothing_acknowledged() {
    let mut k = started();
    let kept = k.create_volume("kept", 256 << 20, &[HOST_A]);
    let doomed = k.create_volume("doomed", 256 << 20, &[HOST_A]);
    let gone = k.create_volume("gone", 64 << 20, &[HOST_A]);
    let nsid = |v: &Value| v["nsid"].as_u64().expect("nsid") as u32;
    let uuid = |v: &Value| v["UUID"].as_str().expect("UUID").to_owned();
    // Writes acknowledged without a flush survive process death (the namespace
    // reports a volatile write cache only for power loss); flushed ones too.
    let flushed = write_blocks(&k, HOST_A, nsid(&kept), 0, 32, 10, true);
    let unflushed = write_blocks(&k, HOST_A, nsid(&kept), 1000, 32, 90, false);
    write_blocks(&k, HOST_A, nsid(&doomed), 0, 64, 300, false);

    // A grow acknowledged before the kill stays grown, in the catalog and on the target.
    let grow = k.put(
        &format!("/api/v2/volumes/{}", uuid(&kept)),
        &json!({"size": "512 mib"}),
    );
    assert_eq!(grow.status, StatusCode::OK, "{}", grow.body);
    let past_old_end = write_blocks(
        &k,
        HOST_A,
        nsid(&kept),
        (256 << 20) / u64::from(BLOCK),
        4,
        700,
        false,
    );

    // "gone" finishes deleting before the kill; "doomed" is killed mid-delete.
    assert_eq!(
        k.delete(&format!("/api/v2/volumes/{}", uuid(&gone))).status,
        StatusCode::OK
    );
    k.wait_volume_gone(&uuid(&gone));
    let del = k.delete(&format!("/api/v2/volumes/{}", uuid(&doomed)));
    assert_eq!(del.status, StatusCode::OK, "{}", del.body);
    k.kill9();
    k.restart();

    let ok = wait_until(WAIT, || {
        k.get(&format!("/api/v2/volumes/{}", uuid(&doomed))).status == StatusCode::NOT_FOUND
    });
    assert!(
        ok,
        "a delete acknowledged before kill -9 must finish after restart: {}",
        k.get(&format!("/api/v2/volumes/{}", uuid(&doomed))).body
    );
    assert_eq!(
        k.get(&format!("/api/v2/volumes/{}", uuid(&gone))).status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(volume_names(&k, "?showAll=true"), ["kept"]);
    let now = k.wait_volume_state(&uuid(&kept), "Available");
    assert_eq!(now["nsid"], kept["nsid"]);
    assert_blocks(&k, HOST_A, nsid(&kept), 0, &flushed);
    assert_blocks(&k, HOST_A, nsid(&kept), 1000, &unflushed);
    assert_blocks(
        &k,
        HOST_A,
        nsid(&kept),
        (256 << 20) / u64::from(BLOCK),
        &past_old_end,
    );
    assert_eq!(now["size"], (512u64 << 20).to_string());
    let mut host = k.connect(HOST_A);
    assert_eq!(
        host.identify_namespace(nsid(&kept))
            .expect("identify")
            .size_blocks,
        (512 << 20) / u64::from(BLOCK)
    );
    assert_eq!(
        host.active_namespaces().expect("active"),
        vec![nsid(&kept)],
        "deleted namespaces stay deleted"
    );
    let cluster = k.get("/api/v2/cluster").body;
    assert_eq!(
        cluster["statistics"]["provisionedStorage"],
        (512u64 << 20).to_string(),
        "{cluster}"
    );

    // A second kill right after a restart (nothing new written) changes nothing.
    k.kill9();
    k.restart();
    assert_eq!(volume_names(&k, "?showAll=true"), ["kept"]);
    assert_blocks(&k, HOST_A, nsid(&kept), 1000, &unflushed);
}

#[test]
fn kill9_while_a_delete_request_is_in_flight_never_resurrects_half_a_volume() {
    let mut k = started();
    let victim = k.create_volume("victim", 128 << 20, &[HOST_A]);
    let uuid = victim["UUID"].as_str().expect("UUID").to_owned();
    let nsid = victim["nsid"].as_u64().expect("nsid") as u32;
    write_blocks(&k, HOST_A, nsid, 0, 16, 7, false);
    let url = format!("{}/api/v2/volumes/{uuid}", k.api_url);
    let (client, token) = (k.client().clone(), k.token().expect("token").to_owned());
    // The DELETE races the kill: whichever wins, the outcome must be whole.
    let sender = std::thread::spawn(move || {
        client
            .delete(url)
            .bearer_auth(token)
            .send()
            .map(|r| r.status())
    });
    k.kill9();
    let answered = sender.join().expect("delete thread");
    k.restart();
    let state = k.get(&format!("/api/v2/volumes/{uuid}"));
    match state.status {
        StatusCode::NOT_FOUND => {}
        StatusCode::OK => {
            assert_ne!(
                answered.as_ref().ok(),
                Some(&StatusCode::OK),
                "an acknowledged delete was undone: {}",
                state.body
            );
            let s = state.body["state"].as_str().unwrap_or_default().to_owned();
            assert!(
                s == "Available" || s == "Deleting",
                "state after the race: {}",
                state.body
            );
            if s == "Deleting" {
                k.wait_volume_gone(&uuid);
            } else {
                // Not deleted: the volume is whole and serves I/O.
                let mut c = k.connect(HOST_A);
                assert!(c.active_namespaces().expect("active").contains(&nsid));
            }
        }
        other => panic!("unexpected {other} after the race: {}", state.body),
    }
}

/// Runs the real curl binary against keeld (TLS not verified, as a new user does
/// with `-k`) and returns (status, body).
fn curl(k: &Keeld, args: &[&str]) -> (u16, Value) {
    let out = Command::new("curl")
        .args(["-sk", "--max-time", "20", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl must be installed to run this test");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        k.log_tail()
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or(Value::String(body.into()))
    };
    (code.trim().parse().expect("HTTP status"), body)
}

#[test]
fn the_documented_request_shapes_work_with_curl() {
    let k = Keeld::start_default();
    let base = k.api_url.clone();
    let user = format!("admin:{}", k.admin_password());
    let (status, login) = curl(&k, &["-X", "POST", "-u", &user, &format!("{base}/login")]);
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["tokenType"], "Bearer");
    let auth = format!(
        "Authorization: Bearer {}",
        login["idToken"].as_str().expect("idToken")
    );
    let json_ct = "Content-Type: application/json";

    let (status, cluster) = curl(&k, &["-H", &auth, &format!("{base}/api/v2/cluster")]);
    assert_eq!(status, 200, "{cluster}");
    assert_eq!(cluster["subsystemNQN"], k.subsystem_nqn.as_str());

    // Create with every documented field, as a string size.
    let create = json!({
        "name": "curl-vol", "size": "2147483648", "replicaCount": 1, "projectName": "default",
        "acl": {"values": [HOST_A]}, "ipAcl": {"values": ["ALLOW_ANY"]}, "compression": "False",
        "sectorSize": 4096, "labels": [{"key": "app", "value": "db"}],
    })
    .to_string();
    let (status, vol) = curl(
        &k,
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            json_ct,
            "-d",
            &create,
            &format!("{base}/api/v2/volumes"),
        ],
    );
    assert_eq!(status, 200, "{vol}");
    let uuid = vol["UUID"].as_str().expect("UUID").to_owned();
    let (status, _) = curl(
        &k,
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            json_ct,
            "-d",
            &create,
            &format!("{base}/api/v2/volumes"),
        ],
    );
    assert_eq!(
        status, 409,
        "documented: a volume with the provided name already exists"
    );

    let (status, list) = curl(
        &k,
        &[
            "-H",
            &auth,
            &format!("{base}/api/v2/volumes?projectName=default&limit=10&showAll=false"),
        ],
    );
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["volumes"][0]["UUID"], uuid.as_str());
    let (status, got) = curl(
        &k,
        &[
            "-H",
            &auth,
            &format!("{base}/api/v2/volumes/{uuid}?projectName=default"),
        ],
    );
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["nsid"], vol["nsid"]);
    let (status, by_name) = curl(
        &k,
        &[
            "-H",
            &auth,
            &format!("{base}/api/v2/volumes/?name=curl-vol&projectName=default"),
        ],
    );
    assert_eq!((status, &by_name["UUID"]), (200, &json!(uuid)));

    // Update size and ACL with the ETag as If-Match.
    let etag = format!("If-Match: {}", got["ETag"].as_str().expect("ETag"));
    let update = json!({"size": "3221225472", "acl": {"values": [HOST_A, HOST_B]}}).to_string();
    let (status, updated) = curl(
        &k,
        &[
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            json_ct,
            "-H",
            &etag,
            "-d",
            &update,
            &format!("{base}/api/v2/volumes/{uuid}"),
        ],
    );
    assert_eq!(status, 200, "{updated}");
    let (status, _) = curl(
        &k,
        &[
            "-X",
            "PUT",
            "-H",
            &auth,
            "-H",
            json_ct,
            "-H",
            &etag,
            "-d",
            &update,
            &format!("{base}/api/v2/volumes/{uuid}"),
        ],
    );
    assert_eq!(status, 412, "documented: Etag mismatch");
    let (_, got) = curl(&k, &["-H", &auth, &format!("{base}/api/v2/volumes/{uuid}")]);
    assert_eq!(got["size"], "3221225472");

    // Documented errors: 401 without a token, 400 on bad input, 404 when absent.
    let (status, body) = curl(&k, &[&format!("{base}/api/v2/volumes")]);
    assert_eq!(status, 401, "{body}");
    let (status, body) = curl(
        &k,
        &[
            "-X",
            "POST",
            "-H",
            &auth,
            "-H",
            json_ct,
            "-d",
            r#"{"name":"bad/name","size":"1073741824"}"#,
            &format!("{base}/api/v2/volumes"),
        ],
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = curl(
        &k,
        &[
            "-H",
            &auth,
            &format!("{base}/api/v2/volumes/{}", uuid::Uuid::new_v4()),
        ],
    );
    assert_eq!(status, 404);

    // Delete is long: 200 with an empty object, then the GET turns 404.
    let (status, body) = curl(
        &k,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            &format!("{base}/api/v2/volumes/{uuid}?projectName=default"),
        ],
    );
    assert_eq!((status, body), (200, json!({})));
    let ok = wait_until(WAIT, || {
        curl(&k, &["-H", &auth, &format!("{base}/api/v2/volumes/{uuid}")]).0 == 404
    });
    assert!(ok, "deleted volume never answered 404");
    let (status, _) = curl(
        &k,
        &[
            "-X",
            "DELETE",
            "-H",
            &auth,
            &format!("{base}/api/v2/volumes/{uuid}"),
        ],
    );
    assert_eq!(status, 404);
}

#[test]
fn the_certificate_in_the_data_dir_verifies_and_plain_http_needs_its_flag() {
    // The default client of `common` trusts only the data dir's certificate, so a
    // successful call proves keeld serves exactly that certificate for 127.0.0.1.
    let k = started();
    assert_eq!(k.get("/api/v2/cluster").status, StatusCode::OK);
    assert!(
        k.api_url.starts_with("https://"),
        "TLS is on by default: {}",
        k.api_url
    );
    let plain =
        reqwest::blocking::get(k.api_url.replacen("https://", "http://", 1) + "/api/v2/cluster");
    assert!(
        plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true),
        "plain HTTP must not be served by default"
    );

    let dev = Keeld::start(KeeldOptions {
        insecure_http: true,
        no_auth: true,
        ..KeeldOptions::default()
    });
    assert!(dev.api_url.starts_with("http://"), "{}", dev.api_url);
    let a = dev.call_as(None, Method::GET, "/api/v2/volumes", None);
    assert_eq!(
        a.status,
        StatusCode::OK,
        "--no-auth serves without a token: {}",
        a.body
    );
    let seen: HashSet<&str> = [k.api_url.as_str(), dev.api_url.as_str()]
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 2);
}

/// Create and delete cycles of volumes `name-0..cycles` (ACL none), each
/// answering `nsid`; returns once the last delete finished.
fn churn(k: &Keeld, name: &str, cycles: usize, nsid: u64) {
    for i in 0..cycles {
        let v = k.create_volume(&format!("{name}-{i}"), 64 << 20, &[]);
        assert_eq!(
            v["nsid"], nsid,
            "cycle {i} did not reuse the freed nsid: {v}"
        );
        let uuid = v["UUID"].as_str().expect("UUID");
        assert_eq!(
            k.delete(&format!("/api/v2/volumes/{uuid}")).status,
            StatusCode::OK
        );
        k.wait_volume_gone(uuid);
    }
}

#[test]
fn freed_nsids_are_reused_and_each_volume_keeps_its_nsid_across_kill9_and_sigterm() {
    let mut k = started();
    let keep = k.create_volume("keep", 64 << 20, &[HOST_A]);
    assert_eq!(keep["nsid"], 1);
    let keep_data = write_blocks(&k, HOST_A, 1, 0, 2, 100, true);
    // Each cycle spends an engine id; the nsid goes back to the free ones.
    churn(&k, "cycle", 40, 2);
    let fresh = k.create_volume("fresh", 64 << 20, &[HOST_A]);
    assert_eq!(fresh["nsid"], 2, "{fresh}");
    let fresh_data = write_blocks(&k, HOST_A, 2, 0, 2, 200, true);
    assert_blocks(&k, HOST_A, 1, 0, &keep_data);

    // Each volume is exposed under its own nsid again, with its own data.
    k.kill9();
    k.restart();
    for v in [&keep, &fresh] {
        let again = k.wait_volume_state(v["UUID"].as_str().expect("UUID"), "Available");
        assert_eq!(again["nsid"], v["nsid"], "{again}");
    }
    assert_blocks(&k, HOST_A, 1, 0, &keep_data);
    assert_blocks(&k, HOST_A, 2, 0, &fresh_data);
    churn(&k, "after-kill", 3, 3);
    k.restart();
    assert_blocks(&k, HOST_A, 1, 0, &keep_data);
    assert_blocks(&k, HOST_A, 2, 0, &fresh_data);
    // A deleted volume's nsid goes to the next volume.
    let keep_uuid = keep["UUID"].as_str().expect("UUID");
    assert_eq!(
        k.delete(&format!("/api/v2/volumes/{keep_uuid}")).status,
        StatusCode::OK
    );
    k.wait_volume_gone(keep_uuid);
    assert_eq!(k.create_volume("next", 64 << 20, &[HOST_A])["nsid"], 1);
}

/// Sets `size_bytes` of volume `uuid` in keeld's catalog (keeld must be stopped).
fn edit_catalog_size(k: &Keeld, uuid: &str, size_bytes: u64) {
    let path = k.data_dir().join("api").join("catalog.json");
    let mut catalog: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read catalog")).expect("catalog");
    catalog["volumes"][uuid]["size_bytes"] = json!(size_bytes);
    std::fs::write(&path, serde_json::to_vec_pretty(&catalog).expect("json"))
        .expect("write catalog");
}

#[test]
fn a_catalog_size_that_disagrees_with_the_engine_takes_the_engine_size_at_start() {
    let mut k = started();
    let v = k.create_volume("sized", 256 << 20, &[HOST_A]);
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let nsid = u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("u32");
    let data = write_blocks(&k, HOST_A, nsid, 0, 1, 7, true);
    // Larger (the reported case) and smaller: the engine holds the data, and
    // no crash leaves an Available record ahead of the engine.
    for edited in [GIB, 128 << 20] {
        k.terminate();
        edit_catalog_size(&k, &uuid, edited);
        k.restart();
        let again = k.wait_volume_state(&uuid, "Available");
        assert_eq!(again["size"], (256u64 << 20).to_string(), "{again}");
        assert_ne!(again["ETag"], v["ETag"], "the correction is a change");
        let mut host = k.connect(HOST_A);
        assert_eq!(
            host.identify_namespace(nsid).expect("identify").size_blocks,
            (256 << 20) / u64::from(BLOCK)
        );
        assert_blocks(&k, HOST_A, nsid, 0, &data);
        assert!(
            k.logged("disagrees with the engine")
                && k.logged(&format!("\"catalog_bytes\":{edited}")),
            "no WARN for a {edited}-byte catalog size\n{}",
            k.log_tail()
        );
    }
    // The corrected catalog stays corrected.
    k.restart();
    assert_eq!(
        k.get(&format!("/api/v2/volumes/{uuid}")).body["size"],
        (256u64 << 20).to_string()
    );
}

#[test]
fn snapshot_records_are_reconciled_with_the_engine_at_start() {
    let mut k = started();
    let v = k.create_volume("snapped", 256 << 20, &[HOST_A]);
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let snap = k.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "snap-sized", "sourceVolumeUUID": uuid}),
    );
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.body);
    let snap_uuid = snap.body["UUID"].as_str().expect("UUID").to_owned();
    k.terminate();
    // A hand-edited size, and a record of a snapshot the engine never held
    // (a copy of the real one under another UUID).
    let ghost = "00000000-0000-4000-8000-0000000000ee";
    let path = k.data_dir().join("api").join("catalog.json");
    let mut catalog: Value =
        serde_json::from_slice(&std::fs::read(&path).expect("read catalog")).expect("catalog");
    catalog["snapshots"][&snap_uuid]["size_bytes"] = json!(GIB);
    let mut copy = catalog["snapshots"][&snap_uuid].clone();
    copy["uuid"] = json!(ghost);
    copy["name"] = json!("snap-ghost");
    catalog["snapshots"][ghost] = copy;
    std::fs::write(&path, serde_json::to_vec_pretty(&catalog).expect("json"))
        .expect("write catalog");
    k.restart();
    let real = k.get(&format!("/api/v2/projects/default/snapshots/{snap_uuid}"));
    assert_eq!(real.status, StatusCode::OK, "{}", real.body);
    assert_eq!(
        real.body["size"],
        (256u64 << 20).to_string(),
        "{}",
        real.body
    );
    assert_eq!(real.body["state"], "Available");
    let missing = k.get(&format!("/api/v2/projects/default/snapshots/{ghost}"));
    assert_eq!(missing.status, StatusCode::OK, "{}", missing.body);
    assert_eq!(
        missing.body["state"], "Failed",
        "a snapshot the engine lacks is not shown Available: {}",
        missing.body
    );
    assert!(
        k.logged("snapshot size disagrees with the engine")
            && k.logged("catalog snapshot missing from the engine"),
        "{}",
        k.log_tail()
    );
}
