//! System tests of the DMS v1 facade with two real keelds: one's DMS gets
//! its service credentials imported by the other and attaches, lists,
//! refreshes and detaches it; the attach fails until the key is imported;
//! refresh sees the other cluster go down, come back, and present a
//! certificate other than the one pinned at attach.

mod common;

use std::time::{Duration, Instant};

use common::{Keeld, KeeldOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// `host:port` of a keeld's REST API.
fn endpoint(k: &Keeld) -> String {
    k.api_url
        .strip_prefix("https://")
        .expect("https")
        .to_owned()
}

/// Waits for workflow `id` to end; its body.
fn finished(k: &Keeld, id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let w = k.get(&format!("/api/v1/workflows/{id}"));
        assert_eq!(w.status, StatusCode::OK, "{}", w.body);
        if w.body["workflow"]["state"] != "Running" {
            return w.body["workflow"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "workflow {id} never ended: {}",
            w.body
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts an attach of `target` on `dms`; the ended workflow.
fn attach(dms: &Keeld, target: &str) -> Value {
    let a = dms.post("/api/v1/clusters", &json!({"apiEndpoint": target}));
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = a.body["workflowId"]
        .as_str()
        .expect("workflowId")
        .to_owned();
    finished(dms, &id)
}

/// Runs a refresh on `dms`; the ended workflow.
fn refresh(dms: &Keeld) -> Value {
    let a = dms.post("/api/v1/clusters/refresh", &json!({}));
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    finished(dms, a.body["workflowId"].as_str().expect("workflowId"))
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
        api_port: free_port(),
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
    let w = finished(&dms, &id);
    assert_eq!(w["state"], "Failed", "{w}");
    assert_eq!(clusters(&dms).len(), 1);
}
