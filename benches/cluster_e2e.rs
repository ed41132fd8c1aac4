//! Replicated volumes end to end: etcd and three real keeld processes on
//! loopback, volumes with 1, 2 and 3 replicas made over REST, driven over
//! NVMe/TCP by our host side on the volume's primary. Prints, for each
//! replica count, 4 KiB random write latency at queue depth 1, 4 KiB random
//! write IOPS at queue depth 32 and 128 KiB sequential write throughput; the
//! loopback TCP round trip measured in the same run (the aim: RF2 QD1 within
//! RF1 + one round trip + 20%); then a full rebuild of an RF2 replica onto
//! the third node (its throughput) with QD32 writes running beside it (their
//! IOPS against the same workload before the rebuild; the aim: ≥ 0.7).
//!
//! `cargo bench --bench cluster_e2e` (KEEL_BENCH_SECONDS per run, default 5;
//! KEEL_BENCH_DIR for the pools, default `target/`; needs `etcd` on PATH).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::figures::{Figures, Latencies, Precision};
use common::load::{keep_in_flight, InFlight};
use common::loopback::tcp_ping_pong;
use common::process::{free_addr, Process};
use common::{bench_dir, env_u64, Xorshift};
use nvmf_target::host::{HostController, HostOptions, IoQueue};
use nvmf_target::Lba;
use serde_json::{json, Value};

const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:bench000-0000-4000-8000-0000000000c1";
const BLOCK: u32 = 4096;
const VOLUME_BYTES: u64 = 1 << 30;
/// What the rebuild copies: written before the replica is lost.
const FILLED_BYTES: u64 = 512 << 20;
const NODES: usize = 3;

struct Node {
    process: Option<Process>,
    api: String,
    nvme: SocketAddr,
}

impl Node {
    fn start(args: &[String]) -> Process {
        Process(
            Command::new(env!("CARGO_BIN_EXE_keeld"))
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start keeld"),
        )
    }
}

struct Cluster {
    _etcd: Process,
    nodes: Vec<Node>,
    http: reqwest::blocking::Client,
    dir: PathBuf,
}

impl Drop for Cluster {
    /// Three 8 GiB pools filled by the runs: gone with the cluster (the
    /// processes, dropped after this, still hold the files open).
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Cluster {
    fn start(dir: &Path) -> Cluster {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).expect("bench dir");
        let client = free_addr();
        let peer = free_addr();
        let etcd = Process(
            Command::new("etcd")
                .args(["--data-dir", &dir.join("etcd").display().to_string()])
                .args(["--listen-client-urls", &format!("http://{client}")])
                .args(["--advertise-client-urls", &format!("http://{client}")])
                .args(["--listen-peer-urls", &format!("http://{peer}")])
                .args(["--initial-advertise-peer-urls", &format!("http://{peer}")])
                .args(["--initial-cluster", &format!("default=http://{peer}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start etcd (apt-get install etcd-server)"),
        );
        let nodes = (0..NODES)
            .map(|i| {
                let api = free_addr();
                let nvme = free_addr();
                let args: Vec<String> = [
                    "--data-dir",
                    &dir.join(format!("node-{i}")).display().to_string(),
                    "--pool-size",
                    "8GiB",
                    "--api-listen",
                    &api.to_string(),
                    "--nvme-listen",
                    &nvme.to_string(),
                    "--discovery-listen",
                    &free_addr().to_string(),
                    "--replication-listen",
                    &free_addr().to_string(),
                    "--insecure-http",
                    "--no-auth",
                    "--etcd-endpoints",
                    &format!("http://{client}"),
                    "--node-name",
                    &format!("node-{i}"),
                    "--failure-domain",
                    &format!("rack-{i}"),
                    "--replica-replace-after-s",
                    "1",
                    "--log-format",
                    "json",
                ]
                .iter()
                .map(|a| (*a).to_owned())
                .collect();
                Node {
                    process: Some(Node::start(&args)),
                    api: format!("http://{api}"),
                    nvme,
                }
            })
            .collect();
        let cluster = Cluster {
            _etcd: etcd,
            nodes,
            http: reqwest::blocking::Client::new(),
            dir: dir.to_owned(),
        };
        cluster.wait(Duration::from_secs(60), "three Active nodes", || {
            cluster.get(0, "/api/v2/nodes").ok()?["nodes"]
                .as_array()
                .filter(|n| n.len() == NODES && n.iter().all(|n| n["state"] == "Active"))
                .map(|_| ())
        });
        cluster
    }

    fn get(&self, node: usize, path: &str) -> Result<Value, reqwest::Error> {
        self.http
            .get(format!("{}{path}", self.nodes[node].api))
            .send()?
            .json()
    }

    fn wait<T>(&self, within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = f() {
                return v;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Creates a volume; returns (UUID, nsid).
    fn create(&self, name: &str, replicas: u32) -> (String, u32) {
        let answer: Value = self
            .http
            .post(format!("{}/api/v2/volumes", self.nodes[0].api))
            .json(&json!({
                "name": name, "size": VOLUME_BYTES.to_string(), "replicaCount": replicas,
                "projectName": "default", "acl": {"values": ["ALLOW_ANY"]},
            }))
            .send()
            .and_then(|r| r.json())
            .expect("create volume");
        let uuid = answer["UUID"].as_str().expect("UUID").to_owned();
        let nsid = self.wait(Duration::from_secs(60), "an Available volume", || {
            let v = self.get(0, &format!("/api/v2/volumes/{uuid}")).ok()?;
            (v["state"] == "Available").then(|| v["nsid"].as_u64())?
        });
        (uuid, nsid as u32)
    }

    fn volume(&self, node: usize, uuid: &str) -> Value {
        self.get(node, &format!("/api/v2/volumes/{uuid}"))
            .expect("volume")
    }

    /// The test index of node `uuid` (nodes are named node-<i>).
    fn index_of(&self, uuid: &str) -> usize {
        let nodes = self.get(0, "/api/v2/nodes").expect("nodes");
        nodes["nodes"]
            .as_array()
            .and_then(|n| n.iter().find(|n| n["UUID"] == uuid))
            .and_then(|n| n["name"].as_str()?.strip_prefix("node-")?.parse().ok())
            .expect("a bench node")
    }

    fn node_list(&self, uuid: &str) -> Vec<usize> {
        self.volume(0, uuid)["nodeList"]
            .as_array()
            .map(|n| {
                n.iter()
                    .filter_map(|u| u.as_str())
                    .map(|u| self.index_of(u))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An I/O queue on `node` (with its controller, which must outlive it),
    /// once `nsid` is optimized there.
    fn io_queue(&self, node: usize, nsid: u32) -> (HostController, IoQueue) {
        let mut options = HostOptions::new(
            HOST_NQN,
            self.get(0, "/api/v2/cluster").expect("cluster")["subsystemNQN"]
                .as_str()
                .expect("subsystem NQN")
                .to_owned(),
        );
        options.kato_ms = 0;
        options.timeout = Duration::from_secs(30);
        let ctrl_addr = self.nodes[node].nvme;
        // The namespace turns optimized once the primary serves it.
        self.wait(Duration::from_secs(60), "the primary's path", || {
            let mut c = HostController::connect(ctrl_addr, options.clone()).ok()?;
            let log = c.ana_log(false).ok()?;
            log.groups
                .iter()
                .any(|g| g.nsids.contains(&nsid) && g.state == nvmf_target::AnaState::Optimized)
                .then_some(())
        });
        let mut c = HostController::connect(ctrl_addr, options).expect("connect");
        c.set_queue_count(1).expect("queues");
        let io = c.connect_io_queue(1).expect("I/O queue");
        (c, io)
    }
}

/// Writes of `bytes` each, random or sequential, over the first `region` bytes.
struct Writes<'a> {
    io: &'a mut IoQueue,
    nsid: u32,
    bytes: u32,
    region: u64,
    random: Option<Xorshift>,
    next: u64,
    data: Bytes,
    submitted_at: Vec<Option<Instant>>,
}

impl InFlight for Writes<'_> {
    type Completion = Instant;

    fn submit(&mut self) -> bool {
        let slots = self.region / u64::from(self.bytes);
        let slot = match &mut self.random {
            Some(r) => r.next() % slots,
            None => {
                self.next = (self.next + 1) % slots;
                self.next
            }
        };
        let lba = Lba(slot * u64::from(self.bytes / BLOCK));
        let cid = self
            .io
            .submit_write(self.nsid, lba, self.data.clone(), BLOCK)
            .expect("submit");
        self.submitted_at[usize::from(cid)] = Some(Instant::now());
        true
    }

    fn wait(&mut self) -> Option<Instant> {
        let (cid, response) = self.io.queue.wait_any().ok()?;
        response.success().expect("write failed");
        self.submitted_at[usize::from(cid)].take()
    }
}

fn run(
    io: &mut IoQueue,
    nsid: u32,
    bytes: u32,
    depth: usize,
    random: bool,
    run: Duration,
) -> Figures {
    let region = if random { FILLED_BYTES } else { VOLUME_BYTES };
    let mut load = Writes {
        io,
        nsid,
        bytes,
        region,
        random: random.then_some(Xorshift(Xorshift::SEED)),
        next: 0,
        data: Bytes::from(vec![0x5Au8; bytes as usize]),
        submitted_at: vec![None; usize::from(u16::MAX) + 1],
    };
    let mut latencies = Latencies::with_capacity(1 << 20);
    let started = Instant::now();
    let deadline = started + run;
    keep_in_flight(&mut load, depth, |_, at| {
        latencies.record(at.elapsed());
        Instant::now() < deadline
    });
    Figures::of(
        latencies,
        Precision::Nanos,
        u64::from(bytes),
        started.elapsed(),
    )
}

fn main() {
    let seconds = Duration::from_secs(env_u64("KEEL_BENCH_SECONDS", 5));
    let cluster = Cluster::start(&bench_dir().join("cluster-bench"));
    let rtt = tcp_ping_pong(seconds);
    println!(
        "Loopback TCP round trip (4 KiB read sizes, QD1): mean {:.1} µs\n",
        rtt.mean_us
    );
    println!("| replicas | 4 KiB randwrite QD1 mean / p99 µs | 4 KiB randwrite QD32 IOPS | 128 KiB seqwrite QD8 MiB/s |");
    println!("|---|---|---|---|");
    let mut qd1 = Vec::new();
    let mut volumes = Vec::new();
    for replicas in 1..=3u32 {
        let (uuid, nsid) = cluster.create(&format!("bench-rf{replicas}"), replicas);
        let primary = cluster.node_list(&uuid)[0];
        let (_controller, mut io) = cluster.io_queue(primary, nsid);
        // Fill the random region so every measured write overwrites.
        run(&mut io, nsid, 128 * 1024, 8, false, Duration::from_secs(2));
        let lat = run(&mut io, nsid, BLOCK, 1, true, seconds);
        let iops = run(&mut io, nsid, BLOCK, 32, true, seconds);
        let seq = run(&mut io, nsid, 128 * 1024, 8, false, seconds);
        println!(
            "| {replicas} | {:.1} / {:.1} | {:.0} | {:.0} |",
            lat.mean_us, lat.p99_us, iops.iops, seq.mib_s
        );
        qd1.push(lat.mean_us);
        volumes.push((uuid, nsid, primary));
    }
    let allowed = (qd1[0] + rtt.mean_us) * 1.2;
    println!(
        "\nRF2 QD1 {:.1} µs against the aim RF1 + one round trip + 20% = {allowed:.1} µs: {}",
        qd1[1],
        if qd1[1] <= allowed { "met" } else { "not met" }
    );
    rebuild(cluster, &volumes[1], seconds);
}

/// Loses the RF2 volume's replica for good; the primary rebuilds it on the
/// third node while QD32 writes run.
fn rebuild(mut cluster: Cluster, (uuid, nsid, primary): &(String, u32, usize), seconds: Duration) {
    let (_controller, mut io) = cluster.io_queue(*primary, *nsid);
    run(&mut io, *nsid, 128 * 1024, 8, false, Duration::from_secs(4));
    let before = run(&mut io, *nsid, BLOCK, 32, true, seconds);
    let replica = cluster.node_list(uuid)[1];
    cluster.nodes[replica].process.take();
    let lost_at = Instant::now();
    // The rebuild begins once the node is seen down past the replacement delay.
    cluster.wait(Duration::from_secs(60), "the rebuild to begin", || {
        let v = cluster.volume(*primary, uuid);
        (v["rebuildProgress"] != "None").then_some(())
    });
    let started = Instant::now();
    let (mut ops, mut busy) = (0.0, 0.0);
    loop {
        let slice = run(&mut io, *nsid, BLOCK, 32, true, Duration::from_secs(1));
        ops += slice.iops;
        busy += 1.0;
        if cluster.volume(*primary, uuid)["protectionState"] == "FullyProtected" {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the rebuild did not finish"
        );
    }
    let took = started.elapsed();
    let during = ops / busy;
    println!(
        "\nRebuild of the RF2 replica onto the third node ({} MiB volume, {} MiB written): began {:.1} s after the loss, took {:.1} s = {:.0} MiB/s of volume",
        VOLUME_BYTES >> 20,
        FILLED_BYTES >> 20,
        started.duration_since(lost_at).as_secs_f64(),
        took.as_secs_f64(),
        (VOLUME_BYTES >> 20) as f64 / took.as_secs_f64()
    );
    println!(
        "QD32 4 KiB randwrite: {:.0} IOPS before, {during:.0} IOPS during the rebuild = {:.2}x (aim ≥ 0.7)",
        before.iops,
        during / before.iops
    );
}
