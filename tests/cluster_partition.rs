//! Fencing under a network partition, checked with a history checker: etcd
//! and three keeld processes, each keeld in its own network namespace
//! (`common::netns`), one RF3 volume, and NVMe/TCP clients in the test
//! process recording every operation on a few block registers
//! (`common::history`).
//!
//! The primary is cut from etcd and from the other nodes (the clients still
//! reach it). Then:
//! - from the instant its lease must have ended it acknowledges no write;
//! - a survivor takes the volume over (ANA optimized) and acknowledges a
//!   second client's writes, recorded in the same history;
//! - after healing, the old primary is a replica again (ANA inaccessible),
//!   is resynced, and writes through the current primary still succeed;
//! - every register read from the current primary, and from the node that
//!   serves after the current primary is killed with SIGKILL, passes the
//!   history checker, as do all the reads the clients made on the way.
//!
//! Needs root (namespaces, routes) and etcd.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{all_active, create_replicated_volume, node_args, optimized_node};
use common::etcd::Etcd;
use common::history::{self, History, Observed, Outcome, Read, Write};
use common::netns::Fabric;
use common::{wait_until, Keeld, KeeldOptions, WAIT};
use nvmf_target::host::{HostController, HostError, HostOptions, IoQueue};
use nvmf_target::{AnaState, Lba};

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:cluster-partition-test";
const BLOCK: usize = 4096;
/// Block registers, each at its own LBA.
const REGISTERS: u64 = 8;
/// How long a takeover may take after the primary's lease must have ended
/// (etcd's expiry lag, one reconcile round, the new term's start).
const TAKEOVER_AFTER_LEASE_BOUND: Duration = Duration::from_secs(10);
/// Delivery slack for an acknowledgment decided before the lease's end:
/// the lease is checked when the write settles, and the completion then
/// still crosses the target's reactor, TCP and the client's thread. Both
/// instants come from one `CLOCK_MONOTONIC` (namespaces share it), so no
/// clock drift or offset is involved; 500 ms covers scheduling stalls on a
/// loaded two-core machine with a debug build. The stricter check, that no
/// write *invoked* after the lease's end is acknowledged, needs no margin.
const ACK_DELIVERY_MARGIN: Duration = Duration::from_millis(500);
/// Command timeout of the clients that run across the partition: short, so
/// a client stuck on the partitioned primary moves on to its next operation.
const CLIENT_TIMEOUT: Duration = Duration::from_millis(1500);
/// Command timeout once the cluster is healed (where every operation must
/// succeed, however loaded the machine).
const SETTLED_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause after a failed operation.
const RETRY_PAUSE: Duration = Duration::from_millis(50);
/// Errors a client keeps for the failure message.
const ERRORS_KEPT_MAX: usize = 16;

fn lba_of(register: u64) -> u64 {
    register * 16
}

fn start_node(fabric: &Fabric, etcd: &Etcd, i: usize) -> Keeld {
    let ip = fabric.node_ip(i);
    let mut k = Keeld::start(KeeldOptions {
        // The self-signed certificate names loopback only; TLS is not what
        // this test is about.
        insecure_http: true,
        listen_ip: ip.into(),
        netns: Some(fabric.netns(i).to_owned()),
        extra_args: node_args(etcd, i, &SocketAddr::new(ip.into(), 4520).to_string()),
        ..KeeldOptions::default()
    });
    k.login();
    k
}

/// The lease TTL node `k` registered with, from its log.
fn lease_ttl(k: &Keeld) -> Duration {
    let line = k
        .log_tail()
        .lines()
        .find(|l| l.contains("joined the cluster"))
        .map(str::to_owned)
        .expect("keeld logs its join");
    let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
    Duration::from_secs(v["fields"]["lease_ttl_s"].as_u64().expect("lease_ttl_s"))
}

/// The node's UUID, as replication logs name it.
fn node_uuid(k: &Keeld) -> String {
    std::fs::read_to_string(k.data_dir().join("node-id"))
        .expect("node-id")
        .trim()
        .to_owned()
}

/// Creates a 64 MiB volume with `replicas` replicas; returns its nsid.
fn create_volume(k: &Keeld, name: &str, replicas: u32) -> u32 {
    create_replicated_volume(k, name, replicas, 64 << 20, HOST).1
}

fn ana_state(k: &Keeld, nsid: u32) -> Option<AnaState> {
    common::cluster::ana_state(k, options(k), nsid)
}

fn primary_of(keelds: &[Keeld], among: &[usize], nsid: u32, within: Duration) -> Option<usize> {
    optimized_node(keelds, among, nsid, within, options)
}

fn options(k: &Keeld) -> HostOptions {
    let mut o = k.host_options(HOST);
    o.timeout = CLIENT_TIMEOUT;
    o
}

/// Where a client sends its operations.
#[derive(Clone)]
struct Target {
    label: String,
    addr: SocketAddr,
    options: HostOptions,
    nsid: u32,
}

impl Target {
    fn new(label: &str, k: &Keeld, nsid: u32) -> Target {
        Target {
            label: label.to_owned(),
            addr: k.nvme_addr,
            options: options(k),
            nsid,
        }
    }

    fn settled(mut self) -> Target {
        self.options.timeout = SETTLED_TIMEOUT;
        self
    }

    fn connect(&self) -> Result<(HostController, IoQueue), HostError> {
        let mut c = HostController::connect(self.addr, self.options.clone())?;
        c.set_queue_count(1)?;
        let io = c.connect_io_queue(1)?;
        Ok((c, io))
    }
}

/// Whether the queue is unusable after `err` (a status error leaves it fine;
/// after a timeout an answer may still arrive for the old command id).
fn breaks_queue(err: &HostError) -> bool {
    !matches!(
        err,
        HostError::Status { .. } | HostError::PathUnavailable { .. }
    )
}

/// Writes (unique values) and reads registers through `target`, alternately,
/// recording everything in `history`, until `stop` says so; returns the
/// first errors it saw (for failure messages). Any write error
/// is an unknown outcome: Keel's primary applies and forwards a write before
/// it checks its lease at acknowledgment, so even a path error does not
/// prove the write had no effect.
fn run_client(
    target: &Target,
    history: &History,
    values: &AtomicU64,
    mut stop: impl FnMut(u64) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let mut note = |what: &str, err: &HostError| {
        if errors.len() < ERRORS_KEPT_MAX {
            errors.push(format!("{:?} {what}: {err}", history.origin().elapsed()));
        }
    };
    let mut connection: Option<(HostController, IoQueue)> = None;
    let mut op = 0u64;
    while !stop(op) {
        if connection.is_none() {
            match target.connect() {
                Ok(c) => connection = Some(c),
                Err(err) => {
                    note("connect", &err);
                    std::thread::sleep(RETRY_PAUSE);
                    continue;
                }
            }
        }
        let (_, io) = connection.as_mut().expect("connected");
        let failed = if op.is_multiple_of(2) {
            let what = "write";
            let register = (op / 2) % REGISTERS;
            let value = values.fetch_add(1, Ordering::Relaxed);
            let data = history::encode(register, value, BLOCK);
            let invoked = Instant::now();
            let result = io.write(target.nsid, Lba(lba_of(register)), data, BLOCK as u32);
            let completed = Instant::now();
            history.write(Write {
                register,
                value,
                invoked_ns: history.ns(invoked),
                completed_ns: history.ns(completed),
                outcome: if result.is_ok() {
                    Outcome::Acked
                } else {
                    Outcome::Unknown
                },
                client: target.label.clone(),
            });
            result.err().map(|e| (what, e))
        } else {
            let what = "read";
            let register = (op / 2 + REGISTERS / 2) % REGISTERS;
            let invoked = Instant::now();
            let result = io.read(target.nsid, Lba(lba_of(register)), 1, BLOCK as u32);
            let completed = Instant::now();
            match result {
                Ok(data) => {
                    history.read(Read {
                        register,
                        observed: history::decode(register, &data),
                        invoked_ns: history.ns(invoked),
                        completed_ns: history.ns(completed),
                        client: target.label.clone(),
                    });
                    None
                }
                Err(err) => Some((what, err)),
            }
        };
        op += 1;
        if let Some((what, err)) = failed {
            note(what, &err);
            if breaks_queue(&err) {
                connection = None;
            }
            std::thread::sleep(RETRY_PAUSE);
        }
    }
    errors
}

/// Starts a client thread on `target` until `stop` is set.
fn spawn_client(
    target: Target,
    history: &Arc<History>,
    values: &Arc<AtomicU64>,
    stop: &Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<String>> {
    let (history, values, stop) = (history.clone(), values.clone(), stop.clone());
    std::thread::spawn(move || {
        run_client(&target, &history, &values, |_| stop.load(Ordering::Acquire))
    })
}

/// Reads every register once through `target`; every read must succeed.
fn read_all(target: &Target, history: &History) {
    let (_c, mut io) = target
        .connect()
        .unwrap_or_else(|e| panic!("{}: connect: {e}", target.label));
    for register in 0..REGISTERS {
        let invoked = Instant::now();
        let data = io
            .read(target.nsid, Lba(lba_of(register)), 1, BLOCK as u32)
            .unwrap_or_else(|e| panic!("{}: read of register {register}: {e}", target.label));
        let completed = Instant::now();
        history.read(Read {
            register,
            observed: history::decode(register, &data),
            invoked_ns: history.ns(invoked),
            completed_ns: history.ns(completed),
            client: target.label.clone(),
        });
    }
}

fn acked(history: &History, client: &str) -> Vec<Write> {
    history
        .writes()
        .into_iter()
        .filter(|w| w.client == client && w.outcome == Outcome::Acked)
        .collect()
}

/// Signed seconds from `from` to `to` (both ns after the history's origin).
fn rel(from_ns: u64, to_ns: u64) -> f64 {
    (to_ns as f64 - from_ns as f64) / 1e9
}

#[test]
fn a_partitioned_primary_acknowledges_nothing_after_its_lease_and_every_read_is_linearizable() {
    let test_started = Instant::now();
    // Declared first so it is dropped last, after the processes in it.
    let fabric = Fabric::new(3);
    let Some(etcd) = Etcd::start_on("cluster_partition", fabric.service_ip().into()) else {
        return;
    };
    let mut keelds: Vec<Keeld> = (0..3).map(|i| start_node(&fabric, &etcd, i)).collect();
    assert!(
        wait_until(WAIT, || all_active(&keelds[0], 3)),
        "the three nodes never all showed Active"
    );
    let ttl = lease_ttl(&keelds[0]);
    let nsid = create_volume(&keelds[0], "partitioned", 3);
    let old = primary_of(&keelds, &[0, 1, 2], nsid, WAIT).expect("a primary serves the volume");
    let others: Vec<usize> = (0..3).filter(|i| *i != old).collect();
    for i in &others {
        assert!(
            wait_until(WAIT, || ana_state(&keelds[*i], nsid)
                == Some(AnaState::Inaccessible)),
            "node-{i} does not show its replica inaccessible"
        );
    }

    let history = Arc::new(History::new(Instant::now()));
    let values = Arc::new(AtomicU64::new(1));
    let stop_old = Arc::new(AtomicBool::new(false));
    let old_client = spawn_client(
        Target::new("old-primary", &keelds[old], nsid),
        &history,
        &values,
        &stop_old,
    );
    assert!(
        wait_until(WAIT, || acked(&history, "old-primary").len() >= 40),
        "the primary acknowledged too few writes before the partition"
    );

    // Cut the primary from etcd first, then from the other nodes.
    let mut cut = vec![fabric.service_ip()];
    cut.extend(others.iter().map(|i| fabric.node_ip(*i)));
    let partition = fabric.partition(old, &cut);
    let cut_at = partition.cut_at(fabric.service_ip());
    // Every keep-alive that can still succeed was sent before `cut_at`, so the
    // primary's lease clock runs out by `cut_at + ttl` at the latest.
    let lease_end = cut_at + ttl;
    eprintln!(
        "cluster_partition: node-{old} (primary) cut from etcd and node-{} and node-{}; lease TTL {ttl:?}",
        others[0], others[1]
    );

    let new = primary_of(
        &keelds,
        &others,
        nsid,
        ttl + TAKEOVER_AFTER_LEASE_BOUND + WAIT,
    )
    .expect("no survivor took the volume over");
    let takeover = cut_at.elapsed();
    assert!(
        takeover < ttl + TAKEOVER_AFTER_LEASE_BOUND,
        "takeover took {takeover:?}\n{}",
        keelds[new].log_tail()
    );
    let survivor = others
        .iter()
        .copied()
        .find(|i| *i != new)
        .expect("two survivors");

    // A second client writes through the new primary while the old one's
    // client keeps trying (its reads must not return what the new primary
    // overwrote).
    let stop_new = Arc::new(AtomicBool::new(false));
    let new_client = spawn_client(
        Target::new("new-primary", &keelds[new], nsid),
        &history,
        &values,
        &stop_new,
    );
    let new_started = Instant::now();
    assert!(
        wait_until(WAIT, || acked(&history, "new-primary").len() >= 40
            && new_started.elapsed() >= Duration::from_secs(2)),
        "the new primary acknowledged too few writes\n{}",
        keelds[new].log_tail()
    );
    stop_new.store(true, Ordering::Release);
    let new_errors = new_client.join().expect("new-primary client");
    if !new_errors.is_empty() {
        eprintln!("cluster_partition: the new primary's client saw errors: {new_errors:#?}");
    }
    assert!(
        Instant::now() > lease_end + ACK_DELIVERY_MARGIN,
        "the old lease must be over before healing"
    );

    // Heal: the old primary comes back as a replica and is resynced.
    partition.heal();
    let healed_at = Instant::now();
    assert!(
        wait_until(WAIT, || ana_state(&keelds[old], nsid)
            == Some(AnaState::Inaccessible)),
        "the old primary does not show the volume inaccessible after healing\n{}",
        keelds[old].log_tail()
    );
    let old_uuid = node_uuid(&keelds[old]);
    let rejoined = |k: &Keeld| {
        k.log_tail()
            .lines()
            .any(|l| l.contains("member rejoined the in-sync set") && l.contains(old_uuid.as_str()))
    };
    assert!(
        wait_until(WAIT * 2, || rejoined(&keelds[new])),
        "the old primary never rejoined the in-sync set\n{}",
        keelds[new].log_tail()
    );
    let resynced = healed_at.elapsed();
    stop_old.store(true, Ordering::Release);
    let old_errors = old_client.join().expect("old-primary client");
    eprintln!("cluster_partition: the old primary's client saw errors like {old_errors:#?}");
    assert_eq!(
        ana_state(&keelds[old], nsid),
        Some(AnaState::Inaccessible),
        "the old primary serves again"
    );
    assert_eq!(ana_state(&keelds[new], nsid), Some(AnaState::Optimized));

    // Writes through the current primary still succeed after healing.
    let after_heal = Target::new("after-heal", &keelds[new], nsid).settled();
    let errors = run_client(&after_heal, &history, &values, |op| op >= 4 * REGISTERS);
    assert!(
        errors.is_empty(),
        "operations failed through the current primary after healing: {errors:#?}\n{}",
        keelds[new].log_tail()
    );

    // Every register from the current primary, then from whichever node
    // serves once it is killed.
    read_all(
        &Target::new("final-current", &keelds[new], nsid).settled(),
        &history,
    );
    keelds[new].kill9();
    let killed_at = Instant::now();
    let third = primary_of(
        &keelds,
        &[old, survivor],
        nsid,
        ttl + TAKEOVER_AFTER_LEASE_BOUND + WAIT,
    )
    .expect("nobody took over from the killed primary");
    let second_takeover = killed_at.elapsed();
    read_all(
        &Target::new("final-after-kill", &keelds[third], nsid),
        &history,
    );

    // The figures.
    let cut_ns = history.ns(cut_at);
    let lease_end_ns = history.ns(lease_end);
    let old_acks = acked(&history, "old-primary");
    let last_old_ack = old_acks.iter().map(|w| w.completed_ns).max().expect("acks");
    let first_new_ack = acked(&history, "new-primary")
        .iter()
        .map(|w| w.completed_ns)
        .min()
        .expect("acks");
    let writes = history.writes();
    let unknown = writes
        .iter()
        .filter(|w| w.outcome == Outcome::Unknown)
        .count();
    let reads = history.reads();
    eprintln!(
        "cluster_partition: old primary node-{old}: {} writes acknowledged, the last {:+.3} s after the cut from etcd (its lease ended by {:+.3} s)",
        old_acks.len(),
        rel(cut_ns, last_old_ack),
        ttl.as_secs_f64()
    );
    eprintln!(
        "cluster_partition: node-{new} serves {:.3} s after the cut, its first acknowledgment {:+.3} s after it; old primary resynced {:.3} s after healing",
        takeover.as_secs_f64(),
        rel(cut_ns, first_new_ack),
        resynced.as_secs_f64()
    );
    eprintln!(
        "cluster_partition: node-{third} serves {:.3} s after node-{new}'s kill -9; history: {} writes ({unknown} of unknown outcome), {} reads ({} of zeros); test ran {:.1} s",
        second_takeover.as_secs_f64(),
        writes.len(),
        reads.len(),
        reads.iter().filter(|r| r.observed == Observed::Initial).count(),
        test_started.elapsed().as_secs_f64()
    );

    // (a) Fencing: nothing acknowledged by the old primary after its lease.
    let late: Vec<&Write> = old_acks
        .iter()
        .filter(|w| {
            w.invoked_ns >= lease_end_ns
                || w.completed_ns > history.ns(lease_end + ACK_DELIVERY_MARGIN)
        })
        .collect();
    assert!(
        late.is_empty(),
        "the partitioned primary acknowledged writes after its lease ended ({:.3} s): {late:?}",
        history.ns(lease_end) as f64 / 1e9
    );
    // (d) Every read the clients and the final sweeps made.
    if let Err(violations) = history.check() {
        let shown: Vec<String> = violations.iter().take(20).map(|v| v.to_string()).collect();
        panic!(
            "{} reads break linearizability (cut at {:.3} s, lease end {:.3} s):\n{}",
            violations.len(),
            cut_ns as f64 / 1e9,
            lease_end_ns as f64 / 1e9,
            shown.join("\n")
        );
    }
}
