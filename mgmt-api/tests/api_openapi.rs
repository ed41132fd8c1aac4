//! The OpenAPI document states the rules the server applies (names, loose
//! types, required fields, every error answer), and the HTTP layer keeps its
//! side of the contract where a generic client would notice: JSON error bodies
//! for every status, objects only as bodies, and connections that stay usable
//! after an early answer.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{assert_error_body, Harness};
use mgmt_api::http::schema::NAME_PATTERN;
use reqwest::{Method, StatusCode};
use serde_json::Value;

async fn document(h: &Harness) -> Value {
    let (s, doc) = h.call_as(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    doc
}

/// The alternatives of a `oneOf`/`anyOf` schema.
fn alternatives(schema: &Value) -> Vec<Value> {
    schema["oneOf"]
        .as_array()
        .or_else(|| schema["anyOf"].as_array())
        .cloned()
        .unwrap_or_else(|| vec![schema.clone()])
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((path.clone(), method.clone(), op.clone()));
        }
    }
    out
}

#[tokio::test]
async fn request_schemas_state_names_loose_types_and_required_fields() {
    let h = Harness::start_with(|c| c.service.max_replicas = 2).await;
    let doc = document(&h).await;
    let schemas = &doc["components"]["schemas"];
    let create = &schemas["CreateVolumeRequest"];
    assert_eq!(create["required"], serde_json::json!(["name"]));
    assert_eq!(create["additionalProperties"], false, "requests are strict");
    let p = &create["properties"];
    assert_eq!(p["name"]["pattern"], NAME_PATTERN);
    assert_eq!(p["name"]["maxLength"], 256);
    let kinds = |field: &str| -> Vec<String> {
        alternatives(&p[field])
            .iter()
            .map(|a| a["type"].as_str().unwrap_or("ref").to_owned())
            .collect()
    };
    assert_eq!(kinds("size"), ["string", "integer", "null"]);
    assert_eq!(kinds("replicaCount"), ["integer", "string", "null"]);
    assert_eq!(kinds("compression"), ["boolean", "string", "null"]);
    assert_eq!(kinds("sectorSize"), ["integer", "string", "null"]);
    // The served document carries this server's replica limit.
    assert_eq!(alternatives(&p["replicaCount"])[0]["maximum"], 2);
    for field in ["projectName", "qosPolicyName"] {
        assert_eq!(
            alternatives(&p[field])[0]["pattern"],
            NAME_PATTERN,
            "{field}"
        );
    }
    assert_eq!(alternatives(&p["sourceSnapshotUUID"])[0]["format"], "uuid");
    // Thick clones stay in this cluster: the only clusterId is its own.
    let (_, cluster) = h.get("/api/v2/cluster").await;
    for component in ["CloneSourceDto", "CloneDestinationDto"] {
        let cluster_id = &schemas[component]["properties"]["clusterId"];
        assert_eq!(
            alternatives(cluster_id)[0]["enum"],
            serde_json::json!([cluster["UUID"]]),
            "{component}"
        );
    }
    // Volume thick clones have no dst.description; snapshot ones do.
    let body_of = |path: &str| {
        doc["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .to_owned()
    };
    let volume_clone = &schemas[body_of("/api/v1/volumes/thickclone")];
    let dst = volume_clone["properties"]["dst"]["$ref"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert!(schemas[dst]["properties"]["description"].is_null(), "{dst}");
    assert!(schemas[dst]["properties"]["name"].is_object(), "{dst}");
    let snapshot_clone = &schemas[body_of("/api/v1/snapshots/thickclone")];
    let dst = snapshot_clone["properties"]["dst"]["$ref"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert!(
        schemas[dst]["properties"]["description"].is_object(),
        "{dst}"
    );
    // A size is needed unless cloning; a snapshot needs its source by UUID or name.
    let one_of = |component: &str| -> Vec<String> {
        schemas[component]["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["required"][0].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        one_of("CreateVolumeRequest"),
        ["size", "sourceSnapshotUUID"]
    );
    assert_eq!(
        one_of("CreateSnapshotRequest"),
        ["sourceVolumeUUID", "sourceVolumeName"]
    );
    // Other strict bodies name their mandatory fields.
    assert_eq!(
        schemas["CreateSnapshotRequest"]["required"],
        serde_json::json!(["name"])
    );
    assert_eq!(
        schemas["RollbackRequest"]["required"],
        serde_json::json!(["srcSnapshotUUID"])
    );
    assert_eq!(
        schemas["ProjectDto"]["properties"]["name"]["pattern"],
        NAME_PATTERN
    );
    assert!(schemas["CloneDestinationDto"]["required"]
        .as_array()
        .unwrap()
        .contains(&Value::from("name")));

    // Every name-like and UUID-like parameter carries its rule.
    for (path, method, op) in operations(&doc) {
        for param in op["parameters"].as_array().into_iter().flatten() {
            let name = param["name"].as_str().unwrap();
            let strict = alternatives(&param["schema"])[0].clone();
            match name {
                "projectName" | "name" | "Name" => {
                    assert_eq!(strict["pattern"], NAME_PATTERN, "{method} {path} {name}")
                }
                "UUID" | "workflowId" | "offsetUUID" | "snapshotUUID" | "sourceVolumeUUID" => {
                    assert_eq!(strict["format"], "uuid", "{method} {path} {name}")
                }
                _ => {}
            }
        }
    }
}

#[tokio::test]
async fn creates_link_to_what_they_created_under_unique_operation_ids() {
    let h = Harness::start().await;
    let doc = document(&h).await;
    let ops = operations(&doc);
    let mut ids: Vec<&str> = ops
        .iter()
        .map(|(_, _, op)| op["operationId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let count = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), count, "duplicate operationIds");
    let links = &doc["paths"]["/api/v2/volumes"]["post"]["responses"]["200"]["links"];
    // OpenAPI spells it operationId (utoipa alone would write operation_id).
    assert_eq!(links["volumes_get_one"]["operationId"], "volumes_get_one");
    assert_eq!(
        links["volumes_delete"]["parameters"]["UUID"],
        "$response.body#/UUID"
    );
    for link in links.as_object().unwrap().values() {
        let target = link["operationId"].as_str().unwrap();
        assert!(ids.contains(&target), "link to unknown {target}");
    }
}

#[tokio::test]
async fn every_operation_documents_its_error_answers_with_the_error_body() {
    let h = Harness::start().await;
    let doc = document(&h).await;
    let ops = operations(&doc);
    assert!(ops.len() >= 39, "{} operations", ops.len());
    for (path, method, op) in ops {
        let mut expected = vec!["400", "401", "403", "404", "413", "500", "503"];
        if matches!(method.as_str(), "post" | "put" | "delete") {
            expected.extend(["409", "501", "507"]);
        }
        if matches!(method.as_str(), "put" | "delete") {
            expected.push("412");
        }
        if method == "post" {
            expected.push("429");
        }
        for code in expected {
            let response = &op["responses"][code];
            assert_eq!(
                response["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{method} {path} does not document {code}"
            );
        }
    }
}

#[tokio::test]
async fn wrong_methods_and_non_object_bodies_get_json_errors() {
    let h = Harness::start().await;
    let v = h.create_volume("shape", "1 gib").await;
    let uuid = v["UUID"].as_str().unwrap();
    let resp = h
        .client
        .request(Method::PATCH, format!("{}/api/v2/volumes/{uuid}", h.base))
        .bearer_auth(&h.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = resp.headers()["allow"].to_str().unwrap().to_owned();
    assert!(
        allow.contains("PUT") && allow.contains("DELETE"),
        "Allow: {allow}"
    );
    assert_error_body(&resp.json().await.unwrap());
    for body in ["[null, null]", "[]", "\"text\"", "42", "null"] {
        let (s, e) = h
            .raw(
                Method::PUT,
                &format!("/api/v2/volumes/{uuid}"),
                body.as_bytes().to_vec(),
                &[("Content-Type", "application/json")],
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
        assert_error_body(&e);
        let (s, e) = h
            .raw(
                Method::POST,
                "/api/v2/volumes",
                body.as_bytes().to_vec(),
                &[("Content-Type", "application/json")],
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {e}");
    }
    let (_, after) = h.get(&format!("/api/v2/volumes/{uuid}")).await;
    assert_eq!(after["ETag"], v["ETag"]);
}

/// Reads one HTTP/1.1 response (status line, headers, `Content-Length` body).
fn read_response(reader: &mut BufReader<TcpStream>) -> (u16, Vec<(String, String)>, String) {
    let mut status_line = String::new();
    reader.read_line(&mut status_line).unwrap();
    assert!(!status_line.is_empty(), "the server closed the connection");
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    (status, headers, String::from_utf8(body).unwrap())
}

/// A request answered before its body was read (401 here: no token) used to
/// leave the body on the wire; hyper then closed a connection it had answered
/// as reusable, and the client's next request on it failed with a reset.
#[tokio::test]
async fn an_early_answer_leaves_the_connection_usable() {
    let h = Harness::start_with(|c| c.tls = mgmt_api::TlsMode::PlainHttp).await;
    let addr = h.base.trim_start_matches("http://").to_owned();
    let token = h.token.clone();
    tokio::task::spawn_blocking(move || {
        let stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        let body = format!(r#"{{"name": "v", "size": "1 gib", "labels": [{{"key": "k", "value": "{}"}}]}}"#, "x".repeat(200));
        let (head, tail) = body.as_bytes().split_at(16);
        // No token: the answer is a 401 that needs none of the body.
        write!(
            writer,
            "POST /api/v2/volumes HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .unwrap();
        writer.write_all(head).unwrap();
        writer.flush().unwrap();
        writer.write_all(tail).unwrap();
        let (status, headers, text) = read_response(&mut reader);
        assert_eq!(status, 401, "{text}");
        assert!(
            !headers.iter().any(|(k, v)| k == "connection" && v.eq_ignore_ascii_case("close")),
            "a 401 should not cost the connection"
        );
        // The same connection serves the next request.
        write!(
            writer,
            "GET /api/v2/cluster HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let (status, _, text) = read_response(&mut reader);
        assert_eq!(status, 200, "{text}");
        // A body past the limit is refused and the connection closed, saying so.
        let big = 2 << 20;
        write!(
            writer,
            "POST /api/v2/volumes HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {big}\r\n\r\n"
        )
        .unwrap();
        let _ = writer.write_all(&vec![b' '; big]);
        let (status, headers, text) = read_response(&mut reader);
        assert_eq!(status, 413, "{text}");
        assert!(headers.iter().any(|(k, v)| k == "connection" && v == "close"), "{headers:?}");
    })
    .await
    .unwrap();
}
