//! System tests of the DMS v1 facade with two real keelds: one's DMS gets
//! its service credentials imported by the other and attaches, lists,
//! refreshes and detaches it; the attach fails until the key is imported;
//! refresh sees the other cluster go down, come back, and present a
//! certificate other than the one pinned at attach.

mod common;

use common::{Keeld, KeeldOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// `host:port` of a keeld's REST API.
fn endpoint(k: &Keeld) -> String {
    k.api_url
        .strip_prefix("https://")
        .expect("https")
        .to_owned()
}

/// Starts an attach of `target` on `dms`; the ended workflow.
fn attach(dms: &Keeld, target: &str) -> Value {
    let a = dms.post("/api/v1/clusters", &json!({"apiEndpoint": target}));
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = a.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    dms.wait_workflow(&id)
}

/// Runs a refresh on `dms`; the ended workflow.
fn refresh(dms: &Keeld) -> Value {
    let a = dms.post("/api/v1/clusters/refresh", &json!({}));
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    dms.wait_workflow(a.body["workflowId"].as_str().expect("workflowId"))
}

fn clusters(dms: &Keeld) -> Vec<Value> {
    let a = dms.get("/api/v1/clusters");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["clusters"].as_array().expect("clusters").clone()
}

#[test]
fn a_dms_attaches_lists_refreshes_and_detaches_another_cluster_by_its_imported_key() {
    let mut dms = Keeld::start_default();
    dms.login();
    let mut other = Keeld::start(KeeldOptions {
        api_port: common::ports::unused_ports::<1>()[0],
        ..KeeldOptions::default()
    });
    other.login();
    let own_id = dms.get("/api/v2/cluster").body["UUID"].clone();
    let other_id = other.get("/api/v2/cluster").body["UUID"].clone();

    // The DMS lists itself first, connected.
    let listed = clusters(&dms);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], own_id);
    assert_eq!(
        listed[0]["clusterConnectionStatus"],
        json!({"accessConnectionStatus": "Connected", "dataConnectionStatus": "Connected"})
    );

    // Without the key imported, the other cluster refuses the DMS.
    let refused = attach(&dms, &endpoint(&other));
    assert_eq!(refused["state"], "Failed", "{refused}");
    assert_eq!(refused["type"], "attach cluster");
    assert!(
        refused["msg"]
            .as_str()
            .is_some_and(|m| m.contains("refused the DMS token")),
        "{refused}"
    );
    assert_eq!(
        refused["attachClusterRequest"],
        json!({"apiEndpoint": endpoint(&other)})
    );
    assert_eq!(clusters(&dms).len(), 1);

    // The document's steps: get the credentials, import them, attach.
    let creds = dms.get("/api/v1/service-credentials");
    assert_eq!(creds.status, StatusCode::OK, "{}", creds.body);
    assert_eq!(creds.body["pubKeyType"], "ec256pubkey");
    let imported = other.post(
        "/api/v2/credentials",
        &json!({"id": creds.body["pubKeyId"], "projectName": "system",
                "type": creds.body["pubKeyType"], "key": creds.body["pubKey"]}),
    );
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    let attached = attach(&dms, &endpoint(&other));
    assert_eq!(attached["state"], "Completed", "{attached}");
    let listed = clusters(&dms);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[1]["id"], other_id);
    assert_eq!(listed[1]["subsystemNqn"], other.subsystem_nqn.as_str());
    assert_eq!(
        listed[1]["discoveryEndpoints"],
        json!([other.discovery_addr.to_string()])
    );
    assert_eq!(
        listed[1]["clusterConnectionStatus"],
        json!({"accessConnectionStatus": "Connected", "dataConnectionStatus": "Connected"})
    );

    // Attaching it again, or the DMS's own cluster, fails.
    let again = attach(&dms, &endpoint(&other));
    assert_eq!(again["state"], "Failed", "{again}");
    // (With its own key imported, the DMS reads itself and refuses.)
    let self_import = dms.post(
        "/api/v2/credentials",
        &json!({"id": creds.body["pubKeyId"], "projectName": "system",
                "type": creds.body["pubKeyType"], "key": creds.body["pubKey"]}),
    );
    assert_eq!(self_import.status, StatusCode::OK, "{}", self_import.body);
    let own = attach(&dms, &endpoint(&dms));
    assert_eq!(own["state"], "Failed", "{own}");
    assert!(
        own["msg"]
            .as_str()
            .is_some_and(|m| m.contains("is this cluster")),
        "{own}"
    );
    assert_eq!(clusters(&dms).len(), 2);

    // A refresh reads it; down, it is Disconnected; back, Connected.
    let r = refresh(&dms);
    assert_eq!(
        (r["state"].as_str(), r["msg"].as_str()),
        (Some("Completed"), Some("1 of 1 clusters answered")),
        "{r}"
    );
    other.terminate();
    let r = refresh(&dms);
    assert_eq!(r["msg"], "0 of 1 clusters answered", "{r}");
    assert_eq!(
        clusters(&dms)[1]["clusterConnectionStatus"],
        json!({"accessConnectionStatus": "Disconnected", "dataConnectionStatus": "Disconnected"})
    );
    other.restart();
    let r = refresh(&dms);
    assert_eq!(r["msg"], "1 of 1 clusters answered", "{r}");
    assert_eq!(
        clusters(&dms)[1]["clusterConnectionStatus"]["accessConnectionStatus"],
        "Connected"
    );

    // A new certificate is not the one pinned at attach: not connected.
    other.terminate();
    for file in ["tls-cert.pem", "tls-key.pem"] {
        std::fs::remove_file(other.data_dir().join("api").join(file)).expect("remove");
    }
    other.restart();
    let r = refresh(&dms);
    assert_eq!(r["msg"], "0 of 1 clusters answered", "{r}");
    assert!(dms.logged("not the one pinned"), "{}", dms.log_tail());
    assert_eq!(
        clusters(&dms)[1]["clusterConnectionStatus"]["accessConnectionStatus"],
        "Disconnected"
    );

    // Detach, and what detach refuses.
    let d = dms.delete(&format!(
        "/api/v1/clusters/{}",
        other_id.as_str().expect("id")
    ));
    assert_eq!((d.status, d.body.clone()), (StatusCode::OK, json!({})));
    assert_eq!(clusters(&dms).len(), 1);
    let d = dms.delete(&format!(
        "/api/v1/clusters/{}",
        other_id.as_str().expect("id")
    ));
    assert_eq!(d.status, StatusCode::NOT_FOUND, "{}", d.body);
    let d = dms.delete(&format!(
        "/api/v1/clusters/{}",
        own_id.as_str().expect("id")
    ));
    assert_eq!(d.status, StatusCode::BAD_REQUEST, "{}", d.body);
    let d = dms.delete("/api/v1/clusters/not-a-uuid");
    assert_eq!(d.status, StatusCode::BAD_REQUEST, "{}", d.body);
}

#[test]
fn bad_attach_requests_are_refused_before_any_workflow_and_attach_workflows_are_not_canceled() {
    let mut dms = Keeld::start_default();
    dms.login();
    let before = dms.get("/api/v1/workflows").body;
    for body in [
        json!({}),
        json!({"apiEndpoint": ""}),
        json!({"apiEndpoint": "10.0.0.1"}),
        json!({"apiEndpoint": "https://10.0.0.1:443"}),
        json!({"apiEndpoint": "host:70000"}),
        json!({"apiEndpoint": 443}),
        json!({"apiEndpoint": "127.0.0.1:1", "extra": true}),
    ] {
        let a = dms.post("/api/v1/clusters", &body);
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{body}: {}", a.body);
    }
    assert_eq!(
        dms.get("/api/v1/workflows").body,
        before,
        "a refused attach made a workflow"
    );
    // Nothing listens on port 1 of loopback: the attach fails as Disconnected.
    let a = dms.post("/api/v1/clusters", &json!({"apiEndpoint": "127.0.0.1:1"}));
    let id = a.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    let cancel = dms.post(&format!("/api/v1/workflows/{id}/cancel"), &json!({}));
    assert_eq!(cancel.status, StatusCode::BAD_REQUEST, "{}", cancel.body);
    let w = dms.wait_workflow(&id);
    assert_eq!(w["state"], "Failed", "{w}");
    assert_eq!(clusters(&dms).len(), 1);
}

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0000-4000-8000-00000000000a";
const MIB: u64 = 1 << 20;

/// Two keelds, the second attached to the first's DMS.
fn attached_pair() -> (Keeld, Keeld) {
    let mut dms = Keeld::start_default();
    dms.login();
    let mut other = Keeld::start_default();
    other.login();
    let creds = dms.get("/api/v1/service-credentials").body;
    let imported = other.post(
        "/api/v2/credentials",
        &json!({"id": creds["pubKeyId"], "projectName": "system",
                "type": creds["pubKeyType"], "key": creds["pubKey"]}),
    );
    assert_eq!(imported.status, StatusCode::OK, "{}", imported.body);
    let attached = attach(&dms, &endpoint(&other));
    assert_eq!(attached["state"], "Completed", "{attached}");
    (dms, other)
}

/// Reads `blocks` 4 KiB blocks at `lba` of volume `uuid` on `k` as HOST_A
/// (granting it first).
fn read_as_host(k: &Keeld, uuid: &str, lba: u64, blocks: u32) -> Vec<u8> {
    let grant = k.put(
        &format!("/api/v2/projects/default/volumes/{uuid}"),
        &json!({"acl": {"values": [HOST_A]}}),
    );
    assert_eq!(grant.status, StatusCode::OK, "{}", grant.body);
    let nsid = k.wait_volume_state(uuid, "Available")["nsid"]
        .as_u64()
        .expect("nsid") as u32;
    let mut host = k.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    io.read(nsid, nvmf_target::Lba(lba), blocks, 4096)
        .expect("read")
}

fn volume_names(k: &Keeld) -> Vec<String> {
    let mut names: Vec<String> = k.get("/api/v2/volumes").body["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    names.sort();
    names
}

#[test]
fn thick_clones_copy_a_snapshot_to_another_cluster_and_back_over_nvme() {
    let (dms, other) = attached_pair();
    let dms_id = dms.get("/api/v2/cluster").body["UUID"].clone();
    let other_id = other.get("/api/v2/cluster").body["UUID"].clone();

    // A source with data in two places and zeros elsewhere, snapshotted.
    let src = dms.create_volume("src", 64 * MIB, &[HOST_A]);
    let src_uuid = src["UUID"].as_str().expect("UUID").to_owned();
    let nsid = src["nsid"].as_u64().expect("nsid") as u32;
    let (a, b) = (common::pattern(4096, 31), common::pattern(4096, 32));
    {
        let mut host = dms.connect(HOST_A);
        host.set_queue_count(1).expect("queues");
        let mut io = host.connect_io_queue(1).expect("io queue");
        io.write(nsid, nvmf_target::Lba(7), a.clone(), 4096)
            .expect("write");
        io.write(nsid, nvmf_target::Lba(9000), b.clone(), 4096)
            .expect("write");
        io.flush(nsid).expect("flush");
    }
    let snap = dms.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "s1", "sourceVolumeUUID": src_uuid}),
    );
    assert_eq!(snap.status, StatusCode::OK, "{}", snap.body);
    let snap_uuid = snap.body["UUID"].as_str().expect("UUID").to_owned();

    // Into a volume on the other cluster, verified.
    let w = dms.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap_uuid, "projectName": "default", "clusterId": dms_id},
                "dst": {"name": "copy", "clusterId": other_id, "verifyClone": true}}),
    );
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    let done = dms.wait_workflow(w.body["workflowId"].as_str().expect("workflowId"));
    assert_eq!(done["state"], "Completed", "{done}\n{}", dms.log_tail());
    assert_eq!(done["type"], "thick clone volume");
    let copy_uuid = done["msg"]
        .as_str()
        .and_then(|m| m.strip_prefix("volume "))
        .and_then(|m| m.split(' ').next())
        .expect("the message names the volume")
        .to_owned();
    let copy = other.wait_volume_state(&copy_uuid, "Available");
    assert_eq!(copy["name"], "copy");
    assert_eq!(copy["size"], (64 * MIB).to_string());
    assert_eq!(
        copy["acl"],
        json!({"values": ["ALLOW_NONE"]}),
        "the DMS's grant was taken back"
    );
    let logical: u64 = copy["statistics"]["logicalUsedStorage"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("logicalUsedStorage");
    assert!(
        logical <= 2 * 4096,
        "zeros were written: {logical} bytes used"
    );
    assert_eq!(read_as_host(&other, &copy_uuid, 7, 1), a.to_vec());
    assert_eq!(read_as_host(&other, &copy_uuid, 9000, 1), b.to_vec());
    assert_eq!(read_as_host(&other, &copy_uuid, 100, 1), vec![0; 4096]);
    assert_eq!(
        volume_names(&dms),
        ["src"],
        "the source's temporary clone stayed"
    );

    // Back again, into a snapshot on the DMS's own cluster.
    let back = other.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "copy-snap", "sourceVolumeUUID": copy_uuid}),
    );
    assert_eq!(back.status, StatusCode::OK, "{}", back.body);
    let w = dms.post(
        "/api/v1/snapshots/thickclone",
        &json!({"src": {"snapId": back.body["UUID"], "projectName": "default", "clusterId": other_id},
                "dst": {"name": "returned", "clusterId": dms_id, "description": "round trip"}}),
    );
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    let done = dms.wait_workflow(w.body["workflowId"].as_str().expect("workflowId"));
    assert_eq!(done["state"], "Completed", "{done}\n{}", dms.log_tail());
    let returned = dms.get("/api/v2/snapshots/?Name=returned&projectName=default");
    assert_eq!(returned.status, StatusCode::OK, "{}", returned.body);
    assert_eq!(returned.body["description"], "round trip");
    let through = returned.body["sourceVolumeUUID"]
        .as_str()
        .expect("volume")
        .to_owned();
    assert_eq!(read_as_host(&dms, &through, 9000, 1), b.to_vec());
    assert_eq!(
        volume_names(&other),
        ["copy"],
        "the source's temporary clone stayed"
    );

    // What cannot be done is refused, or fails as a workflow.
    let unknown = dms.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap_uuid, "projectName": "default"},
                "dst": {"name": "x", "clusterId": "5a5a5a5a-0000-4000-8000-000000000001"}}),
    );
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{}", unknown.body);
    let w = dms.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap_uuid, "projectName": "default"},
                "dst": {"name": "x", "clusterId": other_id, "sectorSize": 512}}),
    );
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    let failed = dms.wait_workflow(w.body["workflowId"].as_str().expect("workflowId"));
    assert_eq!(failed["state"], "Failed", "{failed}");
    let w = dms.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": snap_uuid, "projectName": "default"},
                "dst": {"name": "copy", "clusterId": other_id}}),
    );
    let failed = dms.wait_workflow(w.body["workflowId"].as_str().expect("workflowId"));
    assert_eq!(
        failed["state"], "Failed",
        "a name taken on the destination: {failed}"
    );
    let through_volume = format!("thickclone-{}", done["id"].as_str().unwrap_or_default());
    assert_eq!(volume_names(&dms), ["src".to_owned(), through_volume]);
    assert_eq!(volume_names(&other), ["copy"]);

    // A cancel stops the copy and removes what it made on both sides.
    let big = dms.create_volume("big", 1 << 30, &[HOST_A]);
    let big_snap = dms.post(
        "/api/v2/projects/default/snapshots",
        &json!({"name": "big-snap", "sourceVolumeUUID": big["UUID"]}),
    );
    assert_eq!(big_snap.status, StatusCode::OK, "{}", big_snap.body);
    let w = dms.post(
        "/api/v1/volumes/thickclone",
        &json!({"src": {"snapId": big_snap.body["UUID"], "projectName": "default"},
                "dst": {"name": "big-copy", "clusterId": other_id}}),
    );
    let id = w.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    let cancel = dms.post(&format!("/api/v1/workflows/{id}/cancel"), &json!({}));
    assert_eq!(cancel.status, StatusCode::OK, "{}", cancel.body);
    let canceled = dms.wait_workflow(&id);
    assert_eq!(canceled["state"], "Canceled", "{canceled}");
    assert_eq!(volume_names(&other), ["copy"]);
    assert!(!volume_names(&dms)
        .iter()
        .any(|n| n.starts_with("dms-source-")));
}

/// curl as a new user would call the DMS: the answer's status and body.
fn curl(k: &Keeld, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let token = k.token().expect("token");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "--max-time", "30", "-w", "\n%{http_code}", "--cacert"])
        .arg(k.certificate_path())
        .args([
            "-X",
            method,
            "-H",
            &format!("Authorization: Bearer {token}"),
        ]);
    if let Some(body) = body {
        cmd.args(["-H", "Content-Type: application/json", "-d", body]);
    }
    let out = cmd
        .arg(format!("{}{path}", k.api_url))
        .output()
        .expect("curl must be installed");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').expect("status line");
    (
        code.trim().parse().expect("code"),
        serde_json::from_str(body).unwrap_or(Value::String(body.into())),
    )
}

#[test]
fn the_documents_attach_steps_work_with_curl() {
    let mut dms = Keeld::start_default();
    dms.login();
    let mut other = Keeld::start_default();
    other.login();
    // Step 1: the service credentials.
    let (code, creds) = curl(&dms, "GET", "/api/v1/service-credentials", None);
    assert_eq!(code, 200, "{creds}");
    // Steps 2 and 3: the other cluster imports the decoded key.
    // As the document says: `echo <pubKey> | base64 -d > pub-key.pem`.
    let pem = {
        let out = std::process::Command::new("sh")
            .args(["-c", "echo \"$1\" | base64 -d", "sh"])
            .arg(creds["pubKey"].as_str().expect("pubKey"))
            .output()
            .expect("sh and base64");
        String::from_utf8(out.stdout).expect("PEM text")
    };
    assert!(pem.starts_with("-----BEGIN PUBLIC KEY-----"), "{pem}");
    let body = json!({"id": creds["pubKeyId"], "projectName": "system", "type": "ec256pubkey", "key": pem});
    let (code, imported) = curl(
        &other,
        "POST",
        "/api/v2/credentials",
        Some(&body.to_string()),
    );
    assert_eq!(code, 200, "{imported}");
    // Step 4: attach, then follow the workflow and list the clusters.
    let body = json!({"apiEndpoint": endpoint(&other)}).to_string();
    let (code, started) = curl(&dms, "POST", "/api/v1/clusters", Some(&body));
    assert_eq!(code, 200, "{started}");
    let done = dms.wait_workflow(started["workflowId"].as_str().expect("workflowId"));
    assert_eq!(done["state"], "Completed", "{done}");
    let (code, listed) = curl(&dms, "GET", "/api/v1/clusters", None);
    assert_eq!(code, 200);
    assert_eq!(
        listed["clusters"].as_array().map(Vec::len),
        Some(2),
        "{listed}"
    );
    let (code, refreshed) = curl(&dms, "POST", "/api/v1/clusters/refresh", None);
    assert_eq!(code, 200, "{refreshed}");
    let id = listed["clusters"][1]["id"].as_str().expect("id").to_owned();
    let (code, detached) = curl(&dms, "DELETE", &format!("/api/v1/clusters/{id}"), None);
    assert_eq!((code, detached), (200, json!({})));
    let (code, bad) = curl(&dms, "POST", "/api/v1/clusters", Some("{\"apiEndpoint\": "));
    assert_eq!(code, 400, "{bad}");
}
