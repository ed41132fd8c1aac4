//! Finding the log batches replay applies: the batches of the root's epoch with
//! consecutive sequence numbers from the root's position, and the rule that
//! tells the torn tail a crash leaves from damage in the middle of the log
//! (FORMAT.md, "Recovery").
//!
//! Rule: a batch whose header is intact is always replayed; entries whose data
//! fails its checksum stay mapped with the checksum of what was written, so
//! reads of exactly those blocks fail as media errors. Where no intact header of
//! the expected batch is found, the log ends there unless a later batch of the
//! epoch says (`durable_seq`) that a flush had covered the missing one, or its
//! damaged header lies within one sector (which a tear cannot split), or the
//! header there has a damaged first sector (its identity checksum fails) and
//! is this pool's: then power loss cannot explain the loss, acknowledged
//! writes may be lost, and the pool is not opened. A batch replayed from an
//! open batch's image that is not its final one (power loss kept an older
//! image of its header) ends the log after it, by the same evidence: later
//! batches may hold records acknowledged after entries its final image named.

use std::collections::HashMap;

use crate::error::OpenError;
use crate::format::{
    BatchHeader, CheckpointRoot, Entry, UnverifiedIdentity, HEADER_BLOCKS_MAX, HEAD_FOREGROUND,
};
use crate::io::{read_blocking, AlignedBuf};
use crate::log::segments::{SegmentState, SegmentTable};
use crate::pool::Pool;
use crate::units::{SegmentId, BLOCK_SIZE};

/// The atomic unit of a device write (FORMAT.md, media assumptions): a header
/// whose checksummed bytes fit in one sector cannot be torn.
const SECTOR_BYTES: usize = 512;

/// One batch replay applies.
pub(crate) struct ChainLink {
    /// Its header.
    pub header: BatchHeader,
    /// Where it starts.
    pub segment: SegmentId,
    /// Block within `segment`.
    pub block: u32,
    /// The data-carrying entries with at least one block that fails its
    /// checksum.
    pub damaged_entries: Vec<DamagedEntry>,
    /// Its header had one flipped bit, repaired from its checksum.
    pub repaired: bool,
}

/// An entry whose stored data is damaged.
pub(crate) struct DamagedEntry {
    /// Index into the batch header's entries.
    pub index: usize,
    /// Indices of its stored blocks that fail their crc.
    pub blocks: Vec<usize>,
}

/// Serves replay's reads from whole segments: the log is read one segment at a
/// time with one large read, instead of two or three small reads per batch.
struct SegmentReader<'a> {
    pool: &'a Pool,
    cached: Option<(SegmentId, AlignedBuf)>,
}

impl<'a> SegmentReader<'a> {
    fn new(pool: &'a Pool) -> SegmentReader<'a> {
        SegmentReader { pool, cached: None }
    }

    /// Blocks `[block, block + count)` of `segment`, or `None` past its end.
    fn blocks(
        &mut self,
        segment: SegmentId,
        block: u32,
        count: u32,
    ) -> Result<Option<&[u8]>, OpenError> {
        if segment.0 >= self.pool.segment_count()
            || block
                .checked_add(count)
                .is_none_or(|end| end > self.pool.blocks_per_segment)
        {
            return Ok(None);
        }
        if self
            .cached
            .as_ref()
            .is_none_or(|(cached, _)| *cached != segment)
        {
            let (device, offset) = self.pool.locate(segment, 0);
            let buf = read_blocking(device, offset, self.pool.segment_bytes() as usize)?;
            self.cached = Some((segment, buf));
        }
        let Some((_, buf)) = &self.cached else {
            unreachable!("the segment was just read")
        };
        let at = block as usize * BLOCK_SIZE;
        Ok(buf.as_slice().get(at..at + count as usize * BLOCK_SIZE))
    }
}

/// What lies where a batch was looked for.
enum Probe {
    /// An intact header of the expected batch, with its damaged entries.
    Found(BatchHeader, Vec<DamagedEntry>, bool),
    /// The expected batch's identity (seq, epoch, pool, segment) with a
    /// header that fails its checksum or its magic, version or length;
    /// `atomic` when the damage cannot be a tear: its checksummed bytes fit
    /// within one sector, or its first sector (identity and prefix together)
    /// is partly wrong.
    DamagedHeader { atomic: bool },
    /// Nothing that is the expected batch.
    Absent,
}

/// Whether a probe may repair a flipped bit in a header: only once the batch
/// was not found intact anywhere, so a log that merely continues in another
/// segment never pays for a repair attempt.
#[derive(Clone, Copy)]
enum Repair {
    No,
    OneBit,
}

/// The batch identity replay expects next.
#[derive(Clone, Copy)]
struct Expected<'a> {
    pool: &'a Pool,
    epoch: u64,
    seq: u64,
}

/// Reads the batch at `block` of `segment` and checks it against `expected`.
fn probe(
    reader: &mut SegmentReader<'_>,
    segment: SegmentId,
    block: u32,
    expected: Expected<'_>,
    repair: Repair,
) -> Result<Probe, OpenError> {
    let Some(first) = reader.blocks(segment, block, 1)? else {
        return Ok(Probe::Absent);
    };
    let peeked = BatchHeader::peek_identity(first).ok();
    let identity = peeked.clone().filter(|identity| {
        identity.seq == expected.seq
            && identity.epoch == expected.epoch
            && identity.pool_uuid == expected.pool.uuid
            && identity.segment == segment.0
    });
    if identity.is_none()
        && peeked
            .as_ref()
            .is_some_and(|p| first_sector_damaged(p, segment, expected))
    {
        // Unless it is intact after all (then it is whatever it says), this
        // is damage where the expected batch belongs.
        if intact_header(reader, segment, block)?.is_none()
            && repaired_header(reader, segment, block, expected, repair)?.is_none()
        {
            return Ok(Probe::DamagedHeader { atomic: true });
        }
    }
    let intact = match &identity {
        Some(_) => intact_header(reader, segment, block)?,
        None => None,
    };
    let (header, repaired) = match intact {
        Some(header) => (header, false),
        None => match repaired_header(reader, segment, block, expected, repair)? {
            Some(header) => (header, true),
            None => {
                return Ok(match identity {
                    // The identity and the prefix share the first sector: a
                    // bad prefix under an intact identity is damage, never a
                    // tear.
                    Some(identity) => Probe::DamagedHeader {
                        atomic: identity.used_len <= SECTOR_BYTES
                            || !identity.prefix_intact
                            || !(identity.legacy || identity.identity_crc_intact),
                    },
                    None => Probe::Absent,
                });
            }
        },
    };
    if repaired {
        tracing::warn!(
            seq = expected.seq,
            segment = segment.0,
            block,
            "repaired one flipped bit in a log batch header"
        );
    }
    let header_blocks = header.header_blocks;
    let damaged = Probe::DamagedHeader { atomic: false };
    let data_start = block + u32::from(header_blocks);
    let Some(data) = reader.blocks(segment, data_start, header.data_blocks)? else {
        return Ok(damaged);
    };
    let damaged_entries = damaged_entries(&header, data);
    Ok(Probe::Found(header, damaged_entries, repaired))
}

/// Whether `peeked`, read where the expected batch belongs and not naming
/// it, is a header of this pool whose first sector was damaged: no tear
/// explains it (a crash leaves a first sector all new or all old), and it
/// cannot be told from the expected batch's own header.
///
/// A version 4 or 5 first sector carries its own checksum: intact, it is exactly
/// some batch's (stale, or another pool's); failing it, it is damage, and a
/// pool uuid within [`UUID_DAMAGE_BITS_MAX`] bits of this pool's says whose.
/// Older versions have no such checksum: a header of this pool naming this
/// segment and differing in exactly one of its seq and epoch is damage (an
/// old header of this epoch is complete; one of an older epoch differs in
/// both), as is a pool uuid or segment a few bits off.
fn first_sector_damaged(
    peeked: &UnverifiedIdentity,
    segment: SegmentId,
    expected: Expected<'_>,
) -> bool {
    if peeked.identity_crc_intact {
        return false;
    }
    let uuid_bits = uuid_distance(&peeked.pool_uuid, &expected.pool.uuid);
    if uuid_bits > UUID_DAMAGE_BITS_MAX {
        return false;
    }
    if !peeked.legacy || uuid_bits > 0 || peeked.segment != segment.0 {
        return true;
    }
    (peeked.seq == expected.seq) != (peeked.epoch == expected.epoch)
}

/// Bits in which two pool uuids differ.
fn uuid_distance(a: &[u8; 16], b: &[u8; 16]) -> u32 {
    a.iter().zip(b).map(|(x, y)| (x ^ y).count_ones()).sum()
}

/// Most bits in which a damaged header's pool uuid may differ from this
/// pool's and still be taken for this pool's: another pool's uuid differs in
/// about 64 of its 128 bits, and in 32 or fewer with odds near 10^-8.
const UUID_DAMAGE_BITS_MAX: u32 = 32;

/// The header at `block` of `segment` if it decodes as it is.
fn intact_header(
    reader: &mut SegmentReader<'_>,
    segment: SegmentId,
    block: u32,
) -> Result<Option<BatchHeader>, OpenError> {
    let Some(first) = reader.blocks(segment, block, 1)? else {
        return Ok(None);
    };
    let Ok(header_blocks) = BatchHeader::peek_header_blocks(first) else {
        return Ok(None);
    };
    let Some(bytes) = reader.blocks(segment, block, u32::from(header_blocks))? else {
        return Ok(None);
    };
    Ok(BatchHeader::decode(bytes).ok())
}

/// The expected batch's header at `block` of `segment` after repairing one
/// flipped bit (`BatchHeader::decode_repairing_one_bit`).
fn repaired_header(
    reader: &mut SegmentReader<'_>,
    segment: SegmentId,
    block: u32,
    expected: Expected<'_>,
    repair: Repair,
) -> Result<Option<BatchHeader>, OpenError> {
    if matches!(repair, Repair::No) {
        return Ok(None);
    }
    let room = (reader.pool.blocks_per_segment - block).min(u32::from(HEADER_BLOCKS_MAX));
    let Some(bytes) = reader.blocks(segment, block, room)? else {
        return Ok(None);
    };
    Ok(
        BatchHeader::decode_repairing_one_bit(bytes).filter(|header| {
            header.seq == expected.seq
                && header.epoch == expected.epoch
                && header.pool_uuid == expected.pool.uuid
                && header.segment == segment.0
        }),
    )
}

/// The entries owning a data block that fails its stored crc.
fn damaged_entries(header: &BatchHeader, data: &[u8]) -> Vec<DamagedEntry> {
    header
        .entries
        .iter()
        .enumerate()
        .filter_map(|(index, entry)| {
            let (data_offset, crcs) = stored_blocks(entry)?;
            let blocks: Vec<usize> = crcs
                .iter()
                .enumerate()
                .filter(|&(i, &crc)| {
                    let at = (data_offset as usize + i) * BLOCK_SIZE;
                    data.get(at..at + BLOCK_SIZE)
                        .is_none_or(|block| crc32c::crc32c(block) != crc)
                })
                .map(|(i, _)| i)
                .collect();
            (!blocks.is_empty()).then_some(DamagedEntry { index, blocks })
        })
        .collect()
}

/// The data offset and the crc of every stored block an entry owns.
fn stored_blocks(entry: &Entry) -> Option<(u32, &[u32])> {
    match entry {
        Entry::Write {
            data_offset, crcs, ..
        } => Some((*data_offset, crcs)),
        Entry::Relocate {
            data_offset, crc, ..
        } => Some((*data_offset, std::slice::from_ref(crc))),
        Entry::WritePacked {
            data_offset,
            stored_crcs,
            ..
        }
        | Entry::RelocateUnit {
            data_offset,
            stored_crcs,
            ..
        } => Some((*data_offset, stored_crcs)),
        _ => None,
    }
}

/// What later batches say about earlier ones: the highest `completed_seq` and
/// `durable_seq` among the intact headers seen.
#[derive(Clone, Copy, Default)]
struct Evidence {
    completed_seq: u64,
    durable_seq: u64,
}

impl Evidence {
    fn add(&mut self, header: &BatchHeader) {
        self.completed_seq = self.completed_seq.max(header.completed_seq);
        self.durable_seq = self.durable_seq.max(header.durable_seq);
    }

    fn merge(&mut self, other: Evidence) {
        self.completed_seq = self.completed_seq.max(other.completed_seq);
        self.durable_seq = self.durable_seq.max(other.durable_seq);
    }
}

/// Intact headers of the root's epoch at block 0 of segments, by sequence
/// number: where the log continues when a segment fills.
struct SegmentStarts {
    by_seq: HashMap<u64, SegmentId>,
    /// Segments whose block 0 holds a header of this pool that fails to
    /// decode (of the root's epoch, or with its identity itself damaged): the
    /// log may continue there, so where the chain breaks each is probed (and
    /// repaired if one bit is off) before the break is taken for the log's end.
    damaged: Vec<SegmentId>,
    evidence: Evidence,
}

fn segment_starts(
    pool: &Pool,
    root: &CheckpointRoot,
    segments: &SegmentTable,
) -> Result<SegmentStarts, OpenError> {
    let mut starts = SegmentStarts {
        by_seq: HashMap::new(),
        damaged: Vec::new(),
        evidence: Evidence::default(),
    };
    for at in 0..pool.segment_count() {
        let segment = SegmentId(at);
        if segments.get(segment).state == SegmentState::CheckpointBody {
            continue;
        }
        let (device, offset) = pool.locate(segment, 0);
        let first = read_blocking(device, offset, BLOCK_SIZE)?;
        let header_blocks = BatchHeader::peek_header_blocks(first.as_slice()).unwrap_or(1);
        let bytes = if header_blocks == 1 {
            first
        } else {
            read_blocking(device, offset, usize::from(header_blocks) * BLOCK_SIZE)?
        };
        match BatchHeader::decode(bytes.as_slice()) {
            Ok(header) => {
                if header.epoch == root.epoch
                    && header.pool_uuid == pool.uuid
                    && header.segment == at
                {
                    starts.evidence.add(&header);
                    starts.by_seq.insert(header.seq, segment);
                }
            }
            Err(_) => {
                let ours = BatchHeader::peek_identity(bytes.as_slice()).is_ok_and(|peeked| {
                    if peeked.identity_crc_intact {
                        peeked.epoch == root.epoch
                            && peeked.pool_uuid == pool.uuid
                            && peeked.segment == at
                    } else {
                        uuid_distance(&peeked.pool_uuid, &pool.uuid) <= UUID_DAMAGE_BITS_MAX
                    }
                });
                if ours {
                    starts.damaged.push(segment);
                }
            }
        }
    }
    Ok(starts)
}

/// What the intact headers of `epoch` in `segment` from `from_block` on say:
/// evidence read only where the chain breaks.
fn evidence_in(
    reader: &mut SegmentReader<'_>,
    segment: SegmentId,
    from_block: u32,
    epoch: u64,
) -> Result<Evidence, OpenError> {
    let mut evidence = Evidence::default();
    let mut block = from_block;
    while block < reader.pool.blocks_per_segment {
        let Some(first) = reader.blocks(segment, block, 1)? else {
            break;
        };
        let Ok(header_blocks) = BatchHeader::peek_header_blocks(first) else {
            block += 1;
            continue;
        };
        let uuid = reader.pool.uuid;
        match reader.blocks(segment, block, u32::from(header_blocks))? {
            Some(bytes) => match BatchHeader::decode(bytes) {
                Ok(header)
                    if header.epoch == epoch
                        && header.pool_uuid == uuid
                        && header.segment == segment.0 =>
                {
                    evidence.add(&header);
                    block += header.total_blocks();
                }
                _ => block += 1,
            },
            None => break,
        }
    }
    Ok(evidence)
}

/// Follows the log from the root's replay positions: each next batch is
/// either right after the previous batch of its head (the foreground's or the
/// collector's), or at the start of another segment.
pub(super) fn find_replay_chain(
    pool: &Pool,
    root: &CheckpointRoot,
    segments: &SegmentTable,
) -> Result<Vec<ChainLink>, OpenError> {
    let starts = segment_starts(pool, root, segments)?;
    let mut chain: Vec<ChainLink> = Vec::new();
    let mut reader = SegmentReader::new(pool);
    let mut expected = Expected {
        pool,
        epoch: root.epoch,
        seq: root.replay_seq,
    };
    // Where each head continues, by `BatchHeader::head`.
    let mut heads = [
        (SegmentId(root.replay_segment), root.replay_block),
        (SegmentId(root.collector_segment), root.collector_block),
    ];
    let mut evidence = starts.evidence;
    loop {
        let mut found = None;
        let mut header_damaged = false;
        let mut not_torn = None;
        for position in heads {
            match probe(&mut reader, position.0, position.1, expected, Repair::No)? {
                probed @ Probe::Found(..) => {
                    found = Some((probed, position));
                    break;
                }
                Probe::DamagedHeader { atomic } => {
                    header_damaged = true;
                    if atomic {
                        not_torn.get_or_insert(position);
                    }
                }
                Probe::Absent => {}
            }
        }
        if found.is_none() {
            if let Some(&segment) = starts.by_seq.get(&expected.seq) {
                if let probed @ Probe::Found(..) =
                    probe(&mut reader, segment, 0, expected, Repair::No)?
                {
                    found = Some((probed, (segment, 0)));
                }
            }
        }
        if found.is_none() {
            for &segment in &starts.damaged {
                match probe(&mut reader, segment, 0, expected, Repair::OneBit)? {
                    probed @ Probe::Found(..) => {
                        found = Some((probed, (segment, 0)));
                        break;
                    }
                    Probe::DamagedHeader { atomic } => {
                        header_damaged = true;
                        if atomic {
                            not_torn.get_or_insert((segment, 0));
                        }
                    }
                    Probe::Absent => {}
                }
            }
        }
        if found.is_none() {
            for position in heads {
                if let repaired @ Probe::Found(..) = probe(
                    &mut reader,
                    position.0,
                    position.1,
                    expected,
                    Repair::OneBit,
                )? {
                    found = Some((repaired, position));
                    break;
                }
            }
        }
        // The seq of a batch replayed from an image that is not its final
        // one: the log ends after it.
        let ended_open = match found {
            Some((Probe::Found(header, damaged_entries, repaired), position)) => {
                let open = header.open.then_some(header.seq);
                evidence.add(&header);
                heads[usize::from(header.head)] = (position.0, position.1 + header.total_blocks());
                chain.push(ChainLink {
                    header,
                    segment: position.0,
                    block: position.1,
                    damaged_entries,
                    repaired,
                });
                expected.seq += 1;
                if open.is_none() {
                    continue;
                }
                open
            }
            _ => None,
        };
        for position in heads {
            evidence.merge(evidence_in(
                &mut reader,
                position.0,
                position.1,
                root.epoch,
            )?);
        }
        let mut later: Vec<(u64, SegmentId)> = starts
            .by_seq
            .iter()
            .filter(|(&seq, _)| seq > expected.seq)
            .map(|(&seq, &segment)| (seq, segment))
            .collect();
        later.sort_unstable();
        for (_, segment) in later {
            evidence.merge(evidence_in(&mut reader, segment, 0, root.epoch)?);
        }
        // The first batch whose whole content is missing: the one expected
        // next, or the open batch whose final image did not survive.
        let lost = ended_open.unwrap_or(expected.seq);
        let not_torn = not_torn.filter(|_| ended_open.is_none());
        let at = not_torn.unwrap_or(heads[usize::from(HEAD_FOREGROUND)]);
        if lost <= evidence.durable_seq || not_torn.is_some() {
            return Err(OpenError::LogDamaged {
                seq: lost,
                segment: at.0 .0,
                block: at.1,
                why: if not_torn.is_some() {
                    "its header lies within one sector, which a crash cannot tear"
                } else if ended_open.is_some() {
                    "only an image older than its final one survived, and a later batch \
                     shows a flush had made the final one durable"
                } else {
                    "a later batch shows a flush had made it durable"
                },
            });
        }
        if lost <= evidence.completed_seq {
            tracing::error!(
                seq = lost,
                completed_through = evidence.completed_seq,
                "the log ends at a batch that later batches show had completed but \
                 not yet been flushed: power loss explains that; damage to its header \
                 would mean writes acknowledged from here on were lost"
            );
        } else if ended_open.is_some() {
            tracing::warn!(
                seq = lost,
                "the log ends at an open batch whose final header image was not written"
            );
        } else if header_damaged {
            tracing::warn!(
                seq = expected.seq,
                segment = at.0 .0,
                block = at.1,
                "the log ends at a torn batch header"
            );
        }
        break;
    }
    Ok(chain)
}
