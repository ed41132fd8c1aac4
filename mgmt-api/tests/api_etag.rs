//! ETags over HTTP: a refused or empty update leaves a volume's ETag as it was,
//! a successful one moves it exactly once, and the ETag an update answers is the
//! one the next GET shows and the next `If-Match` needs.

mod common;

use common::{assert_error_body, Harness};
use mgmt_api::control::ControlError;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn etag(h: &Harness, uuid: &str) -> String {
    let (s, v) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["ETag"].as_str().expect("ETag").to_owned()
}

async fn put(h: &Harness, uuid: &str, body: &Value, if_match: Option<&str>) -> (StatusCode, Value) {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(tag) = if_match {
        headers.push(("If-Match", tag));
    }
    h.raw(
        Method::PUT,
        &format!("/api/v2/volumes/{uuid}"),
        serde_json::to_vec(body).unwrap(),
        &headers,
    )
    .await
}

#[tokio::test]
async fn refused_updates_keep_the_etag_and_a_successful_one_moves_it_once() {
    let h = Harness::start().await;
    let v = h.create_volume("tagged", "1 gib").await;
    let uuid = v["UUID"].as_str().unwrap().to_owned();
    let e0 = etag(&h, &uuid).await;
    assert_eq!(v["ETag"], e0.as_str(), "create answered a stale ETag");

    let refused = [
        (
            json!({"size": "512 mib"}),
            StatusCode::BAD_REQUEST,
            "shrink",
        ),
        (
            json!({"size": "1073741825"}),
            StatusCode::BAD_REQUEST,
            "not a sector multiple",
        ),
        (
            json!({"size": "lots"}),
            StatusCode::BAD_REQUEST,
            "size type",
        ),
        (
            json!({"acl": {"values": ["ALLOW_ANY", "nqn.x"]}}),
            StatusCode::BAD_REQUEST,
            "acl mix",
        ),
        (
            json!({"ipAcl": {"values": ["999.0.0.1"]}}),
            StatusCode::BAD_REQUEST,
            "ip acl",
        ),
        (
            json!({"qosPolicyName": "a/b"}),
            StatusCode::BAD_REQUEST,
            "qos name",
        ),
        (
            json!({"labels": [{"key": "k"}, {"key": "k"}]}),
            StatusCode::BAD_REQUEST,
            "labels",
        ),
        (
            json!({"compression": "maybe"}),
            StatusCode::BAD_REQUEST,
            "compression type",
        ),
        (
            json!({"size": "2 gib", "bogus": 1}),
            StatusCode::BAD_REQUEST,
            "unknown field",
        ),
        (
            json!({"size": "2 gib", "ETag": "999"}),
            StatusCode::PRECONDITION_FAILED,
            "stale body ETag",
        ),
    ];
    for (body, status, what) in refused {
        let (s, e) = put(&h, &uuid, &body, None).await;
        assert_eq!(s, status, "{what}: {e}");
        assert_error_body(&e);
        assert_eq!(etag(&h, &uuid).await, e0, "{what} moved the ETag");
    }
    let (s, _) = put(&h, &uuid, &json!({"size": "2 gib"}), Some("\"999\"")).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    assert_eq!(etag(&h, &uuid).await, e0, "a stale If-Match moved the ETag");

    // Asking for what the volume already has is a 200 that changes nothing.
    let (s, same) = put(
        &h,
        &uuid,
        &json!({"size": "1 gib", "compression": false, "labels": []}),
        Some(&e0),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{same}");
    assert_eq!(same["ETag"], e0.as_str());

    // A grow with the current ETag succeeds; the answer's ETag is the new one,
    // the old one is now stale, and the new one is what the next update needs.
    let (s, grown) = put(
        &h,
        &uuid,
        &json!({"size": "2 gib", "labels": [{"key": "a", "value": "b"}]}),
        Some(&e0),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{grown}");
    let e1 = grown["ETag"].as_str().unwrap().to_owned();
    assert_ne!(e1, e0);
    assert_eq!(
        etag(&h, &uuid).await,
        e1,
        "the ETag moved again after the answer"
    );
    assert_eq!(
        e1.parse::<u64>().unwrap(),
        e0.parse::<u64>().unwrap() + 1,
        "one update moved the revision more than once"
    );
    let (s, _) = put(&h, &uuid, &json!({"compression": true}), Some(&e0)).await;
    assert_eq!(s, StatusCode::PRECONDITION_FAILED);
    let (s, next) = put(&h, &uuid, &json!({"compression": "True"}), Some(&e1)).await;
    assert_eq!(s, StatusCode::OK, "{next}");
    let e2 = next["ETag"].as_str().unwrap().to_owned();
    assert_eq!(e2.parse::<u64>().unwrap(), e1.parse::<u64>().unwrap() + 1);

    // An engine failure is a 5xx that changes nothing, ETag included.
    h.control
        .fail_next(ControlError::Busy("segment cleaner".to_owned()));
    let (s, e) = put(&h, &uuid, &json!({"size": "4 gib"}), Some(&e2)).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{e}");
    let (_, after) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(after["ETag"], e2.as_str());
    assert_eq!(after["size"], (2u64 << 30).to_string());
    assert_eq!(after["state"], "Available");
}
