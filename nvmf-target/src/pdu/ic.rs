//! ICReq and ICResp: connection initialisation (TP 8000, figures 26 and 27).

use super::{encode_pdu, DecodeError, Digests, PduType};
use crate::wire::Fields;

/// Length of both ICReq and ICResp (HLEN = PLEN = 128).
pub const IC_PDU_LEN: usize = 128;

const DIGEST_HEADER_BIT: u8 = 0x01;
const DIGEST_DATA_BIT: u8 = 0x02;

fn digests_from(byte: u8) -> Digests {
    Digests {
        header: byte & DIGEST_HEADER_BIT != 0,
        data: byte & DIGEST_DATA_BIT != 0,
    }
}

fn digest_byte(d: Digests) -> u8 {
    (if d.header { DIGEST_HEADER_BIT } else { 0 }) | (if d.data { DIGEST_DATA_BIT } else { 0 })
}

/// ICReq: the host's first PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcReq {
    /// PDU format version; only 0 exists.
    pub pfv: u16,
    /// Host PDU data alignment: C2H data must start at a multiple of `(hpda + 1) * 4`.
    pub hpda: u8,
    /// Digests the host asks for.
    pub digests: Digests,
    /// Maximum outstanding R2Ts per command, 0-based.
    pub maxr2t: u32,
}

impl IcReq {
    pub(super) fn decode(header: &[u8]) -> Result<IcReq, DecodeError> {
        let f = Fields(header);
        let short = DecodeError::PduLength {
            pdu_type: PduType::IcReq,
            plen: header.len() as u32,
        };
        let pfv = f.u16(8).ok_or(short.clone())?;
        let hpda = f.u8(10).ok_or(short.clone())?;
        let dgst = f.u8(11).ok_or(short.clone())?;
        let maxr2t = f.u32(12).ok_or(short)?;
        if pfv != 0 {
            return Err(DecodeError::Unsupported { offset: 8 });
        }
        if hpda > 31 {
            return Err(DecodeError::Unsupported { offset: 10 });
        }
        Ok(IcReq {
            pfv,
            hpda,
            digests: digests_from(dgst),
            maxr2t,
        })
    }

    /// Appends the encoded ICReq to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut specific = [0u8; IC_PDU_LEN - 8];
        specific[0..2].copy_from_slice(&self.pfv.to_le_bytes());
        specific[2] = self.hpda;
        specific[3] = digest_byte(self.digests);
        specific[4..8].copy_from_slice(&self.maxr2t.to_le_bytes());
        encode_pdu(
            out,
            PduType::IcReq,
            0,
            &specific,
            &[],
            Digests::default(),
            0,
        );
    }
}

/// ICResp: the controller's answer, fixing digests, alignment and MAXH2CDATA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcResp {
    /// PDU format version (0).
    pub pfv: u16,
    /// Controller PDU data alignment for H2C data (Linux requires 0).
    pub cpda: u8,
    /// Digests enabled for the connection (must equal what the host asked).
    pub digests: Digests,
    /// Maximum data bytes in one H2CData PDU (multiple of 4, at least 4096).
    pub maxh2cdata: u32,
}

impl IcResp {
    pub(super) fn decode(header: &[u8]) -> Result<IcResp, DecodeError> {
        let f = Fields(header);
        let short = DecodeError::PduLength {
            pdu_type: PduType::IcResp,
            plen: header.len() as u32,
        };
        let pfv = f.u16(8).ok_or(short.clone())?;
        let cpda = f.u8(10).ok_or(short.clone())?;
        let dgst = f.u8(11).ok_or(short.clone())?;
        let maxh2cdata = f.u32(12).ok_or(short)?;
        if pfv != 0 {
            return Err(DecodeError::Unsupported { offset: 8 });
        }
        if maxh2cdata < 4096 || maxh2cdata % 4 != 0 {
            return Err(DecodeError::Unsupported { offset: 12 });
        }
        Ok(IcResp {
            pfv,
            cpda,
            digests: digests_from(dgst),
            maxh2cdata,
        })
    }

    /// Appends the encoded ICResp to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut specific = [0u8; IC_PDU_LEN - 8];
        specific[0..2].copy_from_slice(&self.pfv.to_le_bytes());
        specific[2] = self.cpda;
        specific[3] = digest_byte(self.digests);
        specific[4..8].copy_from_slice(&self.maxh2cdata.to_le_bytes());
        encode_pdu(
            out,
            PduType::IcResp,
            0,
            &specific,
            &[],
            Digests::default(),
            0,
        );
    }
}
