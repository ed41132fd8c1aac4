//! R2T: ready to transfer (TP 8000, figure 32).

use super::{encode_pdu, DecodeError, Digests, PduType};
use crate::wire::Fields;

/// HLEN of an R2T.
pub const R2T_HLEN: usize = 24;

/// The controller asks the host for `length` bytes of a write at `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct R2t {
    /// Command identifier of the write (CCCID).
    pub command_id: u16,
    /// Transfer tag the host echoes in its H2CData PDUs.
    pub ttag: u16,
    /// Offset of the requested range within the command's data (R2TO).
    pub offset: u32,
    /// Length of the requested range (R2TL), never zero.
    pub length: u32,
}

impl R2t {
    pub(super) fn decode(header: &[u8]) -> Result<R2t, DecodeError> {
        let f = Fields(header);
        let short = DecodeError::PduLength {
            pdu_type: PduType::R2T,
            plen: header.len() as u32,
        };
        let r2t = R2t {
            command_id: f.u16(8).ok_or(short.clone())?,
            ttag: f.u16(10).ok_or(short.clone())?,
            offset: f.u32(12).ok_or(short.clone())?,
            length: f.u32(16).ok_or(short)?,
        };
        if r2t.length == 0 {
            return Err(DecodeError::Unsupported { offset: 16 });
        }
        Ok(r2t)
    }

    /// Appends the encoded R2T.
    pub fn encode(&self, digests: Digests, out: &mut Vec<u8>) {
        let mut s = [0u8; R2T_HLEN - 8];
        s[0..2].copy_from_slice(&self.command_id.to_le_bytes());
        s[2..4].copy_from_slice(&self.ttag.to_le_bytes());
        s[4..8].copy_from_slice(&self.offset.to_le_bytes());
        s[8..12].copy_from_slice(&self.length.to_le_bytes());
        encode_pdu(out, PduType::R2T, 0, &s, &[], digests, 0);
    }
}
