//! The checkpoint body: the whole pool state (volumes, snapshots, clones and their
//! block maps) as of the root's `replay_seq`. Chunk instances that several maps
//! share (snapshots, thin clones) are stored once and referenced by number, so a
//! volume with 256 snapshots costs one map plus what the snapshots do not share.
//! Its integrity is checked by the crc stored in the root.

use super::codec::{DecodeError, Reader, Writer};
use super::FORMAT_VERSION;

const MAGIC: &[u8; 8] = b"KEELCKPT";

/// The mapped blocks of one chunk instance: `(block offset within the chunk,
/// encoded location, crc32c)`.
pub type ChunkEntries = Vec<(u16, u64, u32)>;

/// Whether a map is a volume (writable) or a snapshot (read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VolumeKind {
    /// A writable volume (plain, thin clone or thick clone).
    Volume,
    /// A read-only snapshot.
    Snapshot,
}

/// One volume's or snapshot's identity and map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeImage {
    /// Id.
    pub id: u64,
    /// Unique name.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size in bytes.
    pub sector_bytes: u32,
    /// Volume or snapshot.
    pub kind: VolumeKind,
    /// `VOLUME_FLAG_*` bits.
    pub flags: u32,
    /// Id of the volume whose blocks this map may share (its own id if it started
    /// the lineage).
    pub lineage: u64,
    /// The volume a snapshot was taken of, or the snapshot a clone was made from (0: none).
    pub parent: u64,
    /// `(chunk index, instance number)` for every mapped chunk.
    pub chunks: Vec<(u32, u32)>,
}

/// The decoded checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckpointBody {
    /// The next volume id to assign.
    pub next_volume_id: u64,
    /// Every chunk instance, numbered by position.
    pub instances: Vec<ChunkEntries>,
    /// Every volume and snapshot.
    pub volumes: Vec<VolumeImage>,
    /// Blocks that may differ between a volume's replicas (see
    /// `crate::unsettled`); the section is written only when there are any.
    pub unsettled: Vec<UnsettledImage>,
}

/// One volume's unsettled blocks, in 4 KiB engine blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsettledImage {
    /// The volume's id.
    pub volume: u64,
    /// Every block of the volume (then `extents` is empty).
    pub whole_volume: bool,
    /// (first block, block count) runs.
    pub extents: Vec<(u64, u32)>,
}

/// Tag of the optional unsettled section after the volume images.
const UNSETTLED_TAG: &[u8; 8] = b"UNSETTLD";

/// Gives `bytes` a valid magic and version (a body's checksum lives in its root),
/// so a fuzzer's input reaches the fields behind them.
pub(crate) fn seal_for_fuzzing(bytes: &mut [u8]) {
    if bytes.len() < 12 {
        return;
    }
    bytes[..8].copy_from_slice(MAGIC);
    bytes[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
}

impl CheckpointBody {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.bytes(MAGIC);
        w.u32(FORMAT_VERSION);
        w.u64(self.next_volume_id);
        w.u32(self.instances.len() as u32);
        for instance in &self.instances {
            w.u16(instance.len() as u16);
            for (offset, location, crc) in instance {
                w.u16(*offset);
                w.u64(*location);
                w.u32(*crc);
            }
        }
        w.u32(self.volumes.len() as u32);
        for volume in &self.volumes {
            encode_volume(&mut w, volume);
        }
        if !self.unsettled.is_empty() {
            w.bytes(UNSETTLED_TAG);
            w.u32(self.unsettled.len() as u32);
            for image in &self.unsettled {
                w.u64(image.volume);
                w.u8(u8::from(image.whole_volume));
                w.u32(image.extents.len() as u32);
                for (lba, blocks) in &image.extents {
                    w.u64(*lba);
                    w.u32(*blocks);
                }
            }
        }
        w.into_vec()
    }

    /// Decodes a body whose crc the caller has verified; rejects trailing bytes and
    /// references to instances that do not exist.
    pub fn decode(bytes: &[u8]) -> Result<CheckpointBody, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let next_volume_id = r.u64()?;
        let instance_count = r.u32()? as usize;
        let mut instances = Vec::with_capacity(instance_count.min(r.remaining() / 2));
        for _ in 0..instance_count {
            let count = r.u16()? as usize;
            let mut entries = Vec::with_capacity(count.min(r.remaining() / 14));
            for _ in 0..count {
                entries.push((r.u16()?, r.u64()?, r.u32()?));
            }
            instances.push(entries);
        }
        let count = r.u32()? as usize;
        let mut volumes = Vec::with_capacity(count.min(r.remaining() / 48));
        for _ in 0..count {
            let volume = decode_volume(&mut r)?;
            if let Some(&(_, bad)) = volume
                .chunks
                .iter()
                .find(|(_, i)| *i as usize >= instances.len())
            {
                return Err(DecodeError::Invalid {
                    field: "chunk_instance",
                    value: bad.into(),
                });
            }
            volumes.push(volume);
        }
        let unsettled = if r.remaining() > 0 {
            decode_unsettled(&mut r)?
        } else {
            Vec::new()
        };
        r.finish()?;
        Ok(CheckpointBody {
            next_volume_id,
            instances,
            volumes,
            unsettled,
        })
    }
}

fn decode_unsettled(r: &mut Reader<'_>) -> Result<Vec<UnsettledImage>, DecodeError> {
    r.magic(UNSETTLED_TAG)?;
    let count = r.u32()? as usize;
    let mut images = Vec::with_capacity(count.min(r.remaining() / 13));
    for _ in 0..count {
        let volume = r.u64()?;
        let whole_volume = match r.u8()? {
            0 => false,
            1 => true,
            other => {
                return Err(DecodeError::Invalid {
                    field: "unsettled_whole_volume",
                    value: other.into(),
                })
            }
        };
        let runs = r.u32()? as usize;
        let mut extents = Vec::with_capacity(runs.min(r.remaining() / 12));
        for _ in 0..runs {
            extents.push((r.u64()?, r.u32()?));
        }
        images.push(UnsettledImage {
            volume,
            whole_volume,
            extents,
        });
    }
    Ok(images)
}

fn encode_volume(w: &mut Writer, volume: &VolumeImage) {
    w.u64(volume.id);
    w.u64(volume.size_bytes);
    w.u32(volume.sector_bytes);
    w.u8(match volume.kind {
        VolumeKind::Volume => 0,
        VolumeKind::Snapshot => 1,
    });
    w.u32(volume.flags);
    w.u64(volume.lineage);
    w.u64(volume.parent);
    w.u16(volume.name.len() as u16);
    w.bytes(volume.name.as_bytes());
    w.u32(volume.chunks.len() as u32);
    for (index, instance) in &volume.chunks {
        w.u32(*index);
        w.u32(*instance);
    }
}

fn decode_volume(r: &mut Reader<'_>) -> Result<VolumeImage, DecodeError> {
    let id = r.u64()?;
    let size_bytes = r.u64()?;
    let sector_bytes = r.u32()?;
    let kind = match r.u8()? {
        0 => VolumeKind::Volume,
        1 => VolumeKind::Snapshot,
        other => {
            return Err(DecodeError::Invalid {
                field: "volume_kind",
                value: other.into(),
            })
        }
    };
    let flags = r.u32()?;
    let lineage = r.u64()?;
    let parent = r.u64()?;
    let name_len = r.u16()? as usize;
    let name = std::str::from_utf8(r.take(name_len)?)
        .map_err(|_| DecodeError::Invalid {
            field: "volume_name",
            value: id,
        })?
        .to_owned();
    let chunk_count = r.u32()? as usize;
    let mut chunks = Vec::with_capacity(chunk_count.min(r.remaining() / 8));
    for _ in 0..chunk_count {
        chunks.push((r.u32()?, r.u32()?));
    }
    Ok(VolumeImage {
        id,
        name,
        size_bytes,
        sector_bytes,
        kind,
        flags,
        lineage,
        parent,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bodies_round_trip(
            next in any::<u64>(),
            instances in proptest::collection::vec(proptest::collection::vec((any::<u16>(), any::<u64>(), any::<u32>()), 0..20), 1..5),
            refs in proptest::collection::vec(proptest::collection::vec((any::<u32>(), 0u32..5), 0..6), 0..5),
            snapshot in any::<bool>(),
            unsettled in proptest::collection::vec((any::<u64>(), any::<bool>(), proptest::collection::vec((any::<u64>(), any::<u32>()), 0..4)), 0..3),
        ) {
            let count = instances.len() as u32;
            let body = CheckpointBody {
                next_volume_id: next,
                instances,
                volumes: refs.into_iter().enumerate().map(|(i, chunks)| VolumeImage {
                    id: i as u64,
                    name: format!("vol{i}"),
                    size_bytes: 1 << 30,
                    sector_bytes: 4096,
                    kind: if snapshot { VolumeKind::Snapshot } else { VolumeKind::Volume },
                    flags: 1,
                    lineage: 1,
                    parent: 0,
                    chunks: chunks.into_iter().map(|(index, instance)| (index, instance % count)).collect(),
                }).collect(),
                unsettled: unsettled.into_iter().map(|(volume, whole_volume, extents)| UnsettledImage { volume, whole_volume, extents }).collect(),
            };
            prop_assert_eq!(CheckpointBody::decode(&body.encode()), Ok(body));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let _ = CheckpointBody::decode(&bytes);
        }
    }

    #[test]
    fn a_reference_to_a_missing_instance_is_rejected() {
        let body = CheckpointBody {
            next_volume_id: 2,
            instances: vec![],
            volumes: vec![VolumeImage {
                id: 1,
                name: "v".into(),
                size_bytes: 4096,
                sector_bytes: 4096,
                kind: VolumeKind::Volume,
                flags: 0,
                lineage: 1,
                parent: 0,
                chunks: vec![(0, 0)],
            }],
            unsettled: Vec::new(),
        };
        assert!(CheckpointBody::decode(&body.encode()).is_err());
    }
}
