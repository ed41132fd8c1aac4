//! The Linux kernel host with native NVMe multipath against a three-node Keel
//! cluster, in QEMU guests running Debian's 6.1 and 6.12 kernels: a primary's
//! kill -9 under a verifying fio load costs the host no error and no data.
//!
//! etcd and three keeld run on host loopback, each advertising the address
//! the guest reaches it at; an RF3 volume is created through node 0 with the
//! guest's host NQN in its ACL. The guest discovers through node 0 alone,
//! which must list all three portals, connects to them with `nvme
//! connect-all`, and checks one subsystem with three paths: optimized on the
//! primary, inaccessible on the replicas. fio writes with crc32c verify on the
//! multipath head; once I/O flows the guest tells the test over a forwarded
//! TCP connection, and the test kill -9s the primary's keeld. fio must finish
//! without an error, a second fio pass re-verifies every block it wrote, and
//! the optimized path must have moved to a surviving node, the dead node's
//! path left reconnecting.
//!
//! The guest talks to the test over that one connection, a line per message:
//! `subsys-before <json>` (`nvme list-subsys -o json`), `io-running` (the test
//! answers `killed` once the primary is dead), `facts <k=v ...>`, `fio-write
//! <json>`, `fio-verify <json>`, `subsys-after <json>`. JSON is parsed here,
//! where there is a parser, and never interleaves with kernel console noise.

mod common;
mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use common::cluster::{node_args, optimized_node as optimized_node_with, REPLICATION_LISTEN};
use common::etcd::Etcd;
use common::{wait_until, Keeld, KeeldOptions, WAIT};
use nvmf_target::AnaState;
use reqwest::StatusCode;
use serde_json::{json, Value};
use support::guest::{self, GuestKernel, GuestRun};

/// The guest's host NQN (in the volume's ACL).
const GUEST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:6b5bd1c4-keel-multipath-guest";
/// The host NQN this test reads ANA logs as (also in the ACL).
const PROBE_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:keel-multipath-probe";
/// Node i's NVMe/TCP listener is `10.0.2.100:(this + i)` in the guest.
const FIRST_NVME_PORT_IN_GUEST: u16 = 4420;
const DISCOVERY_PORT_IN_GUEST: u16 = 8009;
const SIGNAL_PORT_IN_GUEST: u16 = 7000;
const NODES: usize = 3;
/// The availability bound this test states: from the kill to the guest
/// seeing a surviving path optimized. The primary's lease (5 s TTL) must
/// run out, a successor take the volume over and its ANA change notice
/// reach the guest; cluster_replication bounds the takeover itself at 15 s.
const FAILOVER_BOUND_S: u64 = 30;
/// The whole guest run: boot, connects, fio write + verify, second verify.
const GUEST_TIMEOUT: Duration = Duration::from_secs(360);

/// Node `i`, advertising the address the guest reaches its I/O listener at
/// (so every node's discovery log names it there).
fn start_node(etcd: &Etcd, i: usize) -> Keeld {
    let mut k = Keeld::start(KeeldOptions {
        extra_args: [
            node_args(etcd, i, REPLICATION_LISTEN),
            vec![
                "--advertised-address".into(),
                format!("{}:{}", guest::HOST_ADDR_IN_GUEST, guest_port(i)),
            ],
        ]
        .concat(),
        ..KeeldOptions::default()
    });
    k.login();
    k
}

fn ana_state(k: &Keeld, nsid: u32) -> Option<AnaState> {
    common::cluster::ana_state(k, k.host_options(PROBE_NQN), nsid)
}

/// The node among `candidates` whose namespace `nsid` is ANA optimized.
fn optimized_node(
    keelds: &[Keeld],
    candidates: &[usize],
    nsid: u32,
    within: Duration,
) -> Option<usize> {
    optimized_node_with(keelds, candidates, nsid, within, |k| {
        k.host_options(PROBE_NQN)
    })
}

fn guest_port(node: usize) -> u16 {
    FIRST_NVME_PORT_IN_GUEST + u16::try_from(node).expect("few nodes")
}

fn guest_script() -> &'static str {
    r#"
set -euo pipefail
A=$KEEL_HOST_ADDR
exec 3<>/dev/tcp/$A/$SIGNAL_PORT
say() { printf '%s\n' "$*" >&3; }
oneline() { tr -d '\n\t' < "$1"; }

# One line per path of namespace $NSID: "<ctrl> <trsvcid> <ctrl state> <ana state>".
paths() {
  for c in /sys/class/nvme/nvme*; do
    grep -qx "$SUBNQN" $c/subsysnqn 2>/dev/null || continue
    port=$(sed -n 's/.*trsvcid=\([0-9]*\).*/\1/p' $c/address)
    ns=$(ls -d $c/nvme*c*n$NSID 2>/dev/null | head -1)
    ana=none; [ -n "$ns" ] && ana=$(cat $ns/ana_state)
    echo "$(basename $c) $port $(cat $c/state) $ana"
  done
}
# The ports of live controllers whose path is optimized.
live_optimized() { paths | awk '$3 == "live" && $4 == "optimized" {print $2}'; }
# Write I/Os completed on the paths through ports other than $1.
writes_elsewhere() {
  total=0
  for c in /sys/class/nvme/nvme*; do
    grep -qx "$SUBNQN" $c/subsysnqn 2>/dev/null || continue
    grep -Eq "trsvcid=$1(,|$)" $c/address && continue
    for ns in $c/nvme*c*n$NSID; do [ -e $ns/stat ] && total=$((total + $(awk '{print $5}' $ns/stat))); done
  done
  echo $total
}
writes_all() { writes_elsewhere none; }

echo "== discover through node 0, connect to every node it lists"
nvme discover -t tcp -a $A -s $DISCOVERY_PORT | tee /tmp/disc
for p in $PORTS; do
  grep -q "trsvcid: $p\$" /tmp/disc || { echo "discovery does not list port $p"; exit 1; }
done
nvme connect-all -t tcp -a $A -s $DISCOVERY_PORT --ctrl-loss-tmo=600 --reconnect-delay=1
for _ in $(seq 1 300); do
  [ $(paths | awk '$4 != "none"' | wc -l) -eq 3 ] && [ -n "$(live_optimized)" ] && break
  sleep 0.1
done
paths
[ $(paths | wc -l) -eq 3 ] || { echo "expected 3 controllers"; exit 1; }
[ "$(live_optimized)" = "$PRIMARY_PORT" ] || { echo "optimized path is not on port $PRIMARY_PORT"; exit 1; }
[ $(paths | awk '$3 == "live" && $4 == "inaccessible"' | wc -l) -eq 2 ] || { echo "expected 2 inaccessible paths"; exit 1; }
heads=$(ls -d /sys/class/nvme-subsystem/nvme-subsys*/nvme*n$NSID 2>/dev/null || true)
[ $(echo "$heads" | grep -c .) -eq 1 ] || { echo "expected one multipath head, got: $heads"; exit 1; }
DEV=/dev/$(basename $heads)
for _ in $(seq 1 100); do [ -b $DEV ] && break; sleep 0.1; done
[ -b $DEV ]
[ $(( $(cat /sys/block/$(basename $DEV)/size) * 512 )) -eq $((VOLUME_MIB << 20)) ]
echo "multipath head $DEV"
nvme list-subsys -o json $DEV > /tmp/subsys-before.json
cat /tmp/subsys-before.json
say "subsys-before $(oneline /tmp/subsys-before.json)"

echo "== fio with verify; the test kills the primary under it"
FIO="--name=mp --filename=$DEV --rw=randwrite --bs=4k --size=${FIO_MIB}M --ioengine=libaio
     --direct=1 --iodepth=16 --verify=crc32c --verify_fatal=1 --runtime=$FIO_RUNTIME_S
     --output-format=json"
fio $FIO --do_verify=1 --output=/tmp/fio-write.json --write_lat_log=/tmp/mp --log_avg_msec=0 &
FIO_PID=$!
# Kill while writes flow: after the first 1024 (4 MiB) have completed.
for _ in $(seq 1 1200); do [ $(writes_all) -ge 1024 ] && break; sleep 0.1; done
[ $(writes_all) -ge 1024 ] || { echo "fio never got going"; exit 1; }
say "io-running"
read -r -t 60 reply <&3
[ "$reply" = "killed" ] || { echo "no kill confirmation: '$reply'"; exit 1; }
t_kill=$EPOCHREALTIME
echo "primary on port $PRIMARY_PORT killed; waiting for another path to turn optimized"
# Polled at shell speed under TCG (an iteration takes up to a second or two):
# upper bounds. fio's longest gap between write completions is the exact stall.
t_io=""; t_ana=""
deadline=$(( ${t_kill%.*} + FAILOVER_BOUND_S ))
while [ $(date +%s) -lt $deadline ]; do
  [ -z "$t_io" ] && [ $(writes_elsewhere $PRIMARY_PORT) -gt 0 ] && t_io=$EPOCHREALTIME
  [ -z "$t_ana" ] && live_optimized | grep -qv "^$PRIMARY_PORT$" && t_ana=$EPOCHREALTIME
  [ -n "$t_io" ] && [ -n "$t_ana" ] && break
  sleep 0.05
done
paths
[ -n "$t_ana" ] || { echo "no surviving path turned optimized within ${FAILOVER_BOUND_S}s"; exit 1; }
[ -n "$t_io" ] || { echo "no write completed on a surviving path within ${FAILOVER_BOUND_S}s"; exit 1; }
ms() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%d", (b - a) * 1000}'; }
fio_status=0
wait $FIO_PID || fio_status=$?
cat /tmp/fio-write.json | grep -E '"error"|"io_kbytes"' || true
say "fio-write $(oneline /tmp/fio-write.json)"
[ $fio_status -eq 0 ] || { echo "fio failed with $fio_status"; exit 1; }
# The longest time between two consecutive write completions (ms).
gap=$(cat /tmp/mp_clat.*.log | awk -F', *' '$3 == 1 {if (seen && $1 - p > g) g = $1 - p; p = $1; seen = 1} END {print g + 0}')
say "facts ana_moved_ms=$(ms $t_kill $t_ana) writes_resumed_ms=$(ms $t_kill $t_io) longest_write_gap_ms=$gap"

echo "== every block fio wrote verifies through the new primary"
fio $FIO --verify_only --output=/tmp/fio-verify.json
say "fio-verify $(oneline /tmp/fio-verify.json)"

echo "== the optimized path moved"
nvme list-subsys -o json $DEV > /tmp/subsys-after.json
cat /tmp/subsys-after.json
say "subsys-after $(oneline /tmp/subsys-after.json)"
paths
dead=$(paths | awk -v p=$PRIMARY_PORT '$2 == p {print $3}')
case "$dead" in
  ""|connecting|resetting) ;;
  *) echo "the dead node's controller is '$dead'"; exit 1 ;;
esac
[ $(live_optimized | wc -l) -eq 1 ] || { echo "expected one live optimized path"; exit 1; }
echo "ALL-CHECKS-PASSED"
"#
}

/// What the guest reported over the signal connection, and when the test
/// killed the primary.
#[derive(Default, Debug)]
struct Report {
    messages: Vec<(String, String)>,
    killed_at: Option<Instant>,
    host_takeover: Option<Duration>,
}

impl Report {
    fn message(&self, kind: &str) -> Option<&str> {
        self.messages
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, body)| body.as_str())
    }

    fn json(&self, kind: &str) -> Value {
        let body = self
            .message(kind)
            .unwrap_or_else(|| panic!("the guest sent no {kind}"));
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{kind}: {e}: {body}"))
    }
}

/// Serves the guest's signal connection: records its messages, kills the
/// primary when the guest says I/O is flowing.
fn serve_guest(listener: TcpListener, keelds: &mut [Keeld], primary: usize, nsid: u32) -> Report {
    let mut report = Report::default();
    let Ok((stream, _)) = listener.accept() else {
        return report;
    };
    let _ = stream.set_read_timeout(Some(GUEST_TIMEOUT));
    let mut writer = stream.try_clone().expect("clone stream");
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { break };
        let (kind, body) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        if kind == "io-running" && report.killed_at.is_none() {
            keelds[primary].kill9();
            let killed_at = Instant::now();
            report.killed_at = Some(killed_at);
            let _ = writer.write_all(b"killed\n");
            let survivors: Vec<usize> = (0..NODES).filter(|i| *i != primary).collect();
            if optimized_node(
                keelds,
                &survivors,
                nsid,
                Duration::from_secs(FAILOVER_BOUND_S),
            )
            .is_some()
            {
                report.host_takeover = Some(killed_at.elapsed());
            }
        }
        report.messages.push((kind.to_owned(), body.to_owned()));
    }
    report
}

/// Every object in `v` with an `NQN` and `Paths` (nvme-cli's subsystems).
fn subsystems(v: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    match v {
        Value::Object(map) => {
            if map.contains_key("NQN") && map.contains_key("Paths") {
                out.push(v);
            }
            for child in map.values() {
                out.extend(subsystems(child));
            }
        }
        Value::Array(items) => {
            for child in items {
                out.extend(subsystems(child));
            }
        }
        _ => {}
    }
    out
}

/// `(trsvcid, state, ANA state)` of each path of the one subsystem named `nqn`.
fn paths_of(list_subsys: &Value, nqn: &str) -> Vec<(u16, String, String)> {
    let found: Vec<&Value> = subsystems(list_subsys)
        .into_iter()
        .filter(|s| s["NQN"] == nqn)
        .collect();
    assert_eq!(found.len(), 1, "one subsystem {nqn} in {list_subsys}");
    found[0]["Paths"]
        .as_array()
        .expect("Paths")
        .iter()
        .map(|p| {
            let address = p["Address"].as_str().expect("Address");
            let port = address
                .split(',')
                .find_map(|kv| kv.trim().strip_prefix("trsvcid="))
                .and_then(|port| port.parse().ok())
                .unwrap_or_else(|| panic!("no trsvcid in {address}"));
            let text = |key: &str| p[key].as_str().unwrap_or("").to_owned();
            (port, text("State"), text("ANAState"))
        })
        .collect()
}

fn facts(report: &Report) -> Vec<(String, u64)> {
    report
        .message("facts")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn run(kernel: GuestKernel) {
    let images = match guest::prepared() {
        Ok(images) => images,
        Err(reason) => return guest::skip_or_fail("nvme_linux_multipath", &reason),
    };
    let Some(etcd) = Etcd::start("nvme_linux_multipath") else {
        return;
    };
    let mut keelds: Vec<Keeld> = (0..NODES).map(|i| start_node(&etcd, i)).collect();
    assert!(
        wait_until(WAIT, || {
            let a = keelds[0].get("/api/v2/nodes");
            a.body["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == NODES && n.iter().all(|n| n["state"] == "Active"))
        }),
        "the three nodes never all showed Active"
    );
    let subnqn = keelds[0].subsystem_nqn.clone();
    assert!(keelds.iter().all(|k| k.subsystem_nqn == subnqn));

    let volume_mib = 256u64;
    let a = keelds[0].post(
        "/api/v2/volumes",
        &json!({
            "name": "multipath",
            "size": (volume_mib << 20).to_string(),
            "replicaCount": 3,
            "projectName": "default",
            "acl": {"values": [GUEST_NQN, PROBE_NQN]},
        }),
    );
    assert_eq!(a.status, StatusCode::OK, "create: {}", a.body);
    let uuid = a.body["UUID"].as_str().expect("UUID").to_owned();
    let v = keelds[0].wait_volume_state(&uuid, "Available");
    let nsid = u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid");
    let all: Vec<usize> = (0..NODES).collect();
    let primary = optimized_node(&keelds, &all, nsid, WAIT).expect("a primary serves the volume");
    for i in all.iter().filter(|i| **i != primary) {
        assert!(
            wait_until(WAIT, || ana_state(&keelds[*i], nsid)
                == Some(AnaState::Inaccessible)),
            "node-{i} does not show its replica inaccessible"
        );
    }
    eprintln!(
        "{kernel}: node-{primary} is the primary (guest port {})",
        guest_port(primary)
    );

    let ports: Vec<String> = all.iter().map(|i| guest_port(*i).to_string()).collect();
    let mut run = GuestRun::new(kernel, guest_script())
        .name("nvme_linux_multipath")
        .hostnqn(GUEST_NQN)
        .env("SUBNQN", &subnqn)
        .env("NSID", &nsid.to_string())
        .env("PORTS", &ports.join(" "))
        .env("PRIMARY_PORT", &guest_port(primary).to_string())
        .env("DISCOVERY_PORT", &DISCOVERY_PORT_IN_GUEST.to_string())
        .env("SIGNAL_PORT", &SIGNAL_PORT_IN_GUEST.to_string())
        .env("VOLUME_MIB", &volume_mib.to_string())
        .env("FIO_MIB", "32")
        .env("FIO_RUNTIME_S", "240")
        .env("FAILOVER_BOUND_S", &FAILOVER_BOUND_S.to_string())
        .timeout(GUEST_TIMEOUT);
    for (i, k) in keelds.iter().enumerate() {
        run = run.forward(guest_port(i), k.nvme_addr.port());
    }
    run = run.forward(DISCOVERY_PORT_IN_GUEST, keelds[0].discovery_addr.port());
    let listener = TcpListener::bind("127.0.0.1:0").expect("signal listener");
    let signal_port = listener.local_addr().expect("addr").port();
    run = run.forward(SIGNAL_PORT_IN_GUEST, signal_port);

    let (outcome, report) = std::thread::scope(|scope| {
        let keelds = &mut keelds;
        let server = scope.spawn(move || serve_guest(listener, keelds, primary, nsid));
        let outcome = run.run(&images);
        if outcome.exit_code != Some(0) {
            // Unblock the server if the guest never connected.
            let _ = TcpStream::connect(("127.0.0.1", signal_port));
        }
        (outcome, server.join().expect("signal server"))
    });
    if outcome.exit_code != Some(0) {
        for (i, k) in keelds.iter().enumerate() {
            eprintln!("--- node-{i} ---\n{}", k.log_tail());
        }
    }
    outcome.assert_success();
    assert!(outcome.script_output().contains("ALL-CHECKS-PASSED"));
    assert!(report.killed_at.is_some(), "the primary was never killed");

    // One subsystem, three paths: optimized on the primary, inaccessible elsewhere.
    let before = paths_of(&report.json("subsys-before"), &subnqn);
    assert_eq!(before.len(), NODES, "paths before: {before:?}");
    for (port, state, ana) in &before {
        let want = if *port == guest_port(primary) {
            "optimized"
        } else {
            "inaccessible"
        };
        assert_eq!(
            (state.as_str(), ana.as_str()),
            ("live", want),
            "paths before: {before:?}"
        );
    }
    // After: exactly one live optimized path, on a survivor; the dead node's
    // path, if still listed, is not live.
    let after = paths_of(&report.json("subsys-after"), &subnqn);
    let optimized: Vec<u16> = after
        .iter()
        .filter(|(_, state, ana)| state == "live" && ana == "optimized")
        .map(|(port, _, _)| *port)
        .collect();
    assert_eq!(optimized.len(), 1, "paths after: {after:?}");
    assert_ne!(optimized[0], guest_port(primary), "paths after: {after:?}");
    assert!(
        after
            .iter()
            .all(|(port, state, _)| *port != guest_port(primary) || state != "live"),
        "the dead node's path is live: {after:?}"
    );

    // fio saw no error in either pass.
    let write = report.json("fio-write");
    let verify = report.json("fio-verify");
    for (name, fio) in [("write", &write), ("verify", &verify)] {
        let job = &fio["jobs"][0];
        assert_eq!(job["error"], 0, "fio {name}: {fio}");
    }
    let written_kib = write["jobs"][0]["write"]["io_kbytes"].as_u64().unwrap_or(0);
    let verified_kib = verify["jobs"][0]["read"]["io_kbytes"].as_u64().unwrap_or(0);
    assert!(
        written_kib > 0 && verified_kib > 0,
        "fio wrote {written_kib} KiB, verified {verified_kib} KiB"
    );
    let clat_max_ms = write["jobs"][0]["write"]["clat_ns"]["max"]
        .as_u64()
        .unwrap_or(0)
        / 1_000_000;

    let successor = usize::from(optimized[0] - FIRST_NVME_PORT_IN_GUEST);
    eprintln!(
        "{kernel}: node-{primary} killed, node-{successor} took over; guest: {}; fio write clat max {clat_max_ms} ms, \
         {written_kib} KiB written and {verified_kib} KiB verified again; takeover seen by the test's host {:?}; guest run {:?}",
        facts(&report)
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        report.host_takeover,
        outcome.elapsed
    );
}

#[test]
fn linux_6_1_multipath_host_rides_through_a_primary_kill() {
    run(GuestKernel::V6_1);
}

#[test]
fn linux_6_12_multipath_host_rides_through_a_primary_kill() {
    run(GuestKernel::V6_12);
}
