//! A pool device in memory, like SPDK's malloc bdev: it measures the target
//! and the engine without a disk underneath, and its contents are gone when
//! the process ends.
//!
//! All of its memory is taken and touched when it is made, in huge pages (as
//! SPDK's is), so no write pays for the kernel zeroing fresh pages and random
//! reads do not spend their time in TLB misses. Operations complete on the
//! submitting thread before `submit` returns (the [`Device`] contract allows
//! it), with each 2 MiB stripe behind its own lock so reactors on different
//! cores rarely meet.

use parking_lot::RwLock;

use super::{check_bounds, Device, IoDone, IoOp, IoOutcome};
use uring::{HugeRegion, HUGE_PAGE_BYTES};

/// Bytes of one stripe: one huge page.
const STRIPE_BYTES: usize = HUGE_PAGE_BYTES;

/// A memory-backed [`Device`] without persistence; flushes complete at once.
pub struct RamDevice {
    stripes: Box<[RwLock<HugeRegion>]>,
    size: u64,
}

impl RamDevice {
    /// A zero-filled device of `size` bytes (rounded up to whole stripes
    /// internally; operations past `size` are refused), all of it resident.
    pub fn new(size: u64) -> std::io::Result<RamDevice> {
        let count = usize::try_from(size.div_ceil(STRIPE_BYTES as u64))
            .map_err(|_| std::io::Error::from_raw_os_error(libc::ENOMEM))?;
        let mut stripes = Vec::with_capacity(count);
        for _ in 0..count {
            let mut stripe = HugeRegion::new(STRIPE_BYTES)?;
            // One write per base page takes the memory now, zeroed by the
            // kernel (a single fault when it is a huge page).
            for page in stripe.as_mut_slice().chunks_mut(4096) {
                page[0] = 0;
            }
            stripes.push(RwLock::new(stripe));
        }
        Ok(RamDevice {
            stripes: stripes.into_boxed_slice(),
            size,
        })
    }

    fn read(&self, offset: u64, out: &mut [u8]) {
        for (stripe, at, range) in pieces(offset, out.len()) {
            let target = &mut out[range];
            let bytes = self.stripes[stripe].read();
            target.copy_from_slice(&bytes.as_slice()[at..at + target.len()]);
        }
    }

    fn write(&self, offset: u64, data: &[u8]) {
        for (stripe, at, range) in pieces(offset, data.len()) {
            let source = &data[range];
            let mut bytes = self.stripes[stripe].write();
            bytes.as_mut_slice()[at..at + source.len()].copy_from_slice(source);
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
            IoOp::Write { offset, buf } | IoOp::WriteCached { offset, buf } => {
                if result.is_ok() {
                    self.write(offset, buf.as_slice());
                }
                Some(buf)
            }
            IoOp::WriteParts { offset, parts } => {
                if result.is_ok() {
                    let mut at = offset;
                    for part in parts.parts() {
                        self.write(at, part);
                        at += part.len() as u64;
                    }
                }
                None
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
        let device = RamDevice::new(4 * STRIPE_BYTES as u64).unwrap();
        let offset = STRIPE_BYTES as u64 - 4096;
        write_blocking(&device, offset, filled(12288, 0xab)).unwrap();
        let back = read_blocking(&device, offset - 4096, 20480).unwrap();
        assert!(back.as_slice()[..4096].iter().all(|&b| b == 0));
        assert!(back.as_slice()[4096..16384].iter().all(|&b| b == 0xab));
        assert!(back.as_slice()[16384..].iter().all(|&b| b == 0));
    }

    #[test]
    fn refuses_operations_past_the_end_and_changes_nothing() {
        let device = RamDevice::new(STRIPE_BYTES as u64 + 8192).unwrap();
        let end = device.size_bytes();
        let err = write_blocking(&device, end - 4096, filled(8192, 1)).unwrap_err();
        assert!(matches!(err, DeviceError::OutOfBounds { .. }));
        let back = read_blocking(&device, end - 4096, 4096).unwrap();
        assert!(back.as_slice().iter().all(|&b| b == 0));
        write_blocking(&device, end - 4096, filled(4096, 2)).unwrap();
        let back = read_blocking(&device, end - 8192, 8192).unwrap();
        assert!(back.as_slice()[..4096].iter().all(|&b| b == 0));
        assert!(back.as_slice()[4096..].iter().all(|&b| b == 2));
    }
}
