//! NVMe/TCP transport rules, tested against the real target over loopback with
//! this crate's host side: C2H data alignment, R2T and H2CData exchanges,
//! data digests, host termination and invalid command fields. Every test runs
//! once per reactor backend (`epoll::*`, `uring::*`).

mod common;

use std::time::Duration;

use nvmf_target::host::{HostController, HostError, IoQueue, OwnedPdu};
use nvmf_target::nvme::{io_opcode, Command};
use nvmf_target::pdu::{self, DecodeLimits, Digests, Pdu, PduType, TermReq};
use nvmf_target::{Lba, ReactorKind, Status};

use common::{encode_h2c, pattern, rw_command, send_command, wait_until, Fixture, HOST_A};

/// Byte offsets in every PDU's common header.
const HLEN_AT: usize = 2;
const PDO_AT: usize = 3;

fn both_digests() -> Digests {
    Digests {
        header: true,
        data: true,
    }
}

fn expect_r2t(pdu: OwnedPdu) -> (u16, u16, u32, u32) {
    match pdu {
        OwnedPdu::R2T {
            command_id,
            ttag,
            offset,
            length,
        } => (command_id, ttag, offset, length),
        other => panic!("expected an R2T, got {other:?}"),
    }
}

fn expect_status(pdu: OwnedPdu) -> (u16, Status) {
    match pdu {
        OwnedPdu::CapsuleResp(cqe) => {
            let c = nvmf_target::nvme::Completion::decode(&cqe);
            (c.cid, c.status().unwrap())
        }
        other => panic!("expected a CapsuleResp, got {other:?}"),
    }
}

fn c2h_data_starts_at_the_alignment_the_host_asked_for(kind: ReactorKind) {
    let f = Fixture::new(kind);
    for (hpda, digests) in [
        (7u8, Digests::default()),
        (7, both_digests()),
        (31, both_digests()),
    ] {
        let align = (usize::from(hpda) + 1) * 4;
        let mut o = f.options(HOST_A);
        o.hpda = hpda;
        o.digests = digests;
        // The admin queue's Identify data arrives aligned too: connecting
        // decodes it.
        let mut c = HostController::connect(f.addr(), o).unwrap();
        c.set_queue_count(1).unwrap();
        let mut q = c.connect_io_queue(1).unwrap();
        let data = pattern(4096, hpda);
        q.write(1, Lba(8), data.clone(), 512).unwrap();
        assert_eq!(q.read(1, Lba(8), 8, 512).unwrap(), data.to_vec());
        let read = rw_command(io_opcode::READ, 900, 1, Lba(8), 8);
        send_command(&mut q.queue, read, digests);
        let c2h = q.queue.next_pdu_bytes().unwrap();
        assert_eq!(c2h[0], PduType::C2HData as u8);
        let header_end = usize::from(c2h[HLEN_AT]) + if digests.header { 4 } else { 0 };
        let pdo = usize::from(c2h[PDO_AT]);
        assert_eq!(pdo % align, 0, "PDO {pdo} for a {align}-byte alignment");
        assert!(pdo >= header_end && pdo < header_end + align);
        assert!(c2h[header_end..pdo].iter().all(|&b| b == 0), "zero padding");
        assert_eq!(&c2h[pdo..pdo + 4096], &data[..]);
        let limits = DecodeLimits {
            capsule_data_max: 8192,
            data_pdu_max: 1 << 20,
        };
        let decoded = pdu::decode(&c2h, digests, &limits).unwrap().unwrap();
        assert!(decoded.data_digest_ok);
        assert!(matches!(decoded.pdu, Pdu::C2HData(d) if d.data == &data[..]));
        let (cid, status) = expect_status(q.queue.next_raw_pdu().unwrap());
        assert_eq!((cid, status), (900, Status::Success));
    }
}

fn several_r2ts_stay_outstanding_and_are_answered_in_any_order(kind: ReactorKind) {
    let f = Fixture::r2t_only(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    for cid in 0..3u16 {
        let write = rw_command(io_opcode::WRITE, cid, 1, Lba(u64::from(cid) * 2), 2);
        send_command(&mut q.queue, write, Digests::default());
    }
    let r2ts: Vec<_> = (0..3)
        .map(|_| expect_r2t(q.queue.next_raw_pdu().unwrap()))
        .collect();
    for (i, &(cid, _, offset, length)) in r2ts.iter().enumerate() {
        assert_eq!((cid, offset, length), (i as u16, 0, 1024));
    }
    for &(cid, ttag, _, _) in r2ts.iter().rev() {
        let data = pattern(1024, cid as u8);
        q.queue
            .send_raw(&encode_h2c(cid, ttag, 0, true, &data, Digests::default()))
            .unwrap();
        assert_eq!(
            expect_status(q.queue.next_raw_pdu().unwrap()),
            (cid, Status::Success)
        );
    }
    for cid in 0..3u16 {
        let got = f.ns1.snapshot_blocks(Lba(u64::from(cid) * 2), 2).unwrap();
        assert_eq!(got, pattern(1024, cid as u8).to_vec());
    }
}

fn an_r2t_may_be_answered_in_several_h2c_data_pdus(kind: ReactorKind) {
    let f = Fixture::r2t_only(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    let write = rw_command(io_opcode::WRITE, 3, 1, Lba(16), 8);
    send_command(&mut q.queue, write, Digests::default());
    let (_, ttag, _, length) = expect_r2t(q.queue.next_raw_pdu().unwrap());
    assert_eq!(length, 4096);
    let data = pattern(4096, 77);
    for (offset, piece) in (0u32..).step_by(1024).zip(data.chunks(1024)) {
        let last = offset + 1024 == length;
        q.queue
            .send_raw(&encode_h2c(
                3,
                ttag,
                offset,
                last,
                piece,
                Digests::default(),
            ))
            .unwrap();
    }
    assert_eq!(
        expect_status(q.queue.next_raw_pdu().unwrap()),
        (3, Status::Success)
    );
    assert_eq!(f.ns1.snapshot_blocks(Lba(16), 8).unwrap(), data.to_vec());
}

fn an_h2c_data_digest_error_fails_the_write_not_the_connection(kind: ReactorKind) {
    let f = Fixture::r2t_only(kind);
    let mut o = f.options(HOST_A);
    o.digests = both_digests();
    let mut c = HostController::connect(f.addr(), o).unwrap();
    c.set_queue_count(1).unwrap();
    let mut q = c.connect_io_queue(1).unwrap();
    let write = rw_command(io_opcode::WRITE, 4, 1, Lba(40), 2);
    send_command(&mut q.queue, write, both_digests());
    let (_, ttag, _, _) = expect_r2t(q.queue.next_raw_pdu().unwrap());
    let mut h2c = encode_h2c(4, ttag, 0, true, &pattern(1024, 5), both_digests());
    let n = h2c.len();
    h2c[n - 1] ^= 0xFF;
    q.queue.send_raw(&h2c).unwrap();
    assert_eq!(
        expect_status(q.queue.next_raw_pdu().unwrap()),
        (4, Status::TransientTransportError)
    );
    assert_eq!(f.ns1.snapshot_blocks(Lba(40), 2).unwrap(), vec![0; 1024]);
    // The connection carries on.
    q.write(1, Lba(40), pattern(1024, 6), 512).unwrap();
    assert_eq!(
        f.ns1.snapshot_blocks(Lba(40), 2).unwrap(),
        pattern(1024, 6).to_vec()
    );
}

/// Two 128 KiB writes whose data PDUs arrive back to back, cut into uneven
/// pieces with pauses between them, with and without digests, and once with
/// a byte of the first write's data damaged in transit: each write lands
/// whole (or fails alone, with a transport error) and the queue carries on.
fn large_data_pdus_arriving_in_pieces_are_received_into_place(kind: ReactorKind) {
    const BLOCKS: u32 = 256;
    let len = BLOCKS as usize * 512;
    for (digests, damage) in [
        (Digests::default(), false),
        (both_digests(), false),
        (both_digests(), true),
    ] {
        let f = Fixture::r2t_only(kind);
        let mut o = f.options(HOST_A);
        o.digests = digests;
        let mut c = HostController::connect(f.addr(), o).unwrap();
        c.set_queue_count(1).unwrap();
        let mut q = c.connect_io_queue(1).unwrap();
        let mut stream = Vec::new();
        for cid in [5u16, 6] {
            let lba = Lba(u64::from(cid - 5) * u64::from(BLOCKS));
            send_command(
                &mut q.queue,
                rw_command(io_opcode::WRITE, cid, 1, lba, BLOCKS),
                digests,
            );
            let (r2t_cid, ttag, offset, length) = expect_r2t(q.queue.next_raw_pdu().unwrap());
            assert_eq!((r2t_cid, offset, length as usize), (cid, 0, len));
            stream.extend(encode_h2c(
                cid,
                ttag,
                0,
                true,
                &pattern(len, cid as u8),
                digests,
            ));
        }
        if damage {
            stream[1000] ^= 0x40;
        }
        let cuts = [30, 1000, 50_000, 7, 90_000, 3, 131_000, 20];
        let mut at = 0usize;
        for cut in cuts.into_iter().chain([usize::MAX]) {
            let end = at.saturating_add(cut).min(stream.len());
            q.queue.send_raw(&stream[at..end]).unwrap();
            at = end;
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut answers: Vec<_> = (0..2)
            .map(|_| expect_status(q.queue.next_raw_pdu().unwrap()))
            .collect();
        answers.sort_by_key(|&(cid, _)| cid);
        let first = if damage {
            Status::TransientTransportError
        } else {
            Status::Success
        };
        assert_eq!(
            answers,
            vec![(5, first), (6, Status::Success)],
            "{digests:?}"
        );
        let expected_first = if damage {
            vec![0; len]
        } else {
            pattern(len, 5).to_vec()
        };
        assert_eq!(
            f.ns1.snapshot_blocks(Lba(0), BLOCKS).unwrap(),
            expected_first
        );
        assert_eq!(
            f.ns1
                .snapshot_blocks(Lba(u64::from(BLOCKS)), BLOCKS)
                .unwrap(),
            pattern(len, 6).to_vec()
        );
        q.write(1, Lba(0), pattern(len, 9), 512).unwrap();
        assert_eq!(
            f.ns1.snapshot_blocks(Lba(0), BLOCKS).unwrap(),
            pattern(len, 9).to_vec()
        );
    }
}

fn a_host_termination_request_closes_only_its_connection(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let mut c = f.connect(HOST_A);
    c.set_queue_count(2).unwrap();
    let mut ending = c.connect_io_queue(1).unwrap();
    let mut staying = c.connect_io_queue(2).unwrap();
    let connections = f.target.stats().connections;
    let mut term = Vec::new();
    TermReq {
        fes: 0x02,
        fei: 0,
        data: &[],
    }
    .encode(PduType::H2CTermReq, &mut term);
    ending.queue.send_raw(&term).unwrap();
    ending.queue.set_timeout(Duration::from_secs(5)).unwrap();
    assert!(matches!(
        ending.queue.next_raw_pdu(),
        Err(HostError::Closed) | Err(HostError::Io(_))
    ));
    wait_until("the terminated connection to close", || {
        f.target.stats().connections == connections - 1
    });
    staying.write(1, Lba(0), pattern(512, 8), 512).unwrap();
    c.keep_alive().unwrap();
}

/// The status a command sent as is (no SGL rewriting) completes with.
fn status_of_raw(q: &mut IoQueue, cmd: Command) -> Status {
    send_command(&mut q.queue, cmd, Digests::default());
    expect_status(q.queue.next_raw_pdu().unwrap()).1
}

fn io_commands_with_invalid_fields_fail_with_invalid_field(kind: ReactorKind) {
    let f = Fixture::new(kind);
    let (_c, mut q) = f.connect_with_io_queue(HOST_A);
    // A fused command (FUSE = first of a compare-and-write pair).
    let mut fused = rw_command(io_opcode::READ, 1, 1, Lba(0), 1);
    fused.0[1] |= 0x1;
    assert_eq!(status_of_raw(&mut q, fused), Status::InvalidField);
    // PRPs (PSDT 0) are not a fabrics data pointer.
    let mut prp = rw_command(io_opcode::READ, 2, 1, Lba(0), 1);
    prp.0[1] &= 0x3F;
    assert_eq!(status_of_raw(&mut q, prp), Status::InvalidField);
    // PSDT 10b (an SGL segment for metadata, which the TCP transport does
    // not have) and 11b (reserved), on a read and on a write.
    for (cid, psdt) in [(4u16, 0b10u8), (5, 0b11)] {
        for opcode in [io_opcode::READ, io_opcode::WRITE] {
            let mut cmd = rw_command(opcode, cid, 1, Lba(0), 1);
            cmd.0[1] = (cmd.0[1] & 0x3F) | (psdt << 6);
            assert_eq!(
                status_of_raw(&mut q, cmd),
                Status::InvalidField,
                "PSDT {psdt:#b}, opcode {opcode:#x}"
            );
        }
    }
    // A read of 2 MiB (over MDTS, 1 MiB) behind a short data pointer.
    let mut long = rw_command(io_opcode::READ, 3, 1, Lba(0), 1);
    long.set_cdw(12, 4095);
    assert_eq!(status_of_raw(&mut q, long), Status::InvalidField);
    // Each failure was answered and changed nothing; the queue carries on.
    let fresh = q
        .queue
        .execute(rw_command(io_opcode::READ, 0, 1, Lba(0), 1), None, 512)
        .unwrap()
        .success()
        .unwrap();
    assert_eq!(fresh.data, vec![0; 512]);
}

include!("../src/reactors/for_each_reactor_kind.rs");

for_each_reactor_kind!(
    nvmf_target::ReactorKind;
    c2h_data_starts_at_the_alignment_the_host_asked_for,
    several_r2ts_stay_outstanding_and_are_answered_in_any_order,
    an_r2t_may_be_answered_in_several_h2c_data_pdus,
    an_h2c_data_digest_error_fails_the_write_not_the_connection,
    large_data_pdus_arriving_in_pieces_are_received_into_place,
    a_host_termination_request_closes_only_its_connection,
    io_commands_with_invalid_fields_fail_with_invalid_field,
);
