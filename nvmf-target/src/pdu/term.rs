//! H2CTermReq and C2HTermReq (TP 8000, figures 24 and 25).

use super::{encode_pdu, DecodeError, Digests, PduType};
use crate::wire::Fields;

/// HLEN of a termination request.
pub const TERM_HLEN: usize = 24;
/// Largest PLEN of a termination request: header plus up to 128 bytes of the
/// offending PDU header.
pub const TERM_MAX_PLEN: usize = 152;

/// Fatal Error Status values (TP 8000, figure 24).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum FatalErrorStatus {
    /// Invalid PDU header field; FEI holds the field's byte offset.
    InvalidHeaderField = 0x01,
    /// A PDU arrived that is not valid in the current state.
    PduSequenceError = 0x02,
    /// Header digest mismatch.
    HeaderDigestError = 0x03,
    /// Data offset/length outside the command's transfer.
    DataOutOfRange = 0x04,
    /// More data than allowed (R2T or MAXH2CDATA limits).
    DataLimitExceeded = 0x05,
    /// A parameter value is not supported (for example PFV).
    UnsupportedParameter = 0x06,
}

/// A termination request: why the sender is closing the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TermReq<'a> {
    /// Fatal Error Status (raw, so unknown values from a peer are kept).
    pub fes: u16,
    /// Fatal Error Information.
    pub fei: u32,
    /// The header of the PDU that caused the error (up to 128 bytes).
    pub data: &'a [u8],
}

impl<'a> TermReq<'a> {
    pub(super) fn decode(header: &[u8], data: &'a [u8]) -> Result<TermReq<'a>, DecodeError> {
        let f = Fields(header);
        let short = DecodeError::PduLength {
            pdu_type: PduType::C2HTermReq,
            plen: header.len() as u32,
        };
        Ok(TermReq {
            fes: f.u16(8).ok_or(short.clone())?,
            fei: f.u32(10).ok_or(short)?,
            data,
        })
    }

    /// Appends the encoded PDU of `pdu_type` (H2CTermReq or C2HTermReq); the
    /// offending header is truncated to 128 bytes. Never digested.
    pub fn encode(&self, pdu_type: PduType, out: &mut Vec<u8>) {
        assert!(matches!(
            pdu_type,
            PduType::H2CTermReq | PduType::C2HTermReq
        ));
        let mut s = [0u8; TERM_HLEN - 8];
        s[0..2].copy_from_slice(&self.fes.to_le_bytes());
        s[2..6].copy_from_slice(&self.fei.to_le_bytes());
        let n = self.data.len().min(TERM_MAX_PLEN - TERM_HLEN);
        encode_pdu(out, pdu_type, 0, &s, &self.data[..n], Digests::default(), 0);
    }
}
