//! One host-side NVMe/TCP queue over a blocking socket, with several commands in
//! flight: submit commands, then reap completions in any order. R2T and C2HData
//! are handled while waiting.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::HostError;
use crate::nvme::{Command, Completion, SGL_TYPE_IN_CAPSULE, SGL_TYPE_TRANSPORT};
use crate::pdu::{self, CapsuleCmd, DataPdu, DecodeLimits, Digests, IcReq, Pdu, PduType};
use crate::status::Status;

/// A completed command: its completion entry and any data it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The completion queue entry (synthesised when C2HData carried SUCCESS).
    pub completion: Completion,
    /// Data received from the controller.
    pub data: Vec<u8>,
}

impl Response {
    /// The decoded status.
    pub fn status(&self) -> Result<Status, crate::status::UnknownStatus> {
        self.completion.status()
    }

    /// Ok if the command succeeded, [`HostError::PathUnavailable`] for an
    /// ANA status, else [`HostError::Status`].
    pub fn success(self) -> Result<Response, HostError> {
        match self.status() {
            Ok(Status::Success) => Ok(self),
            Ok(status) if status.is_ana_path_error() => Err(HostError::PathUnavailable { status }),
            _ => Err(HostError::Status {
                status_field: self.completion.status_field,
                dw0: self.completion.dw0(),
            }),
        }
    }
}

/// Bytes the receive buffer offers each read (it grows for larger PDUs).
const RX_CHUNK_BYTES: usize = 64 * 1024;
/// Queued outgoing bytes that force a write even in the middle of a burst.
const TX_DEFER_MAX_BYTES: usize = 256 * 1024;

struct Inflight {
    write_data: Option<Bytes>,
    read_buf: Vec<u8>,
    read_len: usize,
}

/// A connected NVMe/TCP queue (after ICReq/ICResp; before or after Connect).
pub struct Queue {
    stream: TcpStream,
    digests: Digests,
    maxh2cdata: u32,
    inline_data_max: usize,
    next_cid: u16,
    inflight: HashMap<u16, Inflight>,
    done: HashMap<u16, Response>,
    /// Receive buffer: bytes `rx_start..rx_end` are received and not yet decoded.
    rx: Vec<u8>,
    rx_start: usize,
    rx_end: usize,
    /// Reused encode buffer for outgoing PDUs.
    tx: Vec<u8>,
    limits: DecodeLimits,
    /// How long a receive polls the socket before blocking (zero: never).
    busy_poll: Duration,
    /// The socket is in nonblocking mode (left so between polling receives).
    nonblocking: bool,
    /// Queue id, set by Connect.
    pub qid: u16,
}

impl Queue {
    /// Opens a TCP connection (from `source`, if given: the address a
    /// target's address ACLs judge) and exchanges ICReq/ICResp, checking the
    /// answer the way the Linux host does. `hpda` asks the controller to
    /// start C2H data at a multiple of `(hpda + 1) * 4` bytes into each PDU
    /// (0: no alignment).
    pub fn open(
        addr: SocketAddr,
        source: Option<IpAddr>,
        digests: Digests,
        hpda: u8,
        timeout: Duration,
    ) -> Result<Queue, HostError> {
        let stream = match source {
            None => TcpStream::connect_timeout(&addr, timeout)?,
            Some(source) => {
                let socket = socket2::Socket::new(
                    socket2::Domain::for_address(addr),
                    socket2::Type::STREAM,
                    Some(socket2::Protocol::TCP),
                )?;
                socket.bind(&SocketAddr::new(source, 0).into())?;
                socket.connect_timeout(&addr.into(), timeout)?;
                socket.into()
            }
        };
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut q = Queue {
            stream,
            digests: Digests::default(),
            maxh2cdata: 0,
            inline_data_max: 8192,
            next_cid: 0,
            inflight: HashMap::new(),
            done: HashMap::new(),
            rx: vec![0; RX_CHUNK_BYTES],
            rx_start: 0,
            rx_end: 0,
            tx: Vec::new(),
            limits: DecodeLimits {
                capsule_data_max: 8192,
                data_pdu_max: 16 * 1024 * 1024,
            },
            busy_poll: Duration::ZERO,
            nonblocking: false,
            qid: 0,
        };
        let mut out = Vec::new();
        IcReq {
            pfv: 0,
            hpda,
            digests,
            maxr2t: 0,
        }
        .encode(&mut out);
        q.stream.write_all(&out)?;
        let resp = match q.next_pdu()? {
            OwnedPdu::IcResp(r) => r,
            OwnedPdu::Term { fes, fei } => return Err(HostError::Terminated { fes, fei }),
            _ => return Err(HostError::Protocol("expected ICResp")),
        };
        if resp.digests != digests {
            return Err(HostError::Protocol(
                "ICResp digests differ from the request",
            ));
        }
        if resp.cpda != 0 {
            return Err(HostError::Protocol("ICResp CPDA is not 0"));
        }
        q.digests = digests;
        q.maxh2cdata = resp.maxh2cdata;
        Ok(q)
    }

    /// MAXH2CDATA the controller advertised.
    pub fn maxh2cdata(&self) -> u32 {
        self.maxh2cdata
    }

    /// Sets the largest write sent in-capsule (IOCCSZ × 16 − 64 for I/O queues).
    pub fn set_inline_data_max(&mut self, bytes: usize) {
        self.inline_data_max = bytes;
    }

    /// Commands submitted and not yet reaped.
    pub fn in_flight(&self) -> usize {
        self.inflight.len() + self.done.len()
    }

    /// Submits `cmd` (its CID is assigned here) with optional host-to-controller
    /// `data` (sent in-capsule when small enough, else on R2T) or room for
    /// `c2h_len` bytes of controller-to-host data. Returns the CID.
    ///
    /// The command is written at once, except while the caller is reaping a
    /// burst (completions already received and not yet returned): it then
    /// waits in a send buffer that goes out, in one write, before this queue
    /// next blocks on the network ([`Queue::wait`], [`Queue::wait_any`]) or
    /// when [`Queue::send_queued`] is called.
    pub fn submit(
        &mut self,
        mut cmd: Command,
        data: Option<Bytes>,
        c2h_len: u32,
    ) -> Result<u16, HostError> {
        let cid = self.allocate_cid()?;
        cmd.set_cid(cid);
        let in_capsule = match &data {
            Some(d) if d.len() <= self.inline_data_max => {
                cmd.set_sgl(0, d.len() as u32, SGL_TYPE_IN_CAPSULE);
                d.clone()
            }
            Some(d) => {
                cmd.set_sgl(0, d.len() as u32, SGL_TYPE_TRANSPORT);
                Bytes::new()
            }
            None => {
                cmd.set_sgl(0, c2h_len, SGL_TYPE_TRANSPORT);
                Bytes::new()
            }
        };
        CapsuleCmd {
            sqe: cmd.0,
            data: &in_capsule,
        }
        .encode(self.digests, &mut self.tx);
        let reaping = !self.done.is_empty() || self.rx_start < self.rx_end;
        if !reaping || self.tx.len() >= TX_DEFER_MAX_BYTES {
            self.send_queued()?;
        }
        let write_data = if in_capsule.is_empty() { data } else { None };
        self.inflight.insert(
            cid,
            Inflight {
                write_data,
                read_buf: Vec::with_capacity(c2h_len as usize),
                read_len: c2h_len as usize,
            },
        );
        Ok(cid)
    }

    fn allocate_cid(&mut self) -> Result<u16, HostError> {
        for _ in 0..=u16::MAX as u32 {
            let cid = self.next_cid;
            self.next_cid = self.next_cid.wrapping_add(1);
            if !self.inflight.contains_key(&cid) && !self.done.contains_key(&cid) {
                return Ok(cid);
            }
        }
        Err(HostError::Protocol("no free command id"))
    }

    /// Waits for command `cid` to complete.
    pub fn wait(&mut self, cid: u16) -> Result<Response, HostError> {
        loop {
            if let Some(r) = self.done.remove(&cid) {
                return Ok(r);
            }
            if !self.inflight.contains_key(&cid) {
                return Err(HostError::Protocol(
                    "waiting for a command that was not submitted",
                ));
            }
            self.pump()?;
        }
    }

    /// Waits for any command to complete; returns its CID and response.
    pub fn wait_any(&mut self) -> Result<(u16, Response), HostError> {
        loop {
            if let Some(&cid) = self.done.keys().next() {
                if let Some(r) = self.done.remove(&cid) {
                    return Ok((cid, r));
                }
            }
            if self.inflight.is_empty() {
                return Err(HostError::Protocol("nothing in flight"));
            }
            self.pump()?;
        }
    }

    /// Submits and waits.
    pub fn execute(
        &mut self,
        cmd: Command,
        data: Option<Bytes>,
        c2h_len: u32,
    ) -> Result<Response, HostError> {
        let cid = self.submit(cmd, data, c2h_len)?;
        self.wait(cid)
    }

    /// Writes every PDU waiting in the send buffer.
    pub fn send_queued(&mut self) -> Result<(), HostError> {
        if !self.tx.is_empty() {
            let written = write_fully(&mut self.stream, &mut self.nonblocking, &self.tx);
            self.tx.clear();
            written?;
        }
        Ok(())
    }

    /// Sends raw bytes (for tests of malformed input), after any queued PDUs.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), HostError> {
        self.send_queued()?;
        write_fully(&mut self.stream, &mut self.nonblocking, bytes)?;
        Ok(())
    }

    /// Reads the next PDU without interpreting it (for tests).
    pub fn next_raw_pdu(&mut self) -> Result<OwnedPdu, HostError> {
        self.next_pdu()
    }

    /// Reads the next PDU and returns its bytes as they came (header, padding,
    /// data and digests), for tests of the wire layout.
    pub fn next_pdu_bytes(&mut self) -> Result<Vec<u8>, HostError> {
        self.next_decoded(|_, bytes| bytes.to_vec())
    }

    /// Makes each wait for the controller poll the socket for up to `window`
    /// before sleeping in the kernel, as polling initiators (SPDK, Linux poll
    /// queues) do: it spares a wake-up per response at the cost of a busy CPU
    /// while commands are outstanding (yielding it to other runnable threads
    /// every 16 tries). Zero (the default) never polls.
    pub fn set_busy_poll(&mut self, window: Duration) {
        self.busy_poll = window;
    }

    /// Sets the socket read timeout.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), HostError> {
        self.stream.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Receives until one PDU is handled: a completion, read data or an R2T.
    /// Data PDUs are copied straight from the receive buffer into the command's
    /// read buffer.
    fn pump(&mut self) -> Result<(), HostError> {
        loop {
            let window = &self.rx[self.rx_start..self.rx_end];
            let Some(d) =
                pdu::decode(window, self.digests, &self.limits).map_err(HostError::Decode)?
            else {
                self.fill()?;
                continue;
            };
            if !d.data_digest_ok {
                return Err(HostError::Protocol("data digest mismatch"));
            }
            let len = d.len;
            let r2t = match d.pdu {
                Pdu::CapsuleResp(resp) => {
                    let c = Completion::decode(&resp.cqe);
                    let inflight = self
                        .inflight
                        .remove(&c.cid)
                        .ok_or(HostError::Protocol("completion for an unknown command id"))?;
                    self.done.insert(
                        c.cid,
                        Response {
                            completion: c,
                            data: inflight.read_buf,
                        },
                    );
                    None
                }
                Pdu::C2HData(data) => {
                    let f = self
                        .inflight
                        .get_mut(&data.command_id)
                        .ok_or(HostError::Protocol("C2HData for an unknown command id"))?;
                    if data.offset as usize != f.read_buf.len()
                        || f.read_buf.len() + data.data.len() > f.read_len
                    {
                        return Err(HostError::Protocol("C2HData outside the expected range"));
                    }
                    f.read_buf.extend_from_slice(data.data);
                    if data.success {
                        if !data.last {
                            return Err(HostError::Protocol("C2HData SUCCESS without LAST"));
                        }
                        let f = self
                            .inflight
                            .remove(&data.command_id)
                            .ok_or(HostError::Protocol("lost command"))?;
                        let completion = Completion::new(data.command_id, Status::Success, 0);
                        self.done.insert(
                            data.command_id,
                            Response {
                                completion,
                                data: f.read_buf,
                            },
                        );
                    }
                    None
                }
                Pdu::R2T(r) => Some(r),
                Pdu::C2HTermReq(t) | Pdu::H2CTermReq(t) => {
                    return Err(HostError::Terminated {
                        fes: t.fes,
                        fei: t.fei,
                    })
                }
                Pdu::IcReq(_) | Pdu::IcResp(_) | Pdu::CapsuleCmd(_) | Pdu::H2CData(_) => {
                    return Err(HostError::Protocol(
                        "unexpected PDU type from the controller",
                    ))
                }
            };
            self.rx_start += len;
            if let Some(r) = r2t {
                self.answer_r2t(r.command_id, r.ttag, r.offset, r.length)?;
            }
            return Ok(());
        }
    }

    /// Reads more bytes into the receive buffer, first moving undecoded bytes to
    /// its front and growing it when a PDU does not fit.
    fn fill(&mut self) -> Result<(), HostError> {
        // The controller can only answer what it has received.
        self.send_queued()?;
        if self.rx_start == self.rx_end {
            self.rx_start = 0;
            self.rx_end = 0;
        } else if self.rx.len() - self.rx_end < RX_CHUNK_BYTES / 4 {
            self.rx.copy_within(self.rx_start..self.rx_end, 0);
            self.rx_end -= self.rx_start;
            self.rx_start = 0;
        }
        if self.rx.len() - self.rx_end < RX_CHUNK_BYTES / 4 {
            let grown = (self.rx.len() * 2).min(self.limits.plen_max() + RX_CHUNK_BYTES);
            if grown <= self.rx.len() {
                return Err(HostError::Protocol("PDU larger than the receive limit"));
            }
            self.rx.resize(grown, 0);
        }
        let n = match self.read_some() {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(HostError::Timeout)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            return Err(HostError::Closed);
        }
        self.rx_end += n;
        Ok(())
    }

    /// Reads what the socket holds into the receive buffer's free end:
    /// polling first if configured, then blocking up to the read timeout.
    fn read_some(&mut self) -> std::io::Result<usize> {
        if !self.busy_poll.is_zero() {
            if !self.nonblocking {
                self.stream.set_nonblocking(true)?;
                self.nonblocking = true;
            }
            let until = Instant::now() + self.busy_poll;
            let mut spins = 0u32;
            loop {
                match self.stream.read(&mut self.rx[self.rx_end..]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    done => return done,
                }
                if Instant::now() >= until {
                    break;
                }
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(16) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
            }
        }
        if self.nonblocking {
            self.stream.set_nonblocking(false)?;
            self.nonblocking = false;
        }
        self.stream.read(&mut self.rx[self.rx_end..])
    }

    fn answer_r2t(
        &mut self,
        cid: u16,
        ttag: u16,
        offset: u32,
        length: u32,
    ) -> Result<(), HostError> {
        let f = self
            .inflight
            .get(&cid)
            .ok_or(HostError::Protocol("R2T for an unknown command id"))?;
        let data = f
            .write_data
            .as_ref()
            .ok_or(HostError::Protocol("R2T for a command without data"))?;
        let end = offset as usize + length as usize;
        if length == 0 || end > data.len() || length > self.maxh2cdata {
            return Err(HostError::Protocol("R2T outside the command's data"));
        }
        let mut pos = offset as usize;
        while pos < end {
            let n = (end - pos).min(self.maxh2cdata as usize);
            let chunk = &data[pos..pos + n];
            DataPdu {
                command_id: cid,
                ttag,
                offset: pos as u32,
                last: pos + n == end,
                success: false,
                data: chunk,
            }
            .encode(PduType::H2CData, self.digests, 0, &mut self.tx);
            pos += n;
        }
        // Sent with the next write, at the latest before the queue blocks.
        if self.tx.len() >= TX_DEFER_MAX_BYTES {
            self.send_queued()?;
        }
        Ok(())
    }

    fn next_pdu(&mut self) -> Result<OwnedPdu, HostError> {
        self.next_decoded(|pdu, _| OwnedPdu::from(pdu))
    }

    /// Receives until a whole PDU is buffered and hands it, decoded and as
    /// bytes, to `take`.
    fn next_decoded<T>(&mut self, take: impl FnOnce(&Pdu<'_>, &[u8]) -> T) -> Result<T, HostError> {
        loop {
            let window = &self.rx[self.rx_start..self.rx_end];
            match pdu::decode(window, self.digests, &self.limits) {
                Ok(Some(d)) => {
                    if !d.data_digest_ok {
                        return Err(HostError::Protocol("data digest mismatch"));
                    }
                    let taken = take(&d.pdu, &window[..d.len]);
                    self.rx_start += d.len;
                    return Ok(taken);
                }
                Ok(None) => self.fill()?,
                Err(e) => return Err(HostError::Decode(e)),
            }
        }
    }
}

/// A PDU received by the host, copied out of the receive buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OwnedPdu {
    /// ICResp.
    IcResp(pdu::IcResp),
    /// CapsuleResp with its CQE bytes.
    CapsuleResp([u8; 16]),
    /// C2HData.
    C2HData {
        /// CCCID.
        command_id: u16,
        /// DATAO.
        offset: u32,
        /// LAST_PDU flag.
        last: bool,
        /// SUCCESS flag.
        success: bool,
        /// The data.
        data: Vec<u8>,
    },
    /// R2T.
    R2T {
        /// CCCID.
        command_id: u16,
        /// TTAG.
        ttag: u16,
        /// R2TO.
        offset: u32,
        /// R2TL.
        length: u32,
    },
    /// C2HTermReq (or H2CTermReq).
    Term {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// A PDU type a controller never sends.
    Other,
}

impl From<&Pdu<'_>> for OwnedPdu {
    fn from(p: &Pdu<'_>) -> OwnedPdu {
        match p {
            Pdu::IcResp(r) => OwnedPdu::IcResp(*r),
            Pdu::CapsuleResp(r) => OwnedPdu::CapsuleResp(r.cqe),
            Pdu::C2HData(d) => OwnedPdu::C2HData {
                command_id: d.command_id,
                offset: d.offset,
                last: d.last,
                success: d.success,
                data: d.data.to_vec(),
            },
            Pdu::R2T(r) => OwnedPdu::R2T {
                command_id: r.command_id,
                ttag: r.ttag,
                offset: r.offset,
                length: r.length,
            },
            Pdu::C2HTermReq(t) | Pdu::H2CTermReq(t) => OwnedPdu::Term {
                fes: t.fes,
                fei: t.fei,
            },
            Pdu::IcReq(_) | Pdu::CapsuleCmd(_) | Pdu::H2CData(_) => OwnedPdu::Other,
        }
    }
}

/// Writes all of `bytes`. A socket left nonblocking by a polling receive
/// (`nonblocking`) is written as is and put back in blocking mode only if the
/// kernel's send buffer is full, so a polling host pays no mode switch per
/// command.
fn write_fully(
    stream: &mut TcpStream,
    nonblocking: &mut bool,
    bytes: &[u8],
) -> std::io::Result<()> {
    let mut sent = 0;
    while sent < bytes.len() {
        match stream.write(&bytes[sent..]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => sent += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && *nonblocking => {
                stream.set_nonblocking(false)?;
                *nonblocking = false;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// The `/proc` stat file of the calling thread (`/proc/thread-self`
    /// resolves to `<pid>/task/<tid>`).
    fn this_thread_stat() -> std::path::PathBuf {
        let task = std::fs::read_link("/proc/thread-self").expect("/proc/thread-self");
        std::path::Path::new("/proc").join(task).join("stat")
    }

    /// Waits until `ready` holds and the thread whose stat file is `stat` is
    /// asleep in the kernel (state S): blocked, not spinning or preempted.
    /// False if that did not happen within 10 s.
    fn wait_until_asleep(stat: &std::path::Path, ready: &std::sync::atomic::AtomicBool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let state = std::fs::read_to_string(stat).expect("thread stat");
            // The state follows the command name, which ends at the last ')'.
            let asleep = state
                .rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('S'));
            if ready.load(std::sync::atomic::Ordering::SeqCst) && asleep {
                return true;
            }
            std::thread::yield_now();
        }
        false
    }

    #[test]
    fn a_nonblocking_write_into_a_full_socket_finishes_blocking() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("listen");
        let addr = listener.local_addr().expect("address");
        let bytes: Vec<u8> = (0..32u32 << 20).map(|i| (i % 251) as u8).collect();
        let expected = bytes.clone();
        let writer = this_thread_stat();
        let writing = Arc::new(AtomicBool::new(false));
        let reader = {
            let writing = writing.clone();
            std::thread::spawn(move || {
                let (mut socket, _) = listener.accept().expect("accept");
                // Nothing is read until the writer has filled every socket
                // buffer and sleeps in a blocking write.
                wait_until_asleep(&writer, &writing);
                let mut got = Vec::new();
                socket.read_to_end(&mut got).expect("read");
                got
            })
        };
        let mut stream = TcpStream::connect(addr).expect("connect");
        stream.set_nonblocking(true).expect("nonblocking");
        let mut nonblocking = true;
        writing.store(true, std::sync::atomic::Ordering::SeqCst);
        write_fully(&mut stream, &mut nonblocking, &bytes).expect("write");
        assert!(
            !nonblocking,
            "32 MiB fit the socket buffers without blocking"
        );
        drop(stream);
        let got = reader.join().expect("reader");
        assert!(got == expected, "bytes lost or reordered");
    }
}
