//! keelctl against the real keeld: a daemon on loopback ports with a 1 GiB
//! pool in a temporary data directory, driven through the real keelctl binary
//! exactly as an operator would, checking output, JSON and exit codes.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::ports::unused_ports;

/// How long keeld may take to answer after start (pool creation, TLS material).
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long keeld may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause between readiness polls.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A running keeld with its own data directory and ports.
struct Keeld {
    child: Child,
    dir: tempfile::TempDir,
    endpoint: String,
    /// A token from `keelctl login`, so each command skips the (deliberately
    /// slow) password check; empty until keeld answers.
    token: String,
}

impl Keeld {
    fn start() -> Keeld {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let log = File::create(dir.path().join("keeld.log")).expect("log file");
        let [api, nvme, discovery] = unused_ports();
        let child = Command::new(env!("CARGO_BIN_EXE_keeld"))
            .arg("--data-dir")
            .arg(&data)
            .args(["--pool-size", "1GiB"])
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--nvme-listen", &format!("127.0.0.1:{nvme}")])
            .args(["--discovery-listen", &format!("127.0.0.1:{discovery}")])
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn keeld");
        let mut keeld = Keeld {
            child,
            dir,
            endpoint: format!("https://127.0.0.1:{api}"),
            token: String::new(),
        };
        keeld.wait_until_ready();
        let login = keeld.keelctl_as_admin(&["login"]);
        assert!(login.status.success(), "login: {}", stderr(&login));
        keeld.token = stdout(&login).trim().to_owned();
        keeld
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("keeld.log")).unwrap_or_default()
    }

    /// Polls `keelctl cluster info` until it succeeds, keeld exits, or time runs out.
    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                panic!(
                    "keeld exited with {status} before answering:\n{}",
                    self.log()
                );
            }
            let out = self.keelctl_as_admin(&["cluster", "info"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "keeld did not answer within {START_TIMEOUT:?}; last keelctl error: {}\nkeeld log:\n{}",
                stderr(&out),
                self.log()
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Runs keelctl against this keeld (endpoint and data dir given, nothing
    /// inherited from the environment).
    fn keelctl(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let common = [
            "--endpoint",
            &self.endpoint,
            "--data-dir",
            path_str(&data),
            "--token",
            &self.token,
        ];
        run_keelctl(&[&common[..], args].concat())
    }

    /// Runs keelctl logging in as admin with the data dir's admin-password.
    fn keelctl_as_admin(&self, args: &[&str]) -> Output {
        let data = self.data_dir();
        let common = ["--endpoint", &self.endpoint, "--data-dir", path_str(&data)];
        run_keelctl(&[&common[..], args].concat())
    }

    /// Runs keelctl, asserts success, and returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.keelctl(args);
        assert!(
            out.status.success(),
            "keelctl {args:?} failed with {}: {}\nkeeld log tail:\n{}",
            out.status,
            stderr(&out),
            tail(&self.log())
        );
        stdout(&out)
    }

    /// Runs keelctl with `-o json`, asserts success, and parses stdout.
    fn json(&self, args: &[&str]) -> serde_json::Value {
        let text = self.ok(&[args, &["-o", "json"]].concat());
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("keelctl {args:?} -o json printed non-JSON ({e}):\n{text}"))
    }

    /// SIGTERM, then a bounded wait for a clean exit.
    fn stop(mut self) {
        terminate(&self.child);
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                assert!(
                    status.success(),
                    "keeld exited with {status} after SIGTERM:\n{}",
                    tail(&self.log())
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "keeld ignored SIGTERM for {STOP_TIMEOUT:?}"
            );
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for Keeld {
    fn drop(&mut self) {
        // A failed test must not leave keeld running: SIGKILL by pid if it is
        // still there (after `stop` it is already reaped and this does nothing).
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn terminate(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM {} failed", child.id());
}

fn run_keelctl(args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keelctl"));
    for var in [
        "KEEL_ENDPOINT",
        "KEEL_DATA_DIR",
        "KEEL_USER",
        "KEEL_PASSWORD",
        "KEEL_TOKEN",
        "KEEL_PROJECT",
    ] {
        command.env_remove(var);
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run keelctl")
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Asserts keelctl failed with `code` and its stderr contains every `needle`.
fn assert_fails(out: &Output, code: i32, needles: &[&str]) {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit code; stderr: {err}\nstdout: {}",
        stdout(out)
    );
    for needle in needles {
        assert!(err.contains(needle), "stderr lacks {needle:?}:\n{err}");
    }
}

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0c5e7a4e-1111-4c55-9f2e-000000000001";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:0c5e7a4e-2222-4c55-9f2e-000000000002";

#[test]
fn keelctl_manages_volumes_on_a_real_keeld() {
    let keeld = Keeld::start();

    let info = keeld.ok(&["cluster", "info"]);
    assert!(
        info.contains("Subsystem NQN:") && info.contains("nqn."),
        "{info}"
    );
    let cluster = keeld.json(&["cluster", "info"]);
    assert!(
        cluster["subsystemNQN"]
            .as_str()
            .is_some_and(|n| n.starts_with("nqn.")),
        "{cluster}"
    );
    assert!(keeld.ok(&["nodes", "list"]).starts_with("NAME "));

    // Create, with an ACL and a label; the table shows it.
    let created = keeld.ok(&[
        "volume",
        "create",
        "vol-a",
        "--size",
        "64MiB",
        "--acl",
        HOST_A,
        "--ip-acl",
        "127.0.0.0/8",
        "--label",
        "tier=gold",
    ]);
    assert!(
        created.contains("Name:") && created.contains("vol-a"),
        "{created}"
    );
    assert!(created.contains("64 MiB (67108864 bytes)"), "{created}");
    let list = keeld.ok(&["volume", "list"]);
    let header = list.lines().next().expect("header");
    assert!(
        header.starts_with("NAME") && header.contains("UUID") && header.contains("SIZE"),
        "{list}"
    );
    let row = list
        .lines()
        .find(|l| l.starts_with("vol-a "))
        .unwrap_or_else(|| panic!("no vol-a row:\n{list}"));
    assert!(row.contains("Available") && row.contains("64 MiB"), "{row}");
    // Columns are aligned: the UUID column starts at the same offset in every line.
    let column = header.find("UUID").expect("UUID column");
    assert_eq!(
        row[column..].split_whitespace().next().map(str::len),
        Some(36),
        "{list}"
    );

    // -o json is the server's JSON: parseable, with the API's field names.
    let volume = keeld.json(&["volume", "get", "vol-a"]);
    let uuid = volume["UUID"].as_str().expect("UUID").to_owned();
    assert_eq!(volume["size"], "67108864");
    assert_eq!(volume["acl"]["values"], serde_json::json!([HOST_A]));
    assert_eq!(
        volume["IPAcl"]["values"],
        serde_json::json!(["127.0.0.0/8"])
    );
    let widened = keeld.json(&["volume", "update", "vol-a", "--ip-acl", "ALLOW_ANY"]);
    assert_eq!(widened["IPAcl"]["values"], serde_json::json!(["ALLOW_ANY"]));
    assert_eq!(
        volume["labels"],
        serde_json::json!([{"key": "tier", "value": "gold"}])
    );
    let listed = keeld.json(&["volume", "list"]);
    assert_eq!(
        listed["volumes"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    // By UUID as well as by name.
    assert!(keeld.ok(&["volume", "get", &uuid]).contains("vol-a"));

    // Grow, keeping labels and adding one.
    keeld.ok(&[
        "volume", "update", "vol-a", "--size", "128MiB", "--label", "env=test",
    ]);
    let grown = keeld.json(&["volume", "get", &uuid]);
    assert_eq!(grown["size"], "134217728");
    assert_eq!(
        grown["labels"],
        serde_json::json!([{"key": "tier", "value": "gold"}, {"key": "env", "value": "test"}])
    );
    // `volume resize`, with a size in the REST API's notation (fractions).
    keeld.ok(&["volume", "resize", "vol-a", "0.25GiB"]);
    let resized = keeld.json(&["volume", "get", &uuid]);
    assert_eq!(resized["size"], "268435456");
    let shrink = keeld.keelctl(&["volume", "update", "vol-a", "--size", "64MiB"]);
    assert_fails(
        &shrink,
        1,
        &["keelctl: error: 400 Bad Request:", "only grow"],
    );

    // ACL add and remove.
    keeld.ok(&["volume", "acl", "add", "vol-a", HOST_B]);
    assert_eq!(
        keeld.json(&["volume", "get", "vol-a"])["acl"]["values"],
        serde_json::json!([HOST_A, HOST_B])
    );
    keeld.ok(&["volume", "acl", "remove", "vol-a", HOST_A]);
    assert_eq!(
        keeld.json(&["volume", "get", "vol-a"])["acl"]["values"],
        serde_json::json!([HOST_B])
    );
    let absent = keeld.keelctl(&["volume", "acl", "remove", "vol-a", HOST_A]);
    assert_fails(&absent, 1, &["is not in the ACL"]);

    // Errors: a duplicate name is the server's 409; a bad size is a usage error.
    let dup = keeld.keelctl(&["volume", "create", "vol-a", "--size", "64MiB"]);
    assert_fails(
        &dup,
        1,
        &["keelctl: error: 409 Conflict:", "already exists"],
    );
    let bad_size = keeld.keelctl(&["volume", "create", "vol-b", "--size", "ten-gigs"]);
    assert_fails(
        &bad_size,
        2,
        &["--size", "size \"ten-gigs\" has an unknown unit"],
    );
    let missing = keeld.keelctl(&["volume", "get", "no-such-volume"]);
    assert_fails(
        &missing,
        1,
        &["keelctl: error: 404 Not Found:", "no-such-volume"],
    );

    // Snapshots, thin clones and rollback run on the engine.
    let snap = keeld.ok(&["snapshot", "create", "snap-1", "--volume", "vol-a"]);
    assert!(
        snap.contains("snap-1") && snap.contains("Available"),
        "{snap}"
    );
    let snaps = keeld.json(&["snapshot", "list"])["snapshots"].clone();
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    let snap_uuid = snaps[0]["UUID"].as_str().expect("snapshot UUID").to_owned();
    keeld.ok(&["clone", "create", "clone-1", "--snapshot", &snap_uuid]);
    keeld.ok(&["volume", "rollback", "vol-a", "--snapshot", &snap_uuid]);
    keeld.ok(&["volume", "delete", "clone-1", "--wait"]);

    // Clones, rollback and thick clones name a snapshot; an unknown one is a clear 404.
    let nobody = "00000000-0000-4000-8000-000000000000";
    for args in [
        &["clone", "create", "clone-1", "--snapshot", nobody][..],
        &["volume", "rollback", "vol-a", "--snapshot", nobody],
        &["thickclone", "volume", "thick-1", "--snapshot", nobody],
        &[
            "volume",
            "create",
            "clone-2",
            "--from-snapshot",
            "no-such-snapshot",
        ],
    ] {
        assert_fails(
            &keeld.keelctl(args),
            1,
            &["keelctl: error: 404 Not Found:", "snapshot"],
        );
    }
    assert!(keeld.ok(&["workflow", "list"]).starts_with("ID "));
    assert_eq!(
        keeld.json(&["workflow", "list"])["workflows"],
        serde_json::json!([])
    );

    // Listing follows the server's pages (here one volume per page) to the end.
    for name in ["vol-p1", "vol-p2"] {
        keeld.ok(&["volume", "create", name, "--size", "4MiB"]);
    }
    let paged = keeld.json(&["volume", "list", "--page-size", "1"]);
    let mut names: Vec<&str> = paged["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["vol-a", "vol-p1", "vol-p2"], "{paged}");
    let table = keeld.ok(&["volume", "list", "--page-size", "2"]);
    assert_eq!(table.lines().count(), 4, "header and three rows:\n{table}");
    let limited = keeld.json(&["volume", "list", "--limit", "1"]);
    assert_eq!(
        limited["volumes"].as_array().map(Vec::len),
        Some(1),
        "{limited}"
    );
    for name in ["vol-p1", "vol-p2"] {
        keeld.ok(&["volume", "delete", name, "--wait"]);
    }

    // Projects: volumes of another project stay out of the default one.
    keeld.ok(&["project", "create", "team-1", "--description", "first team"]);
    let projects = keeld.ok(&["project", "list"]);
    assert!(
        projects
            .lines()
            .any(|l| l.starts_with("team-1 ") && l.ends_with("first team")),
        "{projects}"
    );
    assert_fails(
        &keeld.keelctl(&["project", "create", "team-1"]),
        1,
        &["409 Conflict"],
    );
    keeld.ok(&[
        "--project",
        "team-1",
        "volume",
        "create",
        "vol-a",
        "--size",
        "4MiB",
    ]);
    let team = keeld.json(&["--project", "team-1", "volume", "list"]);
    assert_eq!(team["volumes"][0]["projectName"], "team-1", "{team}");
    assert_eq!(
        keeld.json(&["volume", "list"])["volumes"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    keeld.ok(&["--project", "team-1", "volume", "delete", "vol-a", "--wait"]);

    // Delete and wait until it is gone.
    let deleted = keeld.ok(&["volume", "delete", "vol-a", "--wait"]);
    assert!(deleted.contains("deleted"), "{deleted}");
    assert_eq!(
        keeld.json(&["volume", "list"])["volumes"],
        serde_json::json!([])
    );
    let gone = keeld.keelctl(&["volume", "get", &uuid]);
    assert_fails(&gone, 1, &["404 Not Found"]);

    keeld.stop();
}

#[test]
fn keelctl_starts_a_scrub_pass_and_shows_what_it_found() {
    let keeld = Keeld::start();
    keeld.ok(&["volume", "create", "scrubbed", "--size", "4MiB"]);
    let before = keeld.json(&["scrub", "status"]);
    assert_eq!(before["passesCompleted"], 0, "{before}");
    assert_eq!(before["bytesPerSecond"], 8 << 20, "the default pace");

    let started = keeld.ok(&["scrub", "start", "--wait", "--wait-timeout", "120"]);
    assert!(started.starts_with("scrub pass started"), "{started}");
    assert!(
        started.contains("Passes completed:  1\n") && started.contains("Damaged blocks:    0\n"),
        "{started}"
    );
    let status = keeld.ok(&["scrub", "status"]);
    assert!(status.contains("State:             Idle\n"), "{status}");
    let json = keeld.json(&["scrub", "status"]);
    assert_eq!(json["state"], "Idle", "{json}");
    assert_eq!(json["passesCompleted"], 1, "{json}");
    assert_eq!(json["damagedBlocks"], 0, "{json}");
    assert_eq!(json["volumes"], serde_json::json!([]), "{json}");
    let cluster = keeld.json(&["cluster", "info"]);
    assert_eq!(cluster["statistics"]["damagedBlocks"], 0, "{cluster}");
    keeld.stop();
}

#[test]
fn keelctl_explains_connection_tls_and_auth_failures() {
    let keeld = Keeld::start();
    let data = keeld.data_dir();
    let empty = tempfile::tempdir().expect("tempdir");

    // Nothing listening.
    let [port] = unused_ports();
    let refused = run_keelctl(&[
        "--endpoint",
        &format!("https://127.0.0.1:{port}"),
        "cluster",
        "info",
    ]);
    assert_fails(&refused, 1, &["connection refused", "Is keeld running"]);

    // A data dir without keeld's certificate: the self-signed certificate is not trusted.
    let untrusted = run_keelctl(&[
        "--endpoint",
        &keeld.endpoint,
        "--data-dir",
        path_str(empty.path()),
        "cluster",
        "info",
    ]);
    assert_fails(&untrusted, 1, &["TLS with", "certificate", "--cacert"]);

    // Trusted, but no credentials at all.
    let cert = data.join("api/tls-cert.pem");
    let anonymous = run_keelctl(&[
        "--endpoint",
        &keeld.endpoint,
        "--data-dir",
        path_str(empty.path()),
        "--cacert",
        path_str(&cert),
        "cluster",
        "info",
    ]);
    assert_fails(
        &anonymous,
        1,
        &["401 Unauthorized", "--user/--password", "admin-password"],
    );

    // A wrong password.
    let wrong = keeld.keelctl_as_admin(&["--password", "not-the-password", "cluster", "info"]);
    assert_fails(
        &wrong,
        1,
        &["401 Unauthorized", "check the password of user \"admin\""],
    );

    // login prints a token that works on its own, with --insecure instead of the certificate.
    let login = keeld.keelctl_as_admin(&["login"]);
    assert!(login.status.success(), "{}", stderr(&login));
    let token = stdout(&login).trim().to_owned();
    assert!(
        !token.is_empty() && !token.contains(char::is_whitespace),
        "{token:?}"
    );
    let with_token = run_keelctl(&[
        "--endpoint",
        &keeld.endpoint,
        "--data-dir",
        path_str(empty.path()),
        "--insecure",
        "--token",
        &token,
        "-o",
        "json",
        "nodes",
        "list",
    ]);
    assert!(with_token.status.success(), "{}", stderr(&with_token));
    let nodes: serde_json::Value = serde_json::from_slice(&with_token.stdout).expect("JSON");
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(1), "{nodes}");
    let bad_token = run_keelctl(&[
        "--endpoint",
        &keeld.endpoint,
        "--insecure",
        "--token",
        "not.a.token",
        "nodes",
        "list",
    ]);
    assert_fails(&bad_token, 1, &["401 Unauthorized", "keelctl login"]);

    // Plain HTTP to the HTTPS port.
    let http = keeld.endpoint.replace("https://", "http://");
    let plain = run_keelctl(&[
        "--endpoint",
        &http,
        "--data-dir",
        path_str(&data),
        "cluster",
        "info",
    ]);
    assert_fails(&plain, 1, &["use an https:// --endpoint"]);

    keeld.stop();
}

/// The cells of the row of `table` whose first cell is `name`.
fn cells(table: &str, name: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row:\n{table}"))
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn keelctl_manages_qos_policies_and_assigns_them_to_volumes() {
    let keeld = Keeld::start();

    // A global policy with two rates; the others stay unlimited.
    let created = keeld.ok(&[
        "qos-policy",
        "create",
        "gold",
        "--description",
        "gold tier",
        "--read-iops",
        "1000",
        "--total-mbps",
        "200",
    ]);
    assert!(
        created.contains("Name:         gold\n") && created.contains("Project:      (global)\n"),
        "{created}"
    );
    let list = keeld.ok(&["qos-policy", "list"]);
    assert!(
        list.starts_with("NAME ") && list.contains("READ IOPS") && list.contains("TOTAL MB/S"),
        "{list}"
    );
    let row = cells(&list, "gold");
    assert_eq!(
        row[2..],
        ["(global)", "absolute", "1000", "-", "-", "-", "-", "200"],
        "{list}"
    );
    let gold = keeld.json(&["qos-policy", "get", "gold"]);
    let gold_uuid = gold["UUID"].as_str().expect("UUID").to_owned();
    assert_eq!(gold["limit"]["limitAbsolute"]["readIOPS"], 1000, "{gold}");
    assert_eq!(gold["limit"]["limitAbsolute"]["totalMBps"], 200, "{gold}");
    assert_eq!(gold["description"], "gold tier", "{gold}");
    assert_eq!(gold["projectName"], "", "{gold}");
    let by_uuid = keeld.ok(&["qos-policy", "get", &gold_uuid]);
    assert!(by_uuid.contains("Read IOPS:    1000\n"), "{by_uuid}");
    let listed = keeld.json(&["qos-policy", "list"]);
    assert_eq!(
        listed["qosPolicies"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    // An all-unlimited policy is legitimate.
    keeld.ok(&["qos-policy", "create", "free"]);

    // A volume under the policy; `volume get` names it and what it held back.
    keeld.ok(&[
        "volume",
        "create",
        "qvol",
        "--size",
        "64MiB",
        "--qos-policy",
        "gold",
    ]);
    let volume = keeld.json(&["volume", "get", "qvol"]);
    assert_eq!(volume["qosPolicyName"], "gold", "{volume}");
    assert_eq!(volume["qosPolicyUUID"], gold_uuid.as_str(), "{volume}");
    let shown = keeld.ok(&["volume", "get", "qvol"]);
    assert!(
        shown.contains(&format!("gold ({gold_uuid})")) && shown.contains("QoS held back:"),
        "{shown}"
    );

    // New rates replace all of the old ones, here per GiB.
    let updated = keeld.json(&[
        "qos-policy",
        "update",
        "gold",
        "--per-gib",
        "--write-iops",
        "10",
    ]);
    assert_eq!(updated["limit"]["limitPerGb"]["writeIOPS"], 10, "{updated}");
    assert!(
        updated["limit"]["limitPerGb"]["readIOPS"].is_null()
            && updated["limit"].get("limitAbsolute").is_none(),
        "{updated}"
    );
    assert_eq!(updated["description"], "gold tier", "{updated}");
    let described = keeld.json(&["qos-policy", "update", &gold_uuid, "--description", "v2"]);
    assert_eq!(described["description"], "v2", "{described}");
    assert_eq!(described["limit"], updated["limit"], "{described}");
    let row = cells(&keeld.ok(&["qos-policy", "list"]), "gold");
    assert_eq!(row[3..6], ["per", "GiB", "-"], "{row:?}");

    // Moving the volume to another policy.
    let moved = keeld.json(&["volume", "update", "qvol", "--qos-policy", "free"]);
    assert_eq!(moved["qosPolicyName"], "free", "{moved}");
    keeld.ok(&["volume", "update", "qvol", "--qos-policy", &gold_uuid]);
    assert_eq!(
        keeld.json(&["volume", "get", "qvol"])["qosPolicyName"],
        "gold"
    );

    // An unknown policy is the API's 400, naming the field.
    let unknown = keeld.keelctl(&[
        "volume",
        "create",
        "bad",
        "--size",
        "4MiB",
        "--qos-policy",
        "no-such",
    ]);
    assert_fails(
        &unknown,
        1,
        &[
            "keelctl: error: 400 Bad Request:",
            "qosPolicyName",
            "no-such",
        ],
    );

    // A policy in use cannot be deleted; once the volume is gone it can.
    let busy = keeld.keelctl(&["qos-policy", "delete", "gold"]);
    assert_fails(&busy, 1, &["keelctl: error: 409 Conflict:"]);
    keeld.ok(&["volume", "delete", "qvol", "--wait"]);
    let deleted = keeld.ok(&["qos-policy", "delete", "gold"]);
    assert!(deleted.contains(&gold_uuid), "{deleted}");
    assert_fails(
        &keeld.keelctl(&["qos-policy", "get", "gold"]),
        1,
        &["404 Not Found"],
    );

    // A project's policy and default: new volumes without --qos-policy get it.
    keeld.ok(&["project", "create", "team-1"]);
    let team_policy = keeld.json(&[
        "--project",
        "team-1",
        "qos-policy",
        "create",
        "team-qos",
        "--project-scoped",
        "--total-iops",
        "500",
    ]);
    assert_eq!(team_policy["projectName"], "team-1", "{team_policy}");
    let row = cells(&keeld.ok(&["qos-policy", "list"]), "team-qos");
    assert_eq!(row[2], "team-1", "{row:?}");
    let project = keeld.ok(&[
        "project",
        "update",
        "team-1",
        "--default-qos-policy",
        "team-qos",
    ]);
    assert!(
        project.contains("Default QoS policy:  team-qos\n"),
        "{project}"
    );
    let projects = keeld.ok(&["project", "list"]);
    assert!(projects
        .lines()
        .next()
        .is_some_and(|h| h.contains("DEFAULT QOS")));
    let row = cells(&projects, "team-1");
    assert_eq!(row, ["team-1", "team-qos"], "{projects}");
    let defaulted = keeld.json(&[
        "--project",
        "team-1",
        "volume",
        "create",
        "tvol",
        "--size",
        "4MiB",
    ]);
    assert_eq!(defaulted["qosPolicyName"], "team-qos", "{defaulted}");
    // Another project's volumes cannot use it.
    let foreign = keeld.keelctl(&[
        "volume",
        "create",
        "dvol",
        "--size",
        "4MiB",
        "--qos-policy",
        "team-qos",
    ]);
    assert_fails(&foreign, 1, &["400 Bad Request", "team-1"]);

    keeld.stop();
}
