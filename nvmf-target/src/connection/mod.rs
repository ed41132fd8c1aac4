//! The per-connection NVMe/TCP state machine, sans-IO.
//!
//! A [`Connection`] consumes received bytes ([`Connection::receive`]) and backend
//! completions ([`Connection::complete_io`]), and produces bytes to send
//! ([`Connection::take_output`]) and namespace I/O to start
//! ([`Connection::take_io_requests`]). It never touches a socket or a clock of its
//! own, so the reactor driver can be swapped (io_uring or epoll, `crate::reactors`) and
//! tests can drive it directly. One connection is one NVMe queue (admin or I/O).
//!
//! Architecture Invariant: a protocol violation by the peer produces exactly one
//! C2HTermReq and then [`Connection::is_closed`]; it never affects other
//! connections and never panics.

mod admin;
mod fabrics;
mod inbound;
pub use inbound::InboundTarget;
mod io;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use uring::AlignedBuf;

use crate::backend::{Lba, LbaRange, NamespaceBackend, NamespaceError};
use crate::controller::{Controller, NamespaceView, Notifier, VisibleNamespace};
use crate::error_log::parameter_error_location;
use crate::nvme::log_page::{ErrorInformationEntry, ERROR_TRTYPE_TCP};
use crate::nvme::{admin_opcode, io_opcode, Command, Completion, SglKind, STATUS_FIELD_MORE};
use crate::pdu::{
    self, CapsuleResp, DataPdu, DecodeLimits, Digests, FatalErrorStatus, IcResp, Pdu, PduType, R2t,
    TermReq,
};
use crate::status::Status;
use crate::subsystem::Subsystem;
use crate::throttle::{IoClass, Throttle};

/// Protocol limits a target advertises and enforces, per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// In-capsule data accepted for I/O commands (IOCCSZ = (64 + this) / 16).
    pub inline_data_max: u32,
    /// MAXH2CDATA advertised in ICResp; also the largest R2T issued.
    pub maxh2cdata: u32,
    /// Maximum queue entries (CAP.MQES + 1, MAXCMD); at least 128.
    pub queue_depth_max: u16,
    /// Maximum data transfer size in bytes (a power of two, at least 4096).
    pub mdts_bytes: u32,
    /// Maximum I/O queues per controller.
    pub io_queues_max: u16,
    /// Bytes of write data a connection may buffer for R2T-driven writes at once
    /// (at least one command is always admitted).
    pub write_buffer_max: usize,
    /// Largest C2HData PDU sent; longer reads are split.
    pub c2h_pdu_max: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            inline_data_max: 8192,
            maxh2cdata: 128 * 1024,
            queue_depth_max: 128,
            mdts_bytes: 1024 * 1024,
            io_queues_max: 64,
            write_buffer_max: 8 * 1024 * 1024,
            c2h_pdu_max: 128 * 1024,
        }
    }
}

/// Which service a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortKind {
    /// NVM subsystem I/O (and discovery) port.
    Io,
    /// Discovery-only port.
    Discovery,
}

/// Everything a connection needs to know about the target it belongs to.
#[derive(Clone)]
pub struct ConnectionContext {
    /// The subsystem served.
    pub subsystem: Arc<Subsystem>,
    /// Protocol limits.
    pub limits: Limits,
    /// Service of the listener that accepted the connection.
    pub port_kind: PortKind,
    /// Local address of the accepted socket: the address the host reached.
    pub local_addr: SocketAddr,
    /// The host's address: the accepted socket's peer (namespace address
    /// ACLs judge hosts by it).
    pub peer_addr: SocketAddr,
    /// Configured I/O listener addresses (reported in the discovery log).
    pub io_listeners: Arc<Vec<SocketAddr>>,
    /// Address to report in the discovery log instead of the reached one.
    pub advertised_addr: Option<SocketAddr>,
    /// Wakes the reactor owning this connection (used for asynchronous events).
    pub notifier: Notifier,
    /// How long after it is made the connection may still be in its
    /// handshake (no ICReq yet, or no successful Connect) before
    /// [`Connection::tick`] closes it.
    pub handshake_timeout: Duration,
    /// Keep-alive timeout given to a discovery controller whose host asked for
    /// none (KATO 0).
    pub discovery_keep_alive: Duration,
}

/// Namespace I/O the driver must start and later report with [`Connection::complete_io`].
pub struct IoRequest {
    /// Opaque tag to pass back on completion.
    pub tag: u16,
    /// The namespace to operate on.
    pub namespace: Arc<dyn NamespaceBackend>,
    /// The operation.
    pub op: IoOp,
    /// The namespace's rate limiter, which the driver asks before it starts
    /// the operation (`None`: start it at once, as for the flush that
    /// follows a write-through write, whose write was admitted already).
    pub throttle: Option<Arc<Throttle>>,
}

/// A namespace operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOp {
    /// Read blocks.
    Read {
        /// First block.
        lba: Lba,
        /// Number of blocks.
        blocks: u32,
    },
    /// Write blocks.
    Write {
        /// First block.
        lba: Lba,
        /// Data, a whole number of blocks.
        data: Bytes,
    },
    /// Flush the write cache.
    Flush,
    /// Zero blocks.
    WriteZeroes {
        /// First block.
        lba: Lba,
        /// Number of blocks.
        blocks: u32,
    },
    /// Deallocate ranges.
    Deallocate(Vec<LbaRange>),
}

impl IoRequest {
    /// What the operation draws on its namespace's rate limits.
    pub fn class(&self) -> IoClass {
        match &self.op {
            IoOp::Read { blocks, .. } => {
                IoClass::Read(u64::from(*blocks) * u64::from(self.namespace.block_size().bytes()))
            }
            IoOp::Write { data, .. } => IoClass::Write(data.len() as u64),
            IoOp::WriteZeroes { .. } | IoOp::Deallocate(_) => IoClass::Write(0),
            IoOp::Flush => IoClass::Free,
        }
    }

    /// Starts the operation on the backend; `done` receives the outcome.
    pub fn start(self, done: impl FnOnce(u16, Result<IoOutput, NamespaceError>) + Send + 'static) {
        let tag = self.tag;
        match self.op {
            IoOp::Read { lba, blocks } => self.namespace.read(
                lba,
                blocks,
                Box::new(move |r| done(tag, r.map(IoOutput::Data))),
            ),
            IoOp::Write { lba, data } => self.namespace.write(
                lba,
                data,
                Box::new(move |r| done(tag, r.map(|()| IoOutput::Done))),
            ),
            IoOp::Flush => self
                .namespace
                .flush(Box::new(move |r| done(tag, r.map(|()| IoOutput::Done)))),
            IoOp::WriteZeroes { lba, blocks } => self.namespace.write_zeroes(
                lba,
                blocks,
                Box::new(move |r| done(tag, r.map(|()| IoOutput::Done))),
            ),
            IoOp::Deallocate(ranges) => self.namespace.deallocate(
                ranges,
                Box::new(move |r| done(tag, r.map(|()| IoOutput::Done))),
            ),
        }
    }
}

/// Successful result of an [`IoOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IoOutput {
    /// Data read.
    Data(Bytes),
    /// The operation completed without data.
    Done,
}

/// The answer to a command, before transport encoding.
struct Reply {
    status: Status,
    result: u64,
    data: Option<Bytes>,
    /// The LBA an error concerns, when the backend named one (Error Information log).
    error_lba: Option<Lba>,
}

impl Reply {
    fn status(status: Status) -> Reply {
        Reply {
            status,
            result: 0,
            data: None,
            error_lba: None,
        }
    }
    fn failed(err: &NamespaceError) -> Reply {
        let error_lba = match err {
            NamespaceError::OutOfRange { lba, .. } | NamespaceError::Media { lba } => Some(*lba),
            NamespaceError::NoSpace
            | NamespaceError::Fenced
            | NamespaceError::Device
            | NamespaceError::Invalid
            | NamespaceError::PathUnavailable => None,
        };
        Reply {
            error_lba,
            ..Reply::status(Status::from(err))
        }
    }
    fn ok() -> Reply {
        Reply::status(Status::Success)
    }
    fn dw0(status: Status, dw0: u32) -> Reply {
        Reply {
            result: u64::from(dw0),
            ..Reply::status(status)
        }
    }
    fn data(data: Vec<u8>) -> Reply {
        Reply {
            data: Some(Bytes::from(data)),
            ..Reply::ok()
        }
    }
}

enum Outcome {
    Done(Reply),
    Pending,
}

/// Write data being collected through R2T/H2CData.
struct H2cTransfer {
    /// Where the data is received: block-aligned, so the backend can write
    /// it to its device from here (allocated when the first R2T goes out).
    buf: Option<AlignedBuf>,
    /// Bytes of `buf` received so far, in order.
    received: u32,
    len: u32,
    /// End of the outstanding R2T window, if one is outstanding.
    r2t_end: Option<u32>,
    digest_error: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Waiting for write data or for the command to run.
    Active,
    /// An AER held until an event occurs.
    AerHeld,
    /// Write completed; a flush runs before completion (write cache disabled).
    FlushAfterWrite,
}

struct Slot {
    cmd: Command,
    c2h_len: u32,
    stage: Stage,
    h2c: Option<H2cTransfer>,
    buffer_accounted: usize,
    flush_after_write: Option<Arc<dyn NamespaceBackend>>,
    counts_as: Option<IoKind>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoKind {
    Read(u64),
    Write(u64),
}

struct QueueBinding {
    controller: Arc<Controller>,
    qid: u16,
    sqsize: u16,
    sq_flow_disabled: bool,
    view: Arc<NamespaceView>,
    view_generation: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitIcReq,
    Ready,
}

/// Output queued beyond this many bytes stops input processing until drained.
const OUTPUT_HIGH_WATER_BYTES: usize = 4 * 1024 * 1024;
/// Outstanding Asynchronous Event Requests accepted (AERL + 1).
pub(crate) const AER_MAX: usize = 4;
/// PSDT 01b: SGLs, with MPTR the address of a contiguous metadata buffer.
const PSDT_SGL: u8 = 0b01;
/// Commands accepted before Connect sets the queue size.
const PRE_CONNECT_DEPTH: usize = 32;

/// One NVMe/TCP queue: transport framing plus the controller logic for its commands.
pub struct Connection {
    ctx: ConnectionContext,
    phase: Phase,
    digests: Digests,
    c2h_align: usize,
    rx: Vec<u8>,
    scratch: Vec<u8>,
    out: VecDeque<Bytes>,
    out_bytes: usize,
    slots: HashMap<u16, Slot>,
    r2t_queue: VecDeque<u16>,
    write_buffer_bytes: usize,
    io_requests: Vec<IoRequest>,
    queue: Option<QueueBinding>,
    sq_head: u16,
    now_ms: u64,
    /// When the connection was made (the handshake timeout runs from here).
    started_ms: u64,
    /// Closed by the handshake timeout.
    handshake_timed_out: bool,
    closed: bool,
    pending_disconnect: bool,
    fatal_error: Option<FatalErrorStatus>,
    /// The H2CData PDU whose data is being received into its command's buffer.
    inbound: Option<inbound::Inbound>,
}

impl Connection {
    /// A new connection awaiting ICReq.
    pub fn new(ctx: ConnectionContext) -> Connection {
        let now_ms = ctx.subsystem.now_ms();
        Connection {
            ctx,
            phase: Phase::AwaitIcReq,
            digests: Digests::default(),
            c2h_align: 0,
            rx: Vec::new(),
            scratch: Vec::new(),
            out: VecDeque::new(),
            out_bytes: 0,
            slots: HashMap::new(),
            r2t_queue: VecDeque::new(),
            write_buffer_bytes: 0,
            io_requests: Vec::new(),
            queue: None,
            sq_head: 0,
            now_ms,
            started_ms: now_ms,
            handshake_timed_out: false,
            closed: false,
            pending_disconnect: false,
            fatal_error: None,
            inbound: None,
        }
    }

    /// Consumes bytes received from the host. Whole PDUs are handled straight
    /// from `bytes`; only a PDU split across receives, or input that arrives
    /// while the output is backed up, is copied into the connection.
    pub fn receive(&mut self, bytes: &[u8], now: Instant) {
        self.now_ms = self.ctx.subsystem.now_ms_at(now);
        if self.closed {
            return;
        }
        let mut input = bytes;
        if self.inbound.is_some() {
            // The receive buffer is empty while a PDU's data streams in.
            let taken = self.feed_inbound(input);
            input = &input[taken..];
            if self.inbound.is_some() || self.closed {
                return;
            }
        }
        if !self.rx.is_empty() {
            if self.input_paused() {
                self.rx.extend_from_slice(input);
                return;
            }
            // Unpaused, the buffer holds the start of one PDU (and if it held
            // more, only its first would take bytes here).
            let taken = self.complete_split_pdu(input);
            input = &input[taken..];
            self.process_input();
            if !self.rx.is_empty() {
                self.rx.extend_from_slice(input);
                return;
            }
        }
        let consumed = self.process_bytes(input);
        if !self.closed {
            self.rx.extend_from_slice(&input[consumed..]);
        }
    }

    /// True while the output is above its high-water mark: input then waits
    /// until the host reads its responses.
    fn input_paused(&self) -> bool {
        self.out_bytes >= OUTPUT_HIGH_WATER_BYTES
    }

    /// Moves the bytes that complete the PDU begun in `rx` from the front of
    /// `input` (its common header first, then up to its checked length) and
    /// returns how many it took. A malformed header takes no more: decoding
    /// `rx` then terminates the connection.
    fn complete_split_pdu(&mut self, input: &[u8]) -> usize {
        let header_missing = pdu::COMMON_HEADER_LEN.saturating_sub(self.rx.len());
        let mut taken = header_missing.min(input.len());
        self.rx.extend_from_slice(&input[..taken]);
        if let Ok(Some(plen)) = pdu::pdu_len(&self.rx, self.digests, &self.decode_limits()) {
            let body = plen.saturating_sub(self.rx.len()).min(input.len() - taken);
            self.rx.extend_from_slice(&input[taken..taken + body]);
            taken += body;
        }
        taken
    }

    /// True when the driver should read more input (output is not backed up).
    pub fn wants_input(&self) -> bool {
        !self.closed && !self.input_paused()
    }

    /// Bytes to send, in order. The driver pops what it wrote; partially written
    /// chunks are replaced by their unwritten remainder.
    pub fn take_output(&mut self) -> &mut VecDeque<Bytes> {
        self.flush_scratch();
        &mut self.out
    }

    /// Records that `n` bytes were written from the front of the output queue.
    pub fn consumed_output(&mut self, mut n: usize) {
        self.out_bytes = self.out_bytes.saturating_sub(n);
        while n > 0 {
            let Some(front) = self.out.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                self.out.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
        // Input may have been paused by the high-water mark.
        if !self.closed && !self.rx.is_empty() && !self.input_paused() {
            self.process_input();
        }
    }

    /// True when there is output waiting.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty() || !self.scratch.is_empty()
    }

    /// Namespace I/O to start.
    pub fn take_io_requests(&mut self) -> Vec<IoRequest> {
        std::mem::take(&mut self.io_requests)
    }

    /// True when namespace I/O is waiting to be started.
    pub fn has_io_requests(&self) -> bool {
        !self.io_requests.is_empty()
    }

    /// True once the connection must be closed (after flushing output).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// The fatal error reported to the host, if the connection was terminated.
    pub fn fatal_error(&self) -> Option<FatalErrorStatus> {
        self.fatal_error
    }

    /// True once the handshake is done: ICReq was answered and a Fabrics
    /// Connect bound this connection to a queue. A host gets here within a few
    /// round trips; until then the connection holds a place in the target's
    /// table on trust (see [`ConnectionContext::handshake_timeout`]).
    pub fn handshake_done(&self) -> bool {
        self.phase == Phase::Ready && self.queue.is_some()
    }

    /// True if [`Connection::tick`] closed the connection because its
    /// handshake took longer than the timeout.
    pub fn handshake_timed_out(&self) -> bool {
        self.handshake_timed_out
    }

    /// Periodic and wake-up processing: the handshake timeout, keep-alive
    /// expiry, controller teardown, and delivery of asynchronous events to
    /// held AERs.
    pub fn tick(&mut self, now: Instant) {
        self.now_ms = self.ctx.subsystem.now_ms_at(now);
        if self.closed {
            return;
        }
        let Some(q) = &self.queue else {
            let timeout_ms =
                u64::try_from(self.ctx.handshake_timeout.as_millis()).unwrap_or(u64::MAX);
            if self.now_ms.saturating_sub(self.started_ms) >= timeout_ms {
                tracing::debug!(
                    icreq_done = self.phase == Phase::Ready,
                    "handshake timeout expired; closing the connection"
                );
                self.handshake_timed_out = true;
                self.close();
            }
            return;
        };
        let controller = q.controller.clone();
        if controller.is_dead() {
            self.close();
            return;
        }
        if q.qid == 0 {
            if controller.keep_alive_expired(self.now_ms) {
                tracing::warn!(
                    cntlid = controller.cntlid,
                    "keep-alive timeout expired; tearing controller down"
                );
                self.ctx.subsystem.remove_controller(controller.cntlid);
                self.close();
                return;
            }
            self.deliver_events();
        }
    }

    /// The peer closed the socket or the socket failed: release the queue.
    pub fn peer_closed(&mut self) {
        self.close();
    }

    /// Reports a backend completion for `tag`.
    pub fn complete_io(
        &mut self,
        tag: u16,
        result: Result<IoOutput, NamespaceError>,
        now: Instant,
    ) {
        self.now_ms = self.ctx.subsystem.now_ms_at(now);
        if self.closed {
            return;
        }
        let Some(slot) = self.slots.get_mut(&tag) else {
            tracing::error!(tag, "completion for a command that is not in flight");
            return;
        };
        if let (Ok(IoOutput::Done), Some(ns), Stage::Active) =
            (&result, slot.flush_after_write.take(), slot.stage)
        {
            slot.stage = Stage::FlushAfterWrite;
            self.io_requests.push(IoRequest {
                tag,
                namespace: ns,
                op: IoOp::Flush,
                throttle: None,
            });
            return;
        }
        if result.is_ok() {
            let counters = &self.ctx.subsystem.counters;
            match slot.counts_as {
                Some(IoKind::Read(b)) => {
                    counters
                        .reads
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    counters
                        .bytes_read
                        .fetch_add(b, std::sync::atomic::Ordering::Relaxed);
                }
                Some(IoKind::Write(b)) => {
                    counters
                        .writes
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    counters
                        .bytes_written
                        .fetch_add(b, std::sync::atomic::Ordering::Relaxed);
                }
                None => {}
            }
        }
        let reply = match result {
            Ok(IoOutput::Data(data)) => Reply {
                data: Some(data),
                ..Reply::ok()
            },
            Ok(IoOutput::Done) => Reply::ok(),
            Err(e) => Reply::failed(&e),
        };
        self.finish(tag, reply);
    }

    fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.r2t_queue.clear();
        if let Some(q) = self.queue.take() {
            if q.qid == 0 {
                self.ctx.subsystem.remove_controller(q.controller.cntlid);
            } else {
                q.controller.state.lock().io_queues.retain(|x| *x != q.qid);
            }
        }
    }

    fn flush_scratch(&mut self) {
        if !self.scratch.is_empty() {
            let chunk = std::mem::take(&mut self.scratch);
            self.out.push_back(Bytes::from(chunk));
        }
    }

    fn push_bytes(&mut self, bytes: Bytes) {
        self.flush_scratch();
        self.out_bytes += bytes.len();
        self.out.push_back(bytes);
    }

    fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            capsule_data_max: self.ctx.limits.inline_data_max.max(8192),
            data_pdu_max: self.ctx.limits.maxh2cdata,
        }
    }

    /// Handles the whole PDUs buffered in `rx`, keeping the rest.
    fn process_input(&mut self) {
        let rx = std::mem::take(&mut self.rx);
        let consumed = self.process_bytes(&rx);
        if !self.closed {
            let mut rx = rx;
            rx.drain(..consumed);
            // Keep any bytes that arrived while processing was paused or split.
            rx.extend_from_slice(&self.rx);
            self.rx = rx;
        }
    }

    /// Handles the whole PDUs at the front of `input` until it runs out, the
    /// output backs up or the connection closes; returns the bytes consumed.
    fn process_bytes(&mut self, input: &[u8]) -> usize {
        let limits = self.decode_limits();
        let mut consumed = 0usize;
        while !self.closed && !self.input_paused() {
            let rest = &input[consumed..];
            match pdu::decode(rest, self.digests, &limits) {
                Ok(None) => {
                    if self.phase == Phase::Ready {
                        consumed += self.begin_inbound(rest, &limits).unwrap_or(0);
                    }
                    break;
                }
                Ok(Some(decoded)) => {
                    let header_len = decoded.len.min(128);
                    let header = &rest[..header_len];
                    self.handle_pdu(decoded.pdu, decoded.data_digest_ok, header);
                    consumed += decoded.len;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "malformed PDU; terminating connection");
                    let header = &rest[..rest.len().min(pdu::TERM_MAX_PLEN - pdu::TERM_HLEN)];
                    self.terminate(e.fes(), e.fei(), header);
                    break;
                }
            }
        }
        consumed
    }

    /// Sends C2HTermReq and closes the connection.
    fn terminate(&mut self, fes: FatalErrorStatus, fei: u32, offending: &[u8]) {
        let mut out = Vec::new();
        TermReq {
            fes: fes as u16,
            fei,
            data: offending,
        }
        .encode(PduType::C2HTermReq, &mut out);
        self.push_bytes(Bytes::from(out));
        self.fatal_error = Some(fes);
        self.close();
    }

    fn handle_pdu(&mut self, pdu: Pdu<'_>, data_digest_ok: bool, header: &[u8]) {
        match (self.phase, pdu) {
            (Phase::AwaitIcReq, Pdu::IcReq(req)) => {
                self.digests = req.digests;
                let align = (usize::from(req.hpda) + 1) * 4;
                self.c2h_align = if align > 4 { align } else { 0 };
                let mut out = Vec::with_capacity(pdu::IC_PDU_LEN);
                IcResp {
                    pfv: 0,
                    cpda: 0,
                    digests: req.digests,
                    maxh2cdata: self.ctx.limits.maxh2cdata,
                }
                .encode(&mut out);
                self.push_bytes(Bytes::from(out));
                self.phase = Phase::Ready;
            }
            (Phase::Ready, Pdu::CapsuleCmd(cap)) => {
                self.on_capsule(Command(cap.sqe), cap.data, data_digest_ok, header)
            }
            (Phase::Ready, Pdu::H2CData(data)) => self.on_h2c_data(data, data_digest_ok, header),
            (_, Pdu::H2CTermReq(t)) => {
                tracing::info!(fes = t.fes, fei = t.fei, "host terminated the connection");
                self.close();
            }
            (_, _) => self.terminate(FatalErrorStatus::PduSequenceError, 0, header),
        }
    }

    fn depth_limit(&self) -> usize {
        match &self.queue {
            // Linux keeps up to SQSIZE + 1 commands in flight (plus the AER on the
            // admin queue, which it counts in the same budget).
            Some(q) => usize::from(q.sqsize) + 1 + if q.qid == 0 { AER_MAX } else { 0 },
            None => PRE_CONNECT_DEPTH,
        }
    }

    fn on_capsule(&mut self, cmd: Command, in_capsule: &[u8], digest_ok: bool, header: &[u8]) {
        if self.queue.as_ref().is_some_and(|q| q.controller.is_dead()) {
            // The controller was torn down (keep-alive expiry, shutdown of the
            // admin queue): its queues accept nothing more.
            self.close();
            return;
        }
        let cid = cmd.cid();
        if let Some(slot) = self.slots.get(&cid) {
            if slot.stage != Stage::AerHeld {
                // A command id still in flight: the host lost track of its queue.
                self.terminate(FatalErrorStatus::InvalidHeaderField, 10, header);
                return;
            }
            // A host may give up its Asynchronous Event Requests on its own
            // side (SPDK's initiator does at teardown) and reuse their command
            // ids at once: that AER will never be completed, and the new
            // command runs.
            tracing::debug!(cid, "command id of a held AER reused; retiring the AER");
            self.slots.remove(&cid);
        }
        if self.slots.len() >= self.depth_limit() {
            self.terminate(FatalErrorStatus::PduSequenceError, 0, header);
            return;
        }
        if let Some(q) = &self.queue {
            self.sq_head = (self.sq_head + 1) % (q.sqsize.saturating_add(1)).max(1);
            q.controller.touch(self.now_ms);
        }
        let sgl = cmd.sgl();
        let c2h_len = if transfers_to_host(&cmd) && sgl.kind == SglKind::Transport {
            sgl.length
        } else {
            0
        };
        self.slots.insert(
            cid,
            Slot {
                cmd,
                c2h_len,
                stage: Stage::Active,
                h2c: None,
                buffer_accounted: 0,
                flush_after_write: None,
                counts_as: None,
            },
        );
        if !digest_ok {
            self.finish(cid, Reply::status(Status::TransientTransportError));
            return;
        }
        if let Some(status) = self.check_sgl(&cmd, in_capsule.len()) {
            self.finish(cid, Reply::status(status));
            return;
        }
        if transfers_to_controller(&cmd) && sgl.kind == SglKind::Transport && sgl.length > 0 {
            if let Err(status) = self.precheck_h2c(&cmd, sgl.length) {
                self.finish(cid, Reply::status(status));
                return;
            }
            if let Some(slot) = self.slots.get_mut(&cid) {
                slot.h2c = Some(H2cTransfer {
                    buf: None,
                    received: 0,
                    len: sgl.length,
                    r2t_end: None,
                    digest_error: false,
                });
            }
            self.r2t_queue.push_back(cid);
            self.pump_r2t();
            return;
        }
        let data = Bytes::copy_from_slice(in_capsule);
        self.execute(cid, cmd, data, c2h_len);
    }

    /// Validates the data pointer; `None` when acceptable.
    fn check_sgl(&self, cmd: &Command, in_capsule_len: usize) -> Option<Status> {
        // NVMe over Fabrics commands use SGLs with PSDT 01b (NVMe Base 2.0,
        // figure 88; the TCP transport has no metadata SGL segments). PRPs
        // (00b) and the segment form (10b) are refused, and 11b is reserved,
        // as Linux nvmet refuses anything but 01b with Invalid Field.
        if cmd.psdt() != PSDT_SGL {
            return Some(Status::InvalidField);
        }
        let sgl = cmd.sgl();
        match sgl.kind {
            SglKind::InCapsule => {
                if sgl.address != 0 {
                    return Some(Status::SglOffsetInvalid);
                }
                if sgl.length as usize != in_capsule_len || !transfers_to_controller(cmd) {
                    return Some(Status::SglLengthInvalid);
                }
                let is_fabrics = cmd.opcode() == admin_opcode::FABRICS;
                let is_io = self.queue.as_ref().is_some_and(|q| q.qid != 0);
                if is_io && !is_fabrics && sgl.length > self.ctx.limits.inline_data_max {
                    return Some(Status::SglLengthInvalid);
                }
                None
            }
            SglKind::Transport => {
                if in_capsule_len != 0 {
                    return Some(Status::SglLengthInvalid);
                }
                if sgl.length > self.ctx.limits.mdts_bytes {
                    return Some(Status::SglLengthInvalid);
                }
                None
            }
            SglKind::Other(_) => {
                if sgl.length == 0 && in_capsule_len == 0 {
                    None
                } else {
                    Some(Status::SglDescriptorTypeInvalid)
                }
            }
        }
    }

    /// Issues R2Ts for queued writes while the write buffer budget allows.
    fn pump_r2t(&mut self) {
        let maxh2cdata = self.ctx.limits.maxh2cdata;
        let budget = self.ctx.limits.write_buffer_max;
        while let Some(&cid) = self.r2t_queue.front() {
            let Some(slot) = self.slots.get_mut(&cid) else {
                self.r2t_queue.pop_front();
                continue;
            };
            let Some(h2c) = slot.h2c.as_mut().filter(|h2c| h2c.r2t_end.is_none()) else {
                // Gone, or a window is outstanding already.
                self.r2t_queue.pop_front();
                continue;
            };
            if h2c.buf.is_none() {
                let need = h2c.len as usize;
                if self.write_buffer_bytes > 0 && self.write_buffer_bytes + need > budget {
                    break;
                }
                // Every byte is received before the command runs, so what an
                // earlier user left in a recycled buffer is never read.
                h2c.buf = Some(AlignedBuf::for_overwrite(need));
                slot.buffer_accounted = need;
                self.write_buffer_bytes += need;
            }
            let offset = h2c.received;
            let length = (h2c.len - offset).min(maxh2cdata);
            h2c.r2t_end = Some(offset + length);
            self.r2t_queue.pop_front();
            let before = self.scratch.len();
            R2t {
                command_id: cid,
                ttag: cid,
                offset,
                length,
            }
            .encode(self.digests, &mut self.scratch);
            self.out_bytes += self.scratch.len() - before;
        }
    }

    fn on_h2c_data(&mut self, pdu: DataPdu<'_>, digest_ok: bool, header: &[u8]) {
        if !self.accept_h2c(&pdu, pdu.data.len(), header) {
            return;
        }
        if !self.store_h2c_data(pdu.ttag, pdu.data) || !digest_ok {
            self.fail_h2c_data(pdu.ttag);
        }
        self.h2c_data_arrived(pdu.ttag);
    }

    /// Checks an H2CData PDU's header (with `data_len` bytes of data) against
    /// its command's outstanding R2T; false, after terminating the
    /// connection, when it does not fit.
    fn accept_h2c(&mut self, pdu: &DataPdu<'_>, data_len: usize, header: &[u8]) -> bool {
        let refusal = match self.slots.get(&pdu.ttag) {
            None => Some((FatalErrorStatus::PduSequenceError, 10)),
            Some(slot) if slot.cmd.cid() != pdu.command_id => {
                Some((FatalErrorStatus::InvalidHeaderField, 8))
            }
            Some(slot) => match &slot.h2c {
                Some(h2c) => match h2c.r2t_end {
                    // No R2T outstanding, or its buffer lent out already.
                    None => Some((FatalErrorStatus::PduSequenceError, 10)),
                    Some(_) if h2c.buf.is_none() => Some((FatalErrorStatus::PduSequenceError, 10)),
                    Some(_) if pdu.offset != h2c.received => {
                        Some((FatalErrorStatus::DataOutOfRange, 12))
                    }
                    Some(end) if u64::from(pdu.offset) + data_len as u64 > u64::from(end) => {
                        Some((FatalErrorStatus::DataOutOfRange, 16))
                    }
                    Some(_) => None,
                },
                None => Some((FatalErrorStatus::PduSequenceError, 10)),
            },
        };
        match refusal {
            Some((fes, fei)) => {
                self.terminate(fes, fei, header);
                false
            }
            None => true,
        }
    }

    /// Moves `ttag`'s transfer on once a PDU's data is all in: the next R2T
    /// when its window is filled and more is due, or the command runs once
    /// all of its data is there.
    fn h2c_data_arrived(&mut self, ttag: u16) {
        let Some(slot) = self.slots.get_mut(&ttag) else {
            return;
        };
        let Some(h2c) = slot.h2c.as_mut() else {
            return;
        };
        match h2c.r2t_end {
            Some(end) if h2c.received >= end => h2c.r2t_end = None,
            _ => return,
        }
        if h2c.received < h2c.len {
            // Continue this command before starting others (one R2T per command).
            self.r2t_queue.push_front(ttag);
            self.pump_r2t();
            return;
        }
        let buf = h2c.buf.take().filter(|_| !h2c.digest_error);
        slot.h2c = None;
        let cmd = slot.cmd;
        match buf {
            Some(buf) => self.execute(ttag, cmd, Bytes::from_owner(buf), 0),
            None => self.finish(ttag, Reply::status(Status::TransientTransportError)),
        }
        self.pump_r2t();
    }

    fn execute(&mut self, cid: u16, cmd: Command, data: Bytes, c2h_len: u32) {
        let outcome = if cmd.opcode() == admin_opcode::FABRICS {
            Outcome::Done(self.fabrics(&cmd, &data))
        } else {
            match &self.queue {
                None => Outcome::Done(Reply::status(Status::CommandSequenceError)),
                Some(q) if q.qid == 0 => self.admin(cid, &cmd, c2h_len),
                Some(_) => self.io(cid, &cmd, data, c2h_len),
            }
        };
        match outcome {
            Outcome::Done(reply) => self.finish(cid, reply),
            Outcome::Pending => {}
        }
        if self.pending_disconnect {
            self.close();
        }
    }

    /// Sends the reply for `cid` and frees its slot.
    fn finish(&mut self, cid: u16, reply: Reply) {
        let Some(slot) = self.slots.remove(&cid) else {
            return;
        };
        self.write_buffer_bytes = self
            .write_buffer_bytes
            .saturating_sub(slot.buffer_accounted);
        let sq_flow_disabled = self.queue.as_ref().is_some_and(|q| q.sq_flow_disabled);
        let mut sent_success = false;
        if let (Status::Success, Some(data)) = (reply.status, &reply.data) {
            let data = data.slice(..data.len().min(slot.c2h_len as usize));
            if !data.is_empty() {
                sent_success = self.send_c2h_data(cid, data, sq_flow_disabled);
            }
        }
        if !sent_success {
            let mut cqe = Completion::new(cid, reply.status, 0);
            if !reply.status.is_success() && self.record_error(&slot.cmd, &reply) {
                cqe.status_field |= STATUS_FIELD_MORE;
            }
            cqe.result = reply.result;
            cqe.sq_head = self.sq_head;
            cqe.sq_id = self.queue.as_ref().map_or(0, |q| q.qid);
            let before = self.scratch.len();
            CapsuleResp { cqe: cqe.encode() }.encode(self.digests, &mut self.scratch);
            self.out_bytes += self.scratch.len() - before;
        }
        if self.r2t_queue.front().is_some() {
            self.pump_r2t();
        }
    }

    /// Sends read data; returns true if the SUCCESS flag replaced the CapsuleResp.
    fn send_c2h_data(&mut self, cid: u16, data: Bytes, use_success: bool) -> bool {
        let chunk_max = self.ctx.limits.c2h_pdu_max.max(4096) as usize;
        let total = data.len();
        let mut offset = 0usize;
        while offset < total {
            let n = (total - offset).min(chunk_max);
            let chunk = data.slice(offset..offset + n);
            let last = offset + n == total;
            let pdu = DataPdu {
                command_id: cid,
                ttag: 0,
                offset: offset as u32,
                last,
                success: last && use_success,
                data: &chunk,
            };
            let before = self.scratch.len();
            let trailer = pdu.encode_header(
                PduType::C2HData,
                self.digests,
                self.c2h_align,
                &mut self.scratch,
            );
            self.out_bytes += self.scratch.len() - before;
            self.push_bytes(chunk);
            if let Some(t) = trailer {
                self.scratch.extend_from_slice(&t);
                self.out_bytes += t.len();
            }
            offset += n;
        }
        use_success
    }

    /// Completes held AERs with pending events.
    fn deliver_events(&mut self) {
        let Some(q) = &self.queue else { return };
        let controller = q.controller.clone();
        loop {
            let Some(cid) = self
                .slots
                .iter()
                .find(|(_, s)| s.stage == Stage::AerHeld)
                .map(|(c, _)| *c)
            else {
                return;
            };
            let Some(event) = controller.state.lock().pending_events.pop_front() else {
                return;
            };
            self.finish(cid, Reply::dw0(Status::Success, event));
        }
    }

    /// Records a failed command in its controller's Error Information log;
    /// false when the queue has no controller (a failed Connect).
    fn record_error(&self, cmd: &Command, reply: &Reply) -> bool {
        let Some(q) = &self.queue else {
            return false;
        };
        let fabrics = cmd.opcode() == admin_opcode::FABRICS;
        let lba = reply.error_lba.map(|l| l.0).or_else(|| {
            let addresses_blocks = q.qid != 0
                && matches!(
                    cmd.opcode(),
                    io_opcode::READ | io_opcode::WRITE | io_opcode::WRITE_ZEROES
                );
            addresses_blocks.then(|| u64::from(cmd.cdw(10)) | (u64::from(cmd.cdw(11)) << 32))
        });
        q.controller.record_error(ErrorInformationEntry {
            error_count: 0,
            sqid: q.qid,
            cid: cmd.cid(),
            status_field: reply.status.field(),
            parameter_error_location: parameter_error_location(reply.status),
            lba: lba.unwrap_or(0),
            nsid: if fabrics { 0 } else { cmd.nsid() },
            trtype: ERROR_TRTYPE_TCP,
        });
        true
    }

    fn binding(&self) -> Option<&QueueBinding> {
        self.queue.as_ref()
    }

    /// The namespace `nsid` as the host currently sees it, with its ANA state.
    fn namespace(&mut self, nsid: u32) -> Option<VisibleNamespace> {
        let q = self.queue.as_mut()?;
        let generation = q.controller.view_generation();
        if generation != q.view_generation {
            q.view = q.controller.view();
            q.view_generation = generation;
        }
        q.view.get(&nsid).cloned()
    }
}

/// Whether the command moves data from host to controller (opcode or FCTYPE bits 1:0 = 01b/11b).
fn transfers_to_controller(cmd: &Command) -> bool {
    direction_bits(cmd) & 0x1 != 0
}

/// Whether the command moves data from controller to host (bits 1:0 = 10b/11b).
fn transfers_to_host(cmd: &Command) -> bool {
    direction_bits(cmd) & 0x2 != 0
}

fn direction_bits(cmd: &Command) -> u8 {
    if cmd.opcode() == admin_opcode::FABRICS {
        cmd.fctype() & 0x3
    } else {
        cmd.opcode() & 0x3
    }
}

#[cfg(test)]
mod tests;
