//! Sans-IO codecs for NVMe/TCP PDUs (NVMe/TCP Transport Specification 1.0).
//!
//! [`decode`] takes the front of a receive buffer and returns either `Ok(None)`
//! (more bytes needed), a typed [`Pdu`] borrowing from the buffer, or a
//! [`DecodeError`] that says which termination request to send. The total PDU
//! length is checked against [`DecodeLimits`] from the 8-byte common header, before
//! any body bytes are awaited, so a hostile PLEN never makes the caller buffer more
//! than the configured bound. Encoders append to a `Vec<u8>`.
//!
//! Layout of every PDU: `[header HLEN][header digest 4?][pad to PDO][data][data digest 4?]`.

mod capsule;
mod data;
mod header;
mod ic;
mod r2t;
mod term;

pub use capsule::{CapsuleCmd, CapsuleResp, CAPSULE_CMD_HLEN, CAPSULE_RESP_HLEN};
pub use data::{DataPdu, DATA_HLEN};
pub use header::{CommonHeader, PduType, COMMON_HEADER_LEN};
pub use ic::{IcReq, IcResp, IC_PDU_LEN};
pub use r2t::{R2t, R2T_HLEN};
pub use term::{FatalErrorStatus, TermReq, TERM_HLEN, TERM_MAX_PLEN};

/// Length of a header or data digest.
pub const DIGEST_LEN: usize = 4;

/// PDU flag: a header digest follows the header (HDGSTF).
pub const FLAG_HDGST: u8 = 0x01;
/// PDU flag: a data digest follows the data (DDGSTF).
pub const FLAG_DDGST: u8 = 0x02;
/// Data PDU flag: last PDU of the transfer (LAST_PDU).
pub const FLAG_DATA_LAST: u8 = 0x04;
/// C2HData flag: the command completed successfully, no CapsuleResp follows (SUCCESS).
pub const FLAG_DATA_SUCCESS: u8 = 0x08;

/// Which digests were negotiated at connection setup (ICReq/ICResp).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Digests {
    /// Header digest (crc32c over the PDU header) on every PDU after ICResp.
    pub header: bool,
    /// Data digest (crc32c over the data) on every PDU that carries data.
    pub data: bool,
}

impl Digests {
    fn header_len(self) -> usize {
        if self.header {
            DIGEST_LEN
        } else {
            0
        }
    }
}

/// Bounds the decoder enforces before buffering a PDU body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest in-capsule data accepted in a CapsuleCmd, in bytes.
    pub capsule_data_max: u32,
    /// Largest data section of an H2CData or C2HData PDU, in bytes.
    pub data_pdu_max: u32,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            capsule_data_max: 8192,
            data_pdu_max: 128 * 1024,
        }
    }
}

impl DecodeLimits {
    /// Largest PLEN any PDU may have under these limits.
    pub fn plen_max(&self) -> usize {
        // Header, header digest, up to 255 bytes of padding, data, data digest.
        let data = self.capsule_data_max.max(self.data_pdu_max) as usize;
        CAPSULE_CMD_HLEN + DIGEST_LEN + 255 + data + DIGEST_LEN
    }
}

/// One decoded PDU, borrowing its data section from the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pdu<'a> {
    /// Host-to-controller connection initialisation request.
    IcReq(IcReq),
    /// Controller-to-host connection initialisation response.
    IcResp(IcResp),
    /// Host-to-controller terminate connection request.
    H2CTermReq(TermReq<'a>),
    /// Controller-to-host terminate connection request.
    C2HTermReq(TermReq<'a>),
    /// A command capsule, with optional in-capsule data.
    CapsuleCmd(CapsuleCmd<'a>),
    /// A response capsule (completion queue entry).
    CapsuleResp(CapsuleResp),
    /// Host-to-controller data for a write.
    H2CData(DataPdu<'a>),
    /// Controller-to-host data for a read.
    C2HData(DataPdu<'a>),
    /// Ready-to-transfer: the controller asks for a range of write data.
    R2T(R2t),
}

/// A successfully decoded PDU and how many buffer bytes it occupied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decoded<'a> {
    /// The typed PDU.
    pub pdu: Pdu<'a>,
    /// Bytes consumed from the front of the buffer (the PDU's PLEN).
    pub len: usize,
    /// False when a data digest was present and did not match. The PDU is still
    /// well-formed; the command it belongs to must fail with a transport error.
    pub data_digest_ok: bool,
}

/// Why a PDU could not be decoded. Every variant means the peer misbehaved and
/// the connection must be terminated with the matching fatal error status.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The PDU type is not one NVMe/TCP defines.
    #[error("unknown PDU type {pdu_type:#x}")]
    UnknownType {
        /// The received PDU-Type byte.
        pdu_type: u8,
    },
    /// HLEN does not match the PDU type.
    #[error("PDU type {pdu_type:?} with HLEN {hlen}")]
    HeaderLength {
        /// The PDU type.
        pdu_type: PduType,
        /// The received HLEN.
        hlen: u8,
    },
    /// PLEN is inconsistent with the header, padding and digests.
    #[error("PDU type {pdu_type:?} with inconsistent PLEN {plen}")]
    PduLength {
        /// The PDU type.
        pdu_type: PduType,
        /// The received PLEN.
        plen: u32,
    },
    /// PLEN exceeds the configured bound.
    #[error("PDU length {plen} exceeds the limit {max}")]
    TooLong {
        /// The received PLEN.
        plen: u32,
        /// The largest PLEN accepted.
        max: u32,
    },
    /// PDO points inside the header or past the data.
    #[error("PDU data offset {pdo} is invalid")]
    DataOffset {
        /// The received PDO.
        pdo: u8,
    },
    /// A digest flag differs from what was negotiated.
    #[error("digest flags {flags:#x} do not match the negotiated digests")]
    DigestFlags {
        /// The received flags.
        flags: u8,
    },
    /// The header digest does not match the header.
    #[error("header digest mismatch")]
    HeaderDigest,
    /// A length field inside the header disagrees with the data carried.
    #[error("data length field {field} does not match the {carried} data bytes carried")]
    DataLength {
        /// The DATAL field.
        field: u32,
        /// The data bytes actually present.
        carried: usize,
    },
    /// A field holds a value this implementation does not support (for example PFV).
    #[error("unsupported value in header byte {offset}")]
    Unsupported {
        /// Byte offset of the field in the PDU header.
        offset: u32,
    },
}

impl DecodeError {
    /// Fatal Error Status to report in the termination request.
    pub fn fes(&self) -> FatalErrorStatus {
        match self {
            DecodeError::UnknownType { .. }
            | DecodeError::HeaderLength { .. }
            | DecodeError::PduLength { .. }
            | DecodeError::DataOffset { .. }
            | DecodeError::DigestFlags { .. }
            | DecodeError::DataLength { .. } => FatalErrorStatus::InvalidHeaderField,
            DecodeError::TooLong { .. } => FatalErrorStatus::DataLimitExceeded,
            DecodeError::HeaderDigest => FatalErrorStatus::HeaderDigestError,
            DecodeError::Unsupported { .. } => FatalErrorStatus::UnsupportedParameter,
        }
    }

    /// Fatal Error Information: the byte offset of the offending header field.
    pub fn fei(&self) -> u32 {
        match self {
            DecodeError::UnknownType { .. } => 0,
            DecodeError::DigestFlags { .. } => 1,
            DecodeError::HeaderLength { .. } => 2,
            DecodeError::DataOffset { .. } => 3,
            DecodeError::PduLength { .. } | DecodeError::TooLong { .. } => 4,
            DecodeError::HeaderDigest => 0,
            DecodeError::DataLength { .. } => 16,
            DecodeError::Unsupported { offset } => *offset,
        }
    }
}

/// Decodes the PDU at the front of `buf`, or returns `Ok(None)` if `buf` does not
/// yet hold all of it. `digests` are the negotiated digests (both off before ICResp).
pub fn decode<'a>(
    buf: &'a [u8],
    digests: Digests,
    limits: &DecodeLimits,
) -> Result<Option<Decoded<'a>>, DecodeError> {
    let Some(ch) = checked_header(buf, digests, limits)? else {
        return Ok(None);
    };
    let hlen = usize::from(ch.hlen);
    let plen = ch.plen as usize;
    if buf.len() < plen {
        return Ok(None);
    }
    let pdu_bytes = &buf[..plen];
    let layout = Layout::of(&ch, pdu_bytes, digests)?;
    let header = &pdu_bytes[..hlen];
    let data = &pdu_bytes[layout.data_start..layout.data_end];
    let data_digest_ok = if layout.has_data_digest {
        let expected = crate::wire::Fields(pdu_bytes).u32(layout.data_end);
        expected == Some(crc32c::crc32c(data))
    } else {
        true
    };
    let pdu = match ch.pdu_type {
        PduType::IcReq => Pdu::IcReq(IcReq::decode(header)?),
        PduType::IcResp => Pdu::IcResp(IcResp::decode(header)?),
        PduType::H2CTermReq => Pdu::H2CTermReq(TermReq::decode(header, data)?),
        PduType::C2HTermReq => Pdu::C2HTermReq(TermReq::decode(header, data)?),
        PduType::CapsuleCmd => Pdu::CapsuleCmd(CapsuleCmd::decode(header, data)?),
        PduType::CapsuleResp => Pdu::CapsuleResp(CapsuleResp::decode(header)?),
        PduType::H2CData => Pdu::H2CData(DataPdu::decode(&ch, header, data)?),
        PduType::C2HData => Pdu::C2HData(DataPdu::decode(&ch, header, data)?),
        PduType::R2T => Pdu::R2T(R2t::decode(header)?),
    };
    Ok(Some(Decoded {
        pdu,
        len: plen,
        data_digest_ok,
    }))
}

/// The header of an H2CData PDU at the front of `buf` whose data has not all
/// arrived, checked as [`decode`] checks it (all but the data digest), once
/// `buf` holds everything before the data: so the data can be received
/// straight into the buffer it belongs in. `Ok(None)` while the header is
/// incomplete, when the whole PDU is already there ([`decode`] it), for other
/// PDU types and for PDUs without data.
pub fn decode_h2c_head(
    buf: &[u8],
    digests: Digests,
    limits: &DecodeLimits,
) -> Result<Option<DataHead>, DecodeError> {
    let Some(ch) = checked_header(buf, digests, limits)? else {
        return Ok(None);
    };
    let plen = ch.plen as usize;
    if ch.pdu_type != PduType::H2CData || buf.len() >= plen {
        return Ok(None);
    }
    let header_end = usize::from(ch.hlen) + digests.header_len();
    if buf.len() < header_end.max(usize::from(ch.pdo)) {
        return Ok(None);
    }
    let layout = Layout::of(&ch, buf, digests)?;
    if layout.data_start == layout.data_end {
        return Ok(None);
    }
    let header = &buf[..usize::from(ch.hlen)];
    let data_len = layout.data_end - layout.data_start;
    let fields = DataPdu::decode_fields(&ch, header, data_len)?;
    Ok(Some(DataHead {
        fields,
        data_start: layout.data_start,
        data_len,
        has_data_digest: layout.has_data_digest,
    }))
}

/// An H2CData PDU's header, decoded before its data arrives ([`decode_h2c_head`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataHead {
    /// The header's fields; its `data` is empty (the data is still to come).
    pub fields: DataPdu<'static>,
    /// Where the data starts, from the PDU's first byte.
    pub data_start: usize,
    /// Bytes of data (DATAL).
    pub data_len: usize,
    /// A 4-byte data digest follows the data.
    pub has_data_digest: bool,
}

/// The total length of the PDU that starts `buf`, once its common header is
/// there (`Ok(None)` before), checked against `limits` as [`decode`] checks it:
/// a receiver holding part of a PDU knows how many more bytes complete it
/// without trusting a hostile PLEN.
pub fn pdu_len(
    buf: &[u8],
    digests: Digests,
    limits: &DecodeLimits,
) -> Result<Option<usize>, DecodeError> {
    Ok(checked_header(buf, digests, limits)?.map(|ch| ch.plen as usize))
}

/// The common header at the front of `buf` with its PLEN within the type's
/// bound and not shorter than its header.
fn checked_header(
    buf: &[u8],
    digests: Digests,
    limits: &DecodeLimits,
) -> Result<Option<CommonHeader>, DecodeError> {
    let Some(ch) = CommonHeader::decode(buf)? else {
        return Ok(None);
    };
    let plen_max = ch.pdu_type.plen_max(digests, limits);
    if ch.plen as usize > plen_max {
        return Err(DecodeError::TooLong {
            plen: ch.plen,
            max: u32::try_from(plen_max).unwrap_or(u32::MAX),
        });
    }
    if (ch.plen as usize) < usize::from(ch.hlen) {
        return Err(DecodeError::PduLength {
            pdu_type: ch.pdu_type,
            plen: ch.plen,
        });
    }
    Ok(Some(ch))
}

/// Where the data section of a PDU sits, after validating flags, PDO and digests.
struct Layout {
    data_start: usize,
    data_end: usize,
    /// A data digest follows the data, at `data_end`.
    has_data_digest: bool,
}

impl Layout {
    /// The layout of the PDU with common header `ch`; `pdu` holds at least its
    /// header and header digest.
    fn of(ch: &CommonHeader, pdu: &[u8], digests: Digests) -> Result<Layout, DecodeError> {
        let hlen = usize::from(ch.hlen);
        let plen = ch.plen as usize;
        let bad_len = || DecodeError::PduLength {
            pdu_type: ch.pdu_type,
            plen: ch.plen,
        };
        if !ch.pdu_type.carries_digests() {
            // ICReq/ICResp/TermReq: never digested; data (TermReq only) follows the header.
            if ch.flags & (FLAG_HDGST | FLAG_DDGST) != 0 {
                return Err(DecodeError::DigestFlags { flags: ch.flags });
            }
            return Ok(Layout {
                data_start: hlen,
                data_end: plen,
                has_data_digest: false,
            });
        }
        let has_hdgst = ch.flags & FLAG_HDGST != 0;
        if has_hdgst != digests.header {
            return Err(DecodeError::DigestFlags { flags: ch.flags });
        }
        let header_end = hlen + digests.header_len();
        if plen < header_end {
            return Err(bad_len());
        }
        if has_hdgst {
            let received = crate::wire::Fields(pdu).u32(hlen).ok_or_else(bad_len)?;
            if crc32c::crc32c(&pdu[..hlen]) != received {
                return Err(DecodeError::HeaderDigest);
            }
        }
        let has_ddgst = ch.flags & FLAG_DDGST != 0;
        if !ch.pdu_type.carries_data() {
            if has_ddgst {
                return Err(DecodeError::DigestFlags { flags: ch.flags });
            }
            if plen != header_end {
                return Err(bad_len());
            }
            return Ok(Layout {
                data_start: plen,
                data_end: plen,
                has_data_digest: false,
            });
        }
        if plen == header_end && (ch.pdo == 0 || usize::from(ch.pdo) == header_end) {
            // A CapsuleCmd without in-capsule data (or an empty data PDU).
            if has_ddgst {
                return Err(DecodeError::DigestFlags { flags: ch.flags });
            }
            return Ok(Layout {
                data_start: plen,
                data_end: plen,
                has_data_digest: false,
            });
        }
        if has_ddgst != digests.data {
            return Err(DecodeError::DigestFlags { flags: ch.flags });
        }
        let pdo = usize::from(ch.pdo);
        if pdo < header_end {
            return Err(DecodeError::DataOffset { pdo: ch.pdo });
        }
        let data_end = if has_ddgst {
            plen.checked_sub(DIGEST_LEN).ok_or_else(bad_len)?
        } else {
            plen
        };
        if pdo > data_end {
            return Err(DecodeError::DataOffset { pdo: ch.pdo });
        }
        Ok(Layout {
            data_start: pdo,
            data_end,
            has_data_digest: has_ddgst,
        })
    }
}

/// Appends a complete PDU: common header, `specific` header bytes (HLEN − 8),
/// optional header digest, padding up to `data_align` (a multiple of 4, or 0 for
/// none), `data`, and an optional data digest. Returns nothing; `out` grows.
pub(crate) fn encode_pdu(
    out: &mut Vec<u8>,
    pdu_type: PduType,
    flags: u8,
    specific: &[u8],
    data: &[u8],
    digests: Digests,
    data_align: usize,
) {
    let start = out.len();
    encode_pdu_header(
        out,
        pdu_type,
        flags,
        specific,
        data.len(),
        digests,
        data_align,
    );
    out.extend_from_slice(data);
    if let Some(dd) = data_digest_for(pdu_type, data, digests) {
        out.extend_from_slice(&dd);
    }
    debug_assert_eq!(
        crate::wire::Fields(&out[start..])
            .u32(4)
            .map(|p| p as usize),
        Some(out.len() - start)
    );
}

/// The data digest bytes to append after `data`, if one is due.
pub(crate) fn data_digest_for(pdu_type: PduType, data: &[u8], digests: Digests) -> Option<[u8; 4]> {
    if pdu_type.carries_digests() && pdu_type.carries_data() && digests.data && !data.is_empty() {
        Some(crc32c::crc32c(data).to_le_bytes())
    } else {
        None
    }
}

/// Appends everything of a PDU that precedes its data section, computing PLEN for
/// `data_len` data bytes. Used directly by zero-copy senders of C2HData.
pub(crate) fn encode_pdu_header(
    out: &mut Vec<u8>,
    pdu_type: PduType,
    mut flags: u8,
    specific: &[u8],
    data_len: usize,
    digests: Digests,
    data_align: usize,
) {
    let hlen = COMMON_HEADER_LEN + specific.len();
    let digested = pdu_type.carries_digests();
    let hdgst = if digested && digests.header {
        DIGEST_LEN
    } else {
        0
    };
    let ddgst = if digested && pdu_type.carries_data() && digests.data && data_len > 0 {
        DIGEST_LEN
    } else {
        0
    };
    if hdgst > 0 {
        flags |= FLAG_HDGST;
    }
    if ddgst > 0 {
        flags |= FLAG_DDGST;
    }
    let header_end = hlen + hdgst;
    // PDUs without digests (TermReq) carry their data directly after the header
    // and report PDO 0; others report where the data starts.
    let pdo = if data_len == 0 || !digested {
        0
    } else if data_align > 4 {
        header_end.div_ceil(data_align) * data_align
    } else {
        header_end
    };
    let plen = if data_len == 0 {
        header_end
    } else {
        pdo.max(header_end) + data_len + ddgst
    };
    let start = out.len();
    out.extend_from_slice(&[pdu_type as u8, flags, hlen as u8, pdo as u8]);
    out.extend_from_slice(&(plen as u32).to_le_bytes());
    out.extend_from_slice(specific);
    if hdgst > 0 {
        let d = crc32c::crc32c(&out[start..start + hlen]);
        out.extend_from_slice(&d.to_le_bytes());
    }
    if data_len > 0 && digested {
        out.resize(start + pdo, 0);
    }
}

#[cfg(test)]
mod tests;
