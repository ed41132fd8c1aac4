//! A real etcd for system tests: `etcd` (Debian's `etcd-server`) on
//! 127.0.0.1 (or another local address, [`Etcd::start_on`]) with free ports
//! and a temporary data directory, killed by pid when dropped.
//!
//! A missing `etcd` fails the test, as a missing QEMU does
//! (`tests/support/guest.rs`): `scripts/test.sh` installs it, so CI can never
//! skip silently. `KEEL_ALLOW_SKIP_ETCD=1` lets a developer without etcd skip,
//! with a banner.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Set to `1` to let tests that need etcd pass as skipped where it is missing.
pub const ALLOW_SKIP_ENV: &str = "KEEL_ALLOW_SKIP_ETCD";
/// Longest etcd may take to report healthy.
const HEALTH_TIMEOUT: Duration = Duration::from_secs(20);
/// Starts tried before giving up (a port picked free can be taken meanwhile).
const START_ATTEMPTS_MAX: u32 = 3;

/// A running etcd.
pub struct Etcd {
    child: Child,
    /// The client URL, e.g. `http://127.0.0.1:41234`.
    pub client_url: String,
    log_path: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

impl Etcd {
    /// Starts etcd and waits until it is healthy. `None` only when etcd is
    /// missing and [`ALLOW_SKIP_ENV`] is `1` (after a loud banner); a missing
    /// etcd otherwise fails the test.
    pub fn start(test: &str) -> Option<Etcd> {
        Etcd::start_on(test, Ipv4Addr::LOCALHOST.into())
    }

    /// As [`Etcd::start`], listening for clients on `ip` (an address of this
    /// network namespace, e.g. a bridge that other namespaces reach).
    pub fn start_on(test: &str, ip: IpAddr) -> Option<Etcd> {
        if !on_path("etcd") {
            skip_or_fail(test, "no `etcd` on PATH (apt-get install -y etcd-server)");
            return None;
        }
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS_MAX {
            match Etcd::try_start(ip) {
                Ok(etcd) => return Some(etcd),
                Err(log) => last_log = log,
            }
        }
        panic!("etcd did not become healthy in {START_ATTEMPTS_MAX} attempts:\n{last_log}");
    }

    fn try_start(ip: IpAddr) -> Result<Etcd, String> {
        let dir = tempfile::Builder::new()
            .prefix("keel-etcd-")
            .tempdir()
            .expect("temp dir");
        let [client_port, peer_port] = super::ports::unused_ports_on(ip);
        let client_url = format!("http://{ip}:{client_port}");
        let peer_url = format!("http://{ip}:{peer_port}");
        let log_path = dir.path().join("etcd.log");
        let log = std::fs::File::create(&log_path).expect("etcd log");
        let child = Command::new("etcd")
            .arg("--name")
            .arg("keel-test")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("keel-test={peer_url}")])
            .args(["--initial-cluster-state", "new"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        let mut etcd = Etcd {
            child,
            client_url,
            log_path,
            _dir: dir,
        };
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("HTTP client");
        let deadline = Instant::now() + HEALTH_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = etcd.child.try_wait() {
                return Err(format!("etcd exited ({status})\n{}", etcd.log()));
            }
            let healthy = client
                .get(format!("{}/health", etcd.client_url))
                .send()
                .ok()
                .and_then(|r| r.json::<serde_json::Value>().ok())
                .is_some_and(|v| v["health"] == "true");
            if healthy {
                return Ok(etcd);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "etcd not healthy within {HEALTH_TIMEOUT:?}\n{}",
            etcd.log()
        ))
    }

    /// etcd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reports that a test needing etcd cannot run: a banner, then a pass only
/// when [`ALLOW_SKIP_ENV`] is `1`, else a panic.
pub fn skip_or_fail(test: &str, reason: &str) {
    let allowed = std::env::var(ALLOW_SKIP_ENV).is_ok_and(|v| v == "1");
    eprintln!();
    eprintln!("################################################################");
    eprintln!("## SKIPPED {test}: etcd is unavailable");
    eprintln!("## reason: {reason}");
    eprintln!("## fix: sudo apt-get install -y etcd-server");
    if !allowed {
        eprintln!("## (set {ALLOW_SKIP_ENV}=1 to let this skip pass)");
    }
    eprintln!("################################################################");
    assert!(
        allowed,
        "{test}: etcd unavailable and {ALLOW_SKIP_ENV} is not 1: {reason}"
    );
}
