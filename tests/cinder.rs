//! System tests of the Cinder v3 dialect against the real keeld: the
//! versions document and microversion negotiation, the volume, snapshot
//! and attach cycle with Cinder's codes and error bodies (each refusal
//! leaving nothing changed), the same volumes through the Lightbits API and
//! over NVMe/TCP, and Cinder's noauth tokens.

mod common;

use common::{pattern, Keeld, KeeldOptions};
use nvmf_target::Lba;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0000-4000-8000-00000000000a";
const GIB: u64 = 1 << 30;

/// Calls the dialect with `token` as `X-Auth-Token`.
fn call(
    k: &Keeld,
    token: Option<&str>,
    method: Method,
    path: &str,
    body: Option<Value>,
    version: Option<&str>,
) -> (StatusCode, Value, reqwest::header::HeaderMap) {
    let mut req = k.client().request(method, format!("{}{path}", k.api_url));
    if let Some(token) = token {
        req = req.header("X-Auth-Token", token);
    }
    if let Some(version) = version {
        req = req.header("OpenStack-API-Version", format!("volume {version}"));
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req
        .send()
        .unwrap_or_else(|e| panic!("{path}: {e}\n{}", k.log_tail()));
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body, headers)
}

struct Cinder {
    keeld: Keeld,
    token: String,
}

impl Cinder {
    fn start() -> Cinder {
        let mut keeld = Keeld::start_default();
        let token = keeld.login();
        Cinder { keeld, token }
    }

    fn req(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let (status, body, _) = call(&self.keeld, Some(&self.token), method, path, body, None);
        (status, body)
    }

    fn ok(&self, method: Method, path: &str, body: Option<Value>, want: StatusCode) -> Value {
        let (status, answer) = self.req(method, path, body);
        assert_eq!(status, want, "{path}: {answer}");
        answer
    }

    fn action(&self, volume: &str, body: Value) -> (StatusCode, Value) {
        self.req(
            Method::POST,
            &format!("/v3/default/volumes/{volume}/action"),
            Some(body),
        )
    }

    fn status(&self, volume: &str) -> String {
        let v = self.ok(
            Method::GET,
            &format!("/v3/default/volumes/{volume}"),
            None,
            StatusCode::OK,
        );
        v["volume"]["status"].as_str().expect("status").to_owned()
    }
}

/// `{"<kind>": {"message", "code"}}` with the expected kind and code.
fn assert_fault(body: &Value, kind: &str, code: u16) {
    assert_eq!(body[kind]["code"], code, "{body}");
    assert!(
        body[kind]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

#[test]
fn versions_and_microversions_are_negotiated() {
    let c = Cinder::start();
    let (status, body, _) = call(&c.keeld, None, Method::GET, "/", None, None);
    assert_eq!(status, StatusCode::MULTIPLE_CHOICES, "{body}");
    let v3 = &body["versions"][0];
    assert_eq!(
        (
            v3["id"].as_str(),
            v3["version"].as_str(),
            v3["min_version"].as_str()
        ),
        (Some("v3.0"), Some("3.70"), Some("3.0"))
    );
    let (status, _, headers) = call(
        &c.keeld,
        Some(&c.token),
        Method::GET,
        "/v3/default/volumes",
        None,
        Some("3.60"),
    );
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["openstack-api-version"], "volume 3.60");
    let (_, _, headers) = call(
        &c.keeld,
        Some(&c.token),
        Method::GET,
        "/v3/default/volumes",
        None,
        None,
    );
    assert_eq!(headers["openstack-api-version"], "volume 3.0");
    let (status, body, _) = call(
        &c.keeld,
        Some(&c.token),
        Method::GET,
        "/v3/default/volumes",
        None,
        Some("3.99"),
    );
    assert_eq!(status, StatusCode::NOT_ACCEPTABLE, "{body}");
    assert!(body.to_string().contains("maximum is 3.70"), "{body}");
    let (status, body, _) = call(
        &c.keeld,
        None,
        Method::GET,
        "/v3/default/volumes",
        None,
        None,
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_fault(&body, "unauthorized", 401);
    let (status, body) = c.req(Method::GET, "/v3/default/no-such-thing", None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fault(&body, "itemNotFound", 404);
}

#[test]
fn the_volume_snapshot_clone_and_attach_cycle_keeps_cinders_codes_and_serves_the_data() {
    let c = Cinder::start();
    let vols = "/v3/default/volumes";
    let created = c.ok(
        Method::POST,
        vols,
        Some(json!({"volume": {"size": 1, "name": "vol1", "description": "first", "metadata": {"tier": "gold"}}})),
        StatusCode::ACCEPTED,
    );
    let id = created["volume"]["id"].as_str().expect("id").to_owned();
    assert_eq!(created["volume"]["status"], "available");
    assert_eq!(created["volume"]["size"], 1);
    assert_eq!(created["volume"]["metadata"], json!({"tier": "gold"}));
    assert_eq!(created["volume"]["description"], "first");
    assert_eq!(
        c.ok(Method::GET, vols, None, StatusCode::OK)["volumes"][0]["id"],
        id.as_str()
    );
    assert_eq!(
        c.ok(Method::GET, &format!("{vols}/detail"), None, StatusCode::OK)["volumes"][0]
            ["os-vol-tenant-attr:tenant_id"],
        "default"
    );
    // The project-less form (3.67) reaches the same volume.
    assert_eq!(
        c.ok(
            Method::GET,
            &format!("/v3/volumes/{id}"),
            None,
            StatusCode::OK
        )["volume"]["name"],
        "vol1"
    );

    // Refusals: Cinder's fault bodies, nothing created.
    for (body, kind, code) in [
        (json!({"volume": {"size": 0}}), "badRequest", 400),
        (json!({"volume": {"name": "nosize"}}), "badRequest", 400),
        (json!({"size": 1}), "badRequest", 400),
        (
            json!({"volume": {"size": 1, "volume_type": "gold"}}),
            "itemNotFound",
            404,
        ),
        (
            json!({"volume": {"size": 1, "snapshot_id": "5a5a5a5a-0000-4000-8000-000000000009"}}),
            "itemNotFound",
            404,
        ),
        (
            json!({"volume": {"size": 1, "imageRef": "x"}}),
            "badRequest",
            400,
        ),
    ] {
        let (status, answer) = c.req(Method::POST, vols, Some(body.clone()));
        assert_eq!(status.as_u16(), code, "{body}: {answer}");
        assert_fault(&answer, kind, code);
    }
    let (status, answer) = c.req(Method::POST, vols, None);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_fault(&answer, "badRequest", 400);
    assert_eq!(
        c.ok(Method::GET, vols, None, StatusCode::OK)["volumes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    let (status, answer) = c.req(
        Method::GET,
        &format!("{vols}/5a5a5a5a-0000-4000-8000-000000000009"),
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fault(&answer, "itemNotFound", 404);

    // Metadata: merge, one key, replace, delete; the description stays.
    let meta = format!("{vols}/{id}/metadata");
    c.ok(
        Method::POST,
        &meta,
        Some(json!({"metadata": {"zone": "a"}})),
        StatusCode::OK,
    );
    assert_eq!(
        c.ok(Method::GET, &meta, None, StatusCode::OK)["metadata"],
        json!({"tier": "gold", "zone": "a"})
    );
    assert_eq!(
        c.ok(
            Method::PUT,
            &format!("{meta}/zone"),
            Some(json!({"meta": {"zone": "b"}})),
            StatusCode::OK
        )["meta"],
        json!({"zone": "b"})
    );
    let (status, _) = c.req(
        Method::PUT,
        &format!("{meta}/zone"),
        Some(json!({"meta": {"other": "b"}})),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
    c.ok(
        Method::DELETE,
        &format!("{meta}/tier"),
        None,
        StatusCode::OK,
    );
    let (status, _) = c.req(Method::DELETE, &format!("{meta}/tier"), None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    c.ok(
        Method::PUT,
        &meta,
        Some(json!({"metadata": {"only": "this"}})),
        StatusCode::OK,
    );
    let shown = c.ok(Method::GET, &format!("{vols}/{id}"), None, StatusCode::OK);
    assert_eq!(
        (
            shown["volume"]["metadata"].clone(),
            shown["volume"]["description"].clone()
        ),
        (json!({"only": "this"}), json!("first"))
    );

    // Extend: larger only; the Lightbits API sees the new size.
    let (status, answer) = c.action(&id, json!({"os-extend": {"new_size": 1}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    assert_eq!(
        c.action(&id, json!({"os-extend": {"new_size": 2}})).0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.keeld
            .get(&format!("/api/v2/volumes/{id}?projectName=default"))
            .body["size"],
        (2 * GIB).to_string()
    );
    let (status, answer) = c.action(&id, json!({"os-frobnicate": {}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");

    // Connect a host: it gets the namespace and reads what it wrote.
    let (status, conn) = c.action(
        &id,
        json!({"os-initialize_connection": {"connector": {"nqn": HOST_A, "host": "compute1"}}}),
    );
    assert_eq!(status, StatusCode::OK, "{conn}");
    let data = &conn["connection_info"]["data"];
    assert_eq!(conn["connection_info"]["driver_volume_type"], "nvmeof");
    assert_eq!(data["target_nqn"], c.keeld.subsystem_nqn.as_str());
    assert_eq!(data["portals"][0][1], c.keeld.nvme_addr.port());
    assert_eq!(data["vol_uuid"], id.as_str());
    let nsid = data["ns_id"].as_u64().expect("ns_id") as u32;
    let block = pattern(4096, 5);
    {
        let mut host = c.keeld.connect(HOST_A);
        host.set_queue_count(1).expect("queues");
        let mut io = host.connect_io_queue(1).expect("io queue");
        io.write(nsid, Lba(3), block.clone(), 4096).expect("write");
        io.flush(nsid).expect("flush");
        assert_eq!(
            io.read(nsid, Lba(3), 1, 4096).expect("read"),
            block.to_vec()
        );
    }
    let (status, answer) = c.action(
        &id,
        json!({"os-initialize_connection": {"connector": {"initiator": "iqn.x"}}}),
    );
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an iSCSI-only connector: {answer}"
    );

    // The attach workflow's statuses.
    assert_eq!(
        c.action(&id, json!({"os-reserve": null})).0,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.status(&id), "attaching");
    assert_eq!(
        c.action(&id, json!({"os-reserve": null})).0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        c.action(&id, json!({"os-attach": {"instance_uuid": "6b6b6b6b-0000-4000-8000-000000000001", "mountpoint": "/dev/vdb", "mode": "rw"}})).0,
        StatusCode::ACCEPTED
    );
    let shown = c.ok(Method::GET, &format!("{vols}/{id}"), None, StatusCode::OK);
    assert_eq!(shown["volume"]["status"], "in-use");
    assert_eq!(shown["volume"]["attachments"][0]["device"], "/dev/vdb");
    let (status, answer) = c.req(Method::DELETE, &format!("{vols}/{id}"), None);
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an attached volume: {answer}"
    );
    assert_eq!(
        c.action(&id, json!({"os-begin_detaching": null})).0,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.status(&id), "detaching");
    assert_eq!(
        c.action(&id, json!({"os-detach": {}})).0,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.status(&id), "available");
    assert_eq!(
        c.action(
            &id,
            json!({"os-terminate_connection": {"connector": {"nqn": HOST_A}}})
        )
        .0,
        StatusCode::ACCEPTED
    );
    let mut host = c.keeld.connect(HOST_A);
    assert!(
        !host
            .active_namespaces()
            .expect("namespaces")
            .contains(&nsid),
        "still visible after terminate"
    );

    // A snapshot, a volume from it and a clone of the volume: same data.
    let snap = c.ok(
        Method::POST,
        "/v3/default/snapshots",
        Some(json!({"snapshot": {"volume_id": id, "name": "s1"}})),
        StatusCode::ACCEPTED,
    );
    let snap_id = snap["snapshot"]["id"].as_str().expect("id").to_owned();
    assert_eq!(snap["snapshot"]["size"], 2);
    assert_eq!(
        c.ok(
            Method::GET,
            "/v3/default/snapshots/detail",
            None,
            StatusCode::OK
        )["snapshots"][0]["id"],
        snap_id.as_str()
    );
    let from_snap = c.ok(
        Method::POST,
        vols,
        Some(json!({"volume": {"snapshot_id": snap_id, "name": "fromsnap"}})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(
        (
            from_snap["volume"]["snapshot_id"].as_str(),
            from_snap["volume"]["size"].as_u64()
        ),
        (Some(snap_id.as_str()), Some(2))
    );
    let clone = c.ok(
        Method::POST,
        vols,
        Some(json!({"volume": {"source_volid": id, "name": "clone1", "size": 3}})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(
        (
            clone["volume"]["source_volid"].as_str(),
            clone["volume"]["size"].as_u64()
        ),
        (Some(id.as_str()), Some(3))
    );
    let clone_id = clone["volume"]["id"].as_str().expect("id").to_owned();
    let (_, conn) = c.action(
        &clone_id,
        json!({"os-initialize_connection": {"connector": {"nqn": HOST_A}}}),
    );
    let clone_nsid = conn["connection_info"]["data"]["ns_id"]
        .as_u64()
        .expect("ns_id") as u32;
    let mut host = c.keeld.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    assert_eq!(
        io.read(clone_nsid, Lba(3), 1, 4096).expect("read"),
        block.to_vec(),
        "the clone lost the data"
    );

    // Deletes: a volume with snapshots is refused; in order, all go.
    let (status, answer) = c.req(Method::DELETE, &format!("{vols}/{id}"), None);
    assert_eq!(status, StatusCode::BAD_REQUEST, "{answer}");
    let fromsnap_id = from_snap["volume"]["id"].as_str().expect("id").to_owned();
    for path in [
        format!("{vols}/{fromsnap_id}"),
        format!("{vols}/{clone_id}"),
        format!("/v3/default/snapshots/{snap_id}"),
        format!("{vols}/{id}"),
    ] {
        assert_eq!(
            c.req(Method::DELETE, &path, None).0,
            StatusCode::ACCEPTED,
            "{path}"
        );
    }
    assert!(
        common::wait_until(common::WAIT, || c.ok(
            Method::GET,
            vols,
            None,
            StatusCode::OK
        )["volumes"]
            == json!([])),
        "volumes left"
    );
}

#[test]
fn noauth_tokens_work_only_when_keeld_allows_them() {
    let strict = Keeld::start_default();
    let (status, body, _) = call(
        &strict,
        Some("admin:default"),
        Method::GET,
        "/v3/default/volumes",
        None,
        None,
    );
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let open = Keeld::start(KeeldOptions {
        extra_args: vec!["--cinder-noauth".to_owned()],
        ..KeeldOptions::default()
    });
    let (status, body, _) = call(
        &open,
        Some("admin:default"),
        Method::POST,
        "/v3/volumes",
        Some(json!({"volume": {"size": 1}})),
        None,
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["volume"]["os-vol-tenant-attr:tenant_id"], "default");
    let (status, body, _) = call(
        &open,
        Some("someone:nosuchproject"),
        Method::GET,
        "/v3/volumes",
        None,
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[test]
fn python_cinderclient_and_openstacksdk_drive_the_cycle() {
    let mut k = Keeld::start(KeeldOptions {
        extra_args: vec!["--cinder-noauth".to_owned()],
        ..KeeldOptions::default()
    });
    let token = k.login();
    let out = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/api/openstack_clients.sh"
        ))
        .args(["--url", &k.api_url, "--token", &token])
        .output()
        .expect("bash runs the client script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        k.log_tail()
    );
    assert!(stdout.contains("python-cinderclient cycle: ok"), "{stdout}");
    assert!(stdout.contains("openstacksdk cycle: ok"), "{stdout}");
}

#[test]
fn the_attachments_api_connects_completes_and_disconnects_a_host() {
    let c = Cinder::start();
    let created = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "att"}})),
        StatusCode::ACCEPTED,
    );
    let id = created["volume"]["id"].as_str().expect("id").to_owned();
    let at = |method: Method, path: &str, body: Option<Value>, version: &str| {
        call(&c.keeld, Some(&c.token), method, path, body, Some(version))
    };
    // Before 3.27 the API does not exist.
    let (status, body, _) = at(Method::GET, "/v3/default/attachments", None, "3.26");
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // Reserve, then connect: the connector's host gets the namespace.
    let (status, body, _) = at(
        Method::POST,
        "/v3/default/attachments",
        Some(
            json!({"attachment": {"volume_uuid": id, "instance_uuid": "6b6b6b6b-0000-4000-8000-000000000002"}}),
        ),
        "3.54",
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let att = body["attachment"]["id"].as_str().expect("id").to_owned();
    assert_eq!(body["attachment"]["status"], "reserved");
    assert_eq!(body["attachment"]["connection_info"], Value::Null);
    assert_eq!(c.status(&id), "reserved");
    let (status, body, _) = at(
        Method::PUT,
        &format!("/v3/default/attachments/{att}"),
        Some(json!({"attachment": {"connector": {"nqn": HOST_A, "host": "compute1"}}})),
        "3.54",
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let info = &body["attachment"]["connection_info"];
    assert_eq!(info["target_nqn"], c.keeld.subsystem_nqn.as_str());
    let nsid = info["ns_id"].as_u64().expect("ns_id") as u32;
    let mut host = c.keeld.connect(HOST_A);
    assert!(host
        .active_namespaces()
        .expect("namespaces")
        .contains(&nsid));
    assert_eq!(c.status(&id), "attaching");
    let (status, body, _) = at(
        Method::POST,
        &format!("/v3/default/attachments/{att}/action"),
        Some(json!({"os-complete": null})),
        "3.54",
    );
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (_, body, _) = at(
        Method::GET,
        &format!("/v3/default/attachments/{att}"),
        None,
        "3.54",
    );
    assert_eq!(body["attachment"]["status"], "attached");
    assert_eq!(c.status(&id), "in-use");
    let (status, body, _) = at(
        Method::GET,
        "/v3/default/attachments/5a5a5a5a-0000-4000-8000-00000000000f",
        None,
        "3.54",
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fault(&body, "itemNotFound", 404);
    // Delete: the host loses the namespace and the volume is available.
    let (status, body, _) = at(
        Method::DELETE,
        &format!("/v3/default/attachments/{att}"),
        None,
        "3.54",
    );
    assert_eq!(status, StatusCode::OK, "{body}");
    let mut host = c.keeld.connect(HOST_A);
    assert!(!host
        .active_namespaces()
        .expect("namespaces")
        .contains(&nsid));
    assert_eq!(c.status(&id), "available");
}

#[test]
fn types_zones_limits_services_and_the_gigabytes_quota_answer_from_the_cluster() {
    let c = Cinder::start();
    let types = c.ok(Method::GET, "/v3/default/types", None, StatusCode::OK);
    assert_eq!(types["volume_types"][0]["name"], "__DEFAULT__");
    let id = types["volume_types"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(
        c.ok(
            Method::GET,
            &format!("/v3/default/types/{id}"),
            None,
            StatusCode::OK
        )["volume_type"]["id"],
        id.as_str()
    );
    let (status, body) = c.req(Method::GET, "/v3/default/types/gold", None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fault(&body, "itemNotFound", 404);
    assert_eq!(
        c.ok(
            Method::GET,
            "/v3/default/os-availability-zone",
            None,
            StatusCode::OK
        )["availabilityZoneInfo"][0]["zoneName"],
        "nova"
    );
    assert_eq!(
        c.ok(Method::GET, "/v3/default/os-services", None, StatusCode::OK)["services"][0]["state"],
        "up"
    );
    assert_eq!(
        c.ok(Method::GET, "/v3/default/messages", None, StatusCode::OK)["messages"],
        json!([])
    );

    c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "q1"}})),
        StatusCode::ACCEPTED,
    );
    let limits = c.ok(Method::GET, "/v3/default/limits", None, StatusCode::OK);
    let absolute = &limits["limits"]["absolute"];
    assert_eq!(
        (
            absolute["totalVolumesUsed"].as_u64(),
            absolute["totalGigabytesUsed"].as_u64(),
            absolute["maxTotalVolumeGigabytes"].as_i64()
        ),
        (Some(1), Some(1), Some(-1))
    );

    // The gigabytes quota is the project's capacity quota and takes effect.
    let set = c.ok(
        Method::PUT,
        "/v3/default/os-quota-sets/default",
        Some(json!({"quota_set": {"gigabytes": 2}})),
        StatusCode::OK,
    );
    assert_eq!(set["quota_set"]["gigabytes"], 2);
    let (status, body) = c.req(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 2, "name": "q2"}})),
    );
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_fault(&body, "overLimit", 413);
    c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "q3"}})),
        StatusCode::ACCEPTED,
    );
    let usage = c.ok(
        Method::GET,
        "/v3/default/os-quota-sets/default?usage=True",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        (
            usage["quota_set"]["gigabytes"]["limit"].as_i64(),
            usage["quota_set"]["gigabytes"]["in_use"].as_u64()
        ),
        (Some(2), Some(2))
    );
    for (body, why) in [
        (
            json!({"quota_set": {"gigabytes": 1}}),
            "below what the project uses",
        ),
        (
            json!({"quota_set": {"volumes": 10}}),
            "a quota Keel does not keep",
        ),
        (json!({"quota_set": {"frobs": -1}}), "an unknown key"),
        (json!({"quota": {}}), "no quota_set"),
    ] {
        let (status, answer) = c.req(Method::PUT, "/v3/default/os-quota-sets/default", Some(body));
        assert!(
            status == StatusCode::BAD_REQUEST || status == StatusCode::PAYLOAD_TOO_LARGE,
            "{why}: {status} {answer}"
        );
    }
    assert_eq!(
        c.ok(
            Method::GET,
            "/v3/default/os-quota-sets/default",
            None,
            StatusCode::OK
        )["quota_set"]["gigabytes"],
        2,
        "refused updates changed the quota"
    );
    c.ok(
        Method::PUT,
        "/v3/default/os-quota-sets/default",
        Some(json!({"quota_set": {"gigabytes": -1}})),
        StatusCode::OK,
    );
    c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 2, "name": "q2"}})),
        StatusCode::ACCEPTED,
    );
}

#[test]
fn volume_types_and_qos_specs_take_effect_on_new_volumes_and_refuse_what_keel_cannot_do() {
    let c = Cinder::start();
    let k = &c.keeld;
    // A QoS spec is a Keel QoS policy the Lightbits API shows.
    let spec = c.ok(
        Method::POST,
        "/v3/default/qos-specs",
        Some(
            json!({"qos_specs": {"name": "gold-qos", "consumer": "back-end",
                                  "total_iops_sec": "2000", "read_bytes_sec": "100000000"}}),
        ),
        StatusCode::OK,
    );
    let spec_id = spec["qos_specs"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        spec["qos_specs"]["specs"],
        json!({"total_iops_sec": "2000", "read_bytes_sec": "100000000"})
    );
    let policy = k.get(&format!("/api/v2/qosPolicies/{spec_id}"));
    assert_eq!(policy.status, StatusCode::OK, "{}", policy.body);
    assert_eq!(policy.body["name"], "gold-qos");

    // A type with specs Keel acts on, and the spec associated.
    let t = c.ok(
        Method::POST,
        "/v3/default/types",
        Some(
            json!({"volume_type": {"name": "gold", "description": "compressed, 1 replica",
            "extra_specs": {"compression": "<is> True", "lightos:num_replicas": "1",
                            "volume_backend_name": "keel"}}}),
        ),
        StatusCode::OK,
    );
    let type_id = t["volume_type"]["id"].as_str().expect("id").to_owned();
    c.ok(
        Method::GET,
        &format!("/v3/default/qos-specs/{spec_id}/associate?vol_type_id={type_id}"),
        None,
        StatusCode::ACCEPTED,
    );
    let assoc = c.ok(
        Method::GET,
        &format!("/v3/default/qos-specs/{spec_id}/associations"),
        None,
        StatusCode::OK,
    );
    assert_eq!(
        assoc["qos_associations"][0]["id"],
        type_id.as_str(),
        "{assoc}"
    );

    // A volume of the type is compressed and held to the spec's policy.
    let v = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "typed", "volume_type": "gold"}})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(v["volume"]["volume_type"], "gold", "{v}");
    let id = v["volume"]["id"].as_str().expect("id").to_owned();
    let lb = k.wait_volume_state(&id, "Available");
    assert_eq!(lb["compression"], "true", "{lb}");
    assert_eq!(lb["qosPolicyName"], "gold-qos", "{lb}");
    // A volume without a type takes neither.
    let plain = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "plain"}})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(plain["volume"]["volume_type"], "__DEFAULT__");
    let plain_lb = k.wait_volume_state(plain["volume"]["id"].as_str().expect("id"), "Available");
    assert_eq!(plain_lb["compression"], "false", "{plain_lb}");
    assert!(plain_lb["qosPolicyName"].is_null(), "{plain_lb}");

    // Changing the spec changes the policy its volumes are held to.
    c.ok(
        Method::PUT,
        &format!("/v3/default/qos-specs/{spec_id}"),
        Some(json!({"qos_specs": {"total_iops_sec": "3000"}})),
        StatusCode::OK,
    );
    let shown = c.ok(
        Method::GET,
        &format!("/v3/default/qos-specs/{spec_id}"),
        None,
        StatusCode::OK,
    );
    assert_eq!(
        shown["qos_specs"]["specs"]["total_iops_sec"], "3000",
        "{shown}"
    );

    // Extra specs: read, set one, delete one.
    let specs_path = format!("/v3/default/types/{type_id}/extra_specs");
    c.ok(
        Method::PUT,
        &format!("{specs_path}/compression"),
        Some(json!({"compression": "<is> False"})),
        StatusCode::OK,
    );
    c.ok(
        Method::DELETE,
        &format!("{specs_path}/volume_backend_name"),
        None,
        StatusCode::ACCEPTED,
    );
    assert_eq!(
        c.ok(Method::GET, &specs_path, None, StatusCode::OK)["extra_specs"],
        json!({"compression": "<is> False", "lightos:num_replicas": "1"})
    );

    // A private type serves only the projects it is shared with.
    let private = c.ok(
        Method::POST,
        "/v3/default/types",
        Some(json!({"volume_type": {"name": "secret", "os-volume-type-access:is_public": false}})),
        StatusCode::OK,
    );
    let private_id = private["volume_type"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let other = k.post(
        "/api/v2/projects",
        &json!({"name": "p2", "description": ""}),
    );
    assert_eq!(other.status, StatusCode::OK, "{}", other.body);
    let viewer = k.post(
        "/api/v2/users",
        &json!({"name": "p2-admin", "password": "a-long-password-1", "role": "ProjectAdmin", "projectName": "p2"}),
    );
    assert_eq!(viewer.status, StatusCode::OK, "{}", viewer.body);
    let p2_token = {
        let resp = k
            .client()
            .post(format!("{}/login", k.api_url))
            .basic_auth("p2-admin", Some("a-long-password-1"))
            .send()
            .expect("login");
        resp.json::<Value>().expect("body")["idToken"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let as_p2 = |method: Method, path: &str, body: Option<Value>| {
        let (status, body, _) = call(k, Some(&p2_token), method, path, body, None);
        (status, body)
    };
    let create_secret = json!({"volume": {"size": 1, "name": "s", "volume_type": "secret"}});
    let (status, body) = as_p2(Method::POST, "/v3/p2/volumes", Some(create_secret.clone()));
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    c.ok(
        Method::POST,
        &format!("/v3/default/types/{private_id}/action"),
        Some(json!({"addProjectAccess": {"project": "p2"}})),
        StatusCode::ACCEPTED,
    );
    let access = c.ok(
        Method::GET,
        &format!("/v3/default/types/{private_id}/os-volume-type-access"),
        None,
        StatusCode::OK,
    );
    assert_eq!(
        access["volume_type_access"][0]["project_id"], "p2",
        "{access}"
    );
    let (status, body) = as_p2(Method::POST, "/v3/p2/volumes", Some(create_secret));
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // Only administrators manage types and specs.
    let (status, body) = as_p2(
        Method::POST,
        "/v3/p2/types",
        Some(json!({"volume_type": {"name": "mine"}})),
    );
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // What Keel cannot honour is refused with Cinder's codes, nothing kept.
    let types_before = c.ok(
        Method::GET,
        "/v3/default/types?is_public=none",
        None,
        StatusCode::OK,
    );
    let specs_before = c.ok(Method::GET, "/v3/default/qos-specs", None, StatusCode::OK);
    let refusals: [(Method, String, Option<Value>, StatusCode); 12] = [
        (
            Method::POST,
            "/v3/default/types".into(),
            Some(json!({"volume_type": {"name": "gold"}})),
            StatusCode::CONFLICT,
        ),
        (
            Method::POST,
            "/v3/default/types".into(),
            Some(json!({"volume_type": {"name": "x", "extra_specs": {"dedup": "<is> True"}}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v3/default/types".into(),
            Some(
                json!({"volume_type": {"name": "x", "extra_specs": {"multiattach": "<is> True"}}}),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            specs_path.clone(),
            Some(json!({"extra_specs": {"lightos:num_replicas": "9"}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::DELETE,
            format!("/v3/default/types/{type_id}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v3/default/qos-specs".into(),
            Some(
                json!({"qos_specs": {"name": "fe", "consumer": "front-end", "total_iops_sec": "1"}}),
            ),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v3/default/qos-specs".into(),
            Some(json!({"qos_specs": {"name": "mib", "read_bytes_sec": "104857600"}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v3/default/qos-specs".into(),
            Some(json!({"qos_specs": {"name": "burst", "total_iops_sec_max": "100"}})),
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v3/default/qos-specs".into(),
            Some(json!({"qos_specs": {"name": "gold-qos", "total_iops_sec": "1"}})),
            StatusCode::CONFLICT,
        ),
        (
            Method::DELETE,
            format!("/v3/default/qos-specs/{spec_id}"),
            None,
            StatusCode::BAD_REQUEST,
        ),
        (
            Method::POST,
            "/v3/default/volumes".into(),
            Some(json!({"volume": {"size": 1, "name": "t", "volume_type": "bronze"}})),
            StatusCode::NOT_FOUND,
        ),
        (
            Method::PUT,
            format!("/v3/default/qos-specs/{spec_id}"),
            Some(json!({"qos_specs": {"total_iops_sec_per_gb": "5"}})),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (method, path, body, want) in refusals {
        let (status, answer) = c.req(method.clone(), &path, body.clone());
        assert_eq!(status, want, "{method} {path} {body:?}: {answer}");
    }
    assert_eq!(
        c.ok(
            Method::GET,
            "/v3/default/types?is_public=none",
            None,
            StatusCode::OK
        ),
        types_before
    );
    assert_eq!(
        c.ok(Method::GET, "/v3/default/qos-specs", None, StatusCode::OK),
        specs_before
    );

    // Force deletes a spec a type names (volumes keep their policy until
    // they go); a type goes once its volumes have.
    c.ok(
        Method::DELETE,
        &format!("/v3/default/volumes/{id}"),
        None,
        StatusCode::ACCEPTED,
    );
    k.wait_volume_gone(&id);
    c.ok(
        Method::DELETE,
        &format!("/v3/default/qos-specs/{spec_id}?force=True"),
        None,
        StatusCode::ACCEPTED,
    );
    assert_eq!(
        k.get(&format!("/api/v2/qosPolicies/{spec_id}")).status,
        StatusCode::NOT_FOUND
    );
    c.ok(
        Method::DELETE,
        &format!("/v3/default/types/{type_id}"),
        None,
        StatusCode::ACCEPTED,
    );
}

#[test]
fn revert_retype_flags_image_metadata_and_force_actions_take_effect() {
    let c = Cinder::start();
    let v = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "ops"}})),
        StatusCode::ACCEPTED,
    );
    let id = v["volume"]["id"].as_str().expect("id").to_owned();
    let info = c.action(
        &id,
        json!({"os-initialize_connection": {"connector": {"nqn": HOST_A}}}),
    );
    assert_eq!(info.0, StatusCode::OK, "{}", info.1);
    assert_eq!(info.1["connection_info"]["data"]["access_mode"], "rw");
    let nsid = info.1["connection_info"]["data"]["ns_id"]
        .as_u64()
        .expect("ns_id") as u32;
    let mut host = c.keeld.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    let (a, b) = (pattern(4096, 41), pattern(4096, 42));
    io.write(nsid, Lba(3), a.clone(), 4096).expect("write A");
    io.flush(nsid).expect("flush");
    let snap = |name: &str| {
        c.ok(
            Method::POST,
            "/v3/default/snapshots",
            Some(json!({"snapshot": {"volume_id": id, "name": name, "force": true}})),
            StatusCode::ACCEPTED,
        )["snapshot"]["id"]
            .as_str()
            .expect("snapshot id")
            .to_owned()
    };
    let s1 = snap("s1");
    io.write(nsid, Lba(3), b.clone(), 4096).expect("write B");
    io.flush(nsid).expect("flush");
    assert_eq!(
        c.action(&id, json!({"revert": {"snapshot_id": s1}})).0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        io.read(nsid, Lba(3), 1, 4096).expect("read"),
        a.to_vec(),
        "revert brought A back"
    );
    let s2 = snap("s2");
    let (status, body) = c.action(&id, json!({"revert": {"snapshot_id": s1}}));
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "only the latest snapshot: {body}"
    );

    // Read-only and bootable flags, image metadata: shown, kept apart from
    // the metadata, and the read-only one reaches the connection info.
    assert_eq!(
        c.action(&id, json!({"os-update_readonly_flag": {"readonly": true}}))
            .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        c.action(&id, json!({"os-set_bootable": {"bootable": true}}))
            .0,
        StatusCode::OK
    );
    let (status, meta) = c.action(
        &id,
        json!({"os-set_image_metadata": {"metadata": {"os_distro": "debian"}}}),
    );
    assert_eq!(
        (status, meta["metadata"]["os_distro"].as_str()),
        (StatusCode::OK, Some("debian"))
    );
    c.ok(
        Method::PUT,
        &format!("/v3/default/volumes/{id}/metadata"),
        Some(json!({"metadata": {"k": "v", "readonly": "True"}})),
        StatusCode::OK,
    );
    let shown = c.ok(
        Method::GET,
        &format!("/v3/default/volumes/{id}"),
        None,
        StatusCode::OK,
    )["volume"]
        .clone();
    assert_eq!(shown["bootable"], "true", "{shown}");
    assert_eq!(
        shown["metadata"],
        json!({"k": "v", "readonly": "True"}),
        "{shown}"
    );
    assert_eq!(
        shown["volume_image_metadata"],
        json!({"os_distro": "debian"})
    );
    let info = c.action(
        &id,
        json!({"os-initialize_connection": {"connector": {"nqn": HOST_A}}}),
    );
    assert_eq!(
        info.1["connection_info"]["data"]["access_mode"], "ro",
        "{}",
        info.1
    );
    let (status, shown) = c.action(&id, json!({"os-show_image_metadata": null}));
    assert_eq!(
        (status, shown["metadata"].clone()),
        (StatusCode::OK, json!({"os_distro": "debian"}))
    );
    assert_eq!(
        c.action(
            &id,
            json!({"os-unset_image_metadata": {"key": "os_distro"}})
        )
        .0,
        StatusCode::OK
    );
    assert_eq!(
        c.action(
            &id,
            json!({"os-unset_image_metadata": {"key": "os_distro"}})
        )
        .0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.action(&id, json!({"os-set_bootable": {"bootable": "maybe"}}))
            .0,
        StatusCode::BAD_REQUEST
    );

    // Retype applies the new type's compression; a replica change is refused.
    c.ok(
        Method::POST,
        "/v3/default/types",
        Some(
            json!({"volume_type": {"name": "zipped", "extra_specs": {"compression": "<is> True"}}}),
        ),
        StatusCode::OK,
    );
    c.ok(
        Method::POST,
        "/v3/default/types",
        Some(json!({"volume_type": {"name": "triple", "extra_specs": {"lightos:num_replicas": "3"}}})),
        StatusCode::OK,
    );
    let (status, body) = c.action(
        &id,
        json!({"os-retype": {"new_type": "zipped", "migration_policy": "never"}}),
    );
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        c.keeld.wait_volume_state(&id, "Available")["compression"],
        "true"
    );
    let shown = c.ok(
        Method::GET,
        &format!("/v3/default/volumes/{id}"),
        None,
        StatusCode::OK,
    );
    assert_eq!(shown["volume"]["volume_type"], "zipped");
    let (status, body) = c.action(&id, json!({"os-retype": {"new_type": "triple"}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        c.keeld.wait_volume_state(&id, "Available")["replicaCount"],
        1
    );

    // Force detach clears an attachment; force delete refuses while
    // snapshots remain, then deletes an in-use volume.
    assert_eq!(
        c.action(&id, json!({"os-attach": {"instance_uuid": "5a5a5a5a-0000-4000-8000-000000000077", "mountpoint": "/dev/vdb"}})).0,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.status(&id), "in-use");
    assert_eq!(
        c.action(
            &id,
            json!({"os-force_detach": {"connector": {"nqn": HOST_A}}})
        )
        .0,
        StatusCode::ACCEPTED
    );
    assert_eq!(c.status(&id), "available");
    let acl = &c.keeld.wait_volume_state(&id, "Available")["acl"];
    assert_eq!(
        acl,
        &json!({"values": ["ALLOW_NONE"]}),
        "the connector's grant was taken back"
    );
    drop(io);
    drop(host);
    c.action(
        &id,
        json!({"os-attach": {"instance_uuid": "5a5a5a5a-0000-4000-8000-000000000077"}}),
    );
    let (status, body) = c.action(&id, json!({"os-force_delete": {}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "snapshots remain: {body}");
    for snap in [&s1, &s2] {
        c.ok(
            Method::DELETE,
            &format!("/v3/default/snapshots/{snap}"),
            None,
            StatusCode::ACCEPTED,
        );
    }
    // The snapshots' deletes finish in the background first.
    assert!(
        common::wait_until(common::WAIT, || c
            .action(&id, json!({"os-force_delete": {}}))
            .0
            == StatusCode::ACCEPTED),
        "force delete never went through"
    );
    c.keeld.wait_volume_gone(&id);
}

#[test]
fn the_volume_summary_messages_and_snapshot_actions_answer_from_the_cluster() {
    let c = Cinder::start();
    for (name, size, meta) in [
        ("a", 1, json!({"tier": "gold"})),
        ("b", 2, json!({"tier": "silver"})),
    ] {
        c.ok(
            Method::POST,
            "/v3/default/volumes",
            Some(json!({"volume": {"size": size, "name": name, "metadata": meta}})),
            StatusCode::ACCEPTED,
        );
    }
    let summary = c.ok(
        Method::GET,
        "/v3/default/volumes/summary",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        summary["volume-summary"],
        json!({"total_size": 3, "total_count": 2, "metadata": {"tier": ["gold", "silver"]}})
    );
    let (status, body) = c.req(
        Method::GET,
        "/v3/default/messages/5a5a5a5a-0000-4000-8000-000000000001",
        None,
    );
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_fault(&body, "itemNotFound", 404);

    let volume = c.ok(Method::GET, "/v3/default/volumes", None, StatusCode::OK)["volumes"][0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let snap = c.ok(
        Method::POST,
        "/v3/default/snapshots",
        Some(json!({"snapshot": {"volume_id": volume, "name": "s"}})),
        StatusCode::ACCEPTED,
    )["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let act = |body: Value| {
        c.req(
            Method::POST,
            &format!("/v3/default/snapshots/{snap}/action"),
            Some(body),
        )
    };
    let (status, body) = act(json!({"os-reset_status": {"status": "error"}}));
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_fault(&body, "badRequest", 400);
    assert_eq!(
        c.ok(
            Method::GET,
            &format!("/v3/default/snapshots/{snap}"),
            None,
            StatusCode::OK
        )["snapshot"]["status"],
        "available"
    );
    assert_eq!(act(json!({"os-force_delete": {}})).0, StatusCode::ACCEPTED);
    assert!(
        common::wait_until(common::WAIT, || c
            .req(Method::GET, &format!("/v3/default/snapshots/{snap}"), None)
            .0
            == StatusCode::NOT_FOUND),
        "the snapshot stayed"
    );
}

/// A project `p2` with an administrator; that administrator's token.
fn second_project(k: &Keeld) -> String {
    let project = k.post(
        "/api/v2/projects",
        &json!({"name": "p2", "description": ""}),
    );
    assert_eq!(project.status, StatusCode::OK, "{}", project.body);
    let user = k.post(
        "/api/v2/users",
        &json!({"name": "p2-admin", "password": "a-long-password-1",
                "role": "ProjectAdmin", "projectName": "p2"}),
    );
    assert_eq!(user.status, StatusCode::OK, "{}", user.body);
    let resp = k
        .client()
        .post(format!("{}/login", k.api_url))
        .basic_auth("p2-admin", Some("a-long-password-1"))
        .send()
        .expect("login");
    resp.json::<Value>().expect("body")["idToken"]
        .as_str()
        .expect("token")
        .to_owned()
}

#[test]
fn a_volume_transfer_moves_the_volume_and_its_snapshots_to_the_accepting_project() {
    let c = Cinder::start();
    let p2 = second_project(&c.keeld);
    let as_p2 = |method: Method, path: &str, body: Option<Value>| {
        let (status, body, _) = call(&c.keeld, Some(&p2), method, path, body, None);
        (status, body)
    };
    let v = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "moving"}})),
        StatusCode::ACCEPTED,
    );
    let id = v["volume"]["id"].as_str().expect("id").to_owned();
    let snap = c.ok(
        Method::POST,
        "/v3/default/snapshots",
        Some(json!({"snapshot": {"volume_id": id, "name": "moving-snap"}})),
        StatusCode::ACCEPTED,
    )["snapshot"]["id"]
        .as_str()
        .expect("id")
        .to_owned();

    let t = c.ok(
        Method::POST,
        "/v3/default/volume-transfers",
        Some(json!({"transfer": {"volume_id": id, "name": "to-p2"}})),
        StatusCode::ACCEPTED,
    );
    let transfer = t["transfer"]["id"].as_str().expect("id").to_owned();
    let key = t["transfer"]["auth_key"]
        .as_str()
        .expect("auth_key")
        .to_owned();
    assert_eq!(c.status(&id), "awaiting-transfer");
    let (status, _) = c.req(Method::DELETE, &format!("/v3/default/volumes/{id}"), None);
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "an offered volume is not deleted"
    );
    let listed = c.ok(
        Method::GET,
        "/v3/default/os-volume-transfer/detail",
        None,
        StatusCode::OK,
    );
    assert_eq!(listed["transfers"][0]["volume_id"], id.as_str(), "{listed}");
    assert!(
        listed["transfers"][0].get("auth_key").is_none(),
        "the key is shown once"
    );
    let (status, _) = as_p2(
        Method::GET,
        &format!("/v3/p2/volume-transfers/{transfer}"),
        None,
    );
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "another project does not list the offer"
    );

    // A wrong key changes nothing; the right one moves volume and snapshot.
    let accept = |key: &str| {
        as_p2(
            Method::POST,
            &format!("/v3/p2/volume-transfers/{transfer}/accept"),
            Some(json!({"accept": {"auth_key": key}})),
        )
    };
    let (status, body) = accept("0000000000000000");
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        c.keeld.get(&format!("/api/v2/volumes/{id}")).body["projectName"],
        "default"
    );
    let (status, body) = accept(&key);
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["transfer"]["volume_id"], id.as_str());
    assert_eq!(
        c.keeld.get(&format!("/api/v2/volumes/{id}")).body["projectName"],
        "p2"
    );
    let (status, moved) = as_p2(Method::GET, &format!("/v3/p2/volumes/{id}"), None);
    assert_eq!(
        (status, moved["volume"]["status"].as_str()),
        (StatusCode::OK, Some("available")),
        "{moved}"
    );
    let (status, _) = c.req(Method::GET, &format!("/v3/default/volumes/{id}"), None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = as_p2(Method::GET, &format!("/v3/p2/snapshots/{snap}"), None);
    assert_eq!(status, StatusCode::OK, "the snapshot moved with its volume");
    let (status, _) = accept(&key);
    assert_eq!(status, StatusCode::NOT_FOUND, "an accepted offer is gone");

    // An offer withdrawn leaves the volume available where it was.
    let t = as_p2(
        Method::POST,
        "/v3/p2/os-volume-transfer",
        Some(json!({"transfer": {"volume_id": id, "name": "back", "no_snapshots": true}})),
    );
    assert_eq!(t.0, StatusCode::ACCEPTED, "{}", t.1);
    let back = t.1["transfer"]["id"].as_str().expect("id").to_owned();
    let (status, _) = as_p2(
        Method::DELETE,
        &format!("/v3/p2/os-volume-transfer/{back}"),
        None,
    );
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, moved) = as_p2(Method::GET, &format!("/v3/p2/volumes/{id}"), None);
    assert_eq!(moved["volume"]["status"], "available");
}

#[test]
fn an_unmanaged_volume_leaves_cinder_keeps_its_data_and_is_managed_back_by_name() {
    let c = Cinder::start();
    let v = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "kept"}})),
        StatusCode::ACCEPTED,
    );
    let id = v["volume"]["id"].as_str().expect("id").to_owned();
    let listed = c.ok(
        Method::GET,
        "/v3/default/manageable_volumes/detail",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        listed["manageable-volumes"][0]["safe_to_manage"], false,
        "{listed}"
    );
    assert_eq!(
        listed["manageable-volumes"][0]["reason_not_safe"],
        "already managed"
    );

    assert_eq!(
        c.action(&id, json!({"os-unmanage": {}})).0,
        StatusCode::ACCEPTED
    );
    let (status, _) = c.req(Method::GET, &format!("/v3/default/volumes/{id}"), None);
    assert_eq!(status, StatusCode::NOT_FOUND, "Cinder no longer shows it");
    assert_eq!(
        c.ok(Method::GET, "/v3/default/volumes", None, StatusCode::OK)["volumes"],
        json!([])
    );
    assert_eq!(
        c.keeld.get(&format!("/api/v2/volumes/{id}")).status,
        StatusCode::OK,
        "the volume itself stays"
    );
    let listed = c.ok(
        Method::GET,
        "/v3/default/manageable_volumes",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        listed["manageable-volumes"][0],
        json!({"reference": {"source-name": "kept", "source-id": id}, "size": 1, "safe_to_manage": true})
    );

    let (status, body) = c.req(
        Method::POST,
        "/v3/default/os-volume-manage",
        Some(json!({"volume": {"host": "keel@keel#pool", "ref": {"source-name": "nope"}}})),
    );
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let managed = c.ok(
        Method::POST,
        "/v3/default/os-volume-manage",
        Some(
            json!({"volume": {"host": "keel@keel#pool", "ref": {"source-name": "kept"},
                               "name": "back", "description": "managed again",
                               "metadata": {"owner": "ops"}}}),
        ),
        StatusCode::ACCEPTED,
    );
    assert_eq!(managed["volume"]["id"], id.as_str(), "{managed}");
    assert_eq!(managed["volume"]["name"], "back");
    assert_eq!(managed["volume"]["description"], "managed again");
    assert_eq!(managed["volume"]["metadata"], json!({"owner": "ops"}));
    assert_eq!(c.status(&id), "available");
    let (status, body) = c.req(
        Method::POST,
        "/v3/default/os-volume-manage",
        Some(json!({"volume": {"host": "keel@keel#pool", "ref": {"source-id": id}}})),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "already managed: {body}");
}

#[test]
fn the_backend_facts_an_operator_reads_come_from_the_cluster() {
    let c = Cinder::start();
    let get = |path: &str| c.ok(Method::GET, path, None, StatusCode::OK);
    let pools = get("/v3/default/scheduler-stats/get_pools?detail=True");
    let caps = &pools["pools"][0]["capabilities"];
    assert_eq!(pools["pools"][0]["name"], "keel@keel#pool");
    assert_eq!(caps["volume_backend_name"], "keel");
    assert!(caps["total_capacity_gb"].as_u64().is_some(), "{pools}");
    assert_eq!(
        get("/v3/default/capabilities/keel@keel")["storage_protocol"],
        "NVMe-oF"
    );
    let hosts = get("/v3/default/os-hosts");
    assert_eq!(hosts["hosts"][0]["service-status"], "available", "{hosts}");
    let host = hosts["hosts"][0]["host_name"]
        .as_str()
        .expect("host")
        .to_owned();
    c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 2, "name": "counted"}})),
        StatusCode::ACCEPTED,
    );
    let shown = get(&format!("/v3/default/os-hosts/{host}"));
    assert_eq!(
        shown["host"][0]["resource"]["total_volume_gb"], "2",
        "{shown}"
    );
    assert_eq!(
        get("/v3/default/clusters/detail")["clusters"][0]["num_hosts"],
        1
    );
    assert_eq!(get("/v3/default/extensions")["extensions"], json!([]));
    assert_eq!(
        get("/v3/default/resource_filters")["resource_filters"][0]["resource"],
        "volume"
    );
    assert_eq!(
        get("/v3/default/os-quota-class-sets/default")["quota_class_set"]["gigabytes"],
        -1
    );
    let (status, body) = c.req(
        Method::PUT,
        "/v3/default/os-quota-class-sets/default",
        Some(json!({"quota_class_set": {"gigabytes": 10}})),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let cleanup = c.ok(
        Method::POST,
        "/v3/default/workers/cleanup",
        Some(json!({})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(cleanup, json!({"cleaning": [], "unavailable": []}));

    // Deleting a project's quota set takes its gigabytes limit away.
    c.ok(
        Method::PUT,
        "/v3/default/os-quota-sets/default",
        Some(json!({"quota_set": {"gigabytes": 3}})),
        StatusCode::OK,
    );
    let (status, _) = c.req(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 2, "name": "over"}})),
    );
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    c.ok(
        Method::DELETE,
        "/v3/default/os-quota-sets/default",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        get("/v3/default/os-quota-sets/default")["quota_set"]["gigabytes"],
        -1
    );
    c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 2, "name": "over"}})),
        StatusCode::ACCEPTED,
    );
}

#[test]
fn cinder_names_are_free_text_and_need_not_be_unique() {
    let c = Cinder::start();
    let create = |name: &str| {
        c.ok(
            Method::POST,
            "/v3/default/volumes",
            Some(json!({"volume": {"size": 1, "name": name}})),
            StatusCode::ACCEPTED,
        )["volume"]
            .clone()
    };
    let spaced = create("my data disk");
    let first = create("db");
    let second = create("db");
    assert_eq!(spaced["name"], "my data disk");
    assert_eq!(
        (first["name"].as_str(), second["name"].as_str()),
        (Some("db"), Some("db"))
    );
    let id = |v: &Value| v["id"].as_str().expect("id").to_owned();
    // Keel keeps a valid, unique name for each: the Cinder name where it can.
    let keel_name = |v: &Value| c.keeld.wait_volume_state(&id(v), "Available")["name"].clone();
    assert_eq!(keel_name(&first), "db");
    assert_eq!(
        keel_name(&second),
        format!("volume-{}", id(&second)).as_str()
    );
    assert_eq!(
        keel_name(&spaced),
        format!("volume-{}", id(&spaced)).as_str()
    );
    let listed = c.ok(
        Method::GET,
        "/v3/default/volumes?name=db",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        listed["volumes"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    // A rename is Cinder's; the Keel name hosts and other dialects know stays.
    let renamed = c.ok(
        Method::PUT,
        &format!("/v3/default/volumes/{}", id(&first)),
        Some(json!({"volume": {"name": "db primary"}})),
        StatusCode::OK,
    );
    assert_eq!(renamed["volume"]["name"], "db primary");
    assert_eq!(keel_name(&first), "db");
    assert_eq!(
        c.ok(
            Method::GET,
            "/v3/default/volumes?name=db",
            None,
            StatusCode::OK
        )["volumes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        c.ok(
            Method::GET,
            &format!("/v3/default/volumes/{}/metadata", id(&spaced)),
            None,
            StatusCode::OK
        )["metadata"],
        json!({}),
        "the Cinder name is not metadata"
    );
}

#[test]
fn snapshot_names_descriptions_and_metadata_are_cinders() {
    let c = Cinder::start();
    let v = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "v"}})),
        StatusCode::ACCEPTED,
    );
    let volume = v["volume"]["id"].as_str().expect("id").to_owned();
    let snap = |name: &str| {
        c.ok(
            Method::POST,
            "/v3/default/snapshots",
            Some(json!({"snapshot": {"volume_id": volume, "name": name, "metadata": {"why": "upgrade"}}})),
            StatusCode::ACCEPTED,
        )["snapshot"]
            .clone()
    };
    let first = snap("before upgrade");
    let second = snap("before upgrade");
    assert_eq!(first["name"], "before upgrade");
    assert_eq!(second["name"], "before upgrade");
    assert_eq!(first["metadata"], json!({"why": "upgrade"}));
    let id = first["id"].as_str().expect("id").to_owned();
    let listed = c.ok(
        Method::GET,
        "/v3/default/snapshots?name=before%20upgrade",
        None,
        StatusCode::OK,
    );
    assert_eq!(
        listed["snapshots"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let keel = c
        .keeld
        .get(&format!("/api/v2/snapshots/{id}?projectName=default"));
    assert_eq!(
        keel.body["name"],
        format!("snapshot-{id}").as_str(),
        "{}",
        keel.body
    );

    let path = format!("/v3/default/snapshots/{id}");
    let updated = c.ok(
        Method::PUT,
        &path,
        Some(json!({"snapshot": {"name": "kept", "description": "the good one"}})),
        StatusCode::OK,
    );
    assert_eq!(
        (
            updated["snapshot"]["name"].as_str(),
            updated["snapshot"]["description"].as_str()
        ),
        (Some("kept"), Some("the good one"))
    );
    let meta = format!("{path}/metadata");
    c.ok(
        Method::POST,
        &meta,
        Some(json!({"metadata": {"owner": "ops"}})),
        StatusCode::OK,
    );
    assert_eq!(
        c.ok(Method::GET, &meta, None, StatusCode::OK)["metadata"],
        json!({"why": "upgrade", "owner": "ops"})
    );
    c.ok(
        Method::PUT,
        &format!("{meta}/owner"),
        Some(json!({"meta": {"owner": "dev"}})),
        StatusCode::OK,
    );
    assert_eq!(
        c.ok(Method::GET, &format!("{meta}/owner"), None, StatusCode::OK),
        json!({"meta": {"owner": "dev"}})
    );
    c.ok(
        Method::PUT,
        &meta,
        Some(json!({"metadata": {"only": "this"}})),
        StatusCode::OK,
    );
    c.ok(
        Method::DELETE,
        &format!("{meta}/only"),
        None,
        StatusCode::OK,
    );
    let (status, _) = c.req(Method::DELETE, &format!("{meta}/only"), None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let shown = c.ok(Method::GET, &path, None, StatusCode::OK)["snapshot"].clone();
    assert_eq!(shown["metadata"], json!({}));
    assert_eq!(shown["name"], "kept", "metadata writes keep the name");
    let (status, _) = c.req(
        Method::POST,
        &meta,
        Some(json!({"metadata": {"cinder.name": "x"}})),
    );
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[test]
fn a_projects_default_type_applies_to_its_new_volumes_and_services_stay_enabled() {
    let c = Cinder::start();
    let t = c.ok(
        Method::POST,
        "/v3/default/types",
        Some(
            json!({"volume_type": {"name": "packed", "extra_specs": {"compression": "<is> True"}}}),
        ),
        StatusCode::OK,
    );
    let type_id = t["volume_type"]["id"].as_str().expect("id").to_owned();
    let set = c.ok(
        Method::PUT,
        "/v3/default-types/default",
        Some(json!({"default_type": {"volume_type": "packed"}})),
        StatusCode::OK,
    );
    assert_eq!(
        set["default_type"],
        json!({"project_id": "default", "volume_type_id": type_id})
    );
    assert_eq!(
        c.ok(Method::GET, "/v3/default-types", None, StatusCode::OK)["default_types"][0]
            ["volume_type_id"],
        type_id.as_str()
    );
    let v = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "defaulted"}})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(v["volume"]["volume_type"], "packed");
    let id = v["volume"]["id"].as_str().expect("id").to_owned();
    assert_eq!(
        c.keeld.wait_volume_state(&id, "Available")["compression"],
        "true"
    );
    let (status, _) = c.req(
        Method::DELETE,
        &format!("/v3/default/types/{type_id}"),
        None,
    );
    assert_eq!(status, StatusCode::BAD_REQUEST, "a type in use stays");
    c.ok(
        Method::DELETE,
        "/v3/default-types/default",
        None,
        StatusCode::NO_CONTENT,
    );
    let (status, _) = c.req(Method::GET, "/v3/default-types/default", None);
    assert_eq!(status, StatusCode::NOT_FOUND);
    let plain = c.ok(
        Method::POST,
        "/v3/default/volumes",
        Some(json!({"volume": {"size": 1, "name": "plain"}})),
        StatusCode::ACCEPTED,
    );
    assert_eq!(plain["volume"]["volume_type"], "__DEFAULT__");

    let enabled = c.ok(
        Method::PUT,
        "/v3/default/os-services/enable",
        Some(json!({"host": "node@keel", "binary": "cinder-volume"})),
        StatusCode::OK,
    );
    assert_eq!(enabled["status"], "enabled");
    for action in ["disable", "disable-log-reason", "set-log"] {
        let (status, body) = c.req(
            Method::PUT,
            &format!("/v3/default/os-services/{action}"),
            Some(json!({"host": "node@keel", "binary": "cinder-volume"})),
        );
        assert_eq!(status, StatusCode::BAD_REQUEST, "{action}: {body}");
    }
}
