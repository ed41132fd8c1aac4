//! The host (initiator) side of NVMe/TCP: connect to a controller, run admin
//! commands, open I/O queues and move data. Blocking sockets, several commands
//! in flight per queue (submit, then reap). Used by protocol tests, the
//! end-to-end benchmark and, later, replication.

mod queue;

pub use queue::{OwnedPdu, Queue, Response};

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::backend::{Lba, LbaRange};
use crate::nvme::fabrics::{
    fctype, property, ConnectCommand, ConnectData, CATTR_DISABLE_SQ_FLOW, CC_ENABLE, CC_SHN_MASK,
    CSTS_READY, CSTS_SHUTDOWN_COMPLETE,
};
use crate::nvme::identify::{
    decode_ns_descriptors, decode_ns_list, ControllerIdentity, NamespaceIdentity,
};
use crate::nvme::log_page::{
    decode_discovery_header, AnaLog, AnaLogDecodeError, DiscoveryEntry, ErrorInformationEntry,
    ANA_DESCRIPTOR_LEN, ANA_HEADER_LEN, ANA_LSP_RETURN_GROUPS_ONLY, DISCOVERY_RECORD_LEN,
    ERROR_ENTRY_LEN,
};
use crate::nvme::{
    admin_opcode, cns, feature, io_opcode, log_id, Command, DISCOVERY_NQN, IDENTIFY_LEN,
};
use crate::pdu::{DecodeError, Digests};

/// Why a host operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// Socket error.
    #[error("socket error")]
    Io(#[from] std::io::Error),
    /// The controller sent bytes that do not decode.
    #[error("undecodable PDU from the controller")]
    Decode(#[source] DecodeError),
    /// The controller broke the protocol.
    #[error("protocol violation by the controller: {0}")]
    Protocol(&'static str),
    /// The controller sent a termination request.
    #[error("controller terminated the connection (FES {fes:#x}, FEI {fei:#x})")]
    Terminated {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// The controller closed the connection.
    #[error("connection closed by the controller")]
    Closed,
    /// No answer within the timeout.
    #[error("timed out waiting for the controller")]
    Timeout,
    /// A command completed with an error status.
    #[error("command failed with status field {status_field:#x} (dw0 {dw0:#x})")]
    Status {
        /// The raw status field ([`crate::Status::from_field`] decodes it).
        status_field: u16,
        /// DW0 of the completion.
        dw0: u32,
    },
    /// A command completed with an Asymmetric Namespace Access status: this
    /// controller cannot serve the namespace now (inaccessible, persistently
    /// lost or in transition), and another path to the subsystem may.
    #[error("path cannot serve the namespace: {status:?}")]
    PathUnavailable {
        /// [`crate::Status::AnaInaccessible`], [`crate::Status::AnaPersistentLoss`]
        /// or [`crate::Status::AnaTransition`].
        status: crate::Status,
    },
    /// The ANA log page the controller returned does not decode.
    #[error("undecodable ANA log page")]
    AnaLog(#[source] AnaLogDecodeError),
}

impl HostError {
    /// The NVMe status of a [`HostError::Status`] or [`HostError::PathUnavailable`].
    pub fn status(&self) -> Option<crate::Status> {
        match self {
            HostError::Status { status_field, .. } => crate::Status::from_field(*status_field).ok(),
            HostError::PathUnavailable { status } => Some(*status),
            _ => None,
        }
    }

    /// Whether the command failed because this path cannot serve the
    /// namespace now (a caller with other paths tries another).
    pub fn is_path_unavailable(&self) -> bool {
        matches!(self, HostError::PathUnavailable { .. })
    }
}

/// How the host connects.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// The host's NQN.
    pub host_nqn: String,
    /// The host identifier.
    pub host_id: [u8; 16],
    /// Subsystem to connect to.
    pub subsys_nqn: String,
    /// Header/data digests to request.
    pub digests: Digests,
    /// Keep-alive timeout in ms (0 disables it).
    pub kato_ms: u32,
    /// Entries per I/O queue.
    pub queue_size: u16,
    /// Ask to disable SQ flow control (allows the C2HData SUCCESS optimisation).
    pub disable_sq_flow: bool,
    /// Host PDU data alignment asked for in ICReq (0: none; see [`Queue::open`]).
    pub hpda: u8,
    /// Socket and command timeout.
    pub timeout: Duration,
    /// The local address to connect from (None: the system's choice).
    pub source: Option<IpAddr>,
}

impl HostOptions {
    /// Defaults like the Linux host: 128-entry queues, KATO 5 s, no digests.
    pub fn new(host_nqn: impl Into<String>, subsys_nqn: impl Into<String>) -> HostOptions {
        HostOptions {
            host_nqn: host_nqn.into(),
            host_id: [0x11; 16],
            subsys_nqn: subsys_nqn.into(),
            digests: Digests::default(),
            kato_ms: 5000,
            queue_size: 128,
            disable_sq_flow: false,
            hpda: 0,
            timeout: Duration::from_secs(10),
            source: None,
        }
    }
}

/// A connected controller: its admin queue and what Identify reported.
pub struct HostController {
    addr: SocketAddr,
    /// How this controller was connected; I/O queues connected later use the
    /// options as they are then.
    pub options: HostOptions,
    /// The admin queue.
    pub admin: Queue,
    /// Controller id returned by Connect.
    pub cntlid: u16,
    /// Identify Controller.
    pub identity: ControllerIdentity,
}

fn fabrics_command(fctype_value: u8) -> Command {
    let mut c = Command::new(admin_opcode::FABRICS, 0);
    c.0[4] = fctype_value;
    c
}

/// Runs a Connect on `queue`; returns DW0 (the controller id for the admin queue).
fn connect_queue(
    queue: &mut Queue,
    options: &HostOptions,
    qid: u16,
    sqsize: u16,
    cntlid: u16,
) -> Result<u32, HostError> {
    let mut cmd = fabrics_command(fctype::CONNECT);
    let cattr = if options.disable_sq_flow {
        CATTR_DISABLE_SQ_FLOW
    } else {
        0
    };
    ConnectCommand {
        recfmt: 0,
        qid,
        sqsize,
        cattr,
        kato_ms: if qid == 0 { options.kato_ms } else { 0 },
    }
    .write_to(&mut cmd);
    let data = ConnectData {
        host_id: options.host_id,
        cntlid,
        subsys_nqn: options.subsys_nqn.clone(),
        host_nqn: options.host_nqn.clone(),
    }
    .encode();
    let r = queue.execute(cmd, Some(Bytes::from(data)), 0)?.success()?;
    queue.qid = qid;
    Ok(r.completion.dw0())
}

impl HostController {
    /// Connects the admin queue, enables the controller and identifies it.
    pub fn connect(addr: SocketAddr, options: HostOptions) -> Result<HostController, HostError> {
        let mut admin = Queue::open(
            addr,
            options.source,
            options.digests,
            options.hpda,
            options.timeout,
        )?;
        let dw0 = connect_queue(&mut admin, &options, 0, 31, 0xFFFF)?;
        let cntlid = (dw0 & 0xFFFF) as u16;
        let mut c = HostController {
            addr,
            options,
            admin,
            cntlid,
            identity: ControllerIdentity::decode(&[0; IDENTIFY_LEN])
                .ok_or(HostError::Protocol("identity"))?,
        };
        let cap = c.property_get(property::CAP, true)?;
        let timeout = Duration::from_millis(((cap >> 24) & 0xFF).max(1) * 500);
        // CC: EN, CSS NVM, MPS 4 KiB, AMS RR, IOSQES 6, IOCQES 4.
        c.property_set(property::CC, CC_ENABLE | (6 << 16) | (4 << 20))?;
        let deadline = Instant::now() + timeout;
        while c.property_get(property::CSTS, false)? as u32 & CSTS_READY == 0 {
            if Instant::now() > deadline {
                return Err(HostError::Timeout);
            }
            std::thread::yield_now();
        }
        let id = c.identify(cns::CONTROLLER, 0)?;
        c.identity = ControllerIdentity::decode(&id)
            .ok_or(HostError::Protocol("short Identify Controller"))?;
        if c.identity.cntlid != c.cntlid {
            return Err(HostError::Protocol("mismatching cntlid"));
        }
        Ok(c)
    }

    /// Property Get of `offset`.
    pub fn property_get(&mut self, offset: u32, eight_bytes: bool) -> Result<u64, HostError> {
        let mut cmd = fabrics_command(fctype::PROPERTY_GET);
        cmd.0[40] = u8::from(eight_bytes);
        cmd.0[44..48].copy_from_slice(&offset.to_le_bytes());
        Ok(self
            .admin
            .execute(cmd, None, 0)?
            .success()?
            .completion
            .result)
    }

    /// Property Set of a 4-byte property.
    pub fn property_set(&mut self, offset: u32, value: u32) -> Result<(), HostError> {
        let mut cmd = fabrics_command(fctype::PROPERTY_SET);
        cmd.0[44..48].copy_from_slice(&offset.to_le_bytes());
        cmd.0[48..56].copy_from_slice(&u64::from(value).to_le_bytes());
        self.admin.execute(cmd, None, 0)?.success()?;
        Ok(())
    }

    /// Identify with `cns` for `nsid` (4096 bytes).
    pub fn identify(&mut self, cns_value: u8, nsid: u32) -> Result<Vec<u8>, HostError> {
        let mut cmd = Command::new(admin_opcode::IDENTIFY, 0);
        cmd.set_nsid(nsid);
        cmd.set_cdw(10, u32::from(cns_value));
        Ok(self
            .admin
            .execute(cmd, None, IDENTIFY_LEN as u32)?
            .success()?
            .data)
    }

    /// Identify Namespace.
    pub fn identify_namespace(&mut self, nsid: u32) -> Result<NamespaceIdentity, HostError> {
        let b = self.identify(cns::NAMESPACE, nsid)?;
        NamespaceIdentity::decode(&b).ok_or(HostError::Protocol("short Identify Namespace"))
    }

    /// Active namespace ids.
    pub fn active_namespaces(&mut self) -> Result<Vec<u32>, HostError> {
        Ok(decode_ns_list(&self.identify(cns::ACTIVE_NS_LIST, 0)?))
    }

    /// Namespace identification descriptors as (NIDT, NID).
    pub fn namespace_descriptors(&mut self, nsid: u32) -> Result<Vec<(u8, Vec<u8>)>, HostError> {
        Ok(decode_ns_descriptors(
            &self.identify(cns::NS_DESCRIPTORS, nsid)?,
        ))
    }

    /// Get Log Page `lid`: `len` bytes (a multiple of 4) from byte `offset`.
    pub fn get_log_page(
        &mut self,
        lid: u8,
        offset: u64,
        len: u32,
        retain_event: bool,
    ) -> Result<Vec<u8>, HostError> {
        self.get_log_page_lsp(lid, 0, offset, len, retain_event)
    }

    /// Get Log Page `lid` with log specific field `lsp` (7 bits).
    pub fn get_log_page_lsp(
        &mut self,
        lid: u8,
        lsp: u8,
        offset: u64,
        len: u32,
        retain_event: bool,
    ) -> Result<Vec<u8>, HostError> {
        let mut cmd = Command::new(admin_opcode::GET_LOG_PAGE, 0);
        cmd.set_nsid(0xFFFF_FFFF);
        let numd = len / 4 - 1;
        cmd.set_cdw(
            10,
            u32::from(lid)
                | (u32::from(lsp & 0x7F) << 8)
                | (u32::from(retain_event) << 15)
                | ((numd & 0xFFFF) << 16),
        );
        cmd.set_cdw(11, numd >> 16);
        cmd.set_cdw(12, offset as u32);
        cmd.set_cdw(13, (offset >> 32) as u32);
        Ok(self.admin.execute(cmd, None, len)?.success()?.data)
    }

    /// The Error Information log (all ELPE + 1 entries read), without unused
    /// entries: newest first as the controller orders them.
    pub fn error_log(&mut self) -> Result<Vec<ErrorInformationEntry>, HostError> {
        let entries = u32::from(self.identity.elpe) + 1;
        let page = self.get_log_page(log_id::ERROR, 0, entries * ERROR_ENTRY_LEN as u32, false)?;
        Ok(page
            .chunks_exact(ERROR_ENTRY_LEN)
            .filter_map(ErrorInformationEntry::decode)
            .filter(|e| e.error_count != 0)
            .collect())
    }

    /// Reads and decodes the Asymmetric Namespace Access log page (and re-arms
    /// ANA change notices). Like Linux, reads as much as the largest page the
    /// controller could return: NANAGRPID descriptors and MNAN NSIDs.
    /// `groups_only` asks for descriptors without NSID lists (RGO).
    pub fn ana_log(&mut self, groups_only: bool) -> Result<AnaLog, HostError> {
        let id = &self.identity;
        if id.nanagrpid == 0 {
            return Err(HostError::Protocol("controller reports no ANA groups"));
        }
        let len = u64::from(id.nanagrpid) * ANA_DESCRIPTOR_LEN as u64
            + u64::from(id.mnan) * 4
            + ANA_HEADER_LEN as u64;
        let len = u32::try_from(len).map_err(|_| HostError::Protocol("absurd ANA log size"))?;
        let lsp = if groups_only {
            ANA_LSP_RETURN_GROUPS_ONLY
        } else {
            0
        };
        let page = self.get_log_page_lsp(log_id::ANA, lsp, 0, len, false)?;
        AnaLog::decode(&page).map_err(HostError::AnaLog)
    }

    /// Get Features `fid`; returns DW0.
    pub fn get_features(&mut self, fid: u8) -> Result<u32, HostError> {
        let mut cmd = Command::new(admin_opcode::GET_FEATURES, 0);
        cmd.set_cdw(10, u32::from(fid));
        Ok(self
            .admin
            .execute(cmd, None, 0)?
            .success()?
            .completion
            .dw0())
    }

    /// Set Features `fid` with CDW11 `value`; returns DW0.
    pub fn set_features(&mut self, fid: u8, value: u32) -> Result<u32, HostError> {
        let mut cmd = Command::new(admin_opcode::SET_FEATURES, 0);
        cmd.set_cdw(10, u32::from(fid));
        cmd.set_cdw(11, value);
        Ok(self
            .admin
            .execute(cmd, None, 0)?
            .success()?
            .completion
            .dw0())
    }

    /// Negotiates `count` I/O queues; returns the number granted.
    pub fn set_queue_count(&mut self, count: u16) -> Result<u16, HostError> {
        let n = u32::from(count.max(1) - 1);
        let dw0 = self.set_features(feature::NUMBER_OF_QUEUES, n | (n << 16))?;
        Ok(((dw0 & 0xFFFF).min(dw0 >> 16) + 1) as u16)
    }

    /// Sends a Keep Alive.
    pub fn keep_alive(&mut self) -> Result<(), HostError> {
        self.admin
            .execute(Command::new(admin_opcode::KEEP_ALIVE, 0), None, 0)?
            .success()?;
        Ok(())
    }

    /// Submits an Asynchronous Event Request; reap it with `admin.wait(cid)`.
    pub fn submit_aer(&mut self) -> Result<u16, HostError> {
        self.admin
            .submit(Command::new(admin_opcode::ASYNC_EVENT_REQUEST, 0), None, 0)
    }

    /// Reads the whole discovery log the way libnvme does (header, entries,
    /// header again; retry if the generation moved).
    pub fn discovery_log(&mut self) -> Result<Vec<DiscoveryEntry>, HostError> {
        for _ in 0..10 {
            let header =
                self.get_log_page(log_id::DISCOVERY, 0, DISCOVERY_RECORD_LEN as u32, true)?;
            let (genctr, numrec) =
                decode_discovery_header(&header).ok_or(HostError::Protocol("short header"))?;
            let numrec = u32::try_from(numrec)
                .map_err(|_| HostError::Protocol("absurd NUMREC"))?
                .min(256);
            let mut entries = Vec::new();
            if numrec > 0 {
                let body = self.get_log_page(
                    log_id::DISCOVERY,
                    DISCOVERY_RECORD_LEN as u64,
                    numrec * DISCOVERY_RECORD_LEN as u32,
                    true,
                )?;
                for chunk in body.chunks_exact(DISCOVERY_RECORD_LEN) {
                    entries.push(
                        DiscoveryEntry::decode(chunk).ok_or(HostError::Protocol("short entry"))?,
                    );
                }
            }
            let again =
                self.get_log_page(log_id::DISCOVERY, 0, DISCOVERY_RECORD_LEN as u32, false)?;
            if decode_discovery_header(&again).map(|h| h.0) == Some(genctr) {
                return Ok(entries);
            }
        }
        Err(HostError::Protocol("discovery log kept changing"))
    }

    /// Opens I/O queue `qid` on a new connection.
    pub fn connect_io_queue(&mut self, qid: u16) -> Result<IoQueue, HostError> {
        let o = &self.options;
        let mut queue = Queue::open(self.addr, o.source, o.digests, o.hpda, o.timeout)?;
        let sqsize = self.options.queue_size.saturating_sub(1).max(1);
        connect_queue(&mut queue, &self.options, qid, sqsize, self.cntlid)?;
        let inline = (self.identity.ioccsz as usize * 16).saturating_sub(64);
        queue.set_inline_data_max(inline);
        Ok(IoQueue { queue })
    }

    /// Shuts the controller down (CC.SHN) and waits for CSTS.SHST complete.
    pub fn shutdown(mut self) -> Result<(), HostError> {
        let cc = self.property_get(property::CC, false)? as u32;
        self.property_set(property::CC, (cc & !CC_SHN_MASK) | (1 << 14))?;
        let deadline = Instant::now() + self.options.timeout;
        while self.property_get(property::CSTS, false)? as u32 & CSTS_SHUTDOWN_COMPLETE == 0 {
            if Instant::now() > deadline {
                return Err(HostError::Timeout);
            }
            std::thread::yield_now();
        }
        Ok(())
    }
}

/// Connects to the discovery controller at `addr` and returns the log entries
/// visible to `host_nqn`.
pub fn discover(addr: SocketAddr, host_nqn: &str) -> Result<Vec<DiscoveryEntry>, HostError> {
    let mut options = HostOptions::new(host_nqn, DISCOVERY_NQN);
    options.kato_ms = 0;
    let mut c = HostController::connect(addr, options)?;
    c.discovery_log()
}

/// An I/O queue with NVM commands. Blocking helpers submit and wait; the
/// `submit_*` variants let callers keep several commands in flight.
pub struct IoQueue {
    /// The underlying queue (submit/wait/raw access).
    pub queue: Queue,
}

fn rw_command(opcode: u8, nsid: u32, lba: Lba, blocks: u32) -> Command {
    assert!(
        (1..=65536).contains(&blocks),
        "1..=65536 blocks per command"
    );
    let mut cmd = Command::new(opcode, 0);
    cmd.set_nsid(nsid);
    cmd.set_cdw(10, lba.0 as u32);
    cmd.set_cdw(11, (lba.0 >> 32) as u32);
    cmd.set_cdw(12, blocks - 1);
    cmd
}

impl IoQueue {
    /// Submits a read of `blocks` blocks of `block_size` bytes.
    pub fn submit_read(
        &mut self,
        nsid: u32,
        lba: Lba,
        blocks: u32,
        block_size: u32,
    ) -> Result<u16, HostError> {
        self.queue.submit(
            rw_command(io_opcode::READ, nsid, lba, blocks),
            None,
            blocks * block_size,
        )
    }

    /// Submits a write of `data` (a whole number of blocks of `block_size`).
    pub fn submit_write(
        &mut self,
        nsid: u32,
        lba: Lba,
        data: Bytes,
        block_size: u32,
    ) -> Result<u16, HostError> {
        let blocks = (data.len() as u32) / block_size;
        self.queue.submit(
            rw_command(io_opcode::WRITE, nsid, lba, blocks),
            Some(data),
            0,
        )
    }

    /// Reads and returns the data.
    pub fn read(
        &mut self,
        nsid: u32,
        lba: Lba,
        blocks: u32,
        block_size: u32,
    ) -> Result<Vec<u8>, HostError> {
        let cid = self.submit_read(nsid, lba, blocks, block_size)?;
        Ok(self.queue.wait(cid)?.success()?.data)
    }

    /// Writes `data`.
    pub fn write(
        &mut self,
        nsid: u32,
        lba: Lba,
        data: Bytes,
        block_size: u32,
    ) -> Result<(), HostError> {
        let cid = self.submit_write(nsid, lba, data, block_size)?;
        self.queue.wait(cid)?.success()?;
        Ok(())
    }

    /// Flushes the namespace's write cache.
    pub fn flush(&mut self, nsid: u32) -> Result<(), HostError> {
        let mut cmd = Command::new(io_opcode::FLUSH, 0);
        cmd.set_nsid(nsid);
        self.queue.execute(cmd, None, 0)?.success()?;
        Ok(())
    }

    /// Zeroes `blocks` blocks.
    pub fn write_zeroes(&mut self, nsid: u32, lba: Lba, blocks: u32) -> Result<(), HostError> {
        self.queue
            .execute(
                rw_command(io_opcode::WRITE_ZEROES, nsid, lba, blocks),
                None,
                0,
            )?
            .success()?;
        Ok(())
    }

    /// Deletes this I/O queue with a Fabrics Disconnect; the controller and its
    /// other queues stay. Waits for the controller's answer.
    pub fn disconnect(mut self) -> Result<(), HostError> {
        self.queue
            .execute(fabrics_command(fctype::DISCONNECT), None, 0)?
            .success()?;
        Ok(())
    }

    /// Deallocates `ranges` (Dataset Management with AD set).
    pub fn deallocate(&mut self, nsid: u32, ranges: &[LbaRange]) -> Result<(), HostError> {
        assert!(!ranges.is_empty() && ranges.len() <= 256);
        let mut cmd = Command::new(io_opcode::DATASET_MANAGEMENT, 0);
        cmd.set_nsid(nsid);
        cmd.set_cdw(10, ranges.len() as u32 - 1);
        cmd.set_cdw(11, 1 << 2);
        let mut data = Vec::with_capacity(ranges.len() * 16);
        for r in ranges {
            data.extend_from_slice(&0u32.to_le_bytes());
            data.extend_from_slice(&r.blocks.to_le_bytes());
            data.extend_from_slice(&r.start.0.to_le_bytes());
        }
        self.queue
            .execute(cmd, Some(Bytes::from(data)), 0)?
            .success()?;
        Ok(())
    }
}
