//! A workload's commands on one NVMe/TCP I/O queue of the crate's own host
//! (`nvmf_target::host`), for [`super::load::keep_in_flight`].

use std::time::Instant;

use bytes::Bytes;
use nvmf_target::host::IoQueue;
use nvmf_target::Lba;

use super::load::{InFlight, Slots, Workload, BLOCK_BYTES};

/// Commands of `w` at `slots` on one queue; every completion is checked, and
/// a failed command ends the bench with the target's status.
pub struct HostLoad<'a> {
    io: &'a mut IoQueue,
    nsid: u32,
    w: Workload,
    slots: Slots,
    data: Bytes,
    /// Submission time by command id.
    submitted_at: Vec<Option<Instant>>,
}

impl<'a> HostLoad<'a> {
    /// `w`'s commands to namespace `nsid` (4 KiB blocks) at `slots`; writes
    /// carry a constant pattern.
    pub fn new(io: &'a mut IoQueue, nsid: u32, w: Workload, slots: Slots) -> HostLoad<'a> {
        HostLoad {
            io,
            nsid,
            w,
            slots,
            data: Bytes::from(vec![0xA5u8; w.block_bytes as usize]),
            submitted_at: vec![None; usize::from(u16::MAX) + 1],
        }
    }
}

impl InFlight for HostLoad<'_> {
    /// When the completed command was submitted.
    type Completion = Instant;

    fn submit(&mut self) -> bool {
        let w = self.w;
        let lba = Lba(self.slots.next_wrapping() * u64::from(w.blocks()));
        let at = Instant::now();
        let cid = if w.pattern.is_write() {
            self.io
                .submit_write(self.nsid, lba, self.data.clone(), BLOCK_BYTES as u32)
        } else {
            self.io
                .submit_read(self.nsid, lba, w.blocks(), BLOCK_BYTES as u32)
        }
        .unwrap_or_else(|e| panic!("{} over NVMe/TCP: submit failed: {e}", w.name));
        self.submitted_at[usize::from(cid)] = Some(at);
        true
    }

    fn wait(&mut self) -> Option<Instant> {
        let name = self.w.name;
        let (cid, response) = self
            .io
            .queue
            .wait_any()
            .unwrap_or_else(|e| panic!("{name} over NVMe/TCP: {e}"));
        let at = self.submitted_at[usize::from(cid)]
            .take()
            .expect("completion of a submitted command");
        if let Err(e) = response.success() {
            panic!("{name} over NVMe/TCP: command failed: {e}");
        }
        Some(at)
    }
}
