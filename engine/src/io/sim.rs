//! An in-memory device that models a volatile write cache, so tests can simulate
//! power loss: writes not yet flushed may be lost, reordered or torn at any
//! 512-byte sector; and a crash point, after which writes never reach the media.

use parking_lot::Mutex;

use super::{check_bounds, AlignedBuf, Device, IoDone, IoOp, IoOutcome};

/// What survives a simulated crash among writes completed since the last flush.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Process death: every completed write is kept (the kernel still has it).
    KeepAll,
    /// Power loss with nothing reaching the media.
    DropAll,
    /// Power loss where each unflushed 512-byte sector independently survives
    /// or not, decided by a generator seeded with the value: models torn and
    /// reordered writes.
    Torn(u64),
}

struct State {
    /// What reads return now.
    data: Vec<u8>,
    /// For each write completed since the last flush, in completion order: its
    /// offset and the bytes it overwrote, so a crash can roll it back.
    undo: Vec<(u64, Vec<u8>)>,
    /// Writes still allowed to reach the media before the crash point; `None`
    /// when no crash point is set. Past it, writes and flushes complete
    /// successfully but change nothing, as if the machine had already died.
    writes_before_crash: Option<u64>,
}

/// The unit a power loss tears writes at.
const SECTOR: usize = 512;

/// A memory-backed [`Device`] that completes every operation synchronously.
pub struct SimDevice {
    state: Mutex<State>,
    size: u64,
}

impl SimDevice {
    /// A zero-filled device of `size` bytes.
    pub fn new(size: u64) -> SimDevice {
        SimDevice {
            state: Mutex::new(State {
                data: vec![0u8; size as usize],
                undo: Vec::new(),
                writes_before_crash: None,
            }),
            size,
        }
    }

    /// Sets a crash point: after `writes` more writes, nothing reaches the
    /// media any more. A test sets it, runs an operation (a checkpoint, a
    /// garbage collection round) and then calls [`SimDevice::crash`]: the
    /// crash happens inside the operation, after its first `writes` writes.
    pub fn crash_after_writes(&self, writes: u64) {
        self.state.lock().writes_before_crash = Some(writes);
    }

    /// Simulates a crash: each block written since the last flush keeps its newest
    /// content or falls back to what it held before, as `mode` decides.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.state.lock();
        state.writes_before_crash = None;
        let undo = std::mem::take(&mut state.undo);
        let mut rng = SplitMix(match mode {
            CrashMode::Torn(seed) => seed,
            _ => 0,
        });
        // Walking newest to oldest: a block is settled by the newest write that
        // survives; a dropped write restores the bytes it overwrote.
        let mut settled = std::collections::HashSet::new();
        for (offset, previous) in undo.into_iter().rev() {
            for (i, old) in previous.chunks(SECTOR).enumerate() {
                let at = offset as usize + i * SECTOR;
                if settled.contains(&at) {
                    continue;
                }
                let keep = match mode {
                    CrashMode::KeepAll => true,
                    CrashMode::DropAll => false,
                    CrashMode::Torn(_) => rng.next() & 1 == 0,
                };
                if keep {
                    settled.insert(at);
                } else {
                    state.data[at..at + old.len()].copy_from_slice(old);
                }
            }
        }
    }

    /// Flips one byte of the stored data: models media corruption.
    pub fn corrupt_byte(&self, offset: u64) {
        self.corrupt(offset, 0xA5);
    }

    /// XORs the byte at `offset` with `mask` (one bit for a bit flip, any
    /// non-zero value for a byte overwrite): models media corruption.
    pub fn corrupt(&self, offset: u64, mask: u8) {
        self.state.lock().data[offset as usize] ^= mask;
    }

    /// A new device holding what this one holds now, with nothing unflushed:
    /// lets a test damage many copies of one pool image.
    pub fn duplicate(&self) -> SimDevice {
        SimDevice {
            state: Mutex::new(State {
                data: self.state.lock().data.clone(),
                undo: Vec::new(),
                writes_before_crash: None,
            }),
            size: self.size,
        }
    }
}

impl Device for SimDevice {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn submit(&self, op: IoOp, done: IoDone) {
        // Pieces land as one write does: all at once, or not at all.
        let op = match op {
            IoOp::WriteParts { offset, parts } => IoOp::Write {
                offset,
                buf: AlignedBuf::copy_from(&parts.parts().concat()),
            },
            op => op,
        };
        if let Err(err) = check_bounds(&op, self.size) {
            return done(IoOutcome {
                buf: op.into_buf(),
                result: Err(err),
            });
        }
        let outcome = {
            let mut state = self.state.lock();
            match op {
                IoOp::Read { offset, mut buf } => {
                    let at = offset as usize;
                    let len = buf.len();
                    buf.as_mut_slice()
                        .copy_from_slice(&state.data[at..at + len]);
                    IoOutcome {
                        buf: Some(buf),
                        result: Ok(()),
                    }
                }
                // The page cache is volatile like the device's cache: a cached
                // write is modelled as a write.
                IoOp::Write { buf, .. } | IoOp::WriteCached { buf, .. }
                    if state.writes_before_crash == Some(0) =>
                {
                    IoOutcome {
                        buf: Some(buf),
                        result: Ok(()),
                    }
                }
                IoOp::Flush if state.writes_before_crash == Some(0) => IoOutcome {
                    buf: None,
                    result: Ok(()),
                },
                IoOp::Write { offset, buf } | IoOp::WriteCached { offset, buf } => {
                    if let Some(left) = state.writes_before_crash.as_mut() {
                        *left -= 1;
                    }
                    let range = offset as usize..offset as usize + buf.len();
                    let previous = state.data[range.clone()].to_vec();
                    state.undo.push((offset, previous));
                    state.data[range].copy_from_slice(buf.as_slice());
                    IoOutcome {
                        buf: Some(buf),
                        result: Ok(()),
                    }
                }
                IoOp::WriteParts { .. } => unreachable!("pieces were made one write above"),
                IoOp::Flush => {
                    state.undo.clear();
                    IoOutcome {
                        buf: None,
                        result: Ok(()),
                    }
                }
            }
        };
        done(outcome)
    }
}

impl std::fmt::Debug for SimDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimDevice({} bytes)", self.size)
    }
}

/// A tiny deterministic generator (SplitMix64) so crashes replay from a seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{flush_blocking, read_blocking, write_blocking, AlignedBuf};
    use crate::units::BLOCK_SIZE;

    fn block(byte: u8) -> AlignedBuf {
        AlignedBuf::copy_from(&[byte; BLOCK_SIZE])
    }

    #[test]
    fn flushed_writes_survive_power_loss_and_unflushed_ones_do_not() {
        let dev = SimDevice::new(1 << 20);
        write_blocking(&dev, 0, block(1)).expect("write");
        flush_blocking(&dev).expect("flush");
        write_blocking(&dev, 4096, block(2)).expect("write");
        dev.crash(CrashMode::DropAll);
        assert_eq!(read_blocking(&dev, 0, 4096).expect("read").as_slice()[0], 1);
        assert_eq!(
            read_blocking(&dev, 4096, 4096).expect("read").as_slice()[0],
            0
        );
    }

    #[test]
    fn a_dropped_rewrite_falls_back_to_the_surviving_earlier_write_sector_by_sector() {
        let mut fell_back = false;
        let mut torn_within_a_block = false;
        for seed in 0..64u64 {
            let dev = SimDevice::new(1 << 20);
            write_blocking(&dev, 0, block(1)).expect("write");
            write_blocking(&dev, 0, block(2)).expect("rewrite");
            dev.crash(CrashMode::Torn(seed));
            let data = read_blocking(&dev, 0, 4096).expect("read");
            let sectors: Vec<u8> = data.as_slice().chunks(SECTOR).map(|s| s[0]).collect();
            for (sector, &first) in data.as_slice().chunks(SECTOR).zip(&sectors) {
                assert!(
                    sector.iter().all(|&b| b == first),
                    "a sector is never split"
                );
            }
            fell_back |= sectors.contains(&1);
            torn_within_a_block |= sectors.iter().any(|&s| s != sectors[0]);
        }
        assert!(fell_back && torn_within_a_block);
    }

    #[test]
    fn process_death_keeps_completed_writes() {
        let dev = SimDevice::new(1 << 20);
        write_blocking(&dev, 8192, block(9)).expect("write");
        dev.crash(CrashMode::KeepAll);
        assert_eq!(
            read_blocking(&dev, 8192, 4096).expect("read").as_slice()[0],
            9
        );
    }
}
