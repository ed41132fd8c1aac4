//! Identify data structures (NVMe Base 2.0, section 5.17.2) as typed values with
//! byte-exact encoders, and decoders for the fields the host side checks.

use super::IDENTIFY_LEN;
use crate::wire::{nul_terminated_str, put_str, put_u16, put_u32, put_u64, Fields};

/// Controller type reported in CNTRLTYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControllerType {
    /// An I/O controller (1).
    Io,
    /// A discovery controller (2).
    Discovery,
}

/// OAES bit: Namespace Attribute Notices.
pub const OAES_NS_ATTRIBUTE: u32 = 1 << 8;
/// OAES bit: Discovery Log Page Change Notices.
pub const OAES_DISCOVERY_CHANGE: u32 = 1 << 31;
/// ONCS bit: Dataset Management.
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit: Write Zeroes.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// SGLS bits 1:0 = 01b: SGLs supported, no alignment requirement.
pub const SGLS_SUPPORTED: u32 = 1;
/// SGLS bit 20: the Offset address type is supported for data block descriptors
/// (needed for in-capsule data).
pub const SGLS_OFFSET: u32 = 1 << 20;
/// CMIC bit 0: more than one port; bit 1: more than one controller.
pub const CMIC_MULTI_PORT_MULTI_CONTROLLER: u8 = 0x3;
/// CMIC bit 3: Asymmetric Namespace Access reporting. Linux turns native
/// multipath ANA handling on for a subsystem only when this bit is set.
pub const CMIC_ANA_REPORTING: u8 = 1 << 3;
/// OAES bit: Asymmetric Namespace Access Change Notices (and the matching
/// Asynchronous Event Configuration bit; Linux's NVME_AEN_CFG_ANA_CHANGE).
pub const OAES_ANA_CHANGE: u32 = 1 << 11;
/// ANACAP: the ANA states reported (bit 0 optimized, 1 non-optimized,
/// 2 inaccessible, 3 persistent loss, 4 change) and bit 6, a namespace's
/// ANAGRPID does not change while it is attached.
pub const ANACAP_ALL_STATES_FIXED_GROUPS: u8 = 0x1F | (1 << 6);

/// The Identify Controller fields this target reports (figure 275). Everything
/// not listed is zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerIdentity {
    /// Serial number (SN), 20 ASCII characters, space padded.
    pub serial: String,
    /// Model number (MN), 40 ASCII characters, space padded.
    pub model: String,
    /// Firmware revision (FR), 8 ASCII characters, space padded.
    pub firmware: String,
    /// Multi-path I/O and namespace sharing capabilities (CMIC).
    pub cmic: u8,
    /// Maximum data transfer size as a power of two of 4 KiB pages (MDTS).
    pub mdts: u8,
    /// Controller id (CNTLID): equal to the Connect result.
    pub cntlid: u16,
    /// Version (VER), same encoding as the VS property.
    pub version: u32,
    /// Optional asynchronous events supported (OAES).
    pub oaes: u32,
    /// Controller type (CNTRLTYPE).
    pub controller_type: ControllerType,
    /// Abort command limit, 0-based (ACL).
    pub acl: u8,
    /// Asynchronous event request limit, 0-based (AERL).
    pub aerl: u8,
    /// Firmware updates (FRMW).
    pub frmw: u8,
    /// Log page attributes (LPA).
    pub lpa: u8,
    /// Error log page entries, 0-based (ELPE).
    pub elpe: u8,
    /// Keep-alive support granularity in 100 ms units (KAS), non-zero.
    pub kas: u16,
    /// ANA transition time in seconds (ANATT): how long a group may stay in
    /// the change state.
    pub anatt: u8,
    /// ANA capabilities (ANACAP).
    pub anacap: u8,
    /// Largest ANA group id (ANAGRPMAX).
    pub anagrpmax: u32,
    /// Number of ANA group ids the controller supports (NANAGRPID).
    pub nanagrpid: u32,
    /// Maximum outstanding commands per queue (MAXCMD).
    pub maxcmd: u16,
    /// Number of namespaces: the highest NSID (NN).
    pub nn: u32,
    /// Optional NVM command support (ONCS).
    pub oncs: u16,
    /// Volatile write cache (VWC) bit 0.
    pub volatile_write_cache: bool,
    /// SGL support (SGLS).
    pub sgls: u32,
    /// Maximum number of allowed namespaces (MNAN); 0 when not reported.
    pub mnan: u32,
    /// NVM subsystem NQN (SUBNQN).
    pub subnqn: String,
    /// I/O queue command capsule supported size in 16-byte units (IOCCSZ).
    pub ioccsz: u32,
    /// I/O queue response capsule supported size in 16-byte units (IORCSZ).
    pub iorcsz: u32,
    /// In-capsule data offset in 16-byte units (ICDOFF), 0.
    pub icdoff: u16,
    /// Maximum SGL data block descriptors per command (MSDBD).
    pub msdbd: u8,
}

impl ControllerIdentity {
    /// Encodes the 4096-byte structure.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        put_str(&mut b, 4, 20, &self.serial, b' ');
        put_str(&mut b, 24, 40, &self.model, b' ');
        put_str(&mut b, 64, 8, &self.firmware, b' ');
        b[72] = 0; // RAB
        b[76] = self.cmic;
        b[77] = self.mdts;
        put_u16(&mut b, 78, self.cntlid);
        put_u32(&mut b, 80, self.version);
        put_u32(&mut b, 92, self.oaes);
        b[111] = match self.controller_type {
            ControllerType::Io => 1,
            ControllerType::Discovery => 2,
        };
        b[258] = self.acl;
        b[259] = self.aerl;
        b[260] = self.frmw;
        b[261] = self.lpa;
        b[262] = self.elpe;
        put_u16(&mut b, 320, self.kas);
        b[342] = self.anatt;
        b[343] = self.anacap;
        put_u32(&mut b, 344, self.anagrpmax);
        put_u32(&mut b, 348, self.nanagrpid);
        b[512] = 0x66; // SQES: required and maximum 64 bytes
        b[513] = 0x44; // CQES: required and maximum 16 bytes
        put_u16(&mut b, 514, self.maxcmd);
        put_u32(&mut b, 516, self.nn);
        put_u16(&mut b, 520, self.oncs);
        b[525] = u8::from(self.volatile_write_cache);
        put_u32(&mut b, 536, self.sgls);
        put_u32(&mut b, 540, self.mnan);
        put_str(&mut b, 768, 256, &self.subnqn, 0);
        put_u32(&mut b, 1792, self.ioccsz);
        put_u32(&mut b, 1796, self.iorcsz);
        put_u16(&mut b, 1800, self.icdoff);
        b[1803] = self.msdbd;
        b
    }

    /// Decodes the fields this type models (host side).
    pub fn decode(b: &[u8]) -> Option<ControllerIdentity> {
        let f = Fields(b);
        let text = |off: usize, len: usize| -> Option<String> {
            Some(
                String::from_utf8_lossy(f.slice(off, len)?)
                    .trim_end()
                    .to_owned(),
            )
        };
        Some(ControllerIdentity {
            serial: text(4, 20)?,
            model: text(24, 40)?,
            firmware: text(64, 8)?,
            cmic: f.u8(76)?,
            mdts: f.u8(77)?,
            cntlid: f.u16(78)?,
            version: f.u32(80)?,
            oaes: f.u32(92)?,
            controller_type: if f.u8(111)? == 2 {
                ControllerType::Discovery
            } else {
                ControllerType::Io
            },
            acl: f.u8(258)?,
            aerl: f.u8(259)?,
            frmw: f.u8(260)?,
            lpa: f.u8(261)?,
            elpe: f.u8(262)?,
            kas: f.u16(320)?,
            anatt: f.u8(342)?,
            anacap: f.u8(343)?,
            anagrpmax: f.u32(344)?,
            nanagrpid: f.u32(348)?,
            maxcmd: f.u16(514)?,
            nn: f.u32(516)?,
            oncs: f.u16(520)?,
            volatile_write_cache: f.u8(525)? & 1 != 0,
            sgls: f.u32(536)?,
            mnan: f.u32(540)?,
            subnqn: nul_terminated_str(f.slice(768, 256)?)?.to_owned(),
            ioccsz: f.u32(1792)?,
            iorcsz: f.u32(1796)?,
            icdoff: f.u16(1800)?,
            msdbd: f.u8(1803)?,
        })
    }
}

/// DLFEAT value: deallocated blocks read as zeroes (bits 2:0 = 001b) and Write
/// Zeroes honours the Deallocate bit (bit 3).
pub const DLFEAT_READS_ZEROES: u8 = 0x09;

/// The Identify Namespace fields this target reports (NVM command set, figure 114).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceIdentity {
    /// Namespace size in blocks (NSZE); NCAP and NUSE report the same.
    pub size_blocks: u64,
    /// log2 of the block size (LBADS of LBA format 0).
    pub block_shift: u8,
    /// Deallocate logical block features (DLFEAT).
    pub dlfeat: u8,
    /// Namespace multi-path I/O and sharing (NMIC); bit 0 = may be shared.
    pub nmic: u8,
    /// Namespace globally unique identifier (NGUID).
    pub nguid: [u8; 16],
    /// ANA group the namespace belongs to (ANAGRPID); 0 without ANA reporting.
    pub anagrpid: u32,
}

impl NamespaceIdentity {
    /// Encodes the 4096-byte structure.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; IDENTIFY_LEN];
        put_u64(&mut b, 0, self.size_blocks);
        put_u64(&mut b, 8, self.size_blocks);
        put_u64(&mut b, 16, self.size_blocks);
        b[25] = 0; // NLBAF: one format
        b[26] = 0; // FLBAS: format 0, no metadata
        b[30] = self.nmic;
        b[33] = self.dlfeat;
        put_u32(&mut b, 92, self.anagrpid);
        b[104..120].copy_from_slice(&self.nguid);
        // LBA format 0: MS = 0, LBADS, RP = 0 (best performance).
        put_u32(&mut b, 128, u32::from(self.block_shift) << 16);
        b
    }

    /// Decodes the fields this type models (host side).
    pub fn decode(b: &[u8]) -> Option<NamespaceIdentity> {
        let f = Fields(b);
        let flbas = f.u8(26)? & 0xF;
        let lbaf = f.u32(128 + 4 * usize::from(flbas))?;
        Some(NamespaceIdentity {
            size_blocks: f.u64(0)?,
            block_shift: (lbaf >> 16) as u8,
            dlfeat: f.u8(33)?,
            nmic: f.u8(30)?,
            nguid: f.array::<16>(104)?,
            anagrpid: f.u32(92)?,
        })
    }
}

/// Encodes the I/O command set independent Identify Namespace structure (CNS 08h):
/// NMIC, ANAGRPID, and NSTAT bit 0 (namespace ready).
pub fn encode_cs_independent_namespace(nmic: u8, anagrpid: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    b[1] = nmic;
    put_u32(&mut b, 4, anagrpid);
    b[14] = 1; // NSTAT: ready
    b
}

/// Namespace identifier types in the descriptor list (figure 280).
pub mod nidt {
    /// IEEE EUI-64.
    pub const EUI64: u8 = 1;
    /// Namespace globally unique identifier.
    pub const NGUID: u8 = 2;
    /// Namespace UUID.
    pub const UUID: u8 = 3;
    /// Command set identifier.
    pub const CSI: u8 = 4;
}

/// Encodes the Namespace Identification Descriptor list (CNS 03h) with NGUID,
/// UUID and CSI (NVM).
pub fn encode_ns_descriptors(nguid: [u8; 16], uuid: [u8; 16]) -> Vec<u8> {
    let mut b = Vec::with_capacity(IDENTIFY_LEN);
    b.extend_from_slice(&[nidt::NGUID, 16, 0, 0]);
    b.extend_from_slice(&nguid);
    b.extend_from_slice(&[nidt::UUID, 16, 0, 0]);
    b.extend_from_slice(&uuid);
    b.extend_from_slice(&[nidt::CSI, 1, 0, 0, 0]);
    b.resize(IDENTIFY_LEN, 0);
    b
}

/// Decodes a descriptor list into (NIDT, NID) pairs, stopping at a zero entry.
pub fn decode_ns_descriptors(b: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let f = Fields(b);
    let mut out = Vec::new();
    let mut off = 0usize;
    while let (Some(ty), Some(len)) = (f.u8(off), f.u8(off + 1)) {
        if ty == 0 || len == 0 {
            break;
        }
        match f.slice(off + 4, usize::from(len)) {
            Some(id) => out.push((ty, id.to_vec())),
            None => break,
        }
        off += 4 + usize::from(len);
    }
    out
}

/// Encodes an active namespace id list: up to 1024 NSIDs greater than `after`,
/// ascending, zero-terminated.
pub fn encode_ns_list(nsids: impl IntoIterator<Item = u32>, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    for (i, nsid) in nsids
        .into_iter()
        .filter(|n| *n > after)
        .take(IDENTIFY_LEN / 4)
        .enumerate()
    {
        put_u32(&mut b, i * 4, nsid);
    }
    b
}

/// Decodes a namespace id list.
pub fn decode_ns_list(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .take_while(|n| *n != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ControllerIdentity {
        ControllerIdentity {
            serial: "keel0001".into(),
            model: "Keel".into(),
            firmware: "0.1.0".into(),
            cmic: CMIC_MULTI_PORT_MULTI_CONTROLLER,
            mdts: 8,
            cntlid: 7,
            version: 0x0001_0300,
            oaes: OAES_NS_ATTRIBUTE,
            controller_type: ControllerType::Io,
            acl: 3,
            aerl: 3,
            frmw: 3,
            lpa: 4,
            elpe: 0,
            kas: 1,
            anatt: 10,
            anacap: ANACAP_ALL_STATES_FIXED_GROUPS,
            anagrpmax: 1024,
            nanagrpid: 1024,
            maxcmd: 128,
            nn: 32,
            oncs: ONCS_DSM | ONCS_WRITE_ZEROES,
            volatile_write_cache: true,
            sgls: SGLS_SUPPORTED | SGLS_OFFSET,
            mnan: 1024,
            subnqn: "nqn.2024-01.io.keel:x".into(),
            ioccsz: (64 + 8192) / 16,
            iorcsz: 1,
            icdoff: 0,
            msdbd: 1,
        }
    }

    #[test]
    fn controller_identity_is_byte_exact() {
        let b = sample().encode();
        assert_eq!(b.len(), 4096);
        assert_eq!(&b[4..12], b"keel0001");
        assert_eq!(b[12], b' ');
        assert_eq!(u16::from_le_bytes([b[78], b[79]]), 7);
        assert_eq!((b[512], b[513]), (0x66, 0x44));
        assert_eq!(
            u32::from_le_bytes(b[536..540].try_into().unwrap()),
            0x0010_0001
        );
        assert_eq!(u32::from_le_bytes(b[1792..1796].try_into().unwrap()), 516);
        assert_eq!(b[111], 1);
        // ANATT, ANACAP, ANAGRPMAX, NANAGRPID and MNAN where the spec puts
        // them (Identify Controller bytes 342, 343, 347:344, 351:348 and
        // 543:540) and Linux's `struct nvme_id_ctrl` reads them: after
        // HMMAXD (337:336) and NSETIDMAX/ENDGIDMAX (341:338).
        assert_eq!(&b[338..342], &[0, 0, 0, 0]);
        assert_eq!((b[342], b[343]), (10, 0x5F));
        assert_eq!(&b[344..352], &[0, 4, 0, 0, 0, 4, 0, 0]);
        assert_eq!(&b[540..544], &[0, 4, 0, 0]);
        assert_eq!(ControllerIdentity::decode(&b), Some(sample()));
    }

    #[test]
    fn namespace_identity_round_trips() {
        let ns = NamespaceIdentity {
            size_blocks: 1000,
            block_shift: 12,
            dlfeat: DLFEAT_READS_ZEROES,
            nmic: 1,
            nguid: [9; 16],
            anagrpid: 3,
        };
        let b = ns.encode();
        assert_eq!(&b[92..96], &[3, 0, 0, 0]);
        assert_eq!(NamespaceIdentity::decode(&b), Some(ns));
    }

    #[test]
    fn descriptor_and_ns_lists_round_trip() {
        let d = decode_ns_descriptors(&encode_ns_descriptors([1; 16], [2; 16]));
        assert_eq!(
            d,
            vec![
                (nidt::NGUID, vec![1; 16]),
                (nidt::UUID, vec![2; 16]),
                (nidt::CSI, vec![0])
            ]
        );
        assert_eq!(decode_ns_list(&encode_ns_list([1, 3, 9], 1)), vec![3, 9]);
    }
}
