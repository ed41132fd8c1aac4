//! System tests of the KumoScale Provisioner dialect against the real keeld:
//! its own HTTPS listener, the documents' request shapes (with curl too),
//! the result codes of every refusal (each leaving nothing changed), and
//! the same volumes seen through the Lightbits API and over NVMe/TCP.

mod common;

use std::process::Command;

use bytes::Bytes;
use common::{pattern, Keeld, KeeldOptions};
use nvmf_target::Lba;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0000-4000-8000-00000000000a";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:0b0b0b0b-0000-4000-8000-00000000000b";
const HOST_A_ID: &str = "a0a0a0a0-0000-4000-8000-00000000000a";
const GIB: u64 = 1 << 30;

/// A keeld serving the dialect, and a logged-in client for it.
struct Provisioner {
    keeld: Keeld,
    url: String,
}

impl Provisioner {
    fn start() -> Provisioner {
        Provisioner::start_with_pool("1GiB")
    }

    /// With a pool file of `pool_size` (sparse), for reserved space to fit.
    fn start_with_pool(pool_size: &str) -> Provisioner {
        let [port] = common::ports::unused_ports();
        let mut keeld = Keeld::start(KeeldOptions {
            pool_size: pool_size.to_owned(),
            extra_args: vec!["--kumoscale-listen".to_owned(), format!("127.0.0.1:{port}")],
            ..KeeldOptions::default()
        });
        keeld.login();
        Provisioner {
            keeld,
            url: format!("https://127.0.0.1:{port}"),
        }
    }

    /// Calls the dialect with the admin's token; the answer's status and body.
    fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self
            .keeld
            .client()
            .request(method, format!("{}{path}", self.url));
        if let Some(token) = self.keeld.token() {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req
            .send()
            .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.keeld.log_tail()));
        let status = resp.status();
        let text = resp.text().expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> Value {
        let (status, body) = self.call(Method::GET, path, None);
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        body
    }

    /// A changing call: HTTP 200 and the result code in the body.
    fn act(&self, method: Method, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(method, path, Some(body));
        assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        assert!(
            answer["description"].is_string(),
            "{path}: no description in {answer}"
        );
        answer
    }

    /// Asserts a changing call ends with `code`.
    fn expect(&self, method: Method, path: &str, body: Value, code: &str) -> Value {
        let answer = self.act(method, path, body);
        assert_eq!(answer["status"], code, "{path}: {answer}");
        answer
    }
}

fn volume_of<'a>(list: &'a Value, alias: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|v| v["alias"] == alias)
}

#[test]
fn tenants_volumes_snapshots_and_clones_keep_the_documents_result_codes() {
    let p = Provisioner::start();
    let tenants = p.get("/tenants");
    assert!(
        tenants
            .as_array()
            .expect("array")
            .iter()
            .any(|t| t["tenantId"] == "0" && t["name"] == "default"),
        "{tenants}"
    );

    // A tenant with a 1 GB budget: a 2 GiB volume is over it.
    let created = p.expect(
        Method::POST,
        "/tenants",
        json!({"name": "TEST_TENANT", "capacity": 1, "totalIOPS": 1000000, "totalBW": 1000000}),
        "Success",
    );
    let tenant = created["tenantId"].as_str().expect("tenantId").to_owned();
    let vols = format!("/{tenant}/volumes");
    let vol_uuid = "11111111-2222-4333-8444-555555555555";
    let create = json!({
        "capacity": 2, "alias": "vol1", "uuid": vol_uuid, "provisioningType": "THIN",
        "protocol": "NVMeoF", "reservedSpacePercentage": 10,
        "storageClass": {"sameRackAllowed": true, "numReplicas": 1, "blockSize": 4096, "name": "gold"}
    });
    p.expect(
        Method::POST,
        &vols,
        create.clone(),
        "TenantCapacityExceeded",
    );
    assert_eq!(p.get(&vols), json!([]), "a refused create leaves nothing");
    p.expect(
        Method::PUT,
        &format!("/tenants/{tenant}"),
        json!({"tenantId": tenant, "capacity": 10, "totalIOPS": 1000000, "totalBW": 1000000}),
        "Success",
    );
    p.expect(Method::POST, &vols, create.clone(), "Success");
    p.expect(Method::POST, &vols, create.clone(), "AlreadyExists");

    // Refusals, each changing nothing.
    let mut thick = create.clone();
    thick["alias"] = json!("thick");
    thick["uuid"] = json!(null);
    thick["provisioningType"] = json!("THICK");
    p.expect(Method::POST, &vols, thick, "NoMatchingBackend");
    p.expect(
        Method::POST,
        &vols,
        json!({"capacity": 1, "provisioningType": "THIN"}),
        "InvalidInput",
    );
    p.expect(
        Method::POST,
        &vols,
        json!({"capacity": 1, "alias": "bs", "provisioningType": "THIN", "storageClass": {"blockSize": 1}}),
        "InvalidInput",
    );
    p.expect(
        Method::POST,
        &vols,
        json!({"capacity": 1, "alias": "qos", "provisioningType": "THIN", "storageClass": {"maxIOPSPerGB": 100}}),
        "InvalidInput",
    );
    p.expect(
        Method::POST,
        &vols,
        json!({"capacity": 1, "alias": "r3", "provisioningType": "THIN", "storageClass": {"numReplicas": 3}}),
        "NotEnoughMatchingBackends",
    );
    for class in [
        json!({"shareSSDBetweenVolumes": false, "name": "x"}),
        json!({"allowSpan": false}),
    ] {
        p.expect(
            Method::POST,
            &vols,
            json!({"capacity": 1, "alias": "cls", "provisioningType": "THIN", "storageClass": class}),
            "NoMatchingBackend",
        );
    }
    p.expect(
        Method::POST,
        &vols,
        json!({"capacity": 1, "alias": "t", "provisioningType": "THIN", "tenantId": "0"}),
        "InvalidInput",
    );
    let (status, bad) = p.call(Method::POST, &vols, None);
    assert_eq!(
        (status, bad["status"].as_str()),
        (StatusCode::OK, Some("InvalidInput")),
        "{bad}"
    );
    p.expect(
        Method::POST,
        "/no-such-tenant/volumes",
        json!({"capacity": 1, "alias": "x", "provisioningType": "THIN"}),
        "TenantNotFound",
    );
    let listed = p.get(&vols);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let vol = volume_of(&listed, "vol1").expect("vol1");
    assert_eq!(vol["uuid"], vol_uuid);
    assert_eq!(vol["capacity"], 2 * GIB);
    assert_eq!(vol["blockSize"], "4KB");
    assert_eq!(vol["provisioningType"], "THIN");
    assert_eq!(vol["reservedSpace"], 2 * GIB / 100 * 10);
    assert_eq!(vol["tenantId"], tenant);
    assert_eq!(vol["storageClassName"], "gold");
    assert_eq!(
        p.get(&format!("/{tenant}/volumes_by_alias/vol1"))[0]["uuid"],
        vol_uuid
    );
    assert_eq!(
        p.get(&format!("/{tenant}/volume_extended/{vol_uuid}"))["location"][0]["subVolumes"][0]
            ["capacity"],
        2 * GIB
    );

    // The same volume through the Lightbits API of the same keeld.
    let lb = p
        .keeld
        .get(&format!("/api/v2/projects/{tenant}/volumes/{vol_uuid}"));
    assert_eq!(lb.status, StatusCode::OK, "{}", lb.body);
    assert_eq!(lb.body["name"], "vol1");
    assert_eq!(lb.body["size"], (2 * GIB).to_string());

    // Expand takes GB: 2 GB is less than 2 GiB, 11 GB is over the budget.
    let one = format!("/{tenant}/volumes/{vol_uuid}");
    p.expect(
        Method::PATCH,
        &one,
        json!({"newCapacity": 2}),
        "InvalidSize",
    );
    p.expect(
        Method::PATCH,
        &one,
        json!({"newCapacity": 11}),
        "TenantCapacityExceeded",
    );
    p.expect(Method::PATCH, &one, json!({"newCapacity": 3}), "Success");
    assert_eq!(
        p.get(&one)[0]["capacity"],
        3_000_000_000u64.div_ceil(4096) * 4096
    );
    let t = p.get("/tenants");
    let t = t
        .as_array()
        .expect("array")
        .iter()
        .find(|t| t["tenantId"] == tenant.as_str())
        .expect("tenant")
        .clone();
    assert_eq!(
        (t["capacity"].as_u64(), t["consumedCapacity"].as_u64()),
        (Some(10), Some(3)),
        "{t}"
    );
    p.expect(
        Method::DELETE,
        &format!("/tenants/{tenant}"),
        json!({}),
        "TenantHasVolumes",
    );

    // Snapshots: the caller's id, listed three ways; the volume is in use.
    let snap_uuid = "22222222-3333-4444-8555-666666666666";
    let snap = p.expect(
        Method::POST,
        &format!("/{tenant}/snapshots"),
        json!({"alias": "TestSnap3", "volumeID": vol_uuid, "snapshotID": snap_uuid, "reservedSpacePercentage": 10}),
        "Success",
    );
    assert_eq!(snap["persistentId"], snap_uuid);
    assert_eq!(
        p.get(&format!("/{tenant}/snapshots"))[0]["snapshotID"],
        snap_uuid
    );
    assert_eq!(
        p.get(&format!("/{tenant}/snapshots_by_vol/{vol_uuid}"))[0]["alias"],
        "TestSnap3"
    );
    assert_eq!(
        p.get(&format!("/{tenant}/snapshots_by_alias/TestSnap3"))[0]["volumeID"],
        vol_uuid
    );
    p.expect(Method::DELETE, &one, json!({}), "VolumeIsInUse");

    // A snapshot volume: writable only, one per snapshot.
    let sv = format!("/{tenant}/snapshot_volume");
    p.expect(
        Method::POST,
        &sv,
        json!({"alias": "sv", "snapshotID": snap_uuid}),
        "InvalidInput",
    );
    let made = p.expect(
        Method::POST,
        &sv,
        json!({"alias": "sv", "snapshotID": snap_uuid, "writable": true}),
        "Success",
    );
    let sv_uuid = made["persistentId"]
        .as_str()
        .expect("persistentId")
        .to_owned();
    p.expect(
        Method::POST,
        &sv,
        json!({"alias": "sv2", "snapshotID": snap_uuid, "writable": true}),
        "AlreadyExists",
    );
    let listed = p.get(&vols);
    assert_eq!(
        volume_of(&listed, "sv").expect("sv")["provisioningType"],
        "OTHER"
    );
    assert_eq!(
        volume_of(&listed, "sv").expect("sv")["snapshotID"],
        snap_uuid
    );
    p.expect(
        Method::DELETE,
        &format!("/{tenant}/snapshots/{snap_uuid}"),
        json!({}),
        "VolumeIsInUse",
    );

    // A clone of the live volume, at least the source's size.
    let clone = p.expect(
        Method::POST,
        &format!("/{tenant}/clone_volume"),
        json!({"sourceVolumeId": vol_uuid, "alias": "cloneVolAlias", "capacity": 20, "reservedSpacePercentage": 10}),
        "TenantCapacityExceeded",
    );
    assert!(
        clone["description"]
            .as_str()
            .is_some_and(|d| d.contains("quota")),
        "{clone}"
    );
    let clone = p.expect(
        Method::POST,
        &format!("/{tenant}/clone_volume"),
        json!({"sourceVolumeId": vol_uuid, "alias": "cloneVolAlias"}),
        "Success",
    );
    let clone_uuid = clone["persistentId"]
        .as_str()
        .expect("persistentId")
        .to_owned();
    let listed = p.get(&vols);
    let c = volume_of(&listed, "cloneVolAlias").expect("clone listed");
    assert_eq!(
        (c["uuid"].as_str(), c["provisioningType"].as_str()),
        (Some(clone_uuid.as_str()), Some("THIN"))
    );

    // Paging by offset and by marker.
    let all: Vec<String> = p
        .get(&vols)
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v["uuid"].as_str().expect("uuid").to_owned())
        .collect();
    assert_eq!(all.len(), 3);
    let page = p.get(&format!("{vols}?limit=1&offset=1"));
    assert_eq!(page[0]["uuid"], all[1].as_str());
    let page = p.get(&format!("{vols}?limit=5&marker={}", all[0]));
    assert_eq!(page.as_array().map(Vec::len), Some(2));

    // Deleting in order empties the tenant, which can then go.
    for id in [&clone_uuid, &sv_uuid] {
        p.expect(
            Method::DELETE,
            &format!("/{tenant}/volumes/{id}"),
            json!({}),
            "Success",
        );
    }
    p.expect(
        Method::DELETE,
        &format!("/{tenant}/snapshots/{snap_uuid}"),
        json!({}),
        "Success",
    );
    p.expect(Method::DELETE, &one, json!({}), "Success");
    p.expect(Method::GET, &one, json!({}), "NotExists");
    assert!(
        common::wait_until(common::WAIT, || p.act(
            Method::DELETE,
            &format!("/tenants/{tenant}"),
            json!({})
        )["status"]
            == "Success"),
        "the emptied tenant was never deleted"
    );
    p.expect(
        Method::DELETE,
        &format!("/tenants/{tenant}"),
        json!({}),
        "TenantNotFound",
    );
}

fn write_read(p: &Provisioner, host: &str, nsid: u32, data: &Bytes) -> Bytes {
    let mut c = p.keeld.connect(host);
    c.set_queue_count(1).expect("queues");
    let mut io = c.connect_io_queue(1).expect("io queue");
    io.write(nsid, Lba(7), data.clone(), 4096).expect("write");
    io.flush(nsid).expect("flush");
    Bytes::from(io.read(nsid, Lba(7), 1, 4096).expect("read"))
}

#[test]
fn publishing_to_a_probed_host_grants_its_nqn_the_namespace_and_unpublishing_takes_it_away() {
    let p = Provisioner::start();
    let vol_uuid = "33333333-4444-4555-8666-777777777777";
    p.expect(
        Method::POST,
        "/0/volumes",
        json!({"capacity": 1, "alias": "pub", "uuid": vol_uuid, "provisioningType": "THIN"}),
        "Success",
    );
    let nsid = p
        .keeld
        .get(&format!("/api/v2/volumes/{vol_uuid}?projectName=default"))
        .body["nsid"]
        .as_u64()
        .expect("nsid") as u32;
    let publish = json!({"hostId": HOST_A_ID, "volId": vol_uuid});
    p.expect(Method::POST, "/0/publish", publish.clone(), "HostNotFound");
    p.expect(
        Method::POST,
        "/host_probe",
        json!({"hostId": HOST_A_ID, "hostNqn": HOST_A, "name": "testhostname", "clientType": "Agent", "duration": 60, "version": "1.0"}),
        "Success",
    );
    p.expect(
        Method::POST,
        "/host_probe",
        json!({"hostId": HOST_A_ID, "hostNqn": HOST_A, "name": "x", "clientType": "Robot", "duration": 60, "version": "1"}),
        "InvalidInput",
    );
    let hosts = p.get("/hosts");
    assert_eq!(
        (hosts[0]["nqn"].as_str(), hosts[0]["state"].as_str()),
        (Some(HOST_A), Some("available")),
        "{hosts}"
    );
    p.expect(
        Method::POST,
        "/0/publish",
        json!({"hostId": HOST_A_ID, "volId": "44444444-4444-4444-8444-444444444444"}),
        "VolumeNotFound",
    );
    p.expect(Method::POST, "/0/publish", publish.clone(), "Success");
    p.expect(
        Method::POST,
        "/0/publish",
        publish.clone(),
        "AlreadyPublished",
    );
    assert_eq!(p.get("/hosts")[0]["usedNamespacesIds"], json!([nsid]));
    let targets = p.get(&format!("/targets?hostId={HOST_A_ID}"));
    assert_eq!(
        (
            targets[0]["name"].as_str(),
            targets[0]["numNamespaces"].as_u64()
        ),
        (Some(p.keeld.subsystem_nqn.as_str()), Some(1))
    );
    assert_eq!(
        p.get(&format!("/0/volumes?hostID={HOST_A_ID}"))[0]["uuid"],
        vol_uuid
    );
    assert_eq!(
        p.get(&format!("/0/volume_extended/{vol_uuid}"))["location"][0]["sessions"][0]["hostID"],
        HOST_A_ID
    );

    // The published host reads back what it writes; the other sees nothing.
    let data = pattern(4096, 99);
    assert_eq!(write_read(&p, HOST_A, nsid, &data), data);
    let mut other = p.keeld.connect(HOST_B);
    assert!(!other
        .active_namespaces()
        .expect("namespaces")
        .contains(&nsid));

    p.expect(
        Method::DELETE,
        &format!("/hosts/{HOST_A_ID}"),
        json!({}),
        "HostAvailable",
    );
    p.expect(Method::POST, "/0/unpublish", publish.clone(), "Success");
    p.expect(Method::POST, "/0/unpublish", publish, "VolumeNotInHost");
    let mut was = p.keeld.connect(HOST_A);
    assert!(
        !was.active_namespaces().expect("namespaces").contains(&nsid),
        "unpublished, yet still visible"
    );
    assert_eq!(p.get("/0/volumes")[0]["inUse"], false);

    // Operational calls: metrics from real state, refusals the document names.
    let resp = p
        .keeld
        .client()
        .get(format!("{}/metrics", p.url))
        .bearer_auth(p.keeld.token().expect("token"))
        .send()
        .expect("metrics");
    let text = resp.text().expect("metrics text");
    assert!(
        text.contains(&format!(
            "ks_vol_capacity_bytes{{uuid=\"{vol_uuid}\",alias=\"pub\",tenant=\"0\",}} {GIB}"
        )),
        "{text}"
    );
    assert!(
        text.contains("# TYPE ks_node_free_capacity_bytes gauge"),
        "{text}"
    );
    p.expect(
        Method::POST,
        &format!("/0/replica/{vol_uuid}"),
        json!({}),
        "NotReplicated",
    );
    p.expect(
        Method::PATCH,
        &format!("/0/replica/{vol_uuid}/{vol_uuid}"),
        json!({}),
        "NotReplicated",
    );
    p.expect(
        Method::POST,
        "/0/migrate_volume",
        json!({"repId": vol_uuid, "volId": vol_uuid}),
        "NotReplicated",
    );
    assert_eq!(p.get("/tasks"), json!([]));
    let (_, gone) = p.call(Method::DELETE, "/tasks?taskId=t1", None);
    assert_eq!(gone["status"], "NoTask");
    p.expect(
        Method::POST,
        "/forward_log",
        json!({"loggingType": "EVENT", "level": "WARN", "host": "h1", "appName": "csi", "message": "kumoscale-forwarded-line"}),
        "Success",
    );
    assert!(
        common::wait_until(common::WAIT, || p.keeld.logged("kumoscale-forwarded-line")),
        "not in keeld's log"
    );
}

#[test]
fn the_documents_curl_examples_and_bad_input_get_the_dialects_answers() {
    // The examples' 20 GiB volume reserves 10%: 2 GiB must be free.
    let p = Provisioner::start_with_pool("4GiB");
    let token = p.keeld.token().expect("token").to_owned();
    let cert = p.keeld.certificate_path();
    let curl = |method: &str, path: &str, body: Option<&str>, auth: bool| -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "20", "-w", "\n%{http_code}", "--cacert"])
            .arg(&cert)
            .args(["-X", method, "-H", "Content-Type: application/json"]);
        if auth {
            cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = body {
            cmd.args(["-d", body]);
        }
        let out = cmd
            .arg(format!("{}{path}", p.url))
            .output()
            .expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').expect("status line");
        (
            code.trim().parse().expect("code"),
            serde_json::from_str(body).unwrap_or(Value::String(body.into())),
        )
    };
    // Tenant, volume, snapshot, clone and probe examples of the document.
    let (code, t) = curl(
        "POST",
        "/tenants/",
        Some(
            r#"{"tenantId": "5a5a5a5a-0000-4000-8000-000000000001","name":"TEST_TENANT","capacity":1000,"totalIOPS":1000000,"totalBW":1000000}"#,
        ),
        true,
    );
    assert_eq!((code, t["status"].as_str()), (200, Some("Success")), "{t}");
    let tenant = "5a5a5a5a-0000-4000-8000-000000000001";
    let (code, v) = curl(
        "POST",
        &format!("/{tenant}/volumes"),
        Some(
            r#"{"capacity": 20,
"provisioningType": "THIN",
"protocol": "NVMeoF",
"reservedSpacePercentage": 10,
"storageClass": {
 "sameRackAllowed": true,
 "numReplicas": 1,
 "blockSize": 4096
},
"alias": "vol1",
"uuid": "5a5a5a5a-0000-4000-8000-000000000002"}"#,
        ),
        true,
    );
    assert_eq!((code, v["status"].as_str()), (200, Some("Success")), "{v}");
    let (_, s) = curl(
        "POST",
        &format!("/{tenant}/snapshots"),
        Some(
            r#"{"alias":"TestSnap3",
"volumeID":"5a5a5a5a-0000-4000-8000-000000000002",
"snapshotID":"5a5a5a5a-0000-4000-8000-000000000003",
"reservedSpacePercentage":10}"#,
        ),
        true,
    );
    assert_eq!(
        s["persistentId"], "5a5a5a5a-0000-4000-8000-000000000003",
        "{s}"
    );
    let (_, c) = curl(
        "POST",
        &format!("/{tenant}/clone_volume"),
        Some(
            r#"{
"sourceVolumeId":"5a5a5a5a-0000-4000-8000-000000000002",
"alias":"cloneVolAlias",
"capacity":22,
"reservedSpacePercentage":10,
"volumeId":"5a5a5a5a-0000-4000-8000-000000000004"
}"#,
        ),
        true,
    );
    assert_eq!(
        c["persistentId"], "5a5a5a5a-0000-4000-8000-000000000004",
        "{c}"
    );
    let (_, probe) = curl(
        "POST",
        "/host_probe",
        Some(&format!(
            r#"{{"hostId": "{HOST_A_ID}",
   "hostNqn":"nqn.2014-08.org.nvmexpress:NVMf:uuid:5a5a5a5a-0000-4000-8000-000000000005",
   "name":"testhostname",
   "clientType":"Agent",
   "duration": 60,
   "version": "1.0"}}"#
        )),
        true,
    );
    assert_eq!(probe["status"], "Success", "{probe}");
    let (code, info) = curl("GET", "/info", None, true);
    assert_eq!(code, 200);
    assert!(
        info["totalFreeSpace"].as_u64().is_some_and(|f| f > 0),
        "{info}"
    );
    let (_, backends) = curl("GET", "/backends", None, true);
    assert_eq!(
        backends[0]["portals"][0]["port"],
        p.keeld.nvme_addr.port(),
        "{backends}"
    );

    // Bad input: the dialect's own answer, nothing changed.
    let before = p.get(&format!("/{tenant}/volumes"));
    for body in [
        "{",
        "[1,2]",
        r#"{"capacity": "big", "alias": "x"}"#,
        r#"{"capacity": -1, "alias": "x", "provisioningType": "THIN"}"#,
        r#"{"capacity": 1, "alias": "../x", "provisioningType": "THIN"}"#,
    ] {
        let (code, answer) = curl("POST", &format!("/{tenant}/volumes"), Some(body), true);
        assert_eq!(
            (code, answer["status"].as_str()),
            (200, Some("InvalidInput")),
            "{body}: {answer}"
        );
    }
    let (code, answer) = curl("GET", &format!("/{tenant}/volumes/not-a-uuid"), None, true);
    assert_eq!(
        (code, answer["status"].as_str()),
        (200, Some("InvalidInput")),
        "{answer}"
    );
    assert_eq!(
        p.get(&format!("/{tenant}/volumes")),
        before,
        "bad input changed the volumes"
    );
    let (code, answer) = curl("GET", "/tenants", None, false);
    assert_eq!(
        (code, answer["status"].as_str()),
        (401, Some("Unauthorized")),
        "{answer}"
    );
    let (code, answer) = curl("GET", "/no/such/endpoint/here", None, true);
    assert_eq!(
        (code, answer["status"].as_str()),
        (404, Some("NotExists")),
        "{answer}"
    );
    p.keeld.get("/api/v2/cluster");
}

#[test]
fn backend_licence_and_auth_server_administration_answers_the_documents_codes_and_changes_nothing()
{
    let p = Provisioner::start();
    let backends = p.get("/backends");
    let id = backends[0]["persistentID"]
        .as_str()
        .expect("persistentID")
        .to_owned();
    let inventory = p.get("/inventory");
    assert_eq!(
        inventory["inventorySamples"][0]["backends"][0]["hardwareId"],
        id.as_str(),
        "{inventory}"
    );
    assert_eq!(
        inventory["inventorySamples"][0]["backends"][0]["state"],
        "AVAILABLE"
    );

    p.expect(
        Method::POST,
        "/backends",
        json!({"mgmtIPs": ["127.0.0.1"]}),
        "AlreadyExists",
    );
    p.expect(
        Method::POST,
        "/backends",
        json!({"mgmtIPs": ["10.9.9.9"], "rack": "r1"}),
        "NotAvailable",
    );
    p.expect(
        Method::POST,
        "/backends",
        json!({"rack": "r1"}),
        "InvalidInput",
    );
    p.expect(
        Method::PUT,
        &format!("/backends/{id}"),
        json!({"rack": "r2"}),
        "NotAvailable",
    );
    p.expect(
        Method::PUT,
        "/backends/no-such",
        json!({"rack": "r2"}),
        "NotExists",
    );
    p.expect(
        Method::DELETE,
        &format!("/backends/{id}"),
        json!({}),
        "NotAvailable",
    );
    p.expect(Method::DELETE, "/backends/no-such", json!({}), "NotExists");
    p.expect(
        Method::POST,
        "/0/volumes",
        json!({"capacity": 1, "alias": "held", "provisioningType": "THIN"}),
        "Success",
    );
    p.expect(
        Method::DELETE,
        &format!("/backends/{id}"),
        json!({}),
        "BackendHasVolumes",
    );
    p.expect(
        Method::POST,
        "/probe",
        json!({"persistentID": id}),
        "NotAvailable",
    );
    let reset = p.expect(Method::DELETE, "/reset_inventory", json!({}), "Success");
    assert!(reset["id"].is_string(), "{reset}");
    p.expect(
        Method::POST,
        "/license",
        json!({"license": "KEY"}),
        "LicenseError",
    );
    p.expect(
        Method::POST,
        "/LICENSE",
        json!({"license": "KEY"}),
        "LicenseError",
    );
    assert_eq!(p.get("/auth_server")["authenticationMode"], "JWT");
    p.expect(
        Method::POST,
        "/auth_server",
        json!({"provisionerResourceID": "r", "provisionerClientID": "c"}),
        "NotAvailable",
    );
    p.expect(Method::DELETE, "/auth_server", json!({}), "InvalidAuthMode");
    let after = p.get("/backends");
    assert_eq!(after[0]["persistentID"], backends[0]["persistentID"]);
    assert_eq!(after.as_array().map(Vec::len), Some(1));
    assert_eq!(p.get("/license")["type"], "PRODUCTION");
}
