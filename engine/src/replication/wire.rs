//! The replication protocol's frames and their codec (sans-IO).
//!
//! Every frame is a 32-byte header followed by a body:
//!
//! | offset | size | field                                             |
//! |--------|------|---------------------------------------------------|
//! | 0      | 4    | magic `KRPL`                                      |
//! | 4      | 1    | kind                                              |
//! | 5      | 3    | reserved, zero                                    |
//! | 8      | 8    | seq: the frame's place in the volume's write order |
//! | 16     | 8    | epoch of the primary term that sent it            |
//! | 24     | 4    | body length                                       |
//! | 28     | 4    | crc32c of bytes 0..28 and the body                |
//!
//! The crc makes the replication stream end-to-end checksummed: a frame whose
//! bytes changed anywhere between the primary's memory and the replica's is
//! refused, and the connection with it.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Magic at the start of every frame.
pub const FRAME_MAGIC: [u8; 4] = *b"KRPL";
/// Size of a frame header.
pub const HEADER_BYTES: usize = 32;
/// Largest body a frame may carry: one engine I/O plus its fixed fields.
pub const BODY_BYTES_MAX: usize = crate::IO_BYTES_MAX as usize + 4096;
/// Most uncertain extents a replica reports in one [`Frame::HelloAck`].
pub const UNCERTAIN_EXTENTS_MAX: usize = 1 << 16;
/// Longest volume or snapshot name a frame carries (the engine's limit).
pub const NAME_BYTES_MAX: usize = crate::VOLUME_NAME_MAX;

/// A node's identity in a cluster (its UUID's bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(pub [u8; 16]);

impl std::fmt::Display for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", uuid::Uuid::from_bytes(self.0))
    }
}

/// A run of blocks in a volume, in the volume's sector units.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    /// First block.
    pub lba: u64,
    /// Number of blocks.
    pub blocks: u32,
}

/// How a replica answered a primary's [`Frame::Hello`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HelloStatus {
    /// Admitted: frames of this epoch will be applied.
    Admitted,
    /// The replica has seen a newer epoch for this volume; the sender is deposed.
    StaleEpoch,
    /// The cluster does not name the sender primary of this volume at this epoch.
    NotPrimary,
    /// The replica holds no volume of that name.
    NoSuchVolume,
    /// The replica's volume has another block size or is smaller than the primary's.
    ShapeMismatch,
}

/// How a replica answered one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AckStatus {
    /// Applied (and, for a write, as durable as the replica's engine acknowledges).
    Applied,
    /// The replica could not apply it (its own device or space failed).
    Failed,
}

/// The frames of the replication protocol. Primary → replica unless noted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream for one volume at one epoch.
    Hello {
        /// The replica-side engine volume name.
        volume: String,
        /// The primary's node.
        primary: NodeId,
        /// The volume's sector size in bytes.
        sector_bytes: u32,
        /// The volume's size in bytes on the primary.
        size_bytes: u64,
    },
    /// Replica → primary: the answer to `Hello`.
    HelloAck {
        /// Admitted or why not.
        status: HelloStatus,
        /// The newest epoch the replica knows for the volume.
        known_epoch: u64,
        /// Extents the replica applied that no primary has yet reported
        /// committed (on every in-sync replica): the new primary makes every
        /// replica agree on them before it serves.
        uncertain: Vec<Extent>,
        /// True when the replica lost track of its uncertain extents (more
        /// than [`UNCERTAIN_EXTENTS_MAX`]): only a full rebuild makes it agree.
        uncertain_overflow: bool,
    },
    /// Host data, in write order.
    Write {
        /// Every frame with a lower seq is acknowledged by every in-sync member.
        committed: u64,
        /// First block.
        lba: u64,
        /// The data, a whole number of sectors.
        data: Bytes,
    },
    /// Resync data: the primary's current content of blocks a replica missed.
    Copy {
        /// As in `Write`.
        committed: u64,
        /// First block.
        lba: u64,
        /// The data, a whole number of sectors.
        data: Bytes,
    },
    /// Blocks that read as zeroes from now on.
    WriteZeroes {
        /// As in `Write`.
        committed: u64,
        /// The blocks.
        extent: Extent,
    },
    /// Blocks deallocated (they read as zeroes).
    Deallocate {
        /// As in `Write`.
        committed: u64,
        /// The blocks.
        extent: Extent,
    },
    /// Make everything before this frame durable across power loss.
    Flush {
        /// As in `Write`.
        committed: u64,
    },
    /// Take a snapshot at exactly this point of the write order.
    Snapshot {
        /// As in `Write`.
        committed: u64,
        /// The snapshot's engine name on every member.
        name: String,
    },
    /// Make the volume's content that of its snapshot `name`, at exactly
    /// this point of the write order.
    Rollback {
        /// As in `Write`.
        committed: u64,
        /// The snapshot's engine name on every member.
        name: String,
    },
    /// Grow the volume.
    Resize {
        /// As in `Write`.
        committed: u64,
        /// New size in bytes.
        size_bytes: u64,
    },
    /// Every member agrees on the extents older epochs left uncertain; the
    /// replica may forget them.
    Reconciled {
        /// As in `Write`.
        committed: u64,
    },
    /// Replica → primary: the frame with the header's seq was handled.
    Ack {
        /// Applied or failed.
        status: AckStatus,
    },
}

/// A frame with its place in the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Position in the volume's write order (0 for `Hello`/`HelloAck`).
    pub seq: u64,
    /// The sender's primary term.
    pub epoch: u64,
    /// The frame.
    pub frame: Frame,
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The header does not start with [`FRAME_MAGIC`].
    #[error("bad frame magic")]
    Magic,
    /// The kind byte names no frame.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// The body length exceeds [`BODY_BYTES_MAX`].
    #[error("frame body of {0} bytes is too long")]
    TooLong(u32),
    /// The crc does not match: the bytes changed in flight.
    #[error("frame checksum mismatch")]
    Checksum,
    /// The body is shorter or longer than its kind needs, or a field is out of range.
    #[error("malformed {0} frame")]
    Malformed(&'static str),
}

const KIND_HELLO: u8 = 1;
const KIND_HELLO_ACK: u8 = 2;
const KIND_WRITE: u8 = 3;
const KIND_COPY: u8 = 4;
const KIND_WRITE_ZEROES: u8 = 5;
const KIND_DEALLOCATE: u8 = 6;
const KIND_FLUSH: u8 = 7;
const KIND_SNAPSHOT: u8 = 8;
const KIND_RESIZE: u8 = 9;
const KIND_RECONCILED: u8 = 10;
const KIND_ACK: u8 = 11;
const KIND_ROLLBACK: u8 = 12;

impl Envelope {
    /// Appends the encoded frame to `out`.
    pub fn encode(&self, out: &mut BytesMut) {
        let start = out.len();
        out.put_slice(&FRAME_MAGIC);
        out.put_u8(self.frame.kind());
        out.put_bytes(0, 3);
        out.put_u64_le(self.seq);
        out.put_u64_le(self.epoch);
        out.put_u32_le(0);
        out.put_u32_le(0);
        let body_start = out.len();
        self.frame.encode_body(out);
        let body_len = (out.len() - body_start) as u32;
        out[start + 24..start + 28].copy_from_slice(&body_len.to_le_bytes());
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&out[start..start + 28]), &out[body_start..]);
        out[start + 28..start + 32].copy_from_slice(&crc.to_le_bytes());
    }

    /// The encoded frame as one buffer.
    pub fn to_bytes(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(HEADER_BYTES + self.frame.body_len_hint());
        self.encode(&mut out);
        out.freeze()
    }

    /// The length of the frame at the front of `buf` once its header is
    /// there (`Ok(None)` before), checking only the magic and the length.
    pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
        if buf.len() >= 4 && buf[..4] != FRAME_MAGIC {
            return Err(WireError::Magic);
        }
        if buf.len() < HEADER_BYTES {
            return Ok(None);
        }
        let body_len = u32::from_le_bytes([buf[24], buf[25], buf[26], buf[27]]);
        if body_len as usize > BODY_BYTES_MAX {
            return Err(WireError::TooLong(body_len));
        }
        Ok(Some(HEADER_BYTES + body_len as usize))
    }

    /// Decodes one frame from the front of `buf`: `Ok(None)` when more bytes
    /// are needed, else the frame and the bytes it used. Data payloads share
    /// `buf`'s memory.
    pub fn decode(buf: &Bytes) -> Result<Option<(Envelope, usize)>, WireError> {
        let Some(total) = Envelope::frame_len(buf)? else {
            return Ok(None);
        };
        if buf.len() < total {
            return Ok(None);
        }
        let header = &buf[..HEADER_BYTES];
        let kind = header[4];
        let crc = u32::from_le_bytes([header[28], header[29], header[30], header[31]]);
        let actual =
            crc32c::crc32c_append(crc32c::crc32c(&header[..28]), &buf[HEADER_BYTES..total]);
        if crc != actual {
            return Err(WireError::Checksum);
        }
        let seq = u64::from_le_bytes(header[8..16].try_into().map_err(|_| WireError::Magic)?);
        let epoch = u64::from_le_bytes(header[16..24].try_into().map_err(|_| WireError::Magic)?);
        let body = buf.slice(HEADER_BYTES..total);
        let frame = Frame::decode_body(kind, body)?;
        Ok(Some((Envelope { seq, epoch, frame }, total)))
    }
}

impl Frame {
    fn kind(&self) -> u8 {
        match self {
            Frame::Hello { .. } => KIND_HELLO,
            Frame::HelloAck { .. } => KIND_HELLO_ACK,
            Frame::Write { .. } => KIND_WRITE,
            Frame::Copy { .. } => KIND_COPY,
            Frame::WriteZeroes { .. } => KIND_WRITE_ZEROES,
            Frame::Deallocate { .. } => KIND_DEALLOCATE,
            Frame::Flush { .. } => KIND_FLUSH,
            Frame::Snapshot { .. } => KIND_SNAPSHOT,
            Frame::Rollback { .. } => KIND_ROLLBACK,
            Frame::Resize { .. } => KIND_RESIZE,
            Frame::Reconciled { .. } => KIND_RECONCILED,
            Frame::Ack { .. } => KIND_ACK,
        }
    }

    fn body_len_hint(&self) -> usize {
        match self {
            Frame::Write { data, .. } | Frame::Copy { data, .. } => 16 + data.len(),
            Frame::HelloAck { uncertain, .. } => 16 + 12 * uncertain.len(),
            _ => 64,
        }
    }

    /// The frame carrying `watermark` as its committed watermark (frames
    /// that carry none are returned as they are).
    pub fn with_committed(mut self, watermark: u64) -> Frame {
        match &mut self {
            Frame::Write { committed, .. }
            | Frame::Copy { committed, .. }
            | Frame::WriteZeroes { committed, .. }
            | Frame::Deallocate { committed, .. }
            | Frame::Flush { committed }
            | Frame::Snapshot { committed, .. }
            | Frame::Rollback { committed, .. }
            | Frame::Resize { committed, .. }
            | Frame::Reconciled { committed } => *committed = watermark,
            Frame::Hello { .. } | Frame::HelloAck { .. } | Frame::Ack { .. } => {}
        }
        self
    }

    /// The committed watermark a primary frame carries.
    pub fn committed(&self) -> Option<u64> {
        match self {
            Frame::Write { committed, .. }
            | Frame::Copy { committed, .. }
            | Frame::WriteZeroes { committed, .. }
            | Frame::Deallocate { committed, .. }
            | Frame::Flush { committed }
            | Frame::Snapshot { committed, .. }
            | Frame::Rollback { committed, .. }
            | Frame::Resize { committed, .. }
            | Frame::Reconciled { committed } => Some(*committed),
            Frame::Hello { .. } | Frame::HelloAck { .. } | Frame::Ack { .. } => None,
        }
    }

    fn encode_body(&self, out: &mut BytesMut) {
        match self {
            Frame::Hello {
                volume,
                primary,
                sector_bytes,
                size_bytes,
            } => {
                out.put_slice(&primary.0);
                out.put_u32_le(*sector_bytes);
                out.put_u64_le(*size_bytes);
                put_name(out, volume);
            }
            Frame::HelloAck {
                status,
                known_epoch,
                uncertain,
                uncertain_overflow,
            } => {
                out.put_u8(hello_status_code(*status));
                out.put_u8(u8::from(*uncertain_overflow));
                out.put_u64_le(*known_epoch);
                out.put_u32_le(uncertain.len() as u32);
                for extent in uncertain {
                    put_extent(out, *extent);
                }
            }
            Frame::Write {
                committed,
                lba,
                data,
            }
            | Frame::Copy {
                committed,
                lba,
                data,
            } => {
                out.put_u64_le(*committed);
                out.put_u64_le(*lba);
                out.put_slice(data);
            }
            Frame::WriteZeroes { committed, extent } | Frame::Deallocate { committed, extent } => {
                out.put_u64_le(*committed);
                put_extent(out, *extent);
            }
            Frame::Flush { committed } | Frame::Reconciled { committed } => {
                out.put_u64_le(*committed);
            }
            Frame::Snapshot { committed, name } | Frame::Rollback { committed, name } => {
                out.put_u64_le(*committed);
                put_name(out, name);
            }
            Frame::Resize {
                committed,
                size_bytes,
            } => {
                out.put_u64_le(*committed);
                out.put_u64_le(*size_bytes);
            }
            Frame::Ack { status } => out.put_u8(match status {
                AckStatus::Applied => 0,
                AckStatus::Failed => 1,
            }),
        }
    }

    fn decode_body(kind: u8, mut body: Bytes) -> Result<Frame, WireError> {
        let frame = match kind {
            KIND_HELLO => {
                let what = "hello";
                need(&body, 28, what)?;
                let mut primary = [0u8; 16];
                body.copy_to_slice(&mut primary);
                let sector_bytes = body.get_u32_le();
                let size_bytes = body.get_u64_le();
                let volume = take_name(&mut body, what)?;
                Frame::Hello {
                    volume,
                    primary: NodeId(primary),
                    sector_bytes,
                    size_bytes,
                }
            }
            KIND_HELLO_ACK => {
                let what = "hello-ack";
                need(&body, 14, what)?;
                let status = hello_status(body.get_u8()).ok_or(WireError::Malformed(what))?;
                let uncertain_overflow = match body.get_u8() {
                    0 => false,
                    1 => true,
                    _ => return Err(WireError::Malformed(what)),
                };
                let known_epoch = body.get_u64_le();
                let count = body.get_u32_le() as usize;
                if count > UNCERTAIN_EXTENTS_MAX || body.len() != count * 12 {
                    return Err(WireError::Malformed(what));
                }
                let uncertain = (0..count).map(|_| take_extent(&mut body)).collect();
                Frame::HelloAck {
                    status,
                    known_epoch,
                    uncertain,
                    uncertain_overflow,
                }
            }
            KIND_WRITE | KIND_COPY => {
                let what = "write";
                need(&body, 16, what)?;
                let committed = body.get_u64_le();
                let lba = body.get_u64_le();
                if body.is_empty() || !body.len().is_multiple_of(512) {
                    return Err(WireError::Malformed(what));
                }
                let data = body.split_to(body.len());
                if kind == KIND_WRITE {
                    Frame::Write {
                        committed,
                        lba,
                        data,
                    }
                } else {
                    Frame::Copy {
                        committed,
                        lba,
                        data,
                    }
                }
            }
            KIND_WRITE_ZEROES | KIND_DEALLOCATE => {
                let what = "extent";
                need(&body, 20, what)?;
                let committed = body.get_u64_le();
                let extent = take_extent(&mut body);
                if kind == KIND_WRITE_ZEROES {
                    Frame::WriteZeroes { committed, extent }
                } else {
                    Frame::Deallocate { committed, extent }
                }
            }
            KIND_FLUSH | KIND_RECONCILED => {
                need(&body, 8, "flush")?;
                let committed = body.get_u64_le();
                if kind == KIND_FLUSH {
                    Frame::Flush { committed }
                } else {
                    Frame::Reconciled { committed }
                }
            }
            KIND_SNAPSHOT | KIND_ROLLBACK => {
                let what = if kind == KIND_SNAPSHOT {
                    "snapshot"
                } else {
                    "rollback"
                };
                need(&body, 8, what)?;
                let committed = body.get_u64_le();
                let name = take_name(&mut body, what)?;
                if kind == KIND_SNAPSHOT {
                    Frame::Snapshot { committed, name }
                } else {
                    Frame::Rollback { committed, name }
                }
            }
            KIND_RESIZE => {
                need(&body, 16, "resize")?;
                Frame::Resize {
                    committed: body.get_u64_le(),
                    size_bytes: body.get_u64_le(),
                }
            }
            KIND_ACK => {
                need(&body, 1, "ack")?;
                let status = match body.get_u8() {
                    0 => AckStatus::Applied,
                    1 => AckStatus::Failed,
                    _ => return Err(WireError::Malformed("ack")),
                };
                Frame::Ack { status }
            }
            other => return Err(WireError::Kind(other)),
        };
        if !body.is_empty() {
            return Err(WireError::Malformed("trailing bytes in"));
        }
        Ok(frame)
    }
}

/// Runs the decoder on hostile bytes twice: as they are, and sealed with a
/// valid magic, body length and crc (the first byte becoming the kind), so the
/// body decoders see input past the checksum. For fuzzing and property tests;
/// it must never panic.
pub fn decode_hostile(data: &[u8]) {
    let _ = Envelope::decode(&Bytes::copy_from_slice(data));
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let body = &body[..body.len().min(BODY_BYTES_MAX)];
    let mut sealed = BytesMut::with_capacity(HEADER_BYTES + body.len());
    sealed.put_slice(&FRAME_MAGIC);
    sealed.put_u8(kind % 16);
    sealed.put_bytes(0, 3);
    sealed.put_u64_le(1);
    sealed.put_u64_le(1);
    sealed.put_u32_le(body.len() as u32);
    sealed.put_u32_le(0);
    sealed.put_slice(body);
    let crc = crc32c::crc32c_append(crc32c::crc32c(&sealed[..28]), body);
    sealed[28..32].copy_from_slice(&crc.to_le_bytes());
    let _ = Envelope::decode(&sealed.freeze());
}

fn need(body: &Bytes, bytes: usize, what: &'static str) -> Result<(), WireError> {
    if body.len() < bytes {
        Err(WireError::Malformed(what))
    } else {
        Ok(())
    }
}

fn put_name(out: &mut BytesMut, name: &str) {
    out.put_u16_le(name.len() as u16);
    out.put_slice(name.as_bytes());
}

fn take_name(body: &mut Bytes, what: &'static str) -> Result<String, WireError> {
    need(body, 2, what)?;
    let len = body.get_u16_le() as usize;
    if len == 0 || len > NAME_BYTES_MAX || body.len() < len {
        return Err(WireError::Malformed(what));
    }
    let bytes = body.split_to(len);
    String::from_utf8(bytes.to_vec()).map_err(|_| WireError::Malformed(what))
}

fn put_extent(out: &mut BytesMut, extent: Extent) {
    out.put_u64_le(extent.lba);
    out.put_u32_le(extent.blocks);
}

fn take_extent(body: &mut Bytes) -> Extent {
    Extent {
        lba: body.get_u64_le(),
        blocks: body.get_u32_le(),
    }
}

fn hello_status_code(status: HelloStatus) -> u8 {
    match status {
        HelloStatus::Admitted => 0,
        HelloStatus::StaleEpoch => 1,
        HelloStatus::NotPrimary => 2,
        HelloStatus::NoSuchVolume => 3,
        HelloStatus::ShapeMismatch => 4,
    }
}

fn hello_status(code: u8) -> Option<HelloStatus> {
    Some(match code {
        0 => HelloStatus::Admitted,
        1 => HelloStatus::StaleEpoch,
        2 => HelloStatus::NotPrimary,
        3 => HelloStatus::NoSuchVolume,
        4 => HelloStatus::ShapeMismatch,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn extent() -> impl Strategy<Value = Extent> {
        (any::<u64>(), any::<u32>()).prop_map(|(lba, blocks)| Extent { lba, blocks })
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9-]{1,64}"
    }

    fn data() -> impl Strategy<Value = Bytes> {
        (1usize..4, any::<u8>()).prop_map(|(sectors, fill)| Bytes::from(vec![fill; sectors * 512]))
    }

    fn frame() -> impl Strategy<Value = Frame> {
        prop_oneof![
            (name(), any::<[u8; 16]>(), any::<u32>(), any::<u64>()).prop_map(
                |(volume, primary, sector_bytes, size_bytes)| Frame::Hello {
                    volume,
                    primary: NodeId(primary),
                    sector_bytes,
                    size_bytes,
                }
            ),
            (
                0u8..5,
                any::<u64>(),
                proptest::collection::vec(extent(), 0..8),
                any::<bool>()
            )
                .prop_map(|(code, known_epoch, uncertain, uncertain_overflow)| {
                    Frame::HelloAck {
                        status: hello_status(code).unwrap_or(HelloStatus::Admitted),
                        known_epoch,
                        uncertain,
                        uncertain_overflow,
                    }
                }),
            (any::<u64>(), any::<u64>(), data()).prop_map(|(committed, lba, data)| Frame::Write {
                committed,
                lba,
                data
            }),
            (any::<u64>(), any::<u64>(), data()).prop_map(|(committed, lba, data)| Frame::Copy {
                committed,
                lba,
                data
            }),
            (any::<u64>(), extent())
                .prop_map(|(committed, extent)| Frame::WriteZeroes { committed, extent }),
            (any::<u64>(), extent())
                .prop_map(|(committed, extent)| Frame::Deallocate { committed, extent }),
            any::<u64>().prop_map(|committed| Frame::Flush { committed }),
            any::<u64>().prop_map(|committed| Frame::Reconciled { committed }),
            (any::<u64>(), name())
                .prop_map(|(committed, name)| Frame::Snapshot { committed, name }),
            (any::<u64>(), name())
                .prop_map(|(committed, name)| Frame::Rollback { committed, name }),
            (any::<u64>(), any::<u64>()).prop_map(|(committed, size_bytes)| Frame::Resize {
                committed,
                size_bytes
            }),
            any::<bool>().prop_map(|failed| Frame::Ack {
                status: if failed {
                    AckStatus::Failed
                } else {
                    AckStatus::Applied
                }
            }),
        ]
    }

    proptest! {
        #[test]
        fn frames_round_trip_whole_and_in_pieces(
            frame in frame(), seq in any::<u64>(), epoch in any::<u64>(), cut in 0usize..64,
        ) {
            let envelope = Envelope { seq, epoch, frame };
            let bytes = envelope.to_bytes();
            let (decoded, used) = Envelope::decode(&bytes).unwrap().unwrap();
            prop_assert_eq!(used, bytes.len());
            prop_assert_eq!(&decoded, &envelope);
            let cut = cut.min(bytes.len() - 1);
            prop_assert_eq!(Envelope::decode(&bytes.slice(..cut)).unwrap(), None);
        }

        #[test]
        fn any_flipped_bit_is_refused(frame in frame(), bit in any::<usize>()) {
            let bytes = Envelope { seq: 9, epoch: 3, frame }.to_bytes();
            let mut damaged = bytes.to_vec();
            let bit = bit % (damaged.len() * 8);
            damaged[bit / 8] ^= 1 << (bit % 8);
            // A flipped length bit may make the frame look incomplete; it must never decode.
            prop_assert!(!matches!(Envelope::decode(&Bytes::from(damaged)), Ok(Some(_))));
        }

        #[test]
        fn hostile_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            decode_hostile(&bytes);
        }
    }

    #[test]
    fn an_oversized_body_is_refused_from_the_header_alone() {
        let mut header = Envelope {
            seq: 1,
            epoch: 1,
            frame: Frame::Flush { committed: 0 },
        }
        .to_bytes()
        .to_vec();
        header[24..28].copy_from_slice(&(BODY_BYTES_MAX as u32 + 1).to_le_bytes());
        assert_eq!(
            Envelope::decode(&Bytes::from(header)),
            Err(WireError::TooLong(BODY_BYTES_MAX as u32 + 1))
        );
    }
}
