//! Login, tokens, roles (401 vs 403), service credentials, TLS by default,
//! plain HTTP only on request, the OpenAPI document, and the documents' curl flow.

mod common;

use common::{assert_error_body, basic, Harness};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

#[tokio::test]
async fn login_issues_bearer_tokens_and_bad_credentials_get_401() {
    let h = Harness::start().await;
    let resp = h
        .client
        .post(format!("{}/login", h.base))
        .header("Authorization", basic("admin", &h.admin_password()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["tokenType"], "Bearer");
    assert_eq!(body["expiresIn"], "3600");
    assert!(
        body["idToken"].as_str().unwrap().split('.').count() == 3,
        "a JWT"
    );

    for header in [
        Some(basic("admin", "wrong")),
        Some(basic("nobody", "x")),
        Some("Basic !!!".to_owned()),
        Some("Bearer x".to_owned()),
        None,
    ] {
        let mut req = h.client.post(format!("{}/login", h.base));
        if let Some(v) = &header {
            req = req.header("Authorization", v);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{header:?}");
        assert_error_body(&resp.json().await.unwrap());
    }
    let (s, e) = h.call_as(None, Method::GET, "/api/v2/cluster", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_error_body(&e);
    let (s, _) = h
        .call_as(Some("not.a.jwt"), Method::GET, "/api/v2/volumes", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let forged = {
        let mut t = h.token.clone();
        t.push('x');
        t
    };
    let (s, _) = h
        .call_as(Some(&forged), Method::GET, "/api/v2/volumes", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn project_roles_separate_401_from_403() {
    let h = Harness::start().await;
    let (s, _) = h
        .post(
            "/api/v2/projects",
            json!({"name": "p1", "description": "tenant one"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h.post("/api/v2/projects", json!({"name": "p1"})).await;
    assert_eq!(s, StatusCode::CONFLICT);
    for (name, role) in [("viewer1", "ProjectViewer"), ("admin1", "ProjectAdmin")] {
        let (s, b) = h.post("/api/v2/users", json!({"name": name, "password": "password-123", "role": role, "projectName": "p1"})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
    }
    let (s, _) = h.post("/api/v2/users", json!({"name": "x", "password": "password-123", "role": "ProjectAdmin", "projectName": "ghost"})).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let viewer = h.login("viewer1", "password-123").await;
    let padmin = h.login("admin1", "password-123").await;

    let (s, v) = h
        .call_as(
            Some(&padmin),
            Method::POST,
            "/api/v2/projects/p1/volumes",
            Some(json!({"name": "pv", "size": "1 gib"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let uuid = v["UUID"].as_str().unwrap().to_owned();
    // The viewer reads but cannot change.
    let (s, _) = h
        .call_as(
            Some(&viewer),
            Method::GET,
            &format!("/api/v2/projects/p1/volumes/{uuid}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, list) = h
        .call_as(
            Some(&viewer),
            Method::GET,
            "/api/v2/volumes?projectName=p1",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["volumes"].as_array().unwrap().len(), 1);
    let (s, e) = h
        .call_as(
            Some(&viewer),
            Method::POST,
            "/api/v2/projects/p1/volumes",
            Some(json!({"name": "no", "size": "1 gib"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_error_body(&e);
    let (s, _) = h
        .call_as(
            Some(&viewer),
            Method::DELETE,
            &format!("/api/v2/volumes/{uuid}"),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // A project admin cannot touch another project, nor administer the cluster.
    let (s, _) = h
        .call_as(
            Some(&padmin),
            Method::GET,
            "/api/v2/projects/default/volumes",
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .call_as(
            Some(&padmin),
            Method::POST,
            "/api/v2/projects",
            Some(json!({"name": "p2"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    // projectName is mandatory for non-admins on the flat routes.
    let (s, _) = h
        .call_as(Some(&padmin), Method::GET, "/api/v2/volumes", None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // The cluster admin sees every project; the project list is filtered by role.
    let (_, all) = h.get("/api/v2/volumes").await;
    assert_eq!(all["volumes"][0]["projectName"], "p1");
    let (_, projects) = h
        .call_as(Some(&viewer), Method::GET, "/api/v2/projects", None)
        .await;
    assert_eq!(
        projects["projects"],
        json!([{"name": "p1", "description": "tenant one"}])
    );
    // A volume of p1 asked for under another project is not found there.
    let (s, _) = h
        .get(&format!("/api/v2/projects/default/volumes/{uuid}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn registered_service_keys_sign_accepted_tokens() {
    let h = Harness::start().await;
    let key = rcgen::KeyPair::generate().unwrap(); // ECDSA P-256
    let (s, c) = h
        .post("/api/v2/credentials", json!({"id": "dms-key", "projectName": "system", "type": "ec256pubkey", "key": key.public_key_pem()}))
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    let (s, list) = h.get("/api/v2/credentials").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["credentials"][0]["id"], "dms-key");
    let (s, _) = h
        .post(
            "/api/v2/credentials",
            json!({"id": "bad", "projectName": "system", "type": "ec256pubkey", "key": "garbage"}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some("dms-key".to_owned());
    let signing = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let token =
        jsonwebtoken::encode(&header, &json!({"sub": "dms", "exp": exp}), &signing).unwrap();
    let (s, _) = h
        .call_as(Some(&token), Method::GET, "/api/v2/cluster", None)
        .await;
    assert_eq!(s, StatusCode::OK);
    // Unknown key ids are 401; removing the credential revokes its tokens.
    header.kid = Some("other".to_owned());
    let stranger =
        jsonwebtoken::encode(&header, &json!({"sub": "dms", "exp": exp}), &signing).unwrap();
    let (s, _) = h
        .call_as(Some(&stranger), Method::GET, "/api/v2/cluster", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h.delete("/api/v2/credentials/dms-key").await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = h
        .call_as(Some(&token), Method::GET, "/api/v2/cluster", None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn tls_is_on_by_default_with_a_generated_certificate() {
    let h = Harness::start().await;
    assert!(h.base.starts_with("https://"));
    let cert = h.dir.join("tls-cert.pem");
    assert!(std::fs::read_to_string(&cert)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(h.dir.join("tls-key.pem"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(h.dir.join("admin-password"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // A client that pins the generated certificate verifies it.
    let pinned = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&cert).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let port = h.server.as_ref().unwrap().local_addr().port();
    let resp = pinned
        .get(format!("https://localhost:{port}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Plain HTTP to the TLS port fails.
    let plain = h
        .client
        .get(format!("http://127.0.0.1:{port}/openapi.json"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != StatusCode::OK).unwrap_or(true));
}

#[tokio::test]
async fn plain_http_and_disabled_auth_only_on_explicit_flags() {
    let h = Harness::start_with(|c| {
        c.tls = mgmt_api::TlsMode::PlainHttp;
        c.auth.disabled = true;
    })
    .await;
    assert!(h.base.starts_with("http://"));
    let (s, _) = h.call_as(None, Method::GET, "/api/v2/cluster", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(!h.dir.join("tls-cert.pem").exists());
}

#[tokio::test]
async fn openapi_document_lists_every_route() {
    let h = Harness::start().await;
    let (s, doc) = h.call_as(None, Method::GET, "/openapi.json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/login", "post"),
        ("/api/v2/cluster", "get"),
        ("/api/v2/clusterinfo", "get"),
        ("/api/v2/nodes", "get"),
        ("/api/v2/projects", "post"),
        ("/api/v2/volumes", "get"),
        ("/api/v2/volumes", "post"),
        ("/api/v2/volumes/", "get"),
        ("/api/v2/volumes/{UUID}", "put"),
        ("/api/v2/volumes/{UUID}", "delete"),
        (
            "/api/v2/projects/{projectName}/volumes/{UUID}/rollback",
            "put",
        ),
        ("/api/v2/projects/{projectName}/snapshots", "post"),
        ("/api/v2/projects/{projectName}/snapshots/", "get"),
        ("/api/v1/volumes/thickclone", "post"),
        ("/api/v1/snapshots/thickclone", "post"),
        ("/api/v1/workflows", "get"),
        ("/api/v1/workflows/{workflowId}", "get"),
        ("/api/v1/workflows/{workflowId}/cancel", "post"),
        ("/api/v2/credentials", "post"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["schemas"]["VolumeDto"].is_object());
}

/// The documents' flow exactly as a new user types it with curl: log in with
/// Basic, then call with the bearer token (`-k` for the self-signed certificate).
#[tokio::test]
async fn documents_curl_examples_work() {
    let h = Harness::start().await;
    let base = h.base.clone();
    let password = h.admin_password();
    let out = tokio::task::spawn_blocking(move || {
        let curl = |args: &[&str]| -> Value {
            let out = std::process::Command::new("curl").args(["-sS", "-k", "--max-time", "20"]).args(args).output().expect("curl is installed");
            assert!(out.status.success(), "curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&out.stdout).into_owned()))
        };
        let login = curl(&["-X", "POST", "-u", &format!("admin:{password}"), &format!("{base}/login")]);
        let token = login["idToken"].as_str().unwrap().to_owned();
        let auth = format!("Authorization: Bearer {token}");
        let cluster = curl(&["-H", &auth, &format!("{base}/api/v2/cluster")]);
        let created = curl(&[
            "-X", "POST", "-H", &auth, "-H", "Content-Type: application/json",
            "-d", r#"{"name": "vol1", "size": "10737418240", "replicaCount": 1, "acl": {"values": ["ALLOW_ANY"]}, "compression": "false", "projectName": "default"}"#,
            &format!("{base}/api/v2/volumes"),
        ]);
        let uuid = created["UUID"].as_str().unwrap().to_owned();
        let listed = curl(&["-H", &auth, &format!("{base}/api/v2/volumes?projectName=default&limit=10")]);
        let updated = curl(&["-X", "PUT", "-H", &auth, "-d", r#"{"size": "20 gib"}"#, &format!("{base}/api/v2/volumes/{uuid}")]);
        let deleted = curl(&["-X", "DELETE", "-H", &auth, &format!("{base}/api/v2/volumes/{uuid}?projectName=default")]);
        let unauth = curl(&[&format!("{base}/api/v2/volumes")]);
        (cluster, created, listed, updated, deleted, unauth)
    })
    .await
    .unwrap();
    let (cluster, created, listed, updated, deleted, unauth) = out;
    assert!(cluster["subsystemNQN"].is_string());
    assert_eq!(created["size"], "10737418240");
    assert_eq!(listed["volumes"].as_array().unwrap().len(), 1);
    assert_eq!(updated["size"], (20u64 << 30).to_string());
    assert_eq!(deleted, json!({}));
    assert_error_body(&unauth);
}

/// Every path and method the OpenAPI document lists is routed (none falls through
/// to the "no such endpoint" fallback or answers 405), so the document cannot
/// describe routes the server lacks.
#[tokio::test]
async fn every_documented_operation_is_routed() {
    let h = Harness::start().await;
    let (_, doc) = h.call_as(None, Method::GET, "/openapi.json", None).await;
    let mut checked = 0;
    for (path, ops) in doc["paths"].as_object().unwrap() {
        let concrete = path
            .replace("{UUID}", &uuid::Uuid::new_v4().to_string())
            .replace("{workflowId}", &uuid::Uuid::new_v4().to_string())
            .replace("{projectName}", "default")
            .replace("{id}", "none");
        for method in ops.as_object().unwrap().keys() {
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let (s, body) = h
                .call_as(Some(&h.token), m, &concrete, Some(json!({})))
                .await;
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert!(
                !body["message"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("no such endpoint"),
                "{method} {path} is not routed"
            );
            assert!(!s.is_server_error(), "{method} {path} answered {s}: {body}");
            checked += 1;
        }
    }
    assert!(checked >= 35, "only {checked} operations documented");
}
