//! The scrub routes (a Keel extension): a cluster admin starts a pass, anyone
//! authenticated reads its state, damaged blocks are reported per volume and
//! snapshot under their REST identities (maps the catalog does not know by
//! engine id), the cluster statistics carry the total, and the OpenAPI
//! document describes both operations.

mod common;

use common::{assert_error_body, Harness};
use mgmt_api::control::{ScrubDamage, SCRUB_LBAS_REPORTED_MAX};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

const SCRUB: &str = "/api/v2/cluster/scrub";

fn uuid_of(v: &Value) -> Uuid {
    Uuid::parse_str(v["UUID"].as_str().unwrap()).unwrap()
}

#[tokio::test]
async fn a_started_pass_runs_once_then_reports_damage_per_volume_and_snapshot() {
    let h = Harness::start().await;
    let (s, idle) = h.get(SCRUB).await;
    assert_eq!(s, StatusCode::OK, "{idle}");
    assert_eq!(idle["state"], "Idle");
    assert_eq!(idle["passesCompleted"], 0);
    assert_eq!(idle["lastStarted"], Value::Null);
    assert_eq!(idle["lastFinished"], Value::Null);
    assert_eq!(idle["volumes"], json!([]));

    let v = h.create_volume("scrubbed", "1 gib").await;
    let (s, snap) = h
        .post(
            "/api/v2/projects/default/snapshots",
            json!({"name": "scrubbed-snap", "sourceVolumeUUID": v["UUID"]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{snap}");
    let volume_id = h.control.engine_id(uuid_of(&v)).unwrap();
    let many: Vec<u64> = (0..2000).collect();
    h.control.set_scrub_findings(
        vec![
            ScrubDamage::new(volume_id, Some(uuid_of(&v)), &[3, 9]),
            ScrubDamage::new(volume_id + 100, Some(uuid_of(&snap)), &many),
            ScrubDamage::new(4242, None, &[1]),
        ],
        1,
    );

    h.control.hold_scrub(true);
    let (s, started) = h.call_as(Some(&h.token), Method::POST, SCRUB, None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{started}");
    assert_eq!(started["state"], "Running");
    assert!(started["lastStarted"].as_str().unwrap().ends_with('Z'));
    assert_eq!(started["volumes"], json!([]), "findings wait for the pass");
    // A second request while the pass runs starts nothing and says so.
    let (s, again) = h.call_as(Some(&h.token), Method::POST, SCRUB, None).await;
    assert_eq!(s, StatusCode::OK, "{again}");
    assert_eq!(again["state"], "Running");

    h.control.hold_scrub(false);
    let (s, done) = h.get(SCRUB).await;
    assert_eq!(s, StatusCode::OK, "{done}");
    assert_eq!(done["state"], "Idle");
    assert_eq!(done["passesCompleted"], 1);
    assert_eq!(done["blocksChecked"], done["blocksTotal"]);
    assert!(humantime::parse_rfc3339(done["lastFinished"].as_str().unwrap()).is_ok());
    assert_eq!(done["bytesPerSecond"], 8 << 20);
    assert_eq!(done["damagedBlocks"], 2 + 2000 + 1);
    assert_eq!(done["metadataDamaged"], 1);
    let volumes = done["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 3, "{done}");
    assert_eq!(volumes[0]["UUID"], v["UUID"]);
    assert_eq!(volumes[0]["name"], "scrubbed");
    assert_eq!(volumes[0]["projectName"], "default");
    assert_eq!(volumes[0]["kind"], "Volume");
    assert_eq!(volumes[0]["damagedBlocks"], 2);
    assert_eq!(volumes[0]["damagedLbas"], json!([3, 9]));
    assert_eq!(volumes[1]["UUID"], snap["UUID"]);
    assert_eq!(volumes[1]["name"], "scrubbed-snap");
    assert_eq!(volumes[1]["kind"], "Snapshot");
    assert_eq!(volumes[1]["damagedBlocks"], 2000);
    assert_eq!(
        volumes[1]["damagedLbas"].as_array().unwrap().len(),
        SCRUB_LBAS_REPORTED_MAX
    );
    assert_eq!(volumes[2]["UUID"], Value::Null);
    assert_eq!(volumes[2]["name"], Value::Null);
    assert_eq!(volumes[2]["kind"], "Unknown");
    assert_eq!(volumes[2]["engineId"], 4242);

    let (s, cluster) = h.get("/api/v2/cluster").await;
    assert_eq!(s, StatusCode::OK, "{cluster}");
    assert_eq!(cluster["statistics"]["damagedBlocks"], 2003);
    let (s, volume) = h
        .get(&format!("/api/v2/projects/default/volumes/{}", uuid_of(&v)))
        .await;
    assert_eq!(s, StatusCode::OK, "{volume}");
    assert_eq!(
        volume["statistics"]["damagedBlocks"], 2,
        "the volume's own statistics count its damaged blocks: {volume}"
    );
}

#[tokio::test]
async fn only_a_cluster_admin_starts_a_pass_and_viewers_read_their_own_volumes() {
    let h = Harness::start().await;
    let (s, _) = h.post("/api/v2/projects", json!({"name": "p1"})).await;
    assert_eq!(s, StatusCode::OK);
    for (name, role) in [("viewer1", "ProjectViewer"), ("admin1", "ProjectAdmin")] {
        let (s, b) = h
            .post(
                "/api/v2/users",
                json!({"name": name, "password": "password-123", "role": role, "projectName": "p1"}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let viewer = h.login("viewer1", "password-123").await;
    let padmin = h.login("admin1", "password-123").await;
    let (s, mine) = h
        .call_as(
            Some(&padmin),
            Method::POST,
            "/api/v2/projects/p1/volumes",
            Some(json!({"name": "mine", "size": "1 gib"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{mine}");
    let theirs = h.create_volume("theirs", "1 gib").await;
    h.control.set_scrub_findings(
        vec![
            ScrubDamage::new(1, Some(uuid_of(&mine)), &[1]),
            ScrubDamage::new(2, Some(uuid_of(&theirs)), &[2]),
            ScrubDamage::new(99, None, &[3]),
        ],
        0,
    );

    for (token, who) in [
        (None, "no token"),
        (Some(&viewer), "viewer"),
        (Some(&padmin), "project admin"),
    ] {
        let (s, e) = h
            .call_as(token.map(String::as_str), Method::POST, SCRUB, None)
            .await;
        let expected = if token.is_some() {
            StatusCode::FORBIDDEN
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(s, expected, "{who}: {e}");
        assert_error_body(&e);
    }
    let (_, untouched) = h.get(SCRUB).await;
    assert_eq!(
        untouched["passesCompleted"], 0,
        "a refused start starts nothing"
    );

    let (s, _) = h.call_as(Some(&h.token), Method::POST, SCRUB, None).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, seen) = h.call_as(Some(&viewer), Method::GET, SCRUB, None).await;
    assert_eq!(s, StatusCode::OK, "{seen}");
    assert_eq!(seen["passesCompleted"], 1);
    assert_eq!(seen["damagedBlocks"], 3, "totals cover the pool");
    let names: Vec<&str> = seen["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["mine"],
        "a viewer lists its own project's volumes only"
    );
    let (s, e) = h.call_as(None, Method::GET, SCRUB, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error_body(&e);
}

#[tokio::test]
async fn the_document_describes_both_scrub_operations() {
    let h = Harness::start().await;
    let (s, doc) = h.call_as(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    let item = &doc["paths"][SCRUB];
    assert_eq!(item["get"]["operationId"], "cluster_scrub_status");
    assert_eq!(item["post"]["operationId"], "cluster_start_scrub");
    let body_ref = |op: &str, code: &str| {
        item[op]["responses"][code]["content"]["application/json"]["schema"]["$ref"].clone()
    };
    assert_eq!(body_ref("get", "200"), "#/components/schemas/ScrubDto");
    assert_eq!(body_ref("post", "202"), "#/components/schemas/ScrubDto");
    assert_eq!(body_ref("post", "200"), "#/components/schemas/ScrubDto");
    assert_eq!(body_ref("post", "403"), "#/components/schemas/ErrorBody");
    let schemas = &doc["components"]["schemas"];
    let properties = &schemas["ScrubDto"]["properties"];
    for field in [
        "state",
        "passesCompleted",
        "blocksChecked",
        "blocksTotal",
        "lastStarted",
        "lastFinished",
        "bytesPerSecond",
        "damagedBlocks",
        "metadataDamaged",
        "volumes",
    ] {
        assert!(properties[field].is_object(), "ScrubDto lacks {field}");
    }
    assert_eq!(schemas["ScrubStateDto"]["enum"], json!(["Running", "Idle"]));
    let volume = &schemas["ScrubVolumeDto"]["properties"];
    for field in [
        "UUID",
        "name",
        "projectName",
        "engineId",
        "damagedBlocks",
        "damagedLbas",
    ] {
        assert!(volume[field].is_object(), "ScrubVolumeDto lacks {field}");
    }
    assert!(schemas["ClusterStatisticsDto"]["properties"]["damagedBlocks"].is_object());
}
