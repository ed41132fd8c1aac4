//! CapsuleCmd and CapsuleResp (TP 8000, figures 28 and 29).

use super::{encode_pdu, DecodeError, Digests, PduType};

/// HLEN of a CapsuleCmd: common header plus a 64-byte submission queue entry.
pub const CAPSULE_CMD_HLEN: usize = 72;
/// HLEN of a CapsuleResp: common header plus a 16-byte completion queue entry.
pub const CAPSULE_RESP_HLEN: usize = 24;

/// A command capsule: the 64-byte SQE and any in-capsule data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapsuleCmd<'a> {
    /// The submission queue entry, decoded further by [`crate::nvme::Command`].
    pub sqe: [u8; 64],
    /// In-capsule data (empty when none).
    pub data: &'a [u8],
}

impl<'a> CapsuleCmd<'a> {
    pub(super) fn decode(header: &[u8], data: &'a [u8]) -> Result<CapsuleCmd<'a>, DecodeError> {
        let sqe = crate::wire::Fields(header)
            .array::<64>(8)
            .ok_or(DecodeError::PduLength {
                pdu_type: PduType::CapsuleCmd,
                plen: header.len() as u32,
            })?;
        Ok(CapsuleCmd { sqe, data })
    }

    /// Appends the encoded capsule (in-capsule data directly after the header).
    pub fn encode(&self, digests: Digests, out: &mut Vec<u8>) {
        encode_pdu(
            out,
            PduType::CapsuleCmd,
            0,
            &self.sqe,
            self.data,
            digests,
            0,
        );
    }
}

/// A response capsule carrying one completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapsuleResp {
    /// The 16-byte completion queue entry, decoded further by [`crate::nvme::Completion`].
    pub cqe: [u8; 16],
}

impl CapsuleResp {
    pub(super) fn decode(header: &[u8]) -> Result<CapsuleResp, DecodeError> {
        let cqe = crate::wire::Fields(header)
            .array::<16>(8)
            .ok_or(DecodeError::PduLength {
                pdu_type: PduType::CapsuleResp,
                plen: header.len() as u32,
            })?;
        Ok(CapsuleResp { cqe })
    }

    /// Appends the encoded response.
    pub fn encode(&self, digests: Digests, out: &mut Vec<u8>) {
        encode_pdu(out, PduType::CapsuleResp, 0, &self.cqe, &[], digests, 0);
    }
}
