//! QoS policies over HTTP: the policy resource itself, and that every way a
//! volume comes under a policy (create, update, project default, thick clone,
//! policy change, resize, restart) reaches the port as the absolute limits
//! the target enforces, while a refused request changes nothing.

mod common;

use common::{assert_error_body, eventually, Harness};
use mgmt_api::control::VolumeRateLimits;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

fn uuid_of(v: &Value) -> Uuid {
    Uuid::parse_str(v["UUID"].as_str().expect("UUID")).expect("a UUID")
}

async fn create_policy(h: &Harness, body: Value) -> Value {
    let (s, p) = h.post("/api/v2/qosPolicies", body).await;
    assert_eq!(s, StatusCode::OK, "{p}");
    p
}

fn limits(h: &Harness, volume: &Value) -> VolumeRateLimits {
    h.control
        .rate_limits(uuid_of(volume))
        .expect("the port knows the volume")
}

#[tokio::test]
async fn policies_are_created_listed_read_changed_and_deleted() {
    let h = Harness::start().await;
    let gold = create_policy(
        &h,
        json!({"name": "gold", "description": "fast", "limit": {"limitAbsolute": {
            "readIOPS": 5000, "writeIOPS": "2000", "readMBps": 0, "writeMBps": null}}}),
    )
    .await;
    assert_eq!(gold["name"], "gold");
    assert_eq!(
        gold["projectName"], "",
        "a policy without a project is global"
    );
    assert_eq!(gold["state"], "Active");
    let rates = &gold["limit"]["limitAbsolute"];
    assert_eq!(rates["readIOPS"], 5000);
    assert_eq!(rates["writeIOPS"], 2000, "numeric strings are taken");
    assert!(rates["readMBps"].is_null(), "0 means no limit: {rates}");
    assert!(gold["limit"]["limitPerGb"].is_null());
    let uuid = gold["UUID"].as_str().unwrap().to_owned();

    let (s, got) = h.get(&format!("/api/v2/qosPolicies/{uuid}")).await;
    assert_eq!((s, &got), (StatusCode::OK, &gold));
    let (s, by_name) = h.get("/api/v2/qosPolicies/gold").await;
    assert_eq!((s, &by_name), (StatusCode::OK, &gold));

    let (s, _) = h.post("/api/v2/projects", json!({"name": "p1"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, own) = h
        .post(
            "/api/v2/projects/p1/qosPolicies",
            json!({"name": "p1-slow", "limit": {"limitPerGb": {"totalIOPS": 10}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{own}");
    assert_eq!(own["projectName"], "p1");
    let (s, list) = h.get("/api/v2/qosPolicies").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["qosPolicies"].as_array().unwrap().len(), 2);
    let (s, list) = h.get("/api/v2/projects/default/qosPolicies").await;
    assert_eq!(s, StatusCode::OK);
    let names: Vec<&str> = list["qosPolicies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gold"], "another project's policy is not offered");
    let (s, _) = h.get("/api/v2/projects/default/qosPolicies/p1-slow").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, changed) = h
        .put(
            &format!("/api/v2/qosPolicies/{uuid}"),
            json!({"description": "faster", "limit": {"limitAbsolute": {"totalIOPS": 9000}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{changed}");
    assert_eq!(changed["description"], "faster");
    assert_eq!(changed["limit"]["limitAbsolute"]["totalIOPS"], 9000);
    assert!(
        changed["limit"]["limitAbsolute"]["readIOPS"].is_null(),
        "new rates replace all of them"
    );
    assert_ne!(changed["ETag"], gold["ETag"]);
    let stale = gold["ETag"].as_str().unwrap();
    let (s, b) = h
        .raw(
            Method::DELETE,
            &format!("/api/v2/qosPolicies/{uuid}"),
            Vec::new(),
            &[("If-Match", stale)],
        )
        .await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED, "{b}");
    let (s, _) = h.delete(&format!("/api/v2/qosPolicies/{uuid}")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = h.get(&format!("/api/v2/qosPolicies/{uuid}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_error_body(&b);
}

#[tokio::test]
async fn bad_policies_are_refused_and_change_nothing() {
    let h = Harness::start().await;
    create_policy(
        &h,
        json!({"name": "taken", "limit": {"limitAbsolute": {"readIOPS": 1}}}),
    )
    .await;
    let refused = [
        (
            json!({"limit": {"limitAbsolute": {}}}),
            StatusCode::BAD_REQUEST,
        ),
        (json!({"name": "no-limit"}), StatusCode::BAD_REQUEST),
        (
            json!({"name": "both", "limit": {"limitAbsolute": {}, "limitPerGb": {}}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "neither", "limit": {}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "neg", "limit": {"limitAbsolute": {"readIOPS": -5}}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "typo", "limit": {"limitAbsolute": {"readIops": 5}}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "a/b", "limit": {"limitAbsolute": {}}}),
            StatusCode::BAD_REQUEST,
        ),
        (
            json!({"name": "ghost-project", "projectName": "nope", "limit": {"limitAbsolute": {}}}),
            StatusCode::NOT_FOUND,
        ),
        (
            json!({"name": "taken", "limit": {"limitAbsolute": {}}}),
            StatusCode::CONFLICT,
        ),
    ];
    for (body, status) in refused {
        let (s, b) = h.post("/api/v2/qosPolicies", body.clone()).await;
        assert_eq!(s, status, "{body}: {b}");
        assert_error_body(&b);
    }
    let (_, list) = h.get("/api/v2/qosPolicies").await;
    assert_eq!(list["qosPolicies"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn volumes_get_their_policys_limits_and_follow_its_changes() {
    let h = Harness::start().await;
    let policy = create_policy(
        &h,
        json!({"name": "capped", "limit": {"limitAbsolute": {"writeIOPS": 400, "readMBps": 20}}}),
    )
    .await;
    let (s, v) = h
        .post(
            "/api/v2/volumes",
            json!({"name": "v1", "size": "1 gib", "qosPolicyName": "capped"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["qosPolicyName"], "capped");
    assert_eq!(v["qosPolicyUUID"], policy["UUID"]);
    assert_eq!(
        limits(&h, &v),
        VolumeRateLimits {
            write_iops: Some(400),
            read_bytes_per_second: Some(20_000_000),
            ..VolumeRateLimits::UNLIMITED
        }
    );
    let unlimited = h.create_volume("free", "1 gib").await;
    assert_eq!(limits(&h, &unlimited), VolumeRateLimits::UNLIMITED);

    // A change of the policy reaches its volumes before the answer.
    let (s, _) = h
        .put(
            "/api/v2/qosPolicies/capped",
            json!({"limit": {"limitAbsolute": {"writeIOPS": 800}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(limits(&h, &v).write_iops, Some(800));
    assert_eq!(limits(&h, &v).read_bytes_per_second, None);

    // Moving the volume to a per-GiB policy, then growing it.
    create_policy(
        &h,
        json!({"name": "per-gib", "limit": {"limitPerGb": {"totalIOPS": 100, "writeMBps": 2}}}),
    )
    .await;
    let path = format!("/api/v2/volumes/{}", uuid_of(&v));
    let (s, moved) = h.put(&path, json!({"qosPolicyName": "per-gib"})).await;
    assert_eq!(s, StatusCode::OK, "{moved}");
    assert_eq!(moved["qosPolicyName"], "per-gib");
    assert_ne!(moved["ETag"], v["ETag"]);
    assert_eq!(limits(&h, &v).total_iops, Some(100));
    assert_eq!(limits(&h, &v).write_bytes_per_second, Some(2_000_000));
    let (s, grown) = h.put(&path, json!({"size": "4 gib"})).await;
    assert_eq!(s, StatusCode::OK, "{grown}");
    assert_eq!(
        limits(&h, &v).total_iops,
        Some(400),
        "per-GiB rates follow the size"
    );
    assert_eq!(limits(&h, &v).write_bytes_per_second, Some(8_000_000));

    // A policy in use cannot go; once unused it can.
    let (s, b) = h.delete("/api/v2/qosPolicies/per-gib").await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    assert!(b["message"].as_str().unwrap().contains("v1"), "{b}");
    let (s, _) = h.delete(&path).await;
    assert_eq!(s, StatusCode::OK);
    eventually("the volume to be deleted", || async {
        (h.get(&path).await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    let (s, b) = h.delete("/api/v2/qosPolicies/per-gib").await;
    assert_eq!(s, StatusCode::OK, "{b}");
}

#[tokio::test]
async fn unknown_or_foreign_policies_are_refused_with_the_field_named() {
    let h = Harness::start().await;
    let (s, _) = h.post("/api/v2/projects", json!({"name": "p1"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, p1_policy) = h
        .post(
            "/api/v2/projects/p1/qosPolicies",
            json!({"name": "p1-only", "limit": {"limitAbsolute": {"readIOPS": 10}}}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let v = h.create_volume("kept", "1 gib").await;
    let path = format!("/api/v2/volumes/{}", uuid_of(&v));
    let cases = [
        (json!({"qosPolicyName": "nope"}), "qosPolicyName"),
        (
            json!({"qosPolicyUUID": Uuid::new_v4().to_string()}),
            "qosPolicyUUID",
        ),
        (json!({"qosPolicyName": "p1-only"}), "qosPolicyName"),
        (json!({"qosPolicyUUID": "not-a-uuid"}), "qosPolicyUUID"),
    ];
    for (body, field) in &cases {
        let (s, b) = h.put(&path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        assert!(b["message"].as_str().unwrap().contains(field), "{b}");
        let mut create = body.clone();
        create["name"] = json!("refused");
        create["size"] = json!("1 gib");
        let (s, b) = h.post("/api/v2/volumes", create).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    }
    let (_, after) = h.get(&path).await;
    assert_eq!(after["ETag"], v["ETag"], "refusals changed the volume");
    assert!(after["qosPolicyName"].is_null());
    let (s, _) = h.get("/api/v2/volumes/?name=refused").await;
    assert_eq!(s, StatusCode::NOT_FOUND, "a refused create left a volume");

    // The name and UUID of one policy together are fine; of two, refused.
    create_policy(
        &h,
        json!({"name": "global", "limit": {"limitAbsolute": {"readIOPS": 10}}}),
    )
    .await;
    let (s, b) = h
        .put(
            &path,
            json!({"qosPolicyName": "global", "qosPolicyUUID": p1_policy["UUID"]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = h
        .call_as(
            Some(&h.token),
            Method::POST,
            "/api/v2/projects/p1/volumes",
            Some(json!({"name": "mine", "size": "1 gib", "qosPolicyName": "p1-only"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "a project's own policy is offered: {b}");
}

#[tokio::test]
async fn a_projects_default_policy_applies_to_its_new_volumes_only() {
    let h = Harness::start().await;
    let before = h.create_volume("before", "1 gib").await;
    create_policy(
        &h,
        json!({"name": "house", "limit": {"limitAbsolute": {"totalIOPS": 300}}}),
    )
    .await;
    let (s, p) = h
        .put(
            "/api/v2/projects/default",
            json!({"defaultQosPolicyName": "house"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["defaultQosPolicyName"], "house");
    let (s, p) = h.get("/api/v2/projects/default").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["defaultQosPolicyName"], "house");
    let after = h.create_volume("after", "1 gib").await;
    assert_eq!(after["qosPolicyName"], "house");
    assert_eq!(limits(&h, &after).total_iops, Some(300));
    let (_, before) = h
        .get(&format!("/api/v2/volumes/{}", uuid_of(&before)))
        .await;
    assert!(before["qosPolicyName"].is_null(), "{before}");
    assert_eq!(limits(&h, &before), VolumeRateLimits::UNLIMITED);
    let (s, b) = h.delete("/api/v2/qosPolicies/house").await;
    assert_eq!(s, StatusCode::CONFLICT, "the default of a project: {b}");
    let (s, b) = h
        .put(
            "/api/v2/projects/default",
            json!({"defaultQosPolicyName": "nope"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = h
        .post(
            "/api/v2/projects",
            json!({"name": "p2", "defaultQosPolicyName": "house"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["defaultQosPolicyName"], "house");
}

#[tokio::test]
async fn only_a_cluster_admin_changes_policies_and_project_members_see_theirs() {
    let h = Harness::start().await;
    let (s, _) = h.post("/api/v2/projects", json!({"name": "p1"})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = h
        .post(
            "/api/v2/users",
            json!({"name": "padmin", "password": "password-123", "role": "ProjectAdmin", "projectName": "p1"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let padmin = h.login("padmin", "password-123").await;
    create_policy(
        &h,
        json!({"name": "global", "limit": {"limitAbsolute": {"readIOPS": 10}}}),
    )
    .await;
    let (s, b) = h
        .call_as(
            Some(&padmin),
            Method::POST,
            "/api/v2/projects/p1/qosPolicies",
            Some(json!({"name": "mine", "limit": {"limitAbsolute": {}}})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    for method in [Method::PUT, Method::DELETE] {
        let (s, b) = h
            .call_as(
                Some(&padmin),
                method.clone(),
                "/api/v2/qosPolicies/global",
                (method == Method::PUT).then(|| json!({"description": "x"})),
            )
            .await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{method}: {b}");
    }
    let (s, list) = h
        .call_as(
            Some(&padmin),
            Method::GET,
            "/api/v2/projects/p1/qosPolicies",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{list}");
    assert_eq!(list["qosPolicies"].as_array().unwrap().len(), 1);
    // A project admin assigns the policies their project may use.
    let (s, v) = h
        .call_as(
            Some(&padmin),
            Method::POST,
            "/api/v2/projects/p1/volumes",
            Some(json!({"name": "v", "size": "1 gib", "qosPolicyName": "global"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(limits(&h, &v).read_iops, Some(10));
}

#[tokio::test]
async fn limits_are_applied_again_after_a_restart() {
    let h = Harness::start().await;
    create_policy(
        &h,
        json!({"name": "kept", "limit": {"limitAbsolute": {"writeMBps": 7}}}),
    )
    .await;
    let (s, v) = h
        .post(
            "/api/v2/volumes",
            json!({"name": "v", "size": "1 gib", "qosPolicyName": "kept"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (dir, control, tmp) = h.stop().await;
    // The target's limits live in memory only: a restarted target has none.
    control.restart_target();
    assert_eq!(
        control.rate_limits(uuid_of(&v)),
        Some(VolumeRateLimits::UNLIMITED)
    );
    let h = Harness::open(dir, control, |_| {}).await;
    assert_eq!(limits(&h, &v).write_bytes_per_second, Some(7_000_000));
    drop(tmp);
}
