//! Little-endian cursor types shared by every on-disk codec.

/// Why bytes read from disk could not be decoded. Disk bytes are untrusted: every
/// malformed input maps to one of these, never to a panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before the structure did.
    #[error("truncated: needed {needed} bytes at offset {offset}")]
    Truncated {
        /// Where the read started.
        offset: usize,
        /// How many bytes it needed.
        needed: usize,
    },
    /// The magic bytes do not match the expected structure.
    #[error("bad magic")]
    BadMagic,
    /// A format version this build does not read.
    #[error("unsupported format version {0}")]
    UnsupportedVersion(u32),
    /// The stored checksum does not match the content.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Checksum {
        /// Checksum found on disk.
        stored: u32,
        /// Checksum of the bytes read.
        computed: u32,
    },
    /// A field holds a value outside its domain.
    #[error("invalid {field}: {value}")]
    Invalid {
        /// The field's name.
        field: &'static str,
        /// The offending value.
        value: u64,
    },
    /// Bytes remain after the structure ended.
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

/// Appends little-endian fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    bytes: Vec<u8>,
}

impl Writer {
    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Writer {
        Writer {
            bytes: Vec::with_capacity(capacity),
        }
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.bytes.push(v);
    }
    /// Appends a u16.
    pub fn u16(&mut self, v: u16) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u32.
    pub fn u32(&mut self, v: u32) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a u64.
    pub fn u64(&mut self, v: u64) {
        self.bytes.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.bytes.extend_from_slice(v);
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }
    /// True when nothing was written.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }
    /// Overwrites a u32 at `at` (used to fill in a checksum or a length).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
    /// Overwrites a u16 at `at`.
    pub fn patch_u16(&mut self, at: usize, v: u16) {
        self.bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }
    /// The bytes written.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
    /// Takes the bytes.
    pub fn into_vec(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads little-endian fields from untrusted bytes; every read is bounds-checked.
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data` starting at offset 0.
    pub fn new(data: &'a [u8]) -> Reader<'a> {
        Reader { data, pos: 0 }
    }
    /// Current offset.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.data.len() - self.pos
    }
    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                offset: self.pos,
                needed: n,
            });
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads 16 bytes (a UUID).
    pub fn uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        self.array()
    }
    /// Checks that the next bytes equal `magic`.
    pub fn magic(&mut self, magic: &[u8; 8]) -> Result<(), DecodeError> {
        if self.take(8)? == magic {
            Ok(())
        } else {
            Err(DecodeError::BadMagic)
        }
    }
    /// Fails unless every byte was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

/// Verifies that the u32 at `crc_at` in `bytes` is the crc32c of `bytes` with that
/// field taken as zero.
pub(crate) fn verify_crc(bytes: &[u8], crc_at: usize) -> Result<(), DecodeError> {
    if bytes.len() < crc_at + 4 {
        return Err(DecodeError::Truncated {
            offset: crc_at,
            needed: 4,
        });
    }
    let mut stored_bytes = [0u8; 4];
    stored_bytes.copy_from_slice(&bytes[crc_at..crc_at + 4]);
    let stored = u32::from_le_bytes(stored_bytes);
    let computed = crc_with_hole(bytes, crc_at);
    if stored == computed {
        Ok(())
    } else {
        Err(DecodeError::Checksum { stored, computed })
    }
}

/// crc32c of `bytes` with the four bytes at `hole` read as zero.
pub(crate) fn crc_with_hole(bytes: &[u8], hole: usize) -> u32 {
    let crc = crc32c::crc32c(&bytes[..hole]);
    let crc = crc32c::crc32c_append(crc, &[0u8; 4]);
    crc32c::crc32c_append(crc, &bytes[hole + 4..])
}
