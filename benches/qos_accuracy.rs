//! QoS accuracy end to end: one real keeld on loopback, volumes under QoS
//! policies made over REST, driven over NVMe/TCP by our host side. For each
//! limit — 1000 and 5000 write IOPS (4 KiB random writes, QD32), 10 and
//! 50 MBps read (128 KiB random reads, QD8), 2000 total IOPS with a 70/30
//! read/write mix (4 KiB, QD32) — it prints the rate achieved over the run,
//! its ratio to the limit, and the token bucket's ceiling for a run of that
//! length (`(limit × (run + burst) + one command) / run`: a quiet volume
//! starts with 100 ms of tokens, and the last command admitted may put the
//! bucket one command into debt); an unthrottled run of the same writes shows
//! the head-room above the limits. Then the p50/p99 latency of 4 KiB random
//! reads at QD1 on an unthrottled neighbour volume, alone, with a throttled
//! volume beside it saturated (QD32 writes against its 1000 IOPS limit, from
//! another controller on its own thread), and alone again: what a volume's
//! held backlog costs the others on the same keeld (the second "alone" run
//! tells that cost from the drift of a shared machine).
//!
//! `cargo bench --bench qos_accuracy` (KEEL_BENCH_SECONDS per run, default
//! 5; KEEL_BENCH_DIR for keeld's data directory, default `target/`).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::load::{keep_in_flight, InFlight};
use common::process::{free_addr, load_average, Process};
use common::{bench_dir, env_u64, Xorshift};
use nvmf_target::host::{HostController, HostOptions, IoQueue};
use nvmf_target::throttle::BURST_WINDOW;
use nvmf_target::Lba;
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:bench000-0000-4000-8000-0000000000a7";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:bench000-0000-4000-8000-0000000000b7";
const BLOCK: u32 = 4096;
const VOLUME_BYTES: u64 = 1 << 30;
/// The region every workload addresses, written once before it is measured
/// so reads find data.
const REGION_BYTES: u64 = 64 << 20;
/// A megabyte as QoS policies count it.
const MB: f64 = 1e6;

/// A keeld on loopback (plain HTTP, no authentication) and a REST client.
struct Keeld {
    _process: Process,
    api: String,
    nvme: SocketAddr,
    nqn: String,
    http: reqwest::blocking::Client,
    dir: PathBuf,
}

impl Keeld {
    fn start(dir: &Path) -> Keeld {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("bench dir");
        let api = free_addr();
        let nvme = free_addr();
        let process = Process(
            Command::new(env!("CARGO_BIN_EXE_keeld"))
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--pool-size", "8GiB"])
                .args(["--api-listen", &api.to_string()])
                .args(["--nvme-listen", &nvme.to_string()])
                .args(["--discovery-listen", &free_addr().to_string()])
                .args(["--insecure-http", "--no-auth", "--log-format", "json"])
                .env_remove("KEEL_CONFIG")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start keeld"),
        );
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("HTTP client");
        let mut keeld = Keeld {
            _process: process,
            api: format!("http://{api}"),
            nvme,
            nqn: String::new(),
            http,
            dir: dir.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        keeld.nqn = loop {
            let cluster = keeld
                .http
                .get(format!("{}/api/v2/cluster", keeld.api))
                .send()
                .and_then(|r| r.json::<Value>());
            if let Some(nqn) = cluster
                .ok()
                .and_then(|c| c["subsystemNQN"].as_str().map(str::to_owned))
            {
                break nqn;
            }
            assert!(Instant::now() < deadline, "keeld did not start");
            std::thread::sleep(Duration::from_millis(50));
        };
        keeld
    }

    fn call(&self, method: reqwest::Method, path: &str, body: &Value) -> Value {
        let resp = self
            .http
            .request(method, format!("{}{path}", self.api))
            .json(body)
            .send()
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = resp.status();
        let body: Value = resp.json().unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {body}");
        body
    }

    fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.api))
            .send()
            .and_then(|r| r.json())
            .unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn create_policy(&self, name: &str, rates: Value) {
        self.call(
            reqwest::Method::POST,
            "/api/v2/qosPolicies",
            &json!({"name": name, "limit": {"limitAbsolute": rates}}),
        );
    }

    /// Creates an unthrottled volume visible to both hosts; returns (UUID, nsid).
    fn create_volume(&self, name: &str) -> (String, u32) {
        let answer = self.call(
            reqwest::Method::POST,
            "/api/v2/volumes",
            &json!({
                "name": name, "size": VOLUME_BYTES.to_string(), "replicaCount": 1,
                "projectName": "default", "acl": {"values": [HOST_A, HOST_B]},
            }),
        );
        let uuid = answer["UUID"].as_str().expect("UUID").to_owned();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.get(&format!("/api/v2/volumes/{uuid}"));
            if v["state"] == "Available" {
                let nsid = v["nsid"].as_u64().expect("nsid");
                return (uuid, u32::try_from(nsid).expect("nsid fits u32"));
            }
            assert!(
                Instant::now() < deadline,
                "volume {name} not Available: {v}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most 10 s) until the volume's QoS policy has held back
    /// some of its commands.
    fn wait_until_held(&self, uuid: &str) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.get(&format!("/api/v2/volumes/{uuid}"))["statistics"]["qosDelayedCommands"]
            .as_u64()
            .unwrap_or(0)
            == 0
        {
            assert!(Instant::now() < deadline, "no command of {uuid} was held");
            std::thread::yield_now();
        }
    }

    fn set_policy(&self, uuid: &str, policy: &str) {
        self.call(
            reqwest::Method::PUT,
            &format!("/api/v2/volumes/{uuid}"),
            &json!({"qosPolicyName": policy}),
        );
    }

    /// (delayed commands, total delay in ms) of a volume so far.
    fn delays(&self, uuid: &str) -> (u64, u64) {
        let s = &self.get(&format!("/api/v2/volumes/{uuid}"))["statistics"];
        (
            s["qosDelayedCommands"].as_u64().unwrap_or(0),
            s["qosDelayMs"].as_u64().unwrap_or(0),
        )
    }

    /// A controller as `host` with one I/O queue.
    fn io_queue(&self, host: &str) -> (HostController, IoQueue) {
        let mut options = HostOptions::new(host, self.nqn.clone());
        options.kato_ms = 0;
        options.timeout = Duration::from_secs(30);
        options.host_id = host_id(host);
        let mut c = HostController::connect(self.nvme, options).expect("connect");
        c.set_queue_count(1).expect("queues");
        let io = c.connect_io_queue(1).expect("I/O queue");
        (c, io)
    }
}

impl Drop for Keeld {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A host id per host NQN (the target checks that one NQN keeps one id).
fn host_id(host: &str) -> [u8; 16] {
    let mut id = [0u8; 16];
    for (i, b) in host.bytes().enumerate() {
        id[i % 16] ^= b.rotate_left(i as u32 % 8);
    }
    id
}

/// A workload: `read_share` of its commands read, the rest write, each of
/// `bytes`, at random places of the region (or in order, for the prefill).
#[derive(Clone, Copy)]
struct Workload {
    bytes: u32,
    depth: usize,
    read_share: f64,
    random: bool,
}

/// What a run did.
#[derive(Default)]
struct Run {
    reads: u64,
    writes: u64,
    elapsed: Duration,
    /// Per-command latencies, ns, sorted.
    latencies: Vec<u64>,
}

impl Run {
    fn iops(&self) -> f64 {
        (self.reads + self.writes) as f64 / self.elapsed.as_secs_f64()
    }

    fn read_mb_s(&self, bytes: u32) -> f64 {
        (self.reads * u64::from(bytes)) as f64 / MB / self.elapsed.as_secs_f64()
    }

    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let at = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        self.latencies[at] as f64 / 1000.0
    }
}

struct Ios<'a> {
    io: &'a mut IoQueue,
    nsid: u32,
    w: Workload,
    rng: Xorshift,
    next: u64,
    data: Bytes,
    /// Submission time and direction by command id.
    submitted: Vec<Option<(Instant, bool)>>,
}

impl InFlight for Ios<'_> {
    /// When the command was submitted and whether it read.
    type Completion = (Instant, bool);

    fn submit(&mut self) -> bool {
        let slots = REGION_BYTES / u64::from(self.w.bytes);
        let slot = if self.w.random {
            self.rng.next() % slots
        } else {
            self.next = (self.next + 1) % slots;
            self.next
        };
        let lba = Lba(slot * u64::from(self.w.bytes / BLOCK));
        let read = (self.rng.next() % 1000) as f64 / 1000.0 < self.w.read_share;
        let cid = if read {
            self.io
                .submit_read(self.nsid, lba, self.w.bytes / BLOCK, BLOCK)
        } else {
            self.io
                .submit_write(self.nsid, lba, self.data.clone(), BLOCK)
        }
        .expect("submit");
        self.submitted[usize::from(cid)] = Some((Instant::now(), read));
        true
    }

    fn wait(&mut self) -> Option<(Instant, bool)> {
        let (cid, response) = self.io.queue.wait_any().expect("completion");
        response.success().expect("a command failed");
        self.submitted[usize::from(cid)].take()
    }
}

/// Runs `w` on `nsid` for `run` (then lets what is in flight complete).
fn run(io: &mut IoQueue, nsid: u32, w: Workload, run: Duration) -> Run {
    let mut ios = Ios {
        io,
        nsid,
        w,
        rng: Xorshift(Xorshift::SEED),
        next: 0,
        data: Bytes::from(vec![0x5Au8; w.bytes as usize]),
        submitted: vec![None; usize::from(u16::MAX) + 1],
    };
    let mut result = Run::default();
    let started = Instant::now();
    let deadline = started + run;
    keep_in_flight(&mut ios, w.depth, |_, (at, read)| {
        result.latencies.push(at.elapsed().as_nanos() as u64);
        if read {
            result.reads += 1;
        } else {
            result.writes += 1;
        }
        Instant::now() < deadline
    });
    result.elapsed = started.elapsed();
    result.latencies.sort_unstable();
    result
}

/// Writes the region once with 128 KiB writes.
fn prefill(io: &mut IoQueue, nsid: u32) {
    let w = Workload {
        bytes: 128 << 10,
        depth: 8,
        read_share: 0.0,
        random: false,
    };
    let slots = REGION_BYTES / u64::from(w.bytes);
    let mut ios = Ios {
        io,
        nsid,
        w,
        rng: Xorshift(Xorshift::SEED),
        next: slots - 1,
        data: Bytes::from(vec![0xC3u8; w.bytes as usize]),
        submitted: vec![None; usize::from(u16::MAX) + 1],
    };
    let mut done = 0;
    keep_in_flight(&mut ios, w.depth, |_, _| {
        done += 1;
        done + w.depth as u64 <= slots
    });
}

const WRITES_4K: Workload = Workload {
    bytes: 4096,
    depth: 32,
    read_share: 0.0,
    random: true,
};
const READS_128K: Workload = Workload {
    bytes: 128 << 10,
    depth: 8,
    read_share: 1.0,
    random: true,
};
const MIXED_4K: Workload = Workload {
    bytes: 4096,
    depth: 32,
    read_share: 0.7,
    random: true,
};
const READS_4K_QD1: Workload = Workload {
    bytes: 4096,
    depth: 1,
    read_share: 1.0,
    random: true,
};

/// What a limited run is measured in.
#[derive(Clone, Copy)]
enum Unit {
    Iops,
    ReadMbps,
}

struct Case {
    name: &'static str,
    policy: &'static str,
    rates: fn() -> Value,
    limit: f64,
    unit: Unit,
    w: Workload,
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // Nothing to list or smoke-test: the runs are timed measurements.
    }
    let seconds = Duration::from_secs(env_u64("KEEL_BENCH_SECONDS", 5).max(1));
    let keeld = Keeld::start(&bench_dir().join("qos-bench"));
    let (_ca, mut qa) = keeld.io_queue(HOST_A);
    let load_before = load_average();

    let cases = [
        Case {
            name: "write IOPS 1000 (4 KiB randwrite QD32)",
            policy: "w1000",
            rates: || json!({"writeIOPS": 1000}),
            limit: 1000.0,
            unit: Unit::Iops,
            w: WRITES_4K,
        },
        Case {
            name: "write IOPS 5000 (4 KiB randwrite QD32)",
            policy: "w5000",
            rates: || json!({"writeIOPS": 5000}),
            limit: 5000.0,
            unit: Unit::Iops,
            w: WRITES_4K,
        },
        Case {
            name: "read MBps 10 (128 KiB randread QD8)",
            policy: "r10",
            rates: || json!({"readMBps": 10}),
            limit: 10.0,
            unit: Unit::ReadMbps,
            w: READS_128K,
        },
        Case {
            name: "read MBps 50 (128 KiB randread QD8)",
            policy: "r50",
            rates: || json!({"readMBps": 50}),
            limit: 50.0,
            unit: Unit::ReadMbps,
            w: READS_128K,
        },
        Case {
            name: "total IOPS 2000 (4 KiB 70/30 read/write QD32)",
            policy: "t2000",
            rates: || json!({"totalIOPS": 2000}),
            limit: 2000.0,
            unit: Unit::Iops,
            w: MIXED_4K,
        },
    ];

    // The head-room: the same writes with no policy.
    let (_, free_nsid) = keeld.create_volume("unlimited");
    eprintln!("prefilling and running unlimited writes ...");
    prefill(&mut qa, free_nsid);
    let unlimited = run(&mut qa, free_nsid, WRITES_4K, seconds);

    let mut rows = Vec::new();
    for case in &cases {
        eprintln!("{} ...", case.name);
        keeld.create_policy(case.policy, (case.rates)());
        let (uuid, nsid) = keeld.create_volume(case.policy);
        prefill(&mut qa, nsid);
        // Attached after the prefill: the run starts with a full bucket.
        keeld.set_policy(&uuid, case.policy);
        let before = keeld.delays(&uuid);
        let r = run(&mut qa, nsid, case.w, seconds);
        let after = keeld.delays(&uuid);
        rows.push((case, r, (after.0 - before.0, after.1 - before.1)));
    }

    // The neighbour: QD1 reads alone, then beside a saturated throttled volume.
    let (_, neighbour) = keeld.create_volume("neighbour");
    let (_cb, mut qb) = keeld.io_queue(HOST_B);
    prefill(&mut qb, neighbour);
    eprintln!("neighbour alone ...");
    let alone = run(&mut qb, neighbour, READS_4K_QD1, seconds);
    keeld.create_policy("noisy", json!({"writeIOPS": 1000}));
    let (noisy_uuid, noisy) = keeld.create_volume("noisy");
    prefill(&mut qa, noisy);
    keeld.set_policy(&noisy_uuid, "noisy");
    eprintln!("neighbour beside a saturated throttled volume ...");
    let noisy_for = seconds + Duration::from_millis(500);
    let (beside, noisy_run) = std::thread::scope(|s| {
        let qa = &mut qa;
        let noisy_thread = s.spawn(move || run(qa, noisy, WRITES_4K, noisy_for));
        // Measure once the throttled volume's commands are being held.
        keeld.wait_until_held(&noisy_uuid);
        let beside = run(&mut qb, neighbour, READS_4K_QD1, seconds);
        (
            beside,
            noisy_thread.join().expect("the throttled volume's thread"),
        )
    });
    eprintln!("neighbour alone again ...");
    let alone_again = run(&mut qb, neighbour, READS_4K_QD1, seconds);
    let load_after = load_average();

    println!(
        "\nQoS accuracy: one keeld on loopback, {} s per run, our NVMe/TCP host side; burst window {} ms (load average before {load_before}, after {load_after})\n",
        seconds.as_secs(),
        BURST_WINDOW.as_millis()
    );
    println!("| limit | achieved | ratio | bucket ceiling for the run | ratio to ceiling | delayed commands | mean delay ms | p50 / p99 µs |");
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| none (4 KiB randwrite QD32) | {:.0} IOPS | — | — | — | 0 | — | {:.0} / {:.0} |",
        unlimited.iops(),
        unlimited.percentile_us(0.5),
        unlimited.percentile_us(0.99)
    );
    for (case, r, (delayed, delay_ms)) in &rows {
        let achieved = match case.unit {
            Unit::Iops => r.iops(),
            Unit::ReadMbps => r.read_mb_s(case.w.bytes),
        };
        let unit = match case.unit {
            Unit::Iops => "IOPS",
            Unit::ReadMbps => "MB/s",
        };
        let run_s = r.elapsed.as_secs_f64();
        let command = match case.unit {
            Unit::Iops => 1.0,
            Unit::ReadMbps => f64::from(case.w.bytes) / MB,
        };
        let ceiling = (case.limit * (run_s + BURST_WINDOW.as_secs_f64()) + command) / run_s;
        let mix = if case.w.read_share > 0.0 && case.w.read_share < 1.0 {
            format!(
                " ({:.0} r + {:.0} w)",
                r.reads as f64 / run_s,
                r.writes as f64 / run_s
            )
        } else {
            String::new()
        };
        println!(
            "| {} | {achieved:.1} {unit}{mix} | {:.3} | {ceiling:.1} {unit} | {:.3} | {delayed} | {:.1} | {:.0} / {:.0} |",
            case.name,
            achieved / case.limit,
            achieved / ceiling,
            *delay_ms as f64 / (*delayed).max(1) as f64,
            r.percentile_us(0.5),
            r.percentile_us(0.99)
        );
    }
    println!("\nUnthrottled neighbour, 4 KiB randread QD1 on its own controller:\n");
    println!("| neighbour | reads/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|");
    let row = |what: &str, r: &Run| {
        println!(
            "| {what} | {:.0} | {:.1} | {:.1} |",
            r.iops(),
            r.percentile_us(0.5),
            r.percentile_us(0.99)
        );
    };
    row("alone", &alone);
    row(
        &format!(
            "beside a saturated 1000 write IOPS volume (QD32, {:.0} IOPS achieved)",
            noisy_run.iops()
        ),
        &beside,
    );
    row("alone again", &alone_again);
}
