//! Test harness: a real API server on 127.0.0.1 over HTTPS (self-signed), backed
//! by the in-memory control, and a reqwest client that trusts it.

#![allow(dead_code)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use mgmt_api::auth::{AuthConfig, PasswordCost};
use mgmt_api::control::memory::MemoryControl;
use mgmt_api::{ApiConfig, ApiServer};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Longest any test waits for an asynchronous state change.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct Harness {
    pub server: Option<ApiServer>,
    pub control: Arc<MemoryControl>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
    pub base: String,
    pub token: String,
}

pub fn cheap_auth() -> AuthConfig {
    AuthConfig {
        password_cost: PasswordCost {
            memory_kib: 64,
            iterations: 1,
        },
        ..AuthConfig::default()
    }
}

pub fn config(dir: &Path) -> ApiConfig {
    let mut config = ApiConfig::new("127.0.0.1:0".parse().unwrap(), dir.to_path_buf());
    config.auth = cheap_auth();
    config.service.workflow_poll_interval = Duration::from_millis(10);
    config
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

impl Harness {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut ApiConfig)) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        let control = Arc::new(MemoryControl::default());
        let mut h = Self::open(dir, control, tweak).await;
        h._tmp = Some(tmp);
        h
    }

    /// Starts a server on `dir` with `control` (used to restart on the same state).
    pub async fn open(
        dir: PathBuf,
        control: Arc<MemoryControl>,
        tweak: impl FnOnce(&mut ApiConfig),
    ) -> Self {
        let mut config = config(&dir);
        tweak(&mut config);
        let server = ApiServer::bind(config, control.clone()).await.unwrap();
        let base = server.base_url();
        let client = client();
        let mut h = Self {
            server: Some(server),
            control,
            dir,
            _tmp: None,
            client,
            base,
            token: String::new(),
        };
        h.token = h.login_admin().await;
        h
    }

    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.dir.join("admin-password"))
            .unwrap()
            .trim()
            .to_owned()
    }

    pub async fn login_admin(&self) -> String {
        self.login("admin", &self.admin_password()).await
    }

    pub async fn login(&self, user: &str, password: &str) -> String {
        let resp = self
            .client
            .post(format!("{}/login", self.base))
            .header("Authorization", basic(user, password))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "login of {user} failed");
        let body: Value = resp.json().await.unwrap();
        body["idToken"].as_str().unwrap().to_owned()
    }

    /// Stops the server, keeping the data dir; returns what a restart needs.
    pub async fn stop(mut self) -> (PathBuf, Arc<MemoryControl>, Option<tempfile::TempDir>) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        (self.dir.clone(), self.control.clone(), self._tmp.take())
    }

    pub async fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(&self.token)
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call_as(Some(&self.token.clone()), Method::GET, path, None)
            .await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_as(Some(&self.token.clone()), Method::POST, path, Some(body))
            .await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call_as(Some(&self.token.clone()), Method::PUT, path, Some(body))
            .await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call_as(Some(&self.token.clone()), Method::DELETE, path, None)
            .await
    }

    /// Creates a volume in the default project and returns its body.
    pub async fn create_volume(&self, name: &str, size: &str) -> Value {
        let (status, body) = self
            .post("/api/v2/projects/default/volumes", serde_json::json!({"name": name, "size": size, "replicaCount": 1, "acl": {"values": ["ALLOW_ANY"]}}))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }
}

/// Polls `check` until it yields `Some`, failing after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The error body's shape: a numeric code and a non-empty message.
pub fn assert_error_body(body: &Value) {
    assert!(body["code"].is_i64(), "error body lacks a code: {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "error body lacks a message: {body}"
    );
}
