//! A whole NVMe/TCP session driven by hostile input: a valid ICReq and admin
//! Connect, the controller enabled, queues granted and an I/O queue
//! connected on a second connection, then a script of operations read from
//! the fuzz bytes. Each operation is a well-formed PDU whose fields the bytes
//! choose (so Identify, Get Log Page, features, keep-alive, AER, properties,
//! Read/Write/Write Zeroes/DSM/Flush and H2CData after an R2T all see hostile
//! values past Connect), or raw bytes, a clock step, or a reconnect.
//!
//! **Invariant checked:** whatever the script, nothing panics, every
//! completion the target sends names a command that was sent on that queue,
//! and the output stays bounded.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connection::Connection;
use crate::nvme::fabrics::{fctype, property, ConnectCommand, ConnectData, CC_ENABLE};
use crate::nvme::{admin_opcode, feature, io_opcode, Command, Completion};
use crate::nvme::{SGL_TYPE_IN_CAPSULE, SGL_TYPE_TRANSPORT};
use crate::pdu::{self, CapsuleCmd, DataPdu, DecodeLimits, Digests, IcReq, Pdu, PduType, R2t};
use crate::subsystem::{HostAcl, NamespaceOptions, Subsystem, SubsystemConfig};
use crate::{AnaState, BlockSize, MemoryNamespace};

const SUBSYSTEM_NQN: &str = "nqn.2024-01.io.keel:fuzz";
const HOST_NQN: &str = "nqn.2014-08.org.nvmexpress:uuid:f0f0f0f0-0000-4000-8000-00000000f0f0";
/// Most operations one script runs (bounds the time per input).
const OPS_MAX: usize = 256;
/// Most bytes of data one operation carries.
const DATA_MAX: usize = 48 * 1024;
/// Output one queue may hold before the script must have drained it.
const OUTPUT_MAX: usize = 4 << 20;

fn digests(selector: u8) -> Digests {
    Digests {
        header: selector & 1 != 0,
        data: selector & 2 != 0,
    }
}

/// Reads fuzz bytes as values; past the end every read is zero.
struct Script<'a> {
    bytes: &'a [u8],
}

impl Script<'_> {
    fn u8(&mut self) -> u8 {
        match self.bytes.split_first() {
            Some((&b, rest)) => {
                self.bytes = rest;
                b
            }
            None => 0,
        }
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    fn take(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.bytes.len());
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        head
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
}

/// One connection seen from the host side.
struct HostQueue {
    conn: Connection,
    digests: Digests,
    /// Commands sent and not yet completed.
    outstanding: Vec<u16>,
    /// R2Ts received and not yet answered.
    r2ts: Vec<R2t>,
    completions: Vec<Completion>,
    next_cid: u16,
}

impl HostQueue {
    fn open(subsystem: &Arc<Subsystem>, selector: u8, now: Instant) -> HostQueue {
        let ctx = super::context(subsystem.clone());
        let mut queue = HostQueue {
            conn: Connection::new(ctx),
            digests: digests(selector),
            outstanding: Vec::new(),
            r2ts: Vec::new(),
            completions: Vec::new(),
            next_cid: 1,
        };
        let mut icreq = Vec::new();
        IcReq {
            pfv: 0,
            hpda: selector >> 4 & 0x3,
            digests: queue.digests,
            maxr2t: 0,
        }
        .encode(&mut icreq);
        queue.conn.receive(&icreq, now);
        // The ICResp carries no PDU the host side decodes below.
        let out = queue.conn.take_output();
        let n: usize = out.iter().map(|b| b.len()).sum();
        queue.conn.consumed_output(n);
        queue
    }

    /// Sends `cmd` (its CID replaced by a fresh one) with `data` in the
    /// capsule; returns the CID.
    fn send_command(&mut self, mut cmd: Command, data: &[u8], now: Instant) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1).max(1);
        cmd.set_cid(cid);
        let mut bytes = Vec::new();
        CapsuleCmd { sqe: cmd.0, data }.encode(self.digests, &mut bytes);
        self.outstanding.push(cid);
        self.conn.receive(&bytes, now);
        cid
    }

    /// Runs the namespace I/O the target started and reads what it sent:
    /// completions and R2Ts.
    fn pump(&mut self, now: Instant) {
        super::run_io(&mut self.conn, now);
        let out = self.conn.take_output();
        let mut bytes = Vec::new();
        for chunk in out.iter() {
            bytes.extend_from_slice(chunk);
        }
        assert!(
            bytes.len() <= OUTPUT_MAX,
            "output grew to {} bytes",
            bytes.len()
        );
        let n = bytes.len();
        self.conn.consumed_output(n);
        self.read_replies(&bytes);
    }

    fn read_replies(&mut self, mut bytes: &[u8]) {
        let limits = DecodeLimits {
            capsule_data_max: 8192,
            data_pdu_max: 1 << 20,
        };
        while let Ok(Some(decoded)) = pdu::decode(bytes, self.digests, &limits) {
            match decoded.pdu {
                Pdu::CapsuleResp(resp) => {
                    let completion = Completion::decode(&resp.cqe);
                    let cid = completion.cid;
                    // Every completion answers a command this queue sent
                    // (a failed Connect or capsule may answer CID 0 too).
                    if let Some(at) = self.outstanding.iter().position(|c| *c == cid) {
                        self.outstanding.swap_remove(at);
                    }
                    self.r2ts.retain(|r| r.command_id != cid);
                    self.completions.push(completion);
                }
                Pdu::R2T(r2t) => {
                    assert!(
                        self.outstanding.contains(&r2t.command_id),
                        "an R2T for CID {} that is not outstanding",
                        r2t.command_id
                    );
                    self.r2ts.push(r2t);
                }
                _ => {}
            }
            bytes = &bytes[decoded.len..];
        }
    }
}

/// Hands `bytes` to the connection in two receives cut at `cut`, the second
/// (when `lend`) first into the buffer the connection lends for the rest of
/// a data PDU, as a driver receiving straight into it would.
fn deliver_in_two(conn: &mut Connection, bytes: &[u8], cut: usize, lend: bool, now: Instant) {
    let cut = cut.min(bytes.len());
    conn.receive(&bytes[..cut], now);
    let mut rest = &bytes[cut..];
    if lend {
        if let Some(mut target) = conn.inbound_target() {
            let place = target.as_mut_slice();
            let n = place.len().min(rest.len());
            place[..n].copy_from_slice(&rest[..n]);
            conn.inbound_received(target, n, now);
            rest = &rest[n..];
        }
    }
    conn.receive(rest, now);
}

fn fabrics(fctype_value: u8) -> Command {
    let mut cmd = Command::new(admin_opcode::FABRICS, 0);
    cmd.0[4] = fctype_value;
    cmd
}

fn connect(queue: &mut HostQueue, qid: u16, cntlid: u16, now: Instant) -> Option<u16> {
    let mut cmd = fabrics(fctype::CONNECT);
    ConnectCommand {
        recfmt: 0,
        qid,
        sqsize: 31,
        cattr: 0,
        kato_ms: 0,
    }
    .write_to(&mut cmd);
    let data = ConnectData {
        host_id: [0xF0; 16],
        cntlid,
        subsys_nqn: SUBSYSTEM_NQN.into(),
        host_nqn: HOST_NQN.into(),
    }
    .encode();
    cmd.set_sgl(0, data.len() as u32, SGL_TYPE_IN_CAPSULE);
    let cid = queue.send_command(cmd, &data, now);
    queue.pump(now);
    let reply = queue.completions.iter().find(|c| c.cid == cid)?;
    reply
        .status()
        .ok()
        .filter(|s| s.is_success())
        .map(|_| reply.dw0() as u16)
}

fn property_set(queue: &mut HostQueue, offset: u32, value: u64, now: Instant) {
    let mut cmd = fabrics(fctype::PROPERTY_SET);
    cmd.set_cdw(10, 0);
    cmd.set_cdw(11, offset);
    cmd.set_cdw(12, value as u32);
    cmd.set_cdw(13, (value >> 32) as u32);
    queue.send_command(cmd, &[], now);
    queue.pump(now);
}

/// Admin opcodes the script picks from (the fabrics ones by FCTYPE).
const ADMIN_OPCODES: [u8; 7] = [
    admin_opcode::IDENTIFY,
    admin_opcode::GET_LOG_PAGE,
    admin_opcode::GET_FEATURES,
    admin_opcode::SET_FEATURES,
    admin_opcode::KEEP_ALIVE,
    admin_opcode::ASYNC_EVENT_REQUEST,
    admin_opcode::ABORT,
];

const IO_OPCODES: [u8; 5] = [
    io_opcode::READ,
    io_opcode::WRITE,
    io_opcode::WRITE_ZEROES,
    io_opcode::DATASET_MANAGEMENT,
    io_opcode::FLUSH,
];

/// A command with `opcode` whose NSID and CDW10-15 the script chooses, the
/// NSID mostly the one namespace that exists.
fn scripted_command(opcode: u8, script: &mut Script<'_>) -> Command {
    let mut cmd = Command::new(opcode, 0);
    let nsid = match script.u8() % 4 {
        0 => script.u32(),
        1 => 0xFFFF_FFFF,
        _ => 1,
    };
    cmd.set_nsid(nsid);
    for dw in 10..=15 {
        cmd.set_cdw(dw, script.u32());
    }
    // Mostly small transfers: NLB below 64 blocks.
    if !script.u8().is_multiple_of(4) {
        cmd.set_cdw(12, cmd.cdw(12) & 0x3F);
        cmd.set_cdw(11, 0);
        cmd.set_cdw(10, cmd.cdw(10) & 0x3F);
    }
    cmd
}

/// How far a session got, so tests can tell it reached the commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SessionReport {
    /// The I/O queue's Connect succeeded.
    pub io_queue_connected: bool,
    /// Completions received for scripted commands (both queues).
    pub completed: usize,
    /// Of those, the successful ones.
    pub succeeded: usize,
}

/// Drives one session with `bytes` as its script; `selector` picks the
/// digests, the data alignment, ANA reporting and the namespace's ANA state.
pub fn drive_session(selector: u8, bytes: &[u8]) -> SessionReport {
    let mut config = SubsystemConfig::new(SUBSYSTEM_NQN, "FUZZ");
    config.ana_reporting = selector & 4 != 0;
    let subsystem = Subsystem::new(config);
    let ana_state = if selector & 8 != 0 {
        AnaState::Inaccessible
    } else {
        AnaState::Optimized
    };
    let ns = MemoryNamespace::new(BlockSize::B512, 256, [7; 16]);
    let options = NamespaceOptions::new(HostAcl::AnyHost).with_ana_state(ana_state);
    if subsystem.add_namespace(1, ns, options).is_err() {
        return SessionReport::default();
    }
    let mut now = Instant::now();
    let mut admin = HostQueue::open(&subsystem, selector, now);
    let Some(cntlid) = connect(&mut admin, 0, 0xFFFF, now) else {
        panic!("a valid admin Connect was refused");
    };
    // Enabled with the queue entry sizes an NVMe host must use (64/16 bytes).
    let cc = CC_ENABLE | 6 << 16 | 4 << 20;
    property_set(&mut admin, property::CC, u64::from(cc), now);
    let mut queues = Command::new(admin_opcode::SET_FEATURES, 0);
    queues.set_cdw(10, u32::from(feature::NUMBER_OF_QUEUES));
    queues.set_cdw(11, 0x0003_0003);
    admin.send_command(queues, &[], now);
    admin.pump(now);
    let mut io = HostQueue::open(&subsystem, selector, now);
    let io_queue_connected = connect(&mut io, 1, cntlid, now).is_some();
    let setup = (admin.completions.len(), io.completions.len());

    let mut script = Script { bytes };
    for _ in 0..OPS_MAX {
        if script.is_empty() {
            break;
        }
        match script.u8() % 8 {
            0 => {
                let opcode = ADMIN_OPCODES[usize::from(script.u8()) % ADMIN_OPCODES.len()];
                let mut cmd = scripted_command(opcode, &mut script);
                cmd.set_sgl(0, u32::from(script.u16()) % 8192, SGL_TYPE_TRANSPORT);
                admin.send_command(cmd, &[], now);
            }
            1 => {
                let mut cmd = fabrics(if script.u8() & 1 == 0 {
                    fctype::PROPERTY_GET
                } else {
                    fctype::PROPERTY_SET
                });
                cmd.set_cdw(10, u32::from(script.u8()));
                cmd.set_cdw(11, u32::from(script.u8()));
                cmd.set_cdw(12, script.u32());
                admin.send_command(cmd, &[], now);
            }
            2 | 3 => {
                let opcode = IO_OPCODES[usize::from(script.u8()) % IO_OPCODES.len()];
                let mut cmd = scripted_command(opcode, &mut script);
                let len = usize::from(script.u16()) % DATA_MAX;
                let in_capsule = script.u8() & 1 == 0;
                if in_capsule {
                    let data: Vec<u8> = script.take(len).to_vec();
                    cmd.set_sgl(0, data.len() as u32, SGL_TYPE_IN_CAPSULE);
                    io.send_command(cmd, &data, now);
                } else {
                    cmd.set_sgl(0, len as u32, SGL_TYPE_TRANSPORT);
                    io.send_command(cmd, &[], now);
                }
            }
            4 => {
                // H2CData: for an R2T the target sent, with fields the script
                // bends, or for nothing at all.
                let r2t = if io.r2ts.is_empty() {
                    None
                } else {
                    Some(io.r2ts[usize::from(script.u8()) % io.r2ts.len()])
                };
                let bend = script.u8();
                let (command_id, ttag, mut offset, mut length) = match r2t {
                    Some(r) => (r.command_id, r.ttag, r.offset, r.length),
                    None => (script.u16(), script.u16(), script.u32(), script.u32()),
                };
                if bend & 1 != 0 {
                    offset = offset.wrapping_add(script.u32() % 8192);
                }
                if bend & 2 != 0 {
                    length = script.u32() % 16384;
                }
                let data = vec![bend; (length as usize).min(DATA_MAX)];
                let mut bytes = Vec::new();
                DataPdu {
                    command_id,
                    ttag,
                    offset,
                    last: bend & 4 == 0,
                    success: false,
                    data: &data,
                }
                .encode(PduType::H2CData, io.digests, 0, &mut bytes);
                let cut = usize::from(script.u16());
                deliver_in_two(&mut io.conn, &bytes, cut, bend & 8 != 0, now);
            }
            5 => {
                let len = usize::from(script.u8());
                let raw = script.take(len).to_vec();
                if script.u8() & 1 == 0 {
                    admin.conn.receive(&raw, now);
                } else {
                    io.conn.receive(&raw, now);
                }
            }
            6 => {
                now += Duration::from_millis(u64::from(script.u16()) * 16);
                admin.conn.tick(now);
                io.conn.tick(now);
            }
            _ => {
                // The I/O queue goes and comes back, as after a path loss.
                io.conn.peer_closed();
                io = HostQueue::open(&subsystem, selector, now);
                connect(&mut io, 1 + u16::from(script.u8() % 3), cntlid, now);
            }
        }
        admin.pump(now);
        io.pump(now);
    }
    let scripted: Vec<&Completion> = admin.completions[setup.0..]
        .iter()
        .chain(io.completions.get(setup.1..).unwrap_or_default())
        .collect();
    let report = SessionReport {
        io_queue_connected,
        completed: scripted.len(),
        succeeded: scripted
            .iter()
            .filter(|c| c.status().is_ok_and(|s| s.is_success()))
            .count(),
    };
    io.conn.peer_closed();
    admin.conn.peer_closed();
    assert_eq!(
        subsystem.controller_count(),
        0,
        "a controller outlived its queues"
    );
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_script_still_connects_both_queues() {
        for selector in [0, 3, 0x37] {
            let report = drive_session(selector, &[]);
            assert!(report.io_queue_connected, "selector {selector:#x}");
        }
    }

    /// An I/O operation: `opcode_index` into [`IO_OPCODES`], NSID 1, CDWs
    /// zero (one block at LBA 0), `data` in the capsule, or (`transport`)
    /// that many bytes moved by R2T or C2HData.
    fn io_op(opcode_index: u8, data: &[u8], transport: bool) -> Vec<u8> {
        let mut op = vec![2, opcode_index, 2];
        op.extend_from_slice(&[0; 24]);
        op.push(1);
        op.extend_from_slice(&(data.len() as u16).to_le_bytes());
        op.push(u8::from(transport));
        if !transport {
            op.extend_from_slice(data);
        }
        op
    }

    #[test]
    fn scripted_commands_reach_the_namespace() {
        let mut script = io_op(1, &[0xAB; 512], false);
        script.extend(io_op(0, &[0; 512], true));
        script.extend(io_op(4, &[], true));
        let report = drive_session(0, &script);
        assert_eq!(report.completed, 3, "{report:?}");
        assert_eq!(report.succeeded, 3, "{report:?}");
    }

    #[test]
    fn admin_commands_with_hostile_fields_are_answered() {
        // Op 0 (admin), Identify, hostile NSID and CDWs.
        let mut script = vec![0, 0, 0];
        script.extend_from_slice(&[0xFF; 28]);
        script.extend_from_slice(&[0xFF; 2]);
        let report = drive_session(0, &script);
        assert_eq!(report.completed, 1, "{report:?}");
    }
}
