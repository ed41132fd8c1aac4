//! End-to-end system tests: volumes made over the REST API of the real keeld,
//! used over NVMe/TCP by our host side (`nvmf_target::host`) as a host whose NQN
//! is or is not in the volume's ACL (by NQN and by source address), with live
//! ACL changes, discovery and a kill -9 in between.

mod common;

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use common::{pattern, uuid_bytes, wait_until, Keeld, KeeldOptions, WAIT};
use nvmf_target::host::{discover, HostController, HostError, HostOptions, IoQueue};
use nvmf_target::nvme::identify::nidt;
use nvmf_target::nvme::{feature, log_id, DISCOVERY_NQN};
use nvmf_target::{Lba, LbaRange, Status};
use reqwest::StatusCode;
use serde_json::{json, Value};

const HOST_A: &str = "nqn.2014-08.org.nvmexpress:uuid:a1a1a1a1-1111-4111-8111-a1a1a1a1a1a1";
const HOST_B: &str = "nqn.2014-08.org.nvmexpress:uuid:b2b2b2b2-2222-4222-8222-b2b2b2b2b2b2";
const BLOCK: u32 = 4096;
const VOLUME_BYTES: u64 = 256 << 20;
/// Completion DW0 of a namespace-attribute-changed notice (type 2, info 0, log 4).
const AEN_NS_CHANGED: u32 = 0x0004_0002;

fn status_of(err: HostError) -> Status {
    err.status()
        .unwrap_or_else(|| panic!("expected an NVMe status, got {err:?}"))
}

fn nsid_of(v: &Value) -> u32 {
    u32::try_from(v["nsid"].as_u64().expect("nsid")).expect("nsid fits u32")
}

fn uuid_of(v: &Value) -> String {
    v["UUID"].as_str().expect("UUID").to_owned()
}

fn io_queue(c: &mut HostController) -> IoQueue {
    assert!(c.set_queue_count(1).expect("Set Features number of queues") >= 1);
    c.connect_io_queue(1).expect("I/O queue")
}

/// Enables namespace-attribute notices and arms one Asynchronous Event Request.
fn arm_aer(c: &mut HostController) -> u16 {
    c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8)
        .expect("async event config");
    c.submit_aer().expect("AER")
}

/// Waits for the armed AER (bounded by the host's command timeout), checks it is
/// a namespace notice, and returns the changed namespace list.
fn reap_ns_changed(c: &mut HostController, cid: u16) -> Vec<u32> {
    let event = c
        .admin
        .wait(cid)
        .expect("AER completion")
        .success()
        .expect("AER status");
    assert_eq!(
        event.completion.dw0(),
        AEN_NS_CHANGED,
        "not a namespace-attribute notice"
    );
    let log = c
        .get_log_page(log_id::CHANGED_NS_LIST, 0, 4096, false)
        .expect("changed namespace list");
    log.chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .take_while(|n| *n != 0)
        .collect()
}

fn set_acl(k: &Keeld, uuid: &str, hosts: &[&str]) {
    let a = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"acl": {"values": hosts}}),
    );
    assert_eq!(a.status, StatusCode::OK, "ACL update: {}", a.body);
    let v = k.wait_volume_state(uuid, "Available");
    assert_eq!(v["acl"]["values"], json!(hosts));
}

#[test]
fn a_rest_volume_serves_its_acl_host_and_follows_acl_changes_live() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("e2e", VOLUME_BYTES, &[HOST_A]);
    let (uuid, nsid) = (uuid_of(&v), nsid_of(&v));

    // Host A: the namespace is there, identified by the REST UUID.
    let mut a = k.connect(HOST_A);
    assert_eq!(a.identity.subnqn, k.subsystem_nqn);
    assert_eq!(a.active_namespaces().expect("active"), vec![nsid]);
    let ns = a.identify_namespace(nsid).expect("identify namespace");
    assert_eq!(ns.nguid, uuid_bytes(&uuid), "NGUID == REST UUID");
    assert_eq!(ns.size_blocks, VOLUME_BYTES / u64::from(BLOCK));
    assert_eq!(1u32 << ns.block_shift, BLOCK);
    let descriptors = a.namespace_descriptors(nsid).expect("descriptors");
    assert!(
        descriptors.contains(&(nidt::UUID, uuid_bytes(&uuid).to_vec())),
        "{descriptors:?}"
    );
    assert!(
        descriptors.contains(&(nidt::NGUID, uuid_bytes(&uuid).to_vec())),
        "{descriptors:?}"
    );

    // Data: in-capsule 4 KiB, R2T-driven 128 KiB, many in flight, flush, zeroes.
    let mut io = io_queue(&mut a);
    io.write(nsid, Lba(0), pattern(4096, 1), BLOCK)
        .expect("4 KiB write");
    let big = pattern(128 << 10, 2);
    io.write(nsid, Lba(64), big.clone(), BLOCK)
        .expect("128 KiB write");
    let mut expected: Vec<(u64, Bytes)> = vec![(0, pattern(4096, 1))];
    expected.extend((0..32u64).map(|i| {
        (
            64 + i,
            big.slice(i as usize * 4096..(i as usize + 1) * 4096),
        )
    }));
    let batch: Vec<(u64, Bytes)> = (0..64u64)
        .map(|i| (1000 + 7 * i, pattern(4096, 100 + i)))
        .collect();
    for (lba, data) in &batch {
        io.submit_write(nsid, Lba(*lba), data.clone(), BLOCK)
            .expect("submit write");
    }
    for _ in 0..batch.len() {
        io.queue
            .wait_any()
            .expect("completion")
            .1
            .success()
            .expect("write status");
    }
    expected.extend(batch);
    io.flush(nsid).expect("flush");
    for (lba, data) in &expected {
        assert_eq!(
            io.read(nsid, Lba(*lba), 1, BLOCK).expect("read"),
            data.to_vec(),
            "LBA {lba}"
        );
    }
    assert_eq!(
        io.read(nsid, Lba(64), 32, BLOCK).expect("128 KiB read"),
        big.to_vec()
    );
    io.write_zeroes(nsid, Lba(64), 4).expect("write zeroes");
    assert_eq!(
        io.read(nsid, Lba(64), 4, BLOCK).expect("read"),
        vec![0u8; 4 * 4096]
    );
    io.deallocate(
        nsid,
        &[LbaRange {
            start: Lba(68),
            blocks: 4,
        }],
    )
    .expect("deallocate");
    assert_eq!(
        io.read(nsid, Lba(68), 4, BLOCK)
            .expect("read the deallocated range"),
        vec![0u8; 4 * 4096],
        "deallocated blocks read as zeroes"
    );
    assert_eq!(
        io.read(nsid, Lba(72), 1, BLOCK)
            .expect("read past the range"),
        big.slice(8 * 4096..9 * 4096).to_vec(),
        "the block after the deallocated range keeps its data"
    );
    let out_of_range = io
        .read(nsid, Lba(VOLUME_BYTES / u64::from(BLOCK)), 1, BLOCK)
        .unwrap_err();
    assert_eq!(status_of(out_of_range), Status::LbaOutOfRange);

    // Host B is not in the ACL: no namespace, and I/O to it is refused.
    let mut b = k.connect(HOST_B);
    assert!(b.active_namespaces().expect("active").is_empty());
    let mut b_io = io_queue(&mut b);
    assert_eq!(
        status_of(b_io.read(nsid, Lba(0), 1, BLOCK).unwrap_err()),
        Status::InvalidNamespace
    );

    // Remove A (and admit B): A gets an event and loses the namespace; B gains it.
    let a_event = arm_aer(&mut a);
    let b_event = arm_aer(&mut b);
    set_acl(&k, &uuid, &[HOST_B]);
    assert_eq!(reap_ns_changed(&mut a, a_event), vec![nsid]);
    assert_eq!(reap_ns_changed(&mut b, b_event), vec![nsid]);
    assert!(
        a.active_namespaces().expect("active").is_empty(),
        "A still lists the namespace"
    );
    assert_eq!(
        status_of(io.read(nsid, Lba(0), 1, BLOCK).unwrap_err()),
        Status::InvalidNamespace
    );
    assert_eq!(b.active_namespaces().expect("active"), vec![nsid]);
    assert_eq!(
        b_io.read(nsid, Lba(0), 1, BLOCK).expect("B reads"),
        pattern(4096, 1).to_vec()
    );

    // Add A back: visible again with its data.
    let a_event = arm_aer(&mut a);
    set_acl(&k, &uuid, &[HOST_A, HOST_B]);
    assert_eq!(reap_ns_changed(&mut a, a_event), vec![nsid]);
    assert_eq!(a.active_namespaces().expect("active"), vec![nsid]);
    for (lba, data) in expected.iter().filter(|(lba, _)| !(64..72).contains(lba)) {
        assert_eq!(
            io.read(nsid, Lba(*lba), 1, BLOCK).expect("read"),
            data.to_vec(),
            "LBA {lba}"
        );
    }

    // Growing the volume over REST raises a namespace notice with the new size.
    let a_event = arm_aer(&mut a);
    let grow = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"size": (2 * VOLUME_BYTES).to_string()}),
    );
    assert_eq!(grow.status, StatusCode::OK, "{}", grow.body);
    assert_eq!(reap_ns_changed(&mut a, a_event), vec![nsid]);
    assert_eq!(
        a.identify_namespace(nsid).expect("identify").size_blocks,
        2 * VOLUME_BYTES / u64::from(BLOCK)
    );
    io.write(
        nsid,
        Lba(2 * VOLUME_BYTES / u64::from(BLOCK) - 1),
        pattern(4096, 9),
        BLOCK,
    )
    .expect("write past the old end");

    // Deleting the volume removes the namespace from every host, with an event.
    let a_event = arm_aer(&mut a);
    assert_eq!(
        k.delete(&format!("/api/v2/volumes/{uuid}")).status,
        StatusCode::OK
    );
    assert_eq!(reap_ns_changed(&mut a, a_event), vec![nsid]);
    k.wait_volume_gone(&uuid);
    assert!(a.active_namespaces().expect("active").is_empty());
    assert!(b.active_namespaces().expect("active").is_empty());
}

fn entry_addr(traddr: &str, trsvcid: &str) -> SocketAddr {
    format!("{traddr}:{trsvcid}")
        .parse()
        .expect("discovery entry address")
}

fn set_ip_acl(k: &Keeld, uuid: &str, values: &[&str]) {
    let a = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"ipAcl": {"values": values}}),
    );
    assert_eq!(a.status, StatusCode::OK, "IP ACL update: {}", a.body);
    let v = k.wait_volume_state(uuid, "Available");
    assert_eq!(v["IPAcl"]["values"], json!(values), "{v}");
}

/// Connects as `host_nqn` from source address `source` (all of 127.0.0.0/8
/// is local, so 127.0.0.2 is a second host address on one machine).
fn connect_from(k: &Keeld, host_nqn: &str, source: &str) -> HostController {
    let mut options = k.host_options(host_nqn);
    options.source = Some(source.parse::<IpAddr>().expect("address"));
    HostController::connect(k.nvme_addr, options)
        .unwrap_or_else(|e| panic!("connect from {source}: {e}\n{}", k.log_tail()))
}

/// Whether the discovery log that `host_nqn` at `source` reads names this
/// node's subsystem.
fn discovered_from(k: &Keeld, host_nqn: &str, source: &str) -> bool {
    let mut options = HostOptions::new(host_nqn, DISCOVERY_NQN);
    options.kato_ms = 0;
    options.source = Some(source.parse::<IpAddr>().expect("address"));
    let mut c = HostController::connect(k.discovery_addr, options).expect("discovery connect");
    c.discovery_log()
        .expect("discovery log")
        .iter()
        .any(|e| e.subnqn == k.subsystem_nqn)
}

#[test]
fn a_volume_ip_acl_admits_only_its_addresses_and_follows_changes_live() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("by-address", VOLUME_BYTES, &[HOST_A]);
    let (uuid, nsid) = (uuid_of(&v), nsid_of(&v));
    assert_eq!(v["IPAcl"]["values"], json!(["ALLOW_ANY"]), "{v}");
    set_ip_acl(&k, &uuid, &["127.0.0.2"]);

    // The right NQN from the wrong address sees nothing and reaches nothing.
    let mut near = connect_from(&k, HOST_A, "127.0.0.1");
    assert!(near.active_namespaces().expect("active").is_empty());
    let mut near_io = io_queue(&mut near);
    assert_eq!(
        status_of(
            near_io
                .write(nsid, Lba(0), pattern(4096, 7), BLOCK)
                .expect_err("a write from outside the IP ACL")
        ),
        Status::InvalidNamespace
    );
    assert!(!discovered_from(&k, HOST_A, "127.0.0.1"));

    // From the listed address it serves I/O and is discovered.
    let mut far = connect_from(&k, HOST_A, "127.0.0.2");
    assert_eq!(far.active_namespaces().expect("active"), vec![nsid]);
    let mut far_io = io_queue(&mut far);
    far_io
        .write(nsid, Lba(0), pattern(4096, 1), BLOCK)
        .expect("write from inside the IP ACL");
    assert!(discovered_from(&k, HOST_A, "127.0.0.2"));

    // Narrowing takes the namespace from the live controller, with a notice.
    let cid = arm_aer(&mut far);
    set_ip_acl(&k, &uuid, &["10.0.0.0/8"]);
    assert_eq!(reap_ns_changed(&mut far, cid), vec![nsid]);
    assert!(far.active_namespaces().expect("active").is_empty());
    assert_eq!(
        status_of(
            far_io
                .read(nsid, Lba(0), 1, BLOCK)
                .expect_err("a read after the address was removed")
        ),
        Status::InvalidNamespace
    );

    // Widening gives it back, here too; the data is intact.
    let cid = arm_aer(&mut near);
    set_ip_acl(&k, &uuid, &["ALLOW_ANY"]);
    assert_eq!(reap_ns_changed(&mut near, cid), vec![nsid]);
    assert_eq!(
        near_io.read(nsid, Lba(0), 1, BLOCK).expect("read"),
        pattern(4096, 1).to_vec()
    );

    // A value that is not an address is the API's error and changes nothing.
    let bad = k.put(
        &format!("/api/v2/volumes/{uuid}"),
        &json!({"ipAcl": {"values": ["example.com"]}}),
    );
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.body);
    assert!(discovered_from(&k, HOST_A, "127.0.0.1"));

    // The list outlives a restart.
    set_ip_acl(&k, &uuid, &["127.0.0.2/32"]);
    drop((near_io, near, far_io, far));
    k.restart();
    let mut near = connect_from(&k, HOST_A, "127.0.0.1");
    assert!(near.active_namespaces().expect("active").is_empty());
    let mut far = connect_from(&k, HOST_A, "127.0.0.2");
    assert_eq!(far.active_namespaces().expect("active"), vec![nsid]);
}

/// The value of the Prometheus sample `name{labels}` in `text`.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name_and_labels) && l[name_and_labels.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{text}"))
}

#[test]
fn metrics_count_each_volumes_io_and_the_apis_answers() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("metered", VOLUME_BYTES, &[HOST_A]);
    let (uuid, nsid) = (uuid_of(&v), nsid_of(&v));
    let mut c = k.connect(HOST_A);
    let mut io = io_queue(&mut c);
    for i in 0..4u64 {
        io.write(nsid, Lba(i), pattern(4096, i), BLOCK)
            .expect("write");
    }
    io.read(nsid, Lba(0), 2, BLOCK).expect("read");
    io.flush(nsid).expect("flush");
    // Refused by the target before it reaches the volume: not the volume's I/O.
    assert!(io.read(nsid, Lba(VOLUME_BYTES / 4096), 1, BLOCK).is_err());
    let _ = k.get("/api/v2/volumes/not-a-uuid");

    let a = k.get("/metrics");
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.headers[reqwest::header::CONTENT_TYPE]
            .to_str()
            .is_ok_and(|t| t.starts_with("text/plain")),
        "{:?}",
        a.headers
    );
    let text = a.body.as_str().expect("a text body").to_owned();
    let volume = format!("{{volume=\"{uuid}\"}}");
    assert_eq!(
        sample(&text, &format!("keel_volume_writes_total{volume}")),
        4.0
    );
    assert_eq!(
        sample(&text, &format!("keel_volume_written_bytes_total{volume}")),
        16384.0
    );
    assert_eq!(
        sample(&text, &format!("keel_volume_reads_total{volume}")),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("keel_volume_read_bytes_total{volume}")),
        8192.0
    );
    assert_eq!(
        sample(&text, &format!("keel_volume_other_commands_total{volume}")),
        1.0
    );
    assert_eq!(
        sample(&text, &format!("keel_volume_errors_total{volume}")),
        0.0
    );
    assert_eq!(
        sample(&text, &format!("keel_volume_queue_depth{volume}")),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("keel_volume_write_latency_seconds_count{volume}")
        ),
        4.0
    );
    assert!(sample(&text, "keel_pool_capacity_bytes") > 0.0);
    assert!(sample(&text, "keel_pool_write_amplification") >= 1.0);
    assert!(sample(&text, "keel_nvme_controllers") >= 1.0);
    assert!(sample(&text, "keel_pool_host_written_bytes_total") >= 16384.0);
    assert!(
        sample(
            &text,
            "keel_api_requests_total{method=\"GET\",status=\"400\"}"
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            "keel_api_requests_total{method=\"POST\",status=\"200\"}"
        ) >= 1.0
    );

    // Cluster admins only: no token, no metrics.
    let anonymous = k.call_as(None, reqwest::Method::GET, "/metrics", None);
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

#[test]
fn discovery_leads_an_acl_host_to_its_namespace_on_both_ports() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("found", VOLUME_BYTES, &[HOST_A]);
    // Through the discovery listener, and through the I/O listener (both serve
    // the discovery NQN), the log names this node's subsystem at the I/O port.
    for port in [k.discovery_addr, k.nvme_addr] {
        let entries = discover(port, HOST_A)
            .unwrap_or_else(|e| panic!("discover on {port}: {e}\n{}", k.log_tail()));
        let ours: Vec<_> = entries
            .iter()
            .filter(|e| e.subnqn == k.subsystem_nqn)
            .collect();
        assert_eq!(ours.len(), 1, "discovery on {port}: {entries:?}");
        let addr = entry_addr(&ours[0].traddr, &ours[0].trsvcid);
        assert_eq!(addr, k.nvme_addr, "the entry points at the I/O listener");
        // Connect where discovery pointed, like `nvme connect-all`.
        let mut c =
            HostController::connect(addr, k.host_options(HOST_A)).expect("connect from discovery");
        assert_eq!(c.active_namespaces().expect("active"), vec![nsid_of(&v)]);
        assert_eq!(
            c.identify_namespace(nsid_of(&v)).expect("identify").nguid,
            uuid_bytes(&uuid_of(&v))
        );
    }
    // A host outside every ACL is not shown the subsystem at all, on either
    // port; connecting directly still works but shows it no namespace.
    for port in [k.discovery_addr, k.nvme_addr] {
        let entries = discover(port, HOST_B).expect("discover as B");
        assert!(
            entries.iter().all(|e| e.subnqn != k.subsystem_nqn),
            "{port}: {entries:?}"
        );
    }
    let mut c = HostController::connect(k.nvme_addr, k.host_options(HOST_B)).expect("connect as B");
    assert!(c.active_namespaces().expect("active").is_empty());
}

#[test]
fn kill9_keeps_acknowledged_writes_flushed_or_not_over_nvme() {
    let mut k = Keeld::start_default();
    k.login();
    let v = k.create_volume("durable", VOLUME_BYTES, &[HOST_A]);
    let (uuid, nsid) = (uuid_of(&v), nsid_of(&v));
    let mut expected: Vec<(u64, Bytes)> = Vec::new();
    {
        let mut c = k.connect(HOST_A);
        let mut io = io_queue(&mut c);
        // 128 random-looking 4 KiB blocks at queue depth 32, then 1 MiB in 128 KiB
        // writes, then a flush.
        let lbas: Vec<u64> = (0..128u64)
            .map(|i| (i * 2654435761) % (VOLUME_BYTES / 4096 - 512))
            .collect();
        for chunk in lbas.chunks(32) {
            for &lba in chunk {
                io.submit_write(nsid, Lba(lba), pattern(4096, lba), BLOCK)
                    .expect("submit");
            }
            for _ in chunk {
                io.queue
                    .wait_any()
                    .expect("completion")
                    .1
                    .success()
                    .expect("write");
            }
        }
        let mut latest = std::collections::BTreeMap::new();
        for &lba in &lbas {
            latest.insert(lba, pattern(4096, lba));
        }
        let tail = VOLUME_BYTES / 4096 - 256;
        for i in 0..8u64 {
            let data = pattern(128 << 10, 7000 + i);
            io.write(nsid, Lba(tail + i * 32), data.clone(), BLOCK)
                .expect("128 KiB write");
            for b in 0..32u64 {
                latest.insert(
                    tail + i * 32 + b,
                    data.slice(b as usize * 4096..(b as usize + 1) * 4096),
                );
            }
        }
        io.flush(nsid).expect("flush");
        // Acknowledged and never flushed: a process kill loses none of them
        // either (a flush guards against power loss, not against kill -9).
        let unflushed = VOLUME_BYTES / 4096 - 512;
        for i in 0..64u64 {
            let data = pattern(4096, 9000 + i);
            io.write(nsid, Lba(unflushed + i * 3), data.clone(), BLOCK)
                .expect("unflushed write");
            latest.insert(unflushed + i * 3, data);
        }
        expected.extend(latest);
    }
    k.kill9();
    k.restart();

    let after = k.wait_volume_state(&uuid, "Available");
    assert_eq!(nsid_of(&after), nsid, "the nsid survives the crash");
    let mut c = k.connect(HOST_A);
    let ok = wait_until(WAIT, || {
        c.active_namespaces().is_ok_and(|l| l == vec![nsid])
    });
    assert!(
        ok,
        "A does not see its namespace after the restart\n{}",
        k.log_tail()
    );
    assert_eq!(
        c.identify_namespace(nsid).expect("identify").nguid,
        uuid_bytes(&uuid)
    );
    let mut io = io_queue(&mut c);
    for (lba, data) in &expected {
        let got = io
            .read(nsid, Lba(*lba), 1, BLOCK)
            .expect("read after restart");
        assert!(
            got == data.to_vec(),
            "LBA {lba} lost acknowledged data across kill -9"
        );
    }
    // Host B is still outside the ACL after the restart.
    let mut b = k.connect(HOST_B);
    assert!(b.active_namespaces().expect("active").is_empty());
}

/// keeld's other data path: epoll reactors handing volume I/O to the device
/// ring threads (no engine ring per reactor), sleeping whenever they wait (no
/// busy polling), serves and keeps data the same way.
#[test]
fn epoll_reactors_without_device_rings_serve_and_keep_data_across_kill9() {
    let mut k = Keeld::start(KeeldOptions {
        extra_args: vec![
            "--reactor-kind".into(),
            "epoll".into(),
            "--no-reactor-device-rings".into(),
            "--busy-poll-us".into(),
            "0".into(),
        ],
        ..KeeldOptions::default()
    });
    assert!(
        k.logged(r#""reactor_kind":"Epoll","device_rings":false"#)
            && k.logged(r#""busy_poll_us":0"#),
        "keeld did not start epoll reactors without device rings\n{}",
        k.log_tail()
    );
    k.login();
    let v = k.create_volume("epoll-path", VOLUME_BYTES, &[HOST_A]);
    let (uuid, nsid) = (uuid_of(&v), nsid_of(&v));
    let lbas: Vec<u64> = (0..64u64)
        .map(|i| (i * 2654435761) % (VOLUME_BYTES / 4096))
        .collect();
    {
        let mut c = k.connect(HOST_A);
        let mut io = io_queue(&mut c);
        for &lba in &lbas {
            io.submit_write(nsid, Lba(lba), pattern(4096, lba + 5), BLOCK)
                .expect("submit");
        }
        for _ in &lbas {
            io.queue
                .wait_any()
                .expect("completion")
                .1
                .success()
                .expect("write");
        }
        io.flush(nsid).expect("flush");
    }
    k.kill9();
    k.restart();
    k.wait_volume_state(&uuid, "Available");
    let mut c = k.connect(HOST_A);
    assert!(
        wait_until(WAIT, || c
            .active_namespaces()
            .is_ok_and(|l| l == vec![nsid])),
        "the namespace did not come back\n{}",
        k.log_tail()
    );
    let mut io = io_queue(&mut c);
    let mut latest = std::collections::BTreeMap::new();
    for &lba in &lbas {
        latest.insert(lba, pattern(4096, lba + 5));
    }
    for (lba, data) in latest {
        let got = io.read(nsid, Lba(lba), 1, BLOCK).expect("read");
        assert!(got == data.to_vec(), "LBA {lba} lost across kill -9");
    }
}

#[test]
fn a_512_byte_sector_volume_is_served_with_512_byte_blocks() {
    let mut k = Keeld::start_default();
    k.login();
    let body = json!({"name": "small-sectors", "size": "64 mib", "sectorSize": 512, "acl": {"values": [HOST_A]}});
    let a = k.post("/api/v2/volumes", &body);
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["sectorSize"], 512);
    let v = k.wait_volume_state(&uuid_of(&a.body), "Available");
    let nsid = nsid_of(&v);
    let mut c = k.connect(HOST_A);
    let ns = c.identify_namespace(nsid).expect("identify");
    assert_eq!((ns.block_shift, ns.size_blocks), (9, (64 << 20) / 512));
    let mut io = io_queue(&mut c);
    // Odd, unaligned-to-4-KiB extents of 512-byte blocks round-trip.
    for (lba, blocks, seed) in [(1u64, 1u32, 1u64), (7, 3, 2), (4093, 9, 3), (131_071, 1, 4)] {
        let data = pattern(blocks as usize * 512, seed);
        io.write(nsid, Lba(lba), data.clone(), 512).expect("write");
        assert_eq!(
            io.read(nsid, Lba(lba), blocks, 512).expect("read"),
            data.to_vec(),
            "LBA {lba}"
        );
    }
    let past_end = io.read(nsid, Lba(131_072), 1, 512).unwrap_err();
    assert_eq!(status_of(past_end), Status::LbaOutOfRange);
}

#[test]
fn deleting_a_volume_under_queued_io_completes_every_command_and_keeps_keeld_serving() {
    let mut k = Keeld::start_default();
    k.login();
    let doomed = k.create_volume("doomed", VOLUME_BYTES, &[HOST_A]);
    let other = k.create_volume("other", VOLUME_BYTES, &[HOST_A]);
    let (doomed_nsid, other_nsid) = (nsid_of(&doomed), nsid_of(&other));
    let mut c = k.connect(HOST_A);
    let mut io = io_queue(&mut c);
    // 64 writes of 128 KiB in flight while the volume is deleted over REST.
    for i in 0..64u64 {
        io.submit_write(doomed_nsid, Lba(i * 32), pattern(128 << 10, i), BLOCK)
            .expect("submit");
    }
    let del = k.delete(&format!("/api/v2/volumes/{}", uuid_of(&doomed)));
    assert_eq!(del.status, StatusCode::OK, "{}", del.body);
    let mut failed = 0;
    for _ in 0..64 {
        let (_, response) = io.queue.wait_any().expect("every queued command completes");
        if response.success().is_err() {
            failed += 1;
        }
    }
    k.wait_volume_gone(&uuid_of(&doomed));
    // Later I/O to the deleted namespace is refused; the other volume serves on.
    assert_eq!(
        status_of(io.read(doomed_nsid, Lba(0), 1, BLOCK).unwrap_err()),
        Status::InvalidNamespace
    );
    io.write(other_nsid, Lba(5), pattern(4096, 5), BLOCK)
        .expect("write to the other volume");
    assert_eq!(
        io.read(other_nsid, Lba(5), 1, BLOCK).expect("read"),
        pattern(4096, 5).to_vec()
    );
    assert_eq!(c.active_namespaces().expect("active"), vec![other_nsid]);
    k.assert_alive("serving after the delete");
    eprintln!(
        "{failed} of 64 in-flight writes failed after the delete (either outcome is allowed)"
    );
}
