//! Property-based tests of the management API from its own OpenAPI document:
//! schemathesis (`tests/api/schemathesis.sh`) generates requests for every
//! operation, valid and invalid, against the real keeld (real HTTPS, engine and
//! target) and checks that none gets a server error and every answer matches the
//! document (status codes, content types, bodies, 405s, 401s).
//!
//! Needs python3; the script installs schemathesis into a virtualenv under the
//! target directory when it is not on PATH. Bounded: a few examples per
//! operation, the whole run under `RUN_TIMEOUT`.
//!
//! Run: `cargo test --test api_schemathesis -- --nocapture` (prints the report).
//! The generator seed is fixed so runs repeat; `KEEL_API_SEED=<n>` explores
//! another part of the input space (and replays a failure it printed).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Keeld;
use reqwest::StatusCode;
use serde_json::json;

/// Longest the schemathesis run may take (the script kills it past this).
const RUN_TIMEOUT: Duration = Duration::from_secs(150);
/// Generated cases per operation in the single-request phases.
const MAX_EXAMPLES: u32 = 6;
/// Scenarios of the stateful phase (create, then follow the links).
const STATEFUL_EXAMPLES: u32 = 30;

#[test]
fn generated_requests_get_no_server_error_and_answers_match_the_document() {
    let mut k = Keeld::start_default();
    let token = k.login();
    // Resources for the generated requests to find: a volume to read, update
    // and delete by UUID, and a project besides `default`.
    k.create_volume("seed-volume", 64 << 20, &["ALLOW_ANY"]);
    let p = k.post(
        "/api/v2/projects",
        &json!({"name": "seed-project", "description": "for schemathesis"}),
    );
    assert_eq!(p.status, StatusCode::OK, "{}", p.body);

    let work = tempfile::Builder::new()
        .prefix("schemathesis-")
        .tempdir()
        .expect("temp dir");
    let token_file = work.path().join("token");
    std::fs::write(&token_file, &token).expect("token file");
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/schemathesis.sh");
    let seed = std::env::var("KEEL_API_SEED").unwrap_or_else(|_| "1".to_owned());
    println!("schemathesis seed {seed} (replay with KEEL_API_SEED={seed})");
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(script)
        .args(["--url", &k.api_url])
        .arg("--token-file")
        .arg(&token_file)
        .arg("--ca")
        .arg(k.certificate_path())
        .args(["--max-examples", &MAX_EXAMPLES.to_string()])
        .args(["--stateful-examples", &STATEFUL_EXAMPLES.to_string()])
        .args(["--timeout", &RUN_TIMEOUT.as_secs().to_string()])
        .args(["--seed", &seed])
        .arg("--report-dir")
        .arg(work.path().join("report"))
        .output()
        .expect("run tests/api/schemathesis.sh");
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}\nschemathesis took {elapsed:?}");

    k.assert_alive("schemathesis ran");
    match out.status.code() {
        Some(0) => {}
        Some(124) | Some(137) => panic!("schemathesis did not finish within {RUN_TIMEOUT:?}\n{}", k.log_tail()),
        Some(2) => panic!("schemathesis could not run (install python3 and python3-venv):\n{stderr}"),
        other => panic!(
            "schemathesis found failures (exit {other:?}, seed {seed}); the report above names each with a curl line to replay\n{}",
            k.log_tail()
        ),
    }
    // The run must have exercised every operation the document lists, not
    // stopped at the schema: the first summary's "Selected: n/n" and
    // "Tested: n" agree.
    let selected = stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("Selected: "))
        .and_then(|s| s.split('/').next_back())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no operation count in the report:\n{stdout}"));
    assert!(
        stdout.contains(&format!("Tested: {selected}\n")),
        "not every one of the {selected} operations was tested:\n{stdout}"
    );
    assert!(
        stdout.contains("Stateful (in"),
        "the stateful phase did not run:\n{stdout}"
    );
    assert!(
        !stdout.contains("Server error"),
        "a server error slipped through:\n{stdout}"
    );
    // And keeld still serves normally afterwards, and restarts on what the run
    // left behind.
    let a = k.get("/api/v2/cluster");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    k.restart();
    let a = k.get("/api/v2/volumes?showAll=true");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}
