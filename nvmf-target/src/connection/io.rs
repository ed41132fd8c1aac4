//! NVM I/O commands: Read, Write, Flush, Write Zeroes, Dataset Management.

use bytes::Bytes;

use super::{Connection, IoKind, IoOp, IoRequest, Outcome, Reply};
use crate::backend::{check_range, Lba, LbaRange, NamespaceBackend};
use crate::nvme::fabrics::CSTS_READY;
use crate::nvme::{io_opcode, Command};
use crate::status::Status;
use std::sync::Arc;

/// Bytes per Dataset Management range descriptor.
const DSM_RANGE_LEN: usize = 16;
/// DSM CDW11 bit 2: Attribute – Deallocate.
const DSM_ATTR_DEALLOCATE: u32 = 1 << 2;

struct Extent {
    lba: Lba,
    blocks: u32,
    bytes: u64,
}

fn extent(cmd: &Command, ns: &dyn NamespaceBackend) -> Extent {
    let lba = Lba(u64::from(cmd.cdw(10)) | (u64::from(cmd.cdw(11)) << 32));
    let blocks = (cmd.cdw(12) & 0xFFFF) + 1;
    Extent {
        lba,
        blocks,
        bytes: u64::from(blocks) * u64::from(ns.block_size().bytes()),
    }
}

impl Connection {
    /// Checks a host-to-controller command before its data is fetched by R2T, so a
    /// bad write fails without moving data.
    pub(super) fn precheck_h2c(&mut self, cmd: &Command, length: u32) -> Result<(), Status> {
        let Some(q) = self.binding() else {
            return Err(Status::CommandSequenceError);
        };
        if q.qid == 0 || cmd.opcode() != io_opcode::WRITE {
            return Ok(());
        }
        let visible = self.namespace(cmd.nsid()).ok_or(Status::InvalidNamespace)?;
        // A write to a namespace this path cannot serve fails before its
        // data is asked for.
        if let Some(status) = Status::for_ana_state(visible.ana_state) {
            return Err(status);
        }
        let ns = visible.backend;
        let e = extent(cmd, ns.as_ref());
        if e.bytes != u64::from(length) {
            return Err(Status::SglLengthInvalid);
        }
        check_range(e.lba, u64::from(e.blocks), ns.capacity_blocks())
            .map_err(|err| Status::from(&err))
    }

    pub(super) fn io(&mut self, cid: u16, cmd: &Command, data: Bytes, c2h_len: u32) -> Outcome {
        let Some(q) = self.binding() else {
            return Outcome::Done(Reply::status(Status::CommandSequenceError));
        };
        if q.controller.state.lock().csts & CSTS_READY == 0 {
            return Outcome::Done(Reply::status(Status::CommandSequenceError));
        }
        if cmd.fuse() != 0 {
            return Outcome::Done(Reply::status(Status::InvalidField));
        }
        let opcode = cmd.opcode();
        if !matches!(
            opcode,
            io_opcode::READ
                | io_opcode::WRITE
                | io_opcode::FLUSH
                | io_opcode::WRITE_ZEROES
                | io_opcode::DATASET_MANAGEMENT
        ) {
            return Outcome::Done(Reply::status(Status::InvalidOpcode));
        }
        let Some(visible) = self.namespace(cmd.nsid()) else {
            return Outcome::Done(Reply::status(Status::InvalidNamespace));
        };
        // INVARIANT: an I/O command on a namespace in a non-accessible ANA
        // state completes here, before any backend call.
        if let Some(status) = Status::for_ana_state(visible.ana_state) {
            return Outcome::Done(Reply::status(status));
        }
        let ns = visible.backend;
        match self.io_op(cid, cmd, &ns, data, c2h_len) {
            Ok(op) => {
                self.io_requests.push(IoRequest {
                    tag: cid,
                    namespace: ns,
                    op,
                    throttle: visible
                        .throttle
                        .is_limited()
                        .then(|| visible.throttle.clone()),
                });
                Outcome::Pending
            }
            Err(status) => Outcome::Done(Reply::status(status)),
        }
    }

    fn io_op(
        &mut self,
        cid: u16,
        cmd: &Command,
        ns: &Arc<dyn NamespaceBackend>,
        data: Bytes,
        c2h_len: u32,
    ) -> Result<IoOp, Status> {
        let capacity = ns.capacity_blocks();
        match cmd.opcode() {
            io_opcode::READ => {
                let e = extent(cmd, ns.as_ref());
                if e.bytes > u64::from(self.ctx.limits.mdts_bytes) {
                    return Err(Status::InvalidField);
                }
                if e.bytes != u64::from(c2h_len) {
                    return Err(Status::SglLengthInvalid);
                }
                check_range(e.lba, u64::from(e.blocks), capacity)
                    .map_err(|err| Status::from(&err))?;
                self.mark(cid, Some(IoKind::Read(e.bytes)), None);
                Ok(IoOp::Read {
                    lba: e.lba,
                    blocks: e.blocks,
                })
            }
            io_opcode::WRITE => {
                let e = extent(cmd, ns.as_ref());
                if e.bytes != data.len() as u64 {
                    return Err(Status::SglLengthInvalid);
                }
                check_range(e.lba, u64::from(e.blocks), capacity)
                    .map_err(|err| Status::from(&err))?;
                let flush_after = self.write_through_required(ns).then(|| ns.clone());
                self.mark(cid, Some(IoKind::Write(e.bytes)), flush_after);
                Ok(IoOp::Write { lba: e.lba, data })
            }
            io_opcode::FLUSH => Ok(IoOp::Flush),
            io_opcode::WRITE_ZEROES => {
                let e = extent(cmd, ns.as_ref());
                check_range(e.lba, u64::from(e.blocks), capacity)
                    .map_err(|err| Status::from(&err))?;
                Ok(IoOp::WriteZeroes {
                    lba: e.lba,
                    blocks: e.blocks,
                })
            }
            io_opcode::DATASET_MANAGEMENT => {
                let ranges_n = ((cmd.cdw(10) & 0xFF) + 1) as usize;
                if data.len() < ranges_n * DSM_RANGE_LEN {
                    return Err(Status::SglLengthInvalid);
                }
                if cmd.cdw(11) & DSM_ATTR_DEALLOCATE == 0 {
                    // Only hints (integral read/write): nothing to do.
                    return Ok(IoOp::Deallocate(Vec::new()));
                }
                let mut ranges = Vec::with_capacity(ranges_n);
                for chunk in data.chunks_exact(DSM_RANGE_LEN).take(ranges_n) {
                    let f = crate::wire::Fields(chunk);
                    let blocks = f.u32(4).unwrap_or(0);
                    let start = Lba(f.u64(8).unwrap_or(0));
                    check_range(start, u64::from(blocks), capacity)
                        .map_err(|err| Status::from(&err))?;
                    ranges.push(LbaRange { start, blocks });
                }
                Ok(IoOp::Deallocate(ranges))
            }
            _ => Err(Status::InvalidOpcode),
        }
    }

    /// True when the host disabled the write cache of a namespace that has one:
    /// each write is then flushed before it completes.
    fn write_through_required(&self, ns: &Arc<dyn NamespaceBackend>) -> bool {
        ns.volatile_write_cache()
            && self
                .binding()
                .is_some_and(|q| !q.controller.state.lock().write_cache_enabled)
    }

    fn mark(
        &mut self,
        cid: u16,
        kind: Option<IoKind>,
        flush_after: Option<Arc<dyn NamespaceBackend>>,
    ) {
        if let Some(slot) = self.slots.get_mut(&cid) {
            slot.counts_as = kind;
            slot.flush_after_write = flush_after;
        }
    }
}
