//! System tests of QoS enforcement in the real keeld: policies made over the
//! REST API, volumes under them driven over NVMe/TCP on loopback by our own
//! host side (`nvmf_target::host`), and the rates the host measures held
//! against what the target's token buckets guarantee (see
//! `nvmf_target::throttle`).
//!
//! How the bounds are derived. A namespace's bucket holds at most
//! [`BURST_WINDOW`] worth of tokens and admits a command whenever it is not in
//! debt, so from any instant on it admits at most `rate × t + burst + one
//! command` in `t`: a hard upper bound, which these tests check with only a
//! small slack ([`CLOCK_SLACK`] of the rate, plus two commands) for the
//! reactor's cached clock. Likewise a backlog cannot drain faster than the
//! bucket refills, which the isolation tests use to tell "not held behind the
//! backlog" from "held" without any absolute latency threshold.
//!
//! Commands are held, never failed, so a closed loop that always has commands
//! waiting reaches the rate unless the machine is too slow; the lower bounds
//! are lenient (80% of the limit over a few seconds, 60% over the one second
//! right after a change) because a loaded two-core CI machine runs several of
//! these keelds at once. Every wait is bounded: the host's command timeout
//! (10 s), the REST client's timeout and the run lengths here.
//!
//! Two tests found the reactor holding a Flush, and the reads of a volume
//! limited only in writes, behind the volume's held writes; they now prove
//! that only commands competing for a limited bucket wait behind each other.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{pattern, Keeld};
use nvmf_target::host::{HostController, HostError, IoQueue};
use nvmf_target::nvme::{io_opcode, Command};
use nvmf_target::throttle::BURST_WINDOW;
use nvmf_target::{Lba, LbaRange};
use reqwest::StatusCode;
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:0a05a05a-0000-4000-8000-0000000000a5";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:0b05b05b-0000-4000-8000-0000000000b5";
const BLOCK: u32 = 4096;
const GIB: u64 = 1 << 30;
/// How far the clock a reactor admits a command by may lag the host's: it
/// reads the clock once when it wakes, and on a loaded machine may be
/// preempted before it admits what it then reads from the socket. A bucket
/// that thinks it is that much earlier than it is hands out that much more of
/// its rate; the upper bounds allow it (and two commands), nothing else.
const CLOCK_SLACK: Duration = Duration::from_millis(50);
/// Lowest share of the limit a run of a few seconds must reach.
const LOWER_SHARE: f64 = 0.8;
/// Lowest share of a new limit the one second right after the change must reach.
const LOWER_SHARE_AFTER_CHANGE: f64 = 0.6;

fn started() -> Keeld {
    let mut k = Keeld::start_default();
    k.login();
    k
}

fn uuid_of(v: &Value) -> String {
    v["UUID"].as_str().expect("UUID").to_owned()
}

fn nsid_of(v: &Value) -> u32 {
    u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid fits u32")
}

/// Creates a QoS policy with `limit` (a `QosLimitDto`); returns its JSON.
fn create_policy(k: &Keeld, name: &str, limit: Value) -> Value {
    let a = k.post(
        "/api/v2/qosPolicies",
        &json!({"name": name, "limit": limit}),
    );
    assert_eq!(a.status, StatusCode::OK, "create policy {name}: {}", a.body);
    a.body
}

fn absolute(rates: Value) -> Value {
    json!({ "limitAbsolute": rates })
}

fn per_gib(rates: Value) -> Value {
    json!({ "limitPerGb": rates })
}

/// Creates a volume under `policy` (None: no policy) visible to `acl`; waits
/// until it is Available and returns its JSON.
fn create_volume(k: &Keeld, name: &str, size: u64, acl: &[&str], policy: Option<&str>) -> Value {
    let mut body = json!({
        "name": name,
        "size": size.to_string(),
        "replicaCount": 1,
        "projectName": "default",
        "acl": {"values": acl},
    });
    if let Some(p) = policy {
        body["qosPolicyName"] = json!(p);
    }
    let a = k.post("/api/v2/volumes", &body);
    assert_eq!(a.status, StatusCode::OK, "create {name}: {}", a.body);
    let v = k.wait_volume_state(&uuid_of(&a.body), "Available");
    assert_eq!(v["qosPolicyName"].as_str(), policy, "{v}");
    v
}

/// A controller for `host` with one I/O queue; the controller must outlive
/// the queue.
fn io_for(k: &Keeld, host: &str) -> (HostController, IoQueue) {
    let mut c = k.connect(host);
    assert!(c.set_queue_count(1).expect("number of queues") >= 1);
    let io = c
        .connect_io_queue(1)
        .unwrap_or_else(|e| panic!("I/O queue for {host}: {e}\n{}", k.log_tail()));
    (c, io)
}

/// The `statistics` of a volume.
fn statistics(k: &Keeld, uuid: &str) -> Value {
    let a = k.get(&format!("/api/v2/volumes/{uuid}"));
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["statistics"].clone()
}

/// The most a token bucket of `rate` per second lets complete in `elapsed`
/// when each command costs at most `cost`: a full bucket (`BURST_WINDOW` of
/// the rate), the rate over `elapsed`, and one command of debt; plus
/// `in_flight` commands admitted before the interval began and completed in
/// it, and the slack (`CLOCK_SLACK` of the rate and two commands).
fn ceiling(rate: f64, elapsed: Duration, cost: f64, in_flight: usize) -> f64 {
    let commands = 1 + 2 + in_flight;
    rate * (elapsed + BURST_WINDOW + CLOCK_SLACK).as_secs_f64() + commands as f64 * cost
}

/// What a queue's commands do.
#[derive(Clone, Copy, Debug)]
enum Op {
    /// Writes of this many bytes.
    Write(u32),
    /// Reads of this many bytes.
    Read(u32),
}

impl Op {
    fn bytes(self) -> u32 {
        match self {
            Op::Write(b) | Op::Read(b) => b,
        }
    }
}

/// A closed loop on one I/O queue: keeps `depth` commands of `op` in flight
/// on `nsid`, every completion checked.
struct Load<'a> {
    io: &'a mut IoQueue,
    nsid: u32,
    op: Op,
    depth: usize,
    in_flight: usize,
    /// Next slot (in commands) of the region the loop cycles over.
    next: u64,
    slots: u64,
    data: Bytes,
    /// Commands completed successfully.
    done: u64,
    /// Commands that completed with an error status.
    failed: Vec<HostError>,
    /// When the last completion was reaped.
    last: Instant,
}

impl<'a> Load<'a> {
    /// A loop over the first `region` bytes of `nsid`.
    fn new(io: &'a mut IoQueue, nsid: u32, op: Op, depth: usize, region: u64) -> Load<'a> {
        Load {
            io,
            nsid,
            op,
            depth,
            in_flight: 0,
            next: 0,
            slots: region / u64::from(op.bytes()),
            data: pattern(op.bytes() as usize, 7),
            done: 0,
            failed: Vec::new(),
            last: Instant::now(),
        }
    }

    fn submit(&mut self) -> Result<(), HostError> {
        let lba = Lba(self.next * u64::from(self.op.bytes() / BLOCK));
        self.next = (self.next + 1) % self.slots;
        match self.op {
            Op::Write(_) => self
                .io
                .submit_write(self.nsid, lba, self.data.clone(), BLOCK)?,
            Op::Read(bytes) => self.io.submit_read(self.nsid, lba, bytes / BLOCK, BLOCK)?,
        };
        self.in_flight += 1;
        Ok(())
    }

    /// Reaps one completion (bounded by the host's command timeout).
    fn reap(&mut self) -> Result<(), HostError> {
        let (_, response) = self.io.queue.wait_any()?;
        self.last = Instant::now();
        self.in_flight -= 1;
        match response.success() {
            Ok(_) => self.done += 1,
            Err(e) => self.failed.push(e),
        }
        Ok(())
    }

    /// Keeps `depth` in flight until `until`; returns after the first
    /// completion reaped at or after it, with `depth` still in flight.
    fn run_until(&mut self, until: Instant) -> Result<(), HostError> {
        while self.in_flight < self.depth {
            self.submit()?;
        }
        loop {
            self.reap()?;
            self.submit()?;
            if self.last >= until {
                return Ok(());
            }
        }
    }

    /// Reaps everything in flight.
    fn drain(&mut self) -> Result<(), HostError> {
        while self.in_flight > 0 {
            self.reap()?;
        }
        Ok(())
    }

    /// Runs from nothing in flight for `run`, drains, and returns how many
    /// commands completed and the time from the first submission to the last
    /// completion.
    fn measure(&mut self, run: Duration) -> Result<(u64, Duration), HostError> {
        assert_eq!(self.in_flight, 0, "measure starts with nothing in flight");
        let before = self.done;
        let start = Instant::now();
        self.run_until(start + run)?;
        self.drain()?;
        Ok((self.done - before, self.last.duration_since(start)))
    }

    /// Keeps the loop going for `run` from `start` (commands may be in
    /// flight already); returns the commands completed after `start` and the
    /// time from `start` to the last of them.
    fn slice(&mut self, start: Instant, run: Duration) -> Result<(u64, Duration), HostError> {
        let before = self.done;
        self.run_until(start + run)?;
        Ok((self.done - before, self.last.duration_since(start)))
    }
}

/// A volume under a 400 write IOPS policy, driven with 4 KiB writes at queue
/// depth 16 for 3 s, moves at its limit: never above what the token bucket
/// allows (limit × (3 s + burst) + one command), not below 80% of it, with no
/// command failed; and its statistics show the commands the policy held back.
#[test]
fn an_iops_limit_holds_writes_to_their_rate_without_failing_any() {
    const LIMIT: f64 = 400.0;
    let k = started();
    create_policy(&k, "w400", absolute(json!({"writeIOPS": 400})));
    let v = create_volume(&k, "iops", GIB, &[HOST_A], Some("w400"));
    let (_c, mut io) = io_for(&k, HOST_A);
    let mut load = Load::new(&mut io, nsid_of(&v), Op::Write(BLOCK), 16, 64 << 20);
    let (ops, elapsed) = load
        .measure(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("writes: {e}\n{}", k.log_tail()));
    assert!(load.failed.is_empty(), "failed: {:?}", load.failed);
    let rate = ops as f64 / elapsed.as_secs_f64();
    let most = ceiling(LIMIT, elapsed, 1.0, 0);
    eprintln!(
        "write IOPS limit {LIMIT}: {ops} writes in {elapsed:?} = {rate:.1}/s (ceiling {most:.0})"
    );
    assert!(
        ops as f64 <= most,
        "{ops} writes in {elapsed:?} exceed the bucket's ceiling {most:.1}"
    );
    assert!(
        rate >= LOWER_SHARE * LIMIT,
        "{rate:.1} IOPS is below {LOWER_SHARE} of the {LIMIT} limit"
    );
    let stats = statistics(&k, &uuid_of(&v));
    assert!(
        stats["qosDelayedCommands"].as_u64().is_some_and(|n| n > 0),
        "no delayed commands in {stats}"
    );
    assert!(
        stats["qosDelayMs"].as_u64().is_some_and(|n| n > 0),
        "no delay in {stats}"
    );
}

/// A volume under a 20 MBps (20 × 10^6 bytes/s) read policy, driven with
/// 128 KiB reads at queue depth 8 for 3 s, moves at most limit × (3 s +
/// burst) + one read's bytes and at least 80% of its limit.
#[test]
fn a_bandwidth_limit_holds_reads_to_their_bytes_per_second() {
    const LIMIT: f64 = 20e6;
    const READ: u32 = 128 << 10;
    let k = started();
    create_policy(&k, "r20", absolute(json!({"readMBps": 20})));
    let v = create_volume(&k, "bandwidth", GIB, &[HOST_A], Some("r20"));
    let (_c, mut io) = io_for(&k, HOST_A);
    let mut load = Load::new(&mut io, nsid_of(&v), Op::Read(READ), 8, 256 << 20);
    let (ops, elapsed) = load
        .measure(Duration::from_secs(3))
        .unwrap_or_else(|e| panic!("reads: {e}\n{}", k.log_tail()));
    assert!(load.failed.is_empty(), "failed: {:?}", load.failed);
    let bytes = (ops * u64::from(READ)) as f64;
    let rate = bytes / elapsed.as_secs_f64();
    // Each read costs READ tokens: the one-command terms scale by it.
    let most = ceiling(LIMIT, elapsed, f64::from(READ), 0);
    eprintln!(
        "read MBps limit 20: {ops} reads in {elapsed:?} = {:.2} MB/s (ceiling {:.2} MB)",
        rate / 1e6,
        most / 1e6
    );
    assert!(
        bytes <= most,
        "{bytes} bytes in {elapsed:?} exceed the bucket's ceiling {most:.0}"
    );
    assert!(
        rate >= LOWER_SHARE * LIMIT,
        "{:.2} MB/s is below {LOWER_SHARE} of 20 MB/s",
        rate / 1e6
    );
}

/// Throttled writes queued on the target: enough that at 10 IOPS (a burst of
/// one) the backlog needs at least 3 s to drain.
const BACKLOG: usize = 32;
const TRICKLE_IOPS: f64 = 10.0;
/// Reads of the unthrottled neighbour on its own controller.
const NEIGHBOUR_READS: u64 = 100;
/// Reads queued at once behind the backlog on the same I/O queue (with the
/// backlog, within the queue's 127 entries).
const SAME_QUEUE_READS: u64 = 64;

/// The earliest the backlog's `n`-th write can complete after submission: the
/// bucket admits `burst + 1` at once and one more every 1/rate.
fn earliest_completion(n: usize) -> Duration {
    let at_once = TRICKLE_IOPS * BURST_WINDOW.as_secs_f64() + 1.0;
    Duration::from_secs_f64(((n as f64 - at_once) / TRICKLE_IOPS).max(0.0))
}

/// Two volumes for the isolation tests, both visible to both hosts: one
/// under a 10 write IOPS policy, one without a policy.
fn throttled_and_free(k: &Keeld) -> (Value, Value) {
    create_policy(k, "trickle", absolute(json!({"writeIOPS": 10})));
    let throttled = create_volume(k, "throttled", GIB, &[HOST_A, HOST_B], Some("trickle"));
    let free = create_volume(k, "free", GIB, &[HOST_A, HOST_B], None);
    (throttled, free)
}

/// Submits a Flush of `nsid` without waiting for it.
fn submit_flush(io: &mut IoQueue, nsid: u32) -> u16 {
    let mut cmd = Command::new(io_opcode::FLUSH, 0);
    cmd.set_nsid(nsid);
    io.queue.submit(cmd, None, 0).expect("submit a flush")
}

/// Queues the 32-write backlog on `nsid`, then the commands `also` submits
/// on the same queue; reaps everything and returns how many backlog writes
/// had completed when the last of `also`'s commands did, and how long the
/// whole backlog took to drain. Every command must succeed.
fn behind_a_backlog(
    k: &Keeld,
    io: &mut IoQueue,
    nsid: u32,
    also: impl FnOnce(&mut IoQueue) -> Vec<u16>,
) -> (usize, Duration) {
    let submitted = Instant::now();
    let mut writes = std::collections::HashSet::new();
    for i in 0..BACKLOG {
        let cid = io
            .submit_write(
                nsid,
                Lba(i as u64),
                pattern(BLOCK as usize, i as u64),
                BLOCK,
            )
            .expect("submit a throttled write");
        writes.insert(cid);
    }
    let mut others: std::collections::HashSet<u16> = also(io).into_iter().collect();
    let mut writes_done = 0;
    let mut writes_before_others = None;
    while !writes.is_empty() || !others.is_empty() {
        let (cid, r) = io
            .queue
            .wait_any()
            .unwrap_or_else(|e| panic!("completion: {e}\n{}", k.log_tail()));
        r.success().expect("every command succeeds");
        if writes.remove(&cid) {
            writes_done += 1;
        } else {
            assert!(others.remove(&cid), "a completion of an unknown command");
            if others.is_empty() {
                writes_before_others = Some(writes_done);
            }
        }
    }
    (
        writes_before_others.expect("the other commands completed"),
        submitted.elapsed(),
    )
}

/// While a throttled volume has a deep backlog held on the target (32 writes
/// at 10 IOPS, at least 3 s of work), an unthrottled volume of the same keeld
/// serves 100 reads from another controller: they all complete while at
/// most half the backlog has — before the bucket could possibly have let the
/// other half through — and the backlog itself drains no faster than the
/// bucket allows, each command completing successfully.
#[test]
fn an_unthrottled_volume_on_another_controller_is_not_held_behind_a_throttled_backlog() {
    let k = started();
    let (throttled, free) = throttled_and_free(&k);
    let (_ca, mut qa) = io_for(&k, HOST_A);
    let (_cb, mut qb) = io_for(&k, HOST_B);
    let nsid = nsid_of(&throttled);
    let submitted = Instant::now();
    for i in 0..BACKLOG {
        qa.submit_write(
            nsid,
            Lba(i as u64),
            pattern(BLOCK as usize, i as u64),
            BLOCK,
        )
        .expect("submit a throttled write");
    }
    // The backlog is reaped on a thread of its own, which notes when each
    // write completed.
    let backlog = std::thread::spawn(move || {
        let mut completed = Vec::with_capacity(BACKLOG);
        for _ in 0..BACKLOG {
            let (_, r) = qa.queue.wait_any().expect("a throttled write's completion");
            r.success().expect("a throttled write succeeds");
            completed.push(Instant::now());
        }
        completed
    });
    let mut load = Load::new(&mut qb, nsid_of(&free), Op::Read(BLOCK), 4, 16 << 20);
    while load.done + (load.in_flight as u64) < NEIGHBOUR_READS {
        if load.in_flight < load.depth {
            load.submit().expect("submit a neighbour read");
        } else {
            load.reap().expect("a neighbour read's completion");
        }
    }
    load.drain().expect("the neighbour's last reads");
    let neighbour_done = load.last;
    assert!(load.failed.is_empty(), "failed: {:?}", load.failed);
    assert_eq!(load.done, NEIGHBOUR_READS);
    let completed = backlog.join().expect("the backlog's thread");
    let before_neighbour = completed.iter().filter(|t| **t <= neighbour_done).count();
    let drained = completed.last().expect("backlog").duration_since(submitted);
    eprintln!(
        "neighbour's {NEIGHBOUR_READS} reads done {:?} after the backlog was queued, when {before_neighbour} of {BACKLOG} throttled writes had completed; the backlog drained in {drained:?}",
        neighbour_done.duration_since(submitted)
    );
    assert!(
        before_neighbour <= BACKLOG / 2,
        "the neighbour's reads finished only after {before_neighbour} of {BACKLOG} throttled writes (at most half could be done by {:?})",
        earliest_completion(BACKLOG / 2 + 1)
    );
    assert!(
        drained + CLOCK_SLACK >= earliest_completion(BACKLOG),
        "the backlog drained in {drained:?}, faster than 10 IOPS allows ({:?})",
        earliest_completion(BACKLOG)
    );
    let free_stats = statistics(&k, &uuid_of(&free));
    assert_eq!(free_stats["qosDelayedCommands"], 0, "{free_stats}");
    let throttled_stats = statistics(&k, &uuid_of(&throttled));
    assert!(
        throttled_stats["qosDelayedCommands"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{throttled_stats}"
    );
}

/// The same on one controller and one I/O queue: a host sees both volumes
/// (its NQN is in both ACLs), queues 32 throttled writes and then 64 reads
/// of the unthrottled volume on the same queue; the reads are not stuck
/// behind the held writes (all complete while at most half the writes have).
#[test]
fn an_unthrottled_volume_on_the_same_io_queue_is_not_held_behind_a_throttled_backlog() {
    let k = started();
    let (throttled, free) = throttled_and_free(&k);
    let (mut c, mut io) = io_for(&k, HOST_A);
    let mut active = c.active_namespaces().expect("active namespaces");
    active.sort_unstable();
    let mut both = vec![nsid_of(&throttled), nsid_of(&free)];
    both.sort_unstable();
    assert_eq!(active, both, "one controller sees both volumes");
    let free_nsid = nsid_of(&free);
    let (before_reads, drained) = behind_a_backlog(&k, &mut io, nsid_of(&throttled), |io| {
        (0..SAME_QUEUE_READS)
            .map(|i| {
                io.submit_read(free_nsid, Lba(i), 1, BLOCK)
                    .expect("submit a neighbour read")
            })
            .collect()
    });
    eprintln!(
        "{SAME_QUEUE_READS} reads on the same queue completed after {before_reads} of {BACKLOG} throttled writes; drained in {drained:?}"
    );
    assert!(
        before_reads <= BACKLOG / 2,
        "the reads on the same queue finished only after {before_reads} of {BACKLOG} throttled writes"
    );
    assert!(
        drained + CLOCK_SLACK >= earliest_completion(BACKLOG),
        "the backlog drained in {drained:?}, faster than 10 IOPS allows"
    );
    assert_eq!(
        statistics(&k, &uuid_of(&free))["qosDelayedCommands"],
        0,
        "the unthrottled volume held nothing back"
    );
}

/// Asserts a one-slice rate: at most the bucket's ceiling for `limit` (with
/// `in_flight` commands admitted before the slice), at least `share` of it.
fn assert_slice(
    what: &str,
    limit: f64,
    (ops, elapsed): (u64, Duration),
    in_flight: usize,
    share: f64,
) {
    let rate = ops as f64 / elapsed.as_secs_f64();
    let most = ceiling(limit, elapsed, 1.0, in_flight);
    eprintln!(
        "{what}: {ops} writes in {elapsed:?} = {rate:.1}/s (limit {limit}, ceiling {most:.0})"
    );
    assert!(
        ops as f64 <= most,
        "{what}: {ops} writes in {elapsed:?} exceed the ceiling {most:.1} of {limit} IOPS"
    );
    assert!(
        rate >= share * limit,
        "{what}: {rate:.1} IOPS is below {share} of the {limit} limit"
    );
}

/// Limits change under a running closed loop (4 KiB writes, queue depth 16):
/// raising the policy's limit (PUT) lifts the rate in the very next second,
/// and moving the volume to another policy (PUT volume) brings it to that
/// policy's limit in the next second; each second stays under its bucket's
/// ceiling.
#[test]
fn policy_and_volume_updates_change_the_rate_of_a_running_workload() {
    const DEPTH: usize = 16;
    let k = started();
    let slow = create_policy(&k, "slow", absolute(json!({"writeIOPS": 200})));
    create_policy(&k, "medium", absolute(json!({"writeIOPS": 300})));
    let v = create_volume(&k, "live", GIB, &[HOST_A], Some("slow"));
    let uuid = uuid_of(&v);
    let (_c, mut io) = io_for(&k, HOST_A);
    let mut load = Load::new(&mut io, nsid_of(&v), Op::Write(BLOCK), DEPTH, 64 << 20);
    let second = Duration::from_secs(1);
    let fail = |e: HostError| -> ! { panic!("writes: {e}\n{}", k.log_tail()) };

    let first = load
        .slice(Instant::now(), second)
        .unwrap_or_else(|e| fail(e));
    assert_slice("under 200", 200.0, first, 0, LOWER_SHARE_AFTER_CHANGE);

    let a = k.put(
        &format!("/api/v2/qosPolicies/{}", uuid_of(&slow)),
        &json!({"limit": absolute(json!({"writeIOPS": 800}))}),
    );
    assert_eq!(a.status, StatusCode::OK, "raise the policy: {}", a.body);
    let raised = load
        .slice(Instant::now(), second)
        .unwrap_or_else(|e| fail(e));
    assert_slice(
        "raised to 800",
        800.0,
        raised,
        DEPTH,
        LOWER_SHARE_AFTER_CHANGE,
    );
    let before = ceiling(200.0, first.1, 1.0, 0) / first.1.as_secs_f64();
    let after = raised.0 as f64 / raised.1.as_secs_f64();
    assert!(
        after > 2.0 * before,
        "the rate did not rise: {after:.1}/s after, at most {before:.1}/s before"
    );

    let a = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"qosPolicyName": "medium"}),
    );
    assert_eq!(a.status, StatusCode::OK, "move the volume: {}", a.body);
    assert_eq!(a.body["qosPolicyName"], "medium", "{}", a.body);
    let moved = load
        .slice(Instant::now(), second)
        .unwrap_or_else(|e| fail(e));
    assert_slice(
        "moved to 300",
        300.0,
        moved,
        DEPTH,
        LOWER_SHARE_AFTER_CHANGE,
    );

    load.drain().unwrap_or_else(|e| fail(e));
    assert!(load.failed.is_empty(), "failed: {:?}", load.failed);
    let v = k.wait_volume_state(&uuid, "Available");
    assert_eq!(v["qosPolicyName"], "medium");
}

/// A per-GiB policy (100 write IOPS per GiB) gives a 2 GiB volume 200 IOPS;
/// growing the volume to 6 GiB under a running workload (PUT size) gives it
/// 600 IOPS, which the next second shows, each second under its ceiling.
#[test]
fn a_per_gib_policy_follows_a_volume_resize() {
    const DEPTH: usize = 16;
    let k = started();
    create_policy(&k, "per-gib", per_gib(json!({"writeIOPS": 100})));
    let v = create_volume(&k, "growing", 2 * GIB, &[HOST_A], Some("per-gib"));
    let uuid = uuid_of(&v);
    let (_c, mut io) = io_for(&k, HOST_A);
    let mut load = Load::new(&mut io, nsid_of(&v), Op::Write(BLOCK), DEPTH, 64 << 20);
    let run = Duration::from_millis(1500);
    let fail = |e: HostError| -> ! { panic!("writes: {e}\n{}", k.log_tail()) };

    let small = load.slice(Instant::now(), run).unwrap_or_else(|e| fail(e));
    assert_slice("2 GiB at 100/GiB", 200.0, small, 0, LOWER_SHARE);

    let a = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"size": (6 * GIB).to_string()}),
    );
    assert_eq!(a.status, StatusCode::OK, "grow: {}", a.body);
    assert_eq!(a.body["size"], (6 * GIB).to_string(), "{}", a.body);
    let grown = load.slice(Instant::now(), run).unwrap_or_else(|e| fail(e));
    assert_slice(
        "6 GiB at 100/GiB",
        600.0,
        grown,
        DEPTH,
        LOWER_SHARE_AFTER_CHANGE,
    );

    load.drain().unwrap_or_else(|e| fail(e));
    assert!(load.failed.is_empty(), "failed: {:?}", load.failed);
}

/// A volume naming an unknown policy is refused with 400 and a message that
/// names the field, and no such volume appears; a policy a volume uses cannot
/// be deleted (409, by name or UUID) until the volume is gone.
#[test]
fn unknown_policy_names_are_bad_requests_and_policies_in_use_cannot_be_deleted() {
    let k = started();
    let a = k.post(
        "/api/v2/volumes",
        &json!({
            "name": "ghostly", "size": GIB.to_string(), "replicaCount": 1,
            "projectName": "default", "acl": {"values": [HOST_A]},
            "qosPolicyName": "no-such-policy",
        }),
    );
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let message = a.body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("qosPolicyName"),
        "the message does not name the field: {}",
        a.body
    );
    let listed = k.get("/api/v2/volumes?projectName=default");
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.body);
    assert!(
        !listed.body["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == "ghostly"),
        "a refused volume exists: {}",
        listed.body
    );

    let policy = create_policy(&k, "gold", absolute(json!({"totalIOPS": 1000})));
    let v = create_volume(&k, "golden", GIB, &[HOST_A], Some("gold"));
    for id in ["gold".to_owned(), uuid_of(&policy)] {
        let a = k.delete(&format!("/api/v2/qosPolicies/{id}"));
        assert_eq!(
            a.status,
            StatusCode::CONFLICT,
            "delete {id} in use: {}",
            a.body
        );
    }
    let still = k.get("/api/v2/qosPolicies/gold");
    assert_eq!(still.status, StatusCode::OK, "{}", still.body);

    let uuid = uuid_of(&v);
    let a = k.delete(&format!("/api/v2/volumes/{uuid}"));
    assert_eq!(a.status, StatusCode::OK, "delete the volume: {}", a.body);
    k.wait_volume_gone(&uuid);
    let a = k.delete("/api/v2/qosPolicies/gold");
    assert_eq!(
        a.status,
        StatusCode::OK,
        "delete the unused policy: {}",
        a.body
    );
    let gone = k.get("/api/v2/qosPolicies/gold");
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);
}

/// A Flush of a throttled volume is not held: queued behind 32 writes that
/// need at least 3 s at 10 IOPS, it completes while at most half of them
/// have.
#[test]
fn a_flush_is_not_held_behind_its_volumes_throttled_writes() {
    let k = started();
    create_policy(&k, "trickle", absolute(json!({"writeIOPS": 10})));
    let v = create_volume(&k, "flushed", GIB, &[HOST_A], Some("trickle"));
    let nsid = nsid_of(&v);
    let (_c, mut io) = io_for(&k, HOST_A);
    let (before_flush, drained) =
        behind_a_backlog(&k, &mut io, nsid, |io| vec![submit_flush(io, nsid)]);
    eprintln!(
        "the flush completed after {before_flush} of {BACKLOG} writes; drained in {drained:?}"
    );
    assert!(
        drained + CLOCK_SLACK >= earliest_completion(BACKLOG),
        "the backlog drained in {drained:?}, faster than 10 IOPS allows"
    );
    assert!(
        before_flush <= BACKLOG / 2,
        "the flush completed only after {before_flush} of {BACKLOG} throttled writes"
    );
}

/// Reads of a volume limited only in write IOPS are not held behind its
/// write backlog: 64 reads queued after 32 writes that need at least 3 s at
/// 10 IOPS complete while at most half of the writes have.
#[test]
fn reads_of_a_write_limited_volume_are_not_held_behind_its_write_backlog() {
    let k = started();
    create_policy(&k, "trickle", absolute(json!({"writeIOPS": 10})));
    let v = create_volume(&k, "mixed", GIB, &[HOST_A], Some("trickle"));
    let nsid = nsid_of(&v);
    let (_c, mut io) = io_for(&k, HOST_A);
    let (before_reads, drained) = behind_a_backlog(&k, &mut io, nsid, |io| {
        (0..SAME_QUEUE_READS)
            .map(|i| {
                io.submit_read(nsid, Lba(1024 + i), 1, BLOCK)
                    .expect("submit a read")
            })
            .collect()
    });
    eprintln!(
        "the reads completed after {before_reads} of {BACKLOG} writes; drained in {drained:?}"
    );
    assert!(
        drained + CLOCK_SLACK >= earliest_completion(BACKLOG),
        "the backlog drained in {drained:?}, faster than 10 IOPS allows"
    );
    assert!(
        before_reads <= BACKLOG / 2,
        "the reads completed only after {before_reads} of {BACKLOG} throttled writes"
    );
}

/// Write Zeroes and deallocation (Dataset Management) count as write
/// commands of no bytes: under a 20 write IOPS policy, 15 of each, one at a
/// time, take at least as long as the bucket needs for 30 commands; under a
/// 1 MBps write policy, the same 30 commands over 1 MiB each are not held
/// for the 30 MiB they cover (that would take over 30 s; they finish within
/// the few seconds a burst-free 30 commands could never exceed on loopback).
#[test]
fn write_zeroes_and_deallocate_count_as_writes_of_no_bytes() {
    const COMMANDS: u32 = 15;
    const BLOCKS: u32 = 256; // 1 MiB
    let k = started();
    create_policy(&k, "w20", absolute(json!({"writeIOPS": 20})));
    create_policy(&k, "wmb1", absolute(json!({"writeMBps": 1})));
    let by_ops = create_volume(&k, "by-ops", GIB, &[HOST_A], Some("w20"));
    let by_bytes = create_volume(&k, "by-bytes", GIB, &[HOST_A], Some("wmb1"));
    let (_c, mut io) = io_for(&k, HOST_A);
    let run = |io: &mut IoQueue, nsid: u32| -> Duration {
        let start = Instant::now();
        for i in 0..COMMANDS {
            let lba = Lba(u64::from(i * BLOCKS));
            io.write_zeroes(nsid, lba, BLOCKS)
                .unwrap_or_else(|e| panic!("write zeroes: {e}\n{}", k.log_tail()));
            io.deallocate(
                nsid,
                &[LbaRange {
                    start: lba,
                    blocks: BLOCKS,
                }],
            )
            .unwrap_or_else(|e| panic!("deallocate: {e}\n{}", k.log_tail()));
        }
        start.elapsed()
    };
    let ops_took = run(&mut io, nsid_of(&by_ops));
    // 30 commands from a full bucket (2 tokens, one command of debt) need
    // (30 - 3) / 20 s at least.
    let least = Duration::from_secs_f64((f64::from(2 * COMMANDS) - 3.0) / 20.0);
    eprintln!(
        "{} zeroes/deallocates under 20 write IOPS: {ops_took:?} (at least {least:?})",
        2 * COMMANDS
    );
    assert!(
        ops_took + CLOCK_SLACK >= least,
        "write zeroes and deallocation were not counted as writes: {ops_took:?} < {least:?}"
    );
    let bytes_took = run(&mut io, nsid_of(&by_bytes));
    eprintln!("the same under 1 MBps: {bytes_took:?}");
    assert!(
        bytes_took < Duration::from_secs(15),
        "write zeroes or deallocation were charged their range's bytes: {bytes_took:?}"
    );
    let stats = statistics(&k, &uuid_of(&by_ops));
    assert!(
        stats["qosDelayedCommands"].as_u64().is_some_and(|n| n > 0),
        "{stats}"
    );
}

/// A volume's policy holds across a keeld restart (SIGTERM, start on the same
/// data directory): the next run of writes stays under its bucket's ceiling
/// and reaches 80% of the limit.
#[test]
fn limits_hold_after_a_restart() {
    const LIMIT: f64 = 300.0;
    let mut k = started();
    create_policy(&k, "w300", absolute(json!({"writeIOPS": 300})));
    let v = create_volume(&k, "kept", GIB, &[HOST_A], Some("w300"));
    k.restart();
    let v = k.wait_volume_state(&uuid_of(&v), "Available");
    assert_eq!(v["qosPolicyName"], "w300", "{v}");
    let (_c, mut io) = io_for(&k, HOST_A);
    let mut load = Load::new(&mut io, nsid_of(&v), Op::Write(BLOCK), 16, 64 << 20);
    let (ops, elapsed) = load
        .measure(Duration::from_millis(1500))
        .unwrap_or_else(|e| panic!("writes: {e}\n{}", k.log_tail()));
    assert!(load.failed.is_empty(), "failed: {:?}", load.failed);
    assert_slice("after a restart", LIMIT, (ops, elapsed), 0, LOWER_SHARE);
}
