//! Bad input against the real keeld, on every endpoint that takes a body or
//! parameters (volumes are covered in `api_keeld.rs`): malformed and hostile JSON
//! (not an object, invalid UTF-8, nesting past any sane depth, duplicate keys,
//! numbers out of range, trailing garbage), wrong types, unknown fields in the
//! strict documents (nested ones too), hostile names (path separators, unicode,
//! 10 KB), malformed UUIDs and query values. Each answer is a 4xx with a JSON
//! error body whose message says what is wrong, and nothing changes: the
//! catalog, the users and credentials, and the volume seen over the API are the
//! same afterwards.

mod common;

use common::Keeld;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const JSON: [(&str, &str); 1] = [("Content-Type", "application/json")];

/// Everything a rejected request could have changed, as the API shows it.
fn observable_state(k: &Keeld) -> Value {
    let mut state = serde_json::Map::new();
    for path in [
        "/api/v2/volumes?showAll=true",
        "/api/v2/projects",
        "/api/v2/projects/default/snapshots?showAll=true",
        "/api/v1/workflows",
        "/api/v2/credentials",
    ] {
        let a = k.get(path);
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        state.insert(path.to_owned(), a.body);
    }
    // Usage statistics may move on their own; everything else must not.
    for v in state["/api/v2/volumes?showAll=true"]["volumes"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        v.as_object_mut().map(|o| o.remove("statistics"));
    }
    Value::Object(state)
}

/// Asserts a 4xx (exactly `status`) with a JSON error body whose message
/// mentions `needle` (case-insensitive); returns the message.
fn assert_refused(what: &str, a: &common::Answer, status: StatusCode, needle: &str) -> String {
    assert_eq!(a.status, status, "{what}: {}", a.body);
    assert!(
        a.body["code"].as_i64().is_some_and(|c| c > 0),
        "{what}: no code in {}",
        a.body
    );
    let message = a.body["message"].as_str().unwrap_or_default().to_owned();
    assert!(
        message.to_lowercase().contains(&needle.to_lowercase()),
        "{what}: the message {message:?} does not mention {needle:?}"
    );
    message
}

fn long_name() -> String {
    "a".repeat(10 * 1024)
}

/// Names the documents forbid: path separators and traversal, the directory
/// names `.` and `..`, unicode, spaces, control characters, empty, 10 KB.
fn hostile_names() -> Vec<String> {
    [
        "../etc/passwd",
        ".",
        "..",
        "a/b",
        "a\\b",
        "völume",
        "💾",
        "a b",
        "",
        "x\u{0}y",
        "tab\tname",
        "%2e%2e",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([long_name()])
    .collect()
}

#[test]
fn malformed_json_on_every_body_endpoint_gets_400_and_changes_nothing() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("kept", 64 << 20, &["ALLOW_ANY"]);
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let before = observable_state(&k);

    let deep = format!("{{\"name\": {}{}}}", "[".repeat(20_000), "]".repeat(20_000));
    let malformed: Vec<(Vec<u8>, &str, &str)> = vec![
        (b"{not json".to_vec(), "unterminated object", "json"),
        (b"".to_vec(), "empty body", "empty"),
        (b"   \n".to_vec(), "whitespace body", "empty"),
        (b"[]".to_vec(), "array", "object"),
        (b"[null, null]".to_vec(), "array of fields", "object"),
        (b"\"text\"".to_vec(), "string", "object"),
        (b"42".to_vec(), "number", "object"),
        (b"null".to_vec(), "null", "object"),
        (
            b"{\"name\": \"\xff\xfe\"}".to_vec(),
            "invalid UTF-8",
            "json",
        ),
        (deep.into_bytes(), "20000-deep nesting", "json"),
        (
            br#"{"name": "a", "name": "b"}"#.to_vec(),
            "duplicate key",
            "name",
        ),
        (
            br#"{"size": 1e400}"#.to_vec(),
            "number out of range",
            "json",
        ),
        (
            br#"{"name": "a"} {"name": "b"}"#.to_vec(),
            "trailing data",
            "json",
        ),
        (
            br#"{"definitelyNotAField": 1}"#.to_vec(),
            "unknown field",
            "unknown field",
        ),
    ];
    let endpoints: Vec<(Method, String)> = vec![
        (Method::POST, "/api/v2/volumes".into()),
        (Method::POST, "/api/v2/projects/default/volumes".into()),
        (Method::PUT, format!("/api/v2/volumes/{uuid}")),
        (
            Method::PUT,
            format!("/api/v2/projects/default/volumes/{uuid}"),
        ),
        (Method::PUT, format!("/api/v2/volumes/{uuid}/rollback")),
        (
            Method::PUT,
            format!("/api/v2/projects/default/volumes/{uuid}/rollback"),
        ),
        (Method::POST, "/api/v2/snapshots".into()),
        (Method::POST, "/api/v2/projects/default/snapshots".into()),
        (Method::POST, "/api/v2/projects".into()),
        (Method::POST, "/api/v2/users".into()),
        (Method::POST, "/api/v2/credentials".into()),
        (Method::POST, "/api/v1/volumes/thickclone".into()),
        (Method::POST, "/api/v1/snapshots/thickclone".into()),
    ];
    for (method, path) in &endpoints {
        for (body, what, needle) in &malformed {
            let a = k.call_raw(method.clone(), path, body.clone(), &JSON);
            // Documents whose every field is mandatory may report a missing
            // field before an unknown one; both say what is wrong.
            let needle = if *what == "unknown field"
                && a.body["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("missing field"))
            {
                "missing field"
            } else {
                needle
            };
            assert_refused(
                &format!("{method} {path} with {what}"),
                &a,
                StatusCode::BAD_REQUEST,
                needle,
            );
        }
    }
    assert_eq!(
        observable_state(&k),
        before,
        "a malformed request changed something"
    );
    k.assert_alive("malformed bodies");
}

#[test]
fn wrong_types_unknown_fields_and_hostile_names_on_snapshots_projects_users_and_clones_get_400() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("kept", 64 << 20, &["ALLOW_ANY"]);
    let uuid = v["UUID"].as_str().expect("UUID").to_owned();
    let before = observable_state(&k);
    let ghost = uuid::Uuid::new_v4().to_string();
    let long = long_name();

    let mut cases: Vec<(Method, String, Value, &str)> = vec![
        // Snapshots.
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": 5}),
            "sourceVolumeUUID",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": "nope"}),
            "sourceVolumeUUID",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s"}),
            "sourceVolumeUUID",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"sourceVolumeUUID": uuid}),
            "name",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": uuid, "description": long}),
            "description",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": uuid, "description": "bell\u{7}"}),
            "description",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": uuid, "retentionTime": long}),
            "retentionTime",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeName": "../kept"}),
            "sourceVolumeName",
        ),
        (
            Method::POST,
            "/api/v2/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": uuid, "projectName": "a/b"}),
            "projectName",
        ),
        (
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": "s", "sourceVolumeUUID": uuid, "projectName": "other"}),
            "projectName",
        ),
        // Rollback.
        (
            Method::PUT,
            format!("/api/v2/volumes/{uuid}/rollback"),
            json!({}),
            "srcSnapshotUUID",
        ),
        (
            Method::PUT,
            format!("/api/v2/volumes/{uuid}/rollback"),
            json!({"srcSnapshotUUID": 7}),
            "srcSnapshotUUID",
        ),
        (
            Method::PUT,
            format!("/api/v2/volumes/{uuid}/rollback"),
            json!({"srcSnapshotUUID": "nope"}),
            "srcSnapshotUUID",
        ),
        // Projects.
        (
            Method::POST,
            "/api/v2/projects".into(),
            json!({"name": "p", "description": 5}),
            "description",
        ),
        (
            Method::POST,
            "/api/v2/projects".into(),
            json!({"name": "p", "description": long}),
            "description",
        ),
        (
            Method::POST,
            "/api/v2/projects".into(),
            json!({"description": "no name"}),
            "name",
        ),
        // Users.
        (
            Method::POST,
            "/api/v2/users".into(),
            json!({"name": "u", "password": "short", "role": "ClusterAdmin"}),
            "password",
        ),
        (
            Method::POST,
            "/api/v2/users".into(),
            json!({"name": "u", "password": "long enough", "role": "God"}),
            "role",
        ),
        (
            Method::POST,
            "/api/v2/users".into(),
            json!({"name": "u", "password": "long enough", "role": "ProjectAdmin"}),
            "projectName",
        ),
        (
            Method::POST,
            "/api/v2/users".into(),
            json!({"name": "u", "password": "long enough", "role": "ClusterAdmin", "projectName": "a/b"}),
            "projectName",
        ),
        (
            Method::POST,
            "/api/v2/users".into(),
            json!({"name": "u", "password": 12345678, "role": "ClusterAdmin"}),
            "password",
        ),
        // Service credentials.
        (
            Method::POST,
            "/api/v2/credentials".into(),
            json!({"id": "k", "projectName": "default", "type": "dsa", "key": "x"}),
            "key",
        ),
        (
            Method::POST,
            "/api/v2/credentials".into(),
            json!({"id": "k", "projectName": "default", "type": "rsa256pubkey", "key": "not a key"}),
            "key",
        ),
        // Thick clones: nested documents are strict too.
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": "nope"}, "dst": {"name": "d"}}),
            "snapId",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost, "bogus": 1}, "dst": {"name": "d"}}),
            "bogus",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "bogus": 1}}),
            "bogus",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "size": "-1"}}),
            "size",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "replica": "many"}}),
            "integer",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "compression": "perhaps"}}),
            "true",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": ""}}),
            "dst.name",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost, "clusterId": ghost}, "dst": {"name": "d"}}),
            "cluster",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "description": "only for snapshots"}}),
            "description",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}}),
            "dst",
        ),
        (
            Method::POST,
            "/api/v1/snapshots/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "sectorSize": 1000}}),
            "sectorSize",
        ),
        // A well-formed name of no QoS policy is refused with the field named.
        (
            Method::POST,
            "/api/v2/volumes".into(),
            json!({"name": "throttled", "size": "1 gib", "qosPolicyName": "gold"}),
            "qosPolicyName",
        ),
        (
            Method::PUT,
            format!("/api/v2/volumes/{uuid}"),
            json!({"qosPolicyName": "gold"}),
            "qosPolicyName",
        ),
        (
            Method::PUT,
            format!("/api/v2/volumes/{uuid}"),
            json!({"qosPolicyUUID": "00000000-0000-4000-8000-000000000001"}),
            "qosPolicyUUID",
        ),
        (
            Method::POST,
            "/api/v1/volumes/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": "d", "qosPolicyName": "gold"}}),
            "qosPolicyName",
        ),
    ];
    for name in hostile_names() {
        cases.push((
            Method::POST,
            "/api/v2/projects/default/snapshots".into(),
            json!({"name": name, "sourceVolumeUUID": uuid}),
            "name",
        ));
        cases.push((
            Method::POST,
            "/api/v2/projects".into(),
            json!({"name": name}),
            "name",
        ));
        cases.push((
            Method::POST,
            "/api/v2/users".into(),
            json!({"name": name, "password": "long enough", "role": "ClusterAdmin"}),
            "name",
        ));
        cases.push((
            Method::POST,
            "/api/v2/credentials".into(),
            json!({"id": name, "projectName": "default", "type": "rsa256pubkey", "key": "k"}),
            "id",
        ));
        cases.push((
            Method::POST,
            "/api/v1/snapshots/thickclone".into(),
            json!({"src": {"snapId": ghost}, "dst": {"name": name}}),
            "name",
        ));
        cases.push((
            Method::PUT,
            format!("/api/v2/volumes/{uuid}"),
            json!({"qosPolicyName": name}),
            "qosPolicyName",
        ));
        cases.push((
            Method::PUT,
            format!("/api/v2/volumes/{uuid}"),
            json!({"labels": [{"key": name, "value": "\u{1b}[31m"}]}),
            "label",
        ));
    }
    for (method, path, body, needle) in cases {
        let a = k.call(method.clone(), &path, Some(&body));
        let shown: String = body.to_string().chars().take(120).collect();
        assert_refused(
            &format!("{method} {path} {shown}"),
            &a,
            StatusCode::BAD_REQUEST,
            needle,
        );
    }
    assert_eq!(
        observable_state(&k),
        before,
        "a refused request changed something"
    );
}

#[test]
fn malformed_paths_and_query_values_get_400_with_the_parameter_named() {
    let mut k = Keeld::start_default();
    k.login();
    k.create_volume("kept", 64 << 20, &["ALLOW_ANY"]);
    let before = observable_state(&k);
    let long = long_name();
    let cases: Vec<(Method, String, &str)> = vec![
        (Method::GET, "/api/v2/volumes?limit=-1".into(), "limit"),
        (Method::GET, "/api/v2/volumes?limit=ten".into(), "limit"),
        (
            Method::GET,
            "/api/v2/volumes?limit=99999999999999999999999".into(),
            "limit",
        ),
        (
            Method::GET,
            "/api/v2/volumes?showAll=maybe".into(),
            "showAll",
        ),
        (
            Method::GET,
            "/api/v2/volumes?offsetUUID=nope".into(),
            "offsetUUID",
        ),
        (Method::GET, "/api/v2/volumes?UUID=nope".into(), "UUID"),
        (
            Method::GET,
            "/api/v2/volumes?snapshotUUID=nope".into(),
            "snapshotUUID",
        ),
        (Method::GET, "/api/v2/volumes?name=a%2Fb".into(), "name"),
        (
            Method::GET,
            "/api/v2/volumes/?name=..%2Fkept".into(),
            "name",
        ),
        (Method::GET, format!("/api/v2/volumes/?name={long}"), "name"),
        (
            Method::GET,
            "/api/v2/volumes?projectName=v%C3%B6l".into(),
            "projectName",
        ),
        (
            Method::GET,
            "/api/v2/projects/default/snapshots?sourceVolumeUUID=nope".into(),
            "sourceVolumeUUID",
        ),
        (
            Method::GET,
            "/api/v2/projects/default/snapshots/?Name=a%5Cb".into(),
            "Name",
        ),
        (Method::GET, "/api/v2/snapshots/not-a-uuid".into(), "UUID"),
        (
            Method::DELETE,
            "/api/v2/snapshots/not-a-uuid".into(),
            "UUID",
        ),
        (Method::DELETE, "/api/v2/volumes/not-a-uuid".into(), "UUID"),
        (
            Method::GET,
            "/api/v2/projects/..%2F..%2Fetc/snapshots".into(),
            "projectName",
        ),
        (
            Method::GET,
            format!("/api/v2/projects/{long}/snapshots"),
            "projectName",
        ),
        (
            Method::GET,
            "/api/v1/workflows?pageSize=lots".into(),
            "pageSize",
        ),
        (
            Method::GET,
            "/api/v1/workflows?nextPageToken=forged".into(),
            "nextPageToken",
        ),
        (
            Method::GET,
            "/api/v1/workflows/not-a-uuid".into(),
            "workflowId",
        ),
        (
            Method::POST,
            "/api/v1/workflows/not-a-uuid/cancel".into(),
            "workflowId",
        ),
        (
            Method::GET,
            "/api/v2/volumes?limit=1&limit=x".into(),
            "limit",
        ),
    ];
    for (method, path, needle) in cases {
        let a = k.call(method.clone(), &path, None);
        let shown: String = path.chars().take(100).collect();
        assert_refused(
            &format!("{method} {shown}"),
            &a,
            StatusCode::BAD_REQUEST,
            needle,
        );
    }
    // A method a route does not have is a JSON 405, not an empty answer.
    let a = k.call(Method::PATCH, "/api/v2/volumes", None);
    assert_refused(
        "PATCH /api/v2/volumes",
        &a,
        StatusCode::METHOD_NOT_ALLOWED,
        "PATCH",
    );
    assert_eq!(
        observable_state(&k),
        before,
        "a refused request changed something"
    );
}
