//! System tests of the PVC storage dialect against the real keeld: its own
//! HTTPS listener driven with curl as a new user would (form fields, query
//! strings, a session cookie), every refusal answered in PVC's shape with
//! nothing changed, and the same pools, volumes and snapshots seen through
//! the Lightbits API and over NVMe/TCP.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{pattern, Keeld, KeeldOptions};
use nvmf_target::Lba;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a0a0a0a-0000-4000-8000-00000000000a";
const MIB: u64 = 1 << 20;

/// A keeld serving the dialect.
struct Pvc {
    keeld: Keeld,
    url: String,
    /// curl's cookie jar: the session a login opens.
    jar: PathBuf,
}

/// How a curl call authenticates.
#[derive(Clone, Copy)]
enum Auth<'a> {
    /// Nothing but the cookie jar (a session, if one is open).
    Session,
    /// `token` as a form or query value.
    Token(&'a str),
    /// PVC's `X-Api-Key` header.
    ApiKey(&'a str),
}

impl Pvc {
    fn start(no_auth: bool) -> Pvc {
        let [port] = common::ports::unused_ports();
        let mut keeld = Keeld::start(KeeldOptions {
            no_auth,
            extra_args: vec!["--pvc-listen".to_owned(), format!("127.0.0.1:{port}")],
            ..KeeldOptions::default()
        });
        if !no_auth {
            keeld.login();
        }
        let jar = keeld.data_dir().join("pvc-cookies");
        Pvc {
            keeld,
            url: format!("https://127.0.0.1:{port}"),
            jar,
        }
    }

    /// curl `method path` with `form` as urlencoded fields; the status and
    /// the body (JSON where it is JSON).
    fn curl(&self, method: &str, path: &str, form: &[(&str, &str)], auth: Auth) -> (u16, Value) {
        let mut cmd = Command::new("curl");
        cmd.args(["-s", "--max-time", "60", "-w", "\n%{http_code}", "--cacert"])
            .arg(self.keeld.certificate_path())
            .arg("-b")
            .arg(&self.jar)
            .arg("-c")
            .arg(&self.jar)
            .args(["-X", method]);
        for (name, value) in form {
            cmd.arg("--data-urlencode").arg(format!("{name}={value}"));
        }
        let token_field;
        match auth {
            Auth::Session => {}
            Auth::Token(t) => {
                token_field = format!("token={t}");
                cmd.arg("--data-urlencode").arg(&token_field);
            }
            Auth::ApiKey(t) => {
                cmd.arg("-H").arg(format!("X-Api-Key: {t}"));
            }
        }
        let out = cmd
            .arg(format!("{}{path}", self.url))
            .output()
            .expect("curl must be installed");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text
            .rsplit_once('\n')
            .unwrap_or_else(|| panic!("{method} {path}: no status line in {text:?}"));
        (
            code.trim().parse().expect("code"),
            serde_json::from_str(body).unwrap_or(Value::String(body.into())),
        )
    }

    /// A call in the open session that must succeed with 200; its body.
    fn ok(&self, method: &str, path: &str, form: &[(&str, &str)]) -> Value {
        let (code, body) = self.curl(method, path, form, Auth::Session);
        assert_eq!(code, 200, "{method} {path} {form:?}: {body}");
        body
    }

    /// A call in the open session that must fail with `code` and a message
    /// containing `says`.
    fn refused(&self, method: &str, path: &str, form: &[(&str, &str)], code: u16, says: &str) {
        let (got, body) = self.curl(method, path, form, Auth::Session);
        assert_eq!(got, code, "{method} {path} {form:?}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(says),
            "{method} {path} {form:?}: {message:?} lacks {says:?}"
        );
    }

    /// Opens a session with the admin's token.
    fn login(&self) {
        let token = self.keeld.token().expect("token").to_owned();
        let (code, body) = self.curl(
            "POST",
            "/api/v1/auth/login",
            &[("token", &token)],
            Auth::Session,
        );
        assert_eq!(code, 200, "login: {body}");
    }

    /// What the Lightbits API shows: every project and volume, and every
    /// snapshot, to check a refusal changed nothing.
    fn lightbits_view(&self) -> Value {
        let projects = self.keeld.get("/api/v2/projects");
        let volumes = self.keeld.get("/api/v2/volumes");
        let snapshots = self.keeld.get("/api/v2/snapshots");
        json!([projects.body, volumes.body, snapshots.body])
    }
}

#[test]
fn pools_volumes_and_snapshots_made_through_pvc_are_the_lightbits_ones_with_the_same_data() {
    let p = Pvc::start(false);
    p.login();
    assert_eq!(
        p.ok(
            "POST",
            "/api/v1/storage/ceph/pool",
            &[("pool", "vms"), ("pgs", "256")]
        )["message"]
            .as_str()
            .map(|m| m.contains("vms")),
        Some(true)
    );
    // Query-string values work as well as form fields.
    p.ok(
        "POST",
        "/api/v1/storage/ceph/volume?volume=disk1&pool=vms&size=64M",
        &[],
    );
    let listed = p.ok("GET", "/api/v1/storage/ceph/volume", &[("pool", "vms")]);
    assert_eq!(listed[0]["name"], "disk1", "{listed}");
    assert_eq!(listed[0]["pool"], "vms");
    assert_eq!(listed[0]["stats"]["size"], "64M");
    let uuid = listed[0]["stats"]["id"].as_str().expect("id").to_owned();

    // The Lightbits API sees the pool as a project and the volume in it.
    let project = p.keeld.get("/api/v2/projects/vms");
    assert_eq!(project.status, StatusCode::OK, "{}", project.body);
    let volume = p.keeld.wait_volume_state(&uuid, "Available");
    assert_eq!(volume["name"], "disk1");
    assert_eq!(volume["projectName"], "vms");
    assert_eq!(volume["size"], (64 * MIB).to_string());

    // PVC has no attach; a host is granted the volume through Lightbits and
    // writes A, then PVC snapshots it and the host writes B.
    let grant = p.keeld.put(
        &format!("/api/v2/projects/vms/volumes/{uuid}"),
        &json!({"acl": {"values": [HOST_A]}}),
    );
    assert_eq!(grant.status, StatusCode::OK, "{}", grant.body);
    let nsid = p.keeld.wait_volume_state(&uuid, "Available")["nsid"]
        .as_u64()
        .expect("nsid") as u32;
    let mut host = p.keeld.connect(HOST_A);
    host.set_queue_count(1).expect("queues");
    let mut io = host.connect_io_queue(1).expect("io queue");
    let (a, b) = (pattern(4096, 21), pattern(4096, 22));
    io.write(nsid, Lba(7), a.clone(), 4096).expect("write A");
    io.flush(nsid).expect("flush");
    p.ok(
        "POST",
        "/api/v1/storage/ceph/volume/snapshot",
        &[
            ("snapshot", "before-b"),
            ("volume", "disk1"),
            ("pool", "vms"),
        ],
    );
    io.write(nsid, Lba(7), b.clone(), 4096).expect("write B");
    io.flush(nsid).expect("flush");
    let snap = p.ok(
        "GET",
        "/api/v1/storage/ceph/volume/snapshot/vms/disk1/before-b",
        &[],
    );
    assert_eq!(snap[0]["volume"], "disk1", "{snap}");
    let snap_uuid = snap[0]["stats"]["id"].as_str().expect("id").to_owned();

    // A Lightbits clone of PVC's snapshot holds A.
    let clone = p.keeld.post(
        "/api/v2/volumes",
        &json!({"name": "from-snap", "projectName": "vms", "sourceSnapshotUUID": snap_uuid,
                "acl": {"values": [HOST_A]}}),
    );
    assert_eq!(clone.status, StatusCode::OK, "{}", clone.body);
    let clone_uuid = clone.body["UUID"].as_str().expect("UUID").to_owned();
    let clone_nsid = p.keeld.wait_volume_state(&clone_uuid, "Available")["nsid"]
        .as_u64()
        .expect("nsid") as u32;
    assert!(
        common::wait_until(std::time::Duration::from_secs(10), || io
            .read(clone_nsid, Lba(7), 1, 4096)
            .is_ok()),
        "the clone's namespace never became readable"
    );
    assert_eq!(
        io.read(clone_nsid, Lba(7), 1, 4096).expect("read clone"),
        a.to_vec()
    );

    // PVC grows and renames in one call; Lightbits sees both; the data stays.
    p.ok(
        "PUT",
        "/api/v1/storage/ceph/volume/vms/disk1",
        &[("size", "128M"), ("name", "root1")],
    );
    let renamed = p.keeld.wait_volume_state(&uuid, "Available");
    assert_eq!(renamed["name"], "root1");
    assert_eq!(renamed["size"], (128 * MIB).to_string());
    assert_eq!(io.read(nsid, Lba(7), 1, 4096).expect("read"), b.to_vec());
    p.refused(
        "GET",
        "/api/v1/storage/ceph/volume/vms/disk1",
        &[],
        404,
        "Volume not found.",
    );
    assert_eq!(
        p.ok("GET", "/api/v1/storage/ceph/volume/vms/root1", &[])[0]["stats"]["size"],
        "128M"
    );
    // The snapshot follows its volume's new name.
    let snaps = p.ok(
        "GET",
        "/api/v1/storage/ceph/volume/snapshot",
        &[("volume", "root1")],
    );
    assert_eq!(snaps[0]["snapshot"], "before-b", "{snaps}");

    // Status and utilisation count what is there.
    let status = p.ok("GET", "/api/v1/storage/ceph/status", &[]);
    assert_eq!(status["health"], "HEALTH_OK", "{status}");
    assert!(status["ceph_data"]
        .as_str()
        .is_some_and(|t| t.contains("2 volumes, 1 snapshots")));
    let df = p.ok("GET", "/api/v1/storage/ceph/df", &[]);
    assert!(
        df["ceph_data"].as_str().is_some_and(|t| t.contains("vms")),
        "{df}"
    );

    // Deletes answer once done: Lightbits no longer sees the snapshot.
    p.ok(
        "DELETE",
        "/api/v1/storage/ceph/volume/snapshot/vms/root1/before-b",
        &[],
    );
    assert_eq!(
        p.keeld
            .get(&format!("/api/v2/snapshots/{snap_uuid}?projectName=vms"))
            .status,
        StatusCode::NOT_FOUND
    );
    drop(io);
    drop(host);

    // Removing the pool needs the flag; with it, the pool goes with every
    // volume in it, before the answer.
    let before = p.lightbits_view();
    p.refused(
        "DELETE",
        "/api/v1/storage/ceph/pool/vms",
        &[],
        510,
        "yes_i_really_mean_it",
    );
    assert_eq!(
        p.lightbits_view(),
        before,
        "a refused pool removal changed something"
    );
    p.ok(
        "DELETE",
        "/api/v1/storage/ceph/pool/vms",
        &[("yes_i_really_mean_it", "")],
    );
    assert_eq!(
        p.keeld.get("/api/v2/projects/vms").status,
        StatusCode::NOT_FOUND
    );
    for gone in [&uuid, &clone_uuid] {
        assert_eq!(
            p.keeld.get(&format!("/api/v2/volumes/{gone}")).status,
            StatusCode::NOT_FOUND
        );
    }
    p.refused(
        "GET",
        "/api/v1/storage/ceph/pool/vms",
        &[],
        404,
        "Pool not found.",
    );
}

/// A call that must be refused: method, path, values, status, and what the
/// message says.
type Refusal<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

#[test]
fn tokens_sessions_and_every_refusal_answer_in_pvcs_shape_and_change_nothing() {
    let p = Pvc::start(false);
    let token = p.keeld.token().expect("token").to_owned();
    let pools = "/api/v1/storage/ceph/pool";

    // The root answers anyone with PVC's 209.
    let (code, root) = p.curl("GET", "/api/v1", &[], Auth::Session);
    assert_eq!(code, 209, "{root}");

    // No session and no token: 401; a bad token: 401; a token as a value
    // or as X-Api-Key: served.
    p.refused("GET", pools, &[], 401, "Authentication required");
    let (code, _) = p.curl("GET", pools, &[], Auth::Token("not-a-token"));
    assert_eq!(code, 401);
    let (code, body) = p.curl("GET", &format!("{pools}?token={token}"), &[], Auth::Session);
    assert_eq!(code, 200, "{body}");
    let (code, body) = p.curl("GET", pools, &[], Auth::ApiKey(&token));
    assert_eq!(code, 200, "{body}");
    let (code, form) = p.curl("GET", "/api/v1/auth/login", &[], Auth::Session);
    assert_eq!(code, 200);
    assert!(
        form.as_str().is_some_and(|f| f.contains("name=\"token\"")),
        "{form}"
    );
    let (code, _) = p.curl(
        "POST",
        "/api/v1/auth/login",
        &[("token", "forged")],
        Auth::Session,
    );
    assert_eq!(code, 401);
    p.refused("GET", pools, &[], 401, "Authentication required");
    // A session serves until logout.
    p.login();
    p.ok("GET", pools, &[]);
    p.ok("POST", "/api/v1/auth/logout", &[]);
    p.refused("GET", pools, &[], 401, "Authentication required");
    p.login();

    p.ok("POST", pools, &[("pool", "p1"), ("pgs", "128")]);
    p.ok(
        "POST",
        "/api/v1/storage/ceph/volume",
        &[("volume", "v1"), ("pool", "p1"), ("size", "16M")],
    );
    p.ok(
        "POST",
        "/api/v1/storage/ceph/volume",
        &[("volume", "v2"), ("pool", "p1"), ("size", "16M")],
    );
    p.ok(
        "POST",
        "/api/v1/storage/ceph/volume/snapshot",
        &[("snapshot", "s1"), ("volume", "v1"), ("pool", "p1")],
    );
    let before = p.lightbits_view();

    let vol = "/api/v1/storage/ceph/volume";
    let snap = "/api/v1/storage/ceph/volume/snapshot";
    let refusals: Vec<Refusal> = vec![
        ("POST", pools, vec![("pgs", "8")], 510, "pool is required"),
        ("POST", pools, vec![("pool", "p2")], 510, "pgs is required"),
        (
            "POST",
            pools,
            vec![("pool", "p2"), ("pgs", "lots")],
            510,
            "pgs must be",
        ),
        (
            "POST",
            pools,
            vec![("pool", "p2"), ("pgs", "0")],
            510,
            "pgs must be",
        ),
        (
            "POST",
            pools,
            vec![("pool", "p1"), ("pgs", "8")],
            510,
            "already exists",
        ),
        (
            "POST",
            pools,
            vec![("pool", "no pool"), ("pgs", "8")],
            510,
            "illegal character",
        ),
        (
            "DELETE",
            "/api/v1/storage/ceph/pool/none",
            vec![("yes_i_really_mean_it", "")],
            510,
            "no pool named",
        ),
        (
            "POST",
            vol,
            vec![("pool", "p1"), ("size", "1G")],
            510,
            "volume is required",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v3"), ("size", "1G")],
            510,
            "pool is required",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v3"), ("pool", "p1")],
            510,
            "size is required",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v3"), ("pool", "p1"), ("size", "20GB")],
            510,
            "not a valid size",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v3"), ("pool", "p1"), ("size", "-1G")],
            510,
            "not a valid size",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v3"), ("pool", "p1"), ("size", "1000")],
            510,
            "multiple",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v3"), ("pool", "nope"), ("size", "1G")],
            510,
            "no pool named",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v1"), ("pool", "p1"), ("size", "1G")],
            510,
            "already exists",
        ),
        (
            "POST",
            vol,
            vec![("volume", "v 3"), ("pool", "p1"), ("size", "1G")],
            510,
            "illegal character",
        ),
        (
            "PUT",
            "/api/v1/storage/ceph/volume/p1/v1",
            vec![],
            510,
            "nothing was changed",
        ),
        (
            "PUT",
            "/api/v1/storage/ceph/volume/p1/v1",
            vec![("size", "8M")],
            510,
            "volumes only grow",
        ),
        (
            "PUT",
            "/api/v1/storage/ceph/volume/p1/v1",
            vec![("name", "v2")],
            510,
            "already exists",
        ),
        (
            "PUT",
            "/api/v1/storage/ceph/volume/p1/v1",
            vec![("name", "a/b")],
            510,
            "illegal character",
        ),
        (
            "PUT",
            "/api/v1/storage/ceph/volume/p1/nope",
            vec![("size", "32M")],
            510,
            "no volume",
        ),
        (
            "DELETE",
            "/api/v1/storage/ceph/volume/p1/nope",
            vec![],
            510,
            "no volume",
        ),
        (
            "POST",
            snap,
            vec![("volume", "v1"), ("pool", "p1")],
            510,
            "snapshot is required",
        ),
        (
            "POST",
            snap,
            vec![("snapshot", "s2"), ("volume", "nope"), ("pool", "p1")],
            510,
            "no volume",
        ),
        (
            "POST",
            snap,
            vec![("snapshot", "s1"), ("volume", "v2"), ("pool", "p1")],
            510,
            "already exists",
        ),
        (
            "DELETE",
            "/api/v1/storage/ceph/volume/snapshot/p1/v2/s1",
            vec![],
            510,
            "no snapshot",
        ),
        (
            "GET",
            "/api/v1/storage/ceph/volume/snapshot/p1/v2/s1",
            vec![],
            404,
            "Snapshot not found.",
        ),
        ("GET", vol, vec![("limit", "(")], 400, "Regex Error"),
        ("GET", vol, vec![("pool", "nope")], 400, "no pool named"),
        ("GET", vol, vec![("limit", "^zz")], 404, "Volume not found."),
        (
            "GET",
            "/api/v1/storage/ceph/osd/7",
            vec![],
            404,
            "OSD not found.",
        ),
        (
            "POST",
            "/api/v1/storage/ceph/osd",
            vec![("node", "n"), ("device", "/dev/sdb"), ("weight", "1.0")],
            510,
            "not provided",
        ),
        (
            "POST",
            "/api/v1/storage/ceph/osd",
            vec![("node", "n")],
            510,
            "device is required",
        ),
        (
            "DELETE",
            "/api/v1/storage/ceph/osd/0",
            vec![],
            510,
            "yes_i_really_mean_it",
        ),
        (
            "DELETE",
            "/api/v1/storage/ceph/osd/0",
            vec![("yes_i_really_mean_it", "")],
            510,
            "not provided",
        ),
        (
            "POST",
            "/api/v1/storage/ceph/osd/0/state",
            vec![("state", "sideways")],
            510,
            "in or out",
        ),
        (
            "POST",
            "/api/v1/storage/ceph/osd/0/state",
            vec![("state", "out")],
            510,
            "not provided",
        ),
        (
            "POST",
            "/api/v1/storage/ceph/cluster-option",
            vec![("action", "set"), ("option", "noout")],
            510,
            "not provided",
        ),
        (
            "POST",
            "/api/v1/storage/ceph/cluster-option",
            vec![("action", "flip"), ("option", "noout")],
            510,
            "set or unset",
        ),
        ("GET", "/api/v1/vm", vec![], 510, "not provided"),
        (
            "POST",
            "/api/v1/network/100/lease",
            vec![("macaddress", "x")],
            510,
            "not provided",
        ),
        (
            "POST",
            "/api/v1/node/n/coordinator-state",
            vec![("coordinator-state", "primary")],
            510,
            "not provided",
        ),
        ("PATCH", pools, vec![], 405, "not allowed"),
        (
            "GET",
            "/api/v1/storage/rbd",
            vec![],
            404,
            "no such endpoint",
        ),
    ];
    for (method, path, form, code, says) in &refusals {
        p.refused(method, path, form, *code, says);
    }
    assert_eq!(p.lightbits_view(), before, "a refusal changed something");

    // `limit` is fuzzy unless anchored; a single GET is exact.
    let names = |body: Value| -> Vec<String> {
        body.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert_eq!(names(p.ok("GET", vol, &[("limit", "v")])), ["v1", "v2"]);
    assert_eq!(names(p.ok("GET", vol, &[("limit", "2$")])), ["v2"]);
    assert_eq!(
        names(p.ok("GET", "/api/v1/storage/ceph/volume/p1/v1", &[])),
        ["v1"]
    );
    let osd = p.ok("GET", "/api/v1/storage/ceph/osd/0/state", &[]);
    assert_eq!(
        (osd["up"].as_u64(), osd["in"].as_u64()),
        (Some(1), Some(1)),
        "{osd}"
    );
    let nodes = p.ok("GET", "/api/v1/node", &[]);
    assert_eq!(nodes[0]["coordinator_state"], "primary", "{nodes}");

    // A body over the limit is refused before anything is read into values.
    let big = format!(
        "volume={}&pool=p1&size=4M&token={token}",
        "x".repeat(2 << 20)
    );
    let resp = p
        .keeld
        .client()
        .post(format!("{}{vol}", p.url))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(big)
        .send()
        .expect("send");
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(p.lightbits_view(), before);
}

#[test]
fn with_authentication_off_login_says_so_and_every_caller_is_served() {
    let p = Pvc::start(true);
    for method in ["GET", "POST"] {
        let (code, body) = p.curl(method, "/api/v1/auth/login", &[], Auth::Session);
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["message"], "Authentiation is disabled");
    }
    let (code, body) = p.curl("GET", "/api/v1/auth/logout", &[], Auth::Session);
    assert_eq!(
        (code, body["message"].as_str()),
        (200, Some("Authentiation is disabled"))
    );
    let (code, body) = p.curl(
        "POST",
        "/api/v1/storage/ceph/volume",
        &[("volume", "v"), ("pool", "default"), ("size", "4M")],
        Auth::Session,
    );
    assert_eq!(code, 200, "{body}");
    let a = p
        .keeld
        .call(Method::GET, "/api/v2/projects/default/volumes", None);
    assert!(a.body.to_string().contains("\"v\""), "{}", a.body);
}
