//! Little-endian field access on byte slices that never panics.
//!
//! Wire structures are read through [`Fields`], which returns `None` instead of
//! indexing out of bounds, and written through the `put_*` helpers on a mutable
//! slice that the caller sized. NVMe and NVMe/TCP are little-endian throughout.

/// Read-only view of a wire structure with bounds-checked little-endian getters.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a>(pub &'a [u8]);

impl<'a> Fields<'a> {
    /// The byte at `off`.
    pub fn u8(&self, off: usize) -> Option<u8> {
        self.0.get(off).copied()
    }

    /// The little-endian u16 at `off`.
    pub fn u16(&self, off: usize) -> Option<u16> {
        self.array::<2>(off).map(u16::from_le_bytes)
    }

    /// The little-endian u32 at `off`.
    pub fn u32(&self, off: usize) -> Option<u32> {
        self.array::<4>(off).map(u32::from_le_bytes)
    }

    /// The little-endian u64 at `off`.
    pub fn u64(&self, off: usize) -> Option<u64> {
        self.array::<8>(off).map(u64::from_le_bytes)
    }

    /// `N` bytes at `off` as an array.
    pub fn array<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let end = off.checked_add(N)?;
        self.0.get(off..end)?.try_into().ok()
    }

    /// The sub-slice `off..off+len`.
    pub fn slice(&self, off: usize, len: usize) -> Option<&'a [u8]> {
        self.0.get(off..off.checked_add(len)?)
    }
}

/// Writes `v` at `off`. Panics only on a programming error (buffer sized by us).
pub fn put_u16(buf: &mut [u8], off: usize, v: u16) {
    buf[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` at `off`. Panics only on a programming error (buffer sized by us).
pub fn put_u32(buf: &mut [u8], off: usize, v: u32) {
    buf[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `v` at `off`. Panics only on a programming error (buffer sized by us).
pub fn put_u64(buf: &mut [u8], off: usize, v: u64) {
    buf[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// Copies `s` into the `len`-byte field at `off`, padding with `pad` (spaces for
/// ASCII identifiers such as SN/MN/TRADDR, NUL for NQNs), truncating if longer.
pub fn put_str(buf: &mut [u8], off: usize, len: usize, s: &str, pad: u8) {
    let field = &mut buf[off..off + len];
    field.fill(pad);
    let n = s.len().min(len);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// Reads a NUL-terminated (or field-length) string; `None` if it is not UTF-8.
pub fn nul_terminated_str(field: &[u8]) -> Option<&str> {
    let end = field.iter().position(|b| *b == 0).unwrap_or(field.len());
    std::str::from_utf8(&field[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_bounds_reads_are_none() {
        let f = Fields(&[1, 2, 3]);
        assert_eq!(f.u16(1), Some(0x0302));
        assert_eq!(f.u16(2), None);
        assert_eq!(f.u32(usize::MAX - 1), None);
        assert_eq!(f.slice(2, usize::MAX), None);
    }

    #[test]
    fn strings_pad_and_truncate() {
        let mut buf = [0u8; 6];
        put_str(&mut buf, 1, 4, "ab", b' ');
        assert_eq!(&buf, b"\0ab  \0");
        put_str(&mut buf, 0, 3, "abcdef", 0);
        assert_eq!(&buf[..3], b"abc");
        assert_eq!(nul_terminated_str(b"nqn\0zz"), Some("nqn"));
    }
}
