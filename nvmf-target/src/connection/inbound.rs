//! Write data received where it belongs: once an H2CData PDU's header has
//! been checked, the rest of its data goes into its command's block-aligned
//! buffer as it arrives — copied from the driver's receive buffer, or
//! received from the socket straight into the command's buffer when the
//! driver takes an [`InboundTarget`] — instead of being held in the
//! connection's receive buffer until the whole PDU is there.

use std::time::Instant;

use uring::AlignedBuf;

use super::Connection;
use crate::pdu::{self, DataHead, DecodeLimits, DIGEST_LEN};

/// Data left in a PDU below which the driver is not offered an
/// [`InboundTarget`]: a receive of its own would cost more than the copy.
const INBOUND_TARGET_MIN_BYTES: usize = 16 * 1024;

/// The rest of an H2CData PDU whose header has been accepted.
pub(super) struct Inbound {
    /// The transfer tag (the command) whose buffer takes the data.
    ttag: u16,
    /// Data bytes still to come.
    data_left: usize,
    /// crc32c of the data so far, when a data digest follows it.
    crc: Option<u32>,
    /// The data digest's bytes received so far.
    digest: [u8; DIGEST_LEN],
    digest_have: usize,
    /// The command's buffer is lent to the driver ([`InboundTarget`]).
    lent: bool,
}

/// A command's write buffer lent to the driver, so the socket's next bytes
/// (the rest of an H2CData PDU's data) are received straight into it. Give
/// it back with [`Connection::inbound_received`], whatever the receive did.
pub struct InboundTarget {
    buf: AlignedBuf,
    at: usize,
    len: usize,
}

impl InboundTarget {
    /// The buffer, where in it the bytes go and how many are expected, for a
    /// driver whose receive must own its memory (an io_uring receive).
    pub fn into_parts(self) -> (AlignedBuf, usize, usize) {
        (self.buf, self.at, self.len)
    }

    /// Puts back together what [`InboundTarget::into_parts`] gave.
    pub fn from_parts(buf: AlignedBuf, at: usize, len: usize) -> InboundTarget {
        InboundTarget { buf, at, len }
    }

    /// How many bytes are expected.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no bytes are expected (never, for a lent buffer).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the bytes go.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let end = (self.at + self.len).min(self.buf.len());
        let start = self.at.min(end);
        &mut self.buf.as_mut_slice()[start..end]
    }
}

impl Connection {
    /// Starts receiving the data of the H2CData PDU at the front of `rest`
    /// (which holds its header but not all of it) into its command's buffer,
    /// and returns the bytes of `rest` taken (all of them), or `None` when
    /// `rest` starts no such PDU. A header the PDU checks refuse terminates
    /// the connection, as it would once the whole PDU had arrived.
    pub(super) fn begin_inbound(&mut self, rest: &[u8], limits: &DecodeLimits) -> Option<usize> {
        let head = match pdu::decode_h2c_head(rest, self.digests, limits) {
            Ok(Some(head)) => head,
            Ok(None) => return None,
            Err(e) => {
                tracing::warn!(error = %e, "malformed PDU; terminating connection");
                let header = &rest[..rest.len().min(pdu::TERM_MAX_PLEN - pdu::TERM_HLEN)];
                self.terminate(e.fes(), e.fei(), header);
                return None;
            }
        };
        let DataHead {
            fields,
            data_start,
            data_len,
            has_data_digest,
        } = head;
        let header = &rest[..data_start.min(128)];
        if !self.accept_h2c(&fields, data_len, header) {
            return None;
        }
        self.inbound = Some(Inbound {
            ttag: fields.ttag,
            data_left: data_len,
            crc: has_data_digest.then_some(0),
            digest: [0; DIGEST_LEN],
            digest_have: 0,
            lent: false,
        });
        let taken = self.feed_inbound(&rest[data_start..]);
        debug_assert_eq!(taken, rest.len() - data_start, "rest ends inside the PDU");
        Some(data_start + taken)
    }

    /// Takes the front of `input` that belongs to the PDU being received (its
    /// data, then its data digest) and returns how many bytes that was; the
    /// PDU is handled once its last byte is in.
    pub(super) fn feed_inbound(&mut self, input: &[u8]) -> usize {
        let Some(inbound) = self.inbound.as_mut() else {
            return 0;
        };
        let data = input.len().min(inbound.data_left);
        inbound.data_left -= data;
        if let Some(crc) = inbound.crc.as_mut() {
            *crc = crc32c::crc32c_append(*crc, &input[..data]);
        }
        let ttag = inbound.ttag;
        let lent = inbound.lent;
        let mut taken = data;
        if inbound.crc.is_some() {
            let digest = (input.len() - data).min(DIGEST_LEN - inbound.digest_have);
            let have = inbound.digest_have;
            inbound.digest[have..have + digest].copy_from_slice(&input[data..data + digest]);
            inbound.digest_have += digest;
            taken += digest;
        }
        if data > 0 {
            // Bytes that reach the connection while the buffer is lent (a
            // driver receiving twice at once) have no place: the command
            // then fails rather than keeping a hole in its data.
            if lent || !self.store_h2c_data(ttag, &input[..data]) {
                self.fail_h2c_data(ttag);
            }
        }
        self.finish_inbound_if_complete();
        taken
    }

    /// Lends the buffer the rest of the current H2CData PDU's data goes into,
    /// when enough of it is still to come to be worth a receive of its own.
    pub fn inbound_target(&mut self) -> Option<InboundTarget> {
        if self.closed {
            return None;
        }
        let inbound = self.inbound.as_mut()?;
        if inbound.lent || inbound.data_left < INBOUND_TARGET_MIN_BYTES {
            return None;
        }
        let h2c = self.slots.get_mut(&inbound.ttag)?.h2c.as_mut()?;
        let buf = h2c.buf.take()?;
        inbound.lent = true;
        Some(InboundTarget {
            buf,
            at: h2c.received as usize,
            len: inbound.data_left,
        })
    }

    /// Takes back a buffer lent by [`Connection::inbound_target`] into which
    /// `n` bytes were received (0 when the receive failed).
    pub fn inbound_received(&mut self, target: InboundTarget, n: usize, now: Instant) {
        self.now_ms = self.ctx.subsystem.now_ms_at(now);
        let Some(inbound) = self.inbound.as_mut().filter(|inbound| inbound.lent) else {
            return;
        };
        inbound.lent = false;
        let n = n.min(target.len).min(inbound.data_left);
        inbound.data_left -= n;
        let InboundTarget { buf, at, .. } = target;
        if let Some(crc) = inbound.crc.as_mut() {
            *crc = crc32c::crc32c_append(*crc, &buf.as_slice()[at..at + n]);
        }
        let ttag = inbound.ttag;
        let h2c = self
            .slots
            .get_mut(&ttag)
            .and_then(|slot| slot.h2c.as_mut())
            .filter(|h2c| h2c.buf.is_none() && h2c.received as usize == at);
        match h2c {
            Some(h2c) => {
                h2c.buf = Some(buf);
                h2c.received += n as u32;
            }
            None if n > 0 => self.fail_h2c_data(ttag),
            None => {}
        }
        self.finish_inbound_if_complete();
    }

    /// Copies `data` to the end of what `ttag`'s buffer holds; false when
    /// the command or its buffer is gone.
    pub(super) fn store_h2c_data(&mut self, ttag: u16, data: &[u8]) -> bool {
        let Some(h2c) = self.slots.get_mut(&ttag).and_then(|slot| slot.h2c.as_mut()) else {
            return false;
        };
        let Some(buf) = h2c.buf.as_mut() else {
            return false;
        };
        let at = h2c.received as usize;
        // INVARIANT: the PDU was accepted only if it ends inside the R2T
        // window, which ends inside the buffer.
        let Some(place) = buf.as_mut_slice().get_mut(at..at + data.len()) else {
            return false;
        };
        place.copy_from_slice(data);
        h2c.received += data.len() as u32;
        true
    }

    /// Marks `ttag`'s data as damaged in transit: the command fails with a
    /// transport error once all its data has arrived.
    pub(super) fn fail_h2c_data(&mut self, ttag: u16) {
        if let Some(h2c) = self.slots.get_mut(&ttag).and_then(|slot| slot.h2c.as_mut()) {
            h2c.digest_error = true;
        }
    }

    /// Hands the PDU being received to the command once its data and digest
    /// are all in.
    fn finish_inbound_if_complete(&mut self) {
        let complete = self.inbound.as_ref().is_some_and(|inbound| {
            inbound.data_left == 0
                && !inbound.lent
                && (inbound.crc.is_none() || inbound.digest_have == DIGEST_LEN)
        });
        if !complete {
            return;
        }
        let Some(inbound) = self.inbound.take() else {
            return;
        };
        let digest_ok = inbound
            .crc
            .is_none_or(|crc| crc == u32::from_le_bytes(inbound.digest));
        if !digest_ok {
            self.fail_h2c_data(inbound.ttag);
        }
        self.h2c_data_arrived(inbound.ttag);
    }
}
