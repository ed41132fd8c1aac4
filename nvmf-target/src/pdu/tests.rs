use super::*;
use proptest::prelude::*;

fn decode_all(buf: &[u8], digests: Digests) -> Decoded<'_> {
    let limits = DecodeLimits {
        capsule_data_max: 16384,
        data_pdu_max: 65536,
    };
    let d = decode(buf, digests, &limits).unwrap().unwrap();
    assert_eq!(d.len, buf.len(), "decoder must consume exactly one PDU");
    // Every strict prefix is incomplete, never an error or a panic.
    for cut in [0, 1, 7, 8, buf.len() / 2, buf.len() - 1] {
        assert_eq!(
            decode(&buf[..cut], digests, &limits),
            Ok(None),
            "prefix {cut}"
        );
    }
    d
}

fn digests() -> impl Strategy<Value = Digests> {
    (any::<bool>(), any::<bool>()).prop_map(|(header, data)| Digests { header, data })
}

proptest! {
    #[test]
    fn icreq_round_trips(hpda in 0u8..32, d in digests(), maxr2t in any::<u32>()) {
        let req = IcReq { pfv: 0, hpda, digests: d, maxr2t };
        let mut buf = Vec::new();
        req.encode(&mut buf);
        prop_assert_eq!(buf.len(), 128);
        prop_assert_eq!(decode_all(&buf, Digests::default()).pdu, Pdu::IcReq(req));
    }

    #[test]
    fn icresp_round_trips(d in digests(), units in 1024u32..1_000_000) {
        let resp = IcResp { pfv: 0, cpda: 0, digests: d, maxh2cdata: units * 4 };
        let mut buf = Vec::new();
        resp.encode(&mut buf);
        prop_assert_eq!(decode_all(&buf, Digests::default()).pdu, Pdu::IcResp(resp));
    }

    #[test]
    fn capsule_cmd_round_trips(d in digests(), sqe in proptest::array::uniform32(any::<u8>()), data in proptest::collection::vec(any::<u8>(), 0..9000)) {
        let mut full = [0u8; 64];
        full[..32].copy_from_slice(&sqe);
        full[32..].copy_from_slice(&sqe);
        let cmd = CapsuleCmd { sqe: full, data: &data };
        let mut buf = Vec::new();
        cmd.encode(d, &mut buf);
        let decoded = decode_all(&buf, d);
        prop_assert!(decoded.data_digest_ok);
        prop_assert_eq!(decoded.pdu, Pdu::CapsuleCmd(cmd));
    }

    #[test]
    fn an_h2c_head_decodes_as_its_whole_pdu_from_any_cut_inside_the_data(
        d in digests(),
        align in prop_oneof![Just(0usize), Just(4), Just(32)],
        data in proptest::collection::vec(any::<u8>(), 1..9000),
        cut_at in any::<proptest::sample::Index>(),
        cid in any::<u16>(), offset in any::<u32>(), last in any::<bool>(),
    ) {
        let pdu = DataPdu { command_id: cid, ttag: cid, offset, last, success: false, data: &data };
        let mut buf = Vec::new();
        pdu.encode(PduType::H2CData, d, align, &mut buf);
        let limits = DecodeLimits::default();
        let whole = decode_all(&buf, d);
        prop_assert_eq!(decode_h2c_head(&buf, d, &limits), Ok(None), "the whole PDU decodes");
        let data_start = buf.len() - data.len() - if d.data { 4 } else { 0 };
        let cut = data_start + cut_at.index(buf.len() - data_start);
        let head = decode_h2c_head(&buf[..cut], d, &limits)
            .expect("valid")
            .expect("everything before the data is there");
        prop_assert_eq!(head.data_start, data_start);
        prop_assert_eq!(head.data_len, data.len());
        prop_assert_eq!(head.has_data_digest, d.data);
        prop_assert_eq!(Pdu::H2CData(DataPdu { data: &data, ..head.fields }), whole.pdu);
        // Before the data starts the head is not ready; never an error.
        prop_assert_eq!(decode_h2c_head(&buf[..data_start - 1], d, &limits), Ok(None));
    }

    #[test]
    fn capsule_resp_and_r2t_round_trip(d in digests(), cqe in proptest::array::uniform16(any::<u8>()), cid in any::<u16>(), ttag in any::<u16>(), off in any::<u32>(), len in 1u32..) {
        let resp = CapsuleResp { cqe };
        let mut buf = Vec::new();
        resp.encode(d, &mut buf);
        prop_assert_eq!(decode_all(&buf, d).pdu, Pdu::CapsuleResp(resp));
        let r2t = R2t { command_id: cid, ttag, offset: off, length: len };
        let mut buf = Vec::new();
        r2t.encode(d, &mut buf);
        prop_assert_eq!(decode_all(&buf, d).pdu, Pdu::R2T(r2t));
    }

    #[test]
    fn data_pdus_round_trip(d in digests(), cid in any::<u16>(), ttag in any::<u16>(), off in any::<u32>(), last in any::<bool>(), data in proptest::collection::vec(any::<u8>(), 1..5000), align in prop_oneof![Just(0usize), Just(8), Just(32), Just(128)]) {
        let h2c = DataPdu { command_id: cid, ttag, offset: off, last, success: false, data: &data };
        let mut buf = Vec::new();
        h2c.encode(PduType::H2CData, d, align, &mut buf);
        prop_assert_eq!(decode_all(&buf, d).pdu, Pdu::H2CData(h2c.clone()));
        let c2h = DataPdu { ttag: 0, success: last, ..h2c };
        let mut head = Vec::new();
        let trailer = c2h.encode_header(PduType::C2HData, d, align, &mut head);
        head.extend_from_slice(&data);
        if let Some(t) = trailer { head.extend_from_slice(&t); }
        prop_assert_eq!(decode_all(&head, d).pdu, Pdu::C2HData(c2h));
    }

    #[test]
    fn term_req_round_trips(fes in 1u16..7, fei in any::<u32>(), data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let t = TermReq { fes, fei, data: &data };
        let mut buf = Vec::new();
        t.encode(PduType::C2HTermReq, &mut buf);
        let n = data.len().min(128);
        prop_assert_eq!(decode_all(&buf, Digests::default()).pdu, Pdu::C2HTermReq(TermReq { fes, fei, data: &data[..n] }));
    }

    #[test]
    fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), d in digests()) {
        let limits = DecodeLimits::default();
        if let Ok(Some(decoded)) = decode(&bytes, d, &limits) {
            prop_assert!(decoded.len <= bytes.len());
        }
    }

    #[test]
    fn flipped_bytes_never_panic(d in digests(), idx in 0usize..100, val in any::<u8>()) {
        let data = vec![0x5au8; 64];
        let pdu = DataPdu { command_id: 1, ttag: 2, offset: 0, last: true, success: false, data: &data };
        let mut buf = Vec::new();
        pdu.encode(PduType::H2CData, d, 0, &mut buf);
        let i = idx % buf.len();
        buf[i] = val;
        let _ = decode(&buf, d, &DecodeLimits::default());
    }
}

#[test]
fn hostile_plen_is_rejected_before_buffering() {
    let mut buf = vec![PduType::H2CData as u8, 0, 24, 24];
    buf.extend_from_slice(&u32::MAX.to_le_bytes());
    let err = decode(&buf, Digests::default(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(err, DecodeError::TooLong { .. }));
    assert_eq!(err.fes(), FatalErrorStatus::DataLimitExceeded);
}

#[test]
fn header_digest_mismatch_is_detected() {
    let d = Digests {
        header: true,
        data: false,
    };
    let mut buf = Vec::new();
    CapsuleResp { cqe: [3; 16] }.encode(d, &mut buf);
    buf[10] ^= 1;
    assert_eq!(
        decode(&buf, d, &DecodeLimits::default()),
        Err(DecodeError::HeaderDigest)
    );
}

#[test]
fn data_digest_mismatch_is_reported_not_fatal() {
    let d = Digests {
        header: false,
        data: true,
    };
    let mut buf = Vec::new();
    CapsuleCmd {
        sqe: [0; 64],
        data: &[1, 2, 3, 4],
    }
    .encode(d, &mut buf);
    let n = buf.len();
    buf[n - 5] ^= 0xff;
    let decoded = decode(&buf, d, &DecodeLimits::default()).unwrap().unwrap();
    assert!(!decoded.data_digest_ok);
}

#[test]
fn digest_flags_must_match_negotiation() {
    let mut buf = Vec::new();
    CapsuleCmd {
        sqe: [0; 64],
        data: &[],
    }
    .encode(
        Digests {
            header: true,
            data: false,
        },
        &mut buf,
    );
    assert!(matches!(
        decode(&buf, Digests::default(), &DecodeLimits::default()),
        Err(DecodeError::DigestFlags { .. })
    ));
}

#[test]
fn unknown_type_and_bad_hlen_are_rejected() {
    let buf = [0x08, 0, 24, 0, 24, 0, 0, 0];
    assert_eq!(
        decode(&buf, Digests::default(), &DecodeLimits::default()),
        Err(DecodeError::UnknownType { pdu_type: 8 })
    );
    let buf = [PduType::CapsuleCmd as u8, 0, 24, 0, 24, 0, 0, 0];
    assert!(matches!(
        decode(&buf, Digests::default(), &DecodeLimits::default()),
        Err(DecodeError::HeaderLength { .. })
    ));
}

#[test]
fn icreq_with_nonzero_pfv_is_unsupported() {
    let mut buf = Vec::new();
    IcReq {
        pfv: 0,
        hpda: 0,
        digests: Digests::default(),
        maxr2t: 0,
    }
    .encode(&mut buf);
    buf[8] = 1;
    let err = decode(&buf, Digests::default(), &DecodeLimits::default()).unwrap_err();
    assert_eq!(err.fes(), FatalErrorStatus::UnsupportedParameter);
    assert_eq!(err.fei(), 8);
}

#[test]
fn linux_style_capsule_with_inline_data_decodes() {
    // Linux sets PDO = HLEN + header digest length when in-capsule data follows.
    let d = Digests {
        header: true,
        data: true,
    };
    let mut buf = Vec::new();
    CapsuleCmd {
        sqe: [9; 64],
        data: &[7; 1024],
    }
    .encode(d, &mut buf);
    assert_eq!(buf[3], 76);
    assert_eq!(
        u32::from_le_bytes(buf[4..8].try_into().unwrap()) as usize,
        72 + 4 + 1024 + 4
    );
    assert_eq!(buf[1], FLAG_HDGST | FLAG_DDGST);
}
