//! The 16-byte completion queue entry (NVMe Base 2.0, figure 92).

use crate::status::Status;
use crate::wire::Fields;

/// The More bit (M) of the status field: the Error Information log holds an
/// entry for this command (NVMe Base 2.0, figure 100).
pub const STATUS_FIELD_MORE: u16 = 1 << 13;

/// A completion queue entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Completion {
    /// Command-specific result (DW0 in the low half, DW1 in the high half).
    pub result: u64,
    /// Submission queue head pointer.
    pub sq_head: u16,
    /// Submission queue identifier.
    pub sq_id: u16,
    /// Command identifier of the completed command.
    pub cid: u16,
    /// Raw 15-bit status field (without the phase tag); see [`Status::field`].
    pub status_field: u16,
}

impl Completion {
    /// A completion for `cid` with `status` and DW0 `dw0`.
    pub fn new(cid: u16, status: Status, dw0: u32) -> Completion {
        Completion {
            result: u64::from(dw0),
            sq_head: 0,
            sq_id: 0,
            cid,
            status_field: status.field(),
        }
    }

    /// Encodes to wire bytes.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.result.to_le_bytes());
        b[8..10].copy_from_slice(&self.sq_head.to_le_bytes());
        b[10..12].copy_from_slice(&self.sq_id.to_le_bytes());
        b[12..14].copy_from_slice(&self.cid.to_le_bytes());
        b[14..16].copy_from_slice(&(self.status_field << 1).to_le_bytes());
        b
    }

    /// Decodes wire bytes.
    pub fn decode(b: &[u8; 16]) -> Completion {
        let f = Fields(b);
        Completion {
            result: f.u64(0).unwrap_or(0),
            sq_head: f.u16(8).unwrap_or(0),
            sq_id: f.u16(10).unwrap_or(0),
            cid: f.u16(12).unwrap_or(0),
            status_field: f.u16(14).unwrap_or(0) >> 1,
        }
    }

    /// DW0 of the result.
    pub fn dw0(&self) -> u32 {
        self.result as u32
    }

    /// True when the More bit says the Error Information log has an entry for
    /// this command.
    pub fn more(&self) -> bool {
        self.status_field & STATUS_FIELD_MORE != 0
    }

    /// The decoded status (errors for codes this crate does not name).
    pub fn status(&self) -> Result<Status, crate::status::UnknownStatus> {
        Status::from_field(self.status_field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_places_status_above_phase_bit() {
        let c = Completion {
            result: 0x1_0000_0002,
            sq_head: 3,
            sq_id: 4,
            cid: 5,
            status_field: Status::InvalidField.field(),
        };
        let b = c.encode();
        assert_eq!(u16::from_le_bytes([b[14], b[15]]), 0x4002 << 1);
        assert_eq!(Completion::decode(&b), c);
    }
}
