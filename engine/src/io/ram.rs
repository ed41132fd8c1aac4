//! A pool device in memory, like SPDK's malloc bdev: it measures the target
//! and the engine without a disk underneath, and its contents are gone when
//! the process ends.
//!
//! Memory is taken a stripe at a time on first write, so a large RAM pool
//! costs only what has been written; never-written stripes read as zeros.
//! Operations complete on the submitting thread before `submit` returns (the
//! [`Device`] contract allows it), with each stripe behind its own lock so
//! reactors on different cores rarely meet.

use parking_lot::RwLock;

use super::{check_bounds, Device, IoDone, IoOp, IoOutcome};

/// Bytes of one lazily allocated stripe (a power of two).
const STRIPE_BYTES: usize = 1 << 20;

/// One stripe's bytes, `None` until first written.
type Stripe = RwLock<Option<Box<[u8]>>>;

/// A memory-backed [`Device`] without persistence; flushes complete at once.
pub struct RamDevice {
    stripes: Box<[Stripe]>,
    size: u64,
}

impl RamDevice {
    /// A zero-filled device of `size` bytes (rounded up to whole stripes
    /// internally; operations past `size` are refused).
    pub fn new(size: u64) -> RamDevice {
        let stripes = size.div_ceil(STRIPE_BYTES as u64) as usize;
        RamDevice {
            stripes: (0..stripes).map(|_| RwLock::new(None)).collect(),
            size,
        }
    }

    /// Bytes of memory taken by written stripes.
    pub fn resident_bytes(&self) -> u64 {
        let written = self.stripes.iter().filter(|s| s.read().is_some()).count();
        (written * STRIPE_BYTES) as u64
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        for (stripe, at, range) in pieces(offset, out.len()) {
            let target = &mut out[range];
            match &*self.stripes[stripe].read() {
                Some(bytes) => target.copy_from_slice(&bytes[at..at + target.len()]),
                None => target.fill(0),
            }
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        for (stripe, at, range) in pieces(offset, data.len()) {
            let source = &data[range];
            let mut slot = self.stripes[stripe].write();
            let bytes = slot.get_or_insert_with(|| vec![0u8; STRIPE_BYTES].into_boxed_slice());
            bytes[at..at + source.len()].copy_from_slice(source);
        }
    }
}

/// Splits `len` bytes at `offset` into (stripe, offset inside it, range of
/// the caller's buffer) pieces.
fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, usize, std::ops::Range<usize>)> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done == len {
            return None;
        }
        let position = offset + done as u64;
        let stripe = (position / STRIPE_BYTES as u64) as usize;
        let at = (position % STRIPE_BYTES as u64) as usize;
        let take = (STRIPE_BYTES - at).min(len - done);
        let range = done..done + take;
        done += take;
        Some((stripe, at, range))
    })
}

impl Device for RamDevice {
    fn size_bytes(&self) -> u64 {
        self.size
    }

    fn submit(&self, op: IoOp, done: IoDone) {
        let result = check_bounds(&op, self.size);
        let buf = match op {
            IoOp::Read { offset, mut buf } => {
                if result.is_ok() {
                    self.read(offset, buf.as_mut_slice());
                }
                Some(buf)
            }
            IoOp::Write { offset, buf } => {
                if result.is_ok() {
                    self.write(offset, buf.as_slice());
                }
                Some(buf)
            }
            IoOp::Flush => None,
        };
        done(IoOutcome { buf, result });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{read_blocking, write_blocking, AlignedBuf, DeviceError};

    fn filled(len: usize, byte: u8) -> AlignedBuf {
        let mut buf = AlignedBuf::for_overwrite(len);
        buf.as_mut_slice().fill(byte);
        buf
    }

    #[test]
    fn reads_back_writes_across_stripes_and_zeros_elsewhere() {
        let device = RamDevice::new(4 * STRIPE_BYTES as u64);
        let offset = STRIPE_BYTES as u64 - 4096;
        write_blocking(&device, offset, filled(12288, 0xab)).unwrap();
        let back = read_blocking(&device, offset - 4096, 20480).unwrap();
        assert!(back.as_slice()[..4096].iter().all(|&b| b == 0));
        assert!(back.as_slice()[4096..16384].iter().all(|&b| b == 0xab));
        assert!(back.as_slice()[16384..].iter().all(|&b| b == 0));
        assert_eq!(device.resident_bytes(), 2 * STRIPE_BYTES as u64);
    }

    #[test]
    fn refuses_operations_past_the_end_and_changes_nothing() {
        let device = RamDevice::new(STRIPE_BYTES as u64 + 8192);
        let end = device.size_bytes();
        let err = write_blocking(&device, end - 4096, filled(8192, 1)).unwrap_err();
        assert!(matches!(err, DeviceError::OutOfBounds { .. }));
        assert_eq!(device.resident_bytes(), 0);
        write_blocking(&device, end - 4096, filled(4096, 2)).unwrap();
        let back = read_blocking(&device, end - 8192, 8192).unwrap();
        assert!(back.as_slice()[..4096].iter().all(|&b| b == 0));
        assert!(back.as_slice()[4096..].iter().all(|&b| b == 2));
    }
}
