//! The 64-byte submission queue entry and its SGL data pointer.

use crate::wire::Fields;

/// A submission queue entry (NVMe Base 2.0, figure 88), kept as raw bytes with
/// typed accessors so every field read is bounds-safe by construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command(pub [u8; 64]);

/// How a command's data is described (the SGL descriptor type byte).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SglKind {
    /// Data Block descriptor, offset subtype: in-capsule data at `address` (ICDOFF-relative).
    InCapsule,
    /// Transport SGL Data Block: host-resident data moved by C2HData / R2T+H2CData.
    Transport,
    /// Any other descriptor type byte (rejected with SGL Descriptor Type Invalid).
    Other(u8),
}

/// The SGL descriptor in DPTR (bytes 24..40).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sgl {
    /// Address (offset for in-capsule data).
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
    /// Descriptor kind.
    pub kind: SglKind,
}

/// SGL type byte for in-capsule data: Data Block descriptor (0h), offset subtype (1h).
pub const SGL_TYPE_IN_CAPSULE: u8 = 0x01;
/// SGL type byte for transport data: Transport SGL Data Block (5h), transport subtype (Ah).
pub const SGL_TYPE_TRANSPORT: u8 = 0x5A;

impl Command {
    fn f(&self) -> Fields<'_> {
        Fields(&self.0)
    }

    /// Opcode (byte 0).
    pub fn opcode(&self) -> u8 {
        self.0[0]
    }

    /// PSDT (bits 7:6 of byte 1): 0 = PRP, 1/2 = SGL.
    pub fn psdt(&self) -> u8 {
        self.0[1] >> 6
    }

    /// FUSE bits (1:0 of byte 1).
    pub fn fuse(&self) -> u8 {
        self.0[1] & 0x3
    }

    /// Command identifier.
    pub fn cid(&self) -> u16 {
        self.f().u16(2).unwrap_or(0)
    }

    /// Namespace identifier (bytes 4..8); for fabrics commands byte 4 is FCTYPE.
    pub fn nsid(&self) -> u32 {
        self.f().u32(4).unwrap_or(0)
    }

    /// Fabrics command type (byte 4).
    pub fn fctype(&self) -> u8 {
        self.0[4]
    }

    /// Command dword `n` (10..=15).
    pub fn cdw(&self, n: usize) -> u32 {
        assert!((10..=15).contains(&n));
        self.f().u32(n * 4).unwrap_or(0)
    }

    /// The SGL data pointer.
    pub fn sgl(&self) -> Sgl {
        let f = self.f();
        let ty = self.0[39];
        Sgl {
            address: f.u64(24).unwrap_or(0),
            length: f.u32(32).unwrap_or(0),
            kind: match ty {
                SGL_TYPE_IN_CAPSULE => SglKind::InCapsule,
                SGL_TYPE_TRANSPORT => SglKind::Transport,
                other => SglKind::Other(other),
            },
        }
    }

    /// A zeroed command with `opcode` and `cid`, PSDT set to SGL as fabrics require.
    pub fn new(opcode: u8, cid: u16) -> Command {
        let mut c = Command([0; 64]);
        c.0[0] = opcode;
        c.0[1] = 0x40;
        c.0[2..4].copy_from_slice(&cid.to_le_bytes());
        c
    }

    /// Sets the command identifier.
    pub fn set_cid(&mut self, cid: u16) {
        self.0[2..4].copy_from_slice(&cid.to_le_bytes());
    }

    /// Sets NSID.
    pub fn set_nsid(&mut self, nsid: u32) {
        self.0[4..8].copy_from_slice(&nsid.to_le_bytes());
    }

    /// Sets command dword `n` (10..=15).
    pub fn set_cdw(&mut self, n: usize, v: u32) {
        assert!((10..=15).contains(&n));
        self.0[n * 4..n * 4 + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets the SGL descriptor.
    pub fn set_sgl(&mut self, address: u64, length: u32, type_byte: u8) {
        self.0[24..32].copy_from_slice(&address.to_le_bytes());
        self.0[32..36].copy_from_slice(&length.to_le_bytes());
        self.0[36..39].fill(0);
        self.0[39] = type_byte;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accessors_read_what_setters_wrote() {
        let mut c = Command::new(0x02, 0xBEEF);
        c.set_nsid(7);
        c.set_cdw(10, 1);
        c.set_cdw(12, 0x4000_0007);
        c.set_sgl(0, 4096, SGL_TYPE_TRANSPORT);
        assert_eq!(
            (c.opcode(), c.cid(), c.nsid(), c.psdt()),
            (0x02, 0xBEEF, 7, 1)
        );
        assert_eq!((c.cdw(10), c.cdw(12)), (1, 0x4000_0007));
        assert_eq!(
            c.sgl(),
            Sgl {
                address: 0,
                length: 4096,
                kind: SglKind::Transport
            }
        );
    }
}
