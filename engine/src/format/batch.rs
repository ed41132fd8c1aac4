//! Log batches: one header (one or more blocks) describing every record of the
//! batch, followed by the data blocks of its writes. A batch is the unit of device
//! writes and of ordering: batches carry consecutive sequence numbers.

use super::codec::{crc_with_hole, verify_crc, DecodeError, Reader, Writer};
use crate::units::BLOCK_SIZE;

const MAGIC: &[u8; 8] = b"KEELBTCH";
/// The batch version this build writes.
const VERSION: u16 = 7;
/// The previous batch version, still read: it lacks the batch flags (its open
/// batches' images all read as final).
const VERSION_6: u16 = 6;
/// An older batch version, still read: it also lacks the one-block write entry.
const VERSION_5: u16 = 5;
/// An older batch version, still read: it also lacks the log head.
const VERSION_4: u16 = 4;
/// An older batch version, still read: it also lacks the identity checksum.
const VERSION_3: u16 = 3;
/// The oldest batch version still read: it also lacks `completed_seq`.
const VERSION_2: u16 = 2;
/// Bytes of the fixed part of a batch header, before the entries.
pub const BATCH_HEADER_FIXED_LEN: usize = 88;
/// Bytes of the fixed part of a version 4 header.
const VERSION_4_FIXED_LEN: usize = 84;
/// Bytes of the fixed part of a version 3 header.
const VERSION_3_FIXED_LEN: usize = 80;
/// Bytes of the fixed part of a version 2 header.
const VERSION_2_FIXED_LEN: usize = 64;
const CRC_AT: usize = 60;
const LEN_AT: usize = 56;
/// Where a version 4 or 5 header keeps the checksum of its first 80 bytes:
/// the identity, lengths and seqs that share the header's first sector.
const IDENTITY_CRC_AT: usize = 80;
/// The log head a batch was appended to: fresh writes.
pub const HEAD_FOREGROUND: u8 = 0;
/// The log head a batch was appended to: the garbage collector's copies.
pub const HEAD_COLLECTOR: u8 = 1;
/// Batch flag (byte 85, version 7): this header is an image of an open batch
/// that could still gain entries; its final image lacks it.
const BATCH_FLAG_OPEN: u8 = 1;
/// Largest header, in blocks, a batch may have.
pub const HEADER_BLOCKS_MAX: u16 = 16;
/// Longest volume name stored in a record.
pub const NAME_LEN_MAX: usize = 1024;

/// Gives `bytes` a valid magic, version and (where its length field fits the
/// input) checksum, so a fuzzer's input reaches the entries behind them.
pub(crate) fn seal_for_fuzzing(bytes: &mut [u8]) {
    if bytes.len() < BATCH_HEADER_FIXED_LEN {
        return;
    }
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..10].copy_from_slice(&VERSION.to_le_bytes());
    let mut len = [0u8; 4];
    len.copy_from_slice(&bytes[LEN_AT..LEN_AT + 4]);
    let len = u32::from_le_bytes(len) as usize;
    if (BATCH_HEADER_FIXED_LEN..=bytes.len()).contains(&len) {
        let identity_crc = identity_crc(bytes);
        bytes[IDENTITY_CRC_AT..IDENTITY_CRC_AT + 4].copy_from_slice(&identity_crc.to_le_bytes());
        let crc = crc_with_hole(&bytes[..len], CRC_AT);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The checksum of a version 4 header's first [`IDENTITY_CRC_AT`] bytes, with
/// the header checksum's field read as zero (that checksum is computed last and
/// covers this one). `bytes` holds at least that many.
fn identity_crc(bytes: &[u8]) -> u32 {
    crc_with_hole(&bytes[..IDENTITY_CRC_AT], CRC_AT)
}

const KIND_WRITE: u8 = 1;
const KIND_TRIM: u8 = 2;
const KIND_CREATE: u8 = 3;
const KIND_DELETE: u8 = 4;
const KIND_RESIZE: u8 = 5;
const KIND_SNAPSHOT: u8 = 6;
const KIND_CLONE: u8 = 7;
const KIND_REVERT: u8 = 8;
const KIND_RELOCATE: u8 = 9;
const KIND_SET_FLAGS: u8 = 10;
const KIND_WRITE_PACKED: u8 = 11;
const KIND_RELOCATE_UNIT: u8 = 12;
/// A one-block write in a compact form (batch version 6): 13 one-block
/// writes would fill an open batch's one-sector header, 16 do in this form.
const KIND_WRITE_BLOCK: u8 = 13;

/// Body bytes of a [`KIND_WRITE_BLOCK`] entry: volume, lba, data offset (u16), crc.
const WRITE_BLOCK_BODY_LEN: usize = 8 + 8 + 2 + 4;

/// Whether a header of `version` carries the identity crc (versions 4 and up).
fn has_identity_crc(version: u16) -> bool {
    matches!(version, VERSION_4 | VERSION_5 | VERSION_6 | VERSION)
}

/// Whether a header of `version` names its log head (versions 5 and up).
fn has_head(version: u16) -> bool {
    matches!(version, VERSION_5 | VERSION_6 | VERSION)
}

/// Volume flag: data written to the volume is compressed.
pub const VOLUME_FLAG_COMPRESS: u32 = 1;
/// Volume flag: a thick clone is still filling the volume; it is not complete.
pub const VOLUME_FLAG_INCOMPLETE: u32 = 2;

/// One record of a batch. Every state change of the pool is one of these.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Data for `crcs.len()` blocks starting at `lba`, stored at `data_offset`
    /// blocks into the batch's data area; one crc32c per block.
    Write {
        /// Volume written.
        volume: u64,
        /// First 4 KiB block written.
        lba: u64,
        /// Block offset of the data within the batch's data area.
        data_offset: u32,
        /// crc32c of each data block.
        crcs: Vec<u32>,
    },
    /// Blocks that now read as zeros (deallocate and write-zeroes).
    Trim {
        /// Volume trimmed.
        volume: u64,
        /// First 4 KiB block.
        lba: u64,
        /// Block count.
        blocks: u64,
    },
    /// A volume came into existence, empty.
    CreateVolume {
        /// Its id.
        volume: u64,
        /// Size in bytes.
        size_bytes: u64,
        /// Logical block size in bytes (512 or 4096).
        sector_bytes: u32,
        /// `VOLUME_FLAG_*` bits.
        flags: u32,
        /// Its unique name.
        name: String,
    },
    /// A read-only, point-in-time copy of `source` as it is after every earlier
    /// record: it shares all of the source's blocks.
    CreateSnapshot {
        /// The snapshot's id.
        volume: u64,
        /// The volume snapshotted.
        source: u64,
        /// Its unique name.
        name: String,
    },
    /// A writable thin clone of snapshot `source`, sharing all of its blocks.
    CreateClone {
        /// The clone's id.
        volume: u64,
        /// The snapshot cloned.
        source: u64,
        /// Size in bytes (at least the snapshot's).
        size_bytes: u64,
        /// Logical block size in bytes (512 or 4096).
        sector_bytes: u32,
        /// `VOLUME_FLAG_*` bits.
        flags: u32,
        /// Its unique name.
        name: String,
    },
    /// `volume`'s content becomes that of its snapshot `snapshot`.
    Revert {
        /// The volume reverted.
        volume: u64,
        /// The snapshot whose content it takes.
        snapshot: u64,
    },
    /// Garbage collection moved one block: every map of `lineage` that still maps
    /// `lba` to `old` maps it to block `data_offset` of this batch instead.
    Relocate {
        /// Lineage (the id of the volume that started it) of the maps to update.
        lineage: u64,
        /// Volume block.
        lba: u64,
        /// Location the data moved from.
        old: u64,
        /// Block offset of the data within the batch's data area.
        data_offset: u32,
        /// crc32c of the block, unchanged by the move.
        crc: u32,
    },
    /// Data for `crcs.len()` blocks starting at `lba`, stored as consecutive
    /// units: each unit holds `logical` blocks in `stored` data blocks, compressed
    /// when `stored < logical` (a unit header, then lz4 bytes) and raw otherwise.
    WritePacked {
        /// Volume written.
        volume: u64,
        /// First 4 KiB block written.
        lba: u64,
        /// Block offset of the first unit within the batch's data area.
        data_offset: u32,
        /// `(logical, stored)` block counts of each unit, in order.
        units: Vec<(u8, u8)>,
        /// crc32c of each logical block's uncompressed content.
        crcs: Vec<u32>,
        /// crc32c of each stored data block (what replay verifies).
        stored_crcs: Vec<u32>,
    },
    /// Garbage collection moved one compressed unit: every map of `lineage` that
    /// still maps a member's `lba` into the unit at `old` maps it to the copy at
    /// `data_offset` instead.
    RelocateUnit {
        /// Lineage of the maps to update.
        lineage: u64,
        /// First block of the unit before the move.
        old: u64,
        /// Block offset of the copy within the batch's data area.
        data_offset: u32,
        /// crc32c of each stored block of the unit.
        stored_crcs: Vec<u32>,
        /// `(lba, index within the unit, crc32c of the block's content)` of every
        /// volume block found in the unit.
        members: Vec<(u64, u8, u32)>,
    },
    /// A volume's flags changed.
    SetFlags {
        /// Its id.
        volume: u64,
        /// New `VOLUME_FLAG_*` bits.
        flags: u32,
    },
    /// A volume and all its data are gone.
    DeleteVolume {
        /// Its id.
        volume: u64,
    },
    /// A volume's size changed.
    ResizeVolume {
        /// Its id.
        volume: u64,
        /// New size in bytes.
        size_bytes: u64,
    },
}

/// One unit of a [`Entry::WritePacked`]: `logical` volume blocks from `lba`
/// stored in `stored` data blocks, compressed when `stored < logical`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedUnit<'a> {
    /// Its first volume block.
    pub lba: u64,
    /// Volume blocks it holds.
    pub logical: u8,
    /// Data blocks it takes.
    pub stored: u8,
    /// Its first data block, counted from the entry's `data_offset`.
    pub stored_at: u32,
    /// crc32c of each of its volume blocks' content (fewer only in a
    /// malformed entry).
    pub crcs: &'a [u32],
}

impl Entry {
    /// Encoded length in bytes.
    pub fn encoded_len(&self) -> usize {
        4 + match self {
            Entry::Write { .. } if self.is_write_block() => WRITE_BLOCK_BODY_LEN,
            Entry::Write { crcs, .. } => 8 + 8 + 4 + 4 + 4 * crcs.len(),
            Entry::Trim { .. } => 24,
            Entry::CreateVolume { name, .. } => 8 + 8 + 4 + 4 + 2 + name.len(),
            Entry::DeleteVolume { .. } => 8,
            Entry::ResizeVolume { .. } => 16,
            Entry::CreateSnapshot { name, .. } => 8 + 8 + 2 + name.len(),
            Entry::CreateClone { name, .. } => 8 + 8 + 8 + 4 + 4 + 2 + name.len(),
            Entry::Revert { .. } => 16,
            Entry::Relocate { .. } => 8 + 8 + 8 + 4 + 4,
            Entry::SetFlags { .. } => 12,
            Entry::WritePacked {
                units,
                crcs,
                stored_crcs,
                ..
            } => 8 + 8 + 4 + 2 + 2 * units.len() + 2 + 4 * crcs.len() + 2 + 4 * stored_crcs.len(),
            Entry::RelocateUnit {
                stored_crcs,
                members,
                ..
            } => 8 + 8 + 4 + 2 + 4 * stored_crcs.len() + 2 + 13 * members.len(),
        }
    }

    /// Data blocks the entry owns in its batch's data area.
    pub fn data_blocks(&self) -> u32 {
        match self {
            Entry::Write { crcs, .. } => crcs.len() as u32,
            Entry::Relocate { .. } => 1,
            Entry::WritePacked { stored_crcs, .. } | Entry::RelocateUnit { stored_crcs, .. } => {
                stored_crcs.len() as u32
            }
            _ => 0,
        }
    }

    /// The units of a [`Entry::WritePacked`], in order (none for any other
    /// entry): where each starts and the volume blocks it holds.
    pub fn packed_units(&self) -> impl Iterator<Item = PackedUnit<'_>> + '_ {
        let (lba, units, crcs): (u64, &[(u8, u8)], &[u32]) = match self {
            Entry::WritePacked {
                lba, units, crcs, ..
            } => (*lba, units, crcs),
            _ => (0, &[], &[]),
        };
        let (mut next_lba, mut stored_at, mut crc_at) = (lba, 0u32, 0usize);
        units.iter().map(move |&(logical, stored)| {
            let end = (crc_at + usize::from(logical)).min(crcs.len());
            let unit = PackedUnit {
                lba: next_lba,
                logical,
                stored,
                stored_at,
                crcs: crcs.get(crc_at.min(end)..end).unwrap_or_default(),
            };
            next_lba += u64::from(logical);
            stored_at += u32::from(stored);
            crc_at = end;
            unit
        })
    }

    /// Places the entry's data at `offset` blocks into the batch's data area.
    pub fn set_data_offset(&mut self, offset: u32) {
        if let Entry::Write { data_offset, .. }
        | Entry::Relocate { data_offset, .. }
        | Entry::WritePacked { data_offset, .. }
        | Entry::RelocateUnit { data_offset, .. } = self
        {
            *data_offset = offset;
        }
    }

    fn encode(&self, w: &mut Writer) {
        let len = self.encoded_len();
        assert!(len <= u16::MAX as usize, "entry of {len} bytes");
        let kind = match self {
            Entry::Write { .. } if self.is_write_block() => KIND_WRITE_BLOCK,
            Entry::Write { .. } => KIND_WRITE,
            Entry::Trim { .. } => KIND_TRIM,
            Entry::CreateVolume { .. } => KIND_CREATE,
            Entry::DeleteVolume { .. } => KIND_DELETE,
            Entry::ResizeVolume { .. } => KIND_RESIZE,
            Entry::CreateSnapshot { .. } => KIND_SNAPSHOT,
            Entry::CreateClone { .. } => KIND_CLONE,
            Entry::Revert { .. } => KIND_REVERT,
            Entry::Relocate { .. } => KIND_RELOCATE,
            Entry::SetFlags { .. } => KIND_SET_FLAGS,
            Entry::WritePacked { .. } => KIND_WRITE_PACKED,
            Entry::RelocateUnit { .. } => KIND_RELOCATE_UNIT,
        };
        w.u8(kind);
        w.u8(0);
        w.u16(len as u16);
        match self {
            Entry::Write {
                volume,
                lba,
                data_offset,
                crcs,
            } if kind == KIND_WRITE_BLOCK => {
                w.u64(*volume);
                w.u64(*lba);
                w.u16(*data_offset as u16);
                w.u32(crcs[0]);
            }
            Entry::Write {
                volume,
                lba,
                data_offset,
                crcs,
            } => {
                w.u64(*volume);
                w.u64(*lba);
                w.u32(crcs.len() as u32);
                w.u32(*data_offset);
                for crc in crcs {
                    w.u32(*crc);
                }
            }
            Entry::Trim {
                volume,
                lba,
                blocks,
            } => {
                w.u64(*volume);
                w.u64(*lba);
                w.u64(*blocks);
            }
            Entry::CreateVolume {
                volume,
                size_bytes,
                sector_bytes,
                flags,
                name,
            } => {
                w.u64(*volume);
                w.u64(*size_bytes);
                w.u32(*sector_bytes);
                w.u32(*flags);
                encode_name(w, name);
            }
            Entry::DeleteVolume { volume } => w.u64(*volume),
            Entry::ResizeVolume { volume, size_bytes } => {
                w.u64(*volume);
                w.u64(*size_bytes);
            }
            Entry::CreateSnapshot {
                volume,
                source,
                name,
            } => {
                w.u64(*volume);
                w.u64(*source);
                encode_name(w, name);
            }
            Entry::CreateClone {
                volume,
                source,
                size_bytes,
                sector_bytes,
                flags,
                name,
            } => {
                w.u64(*volume);
                w.u64(*source);
                w.u64(*size_bytes);
                w.u32(*sector_bytes);
                w.u32(*flags);
                encode_name(w, name);
            }
            Entry::Revert { volume, snapshot } => {
                w.u64(*volume);
                w.u64(*snapshot);
            }
            Entry::Relocate {
                lineage,
                lba,
                old,
                data_offset,
                crc,
            } => {
                w.u64(*lineage);
                w.u64(*lba);
                w.u64(*old);
                w.u32(*data_offset);
                w.u32(*crc);
            }
            Entry::SetFlags { volume, flags } => {
                w.u64(*volume);
                w.u32(*flags);
            }
            Entry::WritePacked {
                volume,
                lba,
                data_offset,
                units,
                crcs,
                stored_crcs,
            } => {
                w.u64(*volume);
                w.u64(*lba);
                w.u32(*data_offset);
                w.u16(units.len() as u16);
                for (logical, stored) in units {
                    w.u8(*logical);
                    w.u8(*stored);
                }
                w.u16(crcs.len() as u16);
                crcs.iter().for_each(|c| w.u32(*c));
                w.u16(stored_crcs.len() as u16);
                stored_crcs.iter().for_each(|c| w.u32(*c));
            }
            Entry::RelocateUnit {
                lineage,
                old,
                data_offset,
                stored_crcs,
                members,
            } => {
                w.u64(*lineage);
                w.u64(*old);
                w.u32(*data_offset);
                w.u16(stored_crcs.len() as u16);
                stored_crcs.iter().for_each(|c| w.u32(*c));
                w.u16(members.len() as u16);
                for (lba, index, crc) in members {
                    w.u64(*lba);
                    w.u8(*index);
                    w.u32(*crc);
                }
            }
        }
    }

    /// Whether it is encoded as a one-block write ([`KIND_WRITE_BLOCK`]).
    fn is_write_block(&self) -> bool {
        matches!(self, Entry::Write { crcs, data_offset, .. }
            if crcs.len() == 1 && *data_offset <= u32::from(u16::MAX))
    }

    fn decode(r: &mut Reader<'_>, data_blocks: u32, version: u16) -> Result<Entry, DecodeError> {
        let kind = r.u8()?;
        let _flags = r.u8()?;
        let len = r.u16()? as usize;
        let body = r.take(len.checked_sub(4).ok_or(DecodeError::Invalid {
            field: "entry_len",
            value: len as u64,
        })?)?;
        let mut b = Reader::new(body);
        let entry = match kind {
            KIND_WRITE_BLOCK if matches!(version, VERSION_6 | VERSION) => {
                let volume = b.u64()?;
                let lba = b.u64()?;
                let data_offset = u32::from(b.u16()?);
                if data_offset >= data_blocks {
                    return Err(DecodeError::Invalid {
                        field: "write_extent",
                        value: data_offset.into(),
                    });
                }
                Entry::Write {
                    volume,
                    lba,
                    data_offset,
                    crcs: vec![b.u32()?],
                }
            }
            KIND_WRITE => {
                let volume = b.u64()?;
                let lba = b.u64()?;
                let blocks = b.u32()?;
                let data_offset = b.u32()?;
                let end = u64::from(data_offset) + u64::from(blocks);
                if blocks == 0 || end > u64::from(data_blocks) {
                    return Err(DecodeError::Invalid {
                        field: "write_extent",
                        value: end,
                    });
                }
                if b.remaining() != 4 * blocks as usize {
                    return Err(DecodeError::Invalid {
                        field: "write_crcs",
                        value: blocks.into(),
                    });
                }
                let mut crcs = Vec::with_capacity(blocks as usize);
                for _ in 0..blocks {
                    crcs.push(b.u32()?);
                }
                Entry::Write {
                    volume,
                    lba,
                    data_offset,
                    crcs,
                }
            }
            KIND_TRIM => Entry::Trim {
                volume: b.u64()?,
                lba: b.u64()?,
                blocks: b.u64()?,
            },
            KIND_CREATE => Entry::CreateVolume {
                volume: b.u64()?,
                size_bytes: b.u64()?,
                sector_bytes: b.u32()?,
                flags: b.u32()?,
                name: decode_name(&mut b)?,
            },
            KIND_DELETE => Entry::DeleteVolume { volume: b.u64()? },
            KIND_RESIZE => Entry::ResizeVolume {
                volume: b.u64()?,
                size_bytes: b.u64()?,
            },
            KIND_SNAPSHOT => Entry::CreateSnapshot {
                volume: b.u64()?,
                source: b.u64()?,
                name: decode_name(&mut b)?,
            },
            KIND_CLONE => Entry::CreateClone {
                volume: b.u64()?,
                source: b.u64()?,
                size_bytes: b.u64()?,
                sector_bytes: b.u32()?,
                flags: b.u32()?,
                name: decode_name(&mut b)?,
            },
            KIND_REVERT => Entry::Revert {
                volume: b.u64()?,
                snapshot: b.u64()?,
            },
            KIND_RELOCATE => {
                let entry = Entry::Relocate {
                    lineage: b.u64()?,
                    lba: b.u64()?,
                    old: b.u64()?,
                    data_offset: b.u32()?,
                    crc: b.u32()?,
                };
                if let Entry::Relocate { data_offset, .. } = entry {
                    if data_offset >= data_blocks {
                        return Err(DecodeError::Invalid {
                            field: "relocate_offset",
                            value: data_offset.into(),
                        });
                    }
                }
                entry
            }
            KIND_SET_FLAGS => Entry::SetFlags {
                volume: b.u64()?,
                flags: b.u32()?,
            },
            KIND_WRITE_PACKED => decode_write_packed(&mut b, data_blocks)?,
            KIND_RELOCATE_UNIT => decode_relocate_unit(&mut b, data_blocks)?,
            other => {
                return Err(DecodeError::Invalid {
                    field: "entry_kind",
                    value: other.into(),
                })
            }
        };
        b.finish()?;
        Ok(entry)
    }
}

fn decode_crcs(r: &mut Reader<'_>) -> Result<Vec<u32>, DecodeError> {
    let count = r.u16()? as usize;
    let mut crcs = Vec::with_capacity(count.min(r.remaining() / 4));
    for _ in 0..count {
        crcs.push(r.u32()?);
    }
    Ok(crcs)
}

/// Rejects a data extent outside the batch's data area.
fn check_extent(data_offset: u32, blocks: usize, data_blocks: u32) -> Result<(), DecodeError> {
    let end = u64::from(data_offset) + blocks as u64;
    if blocks == 0 || end > u64::from(data_blocks) {
        return Err(DecodeError::Invalid {
            field: "data_extent",
            value: end,
        });
    }
    Ok(())
}

fn decode_write_packed(b: &mut Reader<'_>, data_blocks: u32) -> Result<Entry, DecodeError> {
    let volume = b.u64()?;
    let lba = b.u64()?;
    let data_offset = b.u32()?;
    let unit_count = b.u16()? as usize;
    let mut units = Vec::with_capacity(unit_count.min(b.remaining() / 2));
    for _ in 0..unit_count {
        let (logical, stored) = (b.u8()?, b.u8()?);
        if logical == 0 || stored == 0 || stored > logical || logical > 15 {
            let value = u64::from(logical) << 8 | u64::from(stored);
            return Err(DecodeError::Invalid {
                field: "packed_unit",
                value,
            });
        }
        units.push((logical, stored));
    }
    let crcs = decode_crcs(b)?;
    let stored_crcs = decode_crcs(b)?;
    let logical: usize = units.iter().map(|u| usize::from(u.0)).sum();
    let stored: usize = units.iter().map(|u| usize::from(u.1)).sum();
    if logical != crcs.len() || stored != stored_crcs.len() {
        return Err(DecodeError::Invalid {
            field: "packed_counts",
            value: logical as u64,
        });
    }
    check_extent(data_offset, stored, data_blocks)?;
    Ok(Entry::WritePacked {
        volume,
        lba,
        data_offset,
        units,
        crcs,
        stored_crcs,
    })
}

fn decode_relocate_unit(b: &mut Reader<'_>, data_blocks: u32) -> Result<Entry, DecodeError> {
    let lineage = b.u64()?;
    let old = b.u64()?;
    let data_offset = b.u32()?;
    let stored_crcs = decode_crcs(b)?;
    if stored_crcs.len() > 15 {
        return Err(DecodeError::Invalid {
            field: "unit_blocks",
            value: stored_crcs.len() as u64,
        });
    }
    check_extent(data_offset, stored_crcs.len(), data_blocks)?;
    let count = b.u16()? as usize;
    let mut members = Vec::with_capacity(count.min(b.remaining() / 13));
    for _ in 0..count {
        members.push((b.u64()?, b.u8()?, b.u32()?));
    }
    Ok(Entry::RelocateUnit {
        lineage,
        old,
        data_offset,
        stored_crcs,
        members,
    })
}

fn encode_name(w: &mut Writer, name: &str) {
    assert!(
        name.len() <= NAME_LEN_MAX,
        "names are validated before they reach the log"
    );
    w.u16(name.len() as u16);
    w.bytes(name.as_bytes());
}

fn decode_name(r: &mut Reader<'_>) -> Result<String, DecodeError> {
    let len = r.u16()? as usize;
    let name = std::str::from_utf8(r.take(len)?).map_err(|_| DecodeError::Invalid {
        field: "volume_name",
        value: len as u64,
    })?;
    Ok(name.to_owned())
}

/// A decoded batch header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchHeader {
    /// Position in the pool's log; consecutive batches have consecutive numbers.
    pub seq: u64,
    /// The open epoch of the pool that wrote the batch; a replay accepts only
    /// batches of the epoch its checkpoint root names, so stale batches left by an
    /// earlier crash can never be mistaken for new ones with the same `seq`.
    pub epoch: u64,
    /// The pool the batch belongs to.
    pub pool_uuid: [u8; 16],
    /// Segment the batch was written to (guards against misdirected writes).
    pub segment: u32,
    /// Header length in blocks.
    pub header_blocks: u16,
    /// Data blocks following the header.
    pub data_blocks: u32,
    /// Every batch of this epoch numbered up to this one had completed its
    /// device write (and may have been acknowledged) when this batch was formed:
    /// what lets replay tell a damaged batch in the middle of the log from the
    /// torn tail a crash leaves. 0 in batches of version 2, which lack it.
    pub completed_seq: u64,
    /// Every batch of this epoch numbered up to this one was covered by a
    /// completed device flush when this batch was formed: power loss cannot
    /// have taken it, only damage. 0 in batches of version 2.
    pub durable_seq: u64,
    /// The log head it was appended to ([`HEAD_FOREGROUND`] or
    /// [`HEAD_COLLECTOR`]): where replay follows the log after it.
    /// [`HEAD_FOREGROUND`] in batches before version 5, which had one head.
    pub head: u8,
    /// An image of an open batch that could still gain entries (version 7):
    /// replay ends the log after it, since a later batch may hold records
    /// acknowledged after entries its lost final image named. False in a
    /// batch written whole, in an open batch's final image, and before
    /// version 7.
    pub open: bool,
    /// The records.
    pub entries: Vec<Entry>,
}

impl BatchHeader {
    /// Total blocks the batch occupies on disk.
    pub fn total_blocks(&self) -> u32 {
        u32::from(self.header_blocks) + self.data_blocks
    }

    /// Encodes into `header_blocks` zero-padded blocks.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(usize::from(self.header_blocks) * BLOCK_SIZE);
        w.bytes(MAGIC);
        w.u16(VERSION);
        w.u16(self.header_blocks);
        w.u32(self.entries.len() as u32);
        w.u64(self.seq);
        w.u64(self.epoch);
        w.bytes(&self.pool_uuid);
        w.u32(self.segment);
        w.u32(self.data_blocks);
        w.u32(0); // header length, patched below
        w.u32(0); // crc, patched below
        w.u64(self.completed_seq);
        w.u64(self.durable_seq);
        w.u32(0); // identity crc, patched below
        w.u8(self.head);
        w.u8(if self.open { BATCH_FLAG_OPEN } else { 0 });
        w.bytes(&[0; 2]);
        debug_assert_eq!(w.len(), BATCH_HEADER_FIXED_LEN);
        for entry in &self.entries {
            entry.encode(&mut w);
        }
        let len = w.len();
        assert!(
            len <= usize::from(self.header_blocks) * BLOCK_SIZE,
            "header overflows its blocks"
        );
        w.patch_u32(LEN_AT, len as u32);
        let identity_crc = identity_crc(w.as_slice());
        w.patch_u32(IDENTITY_CRC_AT, identity_crc);
        let crc = crc_with_hole(w.as_slice(), CRC_AT);
        w.patch_u32(CRC_AT, crc);
        let mut out = w.into_vec();
        out.resize(usize::from(self.header_blocks) * BLOCK_SIZE, 0);
        out
    }

    /// Reads just the header length in blocks from a batch's first block, after
    /// checking its magic, so the caller knows how much more to read.
    pub fn peek_header_blocks(first_block: &[u8]) -> Result<u16, DecodeError> {
        let mut r = Reader::new(first_block);
        r.magic(MAGIC)?;
        let version = r.u16()?;
        if ![
            VERSION, VERSION_6, VERSION_5, VERSION_4, VERSION_3, VERSION_2,
        ]
        .contains(&version)
        {
            return Err(DecodeError::UnsupportedVersion(version.into()));
        }
        let blocks = r.u16()?;
        if blocks == 0 || blocks > HEADER_BLOCKS_MAX {
            return Err(DecodeError::Invalid {
                field: "header_blocks",
                value: blocks.into(),
            });
        }
        Ok(blocks)
    }

    /// Reads the identity fields of a header from its first block without
    /// verifying its checksum or its magic, version and header length: replay
    /// uses it to tell a damaged header of the batch it expects from bytes
    /// that were never that batch (the pool UUID, seq, epoch and segment
    /// decide that), so damage to the magic cannot pass for the log's end.
    pub fn peek_identity(first_block: &[u8]) -> Result<UnverifiedIdentity, DecodeError> {
        let prefix_intact = Self::peek_header_blocks(first_block).is_ok();
        let mut r = Reader::new(first_block);
        r.take(8)?;
        let version = r.u16()?;
        let identity_crc_intact = prefix_intact
            && has_identity_crc(version)
            && first_block.len() >= BATCH_HEADER_FIXED_LEN
            && first_block[IDENTITY_CRC_AT..IDENTITY_CRC_AT + 4]
                == identity_crc(first_block).to_le_bytes();
        r.take(6)?;
        let seq = r.u64()?;
        let epoch = r.u64()?;
        let pool_uuid = r.uuid()?;
        let segment = r.u32()?;
        r.take(4)?;
        let used_len = r.u32()? as usize;
        Ok(UnverifiedIdentity {
            seq,
            epoch,
            pool_uuid,
            segment,
            used_len,
            prefix_intact,
            legacy: prefix_intact && !has_identity_crc(version),
            identity_crc_intact,
        })
    }

    /// Decodes the header at the start of `bytes` (up to [`HEADER_BLOCKS_MAX`]
    /// blocks) after repairing one flipped bit, in the checksummed bytes or in
    /// the length field that says which bytes those are; `None` if no single
    /// bit makes it decode. Only replay's error path calls it.
    pub fn decode_repairing_one_bit(bytes: &[u8]) -> Option<BatchHeader> {
        let stored_len = u32::from_le_bytes(bytes.get(LEN_AT..LEN_AT + 4)?.try_into().ok()?);
        let mut copy = bytes.to_vec();
        // The stored length first, then each length one bit away from it.
        for flip in std::iter::once(0).chain((0..32).map(|bit| 1u32 << bit)) {
            let len = (stored_len ^ flip) as usize;
            if len < VERSION_2_FIXED_LEN || len > bytes.len() {
                continue;
            }
            copy.copy_from_slice(bytes);
            copy[LEN_AT..LEN_AT + 4].copy_from_slice(&(len as u32).to_le_bytes());
            if flip == 0 && !super::repair_one_bit(&mut copy[..len], CRC_AT) {
                continue;
            }
            if let Ok(header) = BatchHeader::decode(&copy) {
                return Some(header);
            }
        }
        None
    }

    /// Decodes a whole header (all its blocks), verifying its checksum.
    pub fn decode(bytes: &[u8]) -> Result<BatchHeader, DecodeError> {
        let header_blocks = Self::peek_header_blocks(bytes)?;
        if bytes.len() < usize::from(header_blocks) * BLOCK_SIZE {
            return Err(DecodeError::Truncated {
                offset: 0,
                needed: usize::from(header_blocks) * BLOCK_SIZE,
            });
        }
        let mut r = Reader::new(bytes);
        r.take(8)?;
        let version = r.u16()?;
        let fixed_len = match version {
            VERSION_2 => VERSION_2_FIXED_LEN,
            VERSION_3 => VERSION_3_FIXED_LEN,
            VERSION_4 => VERSION_4_FIXED_LEN,
            _ => BATCH_HEADER_FIXED_LEN,
        };
        r.take(2)?;
        let entry_count = r.u32()?;
        let seq = r.u64()?;
        let epoch = r.u64()?;
        let pool_uuid = r.uuid()?;
        let segment = r.u32()?;
        let data_blocks = r.u32()?;
        let len = r.u32()? as usize;
        if len < fixed_len || len > usize::from(header_blocks) * BLOCK_SIZE {
            return Err(DecodeError::Invalid {
                field: "header_len",
                value: len as u64,
            });
        }
        let _crc = r.u32()?;
        verify_crc(&bytes[..len], CRC_AT)?;
        let (completed_seq, durable_seq) = if version == VERSION_2 {
            (0, 0)
        } else {
            (r.u64()?, r.u64()?)
        };
        if has_identity_crc(version) {
            let stored = r.u32()?;
            let computed = identity_crc(bytes);
            if stored != computed {
                return Err(DecodeError::Checksum { stored, computed });
            }
        }
        let (head, open) = if has_head(version) {
            let head = r.u8()?;
            let flags = r.u8()?;
            let reserved = r.take(2)?;
            if head > HEAD_COLLECTOR || reserved != [0; 2] {
                return Err(DecodeError::Invalid {
                    field: "head",
                    value: head.into(),
                });
            }
            let known = if version == VERSION {
                BATCH_FLAG_OPEN
            } else {
                0
            };
            if flags & !known != 0 {
                return Err(DecodeError::Invalid {
                    field: "flags",
                    value: flags.into(),
                });
            }
            (head, flags & BATCH_FLAG_OPEN != 0)
        } else {
            (HEAD_FOREGROUND, false)
        };
        let mut entries_reader = Reader::new(&bytes[fixed_len..len]);
        // Each entry takes at least 4 bytes, which bounds the allocation.
        let mut entries = Vec::with_capacity((entry_count as usize).min(len / 4));
        for _ in 0..entry_count {
            entries.push(Entry::decode(&mut entries_reader, data_blocks, version)?);
        }
        entries_reader.finish()?;
        Ok(BatchHeader {
            seq,
            epoch,
            pool_uuid,
            segment,
            header_blocks,
            data_blocks,
            completed_seq,
            durable_seq,
            head,
            open,
            entries,
        })
    }
}

/// A header's identity as stored, not yet checked against its checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnverifiedIdentity {
    /// Sequence number.
    pub seq: u64,
    /// Epoch.
    pub epoch: u64,
    /// Pool uuid.
    pub pool_uuid: [u8; 16],
    /// Segment the batch claims to be in.
    pub segment: u32,
    /// Used header length in bytes.
    pub used_len: usize,
    /// Whether the magic, version and header length decode. They share the
    /// first sector with the identity fields, so a tear cannot leave the
    /// identity new and these old: with the identity intact, a bad prefix is
    /// damage.
    pub prefix_intact: bool,
    /// Whether the prefix decodes as a version older than this build's
    /// (2 or 3), which has no identity checksum.
    pub legacy: bool,
    /// Whether this is a version 4 header whose first [`IDENTITY_CRC_AT`]
    /// bytes match their own checksum: the first sector is exactly as some
    /// batch wrote it, so the identity in it is that batch's. A crash tears
    /// whole sectors only, so a version 4 first sector failing this is damage.
    pub identity_crc_intact: bool,
}

/// Plans a batch: how many header blocks its entries need.
#[derive(Default)]
pub struct BatchBuilder {
    header_bytes: usize,
    data_blocks: u32,
    entries: usize,
}

impl BatchBuilder {
    /// An empty plan.
    pub fn new() -> BatchBuilder {
        BatchBuilder {
            header_bytes: BATCH_HEADER_FIXED_LEN,
            data_blocks: 0,
            entries: 0,
        }
    }
    /// Whether `entry` with `data_blocks` more data blocks still fits the limits.
    pub fn fits(&self, entry_len: usize, data_blocks: u32, data_blocks_max: u32) -> bool {
        let header = self.header_bytes + entry_len;
        header <= usize::from(HEADER_BLOCKS_MAX) * BLOCK_SIZE
            && (self.entries == 0 || self.data_blocks + data_blocks <= data_blocks_max)
    }
    /// Adds an entry to the plan.
    pub fn add(&mut self, entry_len: usize, data_blocks: u32) {
        self.header_bytes += entry_len;
        self.data_blocks += data_blocks;
        self.entries += 1;
    }
    /// Header bytes the planned entries need.
    pub fn header_bytes(&self) -> usize {
        self.header_bytes
    }
    /// Header blocks the planned entries need.
    pub fn header_blocks(&self) -> u16 {
        self.header_bytes.div_ceil(BLOCK_SIZE) as u16
    }
    /// Data blocks planned so far.
    pub fn data_blocks(&self) -> u32 {
        self.data_blocks
    }
    /// Entries planned so far.
    pub fn entry_count(&self) -> usize {
        self.entries
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A valid one-block header with one two-block write (also used by the
    /// fuzzing tests).
    pub(in crate::format) fn sample() -> BatchHeader {
        BatchHeader {
            seq: 5,
            epoch: 1,
            pool_uuid: [2; 16],
            segment: 1,
            header_blocks: 1,
            data_blocks: 2,
            completed_seq: 4,
            durable_seq: 3,
            head: HEAD_COLLECTOR,
            open: false,
            entries: vec![Entry::Write {
                volume: 1,
                lba: 9,
                data_offset: 0,
                crcs: vec![7, 8],
            }],
        }
    }

    #[test]
    fn a_one_block_write_takes_26_bytes_and_only_batches_of_this_version_hold_one() {
        let entry = Entry::Write {
            volume: 4,
            lba: 77,
            data_offset: 3,
            crcs: vec![0xDEAD_BEEF],
        };
        assert_eq!(entry.encoded_len(), 26);
        let two = Entry::Write {
            volume: 4,
            lba: 77,
            data_offset: 3,
            crcs: vec![1, 2],
        };
        assert_eq!(two.encoded_len(), 36, "longer writes keep the general form");
        let header = BatchHeader {
            seq: 9,
            epoch: 2,
            pool_uuid: [5; 16],
            segment: 1,
            header_blocks: 1,
            data_blocks: 4,
            completed_seq: 8,
            durable_seq: 0,
            head: HEAD_FOREGROUND,
            open: false,
            entries: vec![entry],
        };
        let bytes = header.encode();
        assert_eq!(BatchHeader::decode(&bytes), Ok(header.clone()));
        // The same bytes under version 5, checksums made valid again: the
        // compact kind is not part of that version.
        let mut old = bytes.clone();
        old[8..10].copy_from_slice(&VERSION_5.to_le_bytes());
        let len = BATCH_HEADER_FIXED_LEN + 26;
        let identity = identity_crc(&old);
        old[IDENTITY_CRC_AT..IDENTITY_CRC_AT + 4].copy_from_slice(&identity.to_le_bytes());
        let crc = crc_with_hole(&old[..len], CRC_AT);
        old[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        assert!(matches!(
            BatchHeader::decode(&old),
            Err(DecodeError::Invalid {
                field: "entry_kind",
                ..
            })
        ));
        // Its data offset must lie in the data area.
        let beyond = BatchHeader {
            data_blocks: 3,
            ..header
        };
        assert!(BatchHeader::decode(&beyond.encode()).is_err());
    }

    fn entry_strategy() -> impl Strategy<Value = Entry> {
        prop_oneof![
            (
                any::<u64>(),
                any::<u64>(),
                0u32..4,
                proptest::collection::vec(any::<u32>(), 1..8)
            )
                .prop_map(|(volume, lba, data_offset, crcs)| Entry::Write {
                    volume,
                    lba,
                    data_offset,
                    crcs
                }),
            (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(volume, lba, blocks)| {
                Entry::Trim {
                    volume,
                    lba,
                    blocks,
                }
            }),
            (any::<u64>(), any::<u64>(), any::<u32>(), "[a-z0-9-]{0,40}").prop_map(
                |(volume, size_bytes, flags, name)| Entry::CreateVolume {
                    volume,
                    size_bytes,
                    sector_bytes: 512,
                    flags,
                    name
                }
            ),
            any::<u64>().prop_map(|volume| Entry::DeleteVolume { volume }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(volume, size_bytes)| Entry::ResizeVolume { volume, size_bytes }),
            (any::<u64>(), any::<u64>(), "[a-z0-9-]{0,40}").prop_map(|(volume, source, name)| {
                Entry::CreateSnapshot {
                    volume,
                    source,
                    name,
                }
            }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u32>(),
                "[a-z0-9-]{0,40}"
            )
                .prop_map(|(volume, source, size_bytes, flags, name)| {
                    Entry::CreateClone {
                        volume,
                        source,
                        size_bytes,
                        sector_bytes: 4096,
                        flags,
                        name,
                    }
                }),
            (any::<u64>(), any::<u64>())
                .prop_map(|(volume, snapshot)| Entry::Revert { volume, snapshot }),
            (
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                0u32..12,
                any::<u32>()
            )
                .prop_map(|(lineage, lba, old, data_offset, crc)| Entry::Relocate {
                    lineage,
                    lba,
                    old,
                    data_offset,
                    crc
                }),
            (any::<u64>(), any::<u32>())
                .prop_map(|(volume, flags)| Entry::SetFlags { volume, flags }),
            (
                any::<u64>(),
                any::<u64>(),
                proptest::collection::vec((1u8..9, any::<u8>()), 1..4)
            )
                .prop_map(|(volume, lba, units)| {
                    let units: Vec<(u8, u8)> =
                        units.into_iter().map(|(l, s)| (l, s % l + 1)).collect();
                    let logical: usize = units.iter().map(|u| usize::from(u.0)).sum();
                    let stored: usize = units.iter().map(|u| usize::from(u.1)).sum();
                    Entry::WritePacked {
                        volume,
                        lba,
                        data_offset: 0,
                        units,
                        crcs: vec![7; logical],
                        stored_crcs: vec![9; stored],
                    }
                }),
            (
                any::<u64>(),
                any::<u64>(),
                1usize..5,
                proptest::collection::vec((any::<u64>(), 0u8..8, any::<u32>()), 0..8)
            )
                .prop_map(|(lineage, old, stored, members)| Entry::RelocateUnit {
                    lineage,
                    old,
                    data_offset: 1,
                    stored_crcs: vec![3; stored],
                    members
                }),
        ]
    }

    /// The encoding of `header` at an older `version`: its fixed part cut to
    /// `fixed_len` bytes, the entries after it.
    fn encode_legacy(header: &BatchHeader, version: u16, fixed_len: usize) -> Vec<u8> {
        let current = header.encode();
        let len = u32::from_le_bytes(current[LEN_AT..LEN_AT + 4].try_into().unwrap()) as usize;
        let mut old = current[..fixed_len].to_vec();
        old.extend_from_slice(&current[BATCH_HEADER_FIXED_LEN..len]);
        old[8..10].copy_from_slice(&version.to_le_bytes());
        let old_len = old.len() as u32;
        old[LEN_AT..LEN_AT + 4].copy_from_slice(&old_len.to_le_bytes());
        let crc = crc_with_hole(&old, CRC_AT);
        old[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        old.resize(usize::from(header.header_blocks) * BLOCK_SIZE, 0);
        old
    }

    /// Recomputes the header checksum over the used length after an edit.
    fn reseal(bytes: &mut [u8]) {
        let len = u32::from_le_bytes(bytes[LEN_AT..LEN_AT + 4].try_into().unwrap()) as usize;
        let crc = crc_with_hole(&bytes[..len], CRC_AT);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
    }

    #[test]
    fn version_4_headers_still_decode_on_the_foreground_head() {
        let header = sample();
        let bytes = encode_legacy(&header, VERSION_4, VERSION_4_FIXED_LEN);
        // The identity checksum lies within the bytes version 4 shares.
        let mut bytes = bytes;
        let identity = identity_crc(&bytes);
        bytes[IDENTITY_CRC_AT..IDENTITY_CRC_AT + 4].copy_from_slice(&identity.to_le_bytes());
        reseal(&mut bytes);
        assert_eq!(
            BatchHeader::decode(&bytes),
            Ok(BatchHeader {
                head: HEAD_FOREGROUND,
                ..header
            })
        );
        let peeked = BatchHeader::peek_identity(&bytes).unwrap();
        assert!(!peeked.legacy && peeked.identity_crc_intact);
    }

    #[test]
    fn a_head_other_than_the_two_is_refused() {
        let mut bytes = sample().encode();
        bytes[IDENTITY_CRC_AT + 4] = 2;
        reseal(&mut bytes);
        assert!(BatchHeader::decode(&bytes).is_err());
    }

    #[test]
    fn version_3_headers_still_decode_without_the_identity_checksum() {
        let header = sample();
        let bytes = encode_legacy(&header, VERSION_3, VERSION_3_FIXED_LEN);
        assert_eq!(
            BatchHeader::decode(&bytes),
            Ok(BatchHeader {
                head: HEAD_FOREGROUND,
                ..header
            })
        );
        let peeked = BatchHeader::peek_identity(&bytes).unwrap();
        assert!(peeked.legacy && !peeked.identity_crc_intact);
    }

    #[test]
    fn the_identity_checksum_tells_a_damaged_first_sector_from_an_intact_one() {
        let bytes = sample().encode();
        let peeked = BatchHeader::peek_identity(&bytes).unwrap();
        assert!(peeked.identity_crc_intact && !peeked.legacy);
        // Every byte of the first 84 is covered, the seqs after the identity too.
        for at in (0..IDENTITY_CRC_AT + 4).filter(|at| !(CRC_AT..CRC_AT + 4).contains(at)) {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x30;
            let peeked = BatchHeader::peek_identity(&damaged).unwrap();
            assert!(!peeked.identity_crc_intact, "byte {at}");
            assert!(BatchHeader::decode(&damaged).is_err(), "byte {at}");
        }
        // The entries are not: a tear past the first sector leaves it intact.
        let mut torn = bytes.clone();
        torn[BATCH_HEADER_FIXED_LEN + 3] ^= 0x30;
        assert!(
            BatchHeader::peek_identity(&torn)
                .unwrap()
                .identity_crc_intact
        );
    }

    #[test]
    fn one_flipped_bit_in_the_entries_or_the_length_is_repaired_and_two_are_not() {
        let header = sample();
        let bytes = header.encode();
        for bit in [LEN_AT * 8 + 3, (BATCH_HEADER_FIXED_LEN + 9) * 8 + 5] {
            let mut damaged = bytes.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(BatchHeader::decode(&damaged).is_err());
            assert_eq!(
                BatchHeader::decode_repairing_one_bit(&damaged),
                Some(header.clone())
            );
        }
        let mut twice = bytes.clone();
        twice[BATCH_HEADER_FIXED_LEN + 9] ^= 0x21;
        assert_eq!(BatchHeader::decode_repairing_one_bit(&twice), None);
    }

    #[test]
    fn version_2_headers_still_decode_without_completed_seq() {
        let header = sample();
        let decoded =
            BatchHeader::decode(&encode_legacy(&header, VERSION_2, VERSION_2_FIXED_LEN)).unwrap();
        assert_eq!(
            decoded,
            BatchHeader {
                completed_seq: 0,
                durable_seq: 0,
                head: HEAD_FOREGROUND,
                ..header
            }
        );
    }

    #[test]
    fn completed_and_durable_seq_sit_after_the_checksum_and_are_covered_by_it() {
        let header = sample();
        let mut bytes = header.encode();
        assert_eq!(&bytes[64..72], &4u64.to_le_bytes());
        assert_eq!(&bytes[72..80], &3u64.to_le_bytes());
        bytes[72] ^= 1;
        assert!(BatchHeader::decode(&bytes).is_err());
    }

    /// `bytes` re-sealed as a header of `version`: both checksums valid again.
    fn as_version(mut bytes: Vec<u8>, version: u16) -> Vec<u8> {
        bytes[8..10].copy_from_slice(&version.to_le_bytes());
        let len =
            u32::from_le_bytes(bytes[LEN_AT..LEN_AT + 4].try_into().expect("4 bytes")) as usize;
        let identity = identity_crc(&bytes);
        bytes[IDENTITY_CRC_AT..IDENTITY_CRC_AT + 4].copy_from_slice(&identity.to_le_bytes());
        let crc = crc_with_hole(&bytes[..len], CRC_AT);
        bytes[CRC_AT..CRC_AT + 4].copy_from_slice(&crc.to_le_bytes());
        bytes
    }

    #[test]
    fn only_version_7_headers_carry_the_open_flag() {
        let open = BatchHeader {
            open: true,
            entries: Vec::new(),
            ..sample()
        };
        let bytes = open.encode();
        assert_eq!(bytes[85], BATCH_FLAG_OPEN);
        assert_eq!(BatchHeader::decode(&bytes), Ok(open.clone()));
        let closed = BatchHeader {
            open: false,
            ..open.clone()
        };
        let old = as_version(closed.encode(), VERSION_6);
        assert_eq!(
            BatchHeader::decode(&old).map(|h| h.open),
            Ok(false),
            "a version 6 image reads as final"
        );
        assert!(
            BatchHeader::decode(&as_version(bytes, VERSION_6)).is_err(),
            "version 6 has no flags"
        );
        let mut unknown = closed.encode();
        unknown[85] = 2;
        assert!(BatchHeader::decode(&as_version(unknown, VERSION)).is_err());
    }

    proptest! {
        #[test]
        fn headers_round_trip(entries in proptest::collection::vec(entry_strategy(), 0..60), seq in any::<u64>()) {
            let mut plan = BatchBuilder::new();
            for entry in &entries {
                plan.add(entry.encoded_len(), 0);
            }
            let header = BatchHeader {
                seq,
                epoch: 3,
                pool_uuid: [1; 16],
                segment: 3,
                header_blocks: plan.header_blocks(),
                data_blocks: 32,
                completed_seq: seq / 2,
                durable_seq: seq / 4,
                head: (seq % 2) as u8,
                open: seq % 3 == 0,
                entries,
            };
            let bytes = header.encode();
            prop_assert_eq!(BatchHeader::decode(&bytes), Ok(header));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let _ = BatchHeader::decode(&bytes);
        }

        #[test]
        fn any_flipped_bit_in_the_used_header_is_detected(flip in 0usize..(BATCH_HEADER_FIXED_LEN + 36) * 8) {
            let header = sample();
            let mut bytes = header.encode();
            bytes[flip / 8] ^= 1 << (flip % 8);
            prop_assert!(BatchHeader::decode(&bytes) != Ok(header));
        }
    }
}
