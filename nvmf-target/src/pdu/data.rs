//! H2CData and C2HData (TP 8000, figures 30 and 31): one layout, two directions.

use super::{
    encode_pdu, encode_pdu_header, CommonHeader, DecodeError, Digests, PduType, FLAG_DATA_LAST,
    FLAG_DATA_SUCCESS,
};
use crate::wire::Fields;

/// HLEN of H2CData and C2HData.
pub const DATA_HLEN: usize = 24;

/// A data PDU: a slice of one command's transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataPdu<'a> {
    /// Command identifier of the command the data belongs to (CCCID).
    pub command_id: u16,
    /// Transfer tag from the R2T (H2CData only; 0 in C2HData).
    pub ttag: u16,
    /// Offset of this data within the command's transfer (DATAO).
    pub offset: u32,
    /// Last PDU of the transfer (LAST_PDU).
    pub last: bool,
    /// C2HData only: the command succeeded and no CapsuleResp follows (SUCCESS).
    pub success: bool,
    /// The data (DATAL bytes).
    pub data: &'a [u8],
}

impl<'a> DataPdu<'a> {
    pub(super) fn decode(
        ch: &CommonHeader,
        header: &[u8],
        data: &'a [u8],
    ) -> Result<DataPdu<'a>, DecodeError> {
        let fields = DataPdu::decode_fields(ch, header, data.len())?;
        Ok(DataPdu { data, ..fields })
    }

    /// The header's fields, checked against `data_len` bytes of data; the
    /// result's `data` is empty.
    pub(super) fn decode_fields(
        ch: &CommonHeader,
        header: &[u8],
        data_len: usize,
    ) -> Result<DataPdu<'static>, DecodeError> {
        let f = Fields(header);
        let short = DecodeError::PduLength {
            pdu_type: ch.pdu_type,
            plen: ch.plen,
        };
        let command_id = f.u16(8).ok_or(short.clone())?;
        let ttag = f.u16(10).ok_or(short.clone())?;
        let offset = f.u32(12).ok_or(short.clone())?;
        let length = f.u32(16).ok_or(short)?;
        if length as usize != data_len {
            return Err(DecodeError::DataLength {
                field: length,
                carried: data_len,
            });
        }
        let last = ch.flags & FLAG_DATA_LAST != 0;
        let success = ch.flags & FLAG_DATA_SUCCESS != 0;
        if success && (ch.pdu_type != PduType::C2HData || !last) {
            // SUCCESS is only defined for C2HData and requires LAST_PDU.
            return Err(DecodeError::Unsupported { offset: 1 });
        }
        Ok(DataPdu {
            command_id,
            ttag,
            offset,
            last,
            success,
            data: &[],
        })
    }

    fn specific(&self) -> [u8; DATA_HLEN - 8] {
        let mut s = [0u8; DATA_HLEN - 8];
        s[0..2].copy_from_slice(&self.command_id.to_le_bytes());
        s[2..4].copy_from_slice(&self.ttag.to_le_bytes());
        s[4..8].copy_from_slice(&self.offset.to_le_bytes());
        s[8..12].copy_from_slice(&(self.data.len() as u32).to_le_bytes());
        s
    }

    fn flags(&self) -> u8 {
        (if self.last { FLAG_DATA_LAST } else { 0 })
            | (if self.success { FLAG_DATA_SUCCESS } else { 0 })
    }

    /// Appends a complete PDU of type `pdu_type` (H2CData or C2HData). `data_align`
    /// is the peer's requested data alignment in bytes (0 or 4 for none).
    pub fn encode(
        &self,
        pdu_type: PduType,
        digests: Digests,
        data_align: usize,
        out: &mut Vec<u8>,
    ) {
        assert!(matches!(pdu_type, PduType::H2CData | PduType::C2HData));
        encode_pdu(
            out,
            pdu_type,
            self.flags(),
            &self.specific(),
            self.data,
            digests,
            data_align,
        );
    }

    /// Appends only the part before the data (header, digest, padding) so the
    /// caller can send the data from its own buffer; the data digest to send
    /// after it is returned. `self.data` is used for its length and digest.
    pub fn encode_header(
        &self,
        pdu_type: PduType,
        digests: Digests,
        data_align: usize,
        out: &mut Vec<u8>,
    ) -> Option<[u8; 4]> {
        assert!(matches!(pdu_type, PduType::H2CData | PduType::C2HData));
        encode_pdu_header(
            out,
            pdu_type,
            self.flags(),
            &self.specific(),
            self.data.len(),
            digests,
            data_align,
        );
        super::data_digest_for(pdu_type, self.data, digests)
    }
}
