//! Log page structures: discovery log (NVMe-oF 1.1, figure 38), error
//! information, SMART/health, firmware slot, changed namespace list and
//! Asymmetric Namespace Access (NVMe Base 2.0, section 5.16.1).

use crate::wire::{put_str, put_u16, put_u32, put_u64, Fields};

/// Size of the discovery log header and of each entry.
pub const DISCOVERY_RECORD_LEN: usize = 1024;

/// Address family of a discovery log entry (ADRFAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressFamily {
    /// IPv4 (1).
    Ipv4,
    /// IPv6 (2).
    Ipv6,
}

/// Subsystem type of a discovery log entry (SUBTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubsystemType {
    /// A referral to another discovery service (1).
    Referral,
    /// An NVM subsystem (2).
    Nvm,
    /// The current discovery subsystem (3).
    CurrentDiscovery,
}

/// TREQ bits 1:0 = 00b: secure channel requirements not specified. The value for
/// a port without TLS: libnvme reads "not required" (10b) as "TLS is offered" and
/// then insists on a PSK, so a plain TCP port must not claim it.
pub const TREQ_SECURE_CHANNEL_NOT_SPECIFIED: u8 = 0x0;
/// TREQ bit 2: SQ flow control disable is supported.
pub const TREQ_DISABLE_SQ_FLOW: u8 = 0x4;

/// One discovery log page entry (transport type TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// Address family.
    pub adrfam: AddressFamily,
    /// Subsystem type.
    pub subtype: SubsystemType,
    /// Transport requirements (TREQ).
    pub treq: u8,
    /// Port identifier.
    pub portid: u16,
    /// Controller id (0xFFFF: dynamic model).
    pub cntlid: u16,
    /// Admin max SQ size (ASQSZ).
    pub asqsz: u16,
    /// Transport service identifier: the TCP port as decimal text.
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address: the IP address as text.
    pub traddr: String,
}

impl DiscoveryEntry {
    /// Encodes the 1024-byte entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; DISCOVERY_RECORD_LEN];
        b[0] = 3; // TRTYPE: TCP
        b[1] = match self.adrfam {
            AddressFamily::Ipv4 => 1,
            AddressFamily::Ipv6 => 2,
        };
        b[2] = match self.subtype {
            SubsystemType::Referral => 1,
            SubsystemType::Nvm => 2,
            SubsystemType::CurrentDiscovery => 3,
        };
        b[3] = self.treq;
        put_u16(&mut b, 4, self.portid);
        put_u16(&mut b, 6, self.cntlid);
        put_u16(&mut b, 8, self.asqsz);
        put_str(&mut b, 32, 32, &self.trsvcid, b' ');
        put_str(&mut b, 256, 256, &self.subnqn, 0);
        put_str(&mut b, 512, 256, &self.traddr, b' ');
        // TSAS for TCP: SECTYPE 0 (no security), rest reserved.
        b
    }

    /// Decodes an entry (host side).
    pub fn decode(b: &[u8]) -> Option<DiscoveryEntry> {
        let f = Fields(b);
        let text = |off: usize, len: usize| -> Option<String> {
            let raw = f.slice(off, len)?;
            let end = raw.iter().position(|c| *c == 0).unwrap_or(raw.len());
            Some(String::from_utf8_lossy(&raw[..end]).trim_end().to_owned())
        };
        Some(DiscoveryEntry {
            adrfam: if f.u8(1)? == 2 {
                AddressFamily::Ipv6
            } else {
                AddressFamily::Ipv4
            },
            subtype: match f.u8(2)? {
                1 => SubsystemType::Referral,
                3 => SubsystemType::CurrentDiscovery,
                _ => SubsystemType::Nvm,
            },
            treq: f.u8(3)?,
            portid: f.u16(4)?,
            cntlid: f.u16(6)?,
            asqsz: f.u16(8)?,
            trsvcid: text(32, 32)?,
            subnqn: text(256, 256)?,
            traddr: text(512, 256)?,
        })
    }
}

/// Encodes a whole discovery log: header (GENCTR, NUMREC, RECFMT 0) and entries.
pub fn encode_discovery_log(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut b = vec![0u8; DISCOVERY_RECORD_LEN];
    put_u64(&mut b, 0, genctr);
    put_u64(&mut b, 8, entries.len() as u64);
    for e in entries {
        b.extend_from_slice(&e.encode());
    }
    b
}

/// Decodes a discovery log header: (GENCTR, NUMREC).
pub fn decode_discovery_header(b: &[u8]) -> Option<(u64, u64)> {
    let f = Fields(b);
    Some((f.u64(0)?, f.u64(8)?))
}

/// Size of one Error Information log entry.
pub const ERROR_ENTRY_LEN: usize = 64;
/// Parameter Error Location value meaning "not specific to a command field".
pub const ERROR_LOCATION_NONE: u16 = 0xFFFF;
/// Transport Type of an error entry for NVMe/TCP (the TRTYPE value).
pub const ERROR_TRTYPE_TCP: u8 = 3;

/// One Error Information log entry (log page 01h; NVMe Base 2.0, figure 205).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorInformationEntry {
    /// Error Count: unique, incrementing from 1 per controller; 0 marks an unused entry.
    pub error_count: u64,
    /// Submission Queue ID of the failed command.
    pub sqid: u16,
    /// Command ID of the failed command.
    pub cid: u16,
    /// The 15-bit status field of the completion (without the phase tag), as in
    /// [`crate::nvme::Completion::status_field`].
    pub status_field: u16,
    /// Parameter Error Location: bits 7:0 the SQE byte, bits 10:8 the bit, or
    /// [`ERROR_LOCATION_NONE`].
    pub parameter_error_location: u16,
    /// First LBA that experienced the error, if applicable (else 0).
    pub lba: u64,
    /// Namespace the error is associated with, if applicable (else 0).
    pub nsid: u32,
    /// Transport Type (TRTYPE) of the queue the command arrived on.
    pub trtype: u8,
}

impl ErrorInformationEntry {
    /// Encodes the 64-byte entry. The status field is stored above a zero phase
    /// bit, as in a completion queue entry.
    pub fn encode(&self) -> [u8; ERROR_ENTRY_LEN] {
        let mut b = [0u8; ERROR_ENTRY_LEN];
        put_u64(&mut b, 0, self.error_count);
        put_u16(&mut b, 8, self.sqid);
        put_u16(&mut b, 10, self.cid);
        put_u16(&mut b, 12, self.status_field << 1);
        put_u16(&mut b, 14, self.parameter_error_location);
        put_u64(&mut b, 16, self.lba);
        put_u32(&mut b, 24, self.nsid);
        b[29] = self.trtype;
        b
    }

    /// Decodes an entry (host side); `None` if `b` is shorter than an entry.
    pub fn decode(b: &[u8]) -> Option<ErrorInformationEntry> {
        let f = Fields(b);
        f.slice(0, ERROR_ENTRY_LEN)?;
        Some(ErrorInformationEntry {
            error_count: f.u64(0)?,
            sqid: f.u16(8)?,
            cid: f.u16(10)?,
            status_field: f.u16(12)? >> 1,
            parameter_error_location: f.u16(14)?,
            lba: f.u64(16)?,
            nsid: f.u32(24)?,
            trtype: f.u8(29)?,
        })
    }
}

/// Encodes the 512-byte SMART / Health Information log with data units (in
/// thousands of 512-byte units, rounded up), command counts and the number of
/// Error Information log entries recorded over the controller's life.
pub fn encode_smart(
    units_read: u64,
    units_written: u64,
    reads: u64,
    writes: u64,
    error_entries: u64,
) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    put_u16(&mut b, 1, 273 + 25); // composite temperature, Kelvin
    b[3] = 100; // available spare
    b[4] = 10; // available spare threshold
    put_u64(&mut b, 32, units_read);
    put_u64(&mut b, 48, units_written);
    put_u64(&mut b, 64, reads);
    put_u64(&mut b, 80, writes);
    // Number of Error Information Log Entries: a 128-bit counter at 176.
    put_u64(&mut b, 176, error_entries);
    b
}

/// Encodes the 512-byte Firmware Slot Information log: slot 1 active with `revision`.
pub fn encode_firmware_slot(revision: &str) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[0] = 1; // AFI: slot 1 active
    put_str(&mut b, 8, 8, revision, b' ');
    b
}

/// Encodes the 4096-byte Changed Namespace List; more than 1024 changes are
/// reported as a single 0xFFFFFFFF entry.
pub fn encode_changed_ns_list(nsids: &[u32]) -> Vec<u8> {
    let mut b = vec![0u8; 4096];
    if nsids.len() > 1024 {
        b[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
    } else {
        for (i, n) in nsids.iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&n.to_le_bytes());
        }
    }
    b
}

/// The Asymmetric Namespace Access state of an ANA group, as one controller
/// reports it (NVMe Base 2.0, section 8.1.3). Only the accessible states
/// ([`AnaState::Optimized`], [`AnaState::NonOptimized`]) let I/O reach a
/// namespace; a host with several paths sends I/O to an optimized one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AnaState {
    /// ANA Optimized (01h): the preferred path.
    #[default]
    Optimized,
    /// ANA Non-Optimized (02h): usable, but another path is better.
    NonOptimized,
    /// ANA Inaccessible (03h): no I/O on this path for now.
    Inaccessible,
    /// ANA Persistent Loss (04h): no I/O on this path, and it will not return.
    PersistentLoss,
    /// ANA Change (0Fh): in transition; hosts retry within ANATT.
    Change,
}

impl AnaState {
    /// The ANA State field value of a group descriptor.
    pub fn code(self) -> u8 {
        match self {
            AnaState::Optimized => 0x01,
            AnaState::NonOptimized => 0x02,
            AnaState::Inaccessible => 0x03,
            AnaState::PersistentLoss => 0x04,
            AnaState::Change => 0x0F,
        }
    }

    /// The state of an ANA State field value, if it names one.
    pub fn from_code(code: u8) -> Option<AnaState> {
        Some(match code {
            0x01 => AnaState::Optimized,
            0x02 => AnaState::NonOptimized,
            0x03 => AnaState::Inaccessible,
            0x04 => AnaState::PersistentLoss,
            0x0F => AnaState::Change,
            _ => return None,
        })
    }

    /// Whether I/O commands may run on a namespace in this state.
    pub fn is_accessible(self) -> bool {
        match self {
            AnaState::Optimized | AnaState::NonOptimized => true,
            AnaState::Inaccessible | AnaState::PersistentLoss | AnaState::Change => false,
        }
    }
}

/// Size of the ANA log page header.
pub const ANA_HEADER_LEN: usize = 16;
/// Size of an ANA group descriptor before its NSID list.
pub const ANA_DESCRIPTOR_LEN: usize = 32;
/// Get Log Page LSP bit 0 for log 0Ch: Return Groups Only (RGO), descriptors
/// without their NSID lists.
pub const ANA_LSP_RETURN_GROUPS_ONLY: u8 = 1;

/// One ANA group descriptor (NVMe Base 2.0, figure 209).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaGroupDescriptor {
    /// ANA group identifier (ANAGRPID), never 0.
    pub anagrpid: u32,
    /// Change count of this group's descriptor.
    pub change_count: u64,
    /// The group's ANA state.
    pub state: AnaState,
    /// The group's NSIDs, ascending (empty when read with RGO).
    pub nsids: Vec<u32>,
}

/// The Asymmetric Namespace Access log page (log 0Ch; figure 208).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnaLog {
    /// ANA log page change count: changes whenever the page's contents do.
    pub change_count: u64,
    /// One descriptor per ANA group.
    pub groups: Vec<AnaGroupDescriptor>,
}

/// Why an ANA log page did not decode (host side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AnaLogDecodeError {
    /// The page ends before the header, a descriptor or an NSID list it announces.
    #[error("ANA log page truncated: {needed} bytes needed, {len} read")]
    Truncated {
        /// Bytes the announced contents need.
        needed: usize,
        /// Bytes read.
        len: usize,
    },
    /// A descriptor carries ANAGRPID 0.
    #[error("ANA group descriptor {index} has group id 0")]
    ZeroGroupId {
        /// Position of the descriptor in the page.
        index: usize,
    },
    /// A descriptor carries a reserved ANA state value.
    #[error("ANA group {anagrpid} has reserved state {code:#x}")]
    ReservedState {
        /// The group.
        anagrpid: u32,
        /// The state field.
        code: u8,
    },
    /// Non-zero bytes follow the last descriptor.
    #[error("non-zero byte at {offset} after the last ANA group descriptor")]
    TrailingBytes {
        /// Offset of the first non-zero byte.
        offset: usize,
    },
}

impl AnaLog {
    /// Encodes the page; `groups_only` (RGO) leaves out the NSID lists and
    /// reports NNSID 0.
    pub fn encode(&self, groups_only: bool) -> Vec<u8> {
        let nsids_total: usize = if groups_only {
            0
        } else {
            self.groups.iter().map(|g| g.nsids.len()).sum()
        };
        let mut b =
            vec![0u8; ANA_HEADER_LEN + self.groups.len() * ANA_DESCRIPTOR_LEN + nsids_total * 4];
        // INVARIANT: one group per namespace and NSIDs up to NSID_MAX keep
        // NUMBER OF ANA GROUP DESCRIPTORS within its 16 bits.
        let groups_n = u16::try_from(self.groups.len()).expect("at most 65535 ANA groups");
        put_u64(&mut b, 0, self.change_count);
        put_u16(&mut b, 8, groups_n);
        let mut off = ANA_HEADER_LEN;
        for g in &self.groups {
            assert!(g.anagrpid != 0, "ANAGRPID 0 is reserved");
            let nsids: &[u32] = if groups_only { &[] } else { &g.nsids };
            put_u32(&mut b, off, g.anagrpid);
            put_u32(&mut b, off + 4, nsids.len() as u32);
            put_u64(&mut b, off + 8, g.change_count);
            b[off + 16] = g.state.code();
            off += ANA_DESCRIPTOR_LEN;
            for nsid in nsids {
                put_u32(&mut b, off, *nsid);
                off += 4;
            }
        }
        b
    }

    /// Decodes a page read from offset 0. The buffer may be longer than the
    /// page (a host reads as much as the largest page could be), but every
    /// byte past the last descriptor must be zero, as the target fills it.
    pub fn decode(b: &[u8]) -> Result<AnaLog, AnaLogDecodeError> {
        let f = Fields(b);
        let truncated = |needed: usize| AnaLogDecodeError::Truncated {
            needed,
            len: b.len(),
        };
        if b.len() < ANA_HEADER_LEN {
            return Err(truncated(ANA_HEADER_LEN));
        }
        let (Some(change_count), Some(groups_n)) = (f.u64(0), f.u16(8)) else {
            return Err(truncated(ANA_HEADER_LEN));
        };
        let groups_n = usize::from(groups_n);
        // Check the fixed part of every announced descriptor fits before
        // allocating for them.
        let fixed_len = ANA_HEADER_LEN + groups_n * ANA_DESCRIPTOR_LEN;
        if b.len() < fixed_len {
            return Err(truncated(fixed_len));
        }
        let mut groups = Vec::with_capacity(groups_n);
        let mut off = ANA_HEADER_LEN;
        for index in 0..groups_n {
            let needed = off + ANA_DESCRIPTOR_LEN;
            let (Some(anagrpid), Some(nsids_n), Some(group_change_count), Some(code)) =
                (f.u32(off), f.u32(off + 4), f.u64(off + 8), f.u8(off + 16))
            else {
                return Err(truncated(needed));
            };
            if anagrpid == 0 {
                return Err(AnaLogDecodeError::ZeroGroupId { index });
            }
            let state = AnaState::from_code(code)
                .ok_or(AnaLogDecodeError::ReservedState { anagrpid, code })?;
            off = needed;
            let list_len = usize::try_from(nsids_n)
                .ok()
                .and_then(|n| n.checked_mul(4))
                .unwrap_or(usize::MAX);
            let Some(list) = f.slice(off, list_len) else {
                return Err(truncated(off.saturating_add(list_len)));
            };
            let nsids = list
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            off += list_len;
            groups.push(AnaGroupDescriptor {
                anagrpid,
                change_count: group_change_count,
                state,
                nsids,
            });
        }
        if let Some(pos) = b[off..].iter().position(|byte| *byte != 0) {
            return Err(AnaLogDecodeError::TrailingBytes { offset: off + pos });
        }
        Ok(AnaLog {
            change_count,
            groups,
        })
    }
}

/// Returns `len` bytes of `page` from byte `offset`, zero-filled past its end
/// (reads beyond a log page return zeroes, as the kernel target does).
pub fn slice_page(page: &[u8], offset: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    if let Ok(off) = usize::try_from(offset) {
        if off < page.len() {
            let n = (page.len() - off).min(len);
            out[..n].copy_from_slice(&page[off..off + n]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_entry_round_trips_and_pads_with_spaces() {
        let e = DiscoveryEntry {
            adrfam: AddressFamily::Ipv4,
            subtype: SubsystemType::Nvm,
            treq: TREQ_SECURE_CHANNEL_NOT_SPECIFIED | TREQ_DISABLE_SQ_FLOW,
            portid: 1,
            cntlid: 0xFFFF,
            asqsz: 32,
            trsvcid: "4420".into(),
            subnqn: "nqn.2024-01.io.keel:a".into(),
            traddr: "127.0.0.1".into(),
        };
        let b = e.encode();
        assert_eq!((b[0], b[1], b[2]), (3, 1, 2));
        assert_eq!(&b[32..38], b"4420  ");
        assert_eq!(&b[512..522], b"127.0.0.1 ");
        assert_eq!(DiscoveryEntry::decode(&b), Some(e.clone()));
        let log = encode_discovery_log(5, &[e]);
        assert_eq!(log.len(), 2048);
        assert_eq!(decode_discovery_header(&log), Some((5, 1)));
    }

    #[test]
    fn error_entry_places_fields_as_the_spec_lays_them_out() {
        let e = ErrorInformationEntry {
            error_count: 7,
            sqid: 2,
            cid: 0x1234,
            status_field: 0x4080,
            parameter_error_location: 40,
            lba: 0x0102_0304_0506,
            nsid: 9,
            trtype: ERROR_TRTYPE_TCP,
        };
        let b = e.encode();
        assert_eq!(&b[0..8], &7u64.to_le_bytes());
        assert_eq!(&b[8..12], &[2, 0, 0x34, 0x12]);
        assert_eq!(u16::from_le_bytes([b[12], b[13]]), 0x4080 << 1);
        assert_eq!(&b[14..16], &[40, 0]);
        assert_eq!(&b[16..24], &0x0102_0304_0506u64.to_le_bytes());
        assert_eq!(&b[24..28], &9u32.to_le_bytes());
        assert_eq!(b[29], 3);
        assert_eq!(ErrorInformationEntry::decode(&b), Some(e));
        assert_eq!(ErrorInformationEntry::decode(&b[..63]), None);
    }

    fn sample_ana_log() -> AnaLog {
        AnaLog {
            change_count: 9,
            groups: vec![
                AnaGroupDescriptor {
                    anagrpid: 1,
                    change_count: 4,
                    state: AnaState::Optimized,
                    nsids: vec![1],
                },
                AnaGroupDescriptor {
                    anagrpid: 7,
                    change_count: 9,
                    state: AnaState::Change,
                    nsids: vec![7],
                },
            ],
        }
    }

    #[test]
    fn ana_log_places_fields_as_the_spec_lays_them_out() {
        let log = sample_ana_log();
        let b = log.encode(false);
        assert_eq!(b.len(), 16 + 2 * (32 + 4));
        assert_eq!(&b[0..8], &9u64.to_le_bytes());
        assert_eq!(&b[8..10], &[2, 0]);
        // Second descriptor: ANAGRPID, NNSID, change count, state, NSID.
        assert_eq!(&b[52..56], &7u32.to_le_bytes());
        assert_eq!(&b[56..60], &1u32.to_le_bytes());
        assert_eq!(&b[60..68], &9u64.to_le_bytes());
        assert_eq!(b[68], 0x0F);
        assert_eq!(&b[84..88], &7u32.to_le_bytes());
        assert_eq!(AnaLog::decode(&b), Ok(log.clone()));
        // A longer read ends in zeroes and still decodes.
        let mut padded = b.clone();
        padded.resize(4096, 0);
        assert_eq!(AnaLog::decode(&padded), Ok(log.clone()));
        // Return Groups Only: no NSID lists, NNSID 0.
        let rgo = log.encode(true);
        assert_eq!(rgo.len(), 16 + 2 * 32);
        assert_eq!(&rgo[20..24], &[0; 4]);
        let groups = AnaLog::decode(&rgo).unwrap().groups;
        assert!(groups.iter().all(|g| g.nsids.is_empty()));
    }

    #[test]
    fn ana_log_decode_rejects_bad_lengths_and_fields() {
        let b = sample_ana_log().encode(false);
        assert_eq!(
            AnaLog::decode(&b[..15]),
            Err(AnaLogDecodeError::Truncated {
                needed: 16,
                len: 15
            })
        );
        assert_eq!(
            AnaLog::decode(&b[..b.len() - 1]),
            Err(AnaLogDecodeError::Truncated {
                needed: 88,
                len: 87
            })
        );
        let mut huge = b.clone();
        huge[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            AnaLog::decode(&huge),
            Err(AnaLogDecodeError::Truncated { .. })
        ));
        let mut zero_group = b.clone();
        zero_group[16..20].copy_from_slice(&[0; 4]);
        assert_eq!(
            AnaLog::decode(&zero_group),
            Err(AnaLogDecodeError::ZeroGroupId { index: 0 })
        );
        let mut reserved = b.clone();
        reserved[32] = 0x05;
        assert_eq!(
            AnaLog::decode(&reserved),
            Err(AnaLogDecodeError::ReservedState {
                anagrpid: 1,
                code: 5
            })
        );
        let mut trailing = b.clone();
        trailing.extend_from_slice(&[0, 0, 1, 0]);
        assert_eq!(
            AnaLog::decode(&trailing),
            Err(AnaLogDecodeError::TrailingBytes { offset: 90 })
        );
    }

    #[test]
    fn ana_state_codes_round_trip() {
        for state in [
            AnaState::Optimized,
            AnaState::NonOptimized,
            AnaState::Inaccessible,
            AnaState::PersistentLoss,
            AnaState::Change,
        ] {
            assert_eq!(AnaState::from_code(state.code()), Some(state));
        }
        assert_eq!(AnaState::from_code(0), None);
        assert_eq!(AnaState::from_code(5), None);
    }

    proptest::proptest! {
        /// Hostile pages never panic, and what decodes re-encodes to no
        /// more bytes than it came from.
        #[test]
        fn ana_log_decode_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            if let Ok(log) = AnaLog::decode(&bytes) {
                proptest::prop_assert!(log.encode(false).len() <= bytes.len());
            }
        }

        #[test]
        fn ana_logs_round_trip(
            change_count in proptest::prelude::any::<u64>(),
            groups in proptest::collection::vec(
                (1u32..=u32::MAX, proptest::prelude::any::<u64>(), 0usize..5, proptest::collection::vec(1u32..=u32::MAX, 0..4)),
                0..6,
            ),
        ) {
            const STATES: [AnaState; 5] = [
                AnaState::Optimized,
                AnaState::NonOptimized,
                AnaState::Inaccessible,
                AnaState::PersistentLoss,
                AnaState::Change,
            ];
            let log = AnaLog {
                change_count,
                groups: groups
                    .into_iter()
                    .map(|(anagrpid, change_count, state, nsids)| AnaGroupDescriptor {
                        anagrpid,
                        change_count,
                        state: STATES[state],
                        nsids,
                    })
                    .collect(),
            };
            proptest::prop_assert_eq!(AnaLog::decode(&log.encode(false)), Ok(log));
        }
    }

    #[test]
    fn slicing_past_the_end_reads_zeroes() {
        assert_eq!(slice_page(&[1, 2, 3], 2, 3), vec![3, 0, 0]);
        assert_eq!(slice_page(&[1, 2, 3], u64::MAX, 2), vec![0, 0]);
    }
}
