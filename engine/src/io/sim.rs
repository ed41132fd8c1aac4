//! An in-memory device that models a volatile write cache, so tests can simulate
//! power loss: writes not yet flushed may be lost or torn at block granularity.

use parking_lot::Mutex;

use super::{check_bounds, Device, IoDone, IoOp, IoOutcome};
use crate::units::BLOCK_SIZE;

/// What survives a simulated crash among writes completed since the last flush.
#[derive(Clone, Copy, Debug)]
pub enum CrashMode {
    /// Process death: every completed write is kept (the kernel still has it).
    KeepAll,
    /// Power loss with nothing reaching the media.
    DropAll,
    /// Power loss where each unflushed block independently survives or not,
    /// decided by a generator seeded with the value: models torn and reordered writes.
    Torn(u64),
}

struct State {
    /// What reads return now.
    data: Vec<u8>,
    /// For each write completed since the last flush, in completion order: its
    /// offset and the bytes it overwrote, so a crash can roll it back.
    undo: Vec<(u64, Vec<u8>)>,
}

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
            }),
            size,
        }
    }

    /// Simulates a crash: each block written since the last flush keeps its newest
    /// content or falls back to what it held before, as `mode` decides.
    pub fn crash(&self, mode: CrashMode) {
        let mut state = self.state.lock();
        let undo = std::mem::take(&mut state.undo);
        let mut rng = SplitMix(match mode {
            CrashMode::Torn(seed) => seed,
            _ => 0,
        });
        // Walking newest to oldest: a block is settled by the newest write that
        // survives; a dropped write restores the bytes it overwrote.
        let mut settled = std::collections::HashSet::new();
        for (offset, previous) in undo.into_iter().rev() {
            for (i, old) in previous.chunks(BLOCK_SIZE).enumerate() {
                let at = offset as usize + i * BLOCK_SIZE;
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
        if let Err(err) = check_bounds(&op, self.size) {
            let buf = match op {
                IoOp::Read { buf, .. } | IoOp::Write { buf, .. } => Some(buf),
                IoOp::Flush => None,
            };
            return done(IoOutcome {
                buf,
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
                IoOp::Write { offset, buf } => {
                    let range = offset as usize..offset as usize + buf.len();
                    let previous = state.data[range.clone()].to_vec();
                    state.undo.push((offset, previous));
                    state.data[range].copy_from_slice(buf.as_slice());
                    IoOutcome {
                        buf: Some(buf),
                        result: Ok(()),
                    }
                }
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
    fn a_dropped_rewrite_falls_back_to_the_surviving_earlier_write() {
        let dev = SimDevice::new(1 << 20);
        write_blocking(&dev, 0, block(1)).expect("write");
        write_blocking(&dev, 0, block(2)).expect("rewrite");
        // Find a seed that keeps the first write and drops the second.
        let seed = (0..64u64)
            .find(|&seed| {
                let mut rng = SplitMix(seed);
                let newest = rng.next() & 1 == 0;
                let oldest = rng.next() & 1 == 0;
                !newest && oldest
            })
            .expect("some seed");
        dev.crash(CrashMode::Torn(seed));
        assert_eq!(read_blocking(&dev, 0, 4096).expect("read").as_slice()[0], 1);
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
