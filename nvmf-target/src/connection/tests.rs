use super::*;
use crate::nvme::fabrics::{ConnectCommand, ConnectData};
use crate::nvme::SglKind;
use crate::pdu::{CapsuleCmd, DecodeLimits, IcReq};
use crate::subsystem::SubsystemConfig;

fn context() -> ConnectionContext {
    ConnectionContext {
        subsystem: Subsystem::new(SubsystemConfig::new("nqn.2024-01.io.keel:unit", "SN")),
        limits: Limits::default(),
        port_kind: PortKind::Io,
        local_addr: "127.0.0.1:4420".parse().unwrap(),
        io_listeners: Arc::new(vec!["0.0.0.0:4420".parse().unwrap()]),
        advertised_addr: None,
        notifier: Arc::new(|| {}),
    }
}

fn drain(c: &mut Connection) -> Vec<u8> {
    let mut all = Vec::new();
    let out = c.take_output();
    while let Some(b) = out.pop_front() {
        all.extend_from_slice(&b);
    }
    c.out_bytes = 0;
    all
}

fn decode_one(buf: &[u8]) -> (Pdu<'_>, usize) {
    let limits = DecodeLimits {
        capsule_data_max: 8192,
        data_pdu_max: 1 << 20,
    };
    let d = pdu::decode(buf, Digests::default(), &limits)
        .unwrap()
        .unwrap();
    (d.pdu, d.len)
}

fn icreq(c: &mut Connection) {
    let mut b = Vec::new();
    IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    }
    .encode(&mut b);
    c.receive(&b, Instant::now());
    let out = drain(c);
    match decode_one(&out).0 {
        Pdu::IcResp(r) => {
            assert_eq!((r.pfv, r.cpda, r.maxh2cdata), (0, 0, 128 * 1024));
        }
        other => panic!("expected ICResp, got {other:?}"),
    }
}

#[test]
fn icresp_answers_icreq_with_linux_acceptable_values() {
    let mut c = Connection::new(context());
    icreq(&mut c);
    assert!(!c.is_closed());
}

#[test]
fn capsule_before_icreq_is_a_sequence_error() {
    let mut c = Connection::new(context());
    let mut b = Vec::new();
    CapsuleCmd {
        sqe: [0; 64],
        data: &[],
    }
    .encode(Digests::default(), &mut b);
    c.receive(&b, Instant::now());
    let out = drain(&mut c);
    match decode_one(&out).0 {
        Pdu::C2HTermReq(t) => assert_eq!(t.fes, FatalErrorStatus::PduSequenceError as u16),
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    assert!(c.is_closed());
}

#[test]
fn admin_connect_returns_a_controller_id() {
    let mut c = Connection::new(context());
    icreq(&mut c);
    let mut cmd = Command::new(admin_opcode::FABRICS, 1);
    ConnectCommand {
        recfmt: 0,
        qid: 0,
        sqsize: 31,
        cattr: 0,
        kato_ms: 5000,
    }
    .write_to(&mut cmd);
    let data = ConnectData {
        host_id: [1; 16],
        cntlid: 0xFFFF,
        subsys_nqn: "nqn.2024-01.io.keel:unit".into(),
        host_nqn: "nqn.host".into(),
    }
    .encode();
    cmd.set_sgl(0, data.len() as u32, crate::nvme::SGL_TYPE_IN_CAPSULE);
    assert_eq!(cmd.sgl().kind, SglKind::InCapsule);
    let mut b = Vec::new();
    CapsuleCmd {
        sqe: cmd.0,
        data: &data,
    }
    .encode(Digests::default(), &mut b);
    c.receive(&b, Instant::now());
    let out = drain(&mut c);
    match decode_one(&out).0 {
        Pdu::CapsuleResp(r) => {
            let cqe = Completion::decode(&r.cqe);
            assert_eq!(cqe.status(), Ok(Status::Success));
            assert_eq!(cqe.cid, 1);
            assert_ne!(cqe.dw0() & 0xFFFF, 0xFFFF);
        }
        other => panic!("expected CapsuleResp, got {other:?}"),
    }
    assert_eq!(c.ctx.subsystem.controller_count(), 1);
    c.peer_closed();
    assert_eq!(c.ctx.subsystem.controller_count(), 0);
}
