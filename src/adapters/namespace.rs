//! An engine volume served as an NVMe namespace.

use std::sync::Arc;

use bytes::Bytes;
use engine::{Engine, IoError, SectorSize, VolumeId};
use nvmf_target::backend::{
    BlockSize, Completion, Lba, LbaRange, NamespaceBackend, NamespaceError,
};

/// Serves one engine volume through the target's namespace port.
pub struct VolumeNamespace {
    engine: Arc<Engine>,
    volume: VolumeId,
    uuid: [u8; 16],
    block_size: BlockSize,
}

impl VolumeNamespace {
    /// Wraps `volume`; `uuid` becomes the namespace's NGUID and UUID.
    pub fn new(
        engine: Arc<Engine>,
        volume: VolumeId,
        sector: SectorSize,
        uuid: [u8; 16],
    ) -> VolumeNamespace {
        let block_size = match sector {
            SectorSize::B512 => BlockSize::B512,
            SectorSize::B4096 => BlockSize::B4096,
        };
        VolumeNamespace {
            engine,
            volume,
            uuid,
            block_size,
        }
    }
}

/// The one place engine data-path errors become namespace errors.
pub(crate) fn namespace_error(err: IoError, lba: u64, blocks: u64) -> NamespaceError {
    match err {
        IoError::OutOfRange { .. } => NamespaceError::OutOfRange {
            lba: Lba(lba),
            blocks,
        },
        IoError::Media { .. } => NamespaceError::Media { lba: Lba(lba) },
        IoError::NoSpace => NamespaceError::NoSpace,
        IoError::Fenced => NamespaceError::Fenced,
        IoError::Invalid(_) | IoError::NoSuchVolume(_) => NamespaceError::Invalid,
        IoError::Device(_) => NamespaceError::Device,
        IoError::NotPrimary => NamespaceError::PathUnavailable,
        // Snapshots are never exposed as namespaces; were one written, the
        // request is one this backend cannot carry out.
        IoError::ReadOnly(_) => NamespaceError::Invalid,
    }
}

impl NamespaceBackend for VolumeNamespace {
    fn block_size(&self) -> BlockSize {
        self.block_size
    }

    fn capacity_blocks(&self) -> u64 {
        self.engine.volume_size(self.volume).unwrap_or(0) / u64::from(self.block_size.bytes())
    }

    fn uuid(&self) -> [u8; 16] {
        self.uuid
    }

    /// Acknowledged writes survive process death but need a flush for power loss.
    fn volatile_write_cache(&self) -> bool {
        true
    }

    fn read(&self, lba: Lba, blocks: u32, done: Completion<Bytes>) {
        self.engine.read(
            self.volume,
            lba.0,
            blocks,
            Box::new(move |r| done(r.map_err(|e| namespace_error(e, lba.0, u64::from(blocks))))),
        );
    }

    fn write(&self, lba: Lba, data: Bytes, done: Completion<()>) {
        let blocks = data.len() as u64 / u64::from(self.block_size.bytes());
        self.engine.write(
            self.volume,
            lba.0,
            data,
            Box::new(move |r| done(r.map_err(|e| namespace_error(e, lba.0, blocks)))),
        );
    }

    fn flush(&self, done: Completion<()>) {
        self.engine.flush(Box::new(move |r| {
            done(r.map_err(|e| namespace_error(e, 0, 0)))
        }));
    }

    fn write_zeroes(&self, lba: Lba, blocks: u32, done: Completion<()>) {
        self.engine.write_zeroes(
            self.volume,
            lba.0,
            blocks,
            Box::new(move |r| done(r.map_err(|e| namespace_error(e, lba.0, u64::from(blocks))))),
        );
    }

    fn deallocate(&self, ranges: Vec<LbaRange>, done: Completion<()>) {
        deallocate_each(ranges, done, |lba, blocks, part| {
            self.engine.deallocate(self.volume, lba, blocks, part)
        });
    }
}

/// Deallocates each of `ranges` through `submit` and answers `done` once with
/// the first error (empty ranges are skipped).
pub(crate) fn deallocate_each(
    ranges: Vec<LbaRange>,
    done: Completion<()>,
    submit: impl Fn(u64, u32, engine::WriteDone),
) {
    let ranges: Vec<LbaRange> = ranges.into_iter().filter(|r| r.blocks > 0).collect();
    if ranges.is_empty() {
        return done(Ok(()));
    }
    let join = Arc::new(parking_lot::Mutex::new((
        ranges.len(),
        None::<NamespaceError>,
        Some(done),
    )));
    for range in ranges {
        let join = join.clone();
        submit(
            range.start.0,
            range.blocks,
            Box::new(move |r| {
                let mut state = join.lock();
                if let Err(e) = r {
                    state.1.get_or_insert(namespace_error(
                        e,
                        range.start.0,
                        u64::from(range.blocks),
                    ));
                }
                state.0 -= 1;
                if state.0 == 0 {
                    let result = state.1.take().map_or(Ok(()), Err);
                    if let Some(done) = state.2.take() {
                        drop(state);
                        done(result);
                    }
                }
            }),
        );
    }
}
