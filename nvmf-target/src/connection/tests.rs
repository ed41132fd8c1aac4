use super::*;
use crate::nvme::fabrics::{ConnectCommand, ConnectData};
use crate::nvme::SglKind;
use crate::pdu::{CapsuleCmd, DecodeLimits, IcReq};
use crate::subsystem::SubsystemConfig;
use std::time::Duration;

const UNIT_NQN: &str = "nqn.2024-01.io.keel:unit";

fn context() -> ConnectionContext {
    ConnectionContext {
        subsystem: Subsystem::new(SubsystemConfig::new(UNIT_NQN, "SN")),
        limits: Limits::default(),
        port_kind: PortKind::Io,
        local_addr: "127.0.0.1:4420".parse().unwrap(),
        peer_addr: "127.0.0.1:50000".parse().unwrap(),
        io_listeners: Arc::new(vec!["0.0.0.0:4420".parse().unwrap()]),
        advertised_addr: None,
        notifier: Arc::new(|| {}),
        handshake_timeout: crate::reactors::DEFAULT_HANDSHAKE_TIMEOUT,
        discovery_keep_alive: crate::reactors::DEFAULT_DISCOVERY_KEEP_ALIVE,
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

/// Appends an ICReq without digests.
fn encode_icreq(b: &mut Vec<u8>) {
    IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    }
    .encode(b);
}

/// Appends an admin-queue Connect (CID 1) for a new controller of host
/// "nqn.host" to the subsystem `subsys_nqn`.
fn encode_admin_connect(b: &mut Vec<u8>, subsys_nqn: &str) {
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
        subsys_nqn: subsys_nqn.into(),
        host_nqn: "nqn.host".into(),
    }
    .encode();
    cmd.set_sgl(0, data.len() as u32, crate::nvme::SGL_TYPE_IN_CAPSULE);
    assert_eq!(cmd.sgl().kind, SglKind::InCapsule);
    CapsuleCmd {
        sqe: cmd.0,
        data: &data,
    }
    .encode(Digests::default(), b);
}

fn icreq(c: &mut Connection) {
    let mut b = Vec::new();
    encode_icreq(&mut b);
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
    let mut b = Vec::new();
    encode_admin_connect(&mut b, UNIT_NQN);
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

/// A connection whose handshake may take `timeout`.
fn with_handshake_timeout(timeout: Duration) -> Connection {
    Connection::new(ConnectionContext {
        handshake_timeout: timeout,
        ..context()
    })
}

#[test]
fn a_connection_silent_past_the_handshake_timeout_is_closed_quietly() {
    let timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut c = with_handshake_timeout(timeout);
    c.tick(t0 + timeout / 2);
    assert!(!c.is_closed());
    c.tick(t0 + timeout * 2);
    assert!(c.is_closed() && c.handshake_timed_out());
    // No ICReq was exchanged, so nothing is sent: the socket just closes.
    assert!(!c.has_output());
}

#[test]
fn icreq_without_a_connect_still_times_out() {
    let timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut c = with_handshake_timeout(timeout);
    icreq(&mut c);
    assert!(!c.handshake_done());
    c.tick(t0 + timeout * 2);
    assert!(c.is_closed() && c.handshake_timed_out());
}

#[test]
fn a_connected_queue_is_past_its_handshake_and_never_times_out_for_it() {
    let timeout = Duration::from_secs(1);
    let t0 = Instant::now();
    let mut c = with_handshake_timeout(timeout);
    icreq(&mut c);
    let mut b = Vec::new();
    encode_admin_connect(&mut b, UNIT_NQN);
    c.receive(&b, t0);
    drain(&mut c);
    assert!(c.handshake_done());
    // Within the 5 s keep-alive timeout of the connect, past the handshake's.
    c.tick(t0 + timeout * 3);
    assert!(!c.is_closed() && !c.handshake_timed_out());
}

/// Appends Property Set CC.EN (CID 2) with the queue entry sizes an I/O
/// controller requires (IOSQES 6, IOCQES 4).
fn encode_enable(b: &mut Vec<u8>) {
    let mut enable = Command::new(admin_opcode::FABRICS, 2);
    enable.0[4] = crate::nvme::fabrics::fctype::PROPERTY_SET;
    enable.set_cdw(11, crate::nvme::fabrics::property::CC);
    enable.set_cdw(12, crate::nvme::fabrics::CC_ENABLE | (6 << 16) | (4 << 20));
    enable.set_sgl(0, 0, crate::nvme::SGL_TYPE_TRANSPORT);
    CapsuleCmd {
        sqe: enable.0,
        data: &[],
    }
    .encode(Digests::default(), b);
}

/// The bytes of ICReq, an admin Connect, Property Set CC.EN and then
/// `identifies` Identify Controller commands, as a host sends them.
fn admin_session(identifies: u16) -> Vec<u8> {
    let mut b = Vec::new();
    encode_icreq(&mut b);
    encode_admin_connect(&mut b, UNIT_NQN);
    encode_enable(&mut b);
    for cid in 0..identifies {
        let mut identify = Command::new(admin_opcode::IDENTIFY, 100 + cid);
        identify.set_cdw(10, u32::from(crate::nvme::cns::CONTROLLER));
        identify.set_sgl(
            0,
            crate::nvme::IDENTIFY_LEN as u32,
            crate::nvme::SGL_TYPE_TRANSPORT,
        );
        CapsuleCmd {
            sqe: identify.0,
            data: &[],
        }
        .encode(Digests::default(), &mut b);
    }
    b
}

/// Feeds `stream` to a new connection in the pieces `cuts` (ascending offsets)
/// make, and returns everything it answered.
fn answers_to_pieces(stream: &[u8], cuts: &[usize]) -> Vec<u8> {
    let mut c = Connection::new(context());
    let mut start = 0;
    for &end in cuts.iter().chain([stream.len()].iter()) {
        c.receive(&stream[start..end], Instant::now());
        start = end;
    }
    assert!(!c.is_closed());
    drain(&mut c)
}

#[test]
fn a_stream_cut_anywhere_gets_the_answers_it_gets_whole() {
    let stream = admin_session(3);
    let whole = answers_to_pieces(&stream, &[]);
    // ICResp, Connect's and Property Set's responses, three Identify data PDUs
    // with their responses.
    assert!(whole.len() > 3 * crate::nvme::IDENTIFY_LEN);
    for cut in 1..stream.len() {
        assert_eq!(answers_to_pieces(&stream, &[cut]), whole, "cut at {cut}");
    }
    let every_byte: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(answers_to_pieces(&stream, &every_byte), whole);
}

proptest::proptest! {
    #[test]
    fn a_stream_in_any_pieces_gets_the_answers_it_gets_whole(
        mut cuts in proptest::collection::vec(1usize..1400, 0..12),
    ) {
        let stream = admin_session(8);
        cuts.retain(|&c| c < stream.len());
        cuts.sort_unstable();
        cuts.dedup();
        let whole = answers_to_pieces(&stream, &[]);
        proptest::prop_assert_eq!(answers_to_pieces(&stream, &cuts), whole);
    }
}

#[test]
fn a_hostile_length_split_after_the_header_terminates_without_buffering() {
    let mut c = Connection::new(context());
    icreq(&mut c);
    let mut b = Vec::new();
    CapsuleCmd {
        sqe: [0; 64],
        data: &[],
    }
    .encode(Digests::default(), &mut b);
    b[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    c.receive(&b[..5], Instant::now());
    assert!(!c.is_closed());
    c.receive(&b[5..], Instant::now());
    let out = drain(&mut c);
    match decode_one(&out).0 {
        Pdu::C2HTermReq(t) => {
            assert_eq!(t.fes, FatalErrorStatus::DataLimitExceeded as u16);
            assert_eq!(t.fei, 4);
        }
        other => panic!("expected C2HTermReq, got {other:?}"),
    }
    assert!(c.is_closed());
    assert!(c.rx.is_empty());
}

#[test]
fn input_waits_while_output_is_backed_up_and_resumes_as_it_drains() {
    // Enough Identify data to pass the output's high-water mark, with more
    // commands behind it, arriving in pieces that split PDUs.
    let commands = (OUTPUT_HIGH_WATER_BYTES / crate::nvme::IDENTIFY_LEN) as u16 + 40;
    let stream = admin_session(commands);
    let mut c = Connection::new(context());
    for piece in stream.chunks(1000) {
        c.receive(piece, Instant::now());
    }
    assert!(!c.wants_input());
    assert!(!c.rx.is_empty());
    let mut identified = 0usize;
    while c.has_output() {
        let chunks: Vec<Bytes> = c.take_output().iter().cloned().collect();
        let sent: usize = chunks.iter().map(Bytes::len).sum();
        let mut all = Vec::with_capacity(sent);
        for chunk in &chunks {
            all.extend_from_slice(chunk);
        }
        let mut at = 0;
        while at < all.len() {
            let (pdu, len) = decode_one(&all[at..]);
            if let Pdu::C2HData(d) = pdu {
                assert_eq!(d.data.len(), crate::nvme::IDENTIFY_LEN);
                identified += 1;
            }
            at += len;
        }
        c.consumed_output(sent);
    }
    assert_eq!(identified, usize::from(commands));
    assert!(c.wants_input());
    assert!(c.rx.is_empty());
}

#[test]
fn discovery_through_a_wildcard_listener_names_the_address_the_host_reached() {
    // The I/O listener is 0.0.0.0:4420; this host reached 127.0.0.9.
    let mut ctx = context();
    ctx.local_addr = "127.0.0.9:4420".parse().unwrap();
    let ns = crate::MemoryNamespace::new(crate::BlockSize::B512, 8, [7; 16]);
    ctx.subsystem
        .add_namespace(1, ns, crate::HostAcl::AnyHost)
        .unwrap();
    let mut c = Connection::new(ctx);
    let mut b = Vec::new();
    encode_icreq(&mut b);
    encode_admin_connect(&mut b, crate::nvme::DISCOVERY_NQN);
    encode_enable(&mut b);
    let len = 2 * crate::nvme::log_page::DISCOVERY_RECORD_LEN as u32;
    let mut get_log = Command::new(admin_opcode::GET_LOG_PAGE, 3);
    get_log.set_cdw(
        10,
        u32::from(crate::nvme::log_id::DISCOVERY) | ((len / 4 - 1) << 16),
    );
    get_log.set_sgl(0, len, crate::nvme::SGL_TYPE_TRANSPORT);
    CapsuleCmd {
        sqe: get_log.0,
        data: &[],
    }
    .encode(Digests::default(), &mut b);
    c.receive(&b, Instant::now());
    let out = drain(&mut c);
    let mut at = 0;
    let mut log = None;
    while at < out.len() {
        let (pdu, n) = decode_one(&out[at..]);
        if let Pdu::C2HData(d) = pdu {
            log = Some(d.data.to_vec());
        }
        at += n;
    }
    let log = log.expect("the discovery log");
    let record = crate::nvme::log_page::DISCOVERY_RECORD_LEN;
    assert_eq!(
        crate::nvme::log_page::decode_discovery_header(&log).map(|h| h.1),
        Some(1)
    );
    let entry = crate::nvme::log_page::DiscoveryEntry::decode(&log[record..]).unwrap();
    assert_eq!(
        (entry.traddr.as_str(), entry.trsvcid.as_str()),
        ("127.0.0.9", "4420")
    );
}
