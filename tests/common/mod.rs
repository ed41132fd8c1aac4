//! Shared helpers for the system tests that drive the real `keeld` binary:
//! start it on free loopback ports with a temporary data directory, talk to its
//! REST API over HTTPS, connect to its NVMe/TCP target with our host side, and
//! stop it gracefully (SIGTERM) or brutally (SIGKILL) before restarting it on
//! the same data directory.
//!
//! Ports: keeld is started with port 0 for every listener and reports the
//! addresses it bound in its JSON log, which a reader thread parses. This avoids
//! the race of picking a free port and handing it over. A restart therefore gets
//! new ports; [`Keeld::nvme_addr`] and friends always hold the current ones.
#![allow(dead_code)]

pub mod blocks;
pub mod cluster;
pub mod etcd;
pub mod history;
pub mod netns;
pub mod ports;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nvmf_target::host::{HostController, HostOptions};
use reqwest::blocking::Client;
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// Longest a keeld start (pool open, first-start credentials, listeners) may take.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a graceful stop may take before the test calls it a hang.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest any test waits for an asynchronous state change.
pub const WAIT: Duration = Duration::from_secs(15);
/// Log lines kept for diagnostics when something fails.
const LOG_LINES_KEPT: usize = 400;

/// How to start keeld.
#[derive(Debug, Clone)]
pub struct KeeldOptions {
    /// Size of the embedded pool file (sparse).
    pub pool_size: String,
    /// Serve the REST API over plain HTTP.
    pub insecure_http: bool,
    /// Accept REST requests without a token.
    pub no_auth: bool,
    /// Pace thick clone jobs (MiB/s), so a test can catch one mid-copy.
    pub thick_clone_mib_per_s: Option<u64>,
    /// Further command-line flags (e.g. the reactor kind).
    pub extra_args: Vec<String>,
    /// The address the REST, NVMe/TCP and discovery listeners bind (each
    /// on port 0).
    pub listen_ip: IpAddr,
    /// Run keeld inside this network namespace (`ip netns exec`, which
    /// execs keeld in place: the child's pid is keeld's).
    pub netns: Option<String>,
    /// The REST listener's port (0: an ephemeral one, new on each start).
    pub api_port: u16,
}

impl Default for KeeldOptions {
    fn default() -> KeeldOptions {
        KeeldOptions {
            pool_size: "1GiB".into(),
            insecure_http: false,
            no_auth: false,
            thick_clone_mib_per_s: None,
            extra_args: Vec::new(),
            listen_ip: Ipv4Addr::LOCALHOST.into(),
            netns: None,
            api_port: 0,
        }
    }
}

/// What keeld reported about its listeners.
#[derive(Debug, Clone, Default)]
struct Listeners {
    api_url: Option<String>,
    nvme: Option<SocketAddr>,
    discovery: Option<SocketAddr>,
    nqn: Option<String>,
}

impl Listeners {
    fn complete(&self) -> bool {
        self.api_url.is_some()
            && self.nvme.is_some()
            && self.discovery.is_some()
            && self.nqn.is_some()
    }
}

/// A running keeld child process and a REST client for it.
pub struct Keeld {
    child: Option<Child>,
    /// The thread reading keeld's log; it ends at EOF once keeld has exited.
    log_reader: Option<std::thread::JoinHandle<()>>,
    opts: KeeldOptions,
    data_dir: PathBuf,
    _tmp: tempfile::TempDir,
    log: Arc<Mutex<VecDeque<String>>>,
    /// Base URL of the REST API, e.g. `https://127.0.0.1:41234`.
    pub api_url: String,
    /// The NVMe/TCP I/O listener.
    pub nvme_addr: SocketAddr,
    /// The NVMe/TCP discovery listener.
    pub discovery_addr: SocketAddr,
    /// The node's subsystem NQN.
    pub subsystem_nqn: String,
    client: Client,
    token: Option<String>,
}

/// A REST answer: status and the body as JSON (a JSON string if it was not JSON,
/// `Null` if empty), plus the headers.
#[derive(Debug, Clone)]
pub struct Answer {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: Value,
    /// Response headers.
    pub headers: reqwest::header::HeaderMap,
}

impl Keeld {
    /// Starts keeld with default options.
    pub fn start_default() -> Keeld {
        Keeld::start(KeeldOptions::default())
    }

    /// Starts keeld on a fresh temporary data directory and waits until its REST
    /// API answers.
    pub fn start(opts: KeeldOptions) -> Keeld {
        let tmp = tempfile::Builder::new()
            .prefix("keeld-test-")
            .tempdir()
            .expect("temp dir");
        let data_dir = tmp.path().join("data");
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (child, listeners, log_reader) = spawn(&opts, &data_dir, &log);
        let mut keeld = Keeld {
            child: Some(child),
            log_reader: Some(log_reader),
            opts,
            data_dir,
            _tmp: tmp,
            log,
            api_url: String::new(),
            nvme_addr: "127.0.0.1:0".parse().expect("addr"),
            discovery_addr: "127.0.0.1:0".parse().expect("addr"),
            subsystem_nqn: String::new(),
            client: Client::new(),
            token: None,
        };
        keeld.adopt(listeners);
        keeld
    }

    fn adopt(&mut self, listeners: Listeners) {
        self.api_url = listeners.api_url.expect("api url");
        self.nvme_addr = listeners.nvme.expect("nvme addr");
        self.discovery_addr = listeners.discovery.expect("discovery addr");
        self.subsystem_nqn = listeners.nqn.expect("nqn");
        self.client = build_client(&self.data_dir, self.opts.insecure_http);
        self.wait_for_api();
    }

    /// Polls the API (any HTTP answer counts) until it serves, bounded.
    fn wait_for_api(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match self
                .client
                .get(format!("{}/api/v2/cluster", self.api_url))
                .send()
            {
                Ok(_) => return,
                Err(err) => {
                    self.assert_alive("waiting for the REST API");
                    assert!(
                        Instant::now() < deadline,
                        "REST API not answering: {err}\n{}",
                        self.log_tail()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// The data directory (pool file, catalog, credentials, certificate).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The process id of the running keeld.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("keeld is not running").id()
    }

    /// Panics with the log if keeld has exited.
    pub fn assert_alive(&mut self, doing: &str) {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                let tail = self.log_tail();
                self.child = None;
                panic!("keeld exited ({status}) while {doing}\n{tail}");
            }
        }
    }

    /// The last lines keeld logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = self
            .log
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        format!("--- keeld log (last lines) ---\n{log}")
    }

    /// Whether keeld logged a line containing `needle` (among the kept lines).
    pub fn logged(&self, needle: &str) -> bool {
        self.log
            .lock()
            .map(|l| l.iter().any(|line| line.contains(needle)))
            .unwrap_or(false)
    }

    /// The admin password keeld wrote on first start.
    pub fn admin_password(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("api").join("admin-password"))
            .expect("admin-password file")
            .trim()
            .to_owned()
    }

    /// Path of the self-signed certificate keeld made on first start.
    pub fn certificate_path(&self) -> PathBuf {
        self.data_dir.join("api").join("tls-cert.pem")
    }

    /// Logs in as `admin` (HTTP Basic) and keeps the token for later calls.
    pub fn login(&mut self) -> String {
        let password = self.admin_password();
        let resp = self
            .client
            .post(format!("{}/login", self.api_url))
            .basic_auth("admin", Some(password))
            .send()
            .expect("login request");
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "login failed\n{}",
            self.log_tail()
        );
        let body: Value = resp.json().expect("login body");
        let token = body["idToken"].as_str().expect("idToken").to_owned();
        self.token = Some(token.clone());
        token
    }

    /// The token from the last [`Keeld::login`].
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// The HTTP client (trusts keeld's certificate).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Sends a request with the stored token (if any) and an optional JSON body.
    pub fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Answer {
        let token = self.token.clone();
        self.call_as(token.as_deref(), method, path, body)
    }

    /// Sends a request as `token` (None: no Authorization header).
    pub fn call_as(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.api_url, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        answer(
            req.send()
                .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log_tail())),
        )
    }

    /// Sends raw bytes with extra headers and the stored token.
    pub fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.api_url, path))
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        answer(
            req.send()
                .unwrap_or_else(|e| panic!("{path}: {e}\n{}", self.log_tail())),
        )
    }

    /// GET with the stored token.
    pub fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None)
    }

    /// POST a JSON body with the stored token.
    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::POST, path, Some(body))
    }

    /// PUT a JSON body with the stored token.
    pub fn put(&self, path: &str, body: &Value) -> Answer {
        self.call(Method::PUT, path, Some(body))
    }

    /// DELETE with the stored token.
    pub fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None)
    }

    /// Creates a volume in project `default` with `acl` hosts; asserts 200 and
    /// waits until it is Available. Returns its JSON.
    pub fn create_volume(&self, name: &str, size_bytes: u64, acl: &[&str]) -> Value {
        let body = serde_json::json!({
            "name": name,
            "size": size_bytes.to_string(),
            "replicaCount": 1,
            "projectName": "default",
            "acl": {"values": acl},
        });
        let a = self.post("/api/v2/volumes", &body);
        assert_eq!(a.status, StatusCode::OK, "create {name}: {:?}", a.body);
        let uuid = a.body["UUID"].as_str().expect("UUID").to_owned();
        self.wait_volume_state(&uuid, "Available")
    }

    /// Waits until volume `uuid` is in `state`; returns its JSON.
    pub fn wait_volume_state(&self, uuid: &str, state: &str) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(WAIT, || {
            let a = self.get(&format!("/api/v2/volumes/{uuid}"));
            let done = a.status == StatusCode::OK && a.body["state"] == state;
            last = a.body;
            done
        });
        assert!(ok, "volume {uuid} never reached {state}; last: {last}");
        last
    }

    /// Polls workflow `id` (`GET /api/v1/workflows/{id}`) until it leaves
    /// Running; returns its last view.
    pub fn wait_workflow(&self, id: &str) -> Value {
        let mut last = Value::Null;
        let ended = wait_until(WAIT * 4, || {
            last = self.get(&format!("/api/v1/workflows/{id}")).body["workflow"].clone();
            last["state"] != "Running"
        });
        assert!(ended, "workflow {id} still running: {last}");
        last
    }

    /// Waits until GET of volume `uuid` answers 404 (a delete finished).
    pub fn wait_volume_gone(&self, uuid: &str) {
        let mut last = Value::Null;
        let ok = wait_until(WAIT, || {
            let a = self.get(&format!("/api/v2/volumes/{uuid}"));
            last = a.body;
            a.status == StatusCode::NOT_FOUND
        });
        assert!(ok, "volume {uuid} never disappeared; last: {last}");
    }

    /// Host options for `host_nqn` towards this node's subsystem: keep-alive off
    /// (tests pause between commands), a bounded command timeout.
    pub fn host_options(&self, host_nqn: &str) -> HostOptions {
        let mut o = HostOptions::new(host_nqn, self.subsystem_nqn.clone());
        o.kato_ms = 0;
        o.timeout = Duration::from_secs(10);
        o.host_id = host_id_for(host_nqn);
        o
    }

    /// Connects an NVMe/TCP controller as `host_nqn` to the I/O listener.
    pub fn connect(&self, host_nqn: &str) -> HostController {
        HostController::connect(self.nvme_addr, self.host_options(host_nqn))
            .unwrap_or_else(|e| panic!("connect as {host_nqn}: {e}\n{}", self.log_tail()))
    }

    /// Kills keeld with SIGKILL and reaps it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.finish_log();
        }
    }

    /// Sends SIGTERM and waits (bounded) for keeld to exit; returns its status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("keeld is not running");
        let sent = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        assert!(
            sent.is_ok_and(|s| s.success()),
            "could not send SIGTERM to keeld"
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.finish_log();
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "keeld did not stop within {STOP_TIMEOUT:?} of SIGTERM\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Starts keeld again on the same data directory (after `kill9` or
    /// `terminate`; a running keeld is terminated first). Keeps the token: token
    /// keys persist in the data directory.
    /// Waits until the log reader has kept every line the exited keeld wrote.
    fn finish_log(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
    }

    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.terminate();
            assert!(
                status.success(),
                "keeld exited with {status} on SIGTERM\n{}",
                self.log_tail()
            );
        }
        if let Ok(mut log) = self.log.lock() {
            log.push_back("--- restart ---".into());
        }
        let (child, listeners, log_reader) = spawn(&self.opts, &self.data_dir, &self.log);
        self.child = Some(child);
        self.log_reader = Some(log_reader);
        self.adopt(listeners);
    }
}

impl Drop for Keeld {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A deterministic host id per host NQN (the target checks that one host NQN
/// keeps one host id).
pub fn host_id_for(host_nqn: &str) -> [u8; 16] {
    let crc = crc32c::crc32c(host_nqn.as_bytes());
    let mut id = [0u8; 16];
    for (i, chunk) in id.chunks_mut(4).enumerate() {
        chunk.copy_from_slice(&(crc ^ (i as u32).wrapping_mul(0x9E37_79B9)).to_le_bytes());
    }
    id
}

/// Polls `f` until it is true or `timeout` passes; returns whether it became true.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A UUID string as the 16 bytes of an NVMe NGUID/UUID.
pub fn uuid_bytes(uuid: &str) -> [u8; 16] {
    *uuid::Uuid::parse_str(uuid).expect("UUID").as_bytes()
}

/// `len` bytes of a pattern derived from `seed`.
pub fn pattern(len: usize, seed: u64) -> bytes::Bytes {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    bytes::Bytes::from(out)
}

fn answer(resp: reqwest::blocking::Response) -> Answer {
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        body,
        headers,
    }
}

/// An HTTPS client that trusts exactly keeld's self-signed certificate (or a
/// plain client for `--insecure-http`).
fn build_client(data_dir: &Path, insecure_http: bool) -> Client {
    let mut builder = Client::builder().timeout(Duration::from_secs(30));
    if !insecure_http {
        let pem =
            std::fs::read(data_dir.join("api").join("tls-cert.pem")).expect("keeld's certificate");
        let cert = reqwest::Certificate::from_pem(&pem).expect("certificate PEM");
        builder = builder
            .add_root_certificate(cert)
            .tls_built_in_root_certs(false);
    }
    builder.build().expect("HTTP client")
}

/// Spawns keeld and waits until it has reported all its listeners.
fn spawn(
    opts: &KeeldOptions,
    data_dir: &Path,
    log: &Arc<Mutex<VecDeque<String>>>,
) -> (Child, Listeners, std::thread::JoinHandle<()>) {
    let keeld = env!("CARGO_BIN_EXE_keeld");
    let mut cmd = match &opts.netns {
        Some(ns) => {
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, keeld]);
            cmd
        }
        None => Command::new(keeld),
    };
    let listen = SocketAddr::new(opts.listen_ip, 0).to_string();
    let api_listen = SocketAddr::new(opts.listen_ip, opts.api_port).to_string();
    cmd.arg("--data-dir")
        .arg(data_dir)
        .args(["--pool-size", &opts.pool_size])
        .args(["--api-listen", &api_listen])
        .args(["--nvme-listen", &listen])
        .args(["--discovery-listen", &listen])
        .args(["--log-format", "json"])
        .env("RUST_LOG", "info")
        .env_remove("KEEL_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if opts.insecure_http {
        cmd.arg("--insecure-http");
    }
    if opts.no_auth {
        cmd.arg("--no-auth");
    }
    if let Some(rate) = opts.thick_clone_mib_per_s {
        cmd.args(["--thick-clone-mib-per-s", &rate.to_string()]);
    }
    cmd.args(&opts.extra_args);
    let mut child = cmd.spawn().expect("spawn keeld");
    let stderr = child.stderr.take().expect("keeld stderr");
    let (tx, rx) = mpsc::channel::<Listeners>();
    let reader_log = log.clone();
    let reader = std::thread::spawn(move || read_log(stderr, reader_log, tx));
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(listeners) => return (child, listeners, reader),
            Err(mpsc::RecvTimeoutError::Timeout) | Err(mpsc::RecvTimeoutError::Disconnected) => {}
        }
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            // keeld is dead, so its stderr is at EOF: the reader ends after
            // keeping everything keeld printed.
            let _ = reader.join();
            let tail = log
                .lock()
                .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
                .unwrap_or_default();
            panic!(
                "keeld on {} did not start (exit: {exited:?})\n{tail}",
                data_dir.display()
            );
        }
    }
}

/// Reads keeld's JSON log: keeps the tail, and reports the listeners once all
/// are known.
fn read_log(
    stderr: std::process::ChildStderr,
    log: Arc<Mutex<VecDeque<String>>>,
    tx: mpsc::Sender<Listeners>,
) {
    let mut listeners = Listeners::default();
    let mut reported = false;
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        if !reported {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let f = &v["fields"];
                match f["message"].as_str() {
                    Some("NVMe/TCP target listening") => {
                        listeners.nvme = f["io"].as_str().and_then(|s| s.parse().ok());
                        listeners.discovery = f["discovery"].as_str().and_then(|s| s.parse().ok());
                        listeners.nqn = f["nqn"].as_str().map(str::to_owned);
                    }
                    Some("REST API listening") => {
                        listeners.api_url = f["url"].as_str().map(str::to_owned)
                    }
                    _ => {}
                }
                if listeners.complete() {
                    reported = true;
                    let _ = tx.send(listeners.clone());
                }
            }
        }
        if let Ok(mut log) = log.lock() {
            if log.len() == LOG_LINES_KEPT {
                log.pop_front();
            }
            log.push_back(line);
        }
    }
}
