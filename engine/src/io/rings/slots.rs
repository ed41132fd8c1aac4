//! What every ring keeps for the operations the kernel owns: their buffers and
//! callbacks, by slot number (the SQE's user_data), and how a request becomes an
//! SQE and a completion an [`IoOutcome`].

use std::sync::Arc;

use io_uring::{opcode, squeue, types};

use super::Shared;
use crate::io::{AlignedBuf, DeviceError, IoDone, IoOp, IoOutcome};

/// What a ring is asked to do.
pub(super) enum Request {
    /// A caller's operation, completed through its callback.
    Io(IoOp, IoDone),
    /// An allocation hint: its outcome only matters for performance.
    Preallocate { offset: u64, len: u64 },
}

/// An operation the kernel currently owns. Its buffer stays here, untouched,
/// until the completion arrives.
struct InFlight {
    buf: Option<AlignedBuf>,
    wanted: usize,
    /// None for a preallocation, whose failure only costs speed.
    done: Option<IoDone>,
    /// Keeps the device's file open while the operation runs on a ring other
    /// than the device's own.
    _device: Option<Arc<Shared>>,
}

/// The in-flight table of one ring.
pub(super) struct Slots {
    entries: Vec<Option<InFlight>>,
    free: Vec<usize>,
}

/// A completion ready to run outside the ring's borrow.
pub(super) struct Finished {
    done: IoDone,
    outcome: IoOutcome,
}

impl Finished {
    pub fn run(self) {
        (self.done)(self.outcome);
    }
}

impl Slots {
    pub fn new(capacity: usize) -> Slots {
        Slots {
            entries: (0..capacity).map(|_| None).collect(),
            free: (0..capacity).rev().collect(),
        }
    }

    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    pub fn in_flight(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Takes a slot for `request` on `shared`'s file and returns the SQE to push,
    /// or gives the request back when every slot is taken. `keep_device` holds
    /// the file open until completion (for rings the device does not own).
    pub fn take(
        &mut self,
        shared: &Arc<Shared>,
        request: Request,
        keep_device: bool,
    ) -> Result<squeue::Entry, Request> {
        let Some(slot) = self.free.pop() else {
            return Err(request);
        };
        let fd = types::Fd(std::os::fd::AsRawFd::as_raw_fd(&shared.file));
        let (sqe, buf, wanted, done) = match request {
            Request::Io(IoOp::Read { offset, mut buf }, done) => {
                let len = buf.len();
                let sqe = opcode::Read::new(fd, buf.as_mut_ptr(), len as u32)
                    .offset(offset)
                    .build();
                (sqe, Some(buf), len, Some(done))
            }
            // UringDevice copies cached writes into the page cache itself and
            // never queues one; written directly, one would promise the same.
            Request::Io(
                IoOp::Write { offset, mut buf } | IoOp::WriteCached { offset, mut buf },
                done,
            ) => {
                let len = buf.len();
                let sqe = opcode::Write::new(fd, buf.as_mut_ptr(), len as u32)
                    .offset(offset)
                    .build();
                (sqe, Some(buf), len, Some(done))
            }
            Request::Io(IoOp::Flush, done) => (
                opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build(),
                None,
                0,
                Some(done),
            ),
            // Mode 0 allocates without changing the file size or any content.
            Request::Preallocate { offset, len } => (
                opcode::Fallocate::new(fd, len).offset(offset).build(),
                None,
                0,
                None,
            ),
        };
        // INVARIANT: the buffer the SQE points at moves into the slot (a move of
        // the AlignedBuf handle, not of its heap memory) and stays there until
        // `finish` takes it out for the slot's completion.
        self.entries[slot] = Some(InFlight {
            buf,
            wanted,
            done,
            _device: keep_device.then(|| shared.clone()),
        });
        Ok(sqe.user_data(slot as u64))
    }

    /// Ends the operation in `slot` with the kernel's `result`; returns its
    /// callback and outcome, or `None` for a preallocation or an unknown slot.
    pub fn finish(&mut self, slot: u64, result: i32) -> Option<Finished> {
        let slot = usize::try_from(slot).ok()?;
        let Some(inflight) = self.entries.get_mut(slot).and_then(Option::take) else {
            tracing::error!(slot, "completion for an unknown slot");
            return None;
        };
        self.free.push(slot);
        let Some(done) = inflight.done else {
            if result < 0 {
                tracing::debug!(
                    errno = -result,
                    "preallocation failed; writes will allocate instead"
                );
            }
            return None;
        };
        let outcome = if result < 0 {
            Err(DeviceError::Os(-result))
        } else if (result as usize) < inflight.wanted {
            Err(DeviceError::Short {
                done: result as usize,
                wanted: inflight.wanted,
            })
        } else {
            Ok(())
        };
        Some(Finished {
            done,
            outcome: IoOutcome {
                buf: inflight.buf,
                result: outcome,
            },
        })
    }

    /// Slots still owned by the kernel.
    pub fn busy(&self) -> impl Iterator<Item = u64> + '_ {
        self.entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.is_some())
            .map(|(slot, _)| slot as u64)
    }
}
