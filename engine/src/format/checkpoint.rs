//! The checkpoint body: the whole pool state (volumes and their block maps) as of
//! the root's `replay_seq`. Its integrity is checked by the crc stored in the root.

use super::codec::{DecodeError, Reader, Writer};
use super::FORMAT_VERSION;

const MAGIC: &[u8; 8] = b"KEELCKPT";

/// The mapped blocks of one index chunk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkImage {
    /// Chunk number within the volume.
    pub index: u32,
    /// `(block offset within the chunk, encoded location, crc32c)` for every mapped block.
    pub blocks: Vec<(u16, u64, u32)>,
}

/// One volume's identity and map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeImage {
    /// Volume id.
    pub id: u64,
    /// Unique name.
    pub name: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Logical block size in bytes.
    pub sector_bytes: u32,
    /// Mapped chunks.
    pub chunks: Vec<ChunkImage>,
}

/// The decoded checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct CheckpointBody {
    /// The next volume id to assign.
    pub next_volume_id: u64,
    /// Every live volume.
    pub volumes: Vec<VolumeImage>,
}

impl CheckpointBody {
    /// Encodes the body.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64);
        w.bytes(MAGIC);
        w.u32(FORMAT_VERSION);
        w.u64(self.next_volume_id);
        w.u32(self.volumes.len() as u32);
        for volume in &self.volumes {
            encode_volume(&mut w, volume);
        }
        w.into_vec()
    }

    /// Decodes a body whose crc the caller has verified; rejects trailing bytes.
    pub fn decode(bytes: &[u8]) -> Result<CheckpointBody, DecodeError> {
        let mut r = Reader::new(bytes);
        r.magic(MAGIC)?;
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let next_volume_id = r.u64()?;
        let count = r.u32()? as usize;
        let mut volumes = Vec::with_capacity(count.min(r.remaining() / 32));
        for _ in 0..count {
            volumes.push(decode_volume(&mut r)?);
        }
        r.finish()?;
        Ok(CheckpointBody {
            next_volume_id,
            volumes,
        })
    }
}

fn encode_volume(w: &mut Writer, volume: &VolumeImage) {
    w.u64(volume.id);
    w.u64(volume.size_bytes);
    w.u32(volume.sector_bytes);
    w.u16(volume.name.len() as u16);
    w.bytes(volume.name.as_bytes());
    w.u32(volume.chunks.len() as u32);
    for chunk in &volume.chunks {
        w.u32(chunk.index);
        w.u32(chunk.blocks.len() as u32);
        for (offset, location, crc) in &chunk.blocks {
            w.u16(*offset);
            w.u64(*location);
            w.u32(*crc);
        }
    }
}

fn decode_volume(r: &mut Reader<'_>) -> Result<VolumeImage, DecodeError> {
    let id = r.u64()?;
    let size_bytes = r.u64()?;
    let sector_bytes = r.u32()?;
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
        let index = r.u32()?;
        let count = r.u32()? as usize;
        let mut blocks = Vec::with_capacity(count.min(r.remaining() / 14));
        for _ in 0..count {
            blocks.push((r.u16()?, r.u64()?, r.u32()?));
        }
        chunks.push(ChunkImage { index, blocks });
    }
    Ok(VolumeImage {
        id,
        name,
        size_bytes,
        sector_bytes,
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
            maps in proptest::collection::vec(proptest::collection::vec((any::<u16>(), any::<u64>(), any::<u32>()), 0..20), 0..5),
        ) {
            let body = CheckpointBody {
                next_volume_id: next,
                volumes: maps.into_iter().enumerate().map(|(i, blocks)| VolumeImage {
                    id: i as u64,
                    name: format!("vol{i}"),
                    size_bytes: 1 << 30,
                    sector_bytes: 4096,
                    chunks: vec![ChunkImage { index: i as u32, blocks }],
                }).collect(),
            };
            prop_assert_eq!(CheckpointBody::decode(&body.encode()), Ok(body));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..4000)) {
            let _ = CheckpointBody::decode(&bytes);
        }
    }
}
