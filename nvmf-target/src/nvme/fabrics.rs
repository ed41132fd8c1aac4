//! Fabrics commands: Connect, Property Get/Set, Disconnect (NVMe-oF 1.1, section 3.3).

use crate::wire::{nul_terminated_str, put_str, Fields};

/// Fabrics command types (FCTYPE).
pub mod fctype {
    /// Property Set.
    pub const PROPERTY_SET: u8 = 0x00;
    /// Connect.
    pub const CONNECT: u8 = 0x01;
    /// Property Get.
    pub const PROPERTY_GET: u8 = 0x04;
    /// Authentication Send.
    pub const AUTH_SEND: u8 = 0x05;
    /// Authentication Receive.
    pub const AUTH_RECEIVE: u8 = 0x06;
    /// Disconnect.
    pub const DISCONNECT: u8 = 0x08;
}

/// Controller property offsets (NVMe Base 2.0, figure 35).
pub mod property {
    /// Controller Capabilities (8 bytes).
    pub const CAP: u32 = 0x00;
    /// Version.
    pub const VS: u32 = 0x08;
    /// Controller Configuration.
    pub const CC: u32 = 0x14;
    /// Controller Status.
    pub const CSTS: u32 = 0x1C;
    /// NVM Subsystem Reset.
    pub const NSSR: u32 = 0x20;
}

/// CC.EN.
pub const CC_ENABLE: u32 = 1;
/// CC.SHN mask (bits 15:14).
pub const CC_SHN_MASK: u32 = 0x3 << 14;
/// CSTS.RDY.
pub const CSTS_READY: u32 = 1;
/// CSTS.CFS (controller fatal status).
pub const CSTS_FATAL: u32 = 1 << 1;
/// CSTS.SHST = shutdown complete (bits 3:2 = 10b).
pub const CSTS_SHUTDOWN_COMPLETE: u32 = 0x2 << 2;

/// Connect CATTR bit: the host disables SQ flow control (no SQHD tracking), which
/// also allows the C2HData SUCCESS optimisation.
pub const CATTR_DISABLE_SQ_FLOW: u8 = 1 << 2;

/// Length of the Connect data (host id, cntlid, NQNs).
pub const CONNECT_DATA_LEN: usize = 1024;
/// Length of the SUBNQN and HOSTNQN fields of the Connect data.
pub const NQN_FIELD_LEN: usize = 256;
/// Offset of CNTLID in the Connect data, reported as IPO for a bad controller id.
pub const CONNECT_DATA_CNTLID_OFFSET: u16 = 16;
/// Offset of SUBNQN in the Connect data.
pub const CONNECT_DATA_SUBNQN_OFFSET: u16 = 256;
/// Offset of HOSTNQN in the Connect data.
pub const CONNECT_DATA_HOSTNQN_OFFSET: u16 = 512;
/// Offset of QID in the Connect command.
pub const CONNECT_CMD_QID_OFFSET: u16 = 42;
/// Offset of SQSIZE in the Connect command.
pub const CONNECT_CMD_SQSIZE_OFFSET: u16 = 44;

/// The command-dependent fields of a Connect command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectCommand {
    /// Record format (0).
    pub recfmt: u16,
    /// Queue id: 0 for the admin queue.
    pub qid: u16,
    /// Submission queue size, 0-based.
    pub sqsize: u16,
    /// Connect attributes.
    pub cattr: u8,
    /// Keep-alive timeout in milliseconds (admin queue only).
    pub kato_ms: u32,
}

impl ConnectCommand {
    /// Reads the Connect fields from a command.
    pub fn from_command(cmd: &super::Command) -> ConnectCommand {
        let f = Fields(&cmd.0);
        ConnectCommand {
            recfmt: f.u16(40).unwrap_or(0),
            qid: f.u16(42).unwrap_or(0),
            sqsize: f.u16(44).unwrap_or(0),
            cattr: f.u8(46).unwrap_or(0),
            kato_ms: f.u32(48).unwrap_or(0),
        }
    }

    /// Writes the Connect fields into a command (host side).
    pub fn write_to(&self, cmd: &mut super::Command) {
        cmd.0[4] = fctype::CONNECT;
        cmd.0[40..42].copy_from_slice(&self.recfmt.to_le_bytes());
        cmd.0[42..44].copy_from_slice(&self.qid.to_le_bytes());
        cmd.0[44..46].copy_from_slice(&self.sqsize.to_le_bytes());
        cmd.0[46] = self.cattr;
        cmd.0[48..52].copy_from_slice(&self.kato_ms.to_le_bytes());
    }
}

/// The 1024-byte Connect data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier.
    pub host_id: [u8; 16],
    /// Requested controller id (0xFFFF = any, dynamic model).
    pub cntlid: u16,
    /// Subsystem NQN the host wants.
    pub subsys_nqn: String,
    /// The host's NQN.
    pub host_nqn: String,
}

/// Why Connect data could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectDataError {
    /// Fewer than 1024 bytes were supplied.
    #[error("connect data is {0} bytes, expected 1024")]
    Length(usize),
    /// An NQN field is not a valid NQN (see [`ConnectData::decode`]); the
    /// offset is reported as IPO.
    #[error("connect data field at offset {0} is not a valid NQN")]
    Field(u16),
}

/// Every NQN starts so (NVMe Base 2.0, section 4.5), including the UUID form
/// `nqn.2014-08.org.nvmexpress:uuid:...` and the discovery subsystem's.
const NQN_PREFIX: &str = "nqn.";
/// Longest NQN in bytes, without its NUL (NVMe Base 2.0, section 4.5; Linux's
/// `NVMF_NQN_SIZE` and SPDK's `SPDK_NVMF_NQN_MAX_LEN` agree).
pub const NQN_LEN_MAX: usize = 223;

/// Reads the NQN in the 256-byte field at `offset`: it must be UTF-8, end
/// with a NUL inside the field, and be a non-empty name of at most
/// [`NQN_LEN_MAX`] bytes with the `nqn.` prefix.
fn nqn_field(f: &Fields<'_>, offset: u16) -> Result<String, ConnectDataError> {
    let field = f
        .slice(usize::from(offset), NQN_FIELD_LEN)
        .ok_or(ConnectDataError::Field(offset))?;
    if !field.contains(&0) {
        return Err(ConnectDataError::Field(offset));
    }
    match nul_terminated_str(field) {
        Some(nqn)
            if nqn.starts_with(NQN_PREFIX)
                && nqn.len() > NQN_PREFIX.len()
                && nqn.len() <= NQN_LEN_MAX =>
        {
            Ok(nqn.to_owned())
        }
        _ => Err(ConnectDataError::Field(offset)),
    }
}

impl ConnectData {
    /// Parses the Connect data. SUBNQN and HOSTNQN must each be a
    /// NUL-terminated, non-empty NQN with the `nqn.` prefix; the error names
    /// the first field that is not (SUBNQN before HOSTNQN).
    pub fn decode(buf: &[u8]) -> Result<ConnectData, ConnectDataError> {
        if buf.len() < CONNECT_DATA_LEN {
            return Err(ConnectDataError::Length(buf.len()));
        }
        let f = Fields(buf);
        Ok(ConnectData {
            host_id: f
                .array::<16>(0)
                .ok_or(ConnectDataError::Length(buf.len()))?,
            cntlid: f.u16(16).ok_or(ConnectDataError::Length(buf.len()))?,
            subsys_nqn: nqn_field(&f, CONNECT_DATA_SUBNQN_OFFSET)?,
            host_nqn: nqn_field(&f, CONNECT_DATA_HOSTNQN_OFFSET)?,
        })
    }

    /// Encodes the Connect data.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; CONNECT_DATA_LEN];
        b[0..16].copy_from_slice(&self.host_id);
        b[16..18].copy_from_slice(&self.cntlid.to_le_bytes());
        put_str(&mut b, 256, 256, &self.subsys_nqn, 0);
        put_str(&mut b, 512, 256, &self.host_nqn, 0);
        b
    }
}

/// DW0 of a Connect Invalid Parameters completion: IATTR (bit 16: 1 = the field
/// is in the Connect data, 0 = in the command) and IPO (byte offset).
pub fn invalid_parameter_dw0(in_data: bool, offset: u16) -> u32 {
    (if in_data { 1 << 16 } else { 0 }) | u32::from(offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_data_round_trips() {
        let d = ConnectData {
            host_id: [5; 16],
            cntlid: 0xFFFF,
            subsys_nqn: "nqn.2024-01.io.keel:sub".into(),
            host_nqn: "nqn.2014-08.org.nvmexpress:uuid:1".into(),
        };
        let b = d.encode();
        assert_eq!(b.len(), 1024);
        assert_eq!(ConnectData::decode(&b), Ok(d));
        assert_eq!(
            ConnectData::decode(&b[..1000]),
            Err(ConnectDataError::Length(1000))
        );
    }

    #[test]
    fn nqns_must_be_terminated_non_empty_and_prefixed() {
        let valid = ConnectData {
            host_id: [5; 16],
            cntlid: 0xFFFF,
            subsys_nqn: "nqn.2024-01.io.keel:sub".into(),
            host_nqn: "nqn.2014-08.org.nvmexpress:uuid:9b1a2c3d-0000-0000-0000-000000000001".into(),
        };
        assert!(ConnectData::decode(&valid.encode()).is_ok());
        let longest = format!("nqn.{}", "a".repeat(NQN_LEN_MAX - 4));
        let mut at_limit = valid.clone();
        at_limit.host_nqn = longest.clone();
        assert!(ConnectData::decode(&at_limit.encode()).is_ok());
        let too_long = format!("{longest}b");
        for (offset, bad) in [
            (CONNECT_DATA_HOSTNQN_OFFSET, ""),
            (CONNECT_DATA_HOSTNQN_OFFSET, "nqn."),
            (CONNECT_DATA_HOSTNQN_OFFSET, "host-without-prefix"),
            (
                CONNECT_DATA_HOSTNQN_OFFSET,
                "NQN.2014-08.org.nvmexpress:uuid:1",
            ),
            (CONNECT_DATA_SUBNQN_OFFSET, ""),
            (CONNECT_DATA_SUBNQN_OFFSET, "iqn.2024-01.io.keel:sub"),
            (CONNECT_DATA_HOSTNQN_OFFSET, &too_long),
        ] {
            let mut d = valid.clone();
            if offset == CONNECT_DATA_HOSTNQN_OFFSET {
                d.host_nqn = bad.into();
            } else {
                d.subsys_nqn = bad.into();
            }
            assert_eq!(
                ConnectData::decode(&d.encode()),
                Err(ConnectDataError::Field(offset)),
                "{bad:?} at {offset}"
            );
        }
        // 256 bytes with no NUL: not terminated, even with the prefix.
        let mut b = valid.encode();
        let host = usize::from(CONNECT_DATA_HOSTNQN_OFFSET);
        b[host..host + NQN_FIELD_LEN].fill(b'a');
        b[host..host + 4].copy_from_slice(b"nqn.");
        assert_eq!(
            ConnectData::decode(&b),
            Err(ConnectDataError::Field(CONNECT_DATA_HOSTNQN_OFFSET))
        );
    }

    #[test]
    fn invalid_parameter_encoding_matches_linux() {
        // Linux decodes `result >> 16` as IATTR and `result & 0xffff` as IPO.
        assert_eq!(
            invalid_parameter_dw0(true, CONNECT_DATA_SUBNQN_OFFSET),
            0x1_0100
        );
        assert_eq!(invalid_parameter_dw0(false, CONNECT_CMD_QID_OFFSET), 42);
    }
}
