//! The 8-byte common header every NVMe/TCP PDU starts with.

use super::{
    DecodeError, DecodeLimits, Digests, CAPSULE_CMD_HLEN, DATA_HLEN, DIGEST_LEN, IC_PDU_LEN,
    TERM_MAX_PLEN,
};
use crate::wire::Fields;

/// Length of the common header (PDU-Type, FLAGS, HLEN, PDO, PLEN).
pub const COMMON_HEADER_LEN: usize = 8;

/// NVMe/TCP PDU types (TP 8000, figure 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PduType {
    /// ICReq.
    IcReq = 0x00,
    /// ICResp.
    IcResp = 0x01,
    /// H2CTermReq.
    H2CTermReq = 0x02,
    /// C2HTermReq.
    C2HTermReq = 0x03,
    /// CapsuleCmd.
    CapsuleCmd = 0x04,
    /// CapsuleResp.
    CapsuleResp = 0x05,
    /// H2CData.
    H2CData = 0x06,
    /// C2HData.
    C2HData = 0x07,
    /// R2T.
    R2T = 0x09,
}

impl PduType {
    /// Parses the PDU-Type byte.
    pub fn from_u8(v: u8) -> Option<PduType> {
        Some(match v {
            0x00 => PduType::IcReq,
            0x01 => PduType::IcResp,
            0x02 => PduType::H2CTermReq,
            0x03 => PduType::C2HTermReq,
            0x04 => PduType::CapsuleCmd,
            0x05 => PduType::CapsuleResp,
            0x06 => PduType::H2CData,
            0x07 => PduType::C2HData,
            0x09 => PduType::R2T,
            _ => return None,
        })
    }

    /// The only HLEN valid for this type.
    pub fn hlen(self) -> u8 {
        match self {
            PduType::IcReq | PduType::IcResp => IC_PDU_LEN as u8,
            PduType::CapsuleCmd => CAPSULE_CMD_HLEN as u8,
            PduType::H2CTermReq
            | PduType::C2HTermReq
            | PduType::CapsuleResp
            | PduType::H2CData
            | PduType::C2HData
            | PduType::R2T => 24,
        }
    }

    /// Whether header/data digests apply to this type once negotiated.
    pub fn carries_digests(self) -> bool {
        !matches!(
            self,
            PduType::IcReq | PduType::IcResp | PduType::H2CTermReq | PduType::C2HTermReq
        )
    }

    /// Whether this type may carry a data section.
    pub fn carries_data(self) -> bool {
        matches!(
            self,
            PduType::CapsuleCmd
                | PduType::H2CData
                | PduType::C2HData
                | PduType::H2CTermReq
                | PduType::C2HTermReq
        )
    }

    /// Largest PLEN accepted for this type under `limits`.
    pub fn plen_max(self, digests: Digests, limits: &DecodeLimits) -> usize {
        let hd = if digests.header { DIGEST_LEN } else { 0 };
        // Up to 255 bytes of header + padding (PDO is a byte), plus data and its digest.
        match self {
            PduType::IcReq | PduType::IcResp => IC_PDU_LEN,
            PduType::H2CTermReq | PduType::C2HTermReq => TERM_MAX_PLEN,
            PduType::CapsuleResp | PduType::R2T => 24 + hd,
            PduType::CapsuleCmd => 255 + limits.capsule_data_max as usize + DIGEST_LEN,
            PduType::H2CData | PduType::C2HData => {
                (255usize).max(DATA_HLEN + hd) + limits.data_pdu_max as usize + DIGEST_LEN
            }
        }
    }
}

/// The common header, validated for a known type and the type's HLEN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    /// PDU type.
    pub pdu_type: PduType,
    /// Type-specific flags (digest presence, LAST_PDU, SUCCESS).
    pub flags: u8,
    /// Header length.
    pub hlen: u8,
    /// PDU data offset.
    pub pdo: u8,
    /// Total PDU length including digests and padding.
    pub plen: u32,
}

impl CommonHeader {
    /// Decodes the common header, or `Ok(None)` if fewer than 8 bytes are present.
    pub fn decode(buf: &[u8]) -> Result<Option<CommonHeader>, DecodeError> {
        let f = Fields(buf);
        let (Some(ty), Some(flags), Some(hlen), Some(pdo), Some(plen)) =
            (f.u8(0), f.u8(1), f.u8(2), f.u8(3), f.u32(4))
        else {
            return Ok(None);
        };
        let pdu_type = PduType::from_u8(ty).ok_or(DecodeError::UnknownType { pdu_type: ty })?;
        if hlen != pdu_type.hlen() {
            return Err(DecodeError::HeaderLength { pdu_type, hlen });
        }
        Ok(Some(CommonHeader {
            pdu_type,
            flags,
            hlen,
            pdo,
            plen,
        }))
    }
}
