//! Workflows (thick clones with progress, cancel, 429, paging, 501) and
//! persistence across restarts, including a catalog left mid-operation as kill -9
//! would leave it.

mod common;

use common::{assert_error_body, eventually, Harness};
use reqwest::StatusCode;
use serde_json::{json, Value};

async fn snapshot_of_new_volume(h: &Harness, name: &str) -> String {
    let v = h.create_volume(name, "1 mib").await;
    let (s, snap) = h
        .post(
            "/api/v2/projects/default/snapshots",
            json!({"name": format!("{name}-snap"), "sourceVolumeUUID": v["UUID"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{snap}");
    snap["UUID"].as_str().unwrap().to_owned()
}

async fn workflow_state(h: &Harness, id: &str) -> Value {
    let (s, w) = h.get(&format!("/api/v1/workflows/{id}")).await;
    assert_eq!(s, StatusCode::OK, "{w}");
    w["workflow"].clone()
}

async fn wait_for_state(h: &Harness, id: &str, state: &str) -> Value {
    eventually(&format!("workflow {id} to be {state}"), || async {
        let w = workflow_state(h, id).await;
        (w["state"] == state).then_some(w)
    })
    .await
}

#[tokio::test]
async fn thick_clone_into_a_volume_completes_with_progress() {
    let h = Harness::start().await;
    let snap = snapshot_of_new_volume(&h, "src").await;
    let (s, cluster) = h.get("/api/v2/cluster").await;
    assert_eq!(s, StatusCode::OK);
    let (s, started) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap, "projectName": "default", "clusterId": cluster["UUID"]},
                   "dst": {"name": "copy", "clusterId": cluster["UUID"], "size": "2097152", "verifyClone": true}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{started}");
    let id = started["workflowId"].as_str().unwrap().to_owned();
    let done = wait_for_state(&h, &id, "Completed").await;
    assert_eq!(done["progress"]["percent"], 100);
    assert_eq!(done["type"], "thick clone volume");
    assert_eq!(done["thickCloneVolumeRequest"]["dst"]["name"], "copy");
    assert!(done["endedAt"].is_string());
    let (s, v) = h.get("/api/v2/projects/default/volumes/?name=copy").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["state"], "Available");
    assert_eq!(v["size"], "2097152");
    assert!(v["nsid"].as_u64().unwrap() > 0);
    // A second clone to the same name is 409; a foreign cluster id is 400.
    let (s, _) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "copy"}}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, e) = h
        .post("/api/v1/volumes/thickclone", json!({"src": {"snapId": snap, "projectName": "default", "clusterId": uuid::Uuid::new_v4()}, "dst": {"name": "x"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_error_body(&e);
    let (s, _) = h
        .post("/api/v1/volumes/thickclone", json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "small", "size": "4096"}}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "smaller than the source");
    let (s, _) = h.post("/api/v1/volumes/thickclone", json!({"src": {"snapId": uuid::Uuid::new_v4(), "projectName": "default"}, "dst": {"name": "y"}})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn thick_clone_into_a_snapshot_creates_the_snapshot() {
    let h = Harness::start().await;
    let snap = snapshot_of_new_volume(&h, "src").await;
    let (s, started) = h
        .post("/api/v1/snapshots/thickclone", json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "snap-copy", "description": "full copy"}}))
        .await;
    assert_eq!(s, StatusCode::OK, "{started}");
    let id = started["workflowId"].as_str().unwrap().to_owned();
    let done = wait_for_state(&h, &id, "Completed").await;
    assert_eq!(done["type"], "thick clone snapshot");
    let (s, copy) = h
        .get("/api/v2/projects/default/snapshots/?Name=snap-copy")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(copy["description"], "full copy");
}

#[tokio::test]
async fn cancel_stops_a_running_clone_and_removes_its_destination() {
    let h = Harness::start().await;
    let snap = snapshot_of_new_volume(&h, "src").await;
    h.control.hold_clone_jobs(true);
    let (_, started) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "doomed"}}),
        )
        .await;
    let id = started["workflowId"].as_str().unwrap().to_owned();
    let running = workflow_state(&h, &id).await;
    assert_eq!(running["state"], "Running");
    let (_, dst) = h.get("/api/v2/projects/default/volumes/?name=doomed").await;
    assert_eq!(dst["state"], "Creating");
    let dst_uuid = uuid::Uuid::parse_str(dst["UUID"].as_str().unwrap()).unwrap();
    // The snapshot feeding a running clone cannot be deleted; the destination neither.
    let (s, _) = h
        .delete(&format!("/api/v2/projects/default/snapshots/{snap}"))
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    let (s, e) = h.delete(&format!("/api/v2/volumes/{dst_uuid}")).await;
    assert!(
        s == StatusCode::CONFLICT || s == StatusCode::SERVICE_UNAVAILABLE,
        "deleting a running clone's destination: {s} {e}"
    );
    let (s, _) = h
        .post(&format!("/api/v1/workflows/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let canceled = wait_for_state(&h, &id, "Canceled").await;
    assert!(canceled["endedAt"].is_string());
    assert_eq!(
        canceled["progress"]["stage"], "Canceled",
        "a canceled copy is not shown as Done: {canceled}"
    );
    let (s, _) = h.get("/api/v2/projects/default/volumes/?name=doomed").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(!h.control.has_volume(dst_uuid));
    let (s, e) = h
        .post(&format!("/api/v1/workflows/{id}/cancel"), json!({}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "cancel of an ended workflow");
    assert_error_body(&e);
    let (s, _) = h
        .post(
            &format!("/api/v1/workflows/{}/cancel", uuid::Uuid::new_v4()),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.get("/api/v1/workflows/not-a-uuid").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn too_many_running_workflows_get_429_and_lists_page() {
    let h = Harness::start_with(|c| c.service.max_running_workflows = 2).await;
    let snap = snapshot_of_new_volume(&h, "src").await;
    h.control.hold_clone_jobs(true);
    let mut ids = Vec::new();
    for i in 0..2 {
        let (s, w) = h.post("/api/v1/volumes/thickclone", json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": format!("c{i}")}})).await;
        assert_eq!(s, StatusCode::OK, "{w}");
        ids.push(w["workflowId"].as_str().unwrap().to_owned());
    }
    let (s, e) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "c9"}}),
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_error_body(&e);
    let (s, _) = h.get("/api/v2/projects/default/volumes/?name=c9").await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a throttled request creates nothing"
    );

    // Paging: newest first, one per page.
    let (s, page1) = h.get("/api/v1/workflows?pageSize=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page1["workflows"][0]["id"], ids[1].as_str());
    let token = page1["nextPageToken"].as_str().unwrap().to_owned();
    assert!(!token.is_empty());
    let (_, page2) = h
        .get(&format!(
            "/api/v1/workflows?pageSize=1&nextPageToken={token}"
        ))
        .await;
    assert_eq!(page2["workflows"][0]["id"], ids[0].as_str());
    assert_eq!(page2["nextPageToken"], "");
    let (s, _) = h.get("/api/v1/workflows?nextPageToken=zzz").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    h.control.hold_clone_jobs(false);
    for id in &ids {
        wait_for_state(&h, id, "Completed").await;
    }
    let (s, _) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "c9"}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "room again once workflows complete");
}

#[tokio::test]
async fn engines_without_thick_clone_answer_501() {
    let h = Harness::start().await;
    let snap = snapshot_of_new_volume(&h, "src").await;
    h.control.disable_clone_jobs();
    let (s, e) = h
        .post(
            "/api/v1/volumes/thickclone",
            json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "c"}}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_IMPLEMENTED);
    assert_error_body(&e);
    let (_, list) = h.get("/api/v1/workflows").await;
    assert_eq!(list["workflows"], json!([]));
    let (s, _) = h.get("/api/v2/projects/default/volumes/?name=c").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn state_survives_a_restart_on_the_same_data_dir() {
    let h = Harness::start().await;
    let v = h.create_volume("durable", "1 gib").await;
    let (s, _) = h
        .put(
            &format!("/api/v2/volumes/{}", v["UUID"].as_str().unwrap()),
            json!({"labels": [{"key": "k", "value": "v"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let snap = snapshot_of_new_volume(&h, "other").await;
    let token = h.token.clone();
    let password = h.admin_password();
    let (_, cluster_before) = h.get("/api/v2/cluster").await;
    let (dir, control, tmp) = h.stop().await;

    let h = Harness::open(dir, control, |_| {}).await;
    assert_eq!(
        h.admin_password(),
        password,
        "the first password is not regenerated"
    );
    let (s, v2) = h
        .call_as(
            Some(&token),
            reqwest::Method::GET,
            &format!("/api/v2/volumes/{}", v["UUID"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "tokens survive a restart");
    assert_eq!(v2["labels"], json!([{"key": "k", "value": "v"}]));
    assert_eq!(v2["nsid"], v["nsid"]);
    let (s, _) = h
        .get(&format!("/api/v2/projects/default/snapshots/{snap}"))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, cluster_after) = h.get("/api/v2/cluster").await;
    assert_eq!(cluster_after["UUID"], cluster_before["UUID"]);
    drop(tmp);
}

/// Rewrites the persisted catalog as a kill -9 in the middle of operations would
/// leave it, then restarts and checks reconciliation finishes or undoes each one.
#[tokio::test]
async fn restart_reconciles_operations_cut_short() {
    let h = Harness::start().await;
    let deleting = h.create_volume("was-deleting", "1 mib").await;
    let creating_done = h.create_volume("engine-has-it", "1 mib").await;
    let creating_lost = h.create_volume("engine-lacks-it", "1 mib").await;
    let updating = h.create_volume("was-updating", "1 mib").await;
    let snap = snapshot_of_new_volume(&h, "clone-src").await;
    h.control.hold_clone_jobs(true);
    let (_, wf) = h.post("/api/v1/volumes/thickclone", json!({"src": {"snapId": snap, "projectName": "default"}, "dst": {"name": "cut-short"}})).await;
    let wf_id = wf["workflowId"].as_str().unwrap().to_owned();
    let (_, cut) = h
        .get("/api/v2/projects/default/volumes/?name=cut-short")
        .await;
    let (dir, control, tmp) = h.stop().await;

    let uuid = |v: &Value| uuid::Uuid::parse_str(v["UUID"].as_str().unwrap()).unwrap();
    {
        use mgmt_api::Control;
        control.delete_volume(uuid(&creating_lost)).unwrap();
    }
    let path = dir.join("catalog.json");
    let mut catalog: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    for (v, state) in [
        (&deleting, "Deleting"),
        (&creating_done, "Creating"),
        (&creating_lost, "Creating"),
        (&updating, "Updating"),
    ] {
        catalog["volumes"][v["UUID"].as_str().unwrap()]["state"] = json!(state);
    }
    std::fs::write(&path, serde_json::to_vec(&catalog).unwrap()).unwrap();

    let h = Harness::open(dir, control, |_| {}).await;
    eventually("the interrupted delete to finish", || async {
        (h.get(&format!("/api/v2/volumes/{}", uuid(&deleting)))
            .await
            .0
            == StatusCode::NOT_FOUND)
            .then_some(())
    })
    .await;
    assert!(!h.control.has_volume(uuid(&deleting)));
    let (_, done) = h
        .get(&format!("/api/v2/volumes/{}", uuid(&creating_done)))
        .await;
    assert_eq!(done["state"], "Available");
    let (s, _) = h
        .get(&format!("/api/v2/volumes/{}", uuid(&creating_lost)))
        .await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "a Creating volume without engine volume is removed"
    );
    let (_, up) = h.get(&format!("/api/v2/volumes/{}", uuid(&updating))).await;
    assert_eq!(up["state"], "Available");
    let w = workflow_state(&h, &wf_id).await;
    assert_eq!(w["state"], "Failed");
    let (s, _) = h.get(&format!("/api/v2/volumes/{}", uuid(&cut))).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "the clone destination is removed");
    assert!(!h.control.has_volume(uuid(&cut)));
    drop(tmp);
}
