//! Protocol tests: the real target over loopback, driven by this crate's host side.
//! Every test that starts a target runs once per reactor backend (`epoll::*` and
//! `uring::*`, generated at the bottom of this file).

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use nvmf_target::connection::Limits;
use nvmf_target::host::{discover, HostController, HostError, HostOptions, OwnedPdu, Queue};
use nvmf_target::nvme::fabrics::{fctype, property, CC_ENABLE, CSTS_FATAL, CSTS_READY};
use nvmf_target::nvme::identify::{
    nidt, ControllerType, OAES_DISCOVERY_CHANGE, OAES_NS_ATTRIBUTE, SGLS_OFFSET,
};
use nvmf_target::nvme::{admin_opcode, feature, io_opcode, log_id, Command, DISCOVERY_NQN};
use nvmf_target::pdu::{CapsuleCmd, Digests, FatalErrorStatus, PduType};
use nvmf_target::{
    BlockSize, HostAcl, Lba, LbaRange, MemoryNamespace, NamespaceBackend, ReactorKind, Status,
};

use common::{
    encode_h2c, pattern, rw_command, send_command, status_of, wait_until, Fixture, HOST_A, HOST_B,
    NQN,
};

fn identify_reports_every_field_linux_checks(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    let id = &c.identity;
    assert_eq!(id.cntlid, c.cntlid);
    assert_ne!(id.kas, 0);
    assert!(id.ioccsz >= 4 && id.iorcsz >= 1);
    assert_eq!(id.ioccsz, (64 + 8192) / 16);
    assert_ne!(id.maxcmd, 0);
    assert_eq!(id.icdoff, 0);
    assert_eq!(id.sgls & 0x3, 1);
    assert_ne!(id.sgls & SGLS_OFFSET, 0);
    assert!(id.msdbd >= 1);
    assert_eq!(id.subnqn, NQN);
    assert_eq!(id.cmic & 0x2, 0x2);
    assert_eq!(id.oncs & 0xC, 0xC);
    assert!(id.volatile_write_cache);
    assert_eq!(id.oaes & OAES_NS_ATTRIBUTE, OAES_NS_ATTRIBUTE);
    assert_eq!(id.controller_type, ControllerType::Io);
    assert!(id.version >= 0x0001_0300);
    assert_eq!(c.active_namespaces().unwrap(), vec![1]);
    let ns = c.identify_namespace(1).unwrap();
    assert_eq!(
        (ns.size_blocks, ns.block_shift, ns.nguid),
        (4096, 9, [0xA1; 16])
    );
    let descs = c.namespace_descriptors(1).unwrap();
    assert!(descs.contains(&(nidt::NGUID, vec![0xA1; 16])));
    assert!(descs.contains(&(nidt::UUID, vec![0xA1; 16])));
    // Command-set specific structures Linux asks for: the NVM command set's
    // (CSI 0) answer with zeroed data; another command set has no controller
    // or namespace structure here.
    let mut identify_cs = |cns: u8, nsid: u32, csi: u8| {
        let mut cmd = Command::new(admin_opcode::IDENTIFY, 0);
        cmd.set_nsid(nsid);
        cmd.set_cdw(10, u32::from(cns));
        cmd.set_cdw(11, u32::from(csi) << 24);
        let r = c.admin.execute(cmd, None, 4096).unwrap();
        (r.status().unwrap(), r.data)
    };
    assert_eq!(identify_cs(0x06, 0, 0), (Status::Success, vec![0; 4096]));
    assert_eq!(identify_cs(0x05, 1, 0), (Status::Success, vec![0; 4096]));
    assert_eq!(identify_cs(0x05, 1, 2).0, Status::InvalidField);
    assert_eq!(identify_cs(0x05, 9, 0).0, Status::InvalidNamespace);
    let (status, active) = identify_cs(0x07, 0, 0);
    assert_eq!(
        (status, &active[..8]),
        (Status::Success, &[1, 0, 0, 0, 0, 0, 0, 0][..])
    );
    // No namespace uses another command set.
    assert_eq!(identify_cs(0x07, 0, 2), (Status::Success, vec![0; 4096]));
    // The command-set independent namespace structure: NMIC says shared
    // (several controllers may attach), NSTAT says ready.
    let (status, independent) = identify_cs(0x08, 1, 0);
    assert_eq!(
        (status, independent[1], independent[14]),
        (Status::Success, 1, 1)
    );
    assert_eq!(identify_cs(0x08, 9, 0).0, Status::InvalidNamespace);
    // Inactive namespaces identify as zeroes; NSID 0 is invalid.
    assert_eq!(c.identify_namespace(7).unwrap().size_blocks, 0);
    assert_eq!(
        status_of(c.identify_namespace(0).unwrap_err()),
        Status::InvalidNamespace
    );
    assert_eq!(
        status_of(c.identify(0x1F, 0).unwrap_err()),
        Status::InvalidField
    );
}

fn properties_follow_enable_and_shutdown_handshakes(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    let cap = c.property_get(0x00, true).unwrap();
    assert_eq!(cap & 0xFFFF, 127);
    assert_ne!(cap & (1 << 37), 0);
    assert_eq!(c.property_get(0x08, false).unwrap(), 0x0001_0300);
    assert_eq!(c.property_get(0x1C, false).unwrap() & 1, 1);
    c.shutdown().unwrap();
}

fn an_enable_with_unsupported_queue_entry_sizes_reports_controller_fatal_status(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    c.property_set(property::CC, 0).unwrap();
    assert_eq!(
        c.property_get(property::CSTS, false).unwrap() as u32 & CSTS_READY,
        0
    );
    // IOSQES 5 (32-byte submission entries): an NVMe/TCP I/O controller's
    // entries are 64 bytes.
    c.property_set(property::CC, CC_ENABLE | (5 << 16) | (4 << 20))
        .unwrap();
    let csts = c.property_get(property::CSTS, false).unwrap() as u32;
    assert_eq!((csts & CSTS_FATAL, csts & CSTS_READY), (CSTS_FATAL, 0));
}

fn more_event_requests_than_aerl_allows_are_refused(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8).unwrap();
    let allowed = usize::from(c.identity.aerl) + 1;
    let held: Vec<u16> = (0..allowed).map(|_| c.submit_aer().unwrap()).collect();
    let over = c.submit_aer().unwrap();
    let refused = c.admin.wait(over).unwrap();
    assert_eq!(refused.status(), Ok(Status::AerLimitExceeded));
    // The held requests still answer an event.
    f.subsystem
        .add_namespace(
            2,
            MemoryNamespace::new(BlockSize::B512, 8, [0xF6; 16]),
            HostAcl::AnyHost,
        )
        .unwrap();
    let (cid, event) = c.admin.wait_any().unwrap();
    assert!(held.contains(&cid));
    assert_eq!(event.success().unwrap().completion.dw0(), 0x0004_0002);
}

/// SPDK's initiator, at teardown, gives up its outstanding Asynchronous Event
/// Requests on its own side and reuses one of their command ids for a
/// Property Get: the target retires that AER and answers the new command
/// instead of terminating the connection.
fn a_command_reusing_a_held_aers_id_retires_the_aer_and_runs(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8).unwrap();
    let retired = c.submit_aer().unwrap();
    let kept = c.submit_aer().unwrap();
    let mut get = Command::new(admin_opcode::FABRICS, retired);
    get.0[4] = fctype::PROPERTY_GET;
    get.0[44..48].copy_from_slice(&property::CSTS.to_le_bytes());
    send_command(&mut c.admin, get, Digests::default());
    let OwnedPdu::CapsuleResp(cqe) = c.admin.next_raw_pdu().unwrap() else {
        panic!("expected the Property Get's answer");
    };
    let cqe = nvmf_target::nvme::Completion::decode(&cqe);
    assert_eq!((cqe.cid, cqe.status()), (retired, Ok(Status::Success)));
    assert_eq!(cqe.dw0() & CSTS_READY, CSTS_READY);
    // An event now completes the AER still held, never the retired one.
    f.subsystem
        .add_namespace(
            2,
            MemoryNamespace::new(BlockSize::B512, 8, [0xF7; 16]),
            HostAcl::AnyHost,
        )
        .unwrap();
    let OwnedPdu::CapsuleResp(cqe) = c.admin.next_raw_pdu().unwrap() else {
        panic!("expected the held AER's completion");
    };
    let cqe = nvmf_target::nvme::Completion::decode(&cqe);
    assert_eq!((cqe.cid, cqe.dw0()), (kept, 0x0004_0002));
    c.keep_alive().unwrap();
}

fn io_round_trips_in_capsule_and_via_r2t_with_and_without_digests(kind: ReactorKind) {
    for digests in [
        Digests {
            header: false,
            data: false,
        },
        Digests {
            header: true,
            data: false,
        },
        Digests {
            header: false,
            data: true,
        },
        Digests {
            header: true,
            data: true,
        },
    ] {
        let f = Fixture::with_limits(
            kind,
            Limits {
                maxh2cdata: 16 * 1024,
                ..Limits::default()
            },
        );
        let mut options = f.options(HOST_A);
        options.digests = digests;
        let mut c = HostController::connect(f.addr(), options).unwrap();
        assert_eq!(c.set_queue_count(2).unwrap(), 2);
        let mut q = c.connect_io_queue(1).unwrap();
        // In-capsule (4 KiB) and R2T-driven (64 KiB, four R2Ts of 16 KiB).
        let small = pattern(4096, 1);
        q.write(1, Lba(8), small.clone(), 512).unwrap();
        assert_eq!(q.read(1, Lba(8), 8, 512).unwrap(), small);
        let big = pattern(64 * 1024, 2);
        q.write(1, Lba(100), big.clone(), 512).unwrap();
        assert_eq!(q.read(1, Lba(100), 128, 512).unwrap(), big);
        assert_eq!(f.ns1.snapshot_blocks(Lba(100), 128).unwrap(), big.to_vec());
        q.flush(1).unwrap();
        assert!(f.ns1.flush_count() >= 1);
    }
}

fn many_writes_in_flight_with_several_outstanding_r2ts(kind: ReactorKind) {
    let f = Fixture::with_limits(
        kind,
        Limits {
            maxh2cdata: 8192,
            inline_data_max: 0,
            ..Limits::default()
        },
    );
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    let mut expected = Vec::new();
    let mut cids = Vec::new();
    for i in 0..128u32 {
        let data = pattern(16 * 1024, i as u8);
        cids.push(
            q.submit_write(1, Lba(u64::from(i) * 32), data.clone(), 512)
                .unwrap(),
        );
        expected.push(data);
    }
    for _ in 0..cids.len() {
        let (_, r) = q.queue.wait_any().unwrap();
        assert_eq!(r.status(), Ok(Status::Success));
    }
    let mut reads = Vec::new();
    for i in 0..128u32 {
        reads.push((
            q.submit_read(1, Lba(u64::from(i) * 32), 32, 512).unwrap(),
            i,
        ));
    }
    for (cid, i) in reads {
        assert_eq!(
            q.queue.wait(cid).unwrap().data,
            expected[i as usize].to_vec()
        );
    }
}

fn c2h_success_flag_is_used_only_when_sq_flow_control_is_disabled(kind: ReactorKind) {
    let f = Fixture::new(kind);
    for disable in [false, true] {
        let mut options = f.options(HOST_A);
        options.disable_sq_flow = disable;
        let mut c = HostController::connect(f.addr(), options).unwrap();
        c.set_queue_count(1).unwrap();
        let mut q = c.connect_io_queue(1).unwrap();
        let mut cmd = Command::new(io_opcode::READ, 9);
        cmd.set_nsid(1);
        cmd.set_sgl(0, 512, nvmf_target::nvme::SGL_TYPE_TRANSPORT);
        let mut bytes = Vec::new();
        CapsuleCmd {
            sqe: cmd.0,
            data: &[],
        }
        .encode(Digests::default(), &mut bytes);
        q.queue.send_raw(&bytes).unwrap();
        match q.queue.next_raw_pdu().unwrap() {
            OwnedPdu::C2HData {
                last,
                success,
                data,
                ..
            } => {
                assert!(last);
                assert_eq!(success, disable);
                assert_eq!(data.len(), 512);
            }
            other => panic!("expected C2HData, got {other:?}"),
        }
        if !disable {
            assert!(matches!(
                q.queue.next_raw_pdu().unwrap(),
                OwnedPdu::CapsuleResp(_)
            ));
        }
    }
}

fn io_errors_map_to_nvme_statuses(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    assert_eq!(
        status_of(q.read(1, Lba(4095), 2, 512).unwrap_err()),
        Status::LbaOutOfRange
    );
    assert_eq!(
        status_of(q.write(1, Lba(4090), pattern(8192, 0), 512).unwrap_err()),
        Status::LbaOutOfRange
    );
    assert_eq!(
        status_of(q.write_zeroes(1, Lba(u64::MAX), 1).unwrap_err()),
        Status::LbaOutOfRange
    );
    assert_eq!(
        status_of(q.read(9, Lba(0), 1, 512).unwrap_err()),
        Status::InvalidNamespace
    );
    let r = q.queue.execute(Command::new(0x7E, 0), None, 0).unwrap();
    assert_eq!(r.status(), Ok(Status::InvalidOpcode));
    f.ns1.inject_media_error(Lba(50));
    assert_eq!(
        status_of(q.read(1, Lba(48), 4, 512).unwrap_err()),
        Status::UnrecoveredReadError
    );
    f.ns1.set_no_space(true);
    assert_eq!(
        status_of(q.write(1, Lba(0), pattern(512, 0), 512).unwrap_err()),
        Status::CapacityExceeded
    );
    f.ns1.set_no_space(false);
    // Too large for the transfer size limit.
    let mut cmd = Command::new(io_opcode::READ, 0);
    cmd.set_nsid(1);
    cmd.set_cdw(12, 65535);
    let r = q.queue.execute(cmd, None, 32 * 1024 * 1024).unwrap();
    assert_eq!(r.status(), Ok(Status::SglLengthInvalid));
}

fn error_log_records_failed_commands_newest_first(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    assert_eq!(c.identity.elpe, 63);
    assert!(c.error_log().unwrap().is_empty());
    c.set_queue_count(1).unwrap();
    let mut q = c.connect_io_queue(1).unwrap();

    // 1: an out-of-range read on the I/O queue.
    let cid_range = q.submit_read(1, Lba(4095), 2, 512).unwrap();
    let r = q.queue.wait(cid_range).unwrap();
    assert_eq!(r.status(), Ok(Status::LbaOutOfRange));
    assert!(r.completion.more(), "the More bit points at the error log");
    // 2: a media error inside a longer read reports the failing block.
    f.ns1.inject_media_error(Lba(50));
    let cid_media = q.submit_read(1, Lba(48), 4, 512).unwrap();
    let r = q.queue.wait(cid_media).unwrap();
    assert_eq!(r.status(), Ok(Status::UnrecoveredReadError));
    // 3: an unknown admin opcode.
    let r = c.admin.execute(Command::new(0x55, 0), None, 0).unwrap();
    assert_eq!(r.status(), Ok(Status::InvalidOpcode));
    let cid_admin = r.completion.cid;
    // Successful commands are not errors and carry no More bit.
    let ok = q.submit_read(1, Lba(0), 1, 512).unwrap();
    assert!(!q.queue.wait(ok).unwrap().completion.more());

    let log = c.error_log().unwrap();
    assert_eq!(log.len(), 3);
    let counts: Vec<u64> = log.iter().map(|e| e.error_count).collect();
    assert_eq!(counts, vec![3, 2, 1]);
    let admin = &log[0];
    assert_eq!((admin.sqid, admin.cid), (0, cid_admin));
    assert_eq!(
        Status::from_field(admin.status_field),
        Ok(Status::InvalidOpcode)
    );
    assert_eq!(admin.parameter_error_location, 0);
    let media = &log[1];
    assert_eq!((media.sqid, media.cid, media.nsid), (1, cid_media, 1));
    assert_eq!(
        Status::from_field(media.status_field),
        Ok(Status::UnrecoveredReadError)
    );
    assert_eq!(media.lba, 50);
    assert_eq!(media.parameter_error_location, 0xFFFF);
    let range = &log[2];
    assert_eq!((range.sqid, range.cid, range.nsid), (1, cid_range, 1));
    assert_eq!(
        Status::from_field(range.status_field),
        Ok(Status::LbaOutOfRange)
    );
    assert_eq!(range.lba, 4095);
    assert_eq!(range.parameter_error_location, 40);
    assert!(log.iter().all(|e| e.trtype == 3));

    // The SMART log counts every entry ever recorded (the Get Log Page of the
    // error log itself succeeded and added none).
    let smart = c.get_log_page(log_id::SMART, 0, 512, false).unwrap();
    assert_eq!(&smart[176..184], &3u64.to_le_bytes());

    // The ring is bounded: after many more errors it holds the newest 64.
    for _ in 0..70 {
        let cid = q.submit_read(9, Lba(0), 1, 512).unwrap();
        assert_eq!(
            q.queue.wait(cid).unwrap().status(),
            Ok(Status::InvalidNamespace)
        );
    }
    let log = c.error_log().unwrap();
    assert_eq!(log.len(), 64);
    assert_eq!(log[0].error_count, 73);
    assert_eq!(log[63].error_count, 10);
    assert!(log
        .iter()
        .all(|e| e.nsid == 9 && e.parameter_error_location == 4));
    // Another controller has a log of its own.
    let mut other = f.connect(HOST_B);
    assert!(other.error_log().unwrap().is_empty());
}

fn write_zeroes_and_deallocate_clear_blocks(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    q.write(1, Lba(0), pattern(8192, 5), 512).unwrap();
    q.write_zeroes(1, Lba(0), 2).unwrap();
    assert_eq!(q.read(1, Lba(0), 2, 512).unwrap(), vec![0; 1024]);
    q.deallocate(
        1,
        &[
            LbaRange {
                start: Lba(4),
                blocks: 4,
            },
            LbaRange {
                start: Lba(10),
                blocks: 2,
            },
        ],
    )
    .unwrap();
    let data = q.read(1, Lba(0), 16, 512).unwrap();
    assert_eq!(&data[4 * 512..8 * 512], &[0u8; 2048][..]);
    assert_eq!(&data[2 * 512..4 * 512], &pattern(8192, 5)[2 * 512..4 * 512]);
    assert_eq!(&data[10 * 512..12 * 512], &[0u8; 1024][..]);
    assert_eq!(
        status_of(
            q.deallocate(
                1,
                &[LbaRange {
                    start: Lba(4095),
                    blocks: 2
                }]
            )
            .unwrap_err()
        ),
        Status::LbaOutOfRange
    );
}

fn connect_rejects_bad_hosts_subsystems_and_controller_ids(kind: ReactorKind) {
    let f = Fixture::new(kind);
    f.subsystem.set_host_acl(HostAcl::hosts([HOST_A]));
    let err = HostController::connect(f.addr(), f.options(HOST_B))
        .err()
        .unwrap();
    assert_eq!(status_of(err), Status::ConnectInvalidHost);
    let mut o = f.options(HOST_A);
    o.subsys_nqn = "nqn.2024-01.io.keel:nope".into();
    match HostController::connect(f.addr(), o).err().unwrap() {
        HostError::Status { status_field, dw0 } => {
            assert_eq!(
                Status::from_field(status_field),
                Ok(Status::ConnectInvalidParameters)
            );
            assert_eq!(dw0, 0x1_0100, "IATTR=data, IPO=subnqn");
        }
        other => panic!("{other:?}"),
    }
    // An I/O queue Connect naming a controller that does not exist.
    let mut c = f.connect(HOST_A);
    c.cntlid = c.cntlid.wrapping_add(100);
    match c.connect_io_queue(1).err().unwrap() {
        HostError::Status { dw0, .. } => assert_eq!(dw0, 0x1_0010, "IPO=cntlid"),
        other => panic!("{other:?}"),
    }
}

/// Connect data whose HOSTNQN or SUBNQN is empty, fills its 256 bytes with
/// no NUL, or lacks the `nqn.` prefix is refused with Connect Invalid
/// Parameters, IATTR (bit 16) set and IPO the field's offset in the data,
/// even where any host is allowed.
fn connect_refuses_malformed_nqns(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let unterminated = format!("nqn.{}", "a".repeat(252));
    assert_eq!(unterminated.len(), 256);
    for (host, subsystem, dw0) in [
        ("", NQN, 0x1_0200),
        (unterminated.as_str(), NQN, 0x1_0200),
        ("host-a", NQN, 0x1_0200),
        (HOST_A, "", 0x1_0100),
        (HOST_A, "io.keel:protocol-test", 0x1_0100),
    ] {
        let mut o = f.options(host);
        o.subsys_nqn = subsystem.into();
        match HostController::connect(f.addr(), o).err() {
            Some(HostError::Status {
                status_field,
                dw0: got,
            }) => {
                assert_eq!(
                    Status::from_field(status_field),
                    Ok(Status::ConnectInvalidParameters),
                    "host {host:?}, subsystem {subsystem:?}"
                );
                assert_eq!(got, dw0, "host {host:?}, subsystem {subsystem:?}");
            }
            other => panic!("host {host:?}, subsystem {subsystem:?}: {other:?}"),
        }
    }
    assert_eq!(f.subsystem.controller_count(), 0);
    // The UUID form is an NQN like any other.
    f.connect(HOST_A);
}

fn controller_ids_are_unique_and_freed_on_disconnect(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let a = f.connect(HOST_A);
    let b = f.connect(HOST_A);
    assert_ne!(a.cntlid, b.cntlid);
    assert_eq!(f.subsystem.controller_count(), 2);
    drop(a);
    drop(b);
    wait_until("controllers to be torn down", || {
        f.subsystem.controller_count() == 0
    });
}

fn acl_filters_namespaces_and_changes_raise_an_aen(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let ns2 = MemoryNamespace::new(BlockSize::B4096, 256, [0xB2; 16]);
    f.subsystem
        .add_namespace(2, ns2.clone(), HostAcl::hosts([HOST_A]))
        .unwrap();
    let mut a = f.connect(HOST_A);
    let mut b = f.connect(HOST_B);
    assert_eq!(a.active_namespaces().unwrap(), vec![1, 2]);
    assert_eq!(b.active_namespaces().unwrap(), vec![1]);
    b.set_queue_count(1).unwrap();
    let mut qb = b.connect_io_queue(1).unwrap();
    assert_eq!(
        status_of(qb.read(2, Lba(0), 1, 4096).unwrap_err()),
        Status::InvalidNamespace
    );

    b.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8).unwrap();
    let aer = b.submit_aer().unwrap();
    f.subsystem.set_namespace_acl(2, HostAcl::AnyHost).unwrap();
    let event = b.admin.wait(aer).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), 0x0004_0002);
    let log = b
        .get_log_page(log_id::CHANGED_NS_LIST, 0, 4096, false)
        .unwrap();
    assert_eq!(&log[0..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(b.active_namespaces().unwrap(), vec![1, 2]);
    qb.write(2, Lba(1), pattern(4096, 9), 4096).unwrap();
    assert_eq!(
        ns2.snapshot_blocks(Lba(1), 1).unwrap(),
        pattern(4096, 9).to_vec()
    );

    // A namespace added while connected appears through another event.
    let aer = b.submit_aer().unwrap();
    let ns3 = MemoryNamespace::new(BlockSize::B512, 64, [0xC3; 16]);
    f.subsystem.add_namespace(3, ns3, HostAcl::AnyHost).unwrap();
    assert_eq!(b.admin.wait(aer).unwrap().completion.dw0(), 0x0004_0002);
    assert_eq!(b.active_namespaces().unwrap(), vec![1, 2, 3]);
}

fn keep_alive_expiry_tears_the_controller_down(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut o = f.options(HOST_A);
    o.kato_ms = 300;
    let mut c = HostController::connect(f.addr(), o).unwrap();
    c.keep_alive().unwrap();
    assert_eq!(c.get_features(feature::KEEP_ALIVE_TIMER).unwrap(), 300);
    c.set_queue_count(1).unwrap();
    let mut q = c.connect_io_queue(1).unwrap();
    wait_until("keep-alive expiry", || f.subsystem.controller_count() == 0);
    assert!(matches!(
        q.read(1, Lba(0), 1, 512),
        Err(HostError::Closed) | Err(HostError::Io(_))
    ));
}

fn features_and_log_pages_answer(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    assert_eq!(c.set_queue_count(1000).unwrap(), 64);
    assert_eq!(c.get_features(feature::VOLATILE_WRITE_CACHE).unwrap(), 1);
    let smart = c.get_log_page(log_id::SMART, 0, 512, false).unwrap();
    assert_eq!(smart[3], 100);
    let fw = c
        .get_log_page(log_id::FIRMWARE_SLOT, 0, 512, false)
        .unwrap();
    assert_eq!(fw[0], 1);
    c.get_log_page(log_id::ERROR, 0, 64, false).unwrap();
    assert_eq!(
        status_of(c.get_log_page(0x55, 0, 512, false).unwrap_err()),
        Status::InvalidLogPage
    );
    assert_eq!(
        status_of(c.get_features(0x42).unwrap_err()),
        Status::InvalidField
    );
    let abort = c
        .admin
        .execute(Command::new(admin_opcode::ABORT, 0), None, 0)
        .unwrap();
    assert_eq!(
        (abort.status(), abort.completion.dw0()),
        (Ok(Status::Success), 1)
    );
    // Authentication is not configured.
    let mut auth = Command::new(admin_opcode::FABRICS, 0);
    auth.0[4] = 0x05;
    assert_eq!(
        c.admin.execute(auth, None, 0).unwrap().status(),
        Ok(Status::InvalidOpcode)
    );
    // Write cache disabled: writes are flushed before they complete.
    c.set_features(feature::VOLATILE_WRITE_CACHE, 0).unwrap();
    let mut q = c.connect_io_queue(1).unwrap();
    let before = f.ns1.flush_count();
    q.write(1, Lba(0), pattern(512, 1), 512).unwrap();
    assert_eq!(f.ns1.flush_count(), before + 1);
}

fn discovery_log_lists_the_subsystem_for_allowed_hosts_only(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let disc = f.target.discovery_addrs()[0];
    let entries = discover(disc, HOST_A).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].subnqn, NQN);
    assert_eq!(entries[0].traddr, "127.0.0.1");
    assert_eq!(entries[0].trsvcid, f.addr().port().to_string());
    assert_eq!(entries[0].cntlid, 0xFFFF);
    // Discovery also works on the I/O port.
    assert_eq!(discover(f.addr(), HOST_A).unwrap(), entries);
    f.subsystem.set_host_acl(HostAcl::hosts([HOST_A]));
    assert!(discover(disc, HOST_B).unwrap().is_empty());
    let mut o = HostOptions::new(HOST_A, DISCOVERY_NQN);
    o.kato_ms = 0;
    let c = HostController::connect(disc, o).unwrap();
    assert_eq!(c.identity.controller_type, ControllerType::Discovery);
    // The discovery port serves no NVM subsystem.
    assert!(HostController::connect(disc, f.options(HOST_A)).is_err());
}

/// A persistent discovery connection (non-zero KATO, discovery notices enabled).
fn discovery_controller(addr: SocketAddr, host: &str) -> HostController {
    let mut o = HostOptions::new(host, DISCOVERY_NQN);
    o.kato_ms = 5000;
    o.timeout = Duration::from_secs(5);
    let mut c = HostController::connect(addr, o).unwrap();
    assert_ne!(c.identity.oaes & OAES_DISCOVERY_CHANGE, 0);
    c.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 31)
        .unwrap();
    c
}

/// DW0 of a discovery-log-change notice: type Notice, info F0h, log page 70h.
const AEN_DISCOVERY_LOG_CHANGED: u32 = 0x0070_F002;

fn discovery_shows_the_subsystem_only_to_hosts_a_namespace_acl_admits_and_changes_live(
    kind: ReactorKind,
) {
    let f = Fixture::new(kind);
    f.subsystem
        .set_namespace_acl(1, HostAcl::hosts([HOST_A]))
        .unwrap();
    let disc = f.target.discovery_addrs()[0];
    // A host in a namespace ACL sees the record; a host in none sees no record,
    // although the subsystem itself admits any host.
    let entries = discover(disc, HOST_A).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].subnqn, NQN);
    assert!(discover(disc, HOST_B).unwrap().is_empty());
    assert!(discover(f.addr(), HOST_B).unwrap().is_empty());
    // Connect itself stays allowed: B gets a controller with no namespace.
    let mut b_io = f.connect(HOST_B);
    assert!(b_io.active_namespaces().unwrap().is_empty());

    // Live: B's persistent discovery controller is told when the record appears.
    let mut b = discovery_controller(disc, HOST_B);
    assert!(b.discovery_log().unwrap().is_empty());
    b_io.set_features(feature::ASYNC_EVENT_CONFIG, 1 << 8)
        .unwrap();
    let ns_event = b_io.submit_aer().unwrap();
    let disc_event = b.submit_aer().unwrap();
    f.subsystem
        .set_namespace_acl(1, HostAcl::hosts([HOST_A, HOST_B]))
        .unwrap();
    let event = b.admin.wait(disc_event).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), AEN_DISCOVERY_LOG_CHANGED);
    let entries = b.discovery_log().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].subnqn, NQN);
    assert_eq!(entries[0].trsvcid, f.addr().port().to_string());
    // The already-connected I/O controller sees the namespace arrive.
    let event = b_io.admin.wait(ns_event).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), 0x0004_0002);
    assert_eq!(b_io.active_namespaces().unwrap(), vec![1]);

    // And the record goes away again when the ACL drops B.
    let disc_event = b.submit_aer().unwrap();
    f.subsystem
        .set_namespace_acl(1, HostAcl::hosts([HOST_A]))
        .unwrap();
    let event = b.admin.wait(disc_event).unwrap().success().unwrap();
    assert_eq!(event.completion.dw0(), AEN_DISCOVERY_LOG_CHANGED);
    assert!(b.discovery_log().unwrap().is_empty());
    assert_eq!(discover(disc, HOST_A).unwrap().len(), 1);
}

fn malformed_pdu_terminates_only_its_own_connection(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut good = f.connect(HOST_A);
    good.set_queue_count(2).unwrap();
    let mut good_q = good.connect_io_queue(1).unwrap();
    let mut bad = Queue::open(
        f.addr(),
        None,
        Digests::default(),
        0,
        Duration::from_secs(5),
    )
    .unwrap();
    // A PDU with an undefined type.
    bad.send_raw(&[0x0F, 0, 24, 0, 24, 0, 0, 0]).unwrap();
    match bad.next_raw_pdu().unwrap() {
        OwnedPdu::Term { fes, .. } => assert_eq!(fes, FatalErrorStatus::InvalidHeaderField as u16),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        bad.next_raw_pdu(),
        Err(HostError::Closed) | Err(HostError::Io(_))
    ));
    // An oversized PLEN.
    let mut bad2 = Queue::open(
        f.addr(),
        None,
        Digests::default(),
        0,
        Duration::from_secs(5),
    )
    .unwrap();
    let mut pdu = vec![PduType::H2CData as u8, 0, 24, 24];
    pdu.extend_from_slice(&(1u32 << 30).to_le_bytes());
    bad2.send_raw(&pdu).unwrap();
    assert!(matches!(
        bad2.next_raw_pdu().unwrap(),
        OwnedPdu::Term { fes: 5, .. }
    ));
    // H2CData that no R2T asked for, on a connected I/O queue.
    let mut bad_q = good.connect_io_queue(2).unwrap();
    let h2c = encode_h2c(3, 3, 0, true, &[0; 512], Digests::default());
    bad_q.queue.send_raw(&h2c).unwrap();
    assert!(matches!(
        bad_q.queue.next_raw_pdu().unwrap(),
        OwnedPdu::Term { fes: 2, .. }
    ));
    // The well-behaved queue keeps working.
    let data = pattern(16 * 1024, 3);
    good_q.write(1, Lba(0), data.clone(), 512).unwrap();
    assert_eq!(good_q.read(1, Lba(0), 32, 512).unwrap(), data);
}

fn h2c_data_outside_the_r2t_window_terminates(kind: ReactorKind) {
    let f = Fixture::r2t_only(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    let write = rw_command(io_opcode::WRITE, 5, 1, Lba(0), 2);
    send_command(&mut q.queue, write, Digests::default());
    let OwnedPdu::R2T {
        command_id,
        ttag,
        offset,
        length,
    } = q.queue.next_raw_pdu().unwrap()
    else {
        panic!("expected R2T")
    };
    assert_eq!((command_id, offset, length), (5, 0, 1024));
    let h2c = encode_h2c(5, ttag, 512, true, &[0; 512], Digests::default());
    q.queue.send_raw(&h2c).unwrap();
    assert!(matches!(
        q.queue.next_raw_pdu().unwrap(),
        OwnedPdu::Term { fes: 4, .. }
    ));
}

fn data_digest_error_fails_the_command_not_the_connection(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut o = f.options(HOST_A);
    o.digests = Digests {
        header: true,
        data: true,
    };
    let mut c = HostController::connect(f.addr(), o).unwrap();
    c.set_queue_count(1).unwrap();
    let mut q = c.connect_io_queue(1).unwrap();
    let mut cmd = Command::new(io_opcode::WRITE, 6);
    cmd.set_nsid(1);
    cmd.set_sgl(0, 512, nvmf_target::nvme::SGL_TYPE_IN_CAPSULE);
    let mut bytes = Vec::new();
    CapsuleCmd {
        sqe: cmd.0,
        data: &[7; 512],
    }
    .encode(
        Digests {
            header: true,
            data: true,
        },
        &mut bytes,
    );
    let n = bytes.len();
    bytes[n - 1] ^= 0xFF;
    q.queue.send_raw(&bytes).unwrap();
    let OwnedPdu::CapsuleResp(cqe) = q.queue.next_raw_pdu().unwrap() else {
        panic!("expected CapsuleResp")
    };
    let cqe = nvmf_target::nvme::Completion::decode(&cqe);
    assert_eq!(cqe.status(), Ok(Status::TransientTransportError));
    assert_eq!(f.ns1.snapshot_blocks(Lba(0), 1).unwrap(), vec![0; 512]);
    q.write(1, Lba(0), pattern(512, 4), 512).unwrap();
}

/// A namespace that completes operations on odd LBAs on a worker thread and
/// the rest inline, so a queue mixes both completion paths of the reactor.
struct ThreadedNamespace {
    inner: Arc<MemoryNamespace>,
    worker: std::sync::mpsc::Sender<Box<dyn FnOnce() + Send>>,
}

impl ThreadedNamespace {
    fn new(inner: Arc<MemoryNamespace>) -> Arc<ThreadedNamespace> {
        let (worker, jobs) = std::sync::mpsc::channel::<Box<dyn FnOnce() + Send>>();
        // Ends when the namespace (the only sender) is dropped.
        std::thread::spawn(move || {
            for job in jobs {
                job();
            }
        });
        Arc::new(ThreadedNamespace { inner, worker })
    }

    fn run(&self, lba: Lba, op: impl FnOnce(Arc<MemoryNamespace>) + Send + 'static) {
        let inner = self.inner.clone();
        if lba.0.is_multiple_of(2) {
            op(inner);
        } else if let Err(refused) = self.worker.send(Box::new(move || op(inner))) {
            (refused.0)();
        }
    }
}

impl NamespaceBackend for ThreadedNamespace {
    describe_as_inner!();
    fn read(&self, lba: Lba, blocks: u32, done: nvmf_target::Completion<Bytes>) {
        self.run(lba, move |ns| ns.read(lba, blocks, done));
    }
    fn write(&self, lba: Lba, data: Bytes, done: nvmf_target::Completion<()>) {
        self.run(lba, move |ns| ns.write(lba, data, done));
    }
    fn flush(&self, done: nvmf_target::Completion<()>) {
        self.run(Lba(1), move |ns| ns.flush(done));
    }
    fn write_zeroes(&self, lba: Lba, blocks: u32, done: nvmf_target::Completion<()>) {
        self.run(lba, move |ns| ns.write_zeroes(lba, blocks, done));
    }
    fn deallocate(&self, ranges: Vec<LbaRange>, done: nvmf_target::Completion<()>) {
        let lba = ranges.first().map_or(Lba(0), |r| r.start);
        self.run(lba, move |ns| ns.deallocate(ranges, done));
    }
}

fn completions_from_other_threads_and_inline_ones_interleave_without_lost_wake_ups(
    kind: ReactorKind,
) {
    // A periodic tick beyond the host's 30 s timeout: a completion whose
    // wake-up got lost would stall its command until the host gives up.
    let f = Fixture::build(kind, Limits::default(), Duration::from_secs(60));
    let inner = MemoryNamespace::new(BlockSize::B4096, 256, [0xD4; 16]);
    f.subsystem
        .add_namespace(5, ThreadedNamespace::new(inner.clone()), HostAcl::AnyHost)
        .unwrap();
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    // Queue depth 1: the reactor sleeps between commands, so every worker-thread
    // completion must wake it.
    for i in 0..200u64 {
        let lba = Lba(i % 64);
        let data = pattern(4096, i as u8);
        q.write(5, lba, data.clone(), 4096).unwrap();
        assert_eq!(q.read(5, lba, 1, 4096).unwrap(), data);
    }
    // Queue depth 32, both paths at once, completions out of order.
    for round in 0..8u8 {
        let mut cids = Vec::new();
        for b in 0..32u64 {
            let data = pattern(4096, round.wrapping_add(b as u8));
            cids.push(q.submit_write(5, Lba(64 + b), data, 4096).unwrap());
        }
        for _ in &cids {
            q.queue.wait_any().unwrap().1.success().unwrap();
        }
        let reads: Vec<(u16, u64)> = (0..32u64)
            .map(|b| (q.submit_read(5, Lba(64 + b), 1, 4096).unwrap(), b))
            .collect();
        for (cid, b) in reads {
            let got = q.queue.wait(cid).unwrap().success().unwrap().data;
            assert_eq!(got, pattern(4096, round.wrapping_add(b as u8)).to_vec());
        }
    }
    q.flush(5).unwrap();
    assert!(inner.flush_count() >= 1);
}

fn submissions_made_while_reaping_a_burst_are_sent_before_the_host_blocks(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    // Keep 16 commands in flight, submitting one per completion reaped: the
    // steady state where the host side coalesces its writes. Writes of 16 KiB
    // go by R2T, so H2CData answers are coalesced with the capsules too.
    let mut expected = std::collections::HashMap::new();
    let mut writes = std::collections::HashMap::new();
    let mut next = 0u64;
    let submit = |q: &mut nvmf_target::host::IoQueue, next: &mut u64| {
        let slot = *next % 64;
        let data = pattern(16 * 1024, *next as u8);
        let cid = q
            .submit_write(1, Lba(slot * 32), data.clone(), 512)
            .unwrap();
        *next += 1;
        (cid, slot, data)
    };
    for _ in 0..16 {
        let (cid, slot, data) = submit(&mut q, &mut next);
        writes.insert(cid, (slot, data));
    }
    while !writes.is_empty() {
        let (cid, response) = q.queue.wait_any().unwrap();
        response.success().unwrap();
        let (slot, data) = writes.remove(&cid).unwrap();
        expected.insert(slot, data);
        if next < 400 {
            let (cid, slot, data) = submit(&mut q, &mut next);
            writes.insert(cid, (slot, data));
        }
    }
    for (slot, data) in &expected {
        assert_eq!(q.read(1, Lba(slot * 32), 32, 512).unwrap(), data.to_vec());
    }
}

#[test]
fn namespace_backend_trait_is_object_safe() {
    let ns: Arc<dyn NamespaceBackend> = MemoryNamespace::new(BlockSize::B4096, 1, [0; 16]);
    assert_eq!(ns.block_size().bytes(), 4096);
}

include!("../src/reactors/for_each_reactor_kind.rs");

for_each_reactor_kind!(
    nvmf_target::ReactorKind;
    identify_reports_every_field_linux_checks,
    properties_follow_enable_and_shutdown_handshakes,
    an_enable_with_unsupported_queue_entry_sizes_reports_controller_fatal_status,
    more_event_requests_than_aerl_allows_are_refused,
    a_command_reusing_a_held_aers_id_retires_the_aer_and_runs,
    io_round_trips_in_capsule_and_via_r2t_with_and_without_digests,
    many_writes_in_flight_with_several_outstanding_r2ts,
    c2h_success_flag_is_used_only_when_sq_flow_control_is_disabled,
    io_errors_map_to_nvme_statuses,
    error_log_records_failed_commands_newest_first,
    write_zeroes_and_deallocate_clear_blocks,
    connect_rejects_bad_hosts_subsystems_and_controller_ids,
    connect_refuses_malformed_nqns,
    controller_ids_are_unique_and_freed_on_disconnect,
    acl_filters_namespaces_and_changes_raise_an_aen,
    keep_alive_expiry_tears_the_controller_down,
    features_and_log_pages_answer,
    discovery_log_lists_the_subsystem_for_allowed_hosts_only,
    discovery_shows_the_subsystem_only_to_hosts_a_namespace_acl_admits_and_changes_live,
    malformed_pdu_terminates_only_its_own_connection,
    h2c_data_outside_the_r2t_window_terminates,
    data_digest_error_fails_the_command_not_the_connection,
    completions_from_other_threads_and_inline_ones_interleave_without_lost_wake_ups,
    submissions_made_while_reaping_a_burst_are_sent_before_the_host_blocks,
);
